// expect: unknown-parameter at 4:20: `sh` has no parameter `scrpit`; did you mean `script`? (`sh` takes script, returnStdout, returnStatus, label, encoding)
node('linux') {
    stage('Version') {
        def v = sh(scrpit: 'git describe --tags', returnStdout: true).trim()
        echo "version ${v}"
    }
}
