// The Kubernetes plugin's classic example: one pod with a Maven and a Go container,
// containers given as map literals, the old `stage 'name'` form inside the node.
podTemplate(label: 'mypod', containers: [
    [name: 'jnlp', image: 'jenkins/inbound-agent:latest-jdk17', args: '${computer.jnlpmac} ${computer.name}'],
    [name: 'maven', image: 'maven:3-jdk-8', ttyEnabled: true, command: 'cat'],
    [name: 'golang', image: 'golang:1.6', ttyEnabled: true, command: 'cat'],
]) {
    node('mypod') {
        stage 'Get a Maven project'
        git 'https://github.com/jenkinsci/kubernetes-plugin.git'
        container('maven') {
            stage 'Build a Maven project'
            sh 'mvn -B clean install -DskipTests'
        }

        stage 'Get a Golang project'
        git url: 'https://github.com/hashicorp/terraform.git', branch: 'main'
        container('golang') {
            stage 'Build a Go project'
            sh """
            mkdir -p /go/src/github.com/hashicorp
            ln -s `pwd` /go/src/github.com/hashicorp/terraform
            cd /go/src/github.com/hashicorp/terraform && make core-dev
            """
        }
    }
}
