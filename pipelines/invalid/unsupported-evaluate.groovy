// expect: unsupported at 5:9: `evaluate` is not supported (it runs Groovy code that is not known in advance); use `load` for a file from the workspace
node('linux') {
    stage('Dynamic') {
        def snippet = readFile('ci/extra-steps.groovy')
        evaluate(snippet)
    }
}
