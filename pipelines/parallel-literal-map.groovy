// Two platforms built at once: a literal map of closures passed to `parallel`,
// each branch allocating its own node; the first failure stops the other branch.
stage('Checkout') {
    node('linux') {
        checkout scm
        stash name: 'sources', includes: '**', excludes: '.git/**'
    }
}

stage('Build') {
    parallel(
        linux: {
            node('linux && docker') {
                unstash 'sources'
                sh 'make PLATFORM=linux'
                stash name: 'linux-bin', includes: 'out/linux/**'
            }
        },
        arm: {
            node('linux && arm64') {
                unstash 'sources'
                sh label: 'cross build', script: 'make PLATFORM=linux-arm64'
                stash name: 'arm-bin', includes: 'out/linux-arm64/**'
            }
        },
        failFast: true
    )
}

stage('Publish') {
    node('linux') {
        unstash 'linux-bin'
        unstash 'arm-bin'
        archiveArtifacts artifacts: 'out/**', allowEmptyArchive: false
    }
}
