// A node labelled `docker`, a Go toolchain image used through docker.image().inside,
// and a Maven image pulled ahead of time and used for a second build.
node('docker')
{
    checkout scm

    docker.image('golang:1.6').inside {
        stage 'Build'
        sh 'go version'
        sh 'go build -o bin/app ./...'

        stage 'Test'
        sh 'go test ./... 2>&1 | tee go-test.log'
    }

    def maven = docker.image('maven:3.3.9-jdk-8'); maven.pull()
    maven.inside('-v $HOME/.m2:/root/.m2') {
        stage 'Package'
        sh 'mvn -B -DskipTests package'
        archiveArtifacts artifacts: 'target/*.jar', fingerprint: true
    }
}
