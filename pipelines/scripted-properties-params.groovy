// Job properties set from the pipeline itself: parameters, log rotation,
// no concurrent builds, a nightly trigger; then the parameters are used.
properties([
    parameters([
        string(name: 'TARGET_ENV', defaultValue: 'staging', description: 'where to deploy'),
        booleanParam(name: 'RUN_SLOW_TESTS', defaultValue: false, description: 'also run the slow suite'),
        choice(name: 'LOG_LEVEL', choices: ['info', 'debug', 'warn'], description: 'log level of the tests'),
        text(name: 'RELEASE_NOTES', defaultValue: '', description: 'free text'),
    ]),
    buildDiscarder(logRotator(numToKeepStr: '10', artifactNumToKeepStr: '3')),
    disableConcurrentBuilds(),
    pipelineTriggers([cron('H 2 * * 1-5')]),
])

node('linux') {
    stage('Test') {
        checkout scm
        withEnv(["LOG_LEVEL=${params.LOG_LEVEL}", 'TZ=UTC']) {
            sh 'make test'
            if (params.RUN_SLOW_TESTS) {
                sh 'make test-slow'
            }
        }
    }
    stage('Deploy') {
        def target = params.TARGET_ENV ?: 'staging'
        if (target in ['staging', 'production']) {
            echo "Deploying to ${target}"
            sh "./deploy.sh ${target}"
        } else {
            error "Unknown target environment '${target}'"
        }
        if (params.RELEASE_NOTES?.trim()) {
            writeFile file: 'RELEASE_NOTES.txt', text: params.RELEASE_NOTES
            archiveArtifacts 'RELEASE_NOTES.txt'
        }
    }
}
