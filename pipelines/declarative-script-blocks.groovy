// Scripted code inside declarative stages: decisions on command output, loops that
// build parallel branches, and a variable shared between stages.
def services = []

pipeline {
    agent { label 'docker' }

    stages {
        stage('Discover') {
            steps {
                script {
                    def out = sh(script: 'ls services', returnStdout: true).trim()
                    services = out ? out.split('\n').findAll { !it.startsWith('_') } : []
                    echo "found ${services.size()} services: ${services}"
                    if (services.isEmpty()) {
                        currentBuild.result = 'NOT_BUILT'
                        error 'nothing to build'
                    }
                }
            }
        }
        stage('Build services') {
            steps {
                script {
                    def branches = [:]
                    services.each { svc ->
                        branches[svc] = {
                            dir("services/${svc}") {
                                sh "docker build -t example/${svc}:${env.BUILD_NUMBER} ."
                            }
                        }
                    }
                    parallel branches
                }
            }
        }
        stage('Tag') {
            when {
                expression { return env.BRANCH_NAME == 'main' }
            }
            steps {
                script {
                    for (svc in services) {
                        sh "docker tag example/${svc}:${env.BUILD_NUMBER} example/${svc}:latest"
                    }
                }
            }
        }
    }
}
