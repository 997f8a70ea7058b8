// Parameters are environment variables of every step (`$TARGET`, `env.TARGET`), below what
// `environment {}` sets; after a failed stage, `post` sees the failure in
// `currentBuild.currentResult` and `currentBuild.result`, as Jenkins shows it there.
pipeline {
    agent any
    parameters {
        string(name: 'TARGET', defaultValue: 'staging')
        booleanParam(name: 'DRY_RUN', defaultValue: true)
        string(name: 'REGION', defaultValue: 'eu')
    }
    environment {
        REGION = 'us'
    }
    stages {
        stage('Deploy') {
            steps {
                sh 'echo "shell sees TARGET=$TARGET DRY_RUN=$DRY_RUN REGION=$REGION"'
                echo "env.TARGET=${env.TARGET} params.TARGET=${params.TARGET}"
                sh 'exit 3'
            }
            post {
                failure {
                    echo "stage post: currentResult=${currentBuild.currentResult} result=${currentBuild.result}"
                }
            }
        }
    }
    post {
        always {
            echo "pipeline post: currentResult=${currentBuild.currentResult} result=${currentBuild.result}"
        }
    }
}
