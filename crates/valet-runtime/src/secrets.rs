//! Credentials for `withCredentials` and `credentials()`, and the masking of their values.
//!
//! Where the values come from, first match wins:
//! - a secrets file given to `valet run --secrets FILE`, in one of two formats:
//!   - JSON: `{"npm-token": "s3cr3t", "deploy": {"username": "bot", "password": "pw"},
//!     "ssh": {"username": "git", "privateKey": "-----BEGIN…", "passphrase": ""}}`; a
//!     `file` credential is a string (the file's content) or `{"path": "/some/file"}`;
//!   - lines: `id=value` (a secret text), `id.field=value` (a field of a credential, e.g.
//!     `deploy.username=bot`, `deploy.password=pw`); `#` starts a comment line.
//! - environment variables: `VALET_SECRET_<ID>` (a secret text, or a file's content) and
//!   `VALET_SECRET_<ID>_<FIELD>` (`USERNAME`, `PASSWORD`, `PRIVATEKEY`, `PASSPHRASE`, `PATH`),
//!   where `<ID>` is the credential id in upper case with every other character than a
//!   letter or digit turned into `_` (`npm-token` → `VALET_SECRET_NPM_TOKEN`).
//!
//! Every value bound by a build, and its base64 form, is replaced by `****` in every output
//! event, also when it arrives split across chunks ([`StreamMasker`]).

use base64::Engine as _;
use indexmap::IndexMap;
use std::sync::{Arc, RwLock};

/// One credential: its fields (`value`, `username`, `password`, `privateKey`, `passphrase`, `path`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Credential {
    pub fields: IndexMap<String, String>,
}

impl Credential {
    /// A field, looked up without regard to case.
    pub fn field(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The value of a secret text (or a file's content).
    pub fn secret(&self) -> Option<&str> {
        self.field("value")
            .or_else(|| self.field("secret"))
            .or_else(|| self.field("text"))
    }
}

/// Where credentials come from: a file's entries, then the environment.
#[derive(Clone, Default)]
pub struct Secrets {
    entries: IndexMap<String, Credential>,
    env: IndexMap<String, String>,
}

/// Names only: a configuration or options printed for debugging show no value.
impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Secrets")
            .field("entries", &self.entries.keys().collect::<Vec<_>>())
            .field("env", &self.env.keys().collect::<Vec<_>>())
            .finish()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SecretsError {
    #[error("cannot read the secrets file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("the secrets file {path} is not valid: {message}")]
    Invalid { path: String, message: String },
}

fn env_key(id: &str) -> String {
    id.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect()
}

impl Secrets {
    /// Credentials from `VALET_SECRET_*` in `env` only.
    pub fn from_env(env: impl IntoIterator<Item = (String, String)>) -> Self {
        Secrets {
            entries: IndexMap::new(),
            env: env
                .into_iter()
                .filter(|(k, _)| k.starts_with("VALET_SECRET_"))
                .collect(),
        }
    }

    /// Adds the entries of a secrets file (JSON or `id.field=value` lines).
    pub fn load_file(&mut self, path: &std::path::Path) -> Result<(), SecretsError> {
        let text = std::fs::read_to_string(path).map_err(|source| SecretsError::Read {
            path: path.display().to_string(),
            source,
        })?;
        self.load_str(&text)
            .map_err(|message| SecretsError::Invalid {
                path: path.display().to_string(),
                message,
            })
    }

    pub fn load_str(&mut self, text: &str) -> Result<(), String> {
        let trimmed = text.trim_start();
        if trimmed.starts_with('{') {
            let json: serde_json::Value = serde_json::from_str(text).map_err(|e| e.to_string())?;
            let obj = json
                .as_object()
                .ok_or("the top level must be an object of credential ids")?;
            for (id, v) in obj {
                let mut c = Credential::default();
                match v {
                    serde_json::Value::String(s) => {
                        c.fields.insert("value".into(), s.clone());
                    }
                    serde_json::Value::Object(fields) => {
                        for (k, fv) in fields {
                            let s = match fv {
                                serde_json::Value::String(s) => s.clone(),
                                other => other.to_string(),
                            };
                            c.fields.insert(k.clone(), s);
                        }
                    }
                    other => {
                        c.fields.insert("value".into(), other.to_string());
                    }
                }
                self.entries.insert(id.clone(), c);
            }
            return Ok(());
        }
        for (n, line) in text.lines().enumerate() {
            let line = line.trim_end_matches('\r');
            if line.trim().is_empty() || line.trim_start().starts_with('#') {
                continue;
            }
            let Some((key, value)) = line.split_once('=') else {
                return Err(format!(
                    "line {}: expected `id=value` or `id.field=value`",
                    n + 1
                ));
            };
            let key = key.trim();
            let (id, field) = match key.split_once('.') {
                Some((id, field)) => (id, field),
                None => (key, "value"),
            };
            self.entries
                .entry(id.to_string())
                .or_default()
                .fields
                .insert(field.to_string(), value.to_string());
        }
        Ok(())
    }

    /// The credential `id`, or `None` when neither the file nor the environment has it.
    pub fn get(&self, id: &str) -> Option<Credential> {
        if let Some(c) = self.entries.get(id) {
            return Some(c.clone());
        }
        let prefix = format!("VALET_SECRET_{}", env_key(id));
        let mut c = Credential::default();
        if let Some(v) = self.env.get(&prefix) {
            c.fields.insert("value".into(), v.clone());
        }
        for field in ["username", "password", "privateKey", "passphrase", "path"] {
            if let Some(v) = self
                .env
                .get(&format!("{prefix}_{}", field.to_ascii_uppercase()))
            {
                c.fields.insert(field.into(), v.clone());
            }
        }
        if c.fields.is_empty() { None } else { Some(c) }
    }
}

const MASK: &str = "****";

/// The set of values to mask, shared by the whole build.
/// The shortest line of a multi-line secret that is masked on its own.
const MIN_LINE_SECRET: usize = 4;

#[derive(Debug, Clone, Default)]
pub struct Masker {
    patterns: Arc<RwLock<Vec<Vec<u8>>>>,
}

impl Masker {
    /// Masks `value` and its base64 form from now on.
    pub fn add(&self, value: &str) {
        let value = value.trim_end_matches(['\n', '\r']);
        if value.is_empty() {
            return;
        }
        let mut p = self.patterns.write().unwrap_or_else(|e| e.into_inner());
        let b64 = base64::engine::general_purpose::STANDARD.encode(value.as_bytes());
        let mut add = |v: Vec<u8>| {
            if !p.contains(&v) {
                p.push(v);
            }
        };
        add(value.as_bytes().to_vec());
        add(b64.into_bytes());
        // A multi-line secret (a key, a certificate) is often printed a line at a time
        // (`head -1`, `sed`, CRLF endings): each of its lines is a secret of its own, except
        // the very short ones, which would mask ordinary text.
        if value.contains('\n') {
            for line in value.lines() {
                let line = line.trim_end_matches('\r');
                if line.trim().len() >= MIN_LINE_SECRET {
                    add(line.as_bytes().to_vec());
                }
            }
        }
        // Longest first, so that a secret containing another is masked whole.
        p.sort_by_key(|v| std::cmp::Reverse(v.len()));
    }

    pub fn is_empty(&self) -> bool {
        self.patterns.read().map(|p| p.is_empty()).unwrap_or(true)
    }

    fn replace(&self, buf: &[u8]) -> Vec<u8> {
        let p = self.patterns.read().unwrap_or_else(|e| e.into_inner());
        let mut out = buf.to_vec();
        for pat in p.iter() {
            out = replace_all(&out, pat, MASK.as_bytes());
        }
        out
    }

    /// The longest proper prefix of a pattern that `buf` ends with.
    fn pending_len(&self, buf: &[u8]) -> usize {
        let p = self.patterns.read().unwrap_or_else(|e| e.into_inner());
        let mut best = 0;
        for pat in p.iter() {
            let max = (pat.len() - 1).min(buf.len());
            for k in (best + 1..=max).rev() {
                if buf.ends_with(&pat[..k]) {
                    best = k;
                    break;
                }
            }
        }
        best
    }

    /// Masks a whole message.
    pub fn mask_str(&self, s: &str) -> String {
        if self.is_empty() {
            return s.to_string();
        }
        String::from_utf8_lossy(&self.replace(s.as_bytes())).into_owned()
    }
}

fn replace_all(hay: &[u8], needle: &[u8], with: &[u8]) -> Vec<u8> {
    if needle.is_empty() || hay.len() < needle.len() {
        return hay.to_vec();
    }
    let mut out = Vec::with_capacity(hay.len());
    let mut i = 0;
    while i < hay.len() {
        if hay[i..].starts_with(needle) {
            out.extend_from_slice(with);
            i += needle.len();
        } else {
            out.push(hay[i]);
            i += 1;
        }
    }
    out
}

/// Masks one output stream that arrives in chunks: holds back the end of a chunk while it
/// could be the start of a secret (and an incomplete UTF-8 character).
#[derive(Debug, Default)]
pub struct StreamMasker {
    pending: Vec<u8>,
    /// The text shown so far ended inside a line (for `timestamps`, which stamps line starts).
    pub(crate) mid_line: bool,
}

impl StreamMasker {
    /// The text that can be shown now.
    pub fn push(&mut self, masker: &Masker, chunk: &[u8]) -> String {
        self.pending.extend_from_slice(chunk);
        let buf = std::mem::take(&mut self.pending);
        let replaced = if masker.is_empty() {
            buf
        } else {
            masker.replace(&buf)
        };
        let mut keep = if masker.is_empty() {
            0
        } else {
            masker.pending_len(&replaced)
        };
        let cut = replaced.len() - keep;
        // Do not split a UTF-8 character.
        let tail = incomplete_utf8_tail(&replaced[..cut]);
        keep += tail;
        let cut = replaced.len() - keep;
        self.pending = replaced[cut..].to_vec();
        String::from_utf8_lossy(&replaced[..cut]).into_owned()
    }

    /// What is left at the end of the stream.
    pub fn finish(&mut self, masker: &Masker) -> String {
        let buf = std::mem::take(&mut self.pending);
        String::from_utf8_lossy(&masker.replace(&buf)).into_owned()
    }
}

fn incomplete_utf8_tail(b: &[u8]) -> usize {
    // Look back at most 3 bytes for the start of a multi-byte character that is cut short.
    for back in 1..=3.min(b.len()) {
        let c = b[b.len() - back];
        if c & 0b1100_0000 == 0b1000_0000 {
            continue; // a continuation byte
        }
        let need = if c >= 0xF0 {
            4
        } else if c >= 0xE0 {
            3
        } else if c >= 0xC0 {
            2
        } else {
            1
        };
        return if need > back { back } else { 0 };
    }
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_across_chunks() {
        let m = Masker::default();
        m.add("secret");
        let mut s = StreamMasker::default();
        let mut out = String::new();
        for chunk in ["the sec", "r", "et is here: se", "cret", "!", " sec"] {
            out += &s.push(&m, chunk.as_bytes());
        }
        out += &s.finish(&m);
        assert_eq!(out, "the **** is here: ****! sec");
    }

    #[test]
    fn masks_base64() {
        let m = Masker::default();
        m.add("hunter2");
        assert_eq!(m.mask_str("x aHVudGVyMg== y hunter2"), "x **** y ****");
    }

    #[test]
    fn does_not_hold_back_without_a_prefix() {
        let m = Masker::default();
        m.add("secret");
        let mut s = StreamMasker::default();
        assert_eq!(s.push(&m, b"hello\n"), "hello\n");
        assert_eq!(s.push(&m, b"abc s"), "abc ");
    }

    #[test]
    fn utf8_split() {
        let m = Masker::default();
        let mut s = StreamMasker::default();
        let bytes = "é".as_bytes();
        assert_eq!(s.push(&m, &bytes[..1]), "");
        assert_eq!(s.push(&m, &bytes[1..]), "é");
    }

    #[test]
    fn reads_both_file_formats() {
        let mut s = Secrets::default();
        s.load_str("# c\ntoken=abc\ndeploy.username=bot\ndeploy.password=pw\n")
            .unwrap();
        assert_eq!(s.get("token").unwrap().secret(), Some("abc"));
        assert_eq!(s.get("deploy").unwrap().field("password"), Some("pw"));
        let mut s = Secrets::default();
        s.load_str(r#"{"a": "x", "b": {"username": "u", "password": "p"}}"#)
            .unwrap();
        assert_eq!(s.get("a").unwrap().secret(), Some("x"));
        assert_eq!(s.get("b").unwrap().field("username"), Some("u"));
        let s = Secrets::from_env([("VALET_SECRET_NPM_TOKEN".to_string(), "t".to_string())]);
        assert_eq!(s.get("npm-token").unwrap().secret(), Some("t"));
    }
}
