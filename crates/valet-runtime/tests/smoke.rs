mod common;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smoke() {
    let r = common::run(r#"
def greet(name) { return "hello ${name}" }
node {
  stage('A') {
    echo greet('world')
    sh 'echo from sh; echo $HOME'
    def out = sh(script: 'echo captured', returnStdout: true).trim()
    echo "out=${out} ${env.HOME}"
    def m = [a: 1, b: 2]
    m.each { k, v -> echo "${k}=${v}" }
    echo "${[1,2,3].collect { it * 2 }.join(',')}"
  }
}
"#).await;
    println!("{}", r.output());
    println!("{:?}", r.outcome);
    assert_eq!(r.outcome.result, valet_runtime::BuildResult::Success);
}
