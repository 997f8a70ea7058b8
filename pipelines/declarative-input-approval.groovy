// A manual gate before production: the stage waits for an approver, who also picks
// the rollout strategy; nothing holds an agent while waiting.
pipeline {
    agent none

    stages {
        stage('Build') {
            agent any
            steps {
                sh './build.sh'
                stash name: 'release', includes: 'dist/**'
            }
        }
        stage('Deploy to production') {
            agent { label 'deployer' }
            options {
                timeout(time: 1, unit: 'HOURS')
            }
            input {
                message 'Deploy this build to production?'
                ok 'Yes, deploy it'
                submitter 'release-managers,alice'
                submitterParameter 'APPROVER'
                parameters {
                    choice(name: 'STRATEGY', choices: ['rolling', 'blue-green', 'canary'], description: 'rollout strategy')
                    string(name: 'CHANGE_TICKET', defaultValue: '', description: 'change ticket number')
                }
            }
            steps {
                unstash 'release'
                echo "Approved by ${APPROVER}; strategy ${STRATEGY}, ticket ${CHANGE_TICKET}"
                sh "./deploy.sh --strategy ${STRATEGY} production"
            }
        }
    }
}
