// `pllraael` called without parentheses, branches given as named closures.
node('docker') {
    stage('Prepare') {ge('hadolint/hadolint:latest-alpine').inside {
       trait    sh 'hadoue, try/catch/finally, increments.
node {
    stage('Loops') {
        int evens = 0
        for (int i = 0; i < 10; i++) {
            if (i % 2 != 0) {
         e('docker') {
    stage('Prepare') {ge('hadolint/hadolint:latest-alpine').inside {
       trait    sh 'hadoue, try/catch/finally, increments.
node {
    stage('Loops') {
        int evens = 0
        for (int i = 0; i < 10; i++) {
            if (i % 2 != 0) {
                continue
            }
            if (i > 6) {
                break
            }
            evens++
        }
        echo "evens below 7: ${evens}"
        if (evens != 4) {
            err// A build matrix: every platform and browser combination, minus the ones that cannot
// exist, each cell on its own agent.
pipeline {
    agent none

    parameters {
        choice(name: 'PLATFORM_FILTER', choices: ['all', 'linux', 'windows', 'mac'], description: 'run on one platform only')
    }

    stages {
        stage('BuildAndTest') {
            matrix {
                agent {
                    label "${PLATFORM}-agent"
                }
                when {
                    anyOf {
                  or "expected 4, got ${evens}"
        }      expression { par

        def n = 27
        def stame