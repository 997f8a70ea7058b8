# valet: run Jenkins pipelines without Jenkins. `just` lists the recipes.

set shell := ["bash", "-euo", "pipefail", "-c"]

# List the recipes.
default:
    @just --list

# Install what a fresh machine lacks (Rust components, cargo-nextest, Graphviz for `--format dot`).
setup:
    rustup show active-toolchain >/dev/null
    command -v cargo-nextest >/dev/null || cargo install cargo-nextest --locked
    command -v dot >/dev/null || (command -v apt-get >/dev/null && (apt-get install -y graphviz >/dev/null 2>&1 || sudo apt-get install -y graphviz >/dev/null 2>&1) || echo "graphviz not installed: the dot render test will say so")

# Build the `valet` binary (debug).
build:
    cargo build -p valet-cli

# The main job on an example: plan the seed-shaped Kubernetes pipeline.
example: build
    ./target/debug/valet check pipelines/*.groovy
    ./target/debug/valet plan pipelines/k8s-maven-golang.groovy

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

# Snapshot review after an intended change to plans or diagnostics.
review:
    cargo insta review

# How many pipelines of a folder kept outside this repository `valet check` accepts, and why it refuses the rest.
corpus DIR: build
    scripts/corpus-check.sh {{DIR}}
