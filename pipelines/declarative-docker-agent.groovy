// Per-stage Docker agents: each stage runs in the image of its toolchain.
pipeline {
    agent none

    stages {
        stage('Backend') {
            agent {
                docker {
                    image 'golang:1.22'
                    args '-v /tmp/go-cache:/root/.cache/go-build'
                    label 'docker'
                }
            }
            steps {
                sh 'go build ./...'
                sh 'go test -race ./...'
            }
        }
        stage('Frontend') {
            agent {
                docker {
                    image 'node:20-alpine'
                    reuseNode true
                }
            }
            steps {
                dir('ui') {
                    sh 'npm ci'
                    sh 'npm test -- --ci'
                }
            }
        }
        stage('Package') {
            agent { label 'docker' }
            steps {
                sh "docker build -t example/app:${env.GIT_COMMIT?.take(8) ?: 'dev'} ."
            }
        }
    }
}
