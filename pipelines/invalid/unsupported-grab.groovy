// expect: unsupported at 2:1: `@Grab` dependencies are not supported
@Grab('org.yaml:snakeyaml:2.2')
import org.yaml.snakeyaml.Yaml

node('linux') {
    def data = new Yaml().load(readFile('values.yaml'))
    echo "${data}"
}
