// expect: unsupported at 2:1: `import` is not supported (`groovy.json.JsonSlurper`); use the `readJSON` step instead
import groovy.json.JsonSlurper

node('linux') {
    stage('Config') {
        checkout scm
        def cfg = new JsonSlurper().parseText(readFile('config.json'))
        echo "deploying ${cfg.service}"
    }
}
