// Declarative conditions and results on a plain Linux host: `when` on environment and
// expressions, a tolerated failure, an unstable stage, stage-level post blocks and
// scripted code in `script { }`.
pipeline {
    agent any

    environment {
        MODE = 'ci'
        LIMIT = '3'
    }

    stages {
        stage('Only in CI mode') {
            when {
                environment name: 'MODE', value: 'ci'
            }
            steps {
                echo "MODE is ${env.MODE}"
            }
        }
        stage('Never') {
            when {
                allOf {
                    environment name: 'MODE', value: 'release'
                    expression { return false }
                }
            }
            steps {
                error 'this stage must be skipped'
            }
        }
        stage('Not release') {
            when {
                not { environment name: 'MODE', value: 'release' }
            }
            steps {
                sh 'echo "not a release build"'
            }
        }
        stage('Count') {
            steps {
                script {
                    def files = []
                    for (int i = 0; i < 5; i++) {
                        writeFile file: "items/item-${i}.txt", text: "${i}\n"
                        files << "item-${i}.txt"
                    }
                    def found = sh(script: 'ls items | wc -l', returnStdout: true).trim() as Integer
                    echo "wrote ${files.size()}, found ${found}"
                    if (found > Integer.parseInt(env.LIMIT)) {
                        unstable "more than ${env.LIMIT} items"
                    }
                }
            }
            post {
                unstable {
                    echo 'Count stage is unstable, as expected'
                }
                always {
                    sh 'rm -rf items'
                }
            }
        }
        stage('Tolerated') {
            steps {
                catchError(buildResult: 'UNSTABLE', stageResult: 'FAILURE') {
                    sh 'exit 4'
                }
                echo 'still running after the failed command'
            }
            post {
                failure {
                    echo 'stage result is FAILURE, build goes on'
                }
            }
        }
    }

    post {
        unstable {
            echo 'build is unstable'
        }
        changed {
            echo 'result differs from the previous build'
        }
        success {
            error 'an unstable build must not report success'
        }
        cleanup {
            echo 'done'
        }
    }
}
