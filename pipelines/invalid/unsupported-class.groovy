// expect: unsupported at 2:1: class definitions are not supported (`class Version`); use functions and maps
class Version {
    int major
    int minor
    String toString() { "${major}.${minor}" }
}

node('linux') {
    def v = new Version(major: 1, minor: 4)
    echo "version ${v}"
}
