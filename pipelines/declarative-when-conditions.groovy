// Stages that run only when their conditions hold: branch patterns, expressions,
// environment values, and their combinations; `beforeAgent` avoids allocating an agent
// for a stage that will be skipped.
pipeline {
    agent none

    environment {
        DEPLOY_TO = 'staging'
        RELEASE = "${env.BRANCH_NAME == 'main' ? 'yes' : 'no'}"
    }

    stages {
        stage('Build') {
            agent any
            steps {
                sh 'make'
            }
        }
        stage('Feature preview') {
            agent { label 'preview' }
            when {
                beforeAgent true
                branch pattern: 'feature/.*', comparator: 'REGEXP'
            }
            steps {
                sh "./preview.sh ${env.BRANCH_NAME}"
            }
        }
        stage('Staging') {
            agent any
            when {
                allOf {
                    branch 'main'
                    environment name: 'DEPLOY_TO', value: 'staging'
                    not { changeRequest() }
                }
            }
            steps {
                sh './deploy.sh staging'
            }
        }
        stage('Production') {
            agent any
            when {
                beforeAgent true
                anyOf {
                    tag 'v*'
                    allOf {
                        branch 'release/*'
                        expression { return params.FORCE_DEPLOY == true }
                    }
                }
            }
            steps {
                sh './deploy.sh production'
            }
        }
        stage('Docs') {
            agent any
            when {
                not {
                    anyOf {
                        branch 'main'
                        expression { env.CHANGE_ID != null }
                    }
                }
                changeset 'docs/**'
            }
            steps {
                sh 'make docs'
            }
        }
    }
}
