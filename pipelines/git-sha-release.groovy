// Decisions taken on the output of shell commands: the commit, the tag on it, and the
// files changed decide whether and how a release is built.
node('linux') {
    stage('Checkout') {
        git url: 'https://github.com/example/inventory-service.git', branch: 'main', credentialsId: 'github-ro'
    }

    def sha = sh(script: 'git rev-parse HEAD', returnStdout: true).trim()
    def shortSha = sha.substring(0, 8)
    def tag = sh script: 'git describe --tags --exact-match 2>/dev/null || true', returnStdout: true
    tag = tag.trim()
    def changed = sh(script: "git diff --name-only HEAD~1..HEAD", returnStdout: true)
        .trim()
        .split('\n')

    echo "commit ${shortSha}, tag '${tag ?: 'none'}', ${changed.size()} files changed"

    if (tag) {
        currentBuild.displayName = "#${currentBuild.number} ${tag}"
    } else {
        currentBuild.displayName = "#${currentBuild.number} ${shortSha}"
    }

    def docsOnly = changed.every { it.startsWith('docs/') || it.endsWith('.md') }
    if (docsOnly) {
        echo 'Only documentation changed; skipping the build'
        return
    }

    stage('Build') {
        def status = sh(script: './gradlew build', returnStatus: true)
        if (status != 0) {
            currentBuild.result = 'FAILURE'
            error "gradle exited with ${status}"
        }
    }

    if (tag ==~ /v\d+\.\d+\.\d+/) {
        stage('Release') {
            sh "./gradlew publish -Pversion=${tag.substring(1)}"
        }
    } else if (tag =~ /-rc\d+$/) {
        stage('Pre-release') {
            sh "./gradlew publish -Pversion=${tag.substring(1)} -Pchannel=rc"
        }
    } else {
        echo "No release tag on ${shortSha}"
    }
}
