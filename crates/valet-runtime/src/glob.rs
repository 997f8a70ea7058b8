//! Ant-style file patterns, as `archiveArtifacts`, `stash` and `junit` take them:
//! `**/*.jar, build/libs/` (comma- or space-separated; `**` crosses directories; a pattern
//! ending in `/` means everything under it).

use crate::interp::{R, err};

pub(crate) struct AntSet {
    res: Vec<regex::Regex>,
}

impl AntSet {
    pub(crate) fn new(patterns: &str) -> R<AntSet> {
        let mut res = Vec::new();
        for p in patterns
            .split([',', ' ', '\n'])
            .map(str::trim)
            .filter(|p| !p.is_empty())
        {
            res.push(regex::Regex::new(&to_regex(p)).map_err(|e| {
                err(
                    "java.lang.IllegalArgumentException",
                    format!("bad pattern `{p}`: {e}"),
                )
            })?);
        }
        Ok(AntSet { res })
    }

    pub(crate) fn matches(&self, path: &str) -> bool {
        self.res.iter().any(|r| r.is_match(path))
    }
}

fn to_regex(p: &str) -> String {
    let mut p = p.trim_start_matches("./").to_string();
    if p.ends_with('/') {
        p.push_str("**");
    }
    let mut out = String::from("^");
    let chars: Vec<char> = p.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        match chars[i] {
            '*' if chars.get(i + 1) == Some(&'*') => {
                if chars.get(i + 2) == Some(&'/') {
                    out.push_str("(?:.*/)?");
                    i += 3;
                } else {
                    out.push_str(".*");
                    i += 2;
                }
                continue;
            }
            '*' => out.push_str("[^/]*"),
            '?' => out.push_str("[^/]"),
            c => out.push_str(&regex::escape(&c.to_string())),
        }
        i += 1;
    }
    out.push('$');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ant_patterns() {
        let s = AntSet::new("**/*.jar, docs/").unwrap();
        assert!(s.matches("a.jar"));
        assert!(s.matches("build/libs/a.jar"));
        assert!(s.matches("docs/x/y.md"));
        assert!(!s.matches("a.jar.txt"));
        let s = AntSet::new("*.txt").unwrap();
        assert!(s.matches("a.txt"));
        assert!(!s.matches("d/a.txt"));
        let s = AntSet::new("out/**").unwrap();
        assert!(s.matches("out/a/b"));
    }
}
