// expect: syntax error at 4:30: the `${` at 4:18 is not closed: a `}` is expected before the closing `"`
node('linux') {
    def tag = sh(script: 'git describe --tags', returnStdout: true).trim()
    echo "tag is ${tag.trim()"
    sh "docker push example/app:${tag}"
}
