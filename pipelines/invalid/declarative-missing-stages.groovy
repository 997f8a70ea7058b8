// expect: declarative error at 2:1: `pipeline` needs an `agent` and a `stages` section; `steps` at 5:5 is only allowed inside a `stage`
pipeline {
    agent any

    steps {
        sh 'make'
    }
}
