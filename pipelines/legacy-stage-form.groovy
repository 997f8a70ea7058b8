#!/usr/bin/env groovy
// Written before `stage('x') { … }` existed: each `stage 'name'` runs until the next one.
node {
    stage 'Checkout'
    checkout scm

    stage 'Build'
    sh 'make -j4'

    stage 'Test'
    sh 'make check'
    junit 'build/test-results/*.xml'

    stage 'Archive'
    archive 'build/dist/**'
}
