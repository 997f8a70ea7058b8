//! `valet token`: tokens created, listed without their secrets, revoked, against a running
//! `valet serve` (the same data directory, no restart).

mod common;

use std::process::Command;

use common::{create_token, http_text, repo_with, serve};

fn valet_token(config: &std::path::Path, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_valet"))
        .arg("token")
        .args(args)
        .arg("--config")
        .arg(config)
        .output()
        .expect("valet token runs")
}

#[test]
fn tokens_are_created_listed_without_secrets_and_revoked_while_the_controller_runs() {
    let dir = tempfile::tempdir().unwrap();
    let repo = repo_with(dir.path(), "node { echo 'hi' }\n");
    let config = dir.path().join("valet.yaml");
    std::fs::write(
        &config,
        format!(
            "listen: 127.0.0.1:0\ndata_dir: data\nrepositories:\n  - name: app\n    url: {}\n    secret: s3cret\n",
            repo.display()
        ),
    )
    .unwrap();
    let (mut child, addr) = serve(&config);
    let reader = create_token(&config, "dashboard", "read");
    assert!(reader.starts_with("valet_"), "{reader}");

    let ask = |token: &str, method: &str, path: &str| {
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        use std::io::{Read as _, Write as _};
        write!(s, "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n").unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out.split_whitespace()
            .nth(1)
            .unwrap()
            .parse::<u16>()
            .unwrap()
    };
    assert_eq!(ask(&reader, "GET", "/api/builds"), 200);
    assert_eq!(ask(&reader, "POST", "/api/repos/app/builds"), 403);

    let list = valet_token(&config, &["list"]);
    assert!(list.status.success());
    let text = String::from_utf8_lossy(&list.stdout);
    assert!(text.contains("dashboard\tread\t"), "{text}");
    assert!(
        !text.contains(&reader[6..]),
        "a listing never shows a secret: {text}"
    );

    // Bad input changes nothing and says why.
    for (args, says) in [
        (
            &["create", "x", "--scopes", "admin"][..],
            "unknown scope `admin`",
        ),
        (&["create", "dashboard"][..], "exists"),
        (&["create", "a b"][..], "is not"),
    ] {
        let o = valet_token(&config, args);
        assert_eq!(o.status.code(), Some(2), "{args:?}");
        assert!(
            String::from_utf8_lossy(&o.stderr).contains(says),
            "{args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
    let o = valet_token(&config, &["revoke", "nobody"]);
    assert_eq!(o.status.code(), Some(1));

    assert!(
        valet_token(&config, &["revoke", "dashboard"])
            .status
            .success()
    );
    assert_eq!(ask(&reader, "GET", "/api/builds"), 401);
    // The helper's own token still works.
    assert_eq!(http_text(addr, "GET", "/api/builds", "").0, 200);
    child.kill().unwrap();
    child.wait().unwrap();
}
