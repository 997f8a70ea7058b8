// Environment variables on a plain Linux host: env.X read and written, withEnv,
// timeout, retry, waitUntil and sleep around shell steps.
env.GREETING = 'hello'
env.BUILD_FLAVOUR = env.BUILD_FLAVOUR ?: 'debug'

node {
    stage('Read and write env')
    {
        sh 'test "$GREETING" = hello'
        env.STARTED_AT = "${System.currentTimeMillis()}"
        echo "started at ${env.STARTED_AT}, flavour ${env.BUILD_FLAVOUR}, workspace ${env.WORKSPACE}"
        withEnv(['GREETING=bonjour', "EXTRA=${env.BUILD_FLAVOUR}-extra"])
        {
            sh 'test "$GREETING" = bonjour && echo "extra: $EXTRA"'
        }
        sh 'test "$GREETING" = hello'
    }

    stage('Waiting') {
        sh 'rm -f ready.flag'
        def polls = 0
        timeout(time: 1, unit: 'MINUTES') {
            waitUntil {
                polls++
                if (polls == 3) {
                    sh 'touch ready.flag'
                }
                fileExists 'ready.flag'
            }
        }
        echo "ready after ${polls} polls"
        if (polls != 3) {
            error "expected 3 polls, got ${polls}"
        }
        def tries = 0
        retry(5) {
            tries += 1
            sh "test ${tries} -ge 3"
        }
        echo "succeeded on try ${tries}"
        sleep(time: 500, unit: 'MILLISECONDS')
    }

    stage('Timing') {
        long t0 = System.currentTimeMillis()
        sh 'sleep 1'
        def elapsed = System.currentTimeMillis() - t0
        echo "slept for ${elapsed} ms"
        if (elapsed < 900) {
            error "sleep 1 took only ${elapsed} ms"
        }
    }
}
