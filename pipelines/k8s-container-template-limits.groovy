// Containers declared with containerTemplate(): resource requests and limits,
// environment variables, a non-root user, and the pod label taken from POD_LABEL.
podTemplate(
    runAsUser: 1000,
    runAsGroup: 1000,
    containers: [
        containerTemplate(
            name: 'gradle',
            image: 'gradle:8.5-jdk17',
            command: 'sleep',
            args: '99d',
            resourceRequestCpu: '500m',
            resourceLimitCpu: '2',
            resourceRequestMemory: '256Mi',
            resourceLimitMemory: '512Mi',
            envVars: [
                envVar(key: 'GRADLE_OPTS', value: '-Dorg.gradle.daemon=false'),
                envVar(key: 'GRADLE_USER_HOME', value: '/home/gradle/.gradle'),
            ],
        ),
        containerTemplate(
            name: 'node',
            image: 'node:20-alpine',
            ttyEnabled: true,
            command: 'cat',
            runAsUser: '1000',
            resourceRequestCpu: '250m',
            resourceLimitMemory: '1Gi',
            envVars: [
                containerEnvVar(key: 'NPM_CONFIG_CACHE', value: '/tmp/.npm'),
                secretEnvVar(key: 'NPM_TOKEN', secretName: 'npm-publish', secretKey: 'token'),
            ],
            ports: [portMapping(name: 'devserver', containerPort: 3000, hostPort: 3000)],
        ),
        containerTemplate(
            name: 'busybox',
            image: 'busybox:1.36',
            command: 'cat',
            ttyEnabled: true,
            workingDir: '/home/jenkins/agent',
            alwaysPullImage: true,
            shell: '/bin/sh',
            livenessProbe: containerLivenessProbe(execArgs: 'true', initialDelaySeconds: 5, timeoutSeconds: 2,
                                                  failureThreshold: 3, periodSeconds: 10, successThreshold: 1),
        ),
    ],
    envVars: [envVar(key: 'CI', value: 'true')],
    activeDeadlineSeconds: 3600,
    instanceCap: 4,
    idleMinutes: 5,
) {
    node(POD_LABEL) {
        stage('Checkout') {
            checkout scm
        }
        stage('Backend') {
            container('gradle') {
                sh './gradlew --no-daemon build'
                junit allowEmptyResults: true, testResults: 'build/test-results/test/*.xml'
            }
        }
        stage('Frontend') {
            container('node') {
                dir('web') {
                    sh 'npm ci'
                    sh 'npm run build'
                }
            }
        }
        stage('Smoke') {
            container(name: 'busybox', shell: '/bin/sh') {
                sh 'ls -la && df -h .'
            }
        }
        stage('Logs') {
            containerLog 'node'
        }
    }
}
