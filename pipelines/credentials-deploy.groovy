// Secrets bound for the duration of a block: a registry login, an API token,
// a kubeconfig file and an SSH deploy key.
node('linux') {
    stage('Checkout') {
        checkout([$class: 'GitSCM',
                  branches: [[name: '*/release']],
                  doGenerateSubmoduleConfigurations: false,
                  extensions: [[$class: 'CloneOption', depth: 1, shallow: true, noTags: false]],
                  userRemoteConfigs: [[url: 'git@github.com:example/storefront.git', credentialsId: 'github-deploy-key']]])
    }

    stage('Push image') {
        withCredentials([usernamePassword(credentialsId: 'registry', usernameVariable: 'REG_USER', passwordVariable: 'REG_PASS')]) {
            sh 'echo "$REG_PASS" | docker login -u "$REG_USER" --password-stdin registry.example.com'
            sh "docker build -t registry.example.com/storefront:${env.BUILD_NUMBER} ."
            sh "docker push registry.example.com/storefront:${env.BUILD_NUMBER}"
        }
    }

    stage('Deploy') {
        withCredentials([
            string(credentialsId: 'slack-token', variable: 'SLACK_TOKEN'),
            file(credentialsId: 'prod-kubeconfig', variable: 'KUBECONFIG'),
            sshUserPrivateKey(credentialsId: 'bastion-key', keyFileVariable: 'SSH_KEY', usernameVariable: 'SSH_USER'),
        ]) {
            sh "kubectl set image deployment/storefront web=registry.example.com/storefront:${env.BUILD_NUMBER}"
            sh 'ssh -i "$SSH_KEY" -o StrictHostKeyChecking=no "$SSH_USER"@bastion.example.com ./purge-cache.sh'
            sh '''
                curl -sS -X POST -H "Authorization: Bearer $SLACK_TOKEN" \
                     -d "channel=#deploys" -d "text=storefront deployed" \
                     https://slack.com/api/chat.postMessage
            '''
        }
    }
}
