// Parameters a step does not have are warnings, as in Jenkins ("WARNING: Unknown
// parameter(s) found …" in the build log), and the step runs without them: the seed talk's
// own `git url: …, tag: …` is accepted.
node('linux') {
    stage('Checkout') {
        git url: 'https://github.com/example/tools.git', tag: "v0.6.15"
        echo message: 'checked out', level: 'info'
    }
}
