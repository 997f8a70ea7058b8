// A declarative pipeline that runs on a plain Linux host: environment, options,
// parameters with defaults, sequential and parallel stages, post conditions.
pipeline {
    agent any

    environment {
        APP = 'hello'
        OUT_DIR = "build/${APP}"
    }

    options {
        timeout(time: 5, unit: 'MINUTES')
        buildDiscarder(logRotator(numToKeepStr: '10'))
        disableConcurrentBuilds()
        timestamps()
    }

    parameters {
        string(name: 'GREETING', defaultValue: 'Hello', description: 'first word of the message')
        booleanParam(name: 'SHOUT', defaultValue: false, description: 'print the message in capitals')
        choice(name: 'FORMAT', choices: ['txt', 'md'], description: 'output format')
    }

    stages {
        stage('Generate') {
            steps {
                sh 'mkdir -p "$OUT_DIR"'
                writeFile file: "${OUT_DIR}/message.${params.FORMAT}", text: "${params.GREETING}, ${APP}!\n"
                sh 'ls -l "$OUT_DIR"'
            }
        }
        stage('Checks') {
            failFast true
            parallel {
                stage('Content') {
                    steps {
                        sh "grep -q '${params.GREETING}' ${OUT_DIR}/message.${params.FORMAT}"
                    }
                }
                stage('Size') {
                    steps {
                        sh "test \$(wc -c < ${OUT_DIR}/message.${params.FORMAT}) -gt 5"
                    }
                }
            }
        }
        stage('Shout') {
            when {
                expression { params.SHOUT }
            }
            steps {
                sh "tr a-z A-Z < ${OUT_DIR}/message.${params.FORMAT}"
            }
        }
    }

    post {
        always {
            echo "result: ${currentBuild.currentResult}"
        }
        success {
            archiveArtifacts artifacts: 'build/**', fingerprint: true
        }
        failure {
            sh 'ls -R build || true'
        }
        cleanup {
            dir('build') {
                deleteDir()
            }
        }
    }
}
