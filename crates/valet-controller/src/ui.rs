//! The build pages: `/` lists recent builds, `/builds/{id}` shows one build's stage view
//! (stages across, jobs down, each cell coloured by its result, with its duration) and its
//! log. Both are rendered here, on the server; `assets/valet.js` only follows a running
//! build (server-sent events from `/api/builds/{id}/events`, then the final state from
//! `/api/builds/{id}`). No front-end build step, nothing loaded from elsewhere.
//!
//! Everything a user controls (stage, job and branch names, causes, log text) goes
//! through [`esc`]; the pages forbid inline scripts (Content-Security-Policy), so text
//! that slips past would still not run.
//!
//! A running build's page is consistent with its stream: the live events are read first
//! (their count becomes the page's resume point) and the log is rendered from those same
//! events, so the script neither repeats nor misses a line. Stage rows are read after, so
//! they are never older than the resume point.

use std::collections::HashMap;
use std::fmt::Write as _;

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Deserialize;
use valet_store::{BuildDetail, BuildId, BuildRow, BuildStatus, StageRow};

use crate::{Controller, blocking};

const CSS: &str = include_str!("../assets/valet.css");
const JS: &str = include_str!("../assets/valet.js");

/// Builds listed on `/`.
const INDEX_LIMIT: u32 = 50;

/// No inline script or style, nothing from another origin.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

pub(crate) fn routes() -> Router<Controller> {
    Router::new()
        .route("/", get(index))
        .route("/builds/{id}", get(build_page))
        .route(
            "/ui/valet.css",
            get(|| async { asset(CSS, "text/css; charset=utf-8") }),
        )
        .route(
            "/ui/valet.js",
            get(|| async { asset(JS, "text/javascript; charset=utf-8") }),
        )
}

fn asset(body: &'static str, kind: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(kind)),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
            (
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            ),
        ],
        body,
    )
        .into_response()
}

fn html(status: StatusCode, body: String) -> Response {
    (
        status,
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/html; charset=utf-8"),
            ),
            (
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(CSP),
            ),
            (
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
        ],
        body,
    )
        .into_response()
}

fn page(title: &str, main: &str) -> String {
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{} · valet</title><link rel=\"stylesheet\" href=\"/ui/valet.css\">\
         <script src=\"/ui/valet.js\" defer></script></head>\n<body>\
         <header class=\"top\"><a href=\"/\">valet</a></header>\n{main}\n</body></html>\n",
        esc(title)
    )
}

fn error_page(status: StatusCode, message: &str) -> Response {
    html(
        status,
        page(
            message,
            &format!("<main><p class=\"error\">{}</p></main>", esc(message)),
        ),
    )
}

/// The page a browser gets instead of a page it may not read yet: a form for a token
/// (sent as JSON by `valet.js`; the form itself posts nowhere, `form-action 'none'`).
pub(crate) fn sign_in_page(message: &str) -> Response {
    html(
        StatusCode::UNAUTHORIZED,
        page(
            "Sign in",
            &format!(
                "<main><h1>Sign in</h1><p>{}</p>\
                 <form id=\"sign-in\"><label>API token \
                 <input type=\"password\" name=\"token\" autocomplete=\"off\" required></label> \
                 <button type=\"submit\">Sign in</button></form>\
                 <p class=\"error\" id=\"sign-in-error\"></p></main>",
                esc(message)
            ),
        ),
    )
}

/// HTML-escapes text for element content and quoted attribute values.
pub(crate) fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for ch in s.chars() {
        match ch {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The page's word (and CSS class suffix) for a result. A stage without a result in a
/// finished build never ended: it takes the build's end (`error` or `aborted`).
pub(crate) fn result_token(
    result: Option<&str>,
    skipped: bool,
    build_result: Option<&str>,
) -> &'static str {
    if skipped {
        return "not-run";
    }
    match result {
        Some("SUCCESS") => "success",
        Some("UNSTABLE") => "unstable",
        Some("FAILURE") => "failure",
        Some("ABORTED") => "aborted",
        Some("NOT_BUILT") => "not-run",
        Some(_) => "error",
        None => match build_result {
            None => "running",
            Some("ERROR") => "error",
            Some(_) => "aborted",
        },
    }
}

fn build_token(b: &BuildRow) -> &'static str {
    match b.status {
        BuildStatus::Queued => "queued",
        BuildStatus::Running => "running",
        BuildStatus::Finished => result_token(b.result.as_deref(), false, Some("ERROR")),
    }
}

/// `1.2s`, `3m 04s`, `1h 02m` (the same as `fmtDuration` in valet.js).
pub(crate) fn duration(ms: i64) -> String {
    let ms = ms.max(0);
    if ms < 60_000 {
        format!("{:.1}s", ms as f64 / 1000.0)
    } else if ms < 3_600_000 {
        format!("{}m {:02}s", ms / 60_000, (ms / 1000) % 60)
    } else {
        format!("{}h {:02}m", ms / 3_600_000, (ms / 60_000) % 60)
    }
}

/// `2026-11-22 02:38:09` UTC from milliseconds since the epoch.
pub(crate) fn utc(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Days to civil date (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}",
        rem / 3600,
        (rem / 60) % 60,
        rem % 60
    )
}

fn time(ms: Option<i64>) -> String {
    match ms {
        Some(ms) => format!("<time data-ms=\"{ms}\" title=\"UTC\">{}</time>", utc(ms)),
        None => String::new(),
    }
}

fn short(commit: Option<&str>) -> &str {
    commit.map_or("", |c| c.get(..10).unwrap_or(c))
}

#[derive(Deserialize)]
struct IndexQuery {
    repo: Option<String>,
}

/// `GET /`: the most recent builds.
async fn index(State(c): State<Controller>, Query(q): Query<IndexQuery>) -> Response {
    let store = c.store().clone();
    let repo = q.repo.clone();
    let builds = match blocking(move || store.list_builds(repo.as_deref(), INDEX_LIMIT, None)).await
    {
        Ok(b) => b,
        Err(e) => return error_page(StatusCode::INTERNAL_SERVER_ERROR, &format!("store: {e}")),
    };
    let (queued, running) = c.queue_counts();
    let mut m = String::from("<main id=\"builds\">");
    let _ = write!(
        m,
        "<h1>Recent builds{}</h1><p class=\"facts\">{running} running, {queued} queued</p>",
        q.repo
            .as_deref()
            .map(|r| format!(" of {}", esc(r)))
            .unwrap_or_default()
    );
    if builds.is_empty() {
        m.push_str("<p class=\"empty\">No builds yet.</p>");
    } else {
        m.push_str(
            "<table class=\"builds\"><thead><tr><th>Result</th><th>Repository</th><th>Branch</th>\
             <th>Build</th><th>Commit</th><th>Cause</th><th>Started</th><th>Duration</th></tr></thead><tbody>",
        );
        for b in &builds {
            let tok = build_token(b);
            let _ = write!(
                m,
                "<tr data-build=\"{id}\" data-result=\"{tok}\">\
                 <td><span class=\"badge r-{tok}\">{tok}</span></td>\
                 <td><a href=\"/?repo={repo_q}\">{repo}</a></td><td>{branch}</td>\
                 <td><a href=\"/builds/{id}\">#{number}</a></td><td><code>{commit}</code></td>\
                 <td>{cause}</td><td>{started}</td><td>{dur}</td></tr>",
                id = b.id,
                repo_q = esc(&query_escape(&b.repo)),
                repo = esc(&b.repo),
                branch = esc(b.branch.as_deref().unwrap_or("")),
                number = b.number,
                commit = esc(short(b.commit.as_deref())),
                cause = esc(&b.cause),
                started = time(b.started_ms.or(Some(b.created_ms))),
                dur = b.duration_ms.map(duration).unwrap_or_default(),
            );
        }
        m.push_str("</tbody></table>");
    }
    m.push_str("</main>");
    html(StatusCode::OK, page("builds", &m))
}

fn query_escape(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~/".contains(&b) {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// `GET /builds/{id}`.
async fn build_page(State(c): State<Controller>, Path(id): Path<String>) -> Response {
    let Ok(id) = id.parse::<BuildId>() else {
        return error_page(StatusCode::NOT_FOUND, "no such build");
    };
    // The live events first: the log and the resume point come from this one snapshot.
    let snapshot = c.live(id).map(|l| l.since(0).0);
    let store = c.store().clone();
    let detail = match blocking(move || store.build_detail(id)).await {
        Ok(Some(d)) => d,
        Ok(None) => return error_page(StatusCode::NOT_FOUND, &format!("no build {id}")),
        Err(e) => return error_page(StatusCode::INTERNAL_SERVER_ERROR, &format!("store: {e}")),
    };
    let finished = detail.build.result.is_some();
    let (log, next_event) = match snapshot {
        Some(events) if !finished => (log_from_events(&events), events.len()),
        // Finished (or not started in this process yet): the log file is complete.
        _ => {
            let store = c.store().clone();
            match blocking(move || store.read_log(id)).await {
                Ok(l) => (l, 0),
                Err(e) => {
                    return error_page(StatusCode::INTERNAL_SERVER_ERROR, &format!("store: {e}"));
                }
            }
        }
    };
    // Without a snapshot the stream is replayed from its start, so the log starts empty.
    let log = if !finished && next_event == 0 {
        String::new()
    } else {
        log
    };
    let title = format!("{} #{}", detail.build.repo, detail.build.number);
    html(
        StatusCode::OK,
        page(&title, &render_build(&detail, &log, next_event)),
    )
}

/// The log text of the events so far (output, and notices as the log file has them).
fn log_from_events(events: &[std::sync::Arc<str>]) -> String {
    let mut log = String::new();
    for e in events {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(e) else {
            continue;
        };
        match v["event"].as_str() {
            Some("output") => log.push_str(v["text"].as_str().unwrap_or("")),
            Some("notice") => {
                let _ = writeln!(log, "[{}]", v["message"].as_str().unwrap_or(""));
            }
            _ => {}
        }
    }
    log
}

/// The name of a stage's column: its path, outermost first.
fn stage_key(s: &StageRow) -> String {
    if s.path.is_empty() {
        s.name.clone()
    } else {
        s.path.join(" / ")
    }
}

/// Stages across (in the order they first started), jobs down; the latest row of a
/// (stage, job) pair fills its cell.
pub(crate) struct Grid<'a> {
    pub(crate) stages: Vec<String>,
    pub(crate) jobs: Vec<String>,
    pub(crate) cells: HashMap<(usize, usize), &'a StageRow>,
}

pub(crate) fn grid(d: &BuildDetail) -> Grid<'_> {
    let mut g = Grid {
        stages: Vec::new(),
        jobs: d.jobs.iter().map(|j| j.name.clone()).collect(),
        cells: HashMap::new(),
    };
    g.jobs.dedup();
    let mut stages: Vec<&StageRow> = d.stages.iter().collect();
    stages.sort_by_key(|s| s.seq);
    for s in stages {
        let key = stage_key(s);
        let job = s.job.clone().unwrap_or_default();
        let col = match g.stages.iter().position(|k| *k == key) {
            Some(i) => i,
            None => {
                g.stages.push(key);
                g.stages.len() - 1
            }
        };
        let row = match g.jobs.iter().position(|j| *j == job) {
            Some(i) => i,
            None => {
                g.jobs.push(job);
                g.jobs.len() - 1
            }
        };
        g.cells.insert((row, col), s);
    }
    // Jobs that ran no stage have no row.
    let used: Vec<bool> = (0..g.jobs.len())
        .map(|r| (0..g.stages.len()).any(|c| g.cells.contains_key(&(r, c))))
        .collect();
    if used.iter().any(|u| !u) {
        let mut keep = Vec::new();
        let mut cells = HashMap::new();
        for (r, job) in g.jobs.iter().enumerate() {
            if used[r] {
                for c in 0..g.stages.len() {
                    if let Some(s) = g.cells.get(&(r, c)) {
                        cells.insert((keep.len(), c), *s);
                    }
                }
                keep.push(job.clone());
            }
        }
        g.jobs = keep;
        g.cells = cells;
    }
    g
}

fn render_build(d: &BuildDetail, log: &str, next_event: usize) -> String {
    let b = &d.build;
    let tok = build_token(b);
    let status = match b.status {
        BuildStatus::Queued => "queued",
        BuildStatus::Running => "running",
        BuildStatus::Finished => "finished",
    };
    let mut m = String::new();
    let _ = write!(
        m,
        "<main id=\"build\" data-build=\"{id}\" data-status=\"{status}\" data-next-event=\"{next_event}\" \
         data-started-ms=\"{started}\">\
         <h1><a href=\"/?repo={repo_q}\">{repo}</a> <span class=\"number\">#{number}</span> \
         <span id=\"build-result\" class=\"badge r-{tok}\" data-result=\"{tok}\">{tok}</span></h1>\
         <dl class=\"facts\"><dt>Branch</dt><dd>{branch}</dd><dt>Commit</dt><dd><code>{commit}</code></dd>\
         <dt>Cause</dt><dd>{cause}</dd><dt>Started</dt><dd>{started_t}</dd>\
         <dt>Duration</dt><dd id=\"build-duration\">{dur}</dd></dl>\
         <p id=\"build-reason\" class=\"reason\"{hidden}>{reason}</p>\
         <p id=\"live\" class=\"live\"></p>",
        id = b.id,
        started = b.started_ms.map(|m| m.to_string()).unwrap_or_default(),
        repo_q = esc(&query_escape(&b.repo)),
        repo = esc(&b.repo),
        number = b.number,
        branch = esc(b.branch.as_deref().unwrap_or("")),
        commit = esc(b.commit.as_deref().or(b.git_ref.as_deref()).unwrap_or("")),
        cause = esc(&b.cause),
        started_t = time(b.started_ms),
        dur = b.duration_ms.map(duration).unwrap_or_default(),
        hidden = if b.reason.is_some() { "" } else { " hidden" },
        reason = esc(b.reason.as_deref().unwrap_or("")),
    );
    let g = grid(d);
    m.push_str(
        "<section><h2>Stages</h2><table id=\"stages\" class=\"stages\"><thead><tr><th>Job</th>",
    );
    for s in &g.stages {
        let _ = write!(m, "<th data-col=\"{0}\">{0}</th>", esc(s));
    }
    m.push_str("</tr></thead><tbody>");
    for (r, job) in g.jobs.iter().enumerate() {
        let _ = write!(
            m,
            "<tr data-job=\"{0}\"><th>{1}</th>",
            esc(job),
            if job.is_empty() {
                "—".to_string()
            } else {
                esc(job)
            }
        );
        for (c, key) in g.stages.iter().enumerate() {
            match g.cells.get(&(r, c)) {
                Some(s) => {
                    let tok = result_token(s.result.as_deref(), s.skipped, b.result.as_deref());
                    let dur = match s.duration_ms {
                        Some(ms) => duration(ms),
                        None if tok == "running" => duration(valet_store::now_ms() - s.started_ms),
                        None => String::new(),
                    };
                    let _ = write!(
                        m,
                        "<td class=\"cell r-{tok}\" data-stage=\"{stage}\" data-job=\"{job}\" \
                         data-result=\"{tok}\" data-started-ms=\"{started}\"><span class=\"res\">{tok}</span> \
                         <span class=\"dur\">{dur}</span></td>",
                        stage = esc(key),
                        job = esc(job),
                        started = s.started_ms,
                    );
                }
                None => m.push_str("<td class=\"none\"></td>"),
            }
        }
        m.push_str("</tr>");
    }
    m.push_str("</tbody></table>");
    let _ = write!(
        m,
        "<p id=\"no-stages\" class=\"empty\"{}>No stages yet.</p></section>",
        if g.stages.is_empty() { "" } else { " hidden" }
    );
    render_pods(&mut m, &d.pods);
    let _ = write!(
        m,
        "<section><h2>Log <a class=\"raw\" href=\"/api/builds/{}/log\">raw</a></h2><pre id=\"log\" class=\"log\">{}</pre></section></main>",
        b.id,
        esc(log)
    );
    m
}

/// The phases of a pod's start, in order, as the table's columns.
const PHASES: [(&str, &str); 5] = [
    ("placed", "Placed"),
    ("created", "Created"),
    ("started", "Started"),
    ("agent_connected", "Agent connected"),
    ("first_step_byte", "First step byte"),
];

/// Pods down, phases across: how long each phase of each pod's start took (since the
/// previous phase), so a slow pod is explained on the page.
fn render_pods(m: &mut String, pods: &[valet_store::PodRow]) {
    if pods.is_empty() {
        return;
    }
    m.push_str(
        "<section><h2>Pods</h2><table id=\"pods\" class=\"pods\"><thead><tr><th>Pod</th><th>Job</th><th>Backend</th>",
    );
    for (_, title) in PHASES {
        let _ = write!(m, "<th>{title}</th>");
    }
    m.push_str("<th>Ready after</th></tr></thead><tbody>");
    for p in pods {
        let _ = write!(
            m,
            "<tr data-pod=\"{pod}\"><td><code>{pod}</code></td><td>{job}</td><td>{backend}</td>",
            pod = esc(&p.pod),
            job = esc(&p.job),
            backend = esc(&p.backend),
        );
        for (phase, _) in PHASES {
            match p.phases.iter().find(|f| f.phase == phase) {
                Some(f) => {
                    let _ = write!(
                        m,
                        "<td data-phase=\"{phase}\" title=\"{detail}\">{took}</td>",
                        detail = esc(f.detail.as_deref().unwrap_or("")),
                        took = duration(f.took_ms),
                    );
                }
                None => m.push_str("<td class=\"none\"></td>"),
            }
        }
        let ready = p
            .phases
            .iter()
            .find(|f| f.phase == "agent_connected")
            .map(|f| duration(f.at_ms))
            .unwrap_or_default();
        let _ = write!(m, "<td data-phase=\"ready\">{ready}</td></tr>");
    }
    m.push_str("</tbody></table></section>");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pods_show_each_phase_and_escape_what_they_are_told() {
        let phase = |phase: &str, at_ms, took_ms| valet_store::PodPhaseRow {
            phase: phase.into(),
            at_ms,
            took_ms,
            detail: Some("<pulled>".into()),
        };
        let pods = vec![valet_store::PodRow {
            pod: "valet-1-<x>".into(),
            job: "job-1".into(),
            backend: "docker".into(),
            phases: vec![
                phase("queued", 0, 0),
                phase("placed", 3, 3),
                phase("created", 1_203, 1_200),
                phase("agent_connected", 1_500, 297),
            ],
        }];
        let mut m = String::new();
        render_pods(&mut m, &pods);
        assert!(m.contains("valet-1-&lt;x&gt;"), "{m}");
        assert!(!m.contains("<pulled>"), "{m}");
        assert!(
            m.contains("data-phase=\"created\" title=\"&lt;pulled&gt;\">"),
            "{m}"
        );
        assert!(m.contains(&duration(1_200)), "{m}");
        // Not reached: an empty cell, not a zero.
        assert!(m.contains("<td class=\"none\"></td>"), "{m}");
        assert!(
            m.contains(&format!("data-phase=\"ready\">{}<", duration(1_500))),
            "{m}"
        );
        let mut none = String::new();
        render_pods(&mut none, &[]);
        assert!(none.is_empty());
    }

    #[test]
    fn escapes_markup_and_quotes() {
        assert_eq!(
            esc("<script>alert('x') & \"y\"</script>"),
            "&lt;script&gt;alert(&#39;x&#39;) &amp; &quot;y&quot;&lt;/script&gt;"
        );
    }

    #[test]
    fn utc_dates() {
        assert_eq!(utc(0), "1970-01-01 00:00:00");
        assert_eq!(utc(951_782_400_000), "2000-02-29 00:00:00");
        assert_eq!(utc(1_795_314_489_000), "2026-11-22 02:28:09");
    }

    #[test]
    fn durations() {
        assert_eq!(duration(1234), "1.2s");
        assert_eq!(duration(184_000), "3m 04s");
        assert_eq!(duration(3_720_000), "1h 02m");
    }

    #[test]
    fn results() {
        assert_eq!(result_token(None, false, None), "running");
        assert_eq!(result_token(None, false, Some("ERROR")), "error");
        assert_eq!(result_token(None, false, Some("ABORTED")), "aborted");
        assert_eq!(result_token(Some("SUCCESS"), true, None), "not-run");
        assert_eq!(result_token(Some("UNSTABLE"), false, None), "unstable");
    }
}
