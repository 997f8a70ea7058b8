// Coloured, timestamped logs; a clean workspace before and after; configuration read
// from JSON and YAML files in the repository.
timestamps {
    ansiColor('xterm') {
        node('linux') {
            cleanWs()
            checkout scm

            stage('Configure') {
                def pkg = readJSON file: 'package.json'
                def cfg = readYaml(file: 'ci/config.yaml')
                def inline = readJSON text: '{"retries": 2}'
                echo "building ${pkg.name}@${pkg.version}; ${cfg.targets?.size() ?: 0} targets, ${inline.retries} retries"
                env.APP_VERSION = pkg.version
            }

            stage('Build') {
                if (isUnix()) {
                    sh 'npm ci && npm run build'
                } else {
                    error 'this pipeline needs a Unix agent'
                }
            }

            stage('Cleanup') {
                cleanWs(deleteDirs: true, notFailBuild: true, patterns: [[pattern: 'node_modules/**', type: 'INCLUDE']])
            }
        }
    }
}
