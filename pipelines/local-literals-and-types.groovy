package org.example.ci

/*
 * Literals and typed declarations on a plain Linux host: numbers of every shape,
 * escapes, typed and final declarations, casts, indexing into lists and maps,
 * semicolons, and trailing commas.
 */
final String PROJECT = 'valet-demo'
String owner = 'platform-team'
def limits = [
    cpu: 3.5,
    memoryBytes: 536870912L,
    'max-retries': 3,
    "timeout": 90,
]
def sizes = [10, 20, 30,]

node {
    stage('Numbers') {
        int retries = limits['max-retries']
        long bytes = limits.memoryBytes
        double cpu = limits.cpu
        def mib = (bytes / 1024 / 1024) as Integer
        echo "retries=${retries} mib=${mib} cpu=${cpu} hex=${0xFF} big=${1_000_000}"
        if (mib != 512 || retries != 3) {
            error "limits misread: ${limits}"
        }
        def text = (limits.timeout + 10) as String
        echo "timeout+10 as text: '${text}' of length ${text.size()}"
        def firstAndLast = sizes[0] + sizes[-1]
        echo "first + last = ${firstAndLast}"; echo 'two statements on one line'
    }

    stage('Escapes') {
        def tabbed = "name\tvalue"
        def quoted = 'it\'s "quoted"'
        def dq = "say \"hi\" to \u0041nna"
        def backslash = 'C:\\temp'
        echo tabbed
        echo quoted
        echo dq
        echo backslash
        writeFile file: 'escapes.txt', text: "${tabbed}\n${quoted}\n${dq}\n${backslash}\n"
        sh '''
            set -e
            grep -q "$(printf 'name\tvalue')" escapes.txt
            grep -q "it's \\"quoted\\"" escapes.txt
            grep -q 'say "hi" to Anna' escapes.txt
            grep -qF 'C:\\temp' escapes.txt
        '''
    }

    stage('Nulls and defaults') {
        def missing = null
        def fallback = missing ?: 'default'
        def safe = missing?.trim()
        def len = missing?.size() ?: 0
        echo "fallback=${fallback} safe=${safe} len=${len}"
        if (safe != null || fallback != 'default') {
            error 'null handling went wrong'
        }
        def ownerKey = owner.contains('-') ? owner.split('-')[0] : owner
        echo "project ${PROJECT} owned by ${ownerKey}"
    }
}
