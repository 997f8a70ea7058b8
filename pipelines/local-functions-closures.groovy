// Top-level functions with default parameters, a @NonCPS helper, closures with
// parameters kept in variables, and the collection methods, on a plain Linux host.
def greet(name, greeting = 'Hello') {
    return "${greeting}, ${name}!"
}

@NonCPS
def keysOf(Map m) {
    def keys = []
    m.each { k, v -> keys << k }
    return keys
}

def shell(String cmd, boolean quiet = false) {
    if (!quiet) {
        echo "+ ${cmd}"
    }
    return sh(script: cmd, returnStdout: true).trim()
}

def twice = { c -> c(); c() }
def add = { a, b -> a + b }
def noArgs = { -> 'nothing' }

node {
    stage('Functions') {
        echo greet('valet')
        echo greet('valet', 'Goodbye')
        def user = shell('id -un', true)
        echo "user is ${user}"
        if (greet('x', 'Hi') != 'Hi, x!') {
            error 'default parameter was not overridden'
        }
    }

    stage('Closures') {
        def count = 0
        twice { count++ }
        echo "closure ran ${count} times; 2 + 3 = ${add(2, 3)}; ${noArgs()}"
        if (count != 2 || add(2, 3) != 5) {
            error 'closures misbehaved'
        }
    }

    stage('Collections') {
        def sizes = [api: 120, web: 340, worker: 75]
        echo "components: ${keysOf(sizes)}"
        def big = sizes.findAll { k, v -> v > 100 }.collect { k, v -> k }
        echo "big components: ${big}"
        def doubled = [1, 2, 3].collect { it * 2 }
        def total = 0
        doubled.each { total += it }
        if (total != 12) {
            error "expected 12, got ${total}"
        }
        sizes.each { name, kb ->
            writeFile file: "sizes/${name}.txt", text: kb.toString()
        }
        sh 'cat sizes/*.txt | tr "\\n" " "; echo'
        def fromShell = Integer.parseInt(shell('cat sizes/web.txt'))
        echo "web is ${fromShell} kB; nullable: ${sizes.mobile?.toString() ?: 'absent'}"
    }
}
