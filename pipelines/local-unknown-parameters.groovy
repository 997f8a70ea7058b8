// A parameter a step does not have is said in the build log where the step runs, as Jenkins
// says it, and the step runs without it.
node {
    stage('Warn and go on') {
        echo message: 'still printed', level: 'info'
        sh script: 'echo still run', colour: 'red', encoding: 'UTF-8'
    }
}
