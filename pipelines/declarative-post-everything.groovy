// Post conditions at pipeline and stage level, in the order Jenkins runs them.
pipeline {
    agent any

    stages {
        stage('Test') {
            steps {
                sh './run-tests.sh'
            }
            post {
                always {
                    junit allowEmptyResults: true, testResults: 'test-results/*.xml'
                }
                unstable {
                    echo 'Some tests failed'
                }
                failure {
                    echo 'The test runner itself failed'
                }
            }
        }
        stage('Report') {
            steps {
                sh './coverage-report.sh'
            }
            post {
                success {
                    archiveArtifacts artifacts: 'coverage/**', allowEmptyArchive: true
                }
                cleanup {
                    sh 'rm -rf coverage/tmp'
                }
            }
        }
    }

    post {
        always {
            echo "Finished with ${currentBuild.currentResult} in ${currentBuild.durationString}"
        }
        changed {
            echo "The result changed from the previous build"
        }
        fixed {
            echo 'The build is green again'
        }
        regression {
            echo 'The build was green before'
        }
        aborted {
            echo 'Someone stopped the build'
        }
        success {
            echo 'All good'
        }
        unstable {
            echo 'Unstable: see the test report'
        }
        failure {
            mail to: 'team@example.com', subject: "Failed: ${env.JOB_NAME} #${env.BUILD_NUMBER}", body: "${env.BUILD_URL}"
        }
        unsuccessful {
            echo 'Not a success'
        }
        cleanup {
            cleanWs()
        }
    }
}
