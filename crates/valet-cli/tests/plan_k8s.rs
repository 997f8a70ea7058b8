//! `valet plan --format k8s`: the Pod objects of every Kubernetes example pipeline, as the
//! backend would create them, without a cluster (a new `pipelines/k8s-*.groovy` is a new
//! snapshot).

use std::process::Command;

fn plan_k8s(path: &std::path::Path) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_valet"))
        .args(["plan", "--format", "k8s"])
        .arg(path)
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
        .output()
        .expect("valet runs");
    format!(
        "exit: {}\nstderr: {}\n{}",
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).replace(&path.display().to_string(), "FILE"),
        String::from_utf8_lossy(&out.stdout).replace(&path.display().to_string(), "FILE")
    )
}

#[test]
fn the_pods_of_each_kubernetes_pipeline() {
    insta::glob!("../../../pipelines", "k8s-*.groovy", |path| {
        insta::assert_snapshot!(plan_k8s(path));
    });
}

#[test]
fn the_manifests_are_what_the_template_says_combined_with_its_yaml() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("Jenkinsfile");
    std::fs::write(
        &file,
        r#"podTemplate(yaml: '''
spec:
  tolerations:
  - key: dedicated
    value: ci
  imagePullSecrets:
  - name: regcred
  containers:
  - name: jnlp
    image: jenkins/inbound-agent
  - name: app
    image: from-yaml:1
    volumeMounts:
    - name: cache
      mountPath: /cache
  volumes:
  - name: cache
    emptyDir: {}
''', containers: [
    containerTemplate(name: 'app', image: 'app:2', command: 'sleep', args: '99d',
                      resourceLimitMemory: '256Mi', runAsUser: '1000', runAsGroup: '1000')
], runAsUser: '1000', runAsGroup: '2000', nodeSelector: 'disk=ssd') {
    node(POD_LABEL) { container('app') { sh 'id' } }
}
"#,
    )
    .unwrap();
    let out = plan_k8s(&file);
    assert!(out.starts_with("exit: 0\n"), "{out}");
    // What only the YAML says is kept; what the template says wins; Jenkins' own agent
    // container is never created.
    for want in [
        "key: dedicated",
        "name: regcred",
        "image: app:2",
        "mountPath: /cache",
        "memory: 256Mi",
        "disk: ssd",
        "fsGroup: 2000",
        "- --\n    - sleep\n    - 99d",
    ] {
        assert!(out.contains(want), "`{want}` missing:\n{out}");
    }
    assert!(!out.contains("jnlp") && !out.contains("from-yaml"), "{out}");
}
