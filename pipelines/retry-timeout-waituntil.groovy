// Flaky infrastructure handled with retry, timeout, waitUntil, and the steps that
// record a failure without stopping the build.
node('linux') {
    stage('Start services') {
        checkout scm
        retry(3) {
            sh 'docker compose up -d --wait'
        }
        timeout(time: 5, unit: 'MINUTES') {
            waitUntil(initialRecurrencePeriod: 2000, quiet: true) {
                def code = sh(script: 'curl -sf http://localhost:8080/health', returnStatus: true)
                return code == 0
            }
        }
    }

    stage('Tests') {
        timeout(time: 30, unit: 'MINUTES', activity: true) {
            catchError(buildResult: 'UNSTABLE', stageResult: 'FAILURE', message: 'integration tests failed') {
                sh './gradlew integrationTest'
            }
        }
        junit testResults: 'build/test-results/integrationTest/*.xml', allowEmptyResults: true
    }

    stage('Lint') {
        warnError('lint found problems') {
            sh './gradlew ktlintCheck'
        }
    }

    stage('Coverage') {
        def coverage = sh(script: "./coverage.sh --percent", returnStdout: true).trim() as Integer
        if (coverage < 80) {
            unstable(message: "coverage ${coverage}% is below 80%")
        }
    }

    stage('Teardown') {
        retry(count: 2, conditions: [agent(), nonresumable()]) {
            sh 'docker compose down -v'
        }
        sleep(time: 10, unit: 'SECONDS')
        sleep 1
    }
}
