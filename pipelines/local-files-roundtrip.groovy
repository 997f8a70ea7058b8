// Workspace files on a plain Linux host: write, read, test for existence, change
// directory, stash and unstash, archive, and clean up.
node {
    stage('Write') {
        deleteDir()
        writeFile file: 'out/greeting.txt', text: 'hello from valet\n'
        writeFile(file: 'out/numbers.csv', text: "n,square\n1,1\n2,4\n3,9\n", encoding: 'UTF-8')
        dir('out/nested') {
            writeFile file: 'where.txt', text: "written in ${pwd()}\n"
            sh 'test -f where.txt && cat where.txt'
        }
    }

    stage('Read') {
        def greeting = readFile('out/greeting.txt').trim()
        if (!greeting.contains('valet')) {
            error "unexpected greeting: ${greeting}"
        }
        def rows = readFile(file: 'out/numbers.csv').trim().split('\n')
        def squares = rows.findAll { !it.startsWith('n,') }.collect { it.split(',')[1].toInteger() }
        def sum = 0
        squares.each { sum += it }
        echo "squares: ${squares}, sum ${sum}"
        if (sum != 14) {
            error "expected the squares to add up to 14, got ${sum}"
        }
        if (!fileExists('out/nested/where.txt')) {
            error 'the file written in dir() is missing'
        }
        if (fileExists('out/missing.txt')) {
            error 'a file that was never written exists'
        }
    }

    stage('Stash') {
        stash name: 'report', includes: 'out/**'
        dir('out') {
            deleteDir()
        }
        sh 'test ! -e out/greeting.txt'
        unstash 'report'
        sh 'test -f out/greeting.txt && test -f out/nested/where.txt'
    }

    stage('Archive') {
        sh 'mkdir -p reports && printf "<testsuite name=\\"smoke\\" tests=\\"1\\"><testcase name=\\"ok\\"/></testsuite>\\n" > reports/smoke.xml'
        junit 'reports/*.xml'
        archiveArtifacts artifacts: 'out/**/*.txt, out/*.csv', fingerprint: true
    }
}
