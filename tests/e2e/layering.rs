//! The layering holds because a test holds it: dependencies between valet's crates point
//! one way (language → plan → backend contract → adapters / runtime → CLI), the pure core
//! knows no async runtime, and adapters never depend on each other.

use std::collections::{BTreeMap, BTreeSet};

fn workspace_deps() -> BTreeMap<String, BTreeSet<String>> {
    let out = std::process::Command::new(env!("CARGO"))
        .args(["metadata", "--no-deps", "--format-version", "1"])
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
        .output()
        .expect("cargo metadata runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout).expect("metadata json");
    let mut deps = BTreeMap::new();
    for p in meta["packages"].as_array().expect("packages") {
        let name = p["name"].as_str().expect("name").to_string();
        let normal: BTreeSet<String> = p["dependencies"]
            .as_array()
            .expect("dependencies")
            .iter()
            .filter(|d| d["kind"].is_null())
            .map(|d| d["name"].as_str().expect("dep name").to_string())
            .collect();
        deps.insert(name, normal);
    }
    deps
}

#[test]
fn dependencies_point_one_way() {
    let deps = workspace_deps();
    // What each crate may depend on among valet's own crates.
    let allowed: &[(&str, &[&str])] = &[
        ("valet-dsl", &[]),
        ("valet-plan", &["valet-dsl"]),
        // The contract: pod types, the provision request, the trait. It knows no planner.
        ("valet-backend", &[]),
        // Running a step as host processes, for the agent and the local backend alike: it
        // knows no transport and no backend contract.
        ("valet-process", &[]),
        ("valet-local", &["valet-backend", "valet-process"]),
        // The step protocol: its client implements the backend contract's `StepRunner`, its
        // server runs steps through valet-process.
        ("valet-agent", &["valet-backend", "valet-process"]),
        ("valet-docker", &["valet-backend", "valet-agent"]),
        // Kubernetes: Pod objects from the contract's pod spec.
        ("valet-kube", &["valet-backend"]),
        // The one place backends are built: each adapter is one enum arm here.
        (
            "valet-backends",
            &["valet-backend", "valet-local", "valet-docker", "valet-kube"],
        ),
        ("valet-store", &[]),
        // The scheduling core: pure decisions, no I/O, no clock, no valet types.
        ("valet-sched", &[]),
        (
            "valet-runtime",
            &["valet-backend", "valet-plan", "valet-dsl"],
        ),
        // Orchestration: builds its backends through valet-backends and names no adapter.
        (
            "valet-controller",
            &[
                "valet-store",
                "valet-sched",
                "valet-runtime",
                "valet-backend",
                "valet-backends",
                "valet-dsl",
                "valet-plan",
            ],
        ),
        // The binary edge: the same door as the controller, no adapter by name; and
        // valet-process for what the process does to itself at start (its credentials).
        (
            "valet-cli",
            &[
                "valet-process",
                "valet-dsl",
                "valet-plan",
                "valet-runtime",
                "valet-backend",
                "valet-backends",
                "valet-controller",
            ],
        ),
    ];
    // Every library crate has its place in the table: a new crate must say where it sits.
    for name in deps.keys().filter(|n| n.starts_with("valet-")) {
        if ["valet-tests", "valet-benches"].contains(&name.as_str()) {
            continue;
        }
        assert!(
            allowed.iter().any(|(k, _)| k == name),
            "{name} has no place in the layering table of tests/e2e/layering.rs"
        );
    }
    for (krate, ok) in allowed {
        let Some(actual) = deps.get(*krate) else {
            continue;
        };
        for d in actual.iter().filter(|d| d.starts_with("valet-")) {
            assert!(
                ok.contains(&d.as_str()),
                "{krate} must not depend on {d} (allowed: {ok:?})"
            );
        }
    }
    assert!(
        deps.contains_key("valet-dsl") && deps.contains_key("valet-plan"),
        "core crates present"
    );
}

#[test]
fn the_pure_core_has_no_async_runtime_and_no_io_crates() {
    let deps = workspace_deps();
    for krate in ["valet-dsl", "valet-plan", "valet-sched"] {
        for banned in [
            "tokio",
            "async-trait",
            "bollard",
            "tonic",
            "axum",
            "rusqlite",
            "reqwest",
        ] {
            assert!(
                !deps[krate].contains(banned),
                "{krate} is pure and must not depend on {banned}"
            );
        }
    }
}
