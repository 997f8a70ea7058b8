// Everything a declarative pipeline can configure before its stages: environment with
// credentials, options, parameters, triggers and tools.
pipeline {
    agent { label 'linux && java' }

    tools {
        maven 'maven-3.9'
        jdk 'temurin-21'
    }

    environment {
        NEXUS = credentials('nexus-deployer')
        SONAR_TOKEN = credentials('sonar-token')
        MAVEN_OPTS = '-Xmx1g'
        DEPLOY_PATH = "/srv/apps/${env.JOB_NAME}"
    }

    options {
        timeout(time: 1, unit: 'HOURS')
        retry(2)
        disableConcurrentBuilds()
        buildDiscarder(logRotator(numToKeepStr: '10', daysToKeepStr: '30'))
        timestamps()
        skipDefaultCheckout(true)
        ansiColor('xterm')
    }

    parameters {
        string(name: 'VERSION_SUFFIX', defaultValue: 'SNAPSHOT', description: 'appended to the version')
        booleanParam(name: 'SKIP_TESTS', defaultValue: false, description: 'skip the test phase')
        choice(name: 'REPOSITORY', choices: ['snapshots', 'releases'], description: 'target repository')
        password(name: 'SIGNING_PASSPHRASE', defaultValue: '', description: 'GPG passphrase')
    }

    triggers {
        cron('H H(0-3) * * *')
        pollSCM('H/15 * * * *')
        upstream(upstreamProjects: 'platform-bom', threshold: hudson.model.Result.SUCCESS)
    }

    stages {
        stage('Checkout') {
            steps {
                checkout scm
            }
        }
        stage('Build') {
            steps {
                sh "mvn -B -Drevision=1.0.${BUILD_NUMBER}-${params.VERSION_SUFFIX} ${params.SKIP_TESTS ? '-DskipTests' : ''} verify"
            }
        }
        stage('Deploy') {
            environment {
                REPO_URL = "https://nexus.example.com/repository/maven-${params.REPOSITORY}/"
            }
            steps {
                sh 'mvn -B deploy -DaltDeploymentRepository=nexus::default::$REPO_URL -Dnexus.user=$NEXUS_USR -Dnexus.password=$NEXUS_PSW'
            }
        }
    }
}
