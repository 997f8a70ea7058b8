// expect: invalid value at 8:30: `resourceLimitMemory` '512Mo' is not a Kubernetes quantity (use e.g. '512Mi' or '1Gi')
podTemplate(containers: [
    containerTemplate(
        name: 'maven',
        image: 'maven:3.9-eclipse-temurin-17',
        command: 'cat',
        ttyEnabled: true,
        resourceLimitMemory: '512Mo',
        resourceRequestCpu: '500m',
    ),
]) {
    node(POD_LABEL) {
        container('maven') {
            sh 'mvn -B verify'
        }
    }
}
