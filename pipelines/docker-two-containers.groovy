// The seed's two-container shape, with images built locally (`just images`), for the Docker
// backend: `valet run --backend docker pipelines/docker-two-containers.groovy`.
// Steps land in the container they name; both containers see the same workspace.
podTemplate(containers: [
    containerTemplate(name: 'maven', image: 'valet/busybox:latest', command: 'sleep', args: '3601',
                      resourceLimitMemory: '64Mi', resourceLimitCpu: '500m'),
    containerTemplate(name: 'golang', image: 'valet/busybox:latest', command: 'sleep', args: '3602'),
]) {
    node(POD_LABEL) {
        stage('Build a Maven project') {
            container('maven') {
                sh 'echo "maven runs: $(tr "\\0" " " < /proc/1/cmdline)"; echo built-by-maven > artifact.txt'
            }
        }
        stage('Build a Go project') {
            container('golang') {
                sh 'echo "golang runs: $(tr "\\0" " " < /proc/1/cmdline)"; grep built-by-maven artifact.txt'
            }
        }
    }
}
