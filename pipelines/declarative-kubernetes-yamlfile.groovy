// The pod spec kept in the repository (`yamlFile`), and stages that pick their own
// Kubernetes agents.
pipeline {
    agent {
        kubernetes {
            yamlFile 'ci/build-pod.yaml'
            defaultContainer 'builder'
        }
    }

    environment {
        IMAGE = 'registry.example.com/payments/api'
    }

    stages {
        stage('Compile') {
            steps {
                sh 'make compile'
            }
        }
        stage('Load test') {
            agent {
                kubernetes {
                    inheritFrom 'k6'
                    defaultContainer 'k6'
                    yaml """
spec:
  containers:
  - name: k6
    image: grafana/k6:0.49.0
    command: ["cat"]
    tty: true
"""
                }
            }
            steps {
                sh 'k6 run --vus 20 --duration 2m load/smoke.js'
            }
        }
        stage('Image') {
            steps {
                container('kaniko') {
                    sh "/kaniko/executor --destination ${IMAGE}:${BUILD_NUMBER}"
                }
            }
        }
    }
}
