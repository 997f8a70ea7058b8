// Parallel branches on a plain Linux host, in all three forms: a map of closures built
// in loops, a literal map with failFast, and named closures without parentheses.
def shards = 4
def branches = [:]
for (int i = 1; i <= shards; i++) {
    def shard = i
    branches["shard-${shard}"] = {
        node {
            dir("shard-${shard}") {
                writeFile file: 'input.txt', text: "${shard}\n"
                sh "expr \$(cat input.txt) \\* ${shard} > output.txt"
                def result = readFile('output.txt').trim() as Integer
                echo "shard ${shard}: ${result}"
                if (result != shard * shard) {
                    error "shard ${shard} computed ${result}"
                }
            }
        }
    }
}

['lint', 'format'].each { check ->
    branches[check] = {
        node {
            sh "echo 'running ${check}' && sleep 1"
        }
    }
}

stage('Sharded') {
    parallel branches
}

stage('Literal map') {
    parallel(
        quick: {
            node {
                sh 'echo quick'
            }
        },
        slow: {
            node {
                sleep(time: 2, unit: 'SECONDS')
                sh 'echo slow'
            }
        },
        failFast: true,
    )
}

stage('Named closures') {
    node {
        parallel left: {
            sh 'echo left'
        }, right: {
            sh 'echo right'
        }
    }
}
