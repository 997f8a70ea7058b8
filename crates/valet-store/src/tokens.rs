//! API tokens: what a caller of the controller's API may do.
//!
//! A token is 256 random bits, shown once when it is created (`valet token create`); the
//! store keeps only its SHA-256 digest, so a copy of the database gives no access. A token
//! is found by its digest: the secret is high-entropy, so a plain digest is enough (no
//! password hashing), and the comparison is an index look-up, not a byte loop that could
//! leak through timing.

use std::io::Read as _;

use rusqlite::{OptionalExtension as _, params};
use serde::Serialize;
use sha2::{Digest as _, Sha256};

use crate::{Store, StoreError};

/// What a token allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// Builds, logs, events, repositories, metrics and the build page.
    Read,
    /// Starting builds through the API (`POST /api/repos/R/builds`).
    Trigger,
    /// Aborting builds (`POST /api/builds/N/cancel`).
    Cancel,
}

impl Scope {
    pub const ALL: [Scope; 3] = [Scope::Read, Scope::Trigger, Scope::Cancel];

    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Read => "read",
            Scope::Trigger => "trigger",
            Scope::Cancel => "cancel",
        }
    }

    /// Reads `read`, `trigger`, `cancel` or `all` (which is every scope).
    pub fn parse_list(s: &str) -> Result<Vec<Scope>, String> {
        let mut out = Vec::new();
        for word in s.split([',', ' ']).filter(|w| !w.is_empty()) {
            match word {
                "read" => out.push(Scope::Read),
                "trigger" => out.push(Scope::Trigger),
                "cancel" => out.push(Scope::Cancel),
                "all" => out.extend(Scope::ALL),
                other => {
                    return Err(format!(
                        "unknown scope `{other}`: the scopes are read, trigger, cancel (or all)"
                    ));
                }
            }
        }
        if out.is_empty() {
            return Err("no scope given: the scopes are read, trigger, cancel (or all)".into());
        }
        out.sort();
        out.dedup();
        Ok(out)
    }
}

/// A token as listed: never its secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TokenRow {
    pub name: String,
    pub scopes: Vec<Scope>,
    pub created_ms: i64,
    pub last_used_ms: Option<i64>,
}

/// The prefix of every token, so one found in a log or a paste is recognised.
pub const TOKEN_PREFIX: &str = "valet_";

/// The longest token name: names appear in logs and listings.
pub const MAX_NAME: usize = 64;

/// The digest under which a token is stored.
pub fn digest(secret: &str) -> Vec<u8> {
    Sha256::digest(secret.as_bytes()).to_vec()
}

fn new_secret() -> Result<String, std::io::Error> {
    let mut bytes = [0u8; 32];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    let mut s = String::with_capacity(TOKEN_PREFIX.len() + 64);
    s.push_str(TOKEN_PREFIX);
    for b in bytes {
        s.push_str(&format!("{b:02x}"));
    }
    Ok(s)
}

fn scopes_text(scopes: &[Scope]) -> String {
    scopes
        .iter()
        .map(|s| s.as_str())
        .collect::<Vec<_>>()
        .join(",")
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'@'))
}

/// Why a token could not be created.
#[derive(Debug, thiserror::Error)]
pub enum CreateTokenError {
    #[error("a token name is 1 to {MAX_NAME} letters, digits, `-`, `_`, `.` or `@`; `{0}` is not")]
    BadName(String),
    #[error("a token named `{0}` exists: revoke it first or choose another name")]
    Exists(String),
    #[error("no random bytes: {0}")]
    Random(std::io::Error),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl Store {
    /// Creates a token; returns its secret, which is not kept.
    pub fn create_token(
        &self,
        name: &str,
        scopes: &[Scope],
        now_ms: i64,
    ) -> Result<String, CreateTokenError> {
        let secret = new_secret().map_err(CreateTokenError::Random)?;
        self.add_token_digest(name, &digest(&secret), scopes, now_ms)?;
        Ok(secret)
    }

    /// Stores a token by its digest (for a secret made elsewhere, e.g. a deployment's).
    pub fn add_token_digest(
        &self,
        name: &str,
        digest: &[u8],
        scopes: &[Scope],
        now_ms: i64,
    ) -> Result<(), CreateTokenError> {
        if !valid_name(name) {
            return Err(CreateTokenError::BadName(name.chars().take(80).collect()));
        }
        let added = self.write(|c| {
            Ok(c.execute(
                "INSERT INTO api_tokens (name, digest, scopes, created_ms) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT DO NOTHING",
                params![name, digest, scopes_text(scopes), now_ms],
            )?)
        })?;
        if added == 0 {
            return Err(CreateTokenError::Exists(name.to_string()));
        }
        Ok(())
    }

    /// The name and scopes of the token whose secret is `secret`, `None` when there is none
    /// (unknown or revoked). Records when it was last used, at most once a minute.
    pub fn authenticate(
        &self,
        secret: &str,
        now_ms: i64,
    ) -> Result<Option<(String, Vec<Scope>)>, StoreError> {
        if !secret.starts_with(TOKEN_PREFIX) || secret.len() > 256 {
            return Ok(None);
        }
        let d = digest(secret);
        let found = self.read(|c| {
            Ok(c.query_row(
                "SELECT name, scopes, last_used_ms FROM api_tokens WHERE digest = ?1",
                params![d],
                |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, Option<i64>>(2)?,
                    ))
                },
            )
            .optional()?)
        })?;
        let Some((name, scopes, last)) = found else {
            return Ok(None);
        };
        if last.is_none_or(|l| now_ms - l >= 60_000) {
            self.write(|c| {
                c.execute(
                    "UPDATE api_tokens SET last_used_ms = ?1 WHERE name = ?2",
                    params![now_ms, name],
                )?;
                Ok(())
            })?;
        }
        let scopes = Scope::parse_list(&scopes).unwrap_or_default();
        Ok(Some((name, scopes)))
    }

    /// Every token, by name.
    pub fn list_tokens(&self) -> Result<Vec<TokenRow>, StoreError> {
        self.read(|c| {
            let mut st = c.prepare(
                "SELECT name, scopes, created_ms, last_used_ms FROM api_tokens ORDER BY name",
            )?;
            let rows = st.query_map([], |r| {
                Ok(TokenRow {
                    name: r.get(0)?,
                    scopes: Scope::parse_list(&r.get::<_, String>(1)?).unwrap_or_default(),
                    created_ms: r.get(2)?,
                    last_used_ms: r.get(3)?,
                })
            })?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
    }

    /// Revokes the token named `name`; false when there is none.
    pub fn revoke_token(&self, name: &str) -> Result<bool, StoreError> {
        self.write(|c| Ok(c.execute("DELETE FROM api_tokens WHERE name = ?1", params![name])? > 0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, Store) {
        let d = tempfile::tempdir().unwrap();
        let s = Store::open(d.path()).unwrap();
        (d, s)
    }

    #[test]
    fn a_token_is_shown_once_and_kept_only_as_its_digest() {
        let (d, s) = store();
        let secret = s.create_token("ci", &[Scope::Read], 1_000).unwrap();
        assert!(secret.starts_with(TOKEN_PREFIX) && secret.len() == TOKEN_PREFIX.len() + 64);
        let other = s.create_token("ops", &[Scope::Read], 1_000).unwrap();
        assert_ne!(secret, other);
        drop(s);
        for f in ["valet.db", "valet.db-wal"] {
            let bytes = std::fs::read(d.path().join(f)).unwrap_or_default();
            let hex = &secret[TOKEN_PREFIX.len()..];
            assert!(
                !bytes.windows(hex.len()).any(|w| w == hex.as_bytes()),
                "{f} holds the secret"
            );
        }
    }

    #[test]
    fn a_token_authenticates_with_its_scopes_until_revoked() {
        let (_d, s) = store();
        let secret = s
            .create_token("deploy", &[Scope::Trigger, Scope::Read], 1_000)
            .unwrap();
        let (name, scopes) = s.authenticate(&secret, 2_000).unwrap().unwrap();
        assert_eq!(name, "deploy");
        assert_eq!(scopes, vec![Scope::Read, Scope::Trigger]);
        assert_eq!(s.list_tokens().unwrap()[0].last_used_ms, Some(2_000));
        // A token one character off, a truncated one, one without the prefix: nothing.
        let mut wrong = secret.clone();
        wrong.pop();
        wrong.push('x');
        for bad in [
            wrong.as_str(),
            &secret[..20],
            &secret[TOKEN_PREFIX.len()..],
            "",
        ] {
            assert!(s.authenticate(bad, 2_000).unwrap().is_none(), "{bad}");
        }
        assert!(s.revoke_token("deploy").unwrap());
        assert!(!s.revoke_token("deploy").unwrap());
        assert!(s.authenticate(&secret, 3_000).unwrap().is_none());
    }

    #[test]
    fn names_and_scopes_are_checked() {
        let (_d, s) = store();
        for bad in ["", "a b", "x\ny", &"n".repeat(MAX_NAME + 1), "<script>"] {
            assert!(
                matches!(
                    s.create_token(bad, &[Scope::Read], 0),
                    Err(CreateTokenError::BadName(_))
                ),
                "{bad:?}"
            );
        }
        s.create_token("a", &[Scope::Read], 0).unwrap();
        assert!(matches!(
            s.create_token("a", &[Scope::Read], 0),
            Err(CreateTokenError::Exists(_))
        ));
        assert_eq!(Scope::parse_list("all").unwrap(), Scope::ALL.to_vec());
        assert_eq!(
            Scope::parse_list("cancel, read").unwrap(),
            vec![Scope::Read, Scope::Cancel]
        );
        assert!(Scope::parse_list("admin").unwrap_err().contains("`admin`"));
        assert!(Scope::parse_list("").is_err());
    }
}
