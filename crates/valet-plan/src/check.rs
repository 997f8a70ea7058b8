//! The checks every call in a file goes through: unknown steps, unknown parameters,
//! literals of the wrong kind, and constructs valet refuses. Each problem is one
//! diagnostic; all of them are reported together.

use crate::steps::{self, Body, Kind, Ty};
use std::collections::HashSet;
use valet_dsl::Diagnostic;
use valet_dsl::ast::*;

/// Names a call may use without being a step: functions of the file, variables holding
/// closures, and Groovy's own helpers.
pub(crate) struct Names {
    pub(crate) functions: HashSet<String>,
    pub(crate) variables: HashSet<String>,
}

const GROOVY_BUILTINS: &[&str] = &["println", "print", "sprintf", "printf", "assert"];

/// Names of the declarative directives: valid only inside `pipeline { … }`, where the
/// declarative lowering checks them.
pub(crate) const DECLARATIVE_ONLY: &[&str] = &[
    "pipeline",
    "agent",
    "stages",
    "steps",
    "post",
    "environment",
    "options",
    "when",
    "matrix",
    "tools",
    "triggers",
];

impl Names {
    pub(crate) fn collect(script: &Script) -> Names {
        let mut n = Names {
            functions: HashSet::new(),
            variables: HashSet::new(),
        };
        for s in &script.stmts {
            n.stmt(s);
        }
        n
    }

    fn stmt(&mut self, s: &Stmt) {
        match &s.kind {
            StmtKind::Function(f) => {
                self.functions.insert(f.name.name.clone());
                for p in &f.params {
                    self.variables.insert(p.name.name.clone());
                }
                self.block(&f.body);
            }
            StmtKind::Decl { name, value, .. } => {
                self.variables.insert(name.name.clone());
                if let Some(v) = value {
                    self.expr(v);
                }
            }
            StmtKind::Assign { target, value, .. } => {
                if let ExprKind::Var { name } = &target.kind {
                    self.variables.insert(name.clone());
                }
                self.expr(value);
            }
            StmtKind::ForIn { var, iter, body } => {
                self.variables.insert(var.name.clone());
                self.expr(iter);
                self.block(body);
            }
            StmtKind::For { init, body, .. } => {
                if let Some(i) = init {
                    self.stmt(i);
                }
                self.block(body);
            }
            StmtKind::While { body, .. } => self.block(body),
            StmtKind::If {
                then, otherwise, ..
            } => {
                self.block(then);
                if let Some(o) = otherwise {
                    self.stmt(o);
                }
            }
            StmtKind::Try {
                body,
                catches,
                finally,
            } => {
                self.block(body);
                for c in catches {
                    self.variables.insert(c.var.name.clone());
                    self.block(&c.body);
                }
                if let Some(f) = finally {
                    self.block(f);
                }
            }
            StmtKind::Switch { cases, .. } => cases
                .iter()
                .flat_map(|c| &c.body)
                .for_each(|s| self.stmt(s)),
            StmtKind::Block(b) => self.block(b),
            StmtKind::Expr { expr } => self.expr(expr),
            _ => {}
        }
    }

    fn block(&mut self, b: &Block) {
        b.stmts.iter().for_each(|s| self.stmt(s));
    }

    fn expr(&mut self, e: &Expr) {
        visit_closures(e, &mut |c| {
            for p in &c.params {
                self.variables.insert(p.name.name.clone());
            }
            for s in &c.body {
                self.stmt(s);
            }
        });
    }
}

/// Calls `f` on each closure directly inside `e` (not on closures nested in those).
fn visit_closures(e: &Expr, f: &mut dyn FnMut(&Closure)) {
    for_each_child(e, &mut |child| match &child.kind {
        ExprKind::Closure(c) => f(c),
        _ => visit_closures(child, f),
    });
    if let ExprKind::Closure(c) = &e.kind {
        f(c);
    }
    if let ExprKind::Call(call) = &e.kind
        && let Some(c) = &call.closure
    {
        f(c);
    }
}

/// Calls `f` on each direct sub-expression of `e` (arguments, operands, items), not on
/// statements inside closures.
pub(crate) fn for_each_child(e: &Expr, f: &mut dyn FnMut(&Expr)) {
    match &e.kind {
        ExprKind::GString { parts } => parts.iter().for_each(|p| {
            if let GStringPart::Expr { expr } = p {
                f(expr)
            }
        }),
        ExprKind::List { items } => items.iter().for_each(&mut *f),
        ExprKind::Map { entries } => entries.iter().for_each(|en| {
            if let MapKey::Expr { expr } = &en.key {
                f(expr);
            }
            f(&en.value);
        }),
        ExprKind::Property { target, .. } => f(target),
        ExprKind::Index { target, index } => {
            f(target);
            f(index);
        }
        ExprKind::Call(c) => {
            if let Some(t) = &c.target {
                f(t);
            }
            for a in &c.args {
                match a {
                    Arg::Positional(e) | Arg::Named { value: e, .. } => f(e),
                }
            }
        }
        ExprKind::New { args, .. } => args.iter().for_each(|a| match a {
            Arg::Positional(e) | Arg::Named { value: e, .. } => f(e),
        }),
        ExprKind::Unary { operand, .. } => f(operand),
        ExprKind::Binary { lhs, rhs, .. } => {
            f(lhs);
            f(rhs);
        }
        ExprKind::Ternary {
            cond,
            then,
            otherwise,
        } => {
            f(cond);
            f(then);
            f(otherwise);
        }
        ExprKind::Elvis { value, fallback } => {
            f(value);
            f(fallback);
        }
        ExprKind::Cast { value, .. } => f(value),
        ExprKind::Step { target, .. } => f(target),
        ExprKind::Range { from, to, .. } => {
            f(from);
            f(to);
        }
        _ => {}
    }
}

pub(crate) struct Checker<'a> {
    pub(crate) names: &'a Names,
    pub(crate) diags: Vec<Diagnostic>,
}

impl Checker<'_> {
    pub(crate) fn stmts(&mut self, stmts: &[Stmt]) {
        stmts.iter().for_each(|s| self.stmt(s));
    }

    fn block(&mut self, b: &Block) {
        self.stmts(&b.stmts);
    }

    pub(crate) fn stmt(&mut self, s: &Stmt) {
        match &s.kind {
            StmtKind::Expr { expr } => self.expr(expr),
            StmtKind::Decl { value, .. } => {
                if let Some(v) = value {
                    self.expr(v);
                }
            }
            StmtKind::Assign { target, value, .. } => {
                self.expr(target);
                self.expr(value);
            }
            StmtKind::If {
                cond,
                then,
                otherwise,
            } => {
                self.expr(cond);
                self.block(then);
                if let Some(o) = otherwise {
                    self.stmt(o);
                }
            }
            StmtKind::ForIn { iter, body, .. } => {
                self.expr(iter);
                self.block(body);
            }
            StmtKind::For {
                init,
                cond,
                update,
                body,
            } => {
                if let Some(i) = init {
                    self.stmt(i);
                }
                if let Some(c) = cond {
                    self.expr(c);
                }
                if let Some(u) = update {
                    self.stmt(u);
                }
                self.block(body);
            }
            StmtKind::While { cond, body } => {
                self.expr(cond);
                self.block(body);
            }
            StmtKind::Try {
                body,
                catches,
                finally,
            } => {
                self.block(body);
                catches.iter().for_each(|c| self.block(&c.body));
                if let Some(f) = finally {
                    self.block(f);
                }
            }
            StmtKind::Switch { subject, cases } => {
                self.expr(subject);
                for c in cases {
                    if let Some(v) = &c.value {
                        self.expr(v);
                    }
                    self.stmts(&c.body);
                }
            }
            StmtKind::Return { value } => {
                if let Some(v) = value {
                    self.expr(v);
                }
            }
            StmtKind::Throw { value } => self.expr(value),
            StmtKind::Function(f) => self.block(&f.body),
            StmtKind::Block(b) => self.block(b),
            StmtKind::Unsupported { construct } => {
                let help = if construct.contains("@Library") {
                    "valet runs pipeline files on their own; copy the steps you need from the library into this file as functions"
                } else if construct.contains("@Grab") {
                    "valet cannot fetch Java libraries; do that work in an `sh` step with the tools of the container"
                } else if construct.contains("import") {
                    "valet provides the pipeline steps and Groovy's basic types; imported classes are not available"
                } else {
                    "define functions with `def name(args) { … }` instead"
                };
                self.diags.push(
                    Diagnostic::error(
                        "unsupported",
                        s.span,
                        format!("{construct} are not supported"),
                    )
                    .with_label("not supported by valet")
                    .with_help(help),
                );
            }
            StmtKind::Break | StmtKind::Continue => {}
        }
    }

    pub(crate) fn closure(&mut self, c: &Closure) {
        for p in &c.params {
            if let Some(d) = &p.default {
                self.expr(d);
            }
        }
        self.stmts(&c.body);
    }

    pub(crate) fn expr(&mut self, e: &Expr) {
        match &e.kind {
            ExprKind::Call(call) => self.call(call, e),
            ExprKind::New { class, .. } if !allowed_class(class) => {
                self.diags.push(
                        Diagnostic::error("unsupported", e.span, format!("`new {class}(…)` is not supported"))
                            .with_label("valet does not create arbitrary classes")
                            .with_help("use pipeline steps (`readFile`, `writeFile`, `sh`) or Groovy lists and maps instead"),
                    );
            }
            ExprKind::Property { name, .. } if name.name == "metaClass" => {
                self.diags.push(Diagnostic::error(
                    "unsupported",
                    name.span,
                    "metaprogramming (`metaClass`) is not supported",
                ));
            }
            ExprKind::Closure(c) => self.closure(c),
            _ => {}
        }
        if !matches!(e.kind, ExprKind::Closure(_)) {
            for_each_child(e, &mut |child| self.expr(child));
        }
        if let ExprKind::Call(call) = &e.kind
            && let Some(c) = &call.closure
        {
            self.closure(c);
        }
    }

    fn call(&mut self, call: &Call, e: &Expr) {
        let name = call.name.name.as_str();
        if let Some(t) = &call.target {
            if let ExprKind::Var { name: tn } = &t.kind
                && ((tn == "Eval" && name.starts_with("me"))
                    || (tn == "Class" && name == "forName"))
            {
                self.diags.push(
                    Diagnostic::error(
                        "unsupported",
                        e.span,
                        format!("`{tn}.{name}` is not supported"),
                    )
                    .with_label("runs arbitrary code"),
                );
            }
            return;
        }
        if self.names.functions.contains(name)
            || self.names.variables.contains(name)
            || GROOVY_BUILTINS.contains(&name)
        {
            return;
        }
        match name {
            "evaluate" => {
                self.diags.push(
                    Diagnostic::error("unsupported", call.name.span, "`evaluate` is not supported")
                        .with_label("runs code valet cannot check")
                        .with_help(
                            "write the code in the pipeline file, or `load` a file of functions",
                        ),
                );
                return;
            }
            "library" | "libraryResource" => {
                self.diags.push(
                    Diagnostic::error(
                        "unsupported",
                        call.name.span,
                        format!("shared libraries (`{name}`) are not supported"),
                    )
                    .with_help(
                        "copy the steps you need from the library into this file as functions",
                    ),
                );
                return;
            }
            _ => {}
        }
        if DECLARATIVE_ONLY.contains(&name) {
            // `retry(conditions: [agent()])` names a retry condition, not the directive.
            if name == "pipeline"
                || (name == "agent" && call.args.is_empty() && call.closure.is_none())
            {
                return;
            }
            self.diags.push(
                Diagnostic::error(
                    "declarative",
                    call.name.span,
                    format!(
                        "`{name}` is a declarative directive and belongs inside `pipeline {{ … }}`"
                    ),
                )
                .with_help("in a scripted pipeline, use `node`, `stage` and steps"),
            );
            return;
        }
        let Some(def) = steps::find(name) else {
            let mut d = Diagnostic::error(
                "unknown-step",
                call.name.span,
                format!("unknown step `{name}`"),
            )
            .with_label("not a step valet knows, nor a function or variable of this file");
            let candidates = steps::STEPS
                .iter()
                .map(|s| s.name)
                .chain(self.names.functions.iter().map(String::as_str));
            d = match steps::did_you_mean(name, candidates) {
                Some(s) => d.with_help(format!("did you mean `{s}`?")),
                None => d.with_help("the steps valet supports are listed in docs/language.md"),
            };
            self.diags.push(d);
            return;
        };
        if def.kind == Kind::Windows {
            self.diags.push(
                Diagnostic::error(
                    "unsupported",
                    call.name.span,
                    format!("`{name}` runs Windows scripts; valet pods run Linux"),
                )
                .with_label("not available on a Linux pod")
                .with_help("use `sh` with a POSIX shell script"),
            );
            return;
        }
        match steps::named_from_map(call) {
            Some(normal) => self.params(def, &normal, e),
            None => self.params(def, call, e),
        }
    }

    fn params(&mut self, def: &steps::StepDef, call: &Call, e: &Expr) {
        let name = def.name;
        let has_closure_arg = call.args.iter().any(|a| {
            matches!(
                a,
                Arg::Positional(Expr {
                    kind: ExprKind::Closure(_),
                    ..
                })
            )
        });
        let has_body = call.closure.is_some() || has_closure_arg;
        match def.body {
            Body::No if call.closure.is_some() => {
                let span = call.closure.as_ref().map_or(e.span, |c| c.span);
                self.diags.push(
                    Diagnostic::error(
                        "step",
                        span,
                        format!("`{name}` does not take a body `{{ … }}`"),
                    )
                    .with_label("unexpected body"),
                );
            }
            Body::Required if !has_body => {
                self.diags.push(
                    Diagnostic::error("step", e.span, format!("`{name}` needs a body `{{ … }}`"))
                        .with_label("no body")
                        .with_help(format!(
                            "write the steps it wraps in braces: `{name}(…) {{ sh 'make' }}`"
                        )),
                );
            }
            _ => {}
        }
        if name == "parallel" {
            // Named arguments are the branch names; only `failFast` is a parameter.
            return;
        }
        let positional: Vec<&Expr> = call
            .args
            .iter()
            .filter_map(|a| {
                if let Arg::Positional(p) = a {
                    Some(p)
                } else {
                    None
                }
            })
            .filter(|p| !matches!(p.kind, ExprKind::Closure(_)))
            .collect();
        if positional.len() > 1 && !def.variadic {
            self.diags.push(
                Diagnostic::error(
                    "step",
                    positional[1].span,
                    format!("`{name}` takes one argument without a name"),
                )
                .with_label("extra argument")
                .with_help("name the others, e.g. `param: value`"),
            );
        }
        if let (Some(p), Some((pname, ty))) = (positional.first(), def.params.first()) {
            self.check_type(name, pname, *ty, p);
        } else if let (Some(p), None) = (positional.first(), def.params.first()) {
            self.diags.push(
                Diagnostic::error("step", p.span, format!("`{name}` takes no arguments"))
                    .with_label("unexpected argument"),
            );
        }
        for a in &call.args {
            let Arg::Named { name: pn, value } = a else {
                continue;
            };
            if pn.name.starts_with('$') {
                continue;
            }
            match def.params.iter().find(|(p, _)| *p == pn.name) {
                Some((_, ty)) => self.check_type(name, &pn.name, *ty, value),
                None => {
                    // Jenkins logs "WARNING: Unknown parameter(s) found" and goes on: a
                    // warning here too, and the step runs without it.
                    let mut d = Diagnostic::warning(
                        "unknown-parameter",
                        pn.span,
                        format!("`{name}` has no parameter `{}`; it is ignored", pn.name),
                    );
                    d = match steps::did_you_mean(&pn.name, def.params.iter().map(|(p, _)| *p)) {
                        Some(s) => d.with_label(format!("did you mean `{s}`?")),
                        None => d.with_label("unknown parameter"),
                    };
                    let list: Vec<&str> = def.params.iter().map(|(p, _)| *p).collect();
                    d = d.with_help(if list.is_empty() {
                        format!("`{name}` takes no parameters")
                    } else {
                        format!("`{name}` takes: {}", list.join(", "))
                    });
                    self.diags.push(d);
                }
            }
        }
        self.check_required(name, def, call, &positional, e.span);
    }

    /// A parameter a step cannot run without (`sh`'s `script`), given by name or as the
    /// one positional argument. A misspelt name is only a warning, as in Jenkins; the
    /// missing parameter it leaves is the error.
    fn check_required(
        &mut self,
        name: &str,
        def: &steps::StepDef,
        call: &valet_dsl::ast::Call,
        positional: &[&Expr],
        span: valet_dsl::Span,
    ) {
        let named: Vec<&str> = call
            .args
            .iter()
            .filter_map(|a| match a {
                Arg::Named { name, .. } => Some(name.name.as_str()),
                _ => None,
            })
            .collect();
        // A spread or a map built elsewhere may hold anything: not checked.
        if named.iter().any(|n| n.starts_with('$'))
            || positional
                .iter()
                .any(|p| matches!(p.kind, ExprKind::Map { .. }))
        {
            return;
        }
        for required in steps::required(name) {
            let first = def.params.first().is_some_and(|(p, _)| p == required);
            if named.contains(required) || (first && !positional.is_empty()) {
                continue;
            }
            self.diags.push(
                Diagnostic::error(
                    "missing-parameter",
                    span,
                    format!("`{name}` needs its `{required}` parameter"),
                )
                .with_label(format!("no `{required}`")),
            );
        }
    }

    fn check_type(&mut self, step: &str, param: &str, ty: Ty, value: &Expr) {
        let found = match &value.kind {
            ExprKind::Str { value: s } => {
                if ty == Ty::Int && s.trim().parse::<f64>().is_ok()
                    || ty == Ty::Bool && (s == "true" || s == "false")
                {
                    return;
                }
                Ty::Str
            }
            ExprKind::GString { .. } => return,
            ExprKind::Bool { .. } => Ty::Bool,
            ExprKind::Int { .. } | ExprKind::Float { .. } => Ty::Int,
            ExprKind::List { .. } => Ty::List,
            ExprKind::Map { .. } => Ty::Map,
            ExprKind::Closure(_) => Ty::Closure,
            _ => return,
        };
        let ok = ty == Ty::Any || found == ty || (ty == Ty::Str && found == Ty::Int);
        if !ok {
            self.diags.push(
                Diagnostic::error(
                    "type",
                    value.span,
                    format!(
                        "`{step}`'s `{param}` takes {}, not {}",
                        ty.describe(),
                        found.describe()
                    ),
                )
                .with_label(format!("expected {}", ty.describe())),
            );
        }
    }
}

/// Classes a pipeline may create with `new`: exceptions, collections, dates and builders.
fn allowed_class(class: &str) -> bool {
    let short = class.rsplit('.').next().unwrap_or(class);
    let short = short.split('<').next().unwrap_or(short);
    short.ends_with("Exception")
        || short.ends_with("Error")
        || matches!(
            short,
            "ArrayList"
                | "LinkedList"
                | "HashMap"
                | "LinkedHashMap"
                | "TreeMap"
                | "HashSet"
                | "LinkedHashSet"
                | "TreeSet"
                | "Date"
                | "StringBuilder"
                | "StringBuffer"
                | "Random"
                | "String"
                | "Object"
        )
}
