// Asks valet to hold 512 MiB in its own memory, twice: as the value of
// `sh(returnStdout: true)` and of `readFile`. Each step stops at the limit of what a step
// reads into a value (16 MiB) and fails with it; the build ends FAILURE with the reason,
// and the process that runs it stays small.
node {
    stage('returnStdout') {
        catchError(buildResult: 'FAILURE', stageResult: 'FAILURE') {
            def out = sh(returnStdout: true, script: 'head -c 536870912 /dev/zero')
            echo "length: ${out.length()}"
        }
    }
    stage('readFile') {
        catchError(buildResult: 'FAILURE', stageResult: 'FAILURE') {
            sh 'head -c 536870912 /dev/zero > big.bin'
            echo "length: ${readFile('big.bin').length()}"
        }
    }
}
