// expect: syntax error at 5:46: unterminated string: the `'` opened at 5:12 needs a closing `'` before the end of the line
node('linux') {
    stage('Deploy') {
        echo 'deploying to staging'
        sh 'kubectl apply -f k8s/staging.yaml
        echo 'done'
    }
}
