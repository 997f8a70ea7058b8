//! The build page in a real browser: headless Chromium (Debian's `chromium`; `just setup`
//! installs it) driven over the DevTools protocol, against a real controller on 127.0.0.1
//! running a real pipeline on the local backend. The page of a running build shows a stage
//! running, then (fed by server-sent events, without a reload) the same stage succeeded.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{Repo, Server, TOKEN};
use futures::{SinkExt as _, StreamExt as _};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

const XSS_STAGE: &str = "<script>alert(1)</script>";

/// Chromium, killed when dropped (also when the test panics).
struct Chromium {
    child: Child,
    profile: tempfile::TempDir,
}

impl Drop for Chromium {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn chromium_path() -> PathBuf {
    for dir in std::env::var("PATH").unwrap_or_default().split(':') {
        for name in ["chromium", "chromium-browser"] {
            let p = Path::new(dir).join(name);
            if p.is_file() {
                return p;
            }
        }
    }
    panic!(
        "no `chromium` on PATH: the build page test needs headless Chromium; `just setup` installs it"
    );
}

impl Chromium {
    /// Starts Chromium and returns it with the browser's DevTools websocket URL.
    fn start() -> (Chromium, String) {
        let profile = tempfile::tempdir().expect("temp dir");
        let log = std::fs::File::create(profile.path().join("stderr.log")).expect("log file");
        let child = Command::new(chromium_path())
            .args([
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--no-default-browser-check",
                "--disable-extensions",
                "--disable-background-networking",
                "--remote-debugging-port=0",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("chromium starts");
        let mut c = Chromium { child, profile };
        // Chromium writes the port it chose, then the browser target's path.
        let port_file = c.profile.path().join("DevToolsActivePort");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(text) = std::fs::read_to_string(&port_file) {
                let mut lines = text.lines();
                if let (Some(port), Some(path)) = (lines.next(), lines.next()) {
                    let url = format!("ws://127.0.0.1:{}{}", port.trim(), path.trim());
                    return (c, url);
                }
            }
            if let Ok(Some(status)) = c.child.try_wait() {
                panic!(
                    "chromium exited ({status}) before listening:\n{}",
                    c.stderr()
                );
            }
            assert!(
                Instant::now() < deadline,
                "chromium did not write DevToolsActivePort within 30 s:\n{}",
                c.stderr()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(self.profile.path().join("stderr.log")).unwrap_or_default()
    }
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A DevTools protocol session with one page (flat sessions over the browser's socket).
struct Cdp {
    ws: Ws,
    next_id: u64,
    session: Option<String>,
}

impl Cdp {
    async fn connect(url: &str) -> Cdp {
        let (ws, _) = tokio_tungstenite::connect_async(url)
            .await
            .expect("DevTools websocket");
        let mut cdp = Cdp {
            ws,
            next_id: 0,
            session: None,
        };
        let target = cdp
            .call("Target.createTarget", json!({"url": "about:blank"}))
            .await;
        let target_id = target["targetId"].as_str().expect("targetId").to_string();
        let attached = cdp
            .call(
                "Target.attachToTarget",
                json!({"targetId": target_id, "flatten": true}),
            )
            .await;
        cdp.session = Some(attached["sessionId"].as_str().expect("sessionId").into());
        cdp.call("Page.enable", json!({})).await;
        cdp.call("Runtime.enable", json!({})).await;
        cdp
    }

    /// Sends a command and waits (at most 20 s) for its answer; events are skipped.
    async fn call(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let mut msg = json!({"id": id, "method": method, "params": params});
        if let Some(s) = &self.session {
            msg["sessionId"] = json!(s);
        }
        self.ws
            .send(Message::text(msg.to_string()))
            .await
            .expect("send to chromium");
        let answer = tokio::time::timeout(Duration::from_secs(20), async {
            loop {
                let m = self
                    .ws
                    .next()
                    .await
                    .expect("chromium closed the socket")
                    .expect("websocket");
                let Message::Text(t) = m else { continue };
                let v: Value = serde_json::from_str(&t).expect("JSON from chromium");
                if v["id"] == id {
                    return v;
                }
            }
        })
        .await
        .unwrap_or_else(|_| panic!("no answer to {method} within 20 s"));
        assert!(answer["error"].is_null(), "{method}: {answer}");
        answer["result"].clone()
    }

    /// Evaluates `expr` in the page; returns its value.
    async fn eval(&mut self, expr: &str) -> Value {
        let r = self
            .call(
                "Runtime.evaluate",
                json!({"expression": expr, "returnByValue": true, "awaitPromise": true}),
            )
            .await;
        assert!(
            r["exceptionDetails"].is_null(),
            "`{expr}` threw: {}",
            r["exceptionDetails"]
        );
        r["result"]["value"].clone()
    }

    async fn navigate(&mut self, url: &str) {
        let r = self.call("Page.navigate", json!({"url": url})).await;
        assert!(r["errorText"].is_null(), "navigate to {url}: {r}");
        self.wait_for(
            "document.readyState === 'complete' && !!window.__valetLoadId",
            "the page loaded",
        )
        .await;
    }

    /// Polls `expr` until it is `true` (at most 30 s); on timeout, says what `show` gives.
    async fn wait_for(&mut self, expr: &str, what: &str) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if self.eval(expr).await == json!(true) {
                return;
            }
            if Instant::now() > deadline {
                let page = self
                    .eval("document.body ? document.body.innerText : ''")
                    .await;
                panic!("{what}: not within 30 s (`{expr}`); the page says:\n{page}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// The stage cells as `[stage, job, result]`.
const CELLS: &str = "JSON.stringify([...document.querySelectorAll('#stages td.cell')].map(td => [td.dataset.stage, td.dataset.job, td.dataset.result]))";

fn cells(v: &Value) -> Vec<(String, String)> {
    let rows: Vec<Vec<String>> = serde_json::from_str(v.as_str().expect("a string")).unwrap();
    rows.into_iter()
        .map(|r| (r[0].clone(), r[2].clone()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_build_page_shows_a_running_stage_succeed_without_a_reload() {
    let gate_dir = tempfile::tempdir().expect("temp dir");
    let gate = gate_dir.path().join("gate");
    let pipeline = format!(
        "pipeline {{\n  agent any\n  stages {{\n    stage('Wait') {{\n      steps {{\n        sh 'while [ ! -f {gate} ]; do sleep 0.1; done; echo the gate is open'\n      }}\n    }}\n    stage('{XSS_STAGE}') {{\n      steps {{\n        echo '<img src=x onerror=window.__xss=1> printed as text'\n      }}\n    }}\n  }}\n}}\n",
        gate = gate.display()
    );
    let repo = Repo::new(&pipeline);
    let s = Server::start(&repo, "", "").await;
    let r = s.github_push("main", &repo.head(), "ui-1").await;
    assert_eq!(r.status, 201, "{}", r.body);
    let id = r.json()["build"].as_i64().unwrap();

    let (browser, ws_url) = Chromium::start();
    let mut cdp = Cdp::connect(&ws_url).await;
    let page = format!("http://{}/builds/{id}", s.addr);
    cdp.navigate(&page).await;
    // Not signed in: the page is a sign-in form; a wrong token is said so on the page, the
    // right one (sent as JSON, kept as an HttpOnly cookie) shows the build.
    assert_eq!(
        cdp.eval("!!document.getElementById('sign-in') && !document.getElementById('build')")
            .await,
        true
    );
    cdp.eval("document.querySelector('#sign-in input[name=token]').value = 'valet_wrong'; document.getElementById('sign-in').requestSubmit(); true").await;
    cdp.wait_for(
        "document.getElementById('sign-in-error').textContent.includes('not valid')",
        "a wrong token refused on the page",
    )
    .await;
    cdp.eval(&format!("document.querySelector('#sign-in input[name=token]').value = '{TOKEN}'; document.getElementById('sign-in').requestSubmit(); true")).await;
    cdp.wait_for(
        "!!document.getElementById('build')",
        "the build page after signing in",
    )
    .await;
    assert_eq!(
        cdp.eval("document.cookie").await,
        "",
        "the token cookie is not readable by scripts"
    );

    cdp.wait_for(
        "document.querySelector('#stages td[data-stage=\"Wait\"]')?.dataset.result === 'running'",
        "the Wait stage shown running",
    )
    .await;
    let load_id = cdp.eval("window.__valetLoadId").await;
    assert!(load_id.is_string(), "{load_id}");
    let before = cells(&cdp.eval(CELLS).await);
    assert_eq!(before, [("Wait".to_string(), "running".to_string())]);
    assert_eq!(
        cdp.eval("document.getElementById('build-result').dataset.result")
            .await,
        "running"
    );

    std::fs::write(&gate, "").expect("open the gate");

    cdp.wait_for(
        "document.querySelector('#stages td[data-stage=\"Wait\"]')?.dataset.result === 'success'",
        "the Wait stage shown succeeded",
    )
    .await;
    cdp.wait_for(
        "document.getElementById('build').dataset.final === 'true'",
        "the final state read",
    )
    .await;
    // The same document all along: updated in place, not reloaded.
    assert_eq!(cdp.eval("window.__valetLoadId").await, load_id);
    let after = cells(&cdp.eval(CELLS).await);
    assert_eq!(
        after,
        [
            ("Wait".to_string(), "success".to_string()),
            (XSS_STAGE.to_string(), "success".to_string()),
        ]
    );
    assert_eq!(
        cdp.eval("document.getElementById('build-result').dataset.result")
            .await,
        "success"
    );
    let duration = cdp
        .eval("document.querySelector('#stages td[data-stage=\"Wait\"] .dur').textContent")
        .await;
    assert!(
        duration.as_str().is_some_and(|d| d.ends_with('s')),
        "{duration}"
    );
    // The log arrived live, as text.
    let log = cdp.eval("document.getElementById('log').textContent").await;
    let log = log.as_str().unwrap_or_default();
    assert!(log.contains("the gate is open"), "{log}");
    assert!(
        log.contains("<img src=x onerror=window.__xss=1> printed as text"),
        "{log}"
    );
    let b = s.wait_finished(id).await;
    assert_eq!(b["result"], "SUCCESS", "{b:#}");

    // The stage name and the log are text, live and when rendered by the server.
    for round in ["live", "server-rendered"] {
        if round == "server-rendered" {
            cdp.navigate(&page).await;
            assert_ne!(cdp.eval("window.__valetLoadId").await, load_id);
        }
        let header = cdp
            .eval("[...document.querySelectorAll('#stages th[data-col]')].map(th => th.textContent).join('|')")
            .await;
        assert_eq!(header, format!("Wait|{XSS_STAGE}"), "{round}");
        assert_eq!(
            cdp.eval("document.scripts.length + document.images.length + (window.__xss || 0)")
                .await,
            1,
            "{round}: only valet.js runs"
        );
        let log = cdp.eval("document.getElementById('log').textContent").await;
        assert!(
            log.as_str().unwrap_or_default().contains("<img src=x"),
            "{round}: {log}"
        );
    }

    // The list of builds links the page and colours the result.
    cdp.navigate(&format!("http://{}/", s.addr)).await;
    let row = cdp
        .eval(&format!(
            "(() => {{ const tr = document.querySelector('tr[data-build=\"{id}\"]'); return tr && [tr.dataset.result, tr.querySelector('a[href=\"/builds/{id}\"]').textContent, getComputedStyle(tr.querySelector('.badge')).backgroundColor]; }})()"
        ))
        .await;
    assert_eq!(row[0], "success", "{row}");
    assert_eq!(row[1], "#1", "{row}");
    assert_eq!(row[2], "rgb(31, 136, 61)", "{row}: the success colour");
    drop(browser);
    s.stop().await;
}

/// Without a browser: the HTML itself escapes what the pipeline controls, and unknown
/// builds are 404.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pages_escape_stage_names_and_log_text() {
    let repo = Repo::new(&format!(
        "node {{\n  stage('{XSS_STAGE}') {{\n    echo '<b>\"quoted\" & bold</b>'\n  }}\n}}\n"
    ));
    let s = Server::start(&repo, "", "").await;
    let r = s.github_push("main", &repo.head(), "ui-2").await;
    let id = r.json()["build"].as_i64().unwrap();
    let b = s.wait_finished(id).await;
    assert_eq!(b["result"], "SUCCESS", "{b:#}");

    let page = s.get(&format!("/builds/{id}")).await;
    assert_eq!(page.status, 200);
    assert!(
        page.headers
            .to_ascii_lowercase()
            .contains("content-security-policy: default-src 'none'; script-src 'self'"),
        "{}",
        page.headers
    );
    assert!(!page.body.contains(XSS_STAGE), "{}", page.body);
    assert!(
        page.body
            .contains("data-stage=\"&lt;script&gt;alert(1)&lt;/script&gt;\""),
        "{}",
        page.body
    );
    assert!(
        page.body
            .contains("&lt;b&gt;&quot;quoted&quot; &amp; bold&lt;/b&gt;"),
        "{}",
        page.body
    );
    assert!(
        page.body.contains("data-result=\"success\""),
        "{}",
        page.body
    );
    assert_eq!(page.body.matches("<script").count(), 1, "{}", page.body);

    let index = s.get("/").await;
    assert_eq!(index.status, 200);
    assert!(
        index
            .body
            .contains(&format!("<tr data-build=\"{id}\" data-result=\"success\">")),
        "{}",
        index.body
    );
    let js = s.get("/ui/valet.js").await;
    assert_eq!(js.status, 200);
    assert!(js.body.contains("__valetLoadId"));
    assert_eq!(s.get("/builds/999999").await.status, 404);
    assert_eq!(s.get("/builds/nope").await.status, 404);
    s.stop().await;
}
