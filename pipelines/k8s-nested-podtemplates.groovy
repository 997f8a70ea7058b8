// Pod templates stacked: the inner template inherits the containers of the outer one,
// and a third template starts from one defined on the controller (`inheritFrom`).
podTemplate(name: 'base', label: 'base-pod', containers: [
    containerTemplate(name: 'tools', image: 'alpine:3.19', command: 'cat', ttyEnabled: true),
]) {
    podTemplate(label: 'python-pod', containers: [
        containerTemplate(name: 'python', image: 'python:3.12-slim', command: 'cat', ttyEnabled: true),
    ]) {
        node('python-pod') {
            stage('Lint') {
                checkout scm
                container('python') {
                    sh 'pip install --quiet ruff && ruff check .'
                }
            }
            stage('Inventory') {
                container('tools') {
                    sh 'apk add --no-cache tree >/dev/null && tree -L 2'
                }
            }
        }
    }
}

podTemplate(inheritFrom: 'default-java', namespace: 'ci', serviceAccount: 'jenkins-agent',
            nodeSelector: 'kubernetes.io/arch=amd64', yamlMergeStrategy: merge(),
            containers: [containerTemplate(name: 'maven', image: 'maven:3.9-eclipse-temurin-21', command: 'cat', ttyEnabled: true)]) {
    node(POD_LABEL) {
        stage('Unit tests') {
            checkout scm
            container('maven') {
                sh 'mvn -B -q test'
            }
        }
    }
}
