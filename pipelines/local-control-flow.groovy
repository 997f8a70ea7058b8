// Control flow evaluated by valet itself on a plain Linux host: switch, while,
// C-style for with break and continue, try/catch/finally, increments.
node {
    stage('Loops') {
        int evens = 0
        for (int i = 0; i < 10; i++) {
            if (i % 2 != 0) {
                continue
            }
            if (i > 6) {
                break
            }
            evens++
        }
        echo "evens below 7: ${evens}"
        if (evens != 4) {
            error "expected 4, got ${evens}"
        }

        def n = 27
        def steps = 0
        while (n != 1) {
            n = n % 2 == 0 ? (n / 2) as Integer : 3 * n + 1
            steps += 1
        }
        echo "collatz(27) takes ${steps} steps"
    }

    stage('Switch') {
        def arch = sh(script: 'uname -m', returnStdout: true).trim()
        String family
        switch (arch) {
            case 'x86_64':
            case 'amd64':
                family = 'x86'
                break
            case 'aarch64':
            case 'arm64':
                family = 'arm'
                break
            default:
                family = 'other'
        }
        echo "${arch} belongs to the ${family} family"
    }

    stage('Errors') {
        def cleaned = false
        try {
            sh 'echo "about to fail"; exit 2'
            error 'not reached'
        } catch (Exception e) {
            echo "caught: ${e.message}"
        } finally {
            cleaned = true
        }
        if (!cleaned) {
            error 'finally did not run'
        }

        try {
            error 'deliberate'
        } catch (hudson.AbortException e) {
            echo "caught by type: ${e.getMessage()}"
        }

        def attempts = 0
        try {
            retry(3) {
                attempts++
                if (attempts < 3) {
                    error "attempt ${attempts} fails"
                }
                echo "attempt ${attempts} succeeds"
            }
        } catch (err) {
            error "retry gave up after ${attempts} attempts: ${err}"
        }
    }
}
