//! `valet-dsl`: the pipeline language — grammar, spanned AST and diagnostics.
//!
//! Start at [`parse`]: text in, [`ast::Script`] (or [`Diagnostic`]s) out. The grammar lives
//! in `grammar/pipeline.pest` at the top of the repository. This crate is pure: no I/O,
//! no async, no global state; limits on size and nesting keep it safe on any input.

pub mod ast;
pub mod diagnostic;
mod fast;
mod names;
mod parser;
mod prescan;
pub mod span;

pub use diagnostic::{Diagnostic, Severity, render_all};
pub use names::rule_name;
pub use parser::{Limits, ParseOutput, Rule, parse, parse_fast, parse_pest, parse_with};
pub use span::{LineCol, SourceFile, Span};
