// `parallel` called without parentheses, branches given as named closures.
node('docker') {
    stage('Prepare') {
        checkout scm
    }
    stage('Checks') {
        parallel first: {
            docker.image('python:3.12').inside {
                sh 'pip install -q flake8 && flake8 src/'
            }
        }, second: {
            docker.image('koalaman/shellcheck-alpine:stable').inside {
                sh 'shellcheck scripts/*.sh'
            }
        }, third: {
            docker.image('hadolint/hadolint:latest-alpine').inside {
                sh 'hadolint Dockerfile'
            }
        }
    }
}
