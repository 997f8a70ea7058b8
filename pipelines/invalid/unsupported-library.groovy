// expect: unsupported at 2:1: shared libraries (`@Library`) are not supported; the steps they define (`buildMavenApp`) cannot be run
@Library('platform-pipeline-library@v3') _

node('linux') {
    stage('Build') {
        checkout scm
        buildMavenApp(goals: 'clean verify')
    }
}
