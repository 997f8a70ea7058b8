//! The API's gate, tried as an attacker would: no token, a page on another origin (a
//! `text/plain` form, the cookie of a signed-in operator), a rebound DNS name, a token
//! without the scope, a revoked token. A real controller over TCP, a real SQLite file.

mod common;

use common::{Repo, Server, TOKEN, request};
use valet_controller::Scope;

const PIPELINE: &str = "node { sh 'sleep 30' }\n";

/// A request without the test token.
async fn anonymous(
    s: &Server,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> common::Response {
    let mut h = vec![("X-Anonymous", "1")];
    h.extend_from_slice(headers);
    request(s.addr, method, path, &h, body).await
}

fn token(s: &Server, name: &str, scopes: &[Scope]) -> String {
    valet_controller::open_store(&s.data_dir())
        .unwrap()
        .create_token(name, scopes, 0)
        .unwrap()
}

async fn build_count(s: &Server) -> usize {
    s.builds().await.len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_token_nothing_is_read_started_or_cancelled() {
    let repo = Repo::new(PIPELINE);
    let s = Server::start(&repo, "", "").await;
    let r = s.github_push("main", &repo.head(), "a-1").await;
    assert_eq!(r.status, 201, "webhooks need no API token: {}", r.body);
    let id = r.json()["build"].as_i64().unwrap();

    for path in [
        "/api/builds".to_string(),
        format!("/api/builds/{id}"),
        format!("/api/builds/{id}/log"),
        format!("/api/builds/{id}/events"),
        "/api/repos".into(),
        "/metrics".into(),
        "/api/nothing-here".into(),
    ] {
        let r = anonymous(&s, "GET", &path, &[], b"").await;
        assert_eq!(r.status, 401, "GET {path}: {}", r.body);
        assert!(
            r.headers
                .to_ascii_lowercase()
                .contains("www-authenticate: bearer"),
            "{}",
            r.headers
        );
        assert!(
            r.json()["error"]
                .as_str()
                .unwrap()
                .contains("valet token create"),
            "{}",
            r.body
        );
    }
    // A page gets the sign-in form, not the build.
    let page = anonymous(&s, "GET", &format!("/builds/{id}"), &[], b"").await;
    assert_eq!(page.status, 401);
    assert!(page.body.contains("id=\"sign-in\""), "{}", page.body);
    assert!(!page.body.contains("sleep 30"), "{}", page.body);

    let before = build_count(&s).await;
    let r = anonymous(
        &s,
        "POST",
        "/api/repos/org%2Fapp/builds",
        &[("Content-Type", "application/json")],
        b"{}",
    )
    .await;
    assert_eq!(r.status, 401, "{}", r.body);
    let r = anonymous(&s, "POST", &format!("/api/builds/{id}/cancel"), &[], b"").await;
    assert_eq!(r.status, 401, "{}", r.body);
    // A made-up token is no better.
    let fake = format!("Bearer {}", TOKEN.replace('0', "1"));
    let r = anonymous(
        &s,
        "POST",
        &format!("/api/builds/{id}/cancel"),
        &[("Authorization", &fake)],
        b"",
    )
    .await;
    assert_eq!(r.status, 401, "{}", r.body);
    assert_eq!(build_count(&s).await, before);
    let b = s.get_json(&format!("/api/builds/{id}")).await;
    assert_ne!(b["result"], "ABORTED", "{b:#}");

    assert_eq!(anonymous(&s, "GET", "/healthz", &[], b"").await.status, 200);
    assert_eq!(
        anonymous(&s, "GET", "/ui/valet.js", &[], b"").await.status,
        200
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_on_another_origin_cannot_start_or_cancel_a_build() {
    let repo = Repo::new(PIPELINE);
    let s = Server::start(&repo, "", "").await;
    let r = s.github_push("main", &repo.head(), "x-1").await;
    let id = r.json()["build"].as_i64().unwrap();
    let before = build_count(&s).await;
    let cookie = format!("valet_token={TOKEN}");
    let trigger = "/api/repos/org%2Fapp/builds";
    let cancel = format!("/api/builds/{id}/cancel");
    // The form a hostile page submits: text/plain, its own Origin, and (worst case: a browser
    // that ignores SameSite) the operator's cookie.
    for path in [trigger, cancel.as_str()] {
        for headers in [
            vec![
                ("Content-Type", "text/plain"),
                ("Origin", "http://evil.example"),
                ("Cookie", cookie.as_str()),
            ],
            vec![
                ("Content-Type", "application/x-www-form-urlencoded"),
                ("Origin", "null"),
                ("Cookie", cookie.as_str()),
            ],
            vec![
                ("Content-Type", "text/plain"),
                ("Sec-Fetch-Site", "cross-site"),
                ("Cookie", cookie.as_str()),
            ],
            // The cookie without any Origin is not how a same-origin page posts.
            vec![
                ("Content-Type", "application/json"),
                ("Cookie", cookie.as_str()),
            ],
        ] {
            let r = anonymous(
                &s,
                "POST",
                path,
                &headers,
                b"{\"parameters\":{\"X\":\"1\"}}",
            )
            .await;
            assert_eq!(r.status, 403, "POST {path} {headers:?}: {}", r.body);
        }
    }
    // Even with a bearer token, a body that is not JSON is refused before it is read.
    let r = request(
        s.addr,
        "POST",
        trigger,
        &[("Content-Type", "text/plain")],
        b"{}",
    )
    .await;
    assert_eq!(r.status, 415, "{}", r.body);
    assert_eq!(build_count(&s).await, before, "nothing started");
    let b = s.get_json(&format!("/api/builds/{id}")).await;
    assert_ne!(b["result"], "ABORTED", "nothing cancelled: {b:#}");

    // The same page's own request, with the cookie the sign-in set, goes through.
    let r = anonymous(
        &s,
        "POST",
        "/api/session",
        &[
            ("Content-Type", "application/json"),
            ("Origin", "http://127.0.0.1"),
        ],
        format!("{{\"token\":\"{TOKEN}\"}}").as_bytes(),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let set = r
        .headers
        .lines()
        .find(|l| l.to_ascii_lowercase().starts_with("set-cookie:"))
        .unwrap_or_else(|| panic!("no cookie: {}", r.headers))
        .to_string();
    assert!(
        set.contains("HttpOnly") && set.contains("SameSite=Strict"),
        "{set}"
    );
    let r = anonymous(
        &s,
        "POST",
        &cancel,
        &[("Origin", "http://127.0.0.1"), ("Cookie", cookie.as_str())],
        b"",
    )
    .await;
    assert_eq!(r.status, 202, "{}", r.body);
    let b = s.wait_finished(id).await;
    assert_eq!(b["result"], "ABORTED", "{b:#}");
    assert!(
        b["reason"].as_str().unwrap().contains("token `tests`"),
        "{b:#}"
    );
    // A body that is not the sign-in object, or far too large, changes nothing.
    for body in [
        &b"not json"[..],
        b"{\"token\": 1}",
        b"{\"token\":\"x\",\"admin\":true}",
    ] {
        let r = anonymous(
            &s,
            "POST",
            "/api/session",
            &[("Content-Type", "application/json")],
            body,
        )
        .await;
        assert_eq!(r.status, 400, "{}", r.body);
        assert!(
            !r.headers.to_ascii_lowercase().contains("set-cookie"),
            "{}",
            r.headers
        );
    }
    let huge = vec![b' '; 26 * 1024 * 1024];
    let r = anonymous(
        &s,
        "POST",
        "/api/session",
        &[("Content-Type", "application/json")],
        &huge,
    )
    .await;
    assert_eq!(r.status, 413, "{}", r.body);
    // Wrong tokens do not sign in.
    let r = anonymous(
        &s,
        "POST",
        "/api/session",
        &[("Content-Type", "application/json")],
        b"{\"token\":\"valet_nope\"}",
    )
    .await;
    assert_eq!(r.status, 401, "{}", r.body);
    assert!(
        !r.headers.to_ascii_lowercase().contains("set-cookie"),
        "{}",
        r.headers
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebound_dns_name_cannot_read_the_api() {
    let repo = Repo::new(PIPELINE);
    let s = Server::start(&repo, "", "api:\n  hosts: [ci.example.com]\n").await;
    for host in [
        "evil.example",
        "evil.example:8080",
        "127.0.0.1.evil.example",
        "ci.example.com.evil.example",
    ] {
        let r = request(s.addr, "GET", "/api/builds", &[("Host", host)], b"").await;
        assert_eq!(r.status, 421, "Host {host}: {}", r.body);
        assert!(r.body.contains("api.hosts"), "{}", r.body);
    }
    for host in [
        "ci.example.com",
        "CI.example.com:443",
        "localhost:8080",
        "127.0.0.1",
        "[::1]:1",
    ] {
        let r = request(s.addr, "GET", "/api/builds", &[("Host", host)], b"").await;
        assert_eq!(r.status, 200, "Host {host}: {}", r.body);
    }
    // Webhooks come from a forge by whatever name: not checked (their signature is).
    let r = request(
        s.addr,
        "POST",
        "/hooks/github",
        &[("Host", "evil.example"), ("X-GitHub-Event", "ping")],
        b"{}",
    )
    .await;
    assert_ne!(r.status, 421, "{}", r.body);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_does_what_its_scopes_allow_until_it_is_revoked() {
    let repo = Repo::new("node { echo 'hi' }\n");
    let s = Server::start(&repo, "", "").await;
    let reader = format!("Bearer {}", token(&s, "reader", &[Scope::Read]));
    let starter = format!("Bearer {}", token(&s, "starter", &[Scope::Trigger]));
    let json = ("Content-Type", "application/json");
    let trigger = "/api/repos/org%2Fapp/builds";

    assert_eq!(
        request(
            s.addr,
            "GET",
            "/api/builds",
            &[("Authorization", &reader)],
            b""
        )
        .await
        .status,
        200
    );
    let r = request(
        s.addr,
        "POST",
        trigger,
        &[("Authorization", &reader), json],
        b"{}",
    )
    .await;
    assert_eq!(r.status, 403, "{}", r.body);
    assert!(r.body.contains("`trigger` scope"), "{}", r.body);
    let r = request(
        s.addr,
        "GET",
        "/api/builds",
        &[("Authorization", &starter)],
        b"",
    )
    .await;
    assert_eq!(r.status, 403, "{}", r.body);

    let r = request(
        s.addr,
        "POST",
        trigger,
        &[("Authorization", &starter), json],
        b"{}",
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let id = r.json()["build"].as_i64().unwrap();
    let b = s.wait_finished(id).await;
    assert!(
        b["cause"].as_str().unwrap().contains("token `starter`"),
        "{b:#}"
    );
    let r = request(
        s.addr,
        "POST",
        &format!("/api/builds/{id}/cancel"),
        &[("Authorization", &starter)],
        b"",
    )
    .await;
    assert_eq!(r.status, 403, "{}", r.body);

    // Revoked: refused at once, no restart.
    assert!(
        valet_controller::open_store(&s.data_dir())
            .unwrap()
            .revoke_token("starter")
            .unwrap()
    );
    let r = request(
        s.addr,
        "POST",
        trigger,
        &[("Authorization", &starter), json],
        b"{}",
    )
    .await;
    assert_eq!(r.status, 401, "{}", r.body);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anonymous_reads_open_reads_only() {
    let repo = Repo::new("node { echo 'hi' }\n");
    let s = Server::start(&repo, "", "api:\n  anonymous_read: true\n").await;
    let r = s.github_push("main", &repo.head(), "r-1").await;
    let id = r.json()["build"].as_i64().unwrap();
    s.wait_finished(id).await;
    assert_eq!(
        anonymous(&s, "GET", "/api/builds", &[], b"").await.status,
        200
    );
    assert_eq!(
        anonymous(&s, "GET", &format!("/builds/{id}"), &[], b"")
            .await
            .status,
        200
    );
    let before = build_count(&s).await;
    let r = anonymous(
        &s,
        "POST",
        "/api/repos/org%2Fapp/builds",
        &[("Content-Type", "application/json")],
        b"{}",
    )
    .await;
    assert_eq!(r.status, 401, "{}", r.body);
    assert_eq!(build_count(&s).await, before);
    // A wrong token is still an error, not an anonymous read.
    let r = anonymous(
        &s,
        "GET",
        "/api/builds",
        &[("Authorization", "Bearer valet_wrong")],
        b"",
    )
    .await;
    assert_eq!(r.status, 401, "{}", r.body);
    s.stop().await;
}
