// expect: syntax error: unexpected end of file, a `{` is never closed (by bracket count the `{` of `node('linux') {` at 2:15; by indentation the `stage('Test') {` at 8:5 lacks its `}`)
node('linux') {
    stage('Build') {
        checkout scm
        sh 'make'
    }

    stage('Test') {
        sh 'make test'
        junit 'build/test-results/*.xml'
}
