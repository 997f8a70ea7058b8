// Helper functions at the top level (with default parameters and a @NonCPS one),
// called later from inside the node.
def notify(String status, String channel = '#builds') {
    def colour = status == 'SUCCESS' ? 'good' : (status == 'UNSTABLE' ? 'warning' : 'danger')
    echo "[${channel}] ${env.JOB_NAME} #${env.BUILD_NUMBER}: ${status} (${colour})"
}

@NonCPS
def parseModules(String text) {
    return text.split('\n')
        .collect { it.trim() }
        .findAll { it && !it.startsWith('#') }
}

def runModule(name, goals = 'verify', boolean quiet = true) {
    def flags = quiet ? '-q' : ''
    sh "mvn -B ${flags} -pl ${name} ${goals}"
}

int countFailures(List results) {
    int n = 0
    results.each { r ->
        if (r.status != 0) {
            n++
        }
    }
    return n
}

node('maven') {
    try {
        stage('Checkout') {
            checkout scm
        }
        def modules = parseModules(readFile('modules.txt'))
        echo "modules: ${modules.join(', ')}"

        def results = []
        stage('Build modules') {
            for (m in modules) {
                def rc = sh(script: "mvn -B -q -pl ${m} verify", returnStatus: true)
                results << [name: m, status: rc]
            }
        }
        def failures = countFailures(results)
        if (failures > 0) {
            currentBuild.result = 'UNSTABLE'
            echo "${failures} of ${results.size()} modules failed: ${results.findAll { it.status != 0 }.collect { it.name }}"
        }
        stage('Site') {
            runModule('docs', 'site')
            runModule 'docs', 'site:stage', false
        }
        notify(currentBuild.currentResult)
    } catch (e) {
        notify('FAILURE', '#build-alerts')
        throw e
    }
}
