//! The fast path: a hand-written recursive-descent reading of `grammar/pipeline.pest` that
//! builds the same [`Script`] as the pest parser and its builder, without pest's machinery
//! (token queue, per-rule stack guard, attempt tracking).
//!
//! The grammar stays the specification. This module mirrors it rule by rule, with pest's
//! semantics: ordered choice with backtracking, and implicit white space and comments
//! (`skip`) between the elements of every non-atomic sequence and between the repetitions
//! of `x*` — which is also why a rule's span ends after the white space skipped before an
//! optional tail that did not match.
//!
//! It is only a fast path. It gives up ([`Fail::Bail`]) on anything it does not mirror
//! (annotations, `import`, `class`, `package`), on anything that would give a
//! diagnostic (a bad escape, a number out of range, a chain over the limit), when it nests
//! deeper than [`MAX_DEPTH`], and when it has done more work than [`fuel`] allows; a file it
//! cannot read at all is also handed over. In every one of these cases the caller parses the
//! file with pest, which gives the tree or the diagnostic. So the result of
//! [`crate::parse`] is always pest's; `tests/differential.rs` checks that both agree.

use crate::ast::*;
use crate::parser::{Infix, MAX_CHAIN, climb, gvar_expr, infix_of, number_kind, unescape};
use crate::span::Span;

/// Why a rule did not produce a value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fail {
    /// The rule does not match here; the caller backtracks, as pest would.
    No,
    /// Leave it to pest: the whole fast parse is abandoned.
    Bail,
}
use Fail::{Bail, No};

type R<T> = Result<T, Fail>;

/// Deepest recursion (statements and expressions inside each other) the fast path takes
/// on; deeper files go to pest, whose stack guard handles any depth.
const MAX_DEPTH: u32 = 96;

/// How many statements and expressions the fast path may start for a text of `len` bytes;
/// a grammar that backtracks badly on some input goes to pest rather than hang here.
fn fuel(len: usize) -> usize {
    len.saturating_mul(8).saturating_add(4096)
}

/// Parses `text` (already within the size and nesting limits) into the tree pest's path
/// would build, or `None` when the fast path leaves the file to pest.
pub(crate) fn parse(text: &str) -> Option<Script> {
    let mut p = P {
        src: text,
        b: text.as_bytes(),
        pos: 0,
        depth: 0,
        fuel: fuel(text.len()),
        skipped: (usize::MAX, 0),
    };
    p.file().ok()
}

struct P<'s> {
    src: &'s str,
    b: &'s [u8],
    pos: usize,
    depth: u32,
    fuel: usize,
    /// The last stretch `skip` passed over: (from, to).
    skipped: (usize, usize),
}

/// `opt!(self, e)`: `e?` — on `No`, back to where it started and `None`.
macro_rules! opt {
    ($p:expr, $e:expr) => {{
        let save = $p.pos;
        match $e {
            Ok(v) => Some(v),
            Err(No) => {
                $p.pos = save;
                None
            }
            Err(Bail) => return Err(Bail),
        }
    }};
}

/// `alt!(self, e)`: one alternative of an ordered choice — returns its value when it
/// matches, backtracks when it does not.
macro_rules! alt {
    ($p:expr, $e:expr) => {{
        let save = $p.pos;
        match $e {
            Ok(v) => return Ok(v),
            Err(No) => $p.pos = save,
            Err(Bail) => return Err(Bail),
        }
    }};
}

/// Whether `word` is one of [`KEYWORDS`] (a match the compiler turns into a few compares).
fn is_keyword(word: &str) -> bool {
    if word.len() < 2 || word.len() > 10 || !word.as_bytes()[0].is_ascii_lowercase() {
        return false;
    }
    matches!(
        word,
        "abstract"
            | "assert"
            | "as"
            | "break"
            | "case"
            | "catch"
            | "class"
            | "continue"
            | "default"
            | "def"
            | "do"
            | "else"
            | "enum"
            | "extends"
            | "false"
            | "finally"
            | "final"
            | "for"
            | "if"
            | "implements"
            | "import"
            | "instanceof"
            | "interface"
            | "in"
            | "new"
            | "null"
            | "package"
            | "private"
            | "protected"
            | "public"
            | "return"
            | "static"
            | "switch"
            | "throws"
            | "throw"
            | "trait"
            | "true"
            | "try"
            | "while"
    )
}

const PRIMITIVES: &[&str] = &[
    "void", "boolean", "byte", "char", "short", "int", "long", "float", "double", "var",
];

/// Prefix operators, in the order of the `Unary`/`Step` they become.
#[derive(Clone, Copy)]
enum Prefix {
    Inc,
    Dec,
    Not,
    Neg,
    Plus,
    BitNot,
}

/// What may follow a name or a member: `(args)`, a trailing closure, or both.
type Suffix = (Option<Vec<Arg>>, Option<Box<Closure>>);

impl<'s> P<'s> {
    // ------------------------------------------------------------ characters

    #[inline]
    fn at(&self, i: usize) -> u8 {
        self.b.get(i).copied().unwrap_or(0)
    }

    #[inline]
    fn peek(&self) -> u8 {
        self.at(self.pos)
    }

    #[inline]
    fn starts(&self, s: &[u8]) -> bool {
        self.b[self.pos.min(self.b.len())..].starts_with(s)
    }

    #[inline]
    fn eat(&mut self, s: &[u8]) -> bool {
        if self.starts(s) {
            self.pos += s.len();
            true
        } else {
            false
        }
    }

    #[inline]
    fn eat_byte(&mut self, c: u8) -> bool {
        if self.pos < self.b.len() && self.b[self.pos] == c {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn expect(&mut self, c: u8) -> R<()> {
        if self.eat_byte(c) { Ok(()) } else { Err(No) }
    }

    fn at_eoi(&self) -> bool {
        self.pos >= self.b.len()
    }

    /// Length of the NEWLINE at `i` (`\n`, `\r\n`, `\r`), 0 if none.
    #[inline]
    fn newline_len(&self, i: usize) -> usize {
        match self.at(i) {
            b'\n' => 1,
            b'\r' if self.at(i + 1) == b'\n' => 2,
            b'\r' => 1,
            _ => 0,
        }
    }

    /// Length of `ident_char` at `i`: ASCII alphanumerics, `_`, `$`, U+00C0..=U+00FF.
    #[inline]
    fn ident_char_len(&self, i: usize) -> usize {
        match self.at(i) {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'_' | b'$' => 1,
            0xC3 if (0x80..=0xBF).contains(&self.at(i + 1)) => 2,
            _ => 0,
        }
    }

    /// Length of `ident_start` at `i`: ASCII letters, `_`, `$`, U+00C0..=U+00FF.
    #[inline]
    fn ident_start_len(&self, i: usize) -> usize {
        match self.at(i) {
            b'a'..=b'z' | b'A'..=b'Z' | b'_' | b'$' => 1,
            0xC3 if (0x80..=0xBF).contains(&self.at(i + 1)) => 2,
            _ => 0,
        }
    }

    /// End of the run of `ident_char`s starting at `i`.
    #[inline]
    fn word_end(&self, mut i: usize) -> usize {
        loop {
            let n = self.ident_char_len(i);
            if n == 0 {
                return i;
            }
            i += n;
        }
    }

    /// Whether keyword `w` (`@{ "w" ~ !ident_char }`) is at the current position.
    #[inline]
    fn is_kw(&self, w: &str) -> bool {
        self.starts(w.as_bytes()) && self.ident_char_len(self.pos + w.len()) == 0
    }

    fn kw(&mut self, w: &str) -> bool {
        if self.is_kw(w) {
            self.pos += w.len();
            true
        } else {
            false
        }
    }

    fn kw_r(&mut self, w: &str) -> R<()> {
        if self.kw(w) { Ok(()) } else { Err(No) }
    }

    /// `sep = ";" | NEWLINE`
    fn sep(&mut self) -> bool {
        if self.eat_byte(b';') {
            return true;
        }
        let n = self.newline_len(self.pos);
        self.pos += n;
        n > 0
    }

    fn is_sep(&self) -> bool {
        self.peek() == b';' || self.newline_len(self.pos) > 0
    }

    /// pest's implicit `skip`: `WHITESPACE* ~ (COMMENT ~ WHITESPACE*)*`.
    #[inline(always)]
    fn skip(&mut self) {
        if let Some(&c) = self.b.get(self.pos)
            && matches!(c, b' ' | b'\t' | 0xEF | 0xC2 | b'\\' | b'/')
        {
            self.skip_slow();
        }
    }

    #[inline(never)]
    fn skip_slow(&mut self) {
        // Backtracking skips the same indentation again and again: remember the last one.
        if self.pos == self.skipped.0 {
            self.pos = self.skipped.1;
            return;
        }
        let from = self.pos;
        let b = self.b;
        let mut i = self.pos;
        loop {
            match b.get(i) {
                Some(b' ' | b'\t') => {
                    i += 1 + b[i + 1..]
                        .iter()
                        .position(|&c| c != b' ' && c != b'\t')
                        .unwrap_or(b.len() - i - 1);
                }
                Some(0xEF) if b.get(i + 1) == Some(&0xBB) && b.get(i + 2) == Some(&0xBF) => i += 3,
                Some(0xC2) if b.get(i + 1) == Some(&0xA0) => i += 2,
                Some(b'\\') => match (b.get(i + 1), b.get(i + 2)) {
                    (Some(b'\r'), Some(b'\n')) => i += 3,
                    (Some(b'\n'), _) => i += 2,
                    _ => break,
                },
                Some(b'/') => match b.get(i + 1) {
                    Some(b'*') => {
                        let rest = &b[i + 2..];
                        match rest.windows(2).position(|w| w == b"*/") {
                            Some(j) => i += 2 + j + 2,
                            None => break,
                        }
                    }
                    Some(b'/') => {
                        i += 2;
                        while i < b.len() && b[i] != b'\n' && b[i] != b'\r' {
                            i += 1;
                        }
                    }
                    _ => break,
                },
                _ => break,
            }
        }
        self.pos = i;
        self.skipped = (from, i);
    }

    /// `nl = _{ NEWLINE* }` (with `skip` between the newlines).
    #[inline(always)]
    fn nl(&mut self) {
        if matches!(self.peek(), b'\n' | b'\r') {
            self.nl_slow();
        }
    }

    #[inline(never)]
    fn nl_slow(&mut self) {
        let n = self.newline_len(self.pos);
        self.pos += n;
        loop {
            let save = self.pos;
            self.skip();
            let n = self.newline_len(self.pos);
            if n == 0 {
                self.pos = save;
                return;
            }
            self.pos += n;
        }
    }

    /// `sep (skip sep)*` after a first `sep` was matched: the tail of `sep+`.
    fn more_seps(&mut self) {
        loop {
            let save = self.pos;
            self.skip();
            if !self.sep() {
                self.pos = save;
                return;
            }
        }
    }

    /// `sep*`
    fn seps(&mut self) {
        if self.sep() {
            self.more_seps();
        }
    }

    fn enter(&mut self) -> R<()> {
        if self.depth >= MAX_DEPTH || self.fuel == 0 {
            return Err(Bail);
        }
        self.depth += 1;
        self.fuel -= 1;
        Ok(())
    }

    fn span(&self, start: usize) -> Span {
        Span::new(start, self.pos)
    }

    // ------------------------------------------------------------ tokens

    /// `ident = @{ !(keyword ~ !ident_char) ~ ident_start ~ ident_char* }`
    fn ident(&mut self) -> R<Ident> {
        let start = self.pos;
        let n = self.ident_start_len(start);
        if n == 0 {
            return Err(No);
        }
        let end = self.word_end(start + n);
        let word = &self.src[start..end];
        if is_keyword(word) {
            return Err(No);
        }
        self.pos = end;
        Ok(Ident {
            name: word.to_string(),
            span: Span::new(start, end),
        })
    }

    /// Where the `ident` at the current position ends, without moving or allocating.
    fn ident_end(&self) -> R<usize> {
        let start = self.pos;
        let n = self.ident_start_len(start);
        if n == 0 {
            return Err(No);
        }
        let end = self.word_end(start + n);
        if is_keyword(&self.src[start..end]) {
            return Err(No);
        }
        Ok(end)
    }

    fn peek_ident(&mut self) -> bool {
        self.ident_end().is_ok()
    }

    /// `ident_or_kw = @{ ident_start ~ ident_char* }`: returns its end.
    fn ident_or_kw(&mut self) -> R<&'s str> {
        let start = self.pos;
        let n = self.ident_start_len(start);
        if n == 0 {
            return Err(No);
        }
        self.pos = self.word_end(start + n);
        Ok(&self.src[start..self.pos])
    }

    /// `qualified_name = @{ ident_or_kw ~ ("." ~ ident_or_kw)* }`: its text.
    fn qualified_name(&mut self) -> R<&'s str> {
        let start = self.pos;
        self.ident_or_kw()?;
        while self.peek() == b'.' && self.ident_start_len(self.pos + 1) > 0 {
            self.pos += 1;
            self.ident_or_kw()?;
        }
        Ok(&self.src[start..self.pos])
    }

    /// `type_ref = ${ type_head ~ type_args? ~ ("[]")* }`: its text.
    fn type_ref(&mut self) -> R<String> {
        self.enter()?;
        let r = self.type_ref_inner();
        self.depth -= 1;
        r
    }

    fn type_ref_inner(&mut self) -> R<String> {
        let start = self.pos;
        self.type_head()?;
        if self.peek() == b'<' {
            opt!(self, self.type_args());
        }
        while self.eat(b"[]") {}
        Ok(self.src[start..self.pos].to_string())
    }

    /// `type_head = @{ primitive ~ !ident_char | (LOWER ~ ident_char* ~ ".")* ~ UPPER ~ ident_char* }`
    fn type_head(&mut self) -> R<()> {
        let start = self.pos;
        if self.ident_start_len(start) == 1 && self.peek().is_ascii_lowercase() {
            let end = self.word_end(start);
            if PRIMITIVES.contains(&&self.src[start..end]) {
                self.pos = end;
                return Ok(());
            }
        }
        loop {
            let save = self.pos;
            if self.peek().is_ascii_lowercase() {
                let end = self.word_end(self.pos + 1);
                if self.at(end) == b'.' {
                    self.pos = end + 1;
                    continue;
                }
            }
            self.pos = save;
            break;
        }
        if !self.peek().is_ascii_uppercase() {
            return Err(No);
        }
        self.pos = self.word_end(self.pos + 1);
        Ok(())
    }

    /// `type_args = !{ "<" ~ (type_ref | "?") ~ ("," ~ (type_ref | "?"))* ~ ">" }`
    fn type_args(&mut self) -> R<()> {
        self.expect(b'<')?;
        self.skip();
        self.type_arg()?;
        self.skip();
        loop {
            let save = self.pos;
            self.skip();
            let ok = self.eat_byte(b',') && {
                self.skip();
                opt!(self, self.type_arg()).is_some()
            };
            if !ok {
                self.pos = save;
                break;
            }
        }
        self.skip();
        self.expect(b'>')
    }

    fn type_arg(&mut self) -> R<()> {
        if opt!(self, self.type_ref()).is_some() {
            return Ok(());
        }
        self.expect(b'?')
    }

    // ------------------------------------------------------------ file and statements

    /// `file = { SOI ~ shebang? ~ sep* ~ (package ~ sep+)? ~ stmts ~ EOI }`
    fn file(&mut self) -> R<Script> {
        self.skip();
        // shebang = _{ "#!" ~ (!NEWLINE ~ ANY)* }: a non-atomic rule, so white space
        // and comments (even a `/* … */` across lines) are skipped between its characters.
        if self.eat(b"#!") {
            loop {
                let save = self.pos;
                self.skip();
                if self.at_eoi() || self.newline_len(self.pos) > 0 {
                    self.pos = save;
                    break;
                }
                self.pos += self.any_len();
            }
        }
        self.skip();
        self.seps();
        self.skip();
        // (package ~ sep+)?, package = { kw_package ~ qualified_name }: the builder drops it.
        if self.is_kw("package") {
            let save = self.pos;
            self.pos += "package".len();
            self.skip();
            if self.qualified_name().is_ok() {
                self.skip();
                if self.sep() {
                    self.more_seps();
                } else {
                    self.pos = save;
                }
            } else {
                self.pos = save;
            }
        }
        self.skip();
        let mut stmts = Vec::new();
        self.stmts(&mut stmts)?;
        self.skip();
        if !self.at_eoi() {
            return Err(No);
        }
        Ok(Script {
            stmts,
            span: Span::new(0, self.b.len()),
        })
    }

    /// `stmts = _{ sep* ~ (stmt ~ (sep+ ~ stmt)*)? ~ sep* }`
    fn stmts(&mut self, out: &mut Vec<Stmt>) -> R<()> {
        self.seps();
        self.skip();
        if let Some(s) = opt!(self, self.stmt()) {
            out.push(s);
            loop {
                let save = self.pos;
                self.skip();
                if !self.sep() {
                    self.pos = save;
                    break;
                }
                self.more_seps();
                self.skip();
                match opt!(self, self.stmt()) {
                    Some(s) => out.push(s),
                    None => {
                        self.pos = save;
                        break;
                    }
                }
            }
        }
        self.skip();
        self.seps();
        Ok(())
    }

    /// `block = { "{" ~ stmts ~ "}" }`
    fn block(&mut self) -> R<Block> {
        let start = self.pos;
        self.expect(b'{')?;
        self.skip();
        let mut stmts = Vec::new();
        self.stmts(&mut stmts)?;
        self.skip();
        self.expect(b'}')?;
        Ok(Block {
            stmts,
            span: self.span(start),
        })
    }

    fn stmt(&mut self) -> R<Stmt> {
        self.enter()?;
        let r = self.stmt_inner();
        self.depth -= 1;
        r
    }

    /// `stmt`: the alternatives in the grammar's order (those that need a keyword first
    /// cannot overlap, so `assert` is tried before `return` without changing anything).
    fn stmt_inner(&mut self) -> R<Stmt> {
        let start = self.pos;
        if self.peek() == b'@' {
            return self.annotated(start);
        }
        // import_stmt: left to pest.
        if self.is_kw("import") {
            return Err(Bail);
        }
        let word_end = self.word_end(start);
        let word = &self.src[start..word_end];
        // class_def = { (kw_abstract | kw_final | kw_public)* ~ class_kind ~ … }
        if matches!(
            word,
            "abstract" | "final" | "public" | "class" | "interface" | "enum" | "trait"
        ) {
            let mut first = true;
            loop {
                let save = self.pos;
                if !first {
                    self.skip();
                }
                if !(self.kw("abstract") || self.kw("final") || self.kw("public")) {
                    self.pos = save;
                    break;
                }
                first = false;
            }
            self.skip();
            if ["class", "interface", "enum", "trait"]
                .iter()
                .any(|k| self.is_kw(k))
            {
                return Err(Bail);
            }
            self.pos = start;
        }
        let c = self.peek();
        if c.is_ascii_alphabetic() {
            if self.may_start_declaration(word, word_end) {
                alt!(self, self.function_def(start));
            }
            match c {
                b'i' => alt!(self, self.if_stmt(start)),
                b'f' => {
                    alt!(self, self.for_in_stmt(start));
                    alt!(self, self.for_stmt(start));
                }
                b'w' => alt!(self, self.while_stmt(start)),
                b't' => alt!(self, self.try_stmt(start)),
                b's' => alt!(self, self.switch_stmt(start)),
                b'a' => alt!(self, self.assert_stmt(start)),
                _ => {}
            }
        }
        self.simple_stmt()
    }

    /// `annotated = { (annotation ~ nl)+ ~ (function_def | import_stmt | class_def |
    /// decl_stmt | underscore) }`, `annotation = { "@" ~ qualified_name ~ ("(" ~ nl ~
    /// arg_list? ~ nl ~ ")")? }`: only the harmless annotations without arguments on a
    /// function (`@NonCPS def f() { … }`); anything else is left to pest.
    fn annotated(&mut self, start: usize) -> R<Stmt> {
        let mut annotations = Vec::new();
        while self.eat_byte(b'@') {
            self.skip();
            let name = self.qualified_name().map_err(|_| Bail)?;
            let short = name.rsplit('.').next().unwrap_or(name);
            if !matches!(short, "NonCPS" | "Field" | "SuppressWarnings" | "Override") {
                return Err(Bail);
            }
            annotations.push(short.to_string());
            self.skip();
            if self.peek() == b'(' {
                return Err(Bail);
            }
            self.nl();
            self.skip();
        }
        let fstart = self.pos;
        match self.function_def(fstart) {
            Ok(Stmt {
                kind: StmtKind::Function(mut f),
                ..
            }) => {
                f.annotations = annotations;
                Ok(Stmt {
                    kind: StmtKind::Function(f),
                    span: self.span(start),
                })
            }
            _ => Err(Bail),
        }
    }

    /// Whether a function definition or a declaration may start with `word`: a modifier,
    /// `def`, or a type (a primitive, `a.b.Type`, `Type`). Others fail those rules anyway.
    fn may_start_declaration(&self, word: &str, word_end: usize) -> bool {
        let c = word.as_bytes().first().copied().unwrap_or(0);
        c.is_ascii_uppercase()
            || (c.is_ascii_lowercase() && self.at(word_end) == b'.')
            || matches!(
                word,
                "def" | "final" | "private" | "public" | "static" | "protected"
            )
            || PRIMITIVES.contains(&word)
    }

    /// `simple_stmt = _{ return_stmt | throw_stmt | break_stmt | continue_stmt | decl_stmt
    /// | assign_stmt | command_stmt | expr_stmt }`
    fn simple_stmt(&mut self) -> R<Stmt> {
        let start = self.pos;
        match self.peek() {
            b'r' => alt!(self, self.return_stmt(start)),
            b't' => alt!(self, self.throw_stmt(start)),
            b'b' if self.kw("break") => {
                return Ok(Stmt {
                    kind: StmtKind::Break,
                    span: self.span(start),
                });
            }
            b'c' if self.kw("continue") => {
                return Ok(Stmt {
                    kind: StmtKind::Continue,
                    span: self.span(start),
                });
            }
            _ => {}
        }
        let word_end = self.word_end(start);
        if self.may_start_declaration(&self.src[start..word_end], word_end) {
            alt!(self, self.decl_stmt(start));
        }
        alt!(self, self.assign_stmt(start));
        alt!(self, self.command_stmt());
        self.expr_stmt(start)
    }

    /// `function_def = { modifier* ~ (kw_def ~ type_ref? | type_ref) ~ ident ~ "(" ~ nl ~
    /// params? ~ nl ~ ")" ~ (kw_throws ~ type_ref ~ ("," ~ type_ref)*)? ~ nl ~ block }`
    fn function_def(&mut self, start: usize) -> R<Stmt> {
        let mut first = true;
        loop {
            let save = self.pos;
            if !first {
                self.skip();
            }
            if !["private", "public", "static", "final", "protected"]
                .iter()
                .any(|k| self.kw(k))
            {
                self.pos = save;
                break;
            }
            first = false;
        }
        self.skip();
        if self.kw("def") {
            self.skip();
            opt!(self, self.type_ref());
        } else {
            self.type_ref()?;
        }
        self.skip();
        let name = self.ident()?;
        self.skip();
        self.expect(b'(')?;
        self.skip();
        self.nl();
        self.skip();
        let params = opt!(self, self.params()).unwrap_or_default();
        self.skip();
        self.nl();
        self.skip();
        self.expect(b')')?;
        self.skip();
        opt!(self, self.throws());
        self.skip();
        self.nl();
        self.skip();
        let body = self.block()?;
        Ok(Stmt {
            kind: StmtKind::Function(Function {
                name,
                params,
                body,
                annotations: Vec::new(),
            }),
            span: self.span(start),
        })
    }

    fn throws(&mut self) -> R<()> {
        self.kw_r("throws")?;
        self.skip();
        self.type_ref()?;
        loop {
            let save = self.pos;
            self.skip();
            let ok = self.eat_byte(b',') && {
                self.skip();
                opt!(self, self.type_ref()).is_some()
            };
            if !ok {
                self.pos = save;
                return Ok(());
            }
        }
    }

    /// The repetition `(nl ~ "," ~ nl ~ item)*` (without the first `nl` when `nl_before`
    /// is false) after a first item and the white space behind it. A repetition that does
    /// not complete leaves the position where it began, as pest does; white space is
    /// skipped between repetitions, not after the last.
    fn after_commas<T>(
        &mut self,
        nl_before: bool,
        mut item: impl FnMut(&mut Self) -> R<T>,
    ) -> R<Vec<T>> {
        let mut out = Vec::new();
        loop {
            // Behind the first item the caller skipped already: skipping again is a no-op.
            let save = self.pos;
            self.skip();
            if nl_before {
                self.nl();
                self.skip();
            }
            if !self.eat_byte(b',') {
                self.pos = save;
                break;
            }
            self.skip();
            self.nl();
            self.skip();
            match opt!(self, item(self)) {
                Some(v) => out.push(v),
                None => {
                    self.pos = save;
                    break;
                }
            }
        }
        Ok(out)
    }

    /// `(nl ~ ",")?`: a trailing comma, maybe on its own line.
    fn trailing_comma(&mut self) {
        let save = self.pos;
        self.nl();
        self.skip();
        if !self.eat_byte(b',') {
            self.pos = save;
        }
    }

    /// `params = { param ~ (nl ~ "," ~ nl ~ param)* }`
    fn params(&mut self) -> R<Vec<Param>> {
        let mut out = vec![self.param()?];
        self.skip();
        out.extend(self.after_commas(true, Self::param)?);
        Ok(out)
    }

    /// `param = { (kw_def | kw_final)? ~ (type_ref ~ &ident)? ~ ident ~ ("=" ~ nl ~ expr)? }`
    fn param(&mut self) -> R<Param> {
        let _ = self.kw("def") || self.kw("final");
        self.skip();
        let ty = opt!(self, self.typed_ident_prefix());
        self.skip();
        let name = self.ident()?;
        self.skip();
        let default = opt!(self, {
            self.expect(b'=').and_then(|_| {
                self.skip();
                self.nl();
                self.skip();
                self.expr()
            })
        });
        Ok(Param { name, ty, default })
    }

    /// `type_ref ~ &ident`
    fn typed_ident_prefix(&mut self) -> R<String> {
        let ty = self.type_ref()?;
        self.skip();
        if self.peek_ident() { Ok(ty) } else { Err(No) }
    }

    /// `closure_param = { (kw_def | kw_final)? ~ (type_ref ~ &ident)? ~ ident }`
    fn closure_param(&mut self) -> R<Param> {
        let _ = self.kw("def") || self.kw("final");
        self.skip();
        let ty = opt!(self, self.typed_ident_prefix());
        self.skip();
        let name = self.ident()?;
        Ok(Param {
            name,
            ty,
            default: None,
        })
    }

    /// `cond = _{ "(" ~ nl ~ expr ~ nl ~ ")" }`
    fn cond(&mut self) -> R<Expr> {
        self.expect(b'(')?;
        self.skip();
        self.nl();
        self.skip();
        let e = self.expr()?;
        self.skip();
        self.nl();
        self.skip();
        self.expect(b')')?;
        Ok(e)
    }

    /// `body = _{ block | simple_stmt }`, as the builder makes it a [`Block`].
    fn body(&mut self) -> R<Block> {
        if let Some(b) = opt!(self, self.block()) {
            return Ok(b);
        }
        let s = self.simple_stmt()?;
        Ok(Block {
            span: s.span,
            stmts: vec![s],
        })
    }

    /// `if_stmt = { kw_if ~ cond ~ nl ~ body ~ else_if* ~ else_clause? }`
    fn if_stmt(&mut self, start: usize) -> R<Stmt> {
        self.kw_r("if")?;
        self.skip();
        let cond = self.cond()?;
        self.skip();
        self.nl();
        self.skip();
        let then = self.body()?;
        self.skip();
        let mut arms: Vec<(Expr, Block, Span)> = vec![(cond, then, Span::default())];
        loop {
            let save = self.pos;
            if arms.len() > 1 {
                self.skip();
            }
            match opt!(self, self.else_if()) {
                Some(arm) => arms.push(arm),
                None => {
                    self.pos = save;
                    break;
                }
            }
        }
        self.skip();
        let otherwise = opt!(self, self.else_clause());
        let span = self.span(start);
        arms[0].2 = span;
        if arms.len() > MAX_CHAIN {
            return Err(Bail);
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
        Ok(*tail.expect("if statement"))
    }

    /// `else_if = { sep* ~ kw_else ~ nl ~ kw_if ~ cond ~ nl ~ body }`
    fn else_if(&mut self) -> R<(Expr, Block, Span)> {
        let start = self.pos;
        self.seps();
        self.skip();
        self.kw_r("else")?;
        self.skip();
        self.nl();
        self.skip();
        self.kw_r("if")?;
        self.skip();
        let c = self.cond()?;
        self.skip();
        self.nl();
        self.skip();
        let b = self.body()?;
        Ok((c, b, self.span(start)))
    }

    /// `else_clause = { sep* ~ kw_else ~ nl ~ body }`
    fn else_clause(&mut self) -> R<Block> {
        self.seps();
        self.skip();
        self.kw_r("else")?;
        self.skip();
        self.nl();
        self.skip();
        self.body()
    }

    /// `for_in_stmt = { kw_for ~ "(" ~ nl ~ (kw_def | type_ref ~ &ident)? ~ ident ~
    /// (kw_in | ":") ~ nl ~ expr ~ nl ~ ")" ~ nl ~ body }`
    fn for_in_stmt(&mut self, start: usize) -> R<Stmt> {
        self.kw_r("for")?;
        self.skip();
        self.expect(b'(')?;
        self.skip();
        self.nl();
        self.skip();
        if !self.kw("def") {
            opt!(self, self.typed_ident_prefix());
        }
        self.skip();
        let var = self.ident()?;
        self.skip();
        if !(self.kw("in") || self.eat_byte(b':')) {
            return Err(No);
        }
        self.skip();
        self.nl();
        self.skip();
        let iter = self.expr()?;
        self.skip();
        self.nl();
        self.skip();
        self.expect(b')')?;
        self.skip();
        self.nl();
        self.skip();
        let body = self.body()?;
        Ok(Stmt {
            kind: StmtKind::ForIn { var, iter, body },
            span: self.span(start),
        })
    }

    /// `for_stmt = { kw_for ~ "(" ~ nl ~ for_init ~ ";" ~ nl ~ for_cond ~ ";" ~ nl ~
    /// for_update ~ nl ~ ")" ~ nl ~ body }`
    fn for_stmt(&mut self, start: usize) -> R<Stmt> {
        self.kw_r("for")?;
        self.skip();
        self.expect(b'(')?;
        self.skip();
        self.nl();
        self.skip();
        // for_init = { (decl_stmt | assign_stmt | expr_stmt)? }
        let init = opt!(self, {
            let s = self.pos;
            let save = self.pos;
            match self.decl_stmt(s) {
                Ok(v) => Ok(v),
                Err(No) => {
                    self.pos = save;
                    match self.assign_stmt(s) {
                        Ok(v) => Ok(v),
                        Err(No) => {
                            self.pos = save;
                            self.expr_stmt(s)
                        }
                        Err(Bail) => Err(Bail),
                    }
                }
                Err(Bail) => Err(Bail),
            }
        })
        .map(Box::new);
        self.skip();
        self.expect(b';')?;
        self.skip();
        self.nl();
        self.skip();
        let cond = opt!(self, self.expr());
        self.skip();
        self.expect(b';')?;
        self.skip();
        self.nl();
        self.skip();
        // for_update = { (assign_stmt | expr_stmt)? }
        let update = opt!(self, {
            let s = self.pos;
            match self.assign_stmt(s) {
                Ok(v) => Ok(v),
                Err(No) => {
                    self.pos = s;
                    self.expr_stmt(s)
                }
                Err(Bail) => Err(Bail),
            }
        })
        .map(Box::new);
        self.skip();
        self.nl();
        self.skip();
        self.expect(b')')?;
        self.skip();
        self.nl();
        self.skip();
        let body = self.body()?;
        Ok(Stmt {
            kind: StmtKind::For {
                init,
                cond,
                update,
                body,
            },
            span: self.span(start),
        })
    }

    /// `while_stmt = { kw_while ~ cond ~ nl ~ body }`
    fn while_stmt(&mut self, start: usize) -> R<Stmt> {
        self.kw_r("while")?;
        self.skip();
        let cond = self.cond()?;
        self.skip();
        self.nl();
        self.skip();
        let body = self.body()?;
        Ok(Stmt {
            kind: StmtKind::While { cond, body },
            span: self.span(start),
        })
    }

    /// `try_stmt = { kw_try ~ nl ~ block ~ catch_clause* ~ finally_clause? }`
    fn try_stmt(&mut self, start: usize) -> R<Stmt> {
        self.kw_r("try")?;
        self.skip();
        self.nl();
        self.skip();
        let body = self.block()?;
        self.skip();
        let mut catches = Vec::new();
        loop {
            let save = self.pos;
            if !catches.is_empty() {
                self.skip();
            }
            match opt!(self, self.catch_clause()) {
                Some(c) => catches.push(c),
                None => {
                    self.pos = save;
                    break;
                }
            }
        }
        self.skip();
        // finally_clause = { nl ~ kw_finally ~ nl ~ block }
        let finally = opt!(self, {
            self.nl();
            self.skip();
            self.kw_r("finally").and_then(|_| {
                self.skip();
                self.nl();
                self.skip();
                self.block()
            })
        });
        Ok(Stmt {
            kind: StmtKind::Try {
                body,
                catches,
                finally,
            },
            span: self.span(start),
        })
    }

    /// `catch_clause = { nl ~ kw_catch ~ "(" ~ nl ~ (catch_types ~ ident | ident) ~ nl ~
    /// ")" ~ nl ~ block }`
    fn catch_clause(&mut self) -> R<Catch> {
        self.nl();
        self.skip();
        self.kw_r("catch")?;
        self.skip();
        self.expect(b'(')?;
        self.skip();
        self.nl();
        self.skip();
        let typed = opt!(self, {
            self.catch_types().and_then(|types| {
                self.skip();
                self.ident().map(|v| (types, v))
            })
        });
        let (types, var) = match typed {
            Some(tv) => tv,
            None => (Vec::new(), self.ident()?),
        };
        self.skip();
        self.nl();
        self.skip();
        self.expect(b')')?;
        self.skip();
        self.nl();
        self.skip();
        let body = self.block()?;
        Ok(Catch { types, var, body })
    }

    /// `catch_types = { type_ref ~ ("|" ~ type_ref)* }`
    fn catch_types(&mut self) -> R<Vec<String>> {
        let mut out = vec![self.type_ref()?];
        self.skip();
        loop {
            let save = self.pos;
            self.skip();
            let t = if self.eat_byte(b'|') {
                self.skip();
                opt!(self, self.type_ref())
            } else {
                None
            };
            match t {
                Some(t) => out.push(t),
                None => {
                    self.pos = save;
                    return Ok(out);
                }
            }
        }
    }

    /// `switch_stmt = { kw_switch ~ "(" ~ nl ~ expr ~ nl ~ ")" ~ nl ~ "{" ~ nl ~
    /// (case_clause | default_clause)* ~ nl ~ "}" }`
    fn switch_stmt(&mut self, start: usize) -> R<Stmt> {
        self.kw_r("switch")?;
        self.skip();
        let subject = self.cond()?;
        self.skip();
        self.nl();
        self.skip();
        self.expect(b'{')?;
        self.skip();
        self.nl();
        self.skip();
        let mut cases = Vec::new();
        loop {
            let save = self.pos;
            if !cases.is_empty() {
                self.skip();
            }
            match opt!(self, self.case_clause()) {
                Some(c) => cases.push(c),
                None => {
                    self.pos = save;
                    break;
                }
            }
        }
        self.skip();
        self.nl();
        self.skip();
        self.expect(b'}')?;
        Ok(Stmt {
            kind: StmtKind::Switch { subject, cases },
            span: self.span(start),
        })
    }

    /// `case_clause = { kw_case ~ expr ~ ":" ~ case_body }` or
    /// `default_clause = { kw_default ~ ":" ~ case_body }`
    fn case_clause(&mut self) -> R<Case> {
        let start = self.pos;
        let value = if self.kw("case") {
            self.skip();
            Some(self.expr()?)
        } else if self.kw("default") {
            None
        } else {
            return Err(No);
        };
        self.skip();
        self.expect(b':')?;
        self.skip();
        let mut body = Vec::new();
        self.stmts(&mut body)?;
        Ok(Case {
            value,
            body,
            span: self.span(start),
        })
    }

    /// `return_stmt = { kw_return ~ (!(sep | "}" | EOI) ~ value)? }`
    fn return_stmt(&mut self, start: usize) -> R<Stmt> {
        self.kw_r("return")?;
        self.skip();
        let value = if self.is_sep() || self.peek() == b'}' || self.at_eoi() {
            None
        } else {
            opt!(self, self.value())
        };
        Ok(Stmt {
            kind: StmtKind::Return { value },
            span: self.span(start),
        })
    }

    /// `throw_stmt = { kw_throw ~ value }`
    fn throw_stmt(&mut self, start: usize) -> R<Stmt> {
        self.kw_r("throw")?;
        self.skip();
        let value = self.value()?;
        Ok(Stmt {
            kind: StmtKind::Throw { value },
            span: self.span(start),
        })
    }

    /// `assert_stmt = { kw_assert ~ expr ~ ((":" | ",") ~ nl ~ expr)? }`: the `assert` step.
    fn assert_stmt(&mut self, start: usize) -> R<Stmt> {
        self.kw_r("assert")?;
        let kw_span = self.span(start);
        self.skip();
        let mut args = vec![Arg::Positional(self.expr()?)];
        self.skip();
        let message = opt!(self, {
            if self.eat_byte(b':') || self.eat_byte(b',') {
                self.skip();
                self.nl();
                self.skip();
                self.expr()
            } else {
                Err(No)
            }
        });
        if let Some(m) = message {
            args.push(Arg::Positional(m));
        }
        let span = self.span(start);
        Ok(Stmt {
            kind: StmtKind::Expr {
                expr: Expr {
                    kind: ExprKind::Call(Call {
                        target: None,
                        name: Ident {
                            name: "assert".into(),
                            span: kw_span,
                        },
                        args,
                        closure: None,
                        safe: false,
                        command: true,
                    }),
                    span,
                },
            },
            span,
        })
    }

    /// `decl_stmt = { (kw_final ~ kw_def? | kw_def) ~ (type_ref ~ &ident)? ~ ident ~ ("=" ~ nl ~ value)?
    ///              | type_ref ~ ident ~ ("=" ~ nl ~ value)? ~ &(sep | "}" | EOI | ";") }`
    fn decl_stmt(&mut self, start: usize) -> R<Stmt> {
        let c = self.peek();
        if !c.is_ascii_alphabetic() {
            return Err(No);
        }
        match self.untyped_decl(start) {
            Err(No) => {
                self.pos = start;
                self.typed_decl(start)
            }
            r => r,
        }
    }

    /// The first alternative of `decl_stmt`: `final`/`def`.
    fn untyped_decl(&mut self, start: usize) -> R<Stmt> {
        if self.kw("final") {
            self.skip();
            self.kw("def");
        } else if !self.kw("def") {
            return Err(No);
        }
        self.skip();
        let ty = opt!(self, self.typed_ident_prefix());
        self.skip();
        let name = self.ident()?;
        self.skip();
        let value = opt!(self, self.init_value());
        Ok(Stmt {
            kind: StmtKind::Decl { ty, name, value },
            span: self.span(start),
        })
    }

    fn typed_decl(&mut self, start: usize) -> R<Stmt> {
        let ty = self.type_ref()?;
        self.skip();
        let name = self.ident()?;
        self.skip();
        let value = opt!(self, self.init_value());
        self.skip();
        if !(self.is_sep() || self.peek() == b'}' || self.at_eoi()) {
            return Err(No);
        }
        Ok(Stmt {
            kind: StmtKind::Decl {
                ty: Some(ty),
                name,
                value,
            },
            span: self.span(start),
        })
    }

    /// `"=" ~ nl ~ value`
    fn init_value(&mut self) -> R<Expr> {
        self.expect(b'=')?;
        self.skip();
        self.nl();
        self.skip();
        self.value()
    }

    /// `value = _{ command_call ~ &(sep | "}" | ")" | EOI) | expr }`
    fn value(&mut self) -> R<Expr> {
        let save = self.pos;
        match self.command_call() {
            Ok(e) => {
                self.skip();
                if self.is_sep() || matches!(self.peek(), b'}' | b')') || self.at_eoi() {
                    return Ok(e);
                }
                self.pos = save;
            }
            Err(No) => self.pos = save,
            Err(Bail) => return Err(Bail),
        }
        self.expr()
    }

    /// `assign_stmt = { lvalue ~ assign_op ~ nl ~ value }`
    fn assign_stmt(&mut self, start: usize) -> R<Stmt> {
        // Only these can follow the first name of an assignment (a member, an index, an
        // assignment operator); anything else fails here as it would below, sooner.
        let end = self.ident_end()?;
        let mut i = end;
        while matches!(self.at(i), b' ' | b'\t') {
            i += 1;
        }
        if !matches!(
            self.at(i),
            b'.' | b'?'
                | b'['
                | b'='
                | b'+'
                | b'-'
                | b'*'
                | b'/'
                | b'<'
                | b'\n'
                | b'\r'
                | b'\\'
                | 0xEF
                | 0xC2
        ) {
            return Err(No);
        }
        let target = self.lvalue()?;
        self.skip();
        // assign_op = @{ "=" ~ !("=" | "~") | "+=" | "-=" | "*=" | "/=" | "?=" | "<<=" }
        let op = if self.peek() == b'=' && !matches!(self.at(self.pos + 1), b'=' | b'~') {
            self.pos += 1;
            AssignOp::Set
        } else if self.eat(b"+=") {
            AssignOp::Add
        } else if self.eat(b"-=") {
            AssignOp::Sub
        } else if self.eat(b"*=") {
            AssignOp::Mul
        } else if self.eat(b"/=") {
            AssignOp::Div
        } else if self.eat(b"?=") {
            AssignOp::Elvis
        } else if self.starts(b"<<=") {
            // Refused with a diagnostic by the builder.
            return Err(Bail);
        } else {
            return Err(No);
        };
        self.skip();
        self.nl();
        self.skip();
        let value = self.value()?;
        Ok(Stmt {
            kind: StmtKind::Assign { target, op, value },
            span: self.span(start),
        })
    }

    /// `lvalue = { ident ~ (lvalue_member | lvalue_index)* }`
    fn lvalue(&mut self) -> R<Expr> {
        let first = self.ident()?;
        let mut e = Expr {
            span: first.span,
            kind: ExprKind::Var { name: first.name },
        };
        self.skip();
        let mut n = 0;
        loop {
            let save = self.pos;
            if n > 0 {
                self.skip();
            }
            let qstart = self.pos;
            // lvalue_member = { nl ~ ("?." | ".") ~ member_name }
            let member = opt!(self, {
                self.nl();
                self.skip();
                if self.eat(b"?.") || self.eat_byte(b'.') {
                    self.skip();
                    self.member_name()
                } else {
                    Err(No)
                }
            });
            if let Some(name) = member {
                // As the builder decides it, from the member's text.
                let safe = self.src[qstart..self.pos].trim_start().starts_with("?.");
                let span = e.span.to(self.span(qstart));
                e = Expr {
                    kind: ExprKind::Property {
                        target: Box::new(e),
                        name,
                        safe,
                    },
                    span,
                };
                n += 1;
                continue;
            }
            // lvalue_index = { "[" ~ nl ~ expr ~ nl ~ "]" }
            let index = opt!(self, self.bracketed_index());
            if let Some(index) = index {
                let span = e.span.to(self.span(qstart));
                e = Expr {
                    kind: ExprKind::Index {
                        target: Box::new(e),
                        index: Box::new(index),
                    },
                    span,
                };
                n += 1;
                continue;
            }
            self.pos = save;
            break;
        }
        Ok(e)
    }

    /// `"[" ~ nl ~ expr ~ nl ~ "]"`
    fn bracketed_index(&mut self) -> R<Expr> {
        self.expect(b'[')?;
        self.skip();
        self.nl();
        self.skip();
        let e = self.expr()?;
        self.skip();
        self.nl();
        self.skip();
        self.expect(b']')?;
        Ok(e)
    }

    /// `command_stmt = _{ command_call ~ &(sep | "}" | EOI | kw_else) }`
    fn command_stmt(&mut self) -> R<Stmt> {
        let e = self.command_call()?;
        self.skip();
        if self.is_sep() || self.peek() == b'}' || self.at_eoi() || self.is_kw("else") {
            let span = e.span;
            return Ok(Stmt {
                kind: StmtKind::Expr { expr: e },
                span,
            });
        }
        Err(No)
    }

    /// `command_call = { command_name ~ command_args }`
    fn command_call(&mut self) -> R<Expr> {
        let start = self.pos;
        // Most statements are `name(…)`: check that an argument can start after a plain
        // name before building anything (the grammar fails the same way, later).
        {
            let mut i = self.ident_end()?;
            while matches!(self.at(i), b' ' | b'\t') {
                i += 1;
            }
            if matches!(
                self.at(i),
                b'(' | b'{' | b'\n' | b'\r' | b';' | b'}' | b')' | b',' | b'=' | 0
            ) {
                return Err(No);
            }
        }
        // command_name = { ident ~ ("." ~ ident)* }
        let first = self.ident()?;
        let mut rest: Vec<Ident> = Vec::new();
        self.skip();
        loop {
            let save = self.pos;
            if !rest.is_empty() {
                self.skip();
            }
            if !self.eat_byte(b'.') {
                self.pos = save;
                break;
            }
            self.skip();
            match opt!(self, self.ident()) {
                Some(i) => rest.push(i),
                None => {
                    self.pos = save;
                    break;
                }
            }
        }
        self.skip();
        // command_args = { command_first ~ ("," ~ nl ~ arg)* }
        // command_first = _{ &command_start ~ arg }
        let c = self.peek();
        let starts = match c {
            b'\'' | b'"' | b'$' | b'0'..=b'9' => true,
            b'/' => !matches!(self.at(self.pos + 1), b' ' | b'\t' | b'/' | b'*' | b'='),
            _ => self.ident_start_len(self.pos) > 0,
        };
        if !starts {
            return Err(No);
        }
        let mut args = vec![self.arg()?];
        self.skip();
        args.extend(self.after_commas(false, Self::arg)?);
        let span = self.span(start);
        // `a.b.c 'x'`: the last name is the call, the others its target.
        let (target, name) = match rest.pop() {
            None => (None, first),
            Some(last) => {
                let mut t = Expr {
                    span: first.span,
                    kind: ExprKind::Var { name: first.name },
                };
                for part in rest {
                    t = Expr {
                        span: t.span.to(part.span),
                        kind: ExprKind::Property {
                            target: Box::new(t),
                            name: part,
                            safe: false,
                        },
                    };
                }
                (Some(Box::new(t)), last)
            }
        };
        Ok(Expr {
            kind: ExprKind::Call(Call {
                target,
                name,
                args,
                closure: None,
                safe: false,
                command: true,
            }),
            span,
        })
    }

    /// `expr_stmt = { !"{" ~ expr }`
    fn expr_stmt(&mut self, start: usize) -> R<Stmt> {
        if self.peek() == b'{' {
            return Err(No);
        }
        let expr = self.expr()?;
        Ok(Stmt {
            kind: StmtKind::Expr { expr },
            span: self.span(start),
        })
    }

    // ------------------------------------------------------------ expressions

    /// `arg = { named_arg | expr }`
    fn arg(&mut self) -> R<Arg> {
        if let Some(a) = opt!(self, self.named_arg()) {
            return Ok(a);
        }
        Ok(Arg::Positional(self.expr()?))
    }

    /// `named_arg = { arg_name ~ ":" ~ !":" ~ nl ~ expr }`,
    /// `arg_name = { ident_or_kw | sq_string | dq_plain }`
    fn named_arg(&mut self) -> R<Arg> {
        let start = self.pos;
        // Cheap check first: a name or a quoted string, then `:`.
        {
            let mut i = match self.peek() {
                b'\'' | b'"' => {
                    let q = self.peek();
                    let mut i = start + 1;
                    loop {
                        match self.at(i) {
                            b'\\' => i += 2,
                            c if c == q => break i + 1,
                            b'\n' | b'\r' => return Err(No),
                            0 if i >= self.b.len() => return Err(No),
                            _ => i += 1,
                        }
                    }
                }
                _ => {
                    if self.ident_start_len(start) == 0 {
                        return Err(No);
                    }
                    self.word_end(start)
                }
            };
            while matches!(self.at(i), b' ' | b'\t') {
                i += 1;
            }
            if !matches!(self.at(i), b':' | b'/' | b'\\' | 0xEF | 0xC2) {
                return Err(No);
            }
        }
        let name = match self.peek() {
            b'\'' => match self.sq_string()?.kind {
                ExprKind::Str { value } => value,
                _ => unreachable!("a single-quoted string is literal"),
            },
            b'"' => self.dq_plain()?,
            _ => self.ident_or_kw()?.to_string(),
        };
        let nspan = self.span(start);
        self.skip();
        self.expect(b':')?;
        self.skip();
        if self.peek() == b':' {
            return Err(No);
        }
        self.skip();
        self.nl();
        self.skip();
        let value = self.expr()?;
        Ok(Arg::Named {
            name: Ident { name, span: nspan },
            value,
        })
    }

    /// `paren_args = { "(" ~ nl ~ arg_list? ~ nl ~ ")" }`,
    /// `arg_list = _{ arg ~ (nl ~ "," ~ nl ~ arg)* ~ (nl ~ ",")? }`
    fn paren_args(&mut self) -> R<Vec<Arg>> {
        self.expect(b'(')?;
        self.skip();
        self.nl();
        self.skip();
        let mut args = Vec::new();
        if let Some(a) = opt!(self, self.arg()) {
            args.push(a);
            self.skip();
            args.extend(self.after_commas(true, Self::arg)?);
            self.skip();
            self.trailing_comma();
        }
        self.skip();
        self.nl();
        self.skip();
        self.expect(b')')?;
        Ok(args)
    }

    fn expr(&mut self) -> R<Expr> {
        self.enter()?;
        let r = self.expr_inner();
        self.depth -= 1;
        r
    }

    /// `expr = { operand ~ (infix_op ~ nl ~ operand)* ~ ternary_tail? }`
    fn expr_inner(&mut self) -> R<Expr> {
        let start = self.pos;
        let first = self.operand()?;
        self.skip();
        let mut operands: Vec<Expr> = Vec::new();
        let mut ops: Vec<(Infix, Span)> = Vec::new();
        loop {
            let save = self.pos;
            if !ops.is_empty() {
                self.skip();
            }
            let ostart = self.pos;
            let Some(op) = self.infix_op() else {
                self.pos = save;
                break;
            };
            let ospan = self.span(ostart);
            self.skip();
            self.nl();
            self.skip();
            match opt!(self, self.operand()) {
                Some(e) => {
                    ops.push((op, ospan));
                    operands.push(e);
                }
                None => {
                    self.pos = save;
                    break;
                }
            }
        }
        self.skip();
        let ternary = opt!(self, self.ternary_tail());
        let span = self.span(start);
        if ops.len() > MAX_CHAIN {
            return Err(Bail);
        }
        let mut base = if ops.is_empty() {
            first
        } else {
            let mut rest = ops.into_iter().zip(operands).peekable();
            climb(first, &mut rest, 0)
        };
        if let Some((a, b)) = ternary {
            base = match b {
                None => Expr {
                    kind: ExprKind::Elvis {
                        value: Box::new(base),
                        fallback: Box::new(a),
                    },
                    span,
                },
                Some(b) => Expr {
                    kind: ExprKind::Ternary {
                        cond: Box::new(base),
                        then: Box::new(a),
                        otherwise: Box::new(b),
                    },
                    span,
                },
            };
        }
        Ok(base)
    }

    /// `ternary_tail = { nl ~ "?:" ~ nl ~ expr | nl ~ "?" ~ !("." | ":") ~ nl ~ expr ~ nl ~ ":" ~ nl ~ expr }`
    fn ternary_tail(&mut self) -> R<(Expr, Option<Expr>)> {
        let start = self.pos;
        self.nl();
        self.skip();
        if self.eat(b"?:") {
            self.skip();
            self.nl();
            self.skip();
            if let Some(e) = opt!(self, self.expr()) {
                return Ok((e, None));
            }
        }
        self.pos = start;
        self.nl();
        self.skip();
        self.expect(b'?')?;
        self.skip();
        if matches!(self.peek(), b'.' | b':') {
            return Err(No);
        }
        self.skip();
        self.nl();
        self.skip();
        let a = self.expr()?;
        self.skip();
        self.nl();
        self.skip();
        self.expect(b':')?;
        self.skip();
        self.nl();
        self.skip();
        let b = self.expr()?;
        Ok((a, Some(b)))
    }

    /// `infix_op`, alternatives in the grammar's order.
    fn infix_op(&mut self) -> Option<Infix> {
        let start = self.pos;
        let c0 = self.peek();
        let c1 = self.at(start + 1);
        let c2 = self.at(start + 2);
        let len = match c0 {
            b'*' if c1 == b'*' => 2,
            b'=' if c1 == b'=' && c2 == b'~' => 3,
            b'=' if c1 == b'=' => 2,
            b'!' if c1 == b'=' => 2,
            b'<' if c1 == b'=' && c2 == b'>' => 3,
            b'<' if c1 == b'=' => 2,
            b'>' if c1 == b'=' => 2,
            b'=' if c1 == b'~' => 2,
            b'<' if c1 == b'<' && c2 != b'=' => 2,
            b'>' if c1 == b'>' => 2,
            b'<' => 1,
            b'>' => 1,
            b'&' if c1 == b'&' => 2,
            b'|' if c1 == b'|' => 2,
            b'.' if c1 == b'.' && c2 == b'<' => 3,
            b'.' if c1 == b'.' => 2,
            b'&' => 1,
            b'|' => 1,
            b'^' => 1,
            b'*' if c1 != b'=' => 1,
            b'/' if c1 != b'=' => 1,
            b'%' => 1,
            b'+' if c1 != b'=' => 1,
            b'-' if c1 != b'=' && c1 != b'>' => 1,
            b'!' if c1 == b'i' && c2 == b'n' && self.ident_char_len(start + 3) == 0 => 3,
            b'i' if self.is_kw("in") => 2,
            b'i' if self.is_kw("instanceof") => 10,
            _ => return None,
        };
        self.pos = start + len;
        Some(infix_of(&self.src[start..self.pos]))
    }

    /// `prefix_op = @{ "++" | "--" | "!" | "-" ~ !"=" | "+" ~ !"=" | "~" }`
    fn prefix_op(&mut self) -> Option<Prefix> {
        let c1 = self.at(self.pos + 1);
        let (p, len) = match self.peek() {
            b'+' if c1 == b'+' => (Prefix::Inc, 2),
            b'-' if c1 == b'-' => (Prefix::Dec, 2),
            b'!' => (Prefix::Not, 1),
            b'-' if c1 != b'=' => (Prefix::Neg, 1),
            b'+' if c1 != b'=' => (Prefix::Plus, 1),
            b'~' => (Prefix::BitNot, 1),
            _ => return None,
        };
        self.pos += len;
        Some(p)
    }

    /// `operand = { prefix_op* ~ primary ~ postfix* }`
    fn operand(&mut self) -> R<Expr> {
        let mut prefixes: Vec<(Prefix, Span)> = Vec::new();
        loop {
            let save = self.pos;
            if !prefixes.is_empty() {
                self.skip();
            }
            let pstart = self.pos;
            match self.prefix_op() {
                Some(p) => prefixes.push((p, self.span(pstart))),
                None => {
                    self.pos = save;
                    break;
                }
            }
            if prefixes.len() > MAX_CHAIN {
                return Err(Bail);
            }
        }
        self.skip();
        let mut e = self.primary()?;
        let mut parts = prefixes.len() + 1;
        self.skip();
        let mut first = true;
        loop {
            let save = self.pos;
            if !first {
                self.skip();
            }
            let qstart = self.pos;
            // postfix = _{ member | index | inc_dec | as_cast }
            if let Some((safe, name, suffix)) = opt!(self, self.member()) {
                let span = e.span.to(self.span(qstart));
                e = match suffix {
                    (None, None) => Expr {
                        kind: ExprKind::Property {
                            target: Box::new(e),
                            name,
                            safe,
                        },
                        span,
                    },
                    (args, closure) => Expr {
                        kind: ExprKind::Call(Call {
                            target: Some(Box::new(e)),
                            name,
                            args: args.unwrap_or_default(),
                            closure,
                            safe,
                            command: false,
                        }),
                        span,
                    },
                };
            } else if let Some(index) = opt!(self, self.bracketed_index()) {
                let span = e.span.to(self.span(qstart));
                e = Expr {
                    kind: ExprKind::Index {
                        target: Box::new(e),
                        index: Box::new(index),
                    },
                    span,
                };
            } else if self.starts(b"++") || self.starts(b"--") {
                let delta = if self.peek() == b'+' { 1 } else { -1 };
                self.pos += 2;
                let span = e.span.to(self.span(qstart));
                e = Expr {
                    kind: ExprKind::Step {
                        target: Box::new(e),
                        delta,
                        prefix: false,
                    },
                    span,
                };
            } else if let Some(ty) = opt!(self, {
                // as_cast = { kw_as ~ type_ref }
                self.kw_r("as").and_then(|_| {
                    self.skip();
                    self.type_ref()
                })
            }) {
                let span = e.span.to(self.span(qstart));
                e = Expr {
                    kind: ExprKind::Cast {
                        value: Box::new(e),
                        ty,
                    },
                    span,
                };
            } else {
                self.pos = save;
                break;
            }
            first = false;
            parts += 1;
            if parts > MAX_CHAIN {
                return Err(Bail);
            }
        }
        for (op, ospan) in prefixes.into_iter().rev() {
            let span = ospan.to(e.span);
            let operand = Box::new(e);
            let kind = match op {
                Prefix::Not => ExprKind::Unary {
                    op: UnaryOp::Not,
                    operand,
                },
                Prefix::Neg => ExprKind::Unary {
                    op: UnaryOp::Neg,
                    operand,
                },
                Prefix::Plus => ExprKind::Unary {
                    op: UnaryOp::Plus,
                    operand,
                },
                Prefix::BitNot => ExprKind::Unary {
                    op: UnaryOp::BitNot,
                    operand,
                },
                Prefix::Inc => ExprKind::Step {
                    target: operand,
                    delta: 1,
                    prefix: true,
                },
                Prefix::Dec => ExprKind::Step {
                    target: operand,
                    delta: -1,
                    prefix: true,
                },
            };
            e = Expr { kind, span };
        }
        Ok(e)
    }

    /// `member = { nl ~ member_op ~ nl ~ member_name ~ call_suffix? }`,
    /// `member_op = @{ "?." | "." ~ !("." | "&") }`
    fn member(&mut self) -> R<(bool, Ident, Suffix)> {
        self.nl();
        self.skip();
        let safe = if self.eat(b"?.") {
            true
        } else if self.peek() == b'.' && !matches!(self.at(self.pos + 1), b'.' | b'&') {
            self.pos += 1;
            false
        } else {
            return Err(No);
        };
        self.skip();
        self.nl();
        self.skip();
        let name = self.member_name()?;
        self.skip();
        let suffix = opt!(self, self.call_suffix()).unwrap_or((None, None));
        Ok((safe, name, suffix))
    }

    /// `member_name = { ident_or_kw | sq_string | dq_string }`
    fn member_name(&mut self) -> R<Ident> {
        let start = self.pos;
        let name = match self.peek() {
            b'\'' => match self.sq_string()?.kind {
                ExprKind::Str { value } => value,
                _ => unreachable!("a single-quoted string is literal"),
            },
            b'"' => match self.dq_string(b"\"")?.kind {
                ExprKind::Str { value } => value,
                // `."${x}"`: refused with a diagnostic by the builder.
                _ => return Err(Bail),
            },
            _ => self.ident_or_kw()?.to_string(),
        };
        Ok(Ident {
            name,
            span: self.span(start),
        })
    }

    /// `call_suffix = _{ paren_args ~ trailing_closure? | trailing_closure }`,
    /// `trailing_closure = _{ nl ~ closure }`
    fn call_suffix(&mut self) -> R<Suffix> {
        if let Some(args) = opt!(self, self.paren_args()) {
            self.skip();
            let closure = opt!(self, self.trailing_closure());
            return Ok((Some(args), closure.map(Box::new)));
        }
        let c = self.trailing_closure()?;
        Ok((None, Some(Box::new(c))))
    }

    fn trailing_closure(&mut self) -> R<Closure> {
        self.nl();
        self.skip();
        self.closure()
    }

    /// `closure = { "{" ~ nl ~ closure_params? ~ stmts ~ "}" }`
    fn closure(&mut self) -> R<Closure> {
        let start = self.pos;
        self.expect(b'{')?;
        self.skip();
        self.nl();
        self.skip();
        let params = if self.may_have_params() {
            opt!(self, self.closure_params())
        } else {
            None
        };
        self.skip();
        let mut body = Vec::new();
        self.stmts(&mut body)?;
        self.skip();
        self.expect(b'}')?;
        let arrow = params.is_some();
        Ok(Closure {
            params: params.unwrap_or_default(),
            arrow,
            body,
            span: self.span(start),
        })
    }

    /// Whether `closure_params` may match here: its text holds only names, types, `,`, new
    /// lines and white space up to `->`; any other byte first means it cannot. Comments and
    /// other skipped text are left to the rule itself.
    fn may_have_params(&self) -> bool {
        let mut i = self.pos;
        loop {
            match self.at(i) {
                b'-' => return self.at(i + 1) == b'>',
                b'/' | b'\\' | 0xEF | 0xC2 => return true,
                b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'_' | b'$' | 0xC3 | 0x80..=0xBF => {}
                b'.' | b'<' | b'>' | b',' | b'?' | b'[' | b']' | b' ' | b'\t' | b'\n' | b'\r' => {}
                _ => return false,
            }
            i += 1;
        }
    }

    /// `closure_params = { (closure_param ~ ("," ~ nl ~ closure_param)*)? ~ "->" }`
    fn closure_params(&mut self) -> R<Vec<Param>> {
        let mut params = Vec::new();
        if let Some(p) = opt!(self, self.closure_param()) {
            params.push(p);
            self.skip();
            params.extend(self.after_commas(false, Self::closure_param)?);
        }
        self.skip();
        if self.eat(b"->") { Ok(params) } else { Err(No) }
    }

    /// `primary = _{ paren_expr | closure | collection | literal | new_expr | call_or_var
    /// | slashy_string }`
    fn primary(&mut self) -> R<Expr> {
        let start = self.pos;
        match self.peek() {
            b'(' => {
                // paren_expr = { "(" ~ nl ~ expr ~ nl ~ ")" }: the builder keeps the inner expression.
                alt!(self, self.cond());
                Err(No)
            }
            b'{' => {
                let c = self.closure()?;
                Ok(Expr {
                    span: c.span,
                    kind: ExprKind::Closure(c),
                })
            }
            b'[' => self.collection(),
            b'0'..=b'9' => self.number(),
            b'\'' => {
                alt!(self, self.tsq_string());
                self.sq_string()
            }
            b'"' => {
                alt!(self, self.dq_string(b"\"\"\""));
                self.dq_string(b"\"")
            }
            b'/' => self.slashy_string(),
            _ => {
                if self.kw("true") {
                    return Ok(Expr {
                        kind: ExprKind::Bool { value: true },
                        span: self.span(start),
                    });
                }
                if self.kw("false") {
                    return Ok(Expr {
                        kind: ExprKind::Bool { value: false },
                        span: self.span(start),
                    });
                }
                if self.kw("null") {
                    return Ok(Expr {
                        kind: ExprKind::Null,
                        span: self.span(start),
                    });
                }
                if self.is_kw("new") {
                    alt!(self, self.new_expr(start));
                }
                self.call_or_var(start)
            }
        }
    }

    /// `call_or_var = { ident ~ call_suffix? }`
    fn call_or_var(&mut self, start: usize) -> R<Expr> {
        let name = self.ident()?;
        self.skip();
        let suffix = opt!(self, self.call_suffix());
        let span = self.span(start);
        Ok(match suffix {
            None => Expr {
                kind: ExprKind::Var { name: name.name },
                span,
            },
            Some((args, closure)) => Expr {
                kind: ExprKind::Call(Call {
                    target: None,
                    name,
                    args: args.unwrap_or_default(),
                    closure,
                    safe: false,
                    command: false,
                }),
                span,
            },
        })
    }

    /// `new_expr = { kw_new ~ type_ref ~ (paren_args | "[" ~ expr? ~ "]") ~ closure? }`
    fn new_expr(&mut self, start: usize) -> R<Expr> {
        self.kw_r("new")?;
        self.skip();
        let class = self.type_ref()?;
        self.skip();
        let mut args = match opt!(self, self.paren_args()) {
            Some(a) => a,
            None => {
                self.expect(b'[')?;
                self.skip();
                let e = opt!(self, self.expr());
                self.skip();
                self.expect(b']')?;
                e.map(Arg::Positional).into_iter().collect()
            }
        };
        self.skip();
        if let Some(c) = opt!(self, self.closure()) {
            args.push(Arg::Positional(Expr {
                span: c.span,
                kind: ExprKind::Closure(c),
            }));
        }
        Ok(Expr {
            kind: ExprKind::New { class, args },
            span: self.span(start),
        })
    }

    /// `collection = { "[" ~ nl ~ (empty_map | coll_entry ~ (nl ~ "," ~ nl ~ coll_entry)* ~
    /// (nl ~ ",")?)? ~ nl ~ "]" }`
    fn collection(&mut self) -> R<Expr> {
        let start = self.pos;
        self.expect(b'[')?;
        self.skip();
        self.nl();
        self.skip();
        let mut items = Vec::new();
        let mut entries = Vec::new();
        let mut is_map = false;
        if self.eat_byte(b':') {
            is_map = true;
        } else if let Some(e) = opt!(self, self.coll_entry()) {
            let mut add = |e: (Option<MapKey>, Expr)| -> R<()> {
                match e {
                    (Some(key), value) => entries.push(MapEntry { key, value }),
                    (None, value) => {
                        if !entries.is_empty() {
                            return Err(Bail);
                        }
                        items.push(value);
                    }
                }
                Ok(())
            };
            add(e)?;
            self.skip();
            for e in self.after_commas(true, Self::coll_entry)? {
                add(e)?;
            }
            self.skip();
            self.trailing_comma();
        }
        self.skip();
        self.nl();
        self.skip();
        self.expect(b']')?;
        let span = self.span(start);
        if !entries.is_empty() && !items.is_empty() {
            return Err(Bail);
        }
        let kind = if is_map || !entries.is_empty() {
            ExprKind::Map { entries }
        } else {
            ExprKind::List { items }
        };
        Ok(Expr { kind, span })
    }

    /// `coll_entry = { word_key ~ ":" ~ !":" ~ nl ~ expr | expr ~ (":" ~ !":" ~ nl ~ expr)? }`:
    /// the key (`None` for a list item) and the value.
    fn coll_entry(&mut self) -> R<(Option<MapKey>, Expr)> {
        let start = self.pos;
        // word_key = @{ ident_or_kw ~ &((" " | "\t")* ~ ":" ~ !":") }
        if let Ok(word) = self.ident_or_kw() {
            let kspan = self.span(start);
            let mut i = self.pos;
            while matches!(self.at(i), b' ' | b'\t') {
                i += 1;
            }
            if self.at(i) == b':' && self.at(i + 1) != b':' {
                let entry = opt!(self, {
                    self.skip();
                    self.expect(b':').and_then(|_| {
                        self.skip();
                        if self.peek() == b':' {
                            return Err(No);
                        }
                        self.skip();
                        self.nl();
                        self.skip();
                        self.expr()
                    })
                });
                if let Some(value) = entry {
                    let key = MapKey::Name {
                        name: word.to_string(),
                        span: kspan,
                    };
                    return Ok((Some(key), value));
                }
            }
            self.pos = start;
        }
        let k = self.expr()?;
        self.skip();
        let value = opt!(self, {
            self.expect(b':').and_then(|_| {
                self.skip();
                if self.peek() == b':' {
                    return Err(No);
                }
                self.skip();
                self.nl();
                self.skip();
                self.expr()
            })
        });
        let Some(value) = value else {
            return Ok((None, k));
        };
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
        Ok((Some(key), value))
    }

    /// `number = @{ … }`
    fn number(&mut self) -> R<Expr> {
        let start = self.pos;
        let hex = |c: u8| c.is_ascii_hexdigit();
        if self.peek() == b'0'
            && matches!(self.at(start + 1), b'x' | b'X')
            && hex(self.at(start + 2))
        {
            self.pos = start + 3;
            while hex(self.peek()) || self.peek() == b'_' {
                self.pos += 1;
            }
            if matches!(self.peek(), b'L' | b'l' | b'G' | b'g' | b'I' | b'i') {
                self.pos += 1;
            }
        } else {
            if !self.peek().is_ascii_digit() {
                return Err(No);
            }
            self.pos += 1;
            while self.peek().is_ascii_digit() || self.peek() == b'_' {
                self.pos += 1;
            }
            if self.peek() == b'.' && self.at(self.pos + 1).is_ascii_digit() {
                self.pos += 1;
                while self.peek().is_ascii_digit() {
                    self.pos += 1;
                }
            }
            if matches!(self.peek(), b'e' | b'E') {
                let mut i = self.pos + 1;
                if matches!(self.at(i), b'+' | b'-') {
                    i += 1;
                }
                if self.at(i).is_ascii_digit() {
                    while self.at(i).is_ascii_digit() {
                        i += 1;
                    }
                    self.pos = i;
                }
            }
            if matches!(
                self.peek(),
                b'L' | b'l' | b'G' | b'g' | b'I' | b'i' | b'F' | b'f' | b'D' | b'd'
            ) {
                self.pos += 1;
            }
        }
        let span = self.span(start);
        let mut diags = Vec::new();
        let kind = number_kind(&self.src[start..self.pos], span, &mut diags);
        if !diags.is_empty() {
            return Err(Bail);
        }
        Ok(Expr { kind, span })
    }

    /// `escape = @{ "\\" ~ ("u" ~ ASCII_HEX_DIGIT{4} | ANY) }` at the current position:
    /// its length, or 0.
    fn escape_len(&self) -> usize {
        if self.peek() != b'\\' {
            return 0;
        }
        match self.src[self.pos + 1..].chars().next() {
            Some(c) => 1 + c.len_utf8(),
            None => 0,
        }
    }

    /// Decodes a string body; a bad escape (which the builder reports) leaves it to pest.
    fn unescaped(&self, start: usize, end: usize) -> R<String> {
        let mut diags = Vec::new();
        let s = unescape(&self.src[start..end], start, &mut diags);
        if diags.is_empty() { Ok(s) } else { Err(Bail) }
    }

    /// The length of one char at the current position (ANY), 0 at the end.
    #[inline]
    fn any_len(&self) -> usize {
        match self.b.get(self.pos) {
            None => 0,
            Some(0..=0x7F) => 1,
            Some(_) => self.src[self.pos..]
                .chars()
                .next()
                .map_or(0, char::len_utf8),
        }
    }

    /// `sq_string = ${ "'" ~ sq_text ~ "'" }`,
    /// `sq_text = @{ (escape | !("'" | "\\" | NEWLINE) ~ ANY)* }`
    fn sq_string(&mut self) -> R<Expr> {
        let start = self.pos;
        self.expect(b'\'')?;
        let body = self.pos;
        loop {
            // Plain text, byte by byte: every byte that ends it is ASCII, so a multi-byte
            // character is passed over whole.
            let rest = &self.b[self.pos..];
            let n = rest
                .iter()
                .position(|&c| matches!(c, b'\'' | b'\\' | b'\n' | b'\r'))
                .unwrap_or(rest.len());
            self.pos += n;
            let e = self.escape_len();
            if e == 0 {
                break;
            }
            self.pos += e;
        }
        let end = self.pos;
        self.expect(b'\'')?;
        let value = self.unescaped(body, end)?;
        Ok(Expr {
            kind: ExprKind::Str { value },
            span: self.span(start),
        })
    }

    /// `tsq_string = ${ "'''" ~ tsq_text ~ "'''" }`,
    /// `tsq_text = @{ (escape | !("'''" | "\\") ~ ANY)* }`
    fn tsq_string(&mut self) -> R<Expr> {
        let start = self.pos;
        if !self.eat(b"'''") {
            return Err(No);
        }
        let body = self.pos;
        loop {
            let e = self.escape_len();
            if e > 0 {
                self.pos += e;
                continue;
            }
            if self.starts(b"'''") || self.peek() == b'\\' {
                break;
            }
            let n = self.any_len();
            if n == 0 {
                break;
            }
            self.pos += n;
        }
        let end = self.pos;
        if !self.eat(b"'''") {
            return Err(No);
        }
        let value = self.unescaped(body, end)?;
        Ok(Expr {
            kind: ExprKind::Str { value },
            span: self.span(start),
        })
    }

    /// `dq_plain = ${ "\"" ~ dq_plain_text ~ "\"" }` (an argument name): its value.
    fn dq_plain(&mut self) -> R<String> {
        self.expect(b'"')?;
        let body = self.pos;
        loop {
            let e = self.escape_len();
            if e > 0 {
                self.pos += e;
                continue;
            }
            match self.peek() {
                b'"' | b'\\' | b'$' | b'\n' | b'\r' => break,
                _ => {
                    let n = self.any_len();
                    if n == 0 {
                        break;
                    }
                    self.pos += n;
                }
            }
        }
        let end = self.pos;
        self.expect(b'"')?;
        self.unescaped(body, end)
    }

    /// `dq_string` (`quote` is `"`) or `tdq_string` (`"""`): text, `$name` and `${…}` parts.
    fn dq_string(&mut self, quote: &[u8]) -> R<Expr> {
        let start = self.pos;
        let triple = quote.len() == 3;
        if !self.eat(quote) {
            return Err(No);
        }
        let mut parts: Vec<GStringPart> = Vec::new();
        loop {
            if self.starts(b"${") {
                // interp = !{ "${" ~ nl ~ interp_body ~ nl ~ "}" }
                if let Some(part) = opt!(self, self.interp()) {
                    parts.push(part);
                    continue;
                }
            }
            if self.peek() == b'$' && (self.peek_at_alpha(self.pos + 1)) {
                // gvar = @{ "$" ~ gvar_name ~ ("." ~ gvar_name)* }
                let gstart = self.pos;
                self.pos += 1;
                self.gvar_name();
                while self.peek() == b'.' && self.peek_at_alpha(self.pos + 1) {
                    self.pos += 1;
                    self.gvar_name();
                }
                let span = self.span(gstart);
                parts.push(GStringPart::Expr {
                    expr: gvar_expr(&self.src[gstart..self.pos], span),
                });
                continue;
            }
            // dq_text / tdq_text: one or more text pieces.
            let tstart = self.pos;
            loop {
                let e = self.escape_len();
                if e > 0 {
                    self.pos += e;
                    continue;
                }
                match self.peek() {
                    b'"' if !triple || self.starts(b"\"\"\"") => break,
                    b'\\' => break,
                    b'\n' | b'\r' if !triple => break,
                    b'$' => {
                        if self.at(self.pos + 1) == b'{' || self.ident_start_len(self.pos + 1) > 0 {
                            break;
                        }
                        self.pos += 1;
                    }
                    _ => {
                        let n = self.any_len();
                        if n == 0 {
                            break;
                        }
                        self.pos += n;
                    }
                }
            }
            if self.pos == tstart {
                break;
            }
            let value = self.unescaped(tstart, self.pos)?;
            match parts.last_mut() {
                Some(GStringPart::Lit { value: prev }) => prev.push_str(&value),
                _ => parts.push(GStringPart::Lit { value }),
            }
        }
        if !self.eat(quote) {
            return Err(No);
        }
        let span = self.span(start);
        if parts.iter().all(|p| matches!(p, GStringPart::Lit { .. })) {
            let value = parts
                .into_iter()
                .map(|p| match p {
                    GStringPart::Lit { value } => value,
                    GStringPart::Expr { .. } => String::new(),
                })
                .collect();
            return Ok(Expr {
                kind: ExprKind::Str { value },
                span,
            });
        }
        Ok(Expr {
            kind: ExprKind::GString { parts },
            span,
        })
    }

    /// `ASCII_ALPHA | "_"` at `i`: the start of a `gvar_name`.
    fn peek_at_alpha(&self, i: usize) -> bool {
        let c = self.at(i);
        c.is_ascii_alphabetic() || c == b'_'
    }

    /// `gvar_name = @{ (ASCII_ALPHA | "_") ~ (ASCII_ALPHANUMERIC | "_")* }` (start checked).
    fn gvar_name(&mut self) {
        self.pos += 1;
        while self.peek().is_ascii_alphanumeric() || self.peek() == b'_' {
            self.pos += 1;
        }
    }

    /// `interp = !{ "${" ~ nl ~ interp_body ~ nl ~ "}" }`, `interp_body = { expr? }`
    fn interp(&mut self) -> R<GStringPart> {
        let start = self.pos;
        if !self.eat(b"${") {
            return Err(No);
        }
        self.skip();
        self.nl();
        self.skip();
        let e = opt!(self, self.expr());
        self.skip();
        self.nl();
        self.skip();
        self.expect(b'}')?;
        let expr = e.unwrap_or(Expr {
            kind: ExprKind::Null,
            span: self.span(start),
        });
        Ok(GStringPart::Expr { expr })
    }

    /// `slashy_string = ${ "/" ~ !(" " | "\t" | "/" | "*" | "=") ~ slashy_text ~ "/" }`,
    /// `slashy_text = @{ ("\\" ~ !NEWLINE ~ ANY | !("/" | NEWLINE | "\\") ~ ANY)+ }`
    fn slashy_string(&mut self) -> R<Expr> {
        let start = self.pos;
        self.expect(b'/')?;
        if matches!(self.peek(), b' ' | b'\t' | b'/' | b'*' | b'=') {
            return Err(No);
        }
        let body = self.pos;
        loop {
            match self.peek() {
                b'\\' => {
                    self.pos += 1;
                    if self.newline_len(self.pos) > 0 || self.at_eoi() {
                        self.pos -= 1;
                        break;
                    }
                    self.pos += self.any_len();
                }
                b'/' | b'\n' | b'\r' => break,
                _ => {
                    let n = self.any_len();
                    if n == 0 {
                        break;
                    }
                    self.pos += n;
                }
            }
        }
        if self.pos == body {
            return Err(No);
        }
        let end = self.pos;
        self.expect(b'/')?;
        Ok(Expr {
            kind: ExprKind::Regex {
                pattern: self.src[body..end].replace("\\/", "/"),
            },
            span: self.span(start),
        })
    }
}
