// Every kind of volume a pod template can mount, plus a persistent workspace.
podTemplate(
    cloud: 'kubernetes',
    label: 'cache-pod',
    podRetention: never(),
    imagePullSecrets: ['registry-pull'],
    annotations: [podAnnotation(key: 'cluster-autoscaler.kubernetes.io/safe-to-evict', value: 'false')],
    workspaceVolume: persistentVolumeClaimWorkspaceVolume(claimName: 'ci-workspace', readOnly: false),
    volumes: [
        emptyDirVolume(mountPath: '/scratch', memory: true),
        hostPathVolume(hostPath: '/var/run/docker.sock', mountPath: '/var/run/docker.sock'),
        persistentVolumeClaim(claimName: 'maven-repo', mountPath: '/root/.m2/repository', readOnly: false),
        secretVolume(secretName: 'maven-settings', mountPath: '/root/.m2/settings'),
        configMapVolume(configMapName: 'build-config', mountPath: '/etc/build'),
        dynamicPVC(requestsSize: '10Gi', mountPath: '/cache', storageClassName: 'fast-ssd'),
    ],
    containers: [
        containerTemplate(name: 'maven', image: 'maven:3.9-eclipse-temurin-17', command: 'cat', ttyEnabled: true,
                          resourceRequestMemory: '1Gi', resourceLimitMemory: '3Gi'),
        containerTemplate(name: 'docker', image: 'docker:24-cli', command: 'cat', ttyEnabled: true, privileged: true),
    ],
) {
    node('cache-pod') {
        stage('Build') {
            checkout scm
            container('maven') {
                sh 'mvn -B -s /root/.m2/settings/settings.xml -Dmaven.repo.local=/root/.m2/repository package'
                sh 'cp target/*.jar /scratch/ && ls -l /scratch'
            }
        }
        stage('Image') {
            container('docker') {
                sh 'cat /etc/build/image-name'
                sh 'docker build -t "$(cat /etc/build/image-name):${BUILD_NUMBER}" .'
            }
        }
    }
}
