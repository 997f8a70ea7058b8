//! Webhook deliveries: verification (pure functions with fixed test vectors) and what a
//! payload asks for. No I/O here: the HTTP side is in `server.rs`.
//!
//! - GitHub: `X-Hub-Signature-256: sha256=<hex>`, HMAC-SHA256 of the raw body with the
//!   repository's secret; `X-GitHub-Event` is `push`, `pull_request` or `ping`.
//! - GitLab: `X-Gitlab-Token` equal to the secret; `object_kind` is `push` or `merge_request`.
//! - Generic: `X-Valet-Signature-256: sha256=<hex>` as GitHub's, and a small JSON body
//!   (`docs/controller.md`).
//!
//! Every comparison of a secret is constant-time.

use hmac::{Hmac, KeyInit as _, Mac as _};
use serde::Deserialize;
use sha2::Sha256;

/// Whether `header` (`sha256=<64 hex digits>`) is the HMAC-SHA256 of `body` under `secret`.
/// Compared in constant time (by the `hmac` crate); a malformed header is simply wrong.
pub fn hmac_sha256_valid(secret: &[u8], body: &[u8], header: &str) -> bool {
    let Some(hex) = header.trim().strip_prefix("sha256=") else {
        return false;
    };
    let Some(given) = decode_hex(hex) else {
        return false;
    };
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret) else {
        return false;
    };
    mac.update(body);
    mac.verify_slice(&given).is_ok()
}

/// `sha256=<hex>` for `body` under `secret`: what a sender puts in the signature header.
pub fn hmac_sha256_header(secret: &[u8], body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes a key of any length");
    mac.update(body);
    let tag = mac.finalize().into_bytes();
    let mut s = String::with_capacity(7 + 64);
    s.push_str("sha256=");
    for b in tag.iter() {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

/// Constant-time equality of two tokens (the time depends on the length only).
pub fn token_matches(expected: &str, given: &str) -> bool {
    let (a, b) = (expected.as_bytes(), given.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn decode_hex(s: &str) -> Option<Vec<u8>> {
    if s.len() != 64 {
        return None;
    }
    let val = |c: u8| -> Option<u8> {
        match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            b'A'..=b'F' => Some(c - b'A' + 10),
            _ => None,
        }
    };
    s.as_bytes()
        .chunks(2)
        .map(|p| Some(val(p[0])? << 4 | val(p[1])?))
        .collect()
}

/// What a delivery asks for, once read.
#[derive(Debug, Clone, PartialEq)]
pub struct Delivery {
    /// Names and URLs the repository is known by in the payload, best first.
    pub repo_keys: Vec<String>,
    pub action: Action,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    Build(Trigger),
    /// Nothing to build, and why (answered 202).
    Ignore(String),
}

/// A build a delivery asks for.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Trigger {
    /// `BRANCH_NAME`: the branch, or `PR-<n>` / `MR-<n>`.
    pub branch: String,
    /// The branch the filter is applied to (the target branch of a pull request).
    pub filter_branch: String,
    pub commit: Option<String>,
    /// A ref to fetch when the commit may not be on a branch of the clone.
    pub git_ref: Option<String>,
    pub cause: String,
    pub pull_request: bool,
    pub params: serde_json::Map<String, serde_json::Value>,
}

/// Why a payload could not be read.
#[derive(Debug, thiserror::Error)]
pub enum PayloadError {
    #[error("the body is not the JSON this event has: {0}")]
    Json(#[from] serde_json::Error),
    #[error("{0}")]
    Invalid(String),
}

#[derive(Deserialize)]
struct GhRepo {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    full_name: Option<String>,
    #[serde(default)]
    clone_url: Option<String>,
    #[serde(default)]
    ssh_url: Option<String>,
    #[serde(default)]
    html_url: Option<String>,
}

impl GhRepo {
    fn keys(self) -> Vec<String> {
        [
            self.full_name,
            self.name,
            self.clone_url,
            self.ssh_url,
            self.html_url,
        ]
        .into_iter()
        .flatten()
        .collect()
    }
}

#[derive(Deserialize)]
struct GhPush {
    #[serde(rename = "ref")]
    git_ref: String,
    after: String,
    #[serde(default)]
    deleted: bool,
    repository: GhRepo,
}

#[derive(Deserialize)]
struct GhBranchRef {
    #[serde(rename = "ref")]
    git_ref: String,
    #[serde(default)]
    sha: Option<String>,
}

#[derive(Deserialize)]
struct GhPr {
    head: GhBranchRef,
    base: GhBranchRef,
}

#[derive(Deserialize)]
struct GhPullRequest {
    action: String,
    number: u64,
    pull_request: GhPr,
    repository: GhRepo,
}

#[derive(Deserialize)]
struct GhAny {
    #[serde(default)]
    repository: Option<GhRepo>,
}

/// Reads a GitHub delivery of type `event` (`X-GitHub-Event`).
pub fn github(event: &str, body: &[u8]) -> Result<Delivery, PayloadError> {
    match event {
        "push" => {
            let p: GhPush = serde_json::from_slice(body)?;
            let repo_keys = p.repository.keys();
            let action = push_action(&p.git_ref, &p.after, p.deleted, "push");
            Ok(Delivery { repo_keys, action })
        }
        "pull_request" => {
            let p: GhPullRequest = serde_json::from_slice(body)?;
            let repo_keys = p.repository.keys();
            let action = match p.action.as_str() {
                "opened" | "synchronize" | "reopened" => Action::Build(Trigger {
                    branch: format!("PR-{}", p.number),
                    filter_branch: p.pull_request.base.git_ref.clone(),
                    commit: p.pull_request.head.sha.clone(),
                    git_ref: Some(format!("refs/pull/{}/head", p.number)),
                    cause: format!(
                        "pull request #{} {} ({} into {})",
                        p.number,
                        p.action,
                        p.pull_request.head.git_ref,
                        p.pull_request.base.git_ref
                    ),
                    pull_request: true,
                    params: Default::default(),
                }),
                other => Action::Ignore(format!(
                    "pull request action `{other}` does not build (only opened, synchronize, reopened)"
                )),
            };
            Ok(Delivery { repo_keys, action })
        }
        other => {
            let p: GhAny = serde_json::from_slice(body)?;
            let repo_keys = p.repository.map(GhRepo::keys).unwrap_or_default();
            let reason = if other == "ping" {
                "ping: the webhook reaches valet".to_string()
            } else {
                format!("event `{other}` does not build (only push and pull_request)")
            };
            Ok(Delivery {
                repo_keys,
                action: Action::Ignore(reason),
            })
        }
    }
}

fn push_action(git_ref: &str, after: &str, deleted: bool, what: &str) -> Action {
    let Some(branch) = git_ref.strip_prefix("refs/heads/") else {
        return Action::Ignore(format!("{what} of `{git_ref}` is not of a branch"));
    };
    if deleted || after.is_empty() || after.bytes().all(|b| b == b'0') {
        return Action::Ignore(format!("branch `{branch}` was deleted"));
    }
    Action::Build(Trigger {
        branch: branch.to_string(),
        filter_branch: branch.to_string(),
        commit: Some(after.to_string()),
        git_ref: Some(git_ref.to_string()),
        cause: format!("{what} to {branch}"),
        pull_request: false,
        params: Default::default(),
    })
}

#[derive(Deserialize)]
struct GlProject {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    path_with_namespace: Option<String>,
    #[serde(default)]
    git_http_url: Option<String>,
    #[serde(default)]
    git_ssh_url: Option<String>,
    #[serde(default)]
    web_url: Option<String>,
}

impl GlProject {
    fn keys(self) -> Vec<String> {
        [
            self.path_with_namespace,
            self.name,
            self.git_http_url,
            self.git_ssh_url,
            self.web_url,
        ]
        .into_iter()
        .flatten()
        .collect()
    }
}

#[derive(Deserialize)]
struct GlCommit {
    id: String,
}

#[derive(Deserialize)]
struct GlMrAttrs {
    iid: u64,
    #[serde(default)]
    action: Option<String>,
    source_branch: String,
    target_branch: String,
    #[serde(default)]
    last_commit: Option<GlCommit>,
    #[serde(default)]
    oldrev: Option<String>,
}

#[derive(Deserialize)]
struct GlHook {
    object_kind: String,
    #[serde(rename = "ref", default)]
    git_ref: Option<String>,
    #[serde(default)]
    checkout_sha: Option<String>,
    #[serde(default)]
    after: Option<String>,
    project: GlProject,
    #[serde(default)]
    object_attributes: Option<GlMrAttrs>,
}

/// Reads a GitLab delivery (`object_kind` says what it is).
pub fn gitlab(body: &[u8]) -> Result<Delivery, PayloadError> {
    let h: GlHook = serde_json::from_slice(body)?;
    let repo_keys = h.project.keys();
    let action = match h.object_kind.as_str() {
        "push" => {
            let git_ref = h.git_ref.unwrap_or_default();
            let sha = h.checkout_sha.or(h.after).unwrap_or_default();
            push_action(&git_ref, &sha, false, "push")
        }
        "merge_request" => {
            let a = h.object_attributes.ok_or_else(|| {
                PayloadError::Invalid("a merge request event without object_attributes".into())
            })?;
            let action = a.action.clone().unwrap_or_default();
            let builds = match action.as_str() {
                "open" | "reopen" => true,
                // An update builds when it brought commits (GitLab sends `oldrev` then).
                "update" => a.oldrev.is_some(),
                _ => false,
            };
            if builds {
                Action::Build(Trigger {
                    branch: format!("MR-{}", a.iid),
                    filter_branch: a.target_branch.clone(),
                    commit: a.last_commit.map(|c| c.id),
                    git_ref: Some(format!("refs/merge-requests/{}/head", a.iid)),
                    cause: format!(
                        "merge request !{} {action} ({} into {})",
                        a.iid, a.source_branch, a.target_branch
                    ),
                    pull_request: true,
                    params: Default::default(),
                })
            } else {
                Action::Ignore(format!(
                    "merge request action `{action}` does not build (only open, reopen, and update with new commits)"
                ))
            }
        }
        other => Action::Ignore(format!(
            "event `{other}` does not build (only push and merge_request)"
        )),
    };
    Ok(Delivery { repo_keys, action })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Generic {
    repository: String,
    branch: String,
    #[serde(default)]
    commit: Option<String>,
    #[serde(default)]
    parameters: serde_json::Map<String, serde_json::Value>,
}

/// Reads a generic delivery: `{"repository": "app", "branch": "main", "commit": "…",
/// "parameters": {"NAME": "value"}}`.
pub fn generic(body: &[u8]) -> Result<Delivery, PayloadError> {
    let g: Generic = serde_json::from_slice(body)?;
    check_params(&g.parameters)?;
    let branch = g.branch.trim().to_string();
    if branch.is_empty() {
        return Err(PayloadError::Invalid("branch is empty".into()));
    }
    Ok(Delivery {
        repo_keys: vec![g.repository],
        action: Action::Build(Trigger {
            filter_branch: branch.clone(),
            cause: format!("generic hook for {branch}"),
            branch,
            commit: g.commit.filter(|c| !c.is_empty()),
            git_ref: None,
            pull_request: false,
            params: g.parameters,
        }),
    })
}

/// The most parameters a build may be given, and their sizes: every step gets them in its
/// environment, which the kernel bounds (E2BIG).
pub const MAX_PARAMS: usize = 100;
pub const MAX_PARAM_NAME: usize = 128;
pub const MAX_PARAM_VALUE: usize = 64 * 1024;

/// Parameters are names to strings, numbers or booleans (what `params.X` can hold).
pub fn check_params(p: &serde_json::Map<String, serde_json::Value>) -> Result<(), PayloadError> {
    if p.len() > MAX_PARAMS {
        return Err(PayloadError::Invalid(format!(
            "{} parameters: at most {MAX_PARAMS}",
            p.len()
        )));
    }
    for (k, v) in p {
        if k.len() > MAX_PARAM_NAME {
            return Err(PayloadError::Invalid(format!(
                "a parameter name of {} bytes: at most {MAX_PARAM_NAME}",
                k.len()
            )));
        }
        if v.as_str().is_some_and(|s| s.len() > MAX_PARAM_VALUE) {
            return Err(PayloadError::Invalid(format!(
                "parameter `{k}`: its value is over {} KiB",
                MAX_PARAM_VALUE / 1024
            )));
        }
        if k.is_empty() || !k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(PayloadError::Invalid(format!(
                "parameter name `{k}`: use letters, digits and `_`"
            )));
        }
        if !(v.is_string() || v.is_number() || v.is_boolean()) {
            return Err(PayloadError::Invalid(format!(
                "parameter `{k}` must be a string, number or boolean"
            )));
        }
    }
    Ok(())
}

/// A commit id or ref given by a sender must not be mistaken for an option of `git`.
pub fn safe_git_name(s: &str) -> bool {
    !s.is_empty()
        && !s.starts_with('-')
        && s.len() <= 256
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./+@".contains(c))
        && !s.contains("..")
}

/// Why a ref or branch name is refused: the rules of `git check-ref-format`, which git
/// itself applies to every ref it creates, and valet's own (no leading `-`, a bounded length).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RefError {
    #[error("it is empty")]
    Empty,
    #[error("it is longer than {MAX_REF} bytes")]
    TooLong,
    #[error("it starts with `-`")]
    LeadingDash,
    #[error("a full ref starts with `refs/`")]
    NotUnderRefs,
    #[error("it starts or ends with `/`, or has an empty component (`//`)")]
    EmptyComponent,
    #[error("a component starts with `.`")]
    DotComponent,
    #[error("a component ends with `.lock`")]
    LockComponent,
    #[error("it ends with `.`")]
    TrailingDot,
    #[error("it contains `..`")]
    DoubleDot,
    #[error("it contains `@{{`")]
    AtBrace,
    #[error("it is `@`")]
    LoneAt,
    #[error("it is `HEAD`")]
    Head,
    #[error("it contains {0}")]
    BadChar(&'static str),
}

/// The longest ref or branch name accepted.
pub const MAX_REF: usize = 256;

/// `git check-ref-format` on a full ref name (`refs/heads/main`, `refs/pull/7/head`).
/// The rules, from git's documentation: no component starts with `.` or ends with
/// `.lock`; no `..`; no control character, space, `~`, `^`, `:`, `?`, `*`, `[` or `\`; no
/// leading or trailing `/` and no `//`; no trailing `.`; no `@{`; not `@` alone.
pub fn check_ref_format(name: &str) -> Result<(), RefError> {
    if name.is_empty() {
        return Err(RefError::Empty);
    }
    if name.len() > MAX_REF {
        return Err(RefError::TooLong);
    }
    if name.starts_with('-') {
        return Err(RefError::LeadingDash);
    }
    if name == "@" {
        return Err(RefError::LoneAt);
    }
    for c in name.chars() {
        let bad = match c {
            c if c.is_ascii_control() => "a control character",
            ' ' => "a space",
            '~' => "`~`",
            '^' => "`^`",
            ':' => "`:`",
            '?' => "`?`",
            '*' => "`*`",
            '[' => "`[`",
            '\\' => "`\\`",
            _ => continue,
        };
        return Err(RefError::BadChar(bad));
    }
    if name.contains("..") {
        return Err(RefError::DoubleDot);
    }
    if name.contains("@{") {
        return Err(RefError::AtBrace);
    }
    if name.ends_with('.') {
        return Err(RefError::TrailingDot);
    }
    for component in name.split('/') {
        if component.is_empty() {
            return Err(RefError::EmptyComponent);
        }
        if component.starts_with('.') {
            return Err(RefError::DotComponent);
        }
        if component.ends_with(".lock") {
            return Err(RefError::LockComponent);
        }
    }
    Ok(())
}

/// A full ref a delivery asks valet to fetch: under `refs/` and as git accepts it.
pub fn check_full_ref(name: &str) -> Result<(), RefError> {
    check_ref_format(name)?;
    if !name.starts_with("refs/") {
        return Err(RefError::NotUnderRefs);
    }
    Ok(())
}

/// A branch name as `git check-ref-format --branch` accepts it: `refs/heads/<name>` is a
/// valid ref, the name does not start with `-` and is not `HEAD`.
pub fn check_branch_name(name: &str) -> Result<(), RefError> {
    if name.is_empty() {
        return Err(RefError::Empty);
    }
    if name.starts_with('-') {
        return Err(RefError::LeadingDash);
    }
    if name == "HEAD" {
        return Err(RefError::Head);
    }
    if name.len() > MAX_REF {
        return Err(RefError::TooLong);
    }
    check_ref_format(&format!("refs/heads/{name}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn githubs_documented_test_vector() {
        // https://docs.github.com/en/webhooks/using-webhooks/validating-webhook-deliveries
        let secret = b"It's a Secret to Everybody";
        let body = b"Hello, World!";
        let sig = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";
        assert!(hmac_sha256_valid(secret, body, sig));
        assert_eq!(hmac_sha256_header(secret, body), sig);
        assert!(!hmac_sha256_valid(secret, b"Hello, World?", sig));
        assert!(!hmac_sha256_valid(b"another secret", body, sig));
        assert!(!hmac_sha256_valid(
            secret,
            body,
            &sig.replace("sha256=", "sha1=")
        ));
        assert!(!hmac_sha256_valid(secret, body, "sha256=757107"));
        assert!(!hmac_sha256_valid(secret, body, ""));
    }

    #[test]
    fn tokens() {
        assert!(token_matches("abc", "abc"));
        assert!(!token_matches("abc", "abd"));
        assert!(!token_matches("abc", "abcd"));
        assert!(!token_matches("abc", ""));
    }

    #[test]
    fn github_push_and_pull_request() {
        let push = br#"{"ref":"refs/heads/main","after":"0123abcd","repository":{"name":"app","full_name":"org/app"}}"#;
        let d = github("push", push).unwrap();
        assert_eq!(d.repo_keys[0], "org/app");
        let Action::Build(t) = d.action else {
            panic!("{d:?}")
        };
        assert_eq!(
            (t.branch.as_str(), t.commit.as_deref()),
            ("main", Some("0123abcd"))
        );
        let tag = br#"{"ref":"refs/tags/v1","after":"0123","repository":{"name":"app"}}"#;
        assert!(matches!(
            github("push", tag).unwrap().action,
            Action::Ignore(_)
        ));
        let deleted = br#"{"ref":"refs/heads/x","after":"0000000000","deleted":true,"repository":{"name":"app"}}"#;
        assert!(matches!(
            github("push", deleted).unwrap().action,
            Action::Ignore(_)
        ));
        let pr = br#"{"action":"opened","number":7,"pull_request":{"head":{"ref":"feat","sha":"beef"},"base":{"ref":"main"}},"repository":{"name":"app"}}"#;
        let Action::Build(t) = github("pull_request", pr).unwrap().action else {
            panic!()
        };
        assert_eq!(t.branch, "PR-7");
        assert_eq!(t.filter_branch, "main");
        assert_eq!(t.git_ref.as_deref(), Some("refs/pull/7/head"));
        let closed = String::from_utf8_lossy(pr).replace("opened", "closed");
        assert!(matches!(
            github("pull_request", closed.as_bytes()).unwrap().action,
            Action::Ignore(_)
        ));
        assert!(github("push", b"{").is_err());
    }

    #[test]
    fn gitlab_push_and_merge_request() {
        let push = br#"{"object_kind":"push","ref":"refs/heads/dev","checkout_sha":"abc1","project":{"name":"app","path_with_namespace":"grp/app"}}"#;
        let d = gitlab(push).unwrap();
        assert_eq!(d.repo_keys[0], "grp/app");
        assert!(matches!(d.action, Action::Build(ref t) if t.branch == "dev"));
        let mr = br#"{"object_kind":"merge_request","project":{"name":"app"},"object_attributes":{"iid":3,"action":"update","source_branch":"f","target_branch":"main","last_commit":{"id":"c0ffee"}}}"#;
        // An update without new commits (no oldrev) does not build.
        assert!(matches!(gitlab(mr).unwrap().action, Action::Ignore(_)));
        let opened = String::from_utf8_lossy(mr).replace("update", "open");
        let Action::Build(t) = gitlab(opened.as_bytes()).unwrap().action else {
            panic!()
        };
        assert_eq!(
            (t.branch.as_str(), t.commit.as_deref()),
            ("MR-3", Some("c0ffee"))
        );
    }

    #[test]
    fn parameters_are_bounded_in_number_and_size() {
        let mut p = serde_json::Map::new();
        p.insert("VERSION".into(), "1.2".into());
        assert!(check_params(&p).is_ok());
        p.insert("BIG".into(), "x".repeat(MAX_PARAM_VALUE + 1).into());
        let e = check_params(&p).unwrap_err().to_string();
        assert!(e.contains("BIG") && e.contains("64 KiB"), "{e}");
        p.remove("BIG");
        p.insert("N".repeat(MAX_PARAM_NAME + 1), "x".into());
        assert!(check_params(&p).is_err());
        let many: serde_json::Map<_, _> = (0..=MAX_PARAMS)
            .map(|i| (format!("P{i}"), serde_json::Value::from(i)))
            .collect();
        let e = check_params(&many).unwrap_err().to_string();
        assert!(e.contains("at most 100"), "{e}");
    }

    #[test]
    fn generic_payloads() {
        let d =
            generic(br#"{"repository":"app","branch":"main","parameters":{"N":3,"FAST":true}}"#)
                .unwrap();
        assert!(matches!(d.action, Action::Build(ref t) if t.params.len() == 2));
        assert!(generic(br#"{"repository":"app","branch":"main","extra":1}"#).is_err());
        assert!(
            generic(br#"{"repository":"app","branch":"main","parameters":{"A":[1]}}"#).is_err()
        );
        assert!(generic(br#"{"repository":"app","branch":" "}"#).is_err());
    }

    #[test]
    fn git_names() {
        assert!(safe_git_name("refs/pull/7/head"));
        assert!(safe_git_name("0123abcd"));
        assert!(!safe_git_name("--upload-pack=evil"));
        assert!(!safe_git_name("a b"));
        assert!(!safe_git_name("a/../b"));
    }

    /// The examples of git's own documentation and test suite (`git help
    /// check-ref-format`, t1402-check-ref-format.sh), as full refs and as branch names.
    #[test]
    fn refs_follow_git_check_ref_format() {
        let valid = [
            "refs/heads/main",
            "refs/heads/feature/x",
            "refs/pull/7/head",
            "refs/merge-requests/3/head",
            "refs/tags/v1.2.3",
            "refs/heads/foo@bar",
            "refs/heads/a.b",
            "refs/heads/ünïcode",
            "refs/heads/x.lockx",
            "refs/heads/@x",
        ];
        for r in valid {
            assert_eq!(check_full_ref(r), Ok(()), "{r}");
        }
        let invalid = [
            ("", RefError::Empty),
            ("refs/heads/", RefError::EmptyComponent),
            ("/refs/heads/a", RefError::EmptyComponent),
            ("refs/heads//a", RefError::EmptyComponent),
            ("refs/heads/a/", RefError::EmptyComponent),
            ("refs/heads/a.", RefError::TrailingDot),
            ("refs/heads/x.lock", RefError::LockComponent),
            ("refs/heads/x.lock/y", RefError::LockComponent),
            ("refs/heads/.hidden", RefError::DotComponent),
            ("refs/heads/a/.b", RefError::DotComponent),
            ("refs/heads/a..b", RefError::DoubleDot),
            ("refs/heads/a@{1}", RefError::AtBrace),
            ("@", RefError::LoneAt),
            ("refs/heads/a b", RefError::BadChar("a space")),
            ("refs/heads/a\tb", RefError::BadChar("a control character")),
            ("refs/heads/a\nb", RefError::BadChar("a control character")),
            (
                "refs/heads/a\u{7f}b",
                RefError::BadChar("a control character"),
            ),
            ("refs/heads/a~1", RefError::BadChar("`~`")),
            ("refs/heads/a^", RefError::BadChar("`^`")),
            ("refs/heads/a:b", RefError::BadChar("`:`")),
            ("refs/heads/a?", RefError::BadChar("`?`")),
            ("refs/heads/a*", RefError::BadChar("`*`")),
            ("refs/heads/a[b", RefError::BadChar("`[`")),
            ("refs/heads/a\\b", RefError::BadChar("`\\`")),
            ("-refs/heads/a", RefError::LeadingDash),
            ("heads/main", RefError::NotUnderRefs),
        ];
        for (r, why) in invalid {
            assert_eq!(check_full_ref(r), Err(why.clone()), "{r:?}");
        }
        assert_eq!(
            check_full_ref(&format!("refs/heads/{}", "a".repeat(MAX_REF))),
            Err(RefError::TooLong)
        );

        for b in ["main", "feature/x", "PR-12", "MR-3", "release-1.0", "a@b"] {
            assert_eq!(check_branch_name(b), Ok(()), "{b}");
        }
        let bad_branches = [
            ("", RefError::Empty),
            ("-x", RefError::LeadingDash),
            ("--upload-pack=evil", RefError::LeadingDash),
            ("HEAD", RefError::Head),
            ("a//b", RefError::EmptyComponent),
            ("a/", RefError::EmptyComponent),
            ("/a", RefError::EmptyComponent),
            ("x.lock", RefError::LockComponent),
            ("..", RefError::DoubleDot),
            ("a..b", RefError::DoubleDot),
            ("a@{u}", RefError::AtBrace),
            ("a.", RefError::TrailingDot),
            (".a", RefError::DotComponent),
            ("a\u{1}b", RefError::BadChar("a control character")),
        ];
        for (b, why) in bad_branches {
            assert_eq!(check_branch_name(b), Err(why.clone()), "{b:?}");
        }
        // Every message says what is wrong in words.
        assert_eq!(RefError::AtBrace.to_string(), "it contains `@{`",);
    }
}
