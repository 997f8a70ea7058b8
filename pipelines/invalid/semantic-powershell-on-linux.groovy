// expect: unsupported step at 4:9: `powershell` cannot run on a Linux pod; use `sh` (or `pwsh` is refused the same way)
node('linux') {
    stage('Package') {
        powershell 'Compress-Archive -Path dist\\* -DestinationPath app.zip'
    }
}
