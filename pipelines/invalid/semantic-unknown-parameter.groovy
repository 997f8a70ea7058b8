// expect: missing-parameter at 4:17: `sh` needs its `script` parameter, and the warning that `scrpit` is ignored (did you mean `script`?)
node('linux') {
    stage('Version') {
        def v = sh(scrpit: 'git describe --tags', returnStdout: true).trim()
        echo "version ${v}"
    }
}
