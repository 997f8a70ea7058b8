// A fork bomb in a Docker pod, inside a timeout. The container's process limit
// (--default-pids-limit, YAML container_policy.default_pids_limit) keeps it inside the
// container; the timeout ends the step within its grace (killing the container from outside
// when its agent cannot answer); the teardown removes the pod, its volume included.
// `sleep` first and `wait` last keep the step running without forking once the bomb fills
// the container, so only the timeout ends it.
podTemplate(containers: [containerTemplate(name: 'main', image: 'valet/busybox:latest')]) {
    node(POD_LABEL) {
        container('main') {
            timeout(time: 20, unit: 'SECONDS') {
                sh '''
                    sleep 600 &
                    bomb() { bomb | bomb & }
                    bomb
                    wait
                '''
            }
        }
    }
}
