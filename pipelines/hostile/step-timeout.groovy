// A step that would run for minutes under a one-second timeout: the step's processes are
// ended and the build ends with the timeout as its reason.
node {
    timeout(time: 1, unit: 'SECONDS') {
        sh 'sleep 300'
    }
}
