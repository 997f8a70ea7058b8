// expect: unknown-step at 5:13: unknown step `shh`; did you mean `sh`?
podTemplate(containers: [containerTemplate(name: 'build', image: 'alpine:3.19', command: 'cat', ttyEnabled: true)]) {
    node(POD_LABEL) {
        container('build') {
            shh 'make'
        }
    }
}
