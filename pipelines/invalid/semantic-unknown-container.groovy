// expect: unknown container at 10:19: the pod has no container `nope` (it has `jnlp`, `maven`, `golang`)
podTemplate(label: 'mypod', containers: [
    [name: 'maven', image: 'maven:3-jdk-8', ttyEnabled: true, command: 'cat'],
    [name: 'golang', image: 'golang:1.6', ttyEnabled: true, command: 'cat'],
]) {
    node('mypod') {
        container('maven') {
            sh 'mvn -v'
        }
        container('nope') {
            sh 'go version'
        }
    }
}
