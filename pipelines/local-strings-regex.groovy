// Strings and regular expressions on a plain Linux host: GStrings with code and
// nested quotes inside `${…}`, `$name.prop`, escaped dollars, triple-quoted strings of
// both kinds, slashy strings, `=~` and `==~`.
def app = [name: 'billing', version: '2.14.3', owners: ['ana', 'bo']]
def branch = env.BRANCH_NAME ?: 'feature/JIRA-1234-faster-invoices'

node {
    stage('Interpolation') {
        echo "app $app.name version $app.version"
        echo "owners: ${app.owners.collect { "@${it}" }.join(' ')}"
        echo "branch kind: ${branch.startsWith('feature/') ? "feature (${branch.split('/')[1]})" : 'other'}"
        echo "price is \$5 and the shell sees \${HOME} literally"
        echo 'single quotes keep ${app.name} and $HOME as written'
        def label = "${app.name}-${app.version.replace('.', '_')}"
        if (label != 'billing-2_14_3') {
            error "unexpected label ${label}"
        }
    }

    stage('Regex') {
        def m = branch =~ /([A-Z]+-\d+)/
        def ticket = m ? m[0][1] : 'none'
        echo "ticket: ${ticket}"
        if (!(app.version ==~ /\d+\.\d+\.\d+/)) {
            error "version ${app.version} is not semantic"
        }
        def path = /src\/main\/resources/
        echo "slashy path: ${path}"
        def parts = app.version.split(/\./)
        def minor = parts[1].toInteger()
        echo "minor version ${minor}, as text '${minor.toString()}'"
        if (minor < 10) {
            error 'minor version parsing failed'
        }
        def ratio = minor / 2
        echo "half the minor version: ${ratio}"
    }

    stage('Multi-line') {
        def notes = """Release ${app.name} ${app.version}
  owners: ${app.owners.join(', ')}
  built by build ${env.BUILD_NUMBER ?: 'local'}
"""
        writeFile file: 'notes.txt', text: notes
        sh '''
            set -e
            grep -q "^Release billing 2.14.3$" notes.txt
            grep -q "^  owners: ana, bo$" notes.txt
            echo "$(wc -l < notes.txt) lines, and $HOME stays for the shell"
        '''
        sh """
            test "\$(head -n1 notes.txt)" = "Release ${app.name} ${app.version}"
            echo "checked by \$(id -un)"
        """
    }

    stage('Continuations') {
        def words = sh(script: 'printf "  alpha beta  gamma  "', returnStdout: true)
            .trim()
            .split(/\s+/)
        def longWords = words.findAll { it.size() > 4 }
        echo "words=${words.size()} long=${longWords}"
        def joined = 'a' +
            'b' +
            'c'
        def spliced = "one \
two"
        echo "${joined} / ${spliced}"
        if (words.size() != 3 || joined != 'abc') {
            error 'chained calls or continued lines went wrong'
        }
    }
}
