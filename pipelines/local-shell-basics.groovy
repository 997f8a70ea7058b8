// Runs on a plain Linux host: shell steps, their output captured and tested,
// the old and the new stage forms.
node {
    stage('Environment') {
        echo "build ${env.BUILD_NUMBER} of ${env.JOB_NAME} in ${pwd()}"
        sh 'uname -s'
        sh label: 'shell identity', script: 'echo "running as $(id -un) in $PWD"'
    }

    stage('Capture') {
        def kernel = sh(script: 'uname -s', returnStdout: true).trim()
        def lines = sh script: 'printf "a\\nb\\nc\\n"', returnStdout: true
        def count = lines.trim().split('\n').size()
        echo "kernel=${kernel} lines=${count}"
        if (kernel != 'Linux') {
            error "expected Linux, got ${kernel}"
        }
        if (count != 3) {
            error "expected 3 lines, got ${count}"
        }
    }

    stage('Exit codes') {
        def ok = sh(script: 'true', returnStatus: true)
        def bad = sh(script: 'exit 3', returnStatus: true)
        echo "true -> ${ok}, exit 3 -> ${bad}"
        if (ok != 0 || bad != 3) {
            error 'returnStatus did not report the exit codes'
        }
    }

    stage 'Old form'
    sh 'echo "a stage written the old way"'
    sh '''
        set -eu
        total=0
        for n in 1 2 3 4; do
            total=$((total + n))
        done
        test "$total" -eq 10
        echo "sum is $total"
    '''
}
