// expect: unsupported at 6:24: `new java.io.File(…)` is not supported, only exceptions and collections may be created with `new`; use readFile/writeFile/fileExists
node('linux') {
    stage('Inspect') {
        checkout scm
        def errors = new ArrayList()
        def manifest = new java.io.File("${env.WORKSPACE}/manifest.txt")
        if (manifest.exists()) {
            errors.add('manifest present')
        }
        if (!errors.isEmpty()) {
            throw new IllegalStateException(errors.join(', '))
        }
    }
}
