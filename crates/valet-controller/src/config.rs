//! `valet.yaml`: what the controller serves. Read once at start (never per request); a bad
//! file is refused with its name, the line and column, and what is wrong.
//!
//! The reference, with an example, is `docs/controller.md`.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_saphyr::Spanned;

/// Why a configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The file, line and column (1-based), and what is wrong there.
    #[error("{}:{line}:{column}: {message}", path.display())]
    Invalid {
        path: PathBuf,
        line: u64,
        column: u64,
        message: String,
    },
}

/// The `backend:` section: the default backend (`kind` and that backend's own settings,
/// read by [`valet_backends::BackendConfig`]) and what every backend shares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendSettings {
    pub config: valet_backends::BackendConfig,
    /// Seconds between TERM and KILL when a step is interrupted.
    pub kill_grace_seconds: u64,
    /// At most this many pods of this backend at once, over all builds (no limit when
    /// absent). A job whose pod would exceed it waits, in order, in the `queued` phase.
    pub max_pods: Option<usize>,
}

impl Default for BackendSettings {
    fn default() -> Self {
        BackendSettings {
            config: valet_backends::BackendConfig::default(),
            kill_grace_seconds: default_kill_grace(),
            max_pods: None,
        }
    }
}

impl BackendSettings {
    /// The settings of the backend `kind`: the section's when it names that kind, the
    /// kind's defaults otherwise (a repository naming another backend).
    pub fn config_for(&self, kind: &str) -> valet_backends::BackendConfig {
        if self.config.kind() == kind {
            return self.config.clone();
        }
        valet_backends::BackendConfig::of_kind(kind).unwrap_or_default()
    }
}

/// One repository the controller builds.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RepoConfig {
    /// The name in the API and in `JOB_NAME`; webhooks are matched by it (GitHub's
    /// `full_name` or `name`, GitLab's `path_with_namespace` or `name`) or by the clone URL.
    pub name: Spanned<String>,
    /// What `git clone` is given: `https://…`, `git@…`, `file:///…` or a plain path.
    pub url: Spanned<String>,
    /// The webhook secret (GitHub and generic HMAC key, GitLab token); the top-level
    /// `webhook_secret` when absent.
    #[serde(default)]
    pub secret: Option<String>,
    /// The pipeline file in the repository.
    #[serde(default = "default_pipeline")]
    pub pipeline: String,
    /// Where this repository's pods run (the default backend when absent).
    #[serde(default)]
    pub backend: Option<Spanned<String>>,
    /// Branches that build, as globs (`main`, `release/*`); every branch when empty. Pull and
    /// merge requests are matched by their target branch.
    #[serde(default)]
    pub branches: Vec<Spanned<String>>,
    /// Whether pull requests (GitHub) and merge requests (GitLab) build.
    #[serde(default = "yes")]
    pub pull_requests: bool,
    /// At most this many builds of this repository at once (no limit beyond the global one
    /// when absent).
    #[serde(default)]
    pub concurrency: Option<Spanned<usize>>,
    /// One build at a time per branch (as the pipeline's `options { disableConcurrentBuilds() }`).
    #[serde(default)]
    pub disable_concurrent_builds: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    listen: Option<Spanned<String>>,
    #[serde(default)]
    data_dir: Option<PathBuf>,
    /// Read as a tree first: its keys are the chosen backend's (see [`BackendSettings`]).
    #[serde(default)]
    backend: Option<Spanned<serde_json::Value>>,
    #[serde(default)]
    concurrency: Option<Spanned<usize>>,
    #[serde(default)]
    step_log_limit: Option<Spanned<u64>>,
    #[serde(default)]
    max_queued: Option<Spanned<usize>>,
    #[serde(default)]
    webhook_secret: Option<String>,
    #[serde(default)]
    container_policy: Option<Spanned<RawContainerPolicy>>,
    #[serde(default)]
    api: Option<Spanned<RawApi>>,
    #[serde(default)]
    repositories: Vec<Spanned<RepoConfig>>,
}

/// `api:` as written; see [`ApiAccess`].
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawApi {
    #[serde(default)]
    anonymous_read: bool,
    #[serde(default)]
    hosts: Vec<Spanned<String>>,
}

/// Who may use the API and by which names the controller is reached.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ApiAccess {
    /// Reads (builds, logs, events, the build page, metrics) without a token. Triggering
    /// and cancelling always need one.
    pub anonymous_read: bool,
    /// Host names (lower case, no port) the controller answers to besides `localhost` and
    /// IP addresses: a request naming any other host is refused, so a page on a rebound
    /// DNS name cannot read the API.
    pub hosts: Vec<String>,
}

/// `container_policy:` as written; see [`valet_backend::ContainerPolicy`].
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawContainerPolicy {
    #[serde(default)]
    allow_privileged: bool,
    #[serde(default)]
    require_non_root: bool,
    /// Millicores; 0 for none.
    #[serde(default = "default_cpu_limit")]
    default_cpu_limit_millis: u64,
    /// Processes and threads per container.
    #[serde(default = "default_pids_limit")]
    default_pids_limit: Spanned<u64>,
}

fn default_cpu_limit() -> u64 {
    valet_backend::policy::DEFAULT_CPU_LIMIT_MILLIS
}

fn default_pids_limit() -> Spanned<u64> {
    Spanned::new(
        valet_backend::policy::DEFAULT_PIDS_LIMIT,
        serde_saphyr::Location::UNKNOWN,
        serde_saphyr::Location::UNKNOWN,
    )
}

/// The controller's configuration, checked.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    /// The database, logs and per-build directories. Relative paths are relative to the
    /// directory of the configuration file.
    pub data_dir: PathBuf,
    pub backend: BackendSettings,
    /// Builds running at once, over all repositories.
    pub concurrency: usize,
    /// Bytes of output kept per step (and for the build's own messages); the rest is
    /// replaced by one marker line.
    pub step_log_limit: u64,
    /// Builds that may wait at once; past it, triggers are refused (503) and store nothing.
    pub max_queued: usize,
    pub repositories: Vec<Repo>,
    /// The top-level `webhook_secret`: a delivery for a repository not configured here is
    /// answered as ignored only when it is signed with it (else as a bad signature, so the
    /// configured names cannot be probed).
    pub webhook_secret: Option<String>,
    /// What pipelines' containers are allowed (privilege, user) and their default CPU limit.
    pub container_policy: valet_backend::ContainerPolicy,
    /// Authentication of the API and the names the controller is reached by.
    pub api: ApiAccess,
    /// Credentials for `withCredentials` and `credentials()`: not from the file; `valet
    /// serve` fills them from the `VALET_SECRET_*` variables it took out of its environment
    /// at start (none by default).
    pub secrets: valet_runtime::Secrets,
}

/// A repository, checked.
#[derive(Debug, Clone, Default)]
pub struct Repo {
    pub name: String,
    pub url: String,
    pub secret: String,
    pub pipeline: String,
    /// The backend's kind (`local`, `docker`, …).
    pub backend: String,
    pub branches: Vec<String>,
    pub pull_requests: bool,
    pub concurrency: Option<usize>,
    pub disable_concurrent_builds: bool,
}

impl Repo {
    /// Whether `branch` passes the branch filter.
    pub fn builds_branch(&self, branch: &str) -> bool {
        self.branches.is_empty() || self.branches.iter().any(|g| glob_match(g, branch))
    }
}

/// The most a `concurrency` can be: a typo of a few zeros should not start a fork bomb.
pub const MAX_CONCURRENCY: usize = 1024;
/// Default and largest `max_queued`.
pub const DEFAULT_MAX_QUEUED: usize = 100_000;
pub const MAX_MAX_QUEUED: usize = 10_000_000;
/// The most a backend's `max_pods` can be.
pub const MAX_PODS: usize = 1_000_000;
/// Default bytes kept per step.
pub const DEFAULT_STEP_LOG_LIMIT: u64 = 16 * 1024 * 1024;

fn default_kill_grace() -> u64 {
    2
}
fn default_pipeline() -> String {
    "Jenkinsfile".into()
}
fn yes() -> bool {
    true
}

impl Config {
    /// Reads and checks `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let base = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        Config::parse(path, &text, base)
    }

    /// Checks `text` (read from `path`); relative data directories are taken from `base`.
    pub fn parse(path: &Path, text: &str, base: &Path) -> Result<Config, ConfigError> {
        let invalid = |line: u64, column: u64, message: String| ConfigError::Invalid {
            path: path.to_path_buf(),
            line,
            column,
            message,
        };
        let at = |loc: &serde_saphyr::Location, message: String| {
            invalid(loc.line(), loc.column(), message)
        };
        let raw: RawConfig = serde_saphyr::from_str(text).map_err(|e| {
            let (line, column) = e
                .location()
                .map(|l| (l.line(), l.column()))
                .unwrap_or((1, 1));
            invalid(line, column, error_message(&e))
        })?;
        let listen = match &raw.listen {
            None => SocketAddr::from(([127, 0, 0, 1], 8080)),
            Some(s) => s.value.parse().map_err(|_| {
                at(
                    &s.referenced,
                    format!(
                        "listen: `{}` is not an address and port (e.g. 127.0.0.1:8080)",
                        s.value
                    ),
                )
            })?,
        };
        let limit =
            |v: &Option<Spanned<usize>>, what: &str| -> Result<Option<usize>, ConfigError> {
                match v {
                    None => Ok(None),
                    Some(s) if s.value == 0 || s.value > MAX_CONCURRENCY => Err(at(
                        &s.referenced,
                        format!(
                            "{what} must be between 1 and {MAX_CONCURRENCY}, not {}",
                            s.value
                        ),
                    )),
                    Some(s) => Ok(Some(s.value)),
                }
            };
        let concurrency = limit(&raw.concurrency, "concurrency")?.unwrap_or(4);
        let step_log_limit = match &raw.step_log_limit {
            None => DEFAULT_STEP_LOG_LIMIT,
            Some(s) if s.value < 1024 => {
                return Err(at(
                    &s.referenced,
                    format!(
                        "step_log_limit must be at least 1024 bytes, not {}",
                        s.value
                    ),
                ));
            }
            Some(s) => s.value,
        };
        let max_queued = match &raw.max_queued {
            None => DEFAULT_MAX_QUEUED,
            Some(s) if s.value == 0 || s.value > MAX_MAX_QUEUED => {
                return Err(at(
                    &s.referenced,
                    format!(
                        "max_queued must be between 1 and {MAX_MAX_QUEUED}, not {}",
                        s.value
                    ),
                ));
            }
            Some(s) => s.value,
        };
        let backend = match &raw.backend {
            None => BackendSettings::default(),
            Some(b) => backend_settings(&b.value).map_err(|e| {
                // Point at the offending key when serde names one, not at the section.
                match unknown_field(&e).and_then(|k| key_line(text, b.referenced.line(), k)) {
                    Some((line, column)) => invalid(line, column, e),
                    None => at(&b.referenced, e),
                }
            })?,
        };
        let data_dir = raw
            .data_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from("valet-data"));
        let data_dir = if data_dir.is_absolute() {
            data_dir
        } else {
            base.join(data_dir)
        };
        let mut names = HashSet::new();
        let mut repositories = Vec::new();
        for r in &raw.repositories {
            let loc = &r.referenced;
            let r = &r.value;
            let name = r.name.value.trim();
            if name.is_empty()
                || !name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_./".contains(c))
                || name.starts_with('/')
                || name.contains("..")
            {
                return Err(at(
                    &r.name.referenced,
                    format!(
                        "repository name `{}`: use letters, digits, `-`, `_`, `.` and `/` (e.g. `org/app`)",
                        r.name.value
                    ),
                ));
            }
            if !names.insert(name.to_string()) {
                return Err(at(
                    &r.name.referenced,
                    format!("repository `{name}` is configured twice"),
                ));
            }
            if r.url.value.trim().is_empty() {
                return Err(at(
                    &r.url.referenced,
                    format!("repository `{name}`: url is empty"),
                ));
            }
            if r.url.value.starts_with('-') {
                return Err(at(
                    &r.url.referenced,
                    format!("repository `{name}`: url must not start with `-`"),
                ));
            }
            let secret = match r.secret.clone().or_else(|| raw.webhook_secret.clone()) {
                Some(s) if !s.is_empty() => s,
                _ => {
                    return Err(at(
                        loc,
                        format!(
                            "repository `{name}` has no webhook secret: set `secret` here or `webhook_secret` at the top"
                        ),
                    ));
                }
            };
            if r.pipeline.trim().is_empty()
                || Path::new(&r.pipeline).is_absolute()
                || Path::new(&r.pipeline)
                    .components()
                    .any(|c| matches!(c, std::path::Component::ParentDir))
            {
                return Err(at(
                    loc,
                    format!("repository `{name}`: pipeline must be a path inside the repository"),
                ));
            }
            for b in &r.branches {
                if b.value.trim().is_empty() {
                    return Err(at(
                        &b.referenced,
                        format!("repository `{name}`: an empty branch pattern"),
                    ));
                }
            }
            repositories.push(Repo {
                name: name.to_string(),
                url: r.url.value.trim().to_string(),
                secret,
                pipeline: r.pipeline.clone(),
                backend: match &r.backend {
                    None => backend.config.kind().to_string(),
                    Some(k) => valet_backends::BackendConfig::of_kind(k.value.trim())
                        .map_err(|e| at(&k.referenced, format!("repository `{name}`: {e}")))?
                        .kind()
                        .to_string(),
                },
                branches: r.branches.iter().map(|b| b.value.clone()).collect(),
                pull_requests: r.pull_requests,
                concurrency: limit(&r.concurrency, "concurrency")?,
                disable_concurrent_builds: r.disable_concurrent_builds,
            });
        }
        if let Some(p) = &raw.container_policy
            && p.value.default_cpu_limit_millis > valet_backend::policy::MAX_CPU_LIMIT_MILLIS
        {
            return Err(at(
                &p.referenced,
                format!(
                    "container_policy.default_cpu_limit_millis must be at most {}, not {}",
                    valet_backend::policy::MAX_CPU_LIMIT_MILLIS,
                    p.value.default_cpu_limit_millis
                ),
            ));
        }
        let api = match &raw.api {
            None => ApiAccess::default(),
            Some(a) => ApiAccess {
                anonymous_read: a.value.anonymous_read,
                hosts: a
                    .value
                    .hosts
                    .iter()
                    .map(|h| {
                        api_host(&h.value).ok_or_else(|| {
                            at(
                                &h.referenced,
                                format!(
                                    "api.hosts: `{}` is not a host name (e.g. ci.example.com, without scheme, port or path)",
                                    h.value
                                ),
                            )
                        })
                    })
                    .collect::<Result<_, _>>()?,
            },
        };
        if let Some(p) = &raw.container_policy {
            let pids = &p.value.default_pids_limit;
            use valet_backend::policy::{MAX_PIDS_LIMIT, MIN_PIDS_LIMIT};
            if !(MIN_PIDS_LIMIT..=MAX_PIDS_LIMIT).contains(&pids.value) {
                return Err(at(
                    &pids.referenced,
                    format!(
                        "container_policy.default_pids_limit must be between {MIN_PIDS_LIMIT} and {MAX_PIDS_LIMIT} processes, not {}",
                        pids.value
                    ),
                ));
            }
        }
        Ok(Config {
            api,
            listen,
            data_dir,
            backend,
            concurrency,
            step_log_limit,
            max_queued,
            repositories,
            webhook_secret: raw.webhook_secret.clone(),
            container_policy: raw
                .container_policy
                .as_ref()
                .map(|p| valet_backend::ContainerPolicy {
                    allow_privileged: p.value.allow_privileged,
                    require_non_root: p.value.require_non_root,
                    default_cpu_limit_millis: (p.value.default_cpu_limit_millis > 0)
                        .then_some(p.value.default_cpu_limit_millis),
                    default_pids_limit: p.value.default_pids_limit.value,
                })
                .unwrap_or_default(),
            secrets: valet_runtime::Secrets::default(),
        })
    }

    pub fn repo(&self, name: &str) -> Option<&Repo> {
        self.repositories.iter().find(|r| r.name == name)
    }
}

/// The error's words without the location (we print our own `file:line:column`).
/// The `backend:` section: `kill_grace_seconds` and `max_pods`, and the rest for the
/// chosen backend.
fn backend_settings(section: &serde_json::Value) -> Result<BackendSettings, String> {
    let serde_json::Value::Object(map) = section else {
        return Err("backend: expected a mapping (kind: …, and the backend's settings)".into());
    };
    let mut map = map.clone();
    let kill_grace_seconds = match map.remove("kill_grace_seconds") {
        None => default_kill_grace(),
        Some(v) => v
            .as_u64()
            .filter(|s| *s <= 3600)
            .ok_or("backend.kill_grace_seconds must be a number of seconds up to 3600")?,
    };
    let max_pods = match map.remove("max_pods") {
        None => None,
        Some(v) => Some(
            v.as_u64()
                .filter(|n| (1..=MAX_PODS as u64).contains(n))
                .ok_or(format!(
                    "backend.max_pods must be a number of pods between 1 and {MAX_PODS}"
                ))? as usize,
        ),
    };
    let kind = match map.remove("kind") {
        None => "local".to_string(),
        Some(serde_json::Value::String(k)) => k,
        Some(other) => return Err(format!("backend.kind must be a name, not {other}")),
    };
    valet_backends::BackendConfig::of_kind(&kind).map_err(|e| format!("backend.kind: {e}"))?;
    map.insert("kind".into(), kind.into());
    let config: valet_backends::BackendConfig =
        serde_json::from_value(serde_json::Value::Object(map))
            .map_err(|e| format!("backend: {e}"))?;
    config.validate().map_err(|e| e.to_string())?;
    Ok(BackendSettings {
        config,
        kill_grace_seconds,
        max_pods,
    })
}

/// The field an "unknown field `x`, expected …" message names.
fn unknown_field(message: &str) -> Option<&str> {
    let rest = &message[message.find("unknown field `")? + "unknown field `".len()..];
    Some(&rest[..rest.find('`')?])
}

/// Where `key:` is written in the indented section that starts at line `from` (1-based).
fn key_line(text: &str, from: u64, key: &str) -> Option<(u64, u64)> {
    let start = usize::try_from(from).ok()?.checked_sub(1)?;
    for (i, line) in text.lines().enumerate().skip(start) {
        let body = line.trim_start();
        let indent = line.len() - body.len();
        if i > start && indent == 0 && !body.is_empty() && !body.starts_with('#') {
            return None;
        }
        if body
            .strip_prefix(key)
            .is_some_and(|r| r.trim_start().starts_with(':'))
        {
            return Some((i as u64 + 1, indent as u64 + 1));
        }
    }
    None
}

fn error_message(e: &serde_saphyr::Error) -> String {
    let s = e.without_snippet().to_string();
    // The rendering ends with " at line N, column M"; the location is already in front.
    let s = match s.find(" at line ") {
        Some(i) => s[..i].to_string(),
        None => s,
    };
    s.lines().next().unwrap_or_default().trim().to_string()
}

/// A host name of `api.hosts`, lower-cased; `None` when it is not one.
fn api_host(h: &str) -> Option<String> {
    let h = h.trim().to_ascii_lowercase();
    let ok = !h.is_empty()
        && h.len() <= 253
        && h.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        });
    ok.then_some(h)
}

/// `url` without the credentials it may carry (`https://user:token@host/…` →
/// `https://***@host/…`), for logs, the API and the steps' `GIT_URL`.
pub fn redact_url(url: &str) -> String {
    match url_userinfo(url) {
        Some(userinfo) => url.replacen(&format!("{userinfo}@"), "***@", 1),
        None => url.to_string(),
    }
}

/// `url` without its credentials (`https://host/…`).
pub fn url_without_userinfo(url: &str) -> String {
    match url_userinfo(url) {
        Some(userinfo) => url.replacen(&format!("{userinfo}@"), "", 1),
        None => url.to_string(),
    }
}

/// The credentials of `url` (`user:token` of `https://user:token@host/…`), up to the last
/// `@` of the authority, so a password holding a raw `@` is taken whole.
pub fn url_userinfo(url: &str) -> Option<&str> {
    let (_, rest) = url.split_once("://")?;
    let authority = &rest[..rest.find('/').unwrap_or(rest.len())];
    authority.rfind('@').map(|at| &authority[..at])
}

/// `*` matches any run of characters (`/` included), `?` one character; the rest is literal.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    // Iterative matching with one backtrack point: linear in practice, never exponential.
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) && p[pi] != '*' {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ti));
            pi += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(Path::new("valet.yaml"), text, Path::new("/etc/valet"))
    }

    const GOOD: &str = "\
listen: 127.0.0.1:9000
concurrency: 3
webhook_secret: s3cret
repositories:
  - name: org/app
    url: file:///srv/git/app
    branches: [main, 'release/*']
    concurrency: 2
  - name: lib
    url: /srv/git/lib
    secret: other
    backend: docker
    disable_concurrent_builds: true
";

    #[test]
    fn a_good_config_with_defaults() {
        let c = parse(GOOD).unwrap();
        assert_eq!(c.listen.to_string(), "127.0.0.1:9000");
        assert_eq!(c.data_dir, Path::new("/etc/valet/valet-data"));
        assert_eq!(c.concurrency, 3);
        let app = c.repo("org/app").unwrap();
        assert_eq!(app.secret, "s3cret");
        assert_eq!(app.pipeline, "Jenkinsfile");
        assert_eq!(app.backend, "local");
        assert!(app.builds_branch("release/1.2"));
        assert!(!app.builds_branch("feature/x"));
        let lib = c.repo("lib").unwrap();
        assert_eq!(
            (lib.backend.as_str(), lib.disable_concurrent_builds),
            ("docker", true)
        );
        assert!(lib.builds_branch("anything"));
    }

    #[test]
    fn an_unknown_field_is_refused_with_its_line() {
        let e = parse(
            GOOD.replace("    concurrency: 2", "    concurrenc: 2")
                .as_str(),
        )
        .unwrap_err()
        .to_string();
        assert!(e.starts_with("valet.yaml:8:"), "{e}");
        assert!(e.contains("concurrenc"), "{e}");
    }

    #[test]
    fn api_hosts_are_host_names_and_a_bad_one_is_refused_with_its_line() {
        let c = parse(&format!(
            "api:\n  anonymous_read: true\n  hosts: [CI.Example.com]\n{GOOD}"
        ))
        .unwrap();
        assert!(c.api.anonymous_read);
        assert_eq!(c.api.hosts, ["ci.example.com"]);
        assert_eq!(parse(GOOD).unwrap().api, ApiAccess::default());
        for bad in [
            "http://ci.example.com",
            "ci.example.com:443",
            "ci/x",
            "''",
            "a..b",
        ] {
            let e = parse(&format!("api:\n  hosts:\n    - {bad}\n{GOOD}"))
                .unwrap_err()
                .to_string();
            assert!(e.starts_with("valet.yaml:3:"), "{bad}: {e}");
            assert!(
                e.contains("api.hosts") && e.contains("not a host name"),
                "{bad}: {e}"
            );
        }
        let e = parse(&format!("api:\n  anonymous: true\n{GOOD}"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("anonymous"), "{e}");
    }

    #[test]
    fn bad_values_are_refused_with_their_line() {
        let e = parse(&GOOD.replace("concurrency: 3", "concurrency: 0"))
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("valet.yaml:2:"), "{e}");
        assert!(e.contains("between 1 and"), "{e}");
        let e = parse(&GOOD.replace("127.0.0.1:9000", "localhost"))
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("valet.yaml:1:"), "{e}");
        let e = parse(&GOOD.replace("name: lib", "name: org/app"))
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("valet.yaml:9:") && e.contains("twice"), "{e}");
        let e = parse(&GOOD.replace("webhook_secret: s3cret\n", ""))
            .unwrap_err()
            .to_string();
        assert!(e.contains("no webhook secret"), "{e}");
        let e = parse(&GOOD.replace("backend: docker", "pipeline: ../../etc/passwd"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("inside the repository"), "{e}");
        let e = parse(&GOOD.replace("backend: docker", "backend: podman"))
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("valet.yaml:12:"), "{e}");
        let e = parse(&format!(
            "backend:\n  kind: docker\n  warm_pool: 500\n{GOOD}"
        ))
        .unwrap_err()
        .to_string();
        // The error points into the `backend:` section and names the setting.
        assert!(
            (e.starts_with("valet.yaml:2:") || e.starts_with("valet.yaml:3:"))
                && e.contains("warm_pool")
                && e.contains("at most 16"),
            "{e}"
        );
        let e = parse(&format!("backend:\n  kind: docker\n  max_pods: 0\n{GOOD}"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("max_pods must be"), "{e}");
        let c = parse(&format!("backend:\n  kind: docker\n  max_pods: 8\n{GOOD}")).unwrap();
        assert_eq!(c.backend.max_pods, Some(8));
        let c = parse(&format!(
            "backend:\n  kind: docker\n  warm_pool: 2\n  channel: dial-out\n{GOOD}"
        ))
        .unwrap();
        assert_eq!(
            c.backend.config,
            valet_backends::BackendConfig::Docker {
                warm_pool: 2,
                agent: None,
                channel: valet_backends::AgentChannel::DialOut,
            }
        );
        assert_eq!(parse(GOOD).unwrap().backend, BackendSettings::default());
        // A setting of another backend is refused, naming it.
        let e = parse(&format!("backend:\n  kind: local\n  warm_pool: 2\n{GOOD}"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown field `warm_pool`"), "{e}");
        let e = parse(&format!("backend:\n  kind: podman\n{GOOD}"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown backend `podman`"), "{e}");
    }

    #[test]
    fn the_documented_example_is_valid() {
        let text = include_str!("../../../examples/valet.yaml");
        let c = parse(text).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.repositories.len(), 2);
        assert_eq!(c.repo("tools").unwrap().secret, "change-me");
        assert_eq!(c.repo("tools").unwrap().backend, "docker");
        let e = parse(&text.replace("  kind: local", "  kind: local\n  colour: red"))
            .unwrap_err()
            .to_string();
        // The error points into the `backend:` section (its settings are read as a tree, then
        // as the backend's) and names the setting.
        assert!(
            (e.starts_with("valet.yaml:13:") || e.starts_with("valet.yaml:14:"))
                && e.contains("colour"),
            "{e}"
        );
        assert_eq!(c.backend.max_pods, Some(16));
    }

    #[test]
    fn the_container_policy_defaults_to_no_privilege_and_a_cpu_limit() {
        let c = parse(GOOD).unwrap();
        assert_eq!(
            c.container_policy,
            valet_backend::ContainerPolicy::default()
        );
        assert!(!c.container_policy.allow_privileged);
        let c = parse(&format!(
            "container_policy:\n  allow_privileged: true\n  default_cpu_limit_millis: 0\n{GOOD}"
        ))
        .unwrap();
        assert!(c.container_policy.allow_privileged);
        assert_eq!(c.container_policy.default_cpu_limit_millis, None);
        let e = parse(&format!("container_policy:\n  privileged: yes\n{GOOD}"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("privileged"), "{e}");
        let e = parse(&format!(
            "container_policy:\n  default_cpu_limit_millis: 99999999999999\n{GOOD}"
        ))
        .unwrap_err()
        .to_string();
        assert!(
            e.starts_with("valet.yaml:2:") && e.contains("at most 1000000"),
            "{e}"
        );
        assert_eq!(c.container_policy.default_pids_limit, 1024);
        let c = parse(&format!(
            "container_policy:\n  default_pids_limit: 64\n{GOOD}"
        ))
        .unwrap();
        assert_eq!(c.container_policy.default_pids_limit, 64);
        for bad in ["0", "8", "99999999999"] {
            let e = parse(&format!(
                "container_policy:\n  allow_privileged: false\n  default_pids_limit: {bad}\n{GOOD}"
            ))
            .unwrap_err()
            .to_string();
            assert!(
                e.starts_with("valet.yaml:3:") && e.contains("between 32 and 4194304"),
                "{e}"
            );
        }
    }

    #[test]
    fn credentials_in_urls_are_not_shown() {
        assert_eq!(
            redact_url("https://bot:t0ken@git.example.com/a/b.git"),
            "https://***@git.example.com/a/b.git"
        );
        assert_eq!(redact_url("file:///srv/git/a"), "file:///srv/git/a");
        assert_eq!(
            redact_url("git@github.com:a/b.git"),
            "git@github.com:a/b.git"
        );
        assert_eq!(redact_url("https://h/x@y"), "https://h/x@y");
        assert_eq!(
            redact_url("https://bot:p@ss@git.example.com/a"),
            "https://***@git.example.com/a"
        );
        assert_eq!(
            url_userinfo("https://bot:p@ss@git.example.com/a@b"),
            Some("bot:p@ss")
        );
        assert_eq!(
            url_without_userinfo("https://bot:p@ss@git.example.com/a@b"),
            "https://git.example.com/a@b"
        );
        assert_eq!(url_without_userinfo("file:///srv/a"), "file:///srv/a");
    }

    #[test]
    fn globs() {
        assert!(glob_match("main", "main"));
        assert!(!glob_match("main", "mainx"));
        assert!(glob_match("release/*", "release/1/2"));
        assert!(glob_match("*-hotfix", "a-hotfix"));
        assert!(glob_match("v?", "v1"));
        assert!(!glob_match("v?", "v12"));
        assert!(glob_match("*a*b*", "xxaxxbxx"));
        assert!(!glob_match(&"*a".repeat(30), &"a".repeat(29)));
    }
}
