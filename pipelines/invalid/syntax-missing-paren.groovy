// expect: syntax error at 6:45: expected `)` or `,` after the arguments of `sh(` at 6:9, found `archiveArtifacts` on the next line
node('linux') {
    stage('Build') {
        checkout scm
        def version = readFile('VERSION').trim()
        sh(script: "make VERSION=${version}"
        archiveArtifacts artifacts: 'dist/**'
    }
}
