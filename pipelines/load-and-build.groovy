// Code kept in the repository and loaded at run time, a lock on a shared
// environment, a manual approval, and downstream jobs triggered with parameters.
node('linux') {
    def deployer
    stage('Checkout') {
        checkout scm
        deployer = load 'ci/deployer.groovy'
    }

    stage('Approve') {
        def answer = input message: 'Deploy to the shared QA environment?', ok: 'Deploy',
            parameters: [choice(name: 'REGION', choices: ['eu-west-1', 'us-east-1'], description: 'region')]
        env.REGION = answer
    }

    stage('Deploy QA') {
        lock(resource: 'qa-environment', inversePrecedence: true) {
            deployer.deploy('qa', env.REGION)
        }
        lock('qa-database') {
            sh './migrate.sh qa'
        }
    }

    stage('Downstream') {
        def e2e = build job: 'storefront-e2e', parameters: [
            string(name: 'ENVIRONMENT', value: 'qa'),
            booleanParam(name: 'FULL_SUITE', value: true),
        ], propagate: false, wait: true
        echo "e2e finished with ${e2e.result}"
        if (e2e.result != 'SUCCESS') {
            currentBuild.result = 'UNSTABLE'
        }
        build job: 'notify-release', wait: false
    }
}
