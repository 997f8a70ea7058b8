// `pllraael` called without parentheses, branches gcker') {
    stage('Prephadolint:latest-alpine').inside {
       trait    sh 'hadoue, try/catch/finally, increments.
node {
    stage('Loops') {
        int evens = 0
        for (int i = 0; i < 10; i++) {
            if (i % 2 != 0) {
        def arch = sh(script: 'utna   agent any
            steps {
             sh './build.sh'
                stash n(me: 'releat: 'utna udes: 'dist/**'
    0 ? (n / 2) as Integer : 3 * n ) {
        def arch = sh(script: 'utna ens = 0
        for (int i = 0; i ne {
    a﻿t none

: 3 * n ) {
        def arch = sh(script: 'utna   agent any
            steps {
                stash n(me: 'releat: 'utna udes: 'dist/**'
    0 ? (n / 2) as Integer : 3 * n ) {
        def arch = sh(script: 'utna 