//! The spanned syntax tree of a pipeline file.
//!
//! It mirrors what was written, not what it means: `stage('x') { … }` is a [`ExprKind::Call`]
//! with a trailing closure, whatever `stage` turns out to be. Meaning is the planner's job
//! (`valet-plan`). Every node carries the [`Span`] of the text it came from.

use crate::span::Span;
use serde::Serialize;

/// A whole pipeline file.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Script {
    pub stmts: Vec<Stmt>,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Ident {
    pub name: String,
    pub span: Span,
}

/// A `{ … }` statement block (of `if`, `for`, `try`, functions).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Block {
    pub stmts: Vec<Stmt>,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Stmt {
    pub kind: StmtKind,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "stmt", rename_all = "snake_case")]
pub enum StmtKind {
    /// An expression used as a statement (most steps are calls).
    Expr {
        expr: Expr,
    },
    /// `def x = e`, `String x = e`, `def x`; `ty` is the written type, `None` for `def`.
    Decl {
        ty: Option<String>,
        name: Ident,
        value: Option<Expr>,
    },
    /// `x = e`, `env.X = e`, `m['k'] = e`, `x += e`.
    Assign {
        target: Expr,
        op: AssignOp,
        value: Expr,
    },
    If {
        cond: Expr,
        then: Block,
        otherwise: Option<Box<Stmt>>,
    },
    /// `for (x in e) { … }`
    ForIn {
        var: Ident,
        iter: Expr,
        body: Block,
    },
    /// `for (init; cond; update) { … }`
    For {
        init: Option<Box<Stmt>>,
        cond: Option<Expr>,
        update: Option<Box<Stmt>>,
        body: Block,
    },
    While {
        cond: Expr,
        body: Block,
    },
    Try {
        body: Block,
        catches: Vec<Catch>,
        finally: Option<Block>,
    },
    Switch {
        subject: Expr,
        cases: Vec<Case>,
    },
    Return {
        value: Option<Expr>,
    },
    Throw {
        value: Expr,
    },
    Break,
    Continue,
    /// `def name(a, b = 1) { … }`
    Function(Function),
    /// A nested `{ … }` used as a block statement (the `else` of an `if` uses this too).
    Block(Block),
    /// Something the grammar recognises only to refuse it by name: `import`, `class`,
    /// `@Library`. The planner reports it; the runtime never sees it.
    Unsupported {
        construct: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AssignOp {
    Set,
    Add,
    Sub,
    Mul,
    Div,
    /// `x ?= e` is not Groovy; `<<=` and friends are rare and refused.
    Elvis,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Catch {
    /// The caught types (`catch (IOException | InterruptedException e)`), empty for `catch (e)`.
    pub types: Vec<String>,
    pub var: Ident,
    pub body: Block,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Case {
    /// `None` is `default:`.
    pub value: Option<Expr>,
    pub body: Vec<Stmt>,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Function {
    pub name: Ident,
    pub params: Vec<Param>,
    pub body: Block,
    /// Annotations written before it (`NonCPS`), without the `@`.
    pub annotations: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Param {
    pub name: Ident,
    pub ty: Option<String>,
    pub default: Option<Expr>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Expr {
    pub kind: ExprKind,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "expr", rename_all = "snake_case")]
pub enum ExprKind {
    Null,
    Bool {
        value: bool,
    },
    Int {
        value: i64,
    },
    Float {
        value: f64,
    },
    /// A literal string: `'…'`, `'''…'''`, or a `"…"` without interpolation.
    Str {
        value: String,
    },
    /// A `"…"` or `"""…"""` string with `${…}` or `$name` parts, kept for the runtime.
    GString {
        parts: Vec<GStringPart>,
    },
    /// A slashy string `/…/` (used as a regex or a path); no interpolation is done.
    Regex {
        pattern: String,
    },
    List {
        items: Vec<Expr>,
    },
    Map {
        entries: Vec<MapEntry>,
    },
    /// A bare name: a variable, a step name used as a value, `env`, `params`, `scm`.
    Var {
        name: String,
    },
    /// `target.name` or `target?.name`.
    Property {
        target: Box<Expr>,
        name: Ident,
        safe: bool,
    },
    /// `target[index]`.
    Index {
        target: Box<Expr>,
        index: Box<Expr>,
    },
    /// A call: `name(args)`, `name args` (command form), `target.name(args) { closure }`.
    Call(Call),
    Closure(Closure),
    Unary {
        op: UnaryOp,
        operand: Box<Expr>,
    },
    Binary {
        op: BinaryOp,
        lhs: Box<Expr>,
        rhs: Box<Expr>,
    },
    /// `cond ? a : b`
    Ternary {
        cond: Box<Expr>,
        then: Box<Expr>,
        otherwise: Box<Expr>,
    },
    /// `a ?: b`
    Elvis {
        value: Box<Expr>,
        fallback: Box<Expr>,
    },
    /// `e as Integer`
    Cast {
        value: Box<Expr>,
        ty: String,
    },
    /// `x++`, `x--`, `++x`, `--x` used as expressions or statements.
    Step {
        target: Box<Expr>,
        delta: i8,
        prefix: bool,
    },
    /// `new Foo(args)`: the planner accepts a few known classes and refuses the rest.
    New {
        class: String,
        args: Vec<Arg>,
    },
    /// `a..b` and `a..<b`.
    Range {
        from: Box<Expr>,
        to: Box<Expr>,
        inclusive: bool,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Call {
    /// The receiver of a method call (`docker` in `docker.image(…)`), `None` for a plain call.
    pub target: Option<Box<Expr>>,
    pub name: Ident,
    pub args: Vec<Arg>,
    /// The closure written after the call (`node('x') { … }`), which Groovy passes as the last argument.
    pub closure: Option<Box<Closure>>,
    /// `?.` call.
    pub safe: bool,
    /// `sh 'make'` rather than `sh('make')`.
    pub command: bool,
}

impl Call {
    /// Positional arguments, in order.
    pub fn positional(&self) -> impl Iterator<Item = &Expr> {
        self.args.iter().filter_map(|a| match a {
            Arg::Positional(e) => Some(e),
            Arg::Named { .. } => None,
        })
    }

    /// The named argument `name`, if written.
    pub fn named(&self, name: &str) -> Option<&Expr> {
        self.args.iter().find_map(|a| match a {
            Arg::Named { name: n, value } if n.name == name => Some(value),
            _ => None,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "arg", rename_all = "snake_case")]
pub enum Arg {
    Positional(Expr),
    Named { name: Ident, value: Expr },
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MapEntry {
    pub key: MapKey,
    pub value: Expr,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "key", rename_all = "snake_case")]
pub enum MapKey {
    /// `name:` or `'name':` — a fixed string key.
    Name { name: String, span: Span },
    /// `(expr):` or a GString key — computed at run time.
    Expr { expr: Expr },
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Closure {
    /// `{ a, b -> … }`; empty for `{ … }` (which has the implicit `it`) and `{ -> … }`.
    pub params: Vec<Param>,
    /// Whether `->` was written (so `{ -> … }` takes no `it`).
    pub arrow: bool,
    pub body: Vec<Stmt>,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "part", rename_all = "snake_case")]
pub enum GStringPart {
    Lit {
        value: String,
    },
    /// `${expr}` or `$a.b`.
    Expr {
        expr: Expr,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum UnaryOp {
    Not,
    Neg,
    Plus,
    BitNot,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BinaryOp {
    Pow,
    Mul,
    Div,
    Rem,
    Add,
    Sub,
    Shl,
    Shr,
    Lt,
    Le,
    Gt,
    Ge,
    In,
    NotIn,
    InstanceOf,
    Eq,
    Ne,
    Cmp,
    /// `=~` (find)
    Find,
    /// `==~` (whole match)
    Match,
    BitAnd,
    BitXor,
    BitOr,
    And,
    Or,
}

impl BinaryOp {
    pub fn symbol(self) -> &'static str {
        use BinaryOp::*;
        match self {
            Pow => "**",
            Mul => "*",
            Div => "/",
            Rem => "%",
            Add => "+",
            Sub => "-",
            Shl => "<<",
            Shr => ">>",
            Lt => "<",
            Le => "<=",
            Gt => ">",
            Ge => ">=",
            In => "in",
            NotIn => "!in",
            InstanceOf => "instanceof",
            Eq => "==",
            Ne => "!=",
            Cmp => "<=>",
            Find => "=~",
            Match => "==~",
            BitAnd => "&",
            BitXor => "^",
            BitOr => "|",
            And => "&&",
            Or => "||",
        }
    }
}

impl Expr {
    /// The string value of a literal string expression (not a GString with parts).
    pub fn as_str(&self) -> Option<&str> {
        match &self.kind {
            ExprKind::Str { value } => Some(value),
            _ => None,
        }
    }

    /// The dotted name of `a.b.c` when it is only names, e.g. `env.BRANCH_NAME`.
    pub fn dotted_name(&self) -> Option<String> {
        match &self.kind {
            ExprKind::Var { name } => Some(name.clone()),
            ExprKind::Property { target, name, .. } => {
                Some(format!("{}.{}", target.dotted_name()?, name.name))
            }
            _ => None,
        }
    }
}
