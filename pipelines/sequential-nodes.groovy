// Two jobs in sequence: build on one agent, hand the result over with stash,
// then deploy from another agent.
def version

node('build') {
    stage('Build') {
        checkout scm
        version = readFile('VERSION').trim()
        sh "./build.sh --version ${version}"
        stash name: 'dist', includes: 'dist/**'
    }
}

node('deploy') {
    stage('Deploy') {
        unstash 'dist'
        echo "Deploying ${version} from ${env.NODE_NAME}"
        sh "./deploy.sh dist/app-${version}.tar.gz"
    }
}
