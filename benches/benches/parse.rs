//! Parse and plan speed, each against a trivial pass over the same bytes measured in the
//! same run (`baseline`: `std::str::from_utf8` plus counting lines), so ratios hold
//! across machines.
//!
//! Groups:
//! - `file/<name>`: `parse` and `parse+plan` of each `pipelines/*.groovy`;
//! - `corpus`: the same for all of them in one go, as MB/s (`Throughput::Bytes`), with
//!   `baseline`;
//! - `jenkinsfile-2k`: a typical 2 KB scripted Jenkinsfile ([`JENKINSFILE_2K`]), with
//!   `baseline`.
//!
//! Goals: `jenkinsfile-2k/parse+plan` median ≤ 100 µs; `corpus/parse+plan` < 50 ms.
//!
//! `parse+plan` is what `valet plan` does for a file: parse, make the [`SourceFile`]
//! (which copies the text and indexes its lines), plan.
//!
//! Run: `cargo bench -p valet-benches --bench parse`.

use std::hint::black_box;
use std::path::Path;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use valet_dsl::SourceFile;

/// A typical scripted Jenkinsfile of about 2 KB: a Kubernetes pod with a few containers,
/// stages, shell steps, a parallel block, credentials and a post-build try/finally.
const JENKINSFILE_2K: &str = r#"// Build, test and publish a Go service on Kubernetes.
def tag = "${env.BRANCH_NAME}-${env.BUILD_NUMBER}"

podTemplate(label: 'build', containers: [
    containerTemplate(name: 'golang', image: 'golang:1.22', command: 'cat', ttyEnabled: true),
    containerTemplate(name: 'docker', image: 'docker:26-cli', command: 'cat', ttyEnabled: true),
    containerTemplate(name: 'helm', image: 'alpine/helm:3.14', command: 'cat', ttyEnabled: true),
]) {
    node('build') {
        stage('Checkout') {
            checkout scm
        }
        try {
            stage('Build') {
                container('golang') {
                    sh 'go mod download'
                    sh """
                        CGO_ENABLED=0 go build -trimpath \\
                            -ldflags "-X main.version=${tag}" -o bin/app ./cmd/app
                    """
                }
            }
            stage('Checks') {
                parallel(
                    'unit': {
                        container('golang') { sh 'go test -race ./...' }
                    },
                    'lint': {
                        container('golang') { sh 'go vet ./...' }
                    },
                    'chart': {
                        container('helm') { sh 'helm lint charts/app' }
                    }
                )
            }
            stage('Image') {
                container('docker') {
                    withCredentials([usernamePassword(credentialsId: 'registry',
                            usernameVariable: 'USER', passwordVariable: 'PASS')]) {
                        sh 'echo "$PASS" | docker login -u "$USER" --password-stdin reg.example.com'
                        sh "docker build -t reg.example.com/app:${tag} ."
                        sh "docker push reg.example.com/app:${tag}"
                    }
                }
            }
            if (env.BRANCH_NAME == 'main') {
                stage('Deploy') {
                    container('helm') {
                        sh "helm upgrade --install app charts/app --set image.tag=${tag}"
                    }
                }
            }
        } finally {
            stage('Report') {
                sh 'ls -la bin || true'
            }
        }
    }
}
"#;

fn corpus() -> Vec<(String, String)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../pipelines");
    let mut files: Vec<(String, String)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|entry| entry.expect("listing pipelines/").path())
        .filter(|p| p.is_file() && p.extension().is_some_and(|e| e == "groovy"))
        .map(|p| {
            let name = p.file_stem().unwrap().to_string_lossy().into_owned();
            let text = std::fs::read_to_string(&p)
                .unwrap_or_else(|e| panic!("reading {}: {e}", p.display()));
            (name, text)
        })
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no pipelines/*.groovy to measure");
    files
}

/// The trivial pass the others are compared with: check the bytes are UTF-8, count lines.
fn baseline(bytes: &[u8]) -> usize {
    std::str::from_utf8(bytes).expect("UTF-8").lines().count()
}

fn parse(text: &str) -> valet_dsl::ParseOutput {
    valet_dsl::parse(text)
}

/// Parses and, when there is a tree, plans; returns the number of diagnostics and jobs so
/// nothing is optimised away.
fn parse_and_plan(name: &str, text: &str) -> usize {
    let parsed = valet_dsl::parse(text);
    let mut n = parsed.diagnostics.len();
    if let Some(script) = &parsed.script {
        let source = SourceFile::new(name, text);
        let out = valet_plan::plan(script, &source);
        n += out.diagnostics.len();
        black_box(&out.graph);
    }
    n
}

fn per_file(c: &mut Criterion) {
    for (name, text) in corpus() {
        let mut g = c.benchmark_group(format!("file/{name}"));
        g.throughput(Throughput::Bytes(text.len() as u64));
        g.bench_function("parse", |b| b.iter(|| parse(black_box(&text))));
        g.bench_function("parse+plan", |b| {
            b.iter(|| parse_and_plan(black_box(&name), black_box(&text)))
        });
        g.finish();
    }
}

fn whole_corpus(c: &mut Criterion) {
    let files = corpus();
    let bytes: usize = files.iter().map(|(_, t)| t.len()).sum();
    let mut g = c.benchmark_group("corpus");
    g.throughput(Throughput::Bytes(bytes as u64));
    g.bench_function("baseline", |b| {
        b.iter(|| {
            files
                .iter()
                .map(|(_, t)| baseline(black_box(t.as_bytes())))
                .sum::<usize>()
        })
    });
    g.bench_function("parse", |b| {
        b.iter(|| {
            for (_, t) in &files {
                black_box(parse(black_box(t)));
            }
        })
    });
    g.bench_function("parse+plan", |b| {
        b.iter(|| {
            files
                .iter()
                .map(|(n, t)| parse_and_plan(black_box(n), black_box(t)))
                .sum::<usize>()
        })
    });
    g.finish();
}

fn jenkinsfile_2k(c: &mut Criterion) {
    let text = JENKINSFILE_2K;
    assert!(
        (1800..=2600).contains(&text.len()),
        "JENKINSFILE_2K is {} bytes, meant to be about 2 KB",
        text.len()
    );
    // It must be a pipeline valet accepts, or the figure says nothing.
    let parsed = valet_dsl::parse(text);
    let source = SourceFile::new("Jenkinsfile", text);
    let script = parsed.script.unwrap_or_else(|| {
        panic!(
            "JENKINSFILE_2K does not parse:\n{}",
            valet_dsl::render_all(&parsed.diagnostics, &source)
        )
    });
    let out = valet_plan::plan(&script, &source);
    assert!(
        !out.has_errors(),
        "JENKINSFILE_2K does not plan:\n{}",
        valet_dsl::render_all(&out.diagnostics, &source)
    );

    let mut g = c.benchmark_group("jenkinsfile-2k");
    g.throughput(Throughput::Bytes(text.len() as u64));
    g.bench_function("baseline", |b| {
        b.iter(|| baseline(black_box(text.as_bytes())))
    });
    g.bench_function("parse", |b| b.iter(|| parse(black_box(text))));
    g.bench_function("parse+plan", |b| {
        b.iter(|| parse_and_plan(black_box("Jenkinsfile"), black_box(text)))
    });
    g.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .sample_size(30)
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_secs(1))
}

criterion_group! {
    name = benches;
    config = config();
    targets = jenkinsfile_2k, whole_corpus, per_file
}
criterion_main!(benches);
