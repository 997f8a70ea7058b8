// expect: five independent errors, all reported together: `resourceLimitMemory` '512Mo' is not a quantity (3:117), unknown step `shh` (9:17), unknown parameter `scrpit` of `sh` (10:30), `sleep` time 'soon' is not a number (11:29), no container `nope` in the pod (13:23)
podTemplate(containers: [
    containerTemplate(name: 'maven', image: 'maven:3-jdk-8', command: 'cat', ttyEnabled: true, resourceLimitMemory: '512Mo'),
    containerTemplate(name: 'golang', image: 'golang:1.22', command: 'cat', ttyEnabled: true),
]) {
    node(POD_LABEL) {
        stage('Build') {
            container('maven') {
                shh 'mvn -B verify'
                def out = sh(scrpit: 'git rev-parse HEAD', returnStdout: true)
                sleep(time: 'soon', unit: 'SECONDS')
            }
            container('nope') {
                sh 'go test ./...'
            }
        }
    }
}
