//! Diagnostics: what went wrong, where, and what to do about it.
//!
//! Every user mistake in a pipeline file is a [`Diagnostic`] with a primary span; the
//! rendered form (`file:line:col`, the source line, a caret, help) is what people read
//! and what the snapshot tests pin down.

use crate::span::{SourceFile, Span};
use serde::Serialize;
use std::fmt::Write as _;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Error,
    Warning,
    Note,
}

/// One problem found in a pipeline file.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Diagnostic {
    pub severity: Severity,
    /// A stable short code, e.g. `syntax`, `unknown-step`, `unsupported`.
    pub code: &'static str,
    pub message: String,
    pub span: Span,
    /// What the caret says, e.g. "expected a closing `)`".
    pub label: Option<String>,
    pub help: Option<String>,
}

impl Diagnostic {
    pub fn error(code: &'static str, span: Span, message: impl Into<String>) -> Self {
        Diagnostic {
            severity: Severity::Error,
            code,
            message: message.into(),
            span,
            label: None,
            help: None,
        }
    }

    pub fn warning(code: &'static str, span: Span, message: impl Into<String>) -> Self {
        Diagnostic {
            severity: Severity::Warning,
            code,
            message: message.into(),
            span,
            label: None,
            help: None,
        }
    }

    pub fn with_label(mut self, label: impl Into<String>) -> Self {
        self.label = Some(label.into());
        self
    }

    pub fn with_help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }

    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }

    /// Renders the diagnostic the way a compiler does:
    ///
    /// ```text
    /// error[syntax]: expected a closing `)`
    ///  --> Jenkinsfile:3:14
    ///   |
    /// 3 |     sh('make'
    ///   |              ^ expected `)` or `,`
    ///   = help: ...
    /// ```
    pub fn render(&self, file: &SourceFile) -> String {
        let pos = file.line_col(self.span.start as usize);
        let sev = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
            Severity::Note => "note",
        };
        let mut out = String::new();
        let _ = writeln!(out, "{sev}[{}]: {}", self.code, self.message);
        let _ = writeln!(out, " --> {}:{}:{}", file.name, pos.line, pos.col);
        let line_text = file.line_text(pos.line);
        let gutter = pos.line.to_string().len();
        let pad = " ".repeat(gutter);
        // Tabs are shown as four spaces so the caret lines up.
        let shown: String = line_text.replace('\t', "    ");
        let prefix: String = line_text.chars().take(pos.col as usize - 1).collect();
        let mut caret_col = prefix.replace('\t', "    ").chars().count();
        let end_on_line = {
            let line_end = self.span.start as usize + (line_text.len() - prefix.len());
            (self.span.end as usize).min(line_end)
        };
        let width = file
            .text
            .get(self.span.start as usize..end_on_line.max(self.span.start as usize))
            .map(|s| s.chars().count())
            .unwrap_or(0)
            .clamp(1, 80);
        // Very long lines (generated code) are shown as a window around the caret.
        let shown: String = if shown.chars().count() > 120 {
            let from = caret_col.saturating_sub(60);
            let window: String = shown.chars().skip(from).take(120).collect();
            let lead = if from > 0 { "…" } else { "" };
            caret_col = caret_col - from + lead.chars().count();
            format!("{lead}{window}…")
        } else {
            shown
        };
        let _ = writeln!(out, "{pad} |");
        let _ = writeln!(out, "{} | {}", pos.line, shown.trim_end());
        let _ = write!(
            out,
            "{pad} | {}{}",
            " ".repeat(caret_col),
            "^".repeat(width)
        );
        if let Some(label) = &self.label {
            let _ = write!(out, " {label}");
        }
        out.push('\n');
        if let Some(help) = &self.help {
            let _ = writeln!(out, "{pad} = help: {help}");
        }
        out
    }
}

/// Renders a list of diagnostics, one after another, separated by blank lines.
pub fn render_all(diags: &[Diagnostic], file: &SourceFile) -> String {
    diags
        .iter()
        .map(|d| d.render(file))
        .collect::<Vec<_>>()
        .join("\n")
}
