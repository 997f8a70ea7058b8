# valet: run Jenkins pipelines without Jenkins. `just` lists the recipes.

set shell := ["bash", "-euo", "pipefail", "-c"]

# List the recipes.
default:
    @just --list

# Install what a fresh machine lacks (cargo-nextest, Graphviz for `--format dot`, Chromium for the build page test).
setup:
    rustup show active-toolchain >/dev/null
    command -v cargo-nextest >/dev/null || cargo install cargo-nextest --locked
    command -v dot >/dev/null || scripts/apt-install.sh graphviz
    command -v chromium >/dev/null || scripts/apt-install.sh chromium

# Build the `valet` binary (debug).
build:
    cargo build -p valet-cli

# Build the static `valet-agent` the Docker backend mounts into every container (release,
# `+crt-static` for the target only, so build scripts and proc-macros stay dynamic).
# Its own target directory, so it never waits on the workspace's release builds; no debug info.
agent:
    CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUSTFLAGS="-C target-feature=+crt-static" \
    CARGO_PROFILE_RELEASE_DEBUG=false CARGO_TARGET_DIR=target/valet-agent \
        cargo build -p valet-agent --release --no-default-features --bin valet-agent --target x86_64-unknown-linux-gnu
    @echo "target/valet-agent/x86_64-unknown-linux-gnu/release/valet-agent"

# The main job on an example: check every example, plan the seed-shaped Kubernetes
# pipeline, then run a pipeline for real on the local backend.
example: build
    ./target/debug/valet check --quiet pipelines/*.groovy
    ./target/debug/valet plan pipelines/k8s-maven-golang.groovy
    ./target/debug/valet run pipelines/local-parallel-loop.groovy

# Built from Debian's packages on first use, cached in ~/.cache/valet-k8s (~10-20 min once, then
# seconds); then `export KUBECONFIG=~/.cache/valet-k8s/admin.kubeconfig`.
# Start a real single-node Kubernetes 1.20 on the local Docker engine.
k8s-up:
    scripts/k8s-cluster.sh up

# Stop the Kubernetes cluster and remove the containers it made.
k8s-down:
    scripts/k8s-cluster.sh stop

# Every test, the way CI runs them.
test:
    cargo nextest run --workspace --no-fail-fast

# Formatting and lints.
lint:
    cargo fmt --all -- --check
    cargo clippy --workspace --all-targets -- -D warnings

# Benchmarks (parse and plan throughput, step overhead), each against a baseline in the same run.
bench:
    cargo bench -p valet-benches

# Parse and plan benchmarks only (per file, corpus MB/s, a typical 2 KB Jenkinsfile).
bench-parse:
    cargo bench -p valet-benches --bench parse

# Copy pipelines/*.groovy and pipelines/invalid/*.groovy into the fuzz corpus (gitignored).
fuzz-seed:
    fuzz/seed-corpus.sh

# Fuzz parse, plan and every rendering (needs nightly and cargo-fuzz); SECS defaults to 12 minutes.
fuzz SECS="720": fuzz-seed
    cargo +nightly fuzz run parse -- -max_total_time={{SECS}} -dict=fuzz/groovy.dict -max_len=4096 -timeout=5 -rss_limit_mb=2048

# Snapshot review after an intended change to plans or diagnostics.
review:
    cargo insta review

# How many pipelines of a folder kept outside this repository `valet check` accepts, and why it refuses the rest.
# Also checks that the parser's fast path gives pest's tree for each of them.
corpus DIR: build
    scripts/corpus-check.sh {{DIR}}
    find {{DIR}} -type f \( -name '*.groovy' -o -name 'Jenkinsfile*' \) -print0 | xargs -0 cargo run -q -p valet-dsl --example fastcheck | { grep -v ': fast$' || true; }

# Build the container images the Docker backend and its tests use (no registry needed).
images:
    images/build.sh
