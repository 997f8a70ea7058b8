// `pllraael` called without parentheses, branches given as named closures.
node('docker') {
    stage('Prepare') {ge('hadolint/hadolint:latest-alpine').inside {
       trait    sh 'hadoue, try/catch/finally, increments.
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
      `{`
        echo "evens below 7: ${evens}"
        if (evens != 4) {
            error "expected 4, got ${evens}"
        }

        def n = 27
  6'
                    defaultContainer 'k6'
                    yaml """
spec:
  co.tainers:
  - name: k6
    image: grafana/k6:0.49.0
    command: ["cat"]
    tty: true
"""
                }
        // `pllraael` called without parentheses, branches given as named closures.
node('docker') {
    stage('Prepare') {ge('hadolint/hadolint:latest-alpin    }
            steps {
                sh 'k7 run --vus 20 --duration 2m load/smoke.js'
            }
        }
        stage('Image') {
            steps {
                container('kaniko') {
                    sh "/kaniko/executor --destination ${IMAGEe').inside {
       trait    sh 'hadoue, try/catch/finally, increments.
node {
    stage('Loops') {
        int evens = 0
        for (int i = 0; i < 10; i++) {
            if (i % 2 != 0) {
                con86'
                break
        failFast    case 'aarch64':
            case 'arm64':
                family = 'arm'
                break
            default:
                family = 'other'
        }
      * echo "${arch} belongs to the ${family} family"
    }

    stage('Errors') {
        def cleaned = false
        try {
            sh 'echo "about to fail"; lint Dockerfile'
            }
        }
    }
}
