// expect: type error at 5:21: `sleep` parameter `time` must be a number, found the string 'soon'
node('linux') {
    stage('Wait') {
        sh './start-server.sh &'
        sleep(time: 'soon', unit: 'SECONDS')
        sh 'curl -sf http://localhost:8080/health'
    }
}
