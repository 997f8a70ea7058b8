// Parallel stages nested in a sequential pipeline; failFast stops the siblings of a
// failed branch; one branch has its own sequence of stages.
pipeline {
    agent any

    options {
        parallelsAlwaysFailFast()
        timestamps()
    }

    stages {
        stage('Prepare') {
            steps {
                checkout scm
                sh './gradlew --version'
            }
        }
        stage('Verify') {
            failFast true
            parallel {
                stage('Unit') {
                    steps {
                        sh './gradlew test'
                    }
                }
                stage('Static analysis') {
                    agent { label 'sonar' }
                    steps {
                        sh './gradlew sonar'
                    }
                }
                stage('Integration') {
                    stages {
                        stage('Start database') {
                            steps {
                                sh 'docker run -d --name it-db -e POSTGRES_PASSWORD=test postgres:16'
                            }
                        }
                        stage('Run') {
                            steps {
                                sh './gradlew integrationTest'
                            }
                            post {
                                cleanup {
                                    sh 'docker rm -f it-db || true'
                                }
                            }
                        }
                    }
                }
            }
        }
        stage('Publish') {
            when {
                branch 'main'
            }
            steps {
                sh './gradlew publish'
            }
        }
    }
}
