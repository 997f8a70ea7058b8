// Branches built in loops: one per JDK version with a `for`, one per database with
// `each`; the closures capture a per-iteration copy of the loop variable.
def jdks = ['11', '17', '21']
def databases = [postgres: 'postgres:16', mysql: 'mysql:8.3', mariadb: 'mariadb:11']

def branches = [:]
for (int i = 0; i < jdks.size(); i++) {
    def jdk = jdks[i]
    branches["jdk-${jdk}"] = {
        podTemplate(containers: [
            containerTemplate(name: 'maven', image: "maven:3.9-eclipse-temurin-${jdk}", command: 'cat', ttyEnabled: true),
        ]) {
            node(POD_LABEL) {
                checkout scm
                container('maven') {
                    sh "mvn -B -q -Djava.version=${jdk} verify"
                }
            }
        }
    }
}

databases.each { name, image ->
    branches["it-${name}"] = {
        node('docker') {
            checkout scm
            docker.image(image).inside('--tmpfs /var/lib/data') {
                sh "./run-integration-tests.sh --db ${name}"
            }
        }
    }
}

for (target in ['docs', 'site']) {
    def t = target
    branches[t] = {
        node('linux') {
            checkout scm
            sh "make ${t}"
        }
    }
}

branches.failFast = false
stage('Matrix') {
    parallel branches
}
