// An artifact that is a symbolic link to a host directory, then a file under a directory
// of the same name. A host `tar -xf` of the second archive follows the link the first one
// left and writes pwned.txt into TARGET, on the host, as the user running valet. valet
// unpacks archives itself: the link is left out with a warning, and d/pwned.txt is kept
// in the artifacts directory.
// The pod's `tar` is the pipeline's own (a wrapper that also reads names with -T, as GNU
// tar does), as any image's may be: nothing that comes out of a pod is trusted.
properties([parameters([string(name: 'TARGET', defaultValue: '/tmp/valet-escape-target')])])
podTemplate(containers: [containerTemplate(name: 'main', image: 'valet/busybox:latest')]) {
    node(POD_LABEL) {
        container('main') {
            // busybox's shell runs its own applets before any `tar` on the PATH, so the
            // wrapper takes the place of /bin/sh (the container's root may do that).
            sh '''
                mkdir -p /bb && cp /bin/busybox /bb/busybox
                printf '#!/bb/busybox sh\\nif [ "$2" = "tar -cf - -T -" ]; then exec /bb/busybox tar -cf - $(/bb/busybox cat); fi\\nexec /bb/busybox sh "$@"\\n' > /bin/sh.new
                chmod 755 /bin/sh.new && mv /bin/sh.new /bin/sh
            '''
            sh "rm -rf d; ln -s ${params.TARGET} d"
            archiveArtifacts 'd'
            sh 'rm d; mkdir d; echo x > d/pwned.txt'
            archiveArtifacts 'd/pwned.txt'
        }
    }
}
