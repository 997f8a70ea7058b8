//! Steps as another user (`LocalBackend::with_user`, which `valet serve` as root uses with
//! `nobody`): the step runs as that user, owns its workspace and a home of its own, sees
//! none of valet's environment, and a workspace root the user cannot enter is refused in
//! words.

use valet_backend::conformance::{ProvisionSpec as _, collect, spec};
use valet_backend::{BackendError, Command};
use valet_local::{LocalBackend, StepUser};

/// Root may run steps as any user; another user only as itself, which changes nothing.
fn root() -> bool {
    StepUser::running_as_root()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_runs_as_the_user_and_owns_its_workspace_and_home() {
    let backend = LocalBackend::temporary().with_user(StepUser::NOBODY);
    if !root() {
        // Only root can give a directory to another user: provisioning says so.
        let e = match backend
            .provision_spec(&spec("users", &["main"]), "users")
            .await
        {
            Ok(_) => panic!("a non-root process gave a pod to another user"),
            Err(e) => e,
        };
        assert!(e.to_string().contains("only root"), "{e}");
        return;
    }
    let pod = backend
        .provision_spec(&spec("users", &["main"]), "users")
        .await
        .expect("provision");
    let mut cmd = Command::shell(
        "id -u; id -g; echo \"home=$HOME\"; touch made && echo written; touch \"$HOME/h\" && echo home-written; env",
    );
    // What the runtime passes on from valet's own environment: its `HOME` is not the step's.
    if let Ok(home) = std::env::var("HOME") {
        cmd.env.insert("HOME".into(), home);
    }
    let exec = pod
        .runner("main")
        .expect("runner")
        .start(cmd)
        .await
        .expect("start");
    let out = collect(exec).await.expect("the step ran");
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(&lines[..2], &["65534", "65534"], "{}", out.stdout);
    let home = pod
        .workspace()
        .parent()
        .expect("the pod directory")
        .join("home");
    assert!(
        out.stdout.contains(&format!("home={}", home.display())),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("\nwritten\n"),
        "{}{}",
        out.stdout,
        out.stderr
    );
    assert!(
        out.stdout.contains("home-written"),
        "{}{}",
        out.stdout,
        out.stderr
    );
    // Nothing of this process's environment but what the step was given.
    for (k, _) in std::env::vars() {
        // The shell sets these itself.
        if !["HOME", "PATH", "PWD", "OLDPWD", "SHLVL", "_"].contains(&k.as_str()) {
            assert!(
                !out.stdout.lines().any(|l| l.starts_with(&format!("{k}="))),
                "{k} of valet's environment reached the step:\n{}",
                out.stdout
            );
        }
    }
    pod.teardown().await.expect("teardown");
    assert!(!home.exists(), "the pod's directory is removed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_root_the_user_cannot_enter_is_refused_saying_where() {
    if !root() {
        return;
    }
    let closed = tempfile::tempdir().expect("tempdir");
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(closed.path(), std::fs::Permissions::from_mode(0o700))
            .expect("chmod");
    }
    let backend = LocalBackend::new(closed.path().join("pods"), false).with_user(StepUser::NOBODY);
    let e = match backend
        .provision_spec(&spec("closed", &["main"]), "closed")
        .await
    {
        Ok(_) => panic!("a workspace out of the user's reach was handed out"),
        Err(e) => e,
    };
    assert!(matches!(e, BackendError::Unavailable(_)), "{e}");
    let m = e.to_string();
    assert!(
        m.contains(&closed.path().display().to_string())
            && m.contains("65534:65534")
            && m.contains("chmod o+x"),
        "{m}"
    );
    assert_eq!(
        std::fs::read_dir(closed.path().join("pods"))
            .map(|d| d.count())
            .unwrap_or(0),
        0,
        "nothing is left of the refused pod"
    );
}

#[test]
fn users_are_numbers() {
    assert_eq!(
        StepUser::parse("65534").unwrap(),
        StepUser {
            uid: 65534,
            gid: 65534
        }
    );
    assert_eq!(
        StepUser::parse("1000:100").unwrap(),
        StepUser {
            uid: 1000,
            gid: 100
        }
    );
    assert!(
        StepUser::parse("nobody")
            .unwrap_err()
            .contains("UID or UID:GID")
    );
    assert!(StepUser::parse("1:x").is_err());
}
