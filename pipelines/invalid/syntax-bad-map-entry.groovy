// expect: syntax error at 4:20: expected `,` or `]` after the map entry `name: 'maven'`, found `image`
podTemplate(containers: [
    [name: 'jnlp', image: 'jenkins/inbound-agent:latest'],
    [name: 'maven' image: 'maven:3-jdk-8', ttyEnabled: true, command: 'cat'],
]) {
    node(POD_LABEL) {
        container('maven') {
            sh 'mvn -v'
        }
    }
}
