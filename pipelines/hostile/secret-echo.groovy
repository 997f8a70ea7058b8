// A step that prints its credential, plainly and in base64: every log and event shows
// `****` instead.
node {
    withCredentials([string(credentialsId: 'soak-token', variable: 'TOKEN')]) {
        sh 'echo "token: $TOKEN"; printf "%s" "$TOKEN" | base64'
    }
}
