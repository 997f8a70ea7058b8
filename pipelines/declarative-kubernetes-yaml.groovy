// A Kubernetes agent described in YAML, with a default container, inheriting from a
// template defined on the controller.
pipeline {
    agent {
        kubernetes {
            inheritFrom 'base-agent'
            defaultContainer 'maven'
            yaml '''
apiVersion: v1
kind: Pod
spec:
  securityContext:
    runAsUser: 1000
    fsGroup: 1000
  containers:
  - name: maven
    image: maven:3.9-eclipse-temurin-21
    command: ["sleep"]
    args: ["infinity"]
    resources:
      requests:
        cpu: "1"
        memory: 2Gi
      limits:
        memory: 4Gi
  - name: trivy
    image: aquasec/trivy:0.50.0
    command: ["sleep"]
    args: ["infinity"]
'''
        }
    }

    options {
        timeout(time: 45, unit: 'MINUTES')
        buildDiscarder(logRotator(numToKeepStr: '20'))
    }

    stages {
        stage('Build') {
            steps {
                sh 'mvn -B -DskipTests package'
            }
        }
        stage('Test') {
            steps {
                sh 'mvn -B verify'
            }
            post {
                always {
                    junit 'target/surefire-reports/*.xml'
                }
            }
        }
        stage('Scan') {
            steps {
                container('trivy') {
                    sh 'trivy fs --exit-code 1 --severity CRITICAL .'
                }
            }
        }
    }
}
