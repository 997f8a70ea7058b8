// The smallest useful declarative pipeline: any agent, three stages, post actions.
pipeline {
    agent any

    stages {
        stage('Checkout') {
            steps {
                checkout scm
            }
        }
        stage('Build') {
            steps {
                sh 'make all'
            }
        }
        stage('Test') {
            steps {
                sh 'make test'
            }
            post {
                always {
                    junit 'build/reports/**/*.xml'
                }
            }
        }
    }

    post {
        success {
            archiveArtifacts artifacts: 'build/dist/*', fingerprint: true
        }
        failure {
            echo "Build ${env.BUILD_NUMBER} failed: ${env.BUILD_URL}"
        }
    }
}
