// The pod written as raw Kubernetes YAML; the build runs in the `kaniko` and `helm` containers.
podTemplate(yaml: '''
apiVersion: v1
kind: Pod
metadata:
  labels:
    app: image-builder
spec:
  serviceAccountName: builder
  containers:
  - name: kaniko
    image: gcr.io/kaniko-project/executor:debug
    command:
    - sleep
    args:
    - 9999999
    resources:
      requests:
        cpu: 500m
        memory: 1Gi
      limits:
        memory: 2Gi
  - name: helm
    image: alpine/helm:3.14.0
    command: ["cat"]
    tty: true
''') {
    node(POD_LABEL) {
        def tag = ''
        stage('Source') {
            checkout scmGit(branches: [[name: 'main']],
                            userRemoteConfigs: [[url: 'https://github.com/example/image-builder.git']])
            tag = sh(script: 'git rev-parse --short HEAD', returnStdout: true).trim()
        }
        stage('Image') {
            container('kaniko') {
                sh "/kaniko/executor --context `pwd` --destination registry.example.com/shop/api:${tag} --cache=true"
            }
        }
        stage('Chart') {
            container('helm') {
                sh "helm lint charts/api"
                sh "helm package charts/api --app-version ${tag} --destination dist/"
                archiveArtifacts artifacts: 'dist/*.tgz'
                // The Kubernetes plugin's kubeconfig wrapper (its tests use this older name).
                kubeconfig(serverUrl: 'https://kubernetes.default', credentialsId: 'deployer') {
                    sh "helm upgrade --install api dist/api-${tag}.tgz"
                }
            }
        }
    }
}
