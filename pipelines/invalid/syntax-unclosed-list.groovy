// expect: syntax error at 4:89 or 5:1: the `[` of `containers: [` at 2:25 is never closed; a `]` is expected before `)`
podTemplate(containers: [
    containerTemplate(name: 'maven', image: 'maven:3.9-eclipse-temurin-17', command: 'cat', ttyEnabled: true),
    containerTemplate(name: 'node', image: 'node:20', command: 'cat', ttyEnabled: true),
) {
    node(POD_LABEL) {
        sh 'true'
    }
}
