//! Text → [`Script`]: runs the pest grammar, then turns its pairs into the spanned AST.
//!
//! pest stops at the first syntax error; that error becomes one [`Diagnostic`] whose
//! message says in words what was expected there. Problems found while building the tree
//! (a bad escape in a string, a number out of range) are collected and all reported.

use crate::ast::*;
use crate::diagnostic::Diagnostic;
use crate::fast;
use crate::names::rule_name;
use crate::prescan;
use crate::span::Span;
use pest::Parser as _;
use pest::iterators::{Pair, Pairs};

#[derive(pest_derive::Parser)]
#[grammar = "../../grammar/pipeline.pest"]
struct PipelineParser;

/// Bounds on what a pipeline file may be, each with its own message.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest file accepted, in bytes.
    pub max_bytes: usize,
    /// Deepest nesting of brackets, braces and `${…}`.
    pub max_depth: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_bytes: 1024 * 1024,
            max_depth: 256,
        }
    }
}

/// The result of parsing one file: the tree when the syntax is valid, and every
/// diagnostic found. A tree with error diagnostics must not be run.
#[derive(Debug)]
pub struct ParseOutput {
    pub script: Option<Script>,
    pub diagnostics: Vec<Diagnostic>,
}

impl ParseOutput {
    pub fn has_errors(&self) -> bool {
        self.diagnostics.iter().any(Diagnostic::is_error)
    }
}

/// Parses a pipeline file with the default [`Limits`].
pub fn parse(text: &str) -> ParseOutput {
    parse_with(text, Limits::default())
}

pub fn parse_with(text: &str, limits: Limits) -> ParseOutput {
    if text.len() > limits.max_bytes {
        let d = Diagnostic::error(
            "limit",
            Span::new(0, 0),
            format!("the pipeline file is {} bytes, more than the limit of {} bytes", text.len(), limits.max_bytes),
        )
        .with_help("a pipeline this large is likely generated; keep generated code out of the pipeline file");
        return ParseOutput {
            script: None,
            diagnostics: vec![d],
        };
    }
    if let Err(d) = prescan::check_nesting(text, limits.max_depth) {
        return ParseOutput {
            script: None,
            diagnostics: vec![d],
        };
    }
    if let Some(script) = fast::parse(text) {
        return ParseOutput {
            script: Some(script),
            diagnostics: Vec::new(),
        };
    }
    parse_pest(text)
}

/// The fast path alone: the tree, or `None` where it leaves the file to pest. For the
/// differential test.
#[doc(hidden)]
pub fn parse_fast(text: &str) -> Option<Script> {
    fast::parse(text)
}

/// The pest grammar and its builder alone, on a text already within the limits: the
/// specification the fast path is checked against, and the path that reports syntax errors.
#[doc(hidden)]
pub fn parse_pest(text: &str) -> ParseOutput {
    let pairs = match PipelineParser::parse(Rule::file, text) {
        Ok(p) => p,
        Err(_) => {
            // Parse again with attempt tracking on, which costs time only on this failing path.
            pest::set_error_detail(true);
            let err = PipelineParser::parse(Rule::file, text).err();
            pest::set_error_detail(false);
            let diag = match err {
                Some(e) => syntax_error(text, e),
                None => Diagnostic::error(
                    "syntax",
                    Span::new(0, 0),
                    "the pipeline could not be parsed",
                ),
            };
            return ParseOutput {
                script: None,
                diagnostics: vec![diag],
            };
        }
    };
    let mut b = Builder {
        src: text,
        diags: Vec::new(),
    };
    let file = pairs.into_iter().next().expect("file rule");
    let span = span_of(&file);
    let mut stmts = Vec::new();
    for p in file.into_inner() {
        match p.as_rule() {
            Rule::package | Rule::EOI => {}
            _ => stmts.push(b.stmt(p)),
        }
    }
    ParseOutput {
        script: Some(Script { stmts, span }),
        diagnostics: b.diags,
    }
}

fn span_of(p: &Pair<'_, Rule>) -> Span {
    let s = p.as_span();
    Span::new(s.start(), s.end())
}

/// Turns pest's error into a diagnostic that speaks of strings, names and brackets,
/// never of rule identifiers.
fn syntax_error(text: &str, e: pest::error::Error<Rule>) -> Diagnostic {
    let pos = match e.location {
        pest::error::InputLocation::Pos(p) => p,
        pest::error::InputLocation::Span((s, _)) => s,
    };
    if let pest::error::ErrorVariant::CustomError { message } = &e.variant
        && message.contains("limit reached")
    {
        return Diagnostic::error(
            "limit",
            Span::new(pos, pos + 1),
            "the pipeline is nested too deeply to parse",
        )
        .with_help("split the deepest part into a function, or flatten it");
    }
    let mut expected: Vec<String> = Vec::new();
    let mut push = |s: String| {
        if !expected.contains(&s) {
            expected.push(s);
        }
    };
    if let pest::error::ErrorVariant::ParsingError { positives, .. } = &e.variant {
        for r in positives {
            if !matches!(r, Rule::WHITESPACE | Rule::nl | Rule::COMMENT) {
                push(rule_name(*r).to_string());
            }
        }
    }
    let mut at = pos;
    if let Some(attempts) = e.parse_attempts() {
        at = attempts.max_position.max(pos);
        for t in attempts.expected_tokens() {
            // Ranges (`a..z`) and built-ins say nothing a person can act on.
            let token = t.to_string();
            let t = token.trim();
            if t.is_empty()
                || t == "\\"
                || t == "BUILTIN_RULE"
                || (t.len() == 4 && t.contains(".."))
            {
                continue;
            }
            push(format!("`{}`", t.replace('\n', "\\n")));
        }
        for cs in attempts.call_stacks() {
            if let Some(r) = cs.deepest.get_rule()
                && !matches!(r, Rule::WHITESPACE | Rule::nl | Rule::COMMENT | Rule::EOI)
            {
                push(rule_name(*r).to_string());
            }
        }
    }
    // Tokens that only a keyword-boundary check produced say nothing useful.
    expected.retain(|s| {
        let inner = s.trim_matches('`');
        s != "a keyword"
            && s != "whitespace"
            && !inner.chars().all(|c| c.is_whitespace() || c == '\u{feff}')
    });
    // After a complete expression, an operator, `.`, `[` or a comment could always come
    // next; listing them buries what is actually missing.
    let always = [
        "`/*`",
        "`//`",
        "`.`",
        "`?.`",
        "`?`",
        "`?:`",
        "`[`",
        "`(`",
        "`++`",
        "`--`",
        "`as`",
        "`.` or `?.`",
        "`.` and a name",
        "`[` and an index",
        "`++` or `--`",
        "`as` and a type",
        "`?` or `?:`",
        "an operator",
        "`**`",
        "`==~`",
        "`==`",
        "`!=`",
        "`<=>`",
        "`<=`",
        "`>=`",
        "`=~`",
        "`<<`",
        "`>>`",
        "`<`",
        "`>`",
        "`&&`",
        "`||`",
        "`..<`",
        "`..`",
        "`&`",
        "`|`",
        "`^`",
        "`*`",
        "`/`",
        "`%`",
        "`+`",
        "`-`",
        "`!in`",
        "`in`",
        "`instanceof`",
        "`;`",
        "`\\n`",
        "`\\r\\n`",
        "`\\r`",
    ];
    let specific: Vec<String> = expected
        .iter()
        .filter(|s| !always.contains(&s.as_str()))
        .cloned()
        .collect();
    if !specific.is_empty() {
        expected = specific;
    }
    expected.truncate(6);
    let found = describe_found(text, at);
    let message = match expected.len() {
        0 => format!("unexpected {found}"),
        _ => format!("expected {}, found {found}", join_or(&expected)),
    };
    // When the problem is only seen on a later line (a missing `)` noticed at the next `}`),
    // point just after the last thing written, where the fix goes.
    let gap = &text[..at.min(text.len())];
    let last = gap.trim_end().len();
    let (start, end) = if gap[last..].contains('\n') && last > 0 {
        (last, last + 1)
    } else {
        let end = (at
            + text[at.min(text.len())..]
                .chars()
                .next()
                .map_or(0, char::len_utf8))
        .min(text.len());
        (at, end.max(at))
    };
    let at_end = text[at.min(text.len())..].trim().is_empty();
    // A closer that does not match the innermost open bracket: name the open one.
    if let Some(close) = text[at.min(text.len())..]
        .chars()
        .next()
        .filter(|c| matches!(c, ')' | ']' | '}'))
        && let Some(&(open, c)) = prescan::unclosed(&text[..at.min(text.len())]).last()
    {
        let want = match c {
            b'(' => ')',
            b'[' => ']',
            _ => '}',
        };
        if want != close && !expected.contains(&format!("`{want}`")) {
            let lc = crate::span::SourceFile::new("", text).line_col(open);
            return Diagnostic::error(
                "syntax",
                Span::new(at, at + 1),
                format!(
                    "`{close}` found, but the `{}` at {}:{} is still open",
                    c as char, lc.line, lc.col
                ),
            )
            .with_label(format!("expected `{want}` before this"))
            .with_help(format!("close the `{}` with `{want}`", c as char));
        }
    }
    // `"…${expr"`: the interpolation is not closed before the string ends.
    if found == "`\"`" && expected.iter().any(|e| e == "`}`") {
        let line_start = text[..at].rfind('\n').map_or(0, |i| i + 1);
        if let Some(rel) = text[line_start..at].rfind("${") {
            let open = line_start + rel;
            return Diagnostic::error(
                "syntax",
                Span::new(open, open + 2),
                "`${` is not closed before the end of the string",
            )
            .with_label("this `${` needs a matching `}`")
            .with_help("write `${expr}` — the `}` goes before the closing quote");
        }
    }
    let before = text[..at.min(text.len())].trim_end();
    let else_at = if found == "`else`" {
        Some(at)
    } else if before.ends_with("else")
        && !before[..before.len() - 4]
            .ends_with(|c: char| c.is_alphanumeric() || c == '_' || c == '}')
    {
        Some(before.len() - 4)
    } else {
        None
    };
    if let Some(at) = else_at {
        return Diagnostic::error(
            "syntax",
            Span::new(at, at + 4),
            "`else` without a matching `if`",
        )
        .with_label("no `if` block ends right before this")
        .with_help("check the braces of the `if` above: its `}` must come just before `else`");
    }
    let quote = ["`\"`", "`'`", "`'''`", "`\"\"\"`"]
        .iter()
        .find(|q| expected.iter().any(|e| e == *q));
    if let (Some(q), true) = (quote, found == "end of line" || found == "end of file") {
        return Diagnostic::error("syntax", Span::new(start, end), "unterminated string")
            .with_label(format!("expected a closing {q} before the {found}"))
            .with_help("a string in `'…'` or `\"…\"` ends on its line; for several lines use `'''…'''` or `\"\"\"…\"\"\"`");
    }
    if at_end && let Some(&(open, c)) = prescan::unclosed(text).last() {
        let close = match c {
            b'(' => ')',
            b'[' => ']',
            _ => '}',
        };
        return Diagnostic::error(
            "syntax",
            Span::new(open, open + 1),
            format!(
                "unexpected end of file: this `{}` is never closed",
                c as char
            ),
        )
        .with_label(format!("expected a matching `{close}` for this"));
    }
    let mut d = Diagnostic::error("syntax", Span::new(start, end), message);
    d.label = Some(match expected.len() {
        0 => format!("unexpected {found}"),
        _ => format!("expected {}", join_or(&expected)),
    });
    if let Some(help) = syntax_help(text, at) {
        d = d.with_help(help);
    }
    d
}

fn describe_found(text: &str, at: usize) -> String {
    let rest = &text[at.min(text.len())..];
    match rest.chars().next() {
        None => "end of file".to_string(),
        Some('\n') | Some('\r') => "end of line".to_string(),
        Some(c) if c.is_alphanumeric() || c == '_' => {
            let word: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == '$')
                .collect();
            format!("`{word}`")
        }
        Some(c) => format!("`{c}`"),
    }
}

fn join_or(items: &[String]) -> String {
    match items {
        [] => String::new(),
        [one] => one.clone(),
        [init @ .., last] => format!("{} or {}", init.join(", "), last),
    }
}

/// A hint for the mistakes people make most, judged from the text around the error.
fn syntax_help(text: &str, at: usize) -> Option<String> {
    let before = &text[..at.min(text.len())];
    let opens = before.matches('{').count() as i64 - before.matches('}').count() as i64;
    if at >= text.trim_end().len() && opens > 0 {
        return Some(format!(
            "{opens} `{{` not closed before the end of the file"
        ));
    }
    None
}

/// Decodes the escapes of a string body. `interp` says whether `\$` is meaningful.
pub(crate) fn unescape(raw: &str, at: usize, diags: &mut Vec<Diagnostic>) -> String {
    if !raw.contains('\\') {
        return raw.to_string();
    }
    let mut out = String::with_capacity(raw.len());
    let mut chars = raw.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        let Some((_, e)) = chars.next() else {
            out.push('\\');
            break;
        };
        match e {
            'n' => out.push('\n'),
            't' => out.push('\t'),
            'r' => out.push('\r'),
            'b' => out.push('\u{8}'),
            'f' => out.push('\u{c}'),
            's' => out.push(' '),
            '0' => out.push('\0'),
            '\\' | '\'' | '"' | '$' | '/' => out.push(e),
            '\n' => {}
            '\r' => {
                if let Some((_, '\n')) = chars.peek() {
                    chars.next();
                }
            }
            'u' => {
                let hex: String = (0..4)
                    .filter_map(|_| chars.next().map(|(_, c)| c))
                    .collect();
                match u32::from_str_radix(&hex, 16).ok().and_then(char::from_u32) {
                    Some(ch) => out.push(ch),
                    None => diags.push(
                        Diagnostic::error(
                            "string",
                            Span::new(at + i, at + i + 2 + hex.len()),
                            format!("invalid unicode escape `\\u{hex}`"),
                        )
                        .with_help("write four hexadecimal digits, e.g. `\\u00e9`"),
                    ),
                }
            }
            other => {
                diags.push(
                    Diagnostic::error(
                        "string",
                        Span::new(at + i, at + i + 1 + other.len_utf8()),
                        format!("unknown escape `\\{other}` in a string"),
                    )
                    .with_label("Groovy does not accept this escape")
                    .with_help(format!("for a backslash, write `\\\\{other}`")),
                );
                out.push('\\');
                out.push(other);
            }
        }
    }
    out
}

struct Builder<'s> {
    src: &'s str,
    diags: Vec<Diagnostic>,
}

/// Longest chain of operators, `.member`s or `else if`s in one expression or statement.
/// Chains are loops in the grammar, but they build a tree as deep as they are long, and
/// every later pass walks that tree recursively.
pub(crate) const MAX_CHAIN: usize = 256;

fn chain_limit(span: Span, what: &str) -> Diagnostic {
    Diagnostic::error(
        "limit",
        span,
        format!("this {what} chain is longer than {MAX_CHAIN}"),
    )
    .with_help("split it into several statements or variables")
}

fn ident(p: Pair<'_, Rule>) -> Ident {
    Ident {
        name: p.as_str().to_string(),
        span: span_of(&p),
    }
}

fn precedence(op: BinaryOp) -> (u8, bool) {
    use BinaryOp::*;
    // (binding power, right-associative)
    match op {
        Pow => (12, true),
        Mul | Div | Rem => (11, false),
        Add | Sub => (10, false),
        Shl | Shr => (9, false),
        Lt | Le | Gt | Ge | In | NotIn | InstanceOf => (7, false),
        Eq | Ne | Cmp | Find | Match => (6, false),
        BitAnd => (5, false),
        BitXor => (4, false),
        BitOr => (3, false),
        And => (2, false),
        Or => (1, false),
    }
}

pub(crate) enum Infix {
    Bin(BinaryOp),
    Range(bool),
}

pub(crate) fn infix_of(s: &str) -> Infix {
    use BinaryOp::*;
    let op = match s.trim() {
        "**" => Pow,
        "*" => Mul,
        "/" => Div,
        "%" => Rem,
        "+" => Add,
        "-" => Sub,
        "<<" => Shl,
        ">>" => Shr,
        "<" => Lt,
        "<=" => Le,
        ">" => Gt,
        ">=" => Ge,
        "in" => In,
        "!in" => NotIn,
        "instanceof" => InstanceOf,
        "==" => Eq,
        "!=" => Ne,
        "<=>" => Cmp,
        "=~" => Find,
        "==~" => Match,
        "&" => BitAnd,
        "^" => BitXor,
        "|" => BitOr,
        "&&" => And,
        "||" => Or,
        ".." => return Infix::Range(true),
        "..<" => return Infix::Range(false),
        other => unreachable!("infix operator {other:?} missing from the table"),
    };
    Infix::Bin(op)
}

impl<'s> Builder<'s> {
    fn stmts(&mut self, pairs: Pairs<'_, Rule>) -> Vec<Stmt> {
        pairs.map(|p| self.stmt(p)).collect()
    }

    fn block(&mut self, p: Pair<'_, Rule>) -> Block {
        let span = span_of(&p);
        match p.as_rule() {
            Rule::block => Block {
                stmts: self.stmts(p.into_inner()),
                span,
            },
            // A body without braces: one statement.
            _ => Block {
                stmts: vec![self.stmt(p)],
                span,
            },
        }
    }

    fn stmt(&mut self, p: Pair<'_, Rule>) -> Stmt {
        let span = span_of(&p);
        let kind = match p.as_rule() {
            Rule::annotated => return self.annotated(p),
            Rule::import_stmt => StmtKind::Unsupported {
                construct: "`import` statements".into(),
            },
            Rule::class_def => {
                let kind = p
                    .into_inner()
                    .find(|q| q.as_rule() == Rule::class_kind)
                    .map(|q| q.as_str().trim().to_string());
                StmtKind::Unsupported {
                    construct: format!("`{}` definitions", kind.as_deref().unwrap_or("class")),
                }
            }
            Rule::function_def => StmtKind::Function(self.function(p, Vec::new())),
            Rule::if_stmt => return self.if_stmt(p),
            Rule::for_in_stmt => {
                let mut var = None;
                let mut iter = None;
                let mut body = None;
                for q in p.into_inner() {
                    match q.as_rule() {
                        Rule::ident if var.is_none() => var = Some(ident(q)),
                        Rule::expr if iter.is_none() => iter = Some(self.expr(q)),
                        Rule::kw_for | Rule::kw_def | Rule::kw_in | Rule::type_ref => {}
                        _ => body = Some(self.block(q)),
                    }
                }
                StmtKind::ForIn {
                    var: var.expect("loop variable"),
                    iter: iter.expect("loop iterable"),
                    body: body.expect("loop body"),
                }
            }
            Rule::for_stmt => {
                let (mut init, mut cond, mut update, mut body) = (None, None, None, None);
                for q in p.into_inner() {
                    match q.as_rule() {
                        Rule::kw_for => {}
                        Rule::for_init => {
                            init = q.into_inner().next().map(|s| Box::new(self.stmt(s)))
                        }
                        Rule::for_cond => cond = q.into_inner().next().map(|e| self.expr(e)),
                        Rule::for_update => {
                            update = q.into_inner().next().map(|s| Box::new(self.stmt(s)))
                        }
                        _ => body = Some(self.block(q)),
                    }
                }
                StmtKind::For {
                    init,
                    cond,
                    update,
                    body: body.expect("loop body"),
                }
            }
            Rule::while_stmt => {
                let mut it = p.into_inner().skip(1);
                let cond = self.expr(it.next().expect("condition"));
                let body = self.block(it.next().expect("body"));
                StmtKind::While { cond, body }
            }
            Rule::try_stmt => {
                let mut body = None;
                let mut catches = Vec::new();
                let mut finally = None;
                for q in p.into_inner() {
                    match q.as_rule() {
                        Rule::kw_try => {}
                        Rule::block => body = Some(self.block(q)),
                        Rule::catch_clause => {
                            let mut types = Vec::new();
                            let mut var = None;
                            let mut cbody = None;
                            for c in q.into_inner() {
                                match c.as_rule() {
                                    Rule::catch_types => {
                                        types =
                                            c.into_inner().map(|t| t.as_str().to_string()).collect()
                                    }
                                    Rule::ident => var = Some(ident(c)),
                                    Rule::block => cbody = Some(self.block(c)),
                                    _ => {}
                                }
                            }
                            catches.push(Catch {
                                types,
                                var: var.expect("catch variable"),
                                body: cbody.expect("catch body"),
                            });
                        }
                        Rule::finally_clause => {
                            finally = q
                                .into_inner()
                                .find(|c| c.as_rule() == Rule::block)
                                .map(|c| self.block(c));
                        }
                        _ => {}
                    }
                }
                StmtKind::Try {
                    body: body.expect("try body"),
                    catches,
                    finally,
                }
            }
            Rule::switch_stmt => {
                let mut subject = None;
                let mut cases = Vec::new();
                for q in p.into_inner() {
                    match q.as_rule() {
                        Rule::expr => subject = Some(self.expr(q)),
                        Rule::case_clause | Rule::default_clause => {
                            let cspan = span_of(&q);
                            let mut value = None;
                            let mut body = Vec::new();
                            for c in q.into_inner() {
                                match c.as_rule() {
                                    Rule::expr => value = Some(self.expr(c)),
                                    Rule::case_body => body = self.stmts(c.into_inner()),
                                    _ => {}
                                }
                            }
                            cases.push(Case {
                                value,
                                body,
                                span: cspan,
                            });
                        }
                        _ => {}
                    }
                }
                StmtKind::Switch {
                    subject: subject.expect("switch subject"),
                    cases,
                }
            }
            Rule::return_stmt => StmtKind::Return {
                value: p.into_inner().nth(1).map(|v| self.value(v)),
            },
            Rule::throw_stmt => StmtKind::Throw {
                value: self.value(p.into_inner().nth(1).expect("thrown value")),
            },
            Rule::assert_stmt => {
                // `assert cond : message` is the `assert` step: fails the build when false.
                let kw = p.clone().into_inner().next().expect("assert keyword");
                let name = Ident {
                    name: "assert".into(),
                    span: span_of(&kw),
                };
                let args = p
                    .into_inner()
                    .skip(1)
                    .map(|e| Arg::Positional(self.expr(e)))
                    .collect();
                let call = Call {
                    target: None,
                    name,
                    args,
                    closure: None,
                    safe: false,
                    command: true,
                };
                StmtKind::Expr {
                    expr: Expr {
                        kind: ExprKind::Call(call),
                        span,
                    },
                }
            }
            Rule::break_stmt => StmtKind::Break,
            Rule::continue_stmt => StmtKind::Continue,
            Rule::decl_stmt => {
                let mut ty = None;
                let mut name = None;
                let mut value = None;
                for q in p.into_inner() {
                    match q.as_rule() {
                        Rule::kw_def | Rule::kw_final => {}
                        Rule::type_ref => ty = Some(q.as_str().to_string()),
                        Rule::ident if name.is_none() => name = Some(ident(q)),
                        _ => value = Some(self.value(q)),
                    }
                }
                StmtKind::Decl {
                    ty,
                    name: name.expect("declared name"),
                    value,
                }
            }
            Rule::assign_stmt => {
                let mut it = p.into_inner();
                let target = self.lvalue(it.next().expect("assignment target"));
                let op = match it.next().expect("assignment operator").as_str() {
                    "=" => AssignOp::Set,
                    "+=" => AssignOp::Add,
                    "-=" => AssignOp::Sub,
                    "*=" => AssignOp::Mul,
                    "/=" => AssignOp::Div,
                    "?=" => AssignOp::Elvis,
                    other => {
                        self.diags.push(Diagnostic::error(
                            "unsupported",
                            span,
                            format!("the `{other}` operator is not supported"),
                        ));
                        AssignOp::Set
                    }
                };
                let value = self.value(it.next().expect("assigned value"));
                StmtKind::Assign { target, op, value }
            }
            Rule::command_call => StmtKind::Expr {
                expr: self.command_call(p),
            },
            Rule::expr_stmt => StmtKind::Expr {
                expr: self.expr(p.into_inner().next().expect("expression")),
            },
            Rule::block => StmtKind::Block(self.block(p)),
            other => unreachable!("statement rule {other:?}"),
        };
        Stmt { kind, span }
    }

    fn annotated(&mut self, p: Pair<'_, Rule>) -> Stmt {
        let span = span_of(&p);
        let mut annotations = Vec::new();
        let mut unsupported: Option<String> = None;
        for q in p.into_inner() {
            match q.as_rule() {
                Rule::annotation => {
                    let name = q
                        .clone()
                        .into_inner()
                        .next()
                        .map(|n| n.as_str().to_string())
                        .unwrap_or_default();
                    let short = name.rsplit('.').next().unwrap_or(&name).to_string();
                    match short.as_str() {
                        "NonCPS" | "Field" | "SuppressWarnings" | "Override" => {}
                        "Library" => unsupported = Some("shared libraries (`@Library`)".into()),
                        "Grab" | "Grapes" => unsupported = Some("`@Grab` dependencies".into()),
                        _ => unsupported = Some(format!("the `@{short}` annotation")),
                    }
                    annotations.push(short);
                }
                Rule::function_def => {
                    let f = self.function(q, annotations.clone());
                    if let Some(construct) = unsupported {
                        return Stmt {
                            kind: StmtKind::Unsupported { construct },
                            span,
                        };
                    }
                    return Stmt {
                        kind: StmtKind::Function(f),
                        span,
                    };
                }
                _ => {
                    let inner = self.stmt_or_underscore(q);
                    if let Some(construct) = unsupported {
                        return Stmt {
                            kind: StmtKind::Unsupported { construct },
                            span,
                        };
                    }
                    return inner.unwrap_or(Stmt {
                        kind: StmtKind::Block(Block {
                            stmts: vec![],
                            span,
                        }),
                        span,
                    });
                }
            }
        }
        Stmt {
            kind: StmtKind::Unsupported {
                construct: unsupported.unwrap_or_else(|| "annotations".into()),
            },
            span,
        }
    }

    fn stmt_or_underscore(&mut self, q: Pair<'_, Rule>) -> Option<Stmt> {
        match q.as_rule() {
            Rule::underscore => None,
            _ => Some(self.stmt(q)),
        }
    }

    fn function(&mut self, p: Pair<'_, Rule>, annotations: Vec<String>) -> Function {
        let mut name = None;
        let mut params = Vec::new();
        let mut body = None;
        for q in p.into_inner() {
            match q.as_rule() {
                Rule::ident if name.is_none() => name = Some(ident(q)),
                Rule::params => params = q.into_inner().map(|x| self.param(x)).collect(),
                Rule::block => body = Some(self.block(q)),
                _ => {}
            }
        }
        Function {
            name: name.expect("function name"),
            params,
            body: body.expect("function body"),
            annotations,
        }
    }

    fn param(&mut self, p: Pair<'_, Rule>) -> Param {
        let mut ty = None;
        let mut name = None;
        let mut default = None;
        for q in p.into_inner() {
            match q.as_rule() {
                Rule::type_ref => ty = Some(q.as_str().to_string()),
                Rule::ident => name = Some(ident(q)),
                Rule::expr => default = Some(self.expr(q)),
                _ => {}
            }
        }
        Param {
            name: name.expect("parameter name"),
            ty,
            default,
        }
    }

    fn if_stmt(&mut self, p: Pair<'_, Rule>) -> Stmt {
        let span = span_of(&p);
        // Collect (cond, body) arms and an optional final else, then fold from the end.
        let mut arms: Vec<(Expr, Block, Span)> = Vec::new();
        let mut otherwise: Option<Block> = None;
        let mut cond = None;
        for q in p.into_inner() {
            match q.as_rule() {
                Rule::kw_if => {}
                Rule::expr => cond = Some(self.expr(q)),
                Rule::else_if => {
                    let s = span_of(&q);
                    let mut c = None;
                    let mut b = None;
                    for r in q.into_inner() {
                        match r.as_rule() {
                            Rule::kw_else | Rule::kw_if => {}
                            Rule::expr if c.is_none() => c = Some(self.expr(r)),
                            _ => b = Some(self.block(r)),
                        }
                    }
                    arms.push((c.expect("else-if condition"), b.expect("else-if body"), s));
                }
                Rule::else_clause => {
                    let body = q
                        .into_inner()
                        .find(|r| r.as_rule() != Rule::kw_else)
                        .expect("else body");
                    otherwise = Some(self.block(body));
                }
                _ => {
                    let b = self.block(q);
                    arms.insert(0, (cond.take().expect("if condition"), b, span));
                }
            }
        }
        if arms.len() > MAX_CHAIN {
            self.diags.push(chain_limit(span, "`else if`"));
            return Stmt {
                kind: StmtKind::Block(Block {
                    stmts: vec![],
                    span,
                }),
                span,
            };
        }
        let mut tail: Option<Box<Stmt>> = otherwise.map(|b| {
            let s = b.span;
            Box::new(Stmt {
                kind: StmtKind::Block(b),
                span: s,
            })
        });
        while let Some((c, b, s)) = arms.pop() {
            let s = if arms.is_empty() {
                span
            } else {
                Span {
                    start: s.start,
                    end: span.end,
                }
            };
            tail = Some(Box::new(Stmt {
                kind: StmtKind::If {
                    cond: c,
                    then: b,
                    otherwise: tail,
                },
                span: s,
            }));
        }
        *tail.expect("if statement")
    }

    fn lvalue(&mut self, p: Pair<'_, Rule>) -> Expr {
        let mut it = p.into_inner();
        let first = it.next().expect("lvalue name");
        let mut e = Expr {
            span: span_of(&first),
            kind: ExprKind::Var {
                name: first.as_str().to_string(),
            },
        };
        for q in it {
            let qspan = span_of(&q);
            let span = e.span.to(qspan);
            match q.as_rule() {
                Rule::lvalue_member => {
                    let text = q.as_str();
                    let safe = text.trim_start().starts_with("?.");
                    let name = q.into_inner().next().expect("member name");
                    let name = self.member_name(name);
                    e = Expr {
                        kind: ExprKind::Property {
                            target: Box::new(e),
                            name,
                            safe,
                        },
                        span,
                    };
                }
                _ => {
                    let index = self.expr(q.into_inner().next().expect("index"));
                    e = Expr {
                        kind: ExprKind::Index {
                            target: Box::new(e),
                            index: Box::new(index),
                        },
                        span,
                    };
                }
            }
        }
        e
    }

    fn member_name(&mut self, p: Pair<'_, Rule>) -> Ident {
        let span = span_of(&p);
        let inner = p.into_inner().next().expect("member name");
        let name = match inner.as_rule() {
            Rule::ident_or_kw => inner.as_str().to_string(),
            _ => match self.string(inner).kind {
                ExprKind::Str { value } => value,
                _ => {
                    self.diags.push(Diagnostic::error(
                        "unsupported",
                        span,
                        "a property name with `${…}` in it is not supported",
                    ));
                    String::new()
                }
            },
        };
        Ident { name, span }
    }

    /// A right-hand side: a command call without parentheses, or an expression.
    fn value(&mut self, p: Pair<'_, Rule>) -> Expr {
        match p.as_rule() {
            Rule::command_call => self.command_call(p),
            _ => self.expr(p),
        }
    }

    fn command_call(&mut self, p: Pair<'_, Rule>) -> Expr {
        let span = span_of(&p);
        let mut it = p.into_inner();
        let name_pair = it.next().expect("command name");
        let mut parts: Vec<Ident> = name_pair.into_inner().map(ident).collect();
        let name = parts.pop().expect("command name part");
        let target = parts.into_iter().fold(None::<Expr>, |acc, part| {
            Some(match acc {
                None => Expr {
                    span: part.span,
                    kind: ExprKind::Var { name: part.name },
                },
                Some(t) => Expr {
                    span: t.span.to(part.span),
                    kind: ExprKind::Property {
                        target: Box::new(t),
                        name: part,
                        safe: false,
                    },
                },
            })
        });
        let args_pair = it.next().expect("command arguments");
        let args = args_pair.into_inner().map(|a| self.arg(a)).collect();
        Expr {
            kind: ExprKind::Call(Call {
                target: target.map(Box::new),
                name,
                args,
                closure: None,
                safe: false,
                command: true,
            }),
            span,
        }
    }

    fn arg(&mut self, p: Pair<'_, Rule>) -> Arg {
        let inner = p.into_inner().next().expect("argument");
        match inner.as_rule() {
            Rule::named_arg => {
                let mut it = inner.into_inner();
                let name_pair = it.next().expect("argument name");
                let nspan = span_of(&name_pair);
                let key = name_pair.into_inner().next().expect("argument name");
                let name = match key.as_rule() {
                    Rule::ident_or_kw => key.as_str().to_string(),
                    _ => self.string(key).as_str().unwrap_or_default().to_string(),
                };
                let value = self.expr(it.next().expect("argument value"));
                Arg::Named {
                    name: Ident { name, span: nspan },
                    value,
                }
            }
            _ => Arg::Positional(self.expr(inner)),
        }
    }

    fn paren_args(&mut self, p: Pair<'_, Rule>) -> Vec<Arg> {
        p.into_inner().map(|a| self.arg(a)).collect()
    }

    fn expr(&mut self, p: Pair<'_, Rule>) -> Expr {
        debug_assert_eq!(p.as_rule(), Rule::expr);
        let span = span_of(&p);
        let mut operands: Vec<Expr> = Vec::new();
        let mut ops: Vec<(Infix, Span)> = Vec::new();
        let mut ternary = None;
        for q in p.into_inner() {
            match q.as_rule() {
                Rule::operand => operands.push(self.operand(q)),
                Rule::infix_op => ops.push((infix_of(q.as_str()), span_of(&q))),
                Rule::ternary_tail => ternary = Some(q),
                other => unreachable!("expression part {other:?}"),
            }
        }
        if ops.len() > MAX_CHAIN {
            self.diags.push(chain_limit(span, "operator"));
            return Expr {
                kind: ExprKind::Null,
                span,
            };
        }
        let mut base = if ops.is_empty() {
            operands.pop().expect("operand")
        } else {
            let mut operands = operands.into_iter();
            let first = operands.next().expect("operand");
            let mut rest = ops.into_iter().zip(operands).peekable();
            climb(first, &mut rest, 0)
        };
        if let Some(t) = ternary {
            let mut parts = t.into_inner();
            let a = self.expr(parts.next().expect("ternary branch"));
            base = match parts.next() {
                None => Expr {
                    kind: ExprKind::Elvis {
                        value: Box::new(base),
                        fallback: Box::new(a),
                    },
                    span,
                },
                Some(b) => {
                    let b = self.expr(b);
                    Expr {
                        kind: ExprKind::Ternary {
                            cond: Box::new(base),
                            then: Box::new(a),
                            otherwise: Box::new(b),
                        },
                        span,
                    }
                }
            };
        }
        base
    }

    fn operand(&mut self, p: Pair<'_, Rule>) -> Expr {
        let span = span_of(&p);
        if p.clone().into_inner().count() > MAX_CHAIN {
            self.diags
                .push(chain_limit(span, "member, index or prefix"));
            return Expr {
                kind: ExprKind::Null,
                span,
            };
        }
        let mut prefixes: Vec<(String, Span)> = Vec::new();
        let mut e: Option<Expr> = None;
        for q in p.into_inner() {
            match q.as_rule() {
                Rule::prefix_op => prefixes.push((q.as_str().to_string(), span_of(&q))),
                Rule::member => {
                    let base = e.take().expect("member target");
                    e = Some(self.member(base, q));
                }
                Rule::index => {
                    let base = e.take().expect("index target");
                    let span = base.span.to(span_of(&q));
                    let index = self.expr(q.into_inner().next().expect("index"));
                    e = Some(Expr {
                        kind: ExprKind::Index {
                            target: Box::new(base),
                            index: Box::new(index),
                        },
                        span,
                    });
                }
                Rule::inc_dec => {
                    let base = e.take().expect("++ target");
                    let span = base.span.to(span_of(&q));
                    let delta = if q.as_str() == "++" { 1 } else { -1 };
                    e = Some(Expr {
                        kind: ExprKind::Step {
                            target: Box::new(base),
                            delta,
                            prefix: false,
                        },
                        span,
                    });
                }
                Rule::as_cast => {
                    let base = e.take().expect("cast value");
                    let span = base.span.to(span_of(&q));
                    let ty = q
                        .into_inner()
                        .nth(1)
                        .map(|t| t.as_str().to_string())
                        .unwrap_or_default();
                    e = Some(Expr {
                        kind: ExprKind::Cast {
                            value: Box::new(base),
                            ty,
                        },
                        span,
                    });
                }
                _ => e = Some(self.primary(q)),
            }
        }
        let mut e = e.expect("primary");
        for (op, ospan) in prefixes.into_iter().rev() {
            let span = ospan.to(e.span);
            let kind = match op.as_str() {
                "!" => ExprKind::Unary {
                    op: UnaryOp::Not,
                    operand: Box::new(e),
                },
                "-" => ExprKind::Unary {
                    op: UnaryOp::Neg,
                    operand: Box::new(e),
                },
                "+" => ExprKind::Unary {
                    op: UnaryOp::Plus,
                    operand: Box::new(e),
                },
                "~" => ExprKind::Unary {
                    op: UnaryOp::BitNot,
                    operand: Box::new(e),
                },
                "++" => ExprKind::Step {
                    target: Box::new(e),
                    delta: 1,
                    prefix: true,
                },
                _ => ExprKind::Step {
                    target: Box::new(e),
                    delta: -1,
                    prefix: true,
                },
            };
            e = Expr { kind, span };
        }
        e
    }

    fn member(&mut self, target: Expr, p: Pair<'_, Rule>) -> Expr {
        let span = target.span.to(span_of(&p));
        let mut safe = false;
        let mut name = None;
        let mut args = None;
        let mut closure = None;
        for q in p.into_inner() {
            match q.as_rule() {
                Rule::member_op => safe = q.as_str() == "?.",
                Rule::member_name => name = Some(self.member_name(q)),
                Rule::paren_args => args = Some(self.paren_args(q)),
                Rule::closure => closure = Some(Box::new(self.closure(q))),
                other => unreachable!("member part {other:?}"),
            }
        }
        let name = name.expect("member name");
        if args.is_none() && closure.is_none() {
            return Expr {
                kind: ExprKind::Property {
                    target: Box::new(target),
                    name,
                    safe,
                },
                span,
            };
        }
        Expr {
            kind: ExprKind::Call(Call {
                target: Some(Box::new(target)),
                name,
                args: args.unwrap_or_default(),
                closure,
                safe,
                command: false,
            }),
            span,
        }
    }

    fn closure(&mut self, p: Pair<'_, Rule>) -> Closure {
        let span = span_of(&p);
        let mut params = Vec::new();
        let mut arrow = false;
        let mut body = Vec::new();
        for q in p.into_inner() {
            match q.as_rule() {
                Rule::closure_params => {
                    arrow = true;
                    params = q.into_inner().map(|x| self.param(x)).collect();
                }
                _ => body.push(self.stmt(q)),
            }
        }
        Closure {
            params,
            arrow,
            body,
            span,
        }
    }

    fn primary(&mut self, p: Pair<'_, Rule>) -> Expr {
        let span = span_of(&p);
        let kind = match p.as_rule() {
            Rule::paren_expr => return self.expr(p.into_inner().next().expect("expression")),
            Rule::closure => ExprKind::Closure(self.closure(p)),
            Rule::collection => return self.collection(p),
            Rule::kw_true => ExprKind::Bool { value: true },
            Rule::kw_false => ExprKind::Bool { value: false },
            Rule::kw_null => ExprKind::Null,
            Rule::number => self.number(p.as_str(), span),
            Rule::sq_string
            | Rule::tsq_string
            | Rule::dq_string
            | Rule::tdq_string
            | Rule::slashy_string => return self.string(p),
            Rule::new_expr => {
                let mut class = String::new();
                let mut args = Vec::new();
                for q in p.into_inner() {
                    match q.as_rule() {
                        Rule::type_ref => class = q.as_str().to_string(),
                        Rule::paren_args => args = self.paren_args(q),
                        Rule::expr => args.push(Arg::Positional(self.expr(q))),
                        Rule::closure => args.push(Arg::Positional(Expr {
                            span: span_of(&q),
                            kind: ExprKind::Closure(self.closure(q)),
                        })),
                        _ => {}
                    }
                }
                ExprKind::New { class, args }
            }
            Rule::call_or_var => {
                let mut it = p.into_inner();
                let name = ident(it.next().expect("name"));
                let mut args = None;
                let mut closure = None;
                for q in it {
                    match q.as_rule() {
                        Rule::paren_args => args = Some(self.paren_args(q)),
                        Rule::closure => closure = Some(Box::new(self.closure(q))),
                        other => unreachable!("call part {other:?}"),
                    }
                }
                if args.is_none() && closure.is_none() {
                    ExprKind::Var { name: name.name }
                } else {
                    ExprKind::Call(Call {
                        target: None,
                        name,
                        args: args.unwrap_or_default(),
                        closure,
                        safe: false,
                        command: false,
                    })
                }
            }
            other => unreachable!("primary rule {other:?}"),
        };
        Expr { kind, span }
    }

    /// `[a, b]`, `[k: v]` or `[:]`: a map when the entries have keys, a list otherwise.
    fn collection(&mut self, p: Pair<'_, Rule>) -> Expr {
        let span = span_of(&p);
        let mut items = Vec::new();
        let mut entries = Vec::new();
        let mut is_map = false;
        for q in p.into_inner() {
            if q.as_rule() == Rule::empty_map {
                is_map = true;
                continue;
            }
            let qspan = span_of(&q);
            let mut it = q.into_inner();
            let first = it.next().expect("collection entry");
            match (first.as_rule(), it.next()) {
                (Rule::word_key, Some(v)) => {
                    entries.push(MapEntry {
                        key: MapKey::Name {
                            name: first.as_str().to_string(),
                            span: span_of(&first),
                        },
                        value: self.expr(v),
                    });
                }
                (_, Some(v)) => {
                    let k = self.expr(first);
                    let key = match k.kind {
                        ExprKind::Str { value } => MapKey::Name {
                            name: value,
                            span: k.span,
                        },
                        ExprKind::Var { name } => MapKey::Name { name, span: k.span },
                        ExprKind::Int { value } => MapKey::Name {
                            name: value.to_string(),
                            span: k.span,
                        },
                        _ => MapKey::Expr { expr: k },
                    };
                    entries.push(MapEntry {
                        key,
                        value: self.expr(v),
                    });
                }
                (_, None) => {
                    if !entries.is_empty() {
                        self.diags.push(
                            Diagnostic::error(
                                "syntax",
                                qspan,
                                "a map entry needs a key: `key: value`",
                            )
                            .with_help(
                                "a `[…]` holds either list items or `key: value` entries, not both",
                            ),
                        );
                    }
                    items.push(self.expr(first));
                }
            }
        }
        if !entries.is_empty() && !items.is_empty() {
            self.diags.push(
                Diagnostic::error(
                    "syntax",
                    span,
                    "a `[…]` mixes list items and `key: value` entries",
                )
                .with_help("write a list `[a, b]` or a map `[k: v]`"),
            );
        }
        let kind = if is_map || !entries.is_empty() {
            ExprKind::Map { entries }
        } else {
            ExprKind::List { items }
        };
        Expr { kind, span }
    }

    fn number(&mut self, text: &str, span: Span) -> ExprKind {
        number_kind(text, span, &mut self.diags)
    }
}

/// The value of a number literal; an out-of-range one is reported in `diags`.
pub(crate) fn number_kind(text: &str, span: Span, diags: &mut Vec<Diagnostic>) -> ExprKind {
    {
        let clean: String = text.chars().filter(|c| *c != '_').collect();
        let is_float = clean.contains('.')
            || ((clean.contains('e') || clean.contains('E')) && !clean.starts_with("0x"));
        let trimmed = clean.trim_end_matches(['L', 'l', 'G', 'g', 'I', 'i', 'F', 'f', 'D', 'd']);
        let trimmed = if clean.starts_with("0x") || clean.starts_with("0X") {
            clean.trim_end_matches(['L', 'l', 'G', 'g', 'I', 'i'])
        } else {
            trimmed
        };
        if (is_float || clean.ends_with(['F', 'f', 'D', 'd']) && !clean.starts_with("0x"))
            && let Ok(v) = trimmed.parse::<f64>()
        {
            return ExprKind::Float { value: v };
        }
        let parsed = if let Some(hex) = trimmed
            .strip_prefix("0x")
            .or_else(|| trimmed.strip_prefix("0X"))
        {
            i64::from_str_radix(hex, 16)
        } else {
            trimmed.parse::<i64>()
        };
        match parsed {
            Ok(v) => ExprKind::Int { value: v },
            Err(_) => {
                diags.push(
                    Diagnostic::error(
                        "number",
                        span,
                        format!("the number `{text}` is out of range"),
                    )
                    .with_help("numbers are 64-bit integers"),
                );
                ExprKind::Int { value: 0 }
            }
        }
    }
}

impl<'s> Builder<'s> {
    /// Any string form → `Str` (no interpolation) or `GString` (with parts).
    fn string(&mut self, p: Pair<'_, Rule>) -> Expr {
        let span = span_of(&p);
        match p.as_rule() {
            Rule::sq_string | Rule::tsq_string | Rule::dq_plain => {
                let body = p.into_inner().next().expect("string body");
                let at = body.as_span().start();
                let value = unescape(body.as_str(), at, &mut self.diags);
                Expr {
                    kind: ExprKind::Str { value },
                    span,
                }
            }
            Rule::slashy_string => {
                let body = p.into_inner().next().expect("slashy body");
                let pattern = body.as_str().replace("\\/", "/");
                Expr {
                    kind: ExprKind::Regex { pattern },
                    span,
                }
            }
            Rule::dq_string | Rule::tdq_string => {
                let mut parts: Vec<GStringPart> = Vec::new();
                for q in p.into_inner() {
                    match q.as_rule() {
                        Rule::dq_text | Rule::tdq_text => {
                            let at = q.as_span().start();
                            let value = unescape(q.as_str(), at, &mut self.diags);
                            match parts.last_mut() {
                                Some(GStringPart::Lit { value: prev }) => prev.push_str(&value),
                                _ => parts.push(GStringPart::Lit { value }),
                            }
                        }
                        Rule::gvar => parts.push(GStringPart::Expr {
                            expr: gvar_expr(q.as_str(), span_of(&q)),
                        }),
                        Rule::interp => {
                            let ispan = span_of(&q);
                            let body = q.into_inner().next().expect("interpolation body");
                            let expr = match body.into_inner().next() {
                                Some(e) => self.expr(e),
                                None => Expr {
                                    kind: ExprKind::Null,
                                    span: ispan,
                                },
                            };
                            parts.push(GStringPart::Expr { expr });
                        }
                        other => unreachable!("gstring part {other:?}"),
                    }
                }
                let only_text = parts.iter().all(|p| matches!(p, GStringPart::Lit { .. }));
                if only_text {
                    let value = parts
                        .into_iter()
                        .map(|p| {
                            if let GStringPart::Lit { value } = p {
                                value
                            } else {
                                String::new()
                            }
                        })
                        .collect();
                    return Expr {
                        kind: ExprKind::Str { value },
                        span,
                    };
                }
                Expr {
                    kind: ExprKind::GString { parts },
                    span,
                }
            }
            other => unreachable!("string rule {other:?}"),
        }
    }
}

/// `$a.b.c` → the property chain `a.b.c`.
pub(crate) fn gvar_expr(text: &str, span: Span) -> Expr {
    let mut offset = span.start as usize + 1;
    let mut e: Option<Expr> = None;
    for part in text[1..].split('.') {
        let pspan = Span::new(offset, offset + part.len());
        offset += part.len() + 1;
        e = Some(match e {
            None => Expr {
                kind: ExprKind::Var {
                    name: part.to_string(),
                },
                span: pspan,
            },
            Some(t) => Expr {
                span: t.span.to(pspan),
                kind: ExprKind::Property {
                    target: Box::new(t),
                    name: Ident {
                        name: part.to_string(),
                        span: pspan,
                    },
                    safe: false,
                },
            },
        });
    }
    e.expect("gstring variable")
}

pub(crate) type OpIter = std::iter::Peekable<
    std::iter::Zip<std::vec::IntoIter<(Infix, Span)>, std::vec::IntoIter<Expr>>,
>;

/// Precedence climbing over the flat `operand (op operand)*` list the grammar produces.
pub(crate) fn climb(mut lhs: Expr, rest: &mut OpIter, min_bp: u8) -> Expr {
    loop {
        let bp = match rest.peek() {
            Some(((Infix::Bin(op), _), _)) => precedence(*op),
            Some(((Infix::Range(_), _), _)) => (8, false),
            None => return lhs,
        };
        if bp.0 < min_bp {
            return lhs;
        }
        let ((op, _), mut rhs) = rest.next().expect("peeked operator");
        loop {
            let next_bp = match rest.peek() {
                Some(((Infix::Bin(op), _), _)) => precedence(*op),
                Some(((Infix::Range(_), _), _)) => (8, false),
                None => break,
            };
            if next_bp.0 > bp.0 || (next_bp.0 == bp.0 && bp.1) {
                rhs = climb(rhs, rest, if next_bp.0 > bp.0 { bp.0 + 1 } else { bp.0 });
            } else {
                break;
            }
        }
        let span = lhs.span.to(rhs.span);
        lhs = match op {
            Infix::Bin(op) => Expr {
                kind: ExprKind::Binary {
                    op,
                    lhs: Box::new(lhs),
                    rhs: Box::new(rhs),
                },
                span,
            },
            Infix::Range(inclusive) => Expr {
                kind: ExprKind::Range {
                    from: Box::new(lhs),
                    to: Box::new(rhs),
                    inclusive,
                },
                span,
            },
        };
    }
}

impl<'s> Builder<'s> {
    #[allow(dead_code)]
    fn text(&self, span: Span) -> &'s str {
        &self.src[span.range()]
    }
}
