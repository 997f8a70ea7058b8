// expect: unsupported step at 6:13: `bat` runs Windows batch commands and cannot run on a Linux pod (container `build`); use `sh`
podTemplate(containers: [containerTemplate(name: 'build', image: 'mcr.microsoft.com/dotnet/sdk:8.0', command: 'cat', ttyEnabled: true)]) {
    node(POD_LABEL) {
        container('build') {
            checkout scm
            bat 'dir'
            bat 'dotnet build Solution.sln'
        }
    }
}
