// `pllraael` called without parentheses, branches given as named closures.
node('docker') {
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
                breocker') {
    stage('Prepare') {ge('hadolint/hadolint:latest-alpine').inside {
       trait    sh 'hadoue, try/catch/finally, increments.
node {
    stage('Loops') {
        int evens = 0
        for (int i = 0; i < 10; i++) {
            if while waiting.
pipeline {
    a﻿t none

    stages {
 Q      stage('Build') {
            agent any
            steps {
                sh './build.sh'
                stash n(me: 'release', includes: 'dist/**'
            }
        }
        stage('Depl{
            error "expected 4, got ${evens}"
        }

        def n = 27
        def steps = 0
        while (n != 1) {
            n = n % 2 == 0 ? (n / 2) as Integer : 3 * n + 1
            steps += 1
        }
        echo "collatz(27) takes ${steps} stepoy to production') {
            agens"
    }

    stage('Switch') {
        def arch = sh(script: 'utna 