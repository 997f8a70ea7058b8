//! The hard spots of the language, each pinned to the tree it must produce, and the
//! limits that keep the parser safe on any input.

use valet_dsl::ast::*;
use valet_dsl::{Limits, SourceFile, parse, parse_with};

fn script(src: &str) -> Script {
    let out = parse(src);
    let file = SourceFile::new("test.groovy", src);
    assert!(
        !out.has_errors(),
        "unexpected errors:\n{}",
        valet_dsl::render_all(&out.diagnostics, &file)
    );
    out.script.expect("a script")
}

fn first_expr(src: &str) -> Expr {
    match script(src)
        .stmts
        .into_iter()
        .next()
        .expect("a statement")
        .kind
    {
        StmtKind::Expr { expr } => expr,
        StmtKind::Decl { value: Some(v), .. } | StmtKind::Assign { value: v, .. } => v,
        other => panic!("not an expression statement: {other:?}"),
    }
}

fn call(e: &Expr) -> &Call {
    match &e.kind {
        ExprKind::Call(c) => c,
        other => panic!("not a call: {other:?}"),
    }
}

fn error_of(src: &str) -> String {
    let out = parse(src);
    let file = SourceFile::new("test.groovy", src);
    assert!(out.has_errors(), "expected an error for {src:?}");
    valet_dsl::render_all(&out.diagnostics, &file)
}

#[test]
fn single_quotes_are_literal_and_double_quotes_interpolate() {
    let e = first_expr("sh 'echo $HOME'");
    assert_eq!(
        call(&e).positional().next().and_then(Expr::as_str),
        Some("echo $HOME")
    );
    let e = first_expr("echo \"home=${env.HOME} user=$USER.name \\$x\"");
    let ExprKind::GString { parts } = &call(&e).positional().next().expect("arg").kind else {
        panic!("not a GString")
    };
    assert_eq!(parts.len(), 5, "{parts:?}");
    assert!(matches!(&parts[0], GStringPart::Lit { value } if value == "home="));
    assert!(
        matches!(&parts[1], GStringPart::Expr { expr } if expr.dotted_name().as_deref() == Some("env.HOME"))
    );
    assert!(
        matches!(&parts[3], GStringPart::Expr { expr } if expr.dotted_name().as_deref() == Some("USER.name"))
    );
    assert!(matches!(&parts[4], GStringPart::Lit { value } if value == " $x"));
}

#[test]
fn code_and_nested_quotes_inside_interpolation() {
    let e = first_expr(r#"echo "v=${params.X ? "a ${'b'}" : list.collect { it * 2 }.join(',')}""#);
    let ExprKind::GString { parts } = &call(&e).positional().next().expect("arg").kind else {
        panic!("not a GString")
    };
    assert!(matches!(
        &parts[1],
        GStringPart::Expr {
            expr: Expr {
                kind: ExprKind::Ternary { .. },
                ..
            }
        }
    ));
}

#[test]
fn triple_quoted_strings_keep_lines() {
    let e = first_expr("sh \"\"\"\n  make ${target}\n  echo done\n\"\"\"");
    let ExprKind::GString { parts } = &call(&e).positional().next().expect("arg").kind else {
        panic!("not a GString")
    };
    assert!(matches!(&parts[0], GStringPart::Lit { value } if value == "\n  make "));
    let e = first_expr("sh '''\n  echo $HOME\n'''");
    assert_eq!(
        call(&e).positional().next().and_then(Expr::as_str),
        Some("\n  echo $HOME\n")
    );
}

#[test]
fn slashy_strings_versus_division() {
    let e = first_expr("def ok = v ==~ /\\d+\\.\\d+/");
    let ExprKind::Binary {
        op: BinaryOp::Match,
        rhs,
        ..
    } = &e.kind
    else {
        panic!("not a match: {e:?}")
    };
    assert!(matches!(&rhs.kind, ExprKind::Regex { pattern } if pattern == "\\d+\\.\\d+"));
    let e = first_expr("def half = total / 2 / 1");
    assert!(matches!(
        &e.kind,
        ExprKind::Binary {
            op: BinaryOp::Div,
            ..
        }
    ));
}

#[test]
fn command_calls_without_parentheses_as_values() {
    let e = first_expr("def out = sh script: 'git rev-parse HEAD', returnStdout: true");
    let c = call(&e);
    assert!(c.command);
    assert_eq!(c.name.name, "sh");
    assert!(c.named("returnStdout").is_some());
}

#[test]
fn typed_declaration_versus_command_call() {
    let s = script("String x = 'a'\ncheckout scm\nagent any");
    assert!(matches!(&s.stmts[0].kind, StmtKind::Decl { ty: Some(t), .. } if t == "String"));
    assert!(
        matches!(&s.stmts[1].kind, StmtKind::Expr { expr } if call(expr).name.name == "checkout")
    );
    assert!(matches!(&s.stmts[2].kind, StmtKind::Expr { expr } if call(expr).name.name == "agent"));
}

#[test]
fn closure_brace_on_the_next_line_and_chains_across_lines() {
    let e = first_expr("node('linux')\n{\n  sh 'make'\n}");
    assert!(call(&e).closure.is_some());
    let e = first_expr(
        "def v = sh(script: 'cat VERSION', returnStdout: true)\n    .trim()\n    ?.toLowerCase()",
    );
    let c = call(&e);
    assert_eq!(c.name.name, "toLowerCase");
    assert!(c.safe);
}

#[test]
fn operators_bind_as_in_groovy() {
    let e = first_expr("def x = a || b && c == d + e * f");
    let ExprKind::Binary {
        op: BinaryOp::Or,
        rhs,
        ..
    } = &e.kind
    else {
        panic!("|| is loosest")
    };
    let ExprKind::Binary {
        op: BinaryOp::And,
        rhs,
        ..
    } = &rhs.kind
    else {
        panic!("&& next")
    };
    let ExprKind::Binary {
        op: BinaryOp::Eq,
        rhs,
        ..
    } = &rhs.kind
    else {
        panic!("== next")
    };
    assert!(matches!(
        &rhs.kind,
        ExprKind::Binary {
            op: BinaryOp::Add,
            ..
        }
    ));
    let e = first_expr("def y = v ?: 'none'");
    assert!(matches!(&e.kind, ExprKind::Elvis { .. }));
    let e = first_expr("def n = params.N as Integer");
    assert!(matches!(&e.kind, ExprKind::Cast { ty, .. } if ty == "Integer"));
}

#[test]
fn closures_with_parameters_and_maps_of_closures() {
    let e = first_expr("parallel a: { sh 'x' }, b: { y -> echo y }, failFast: true");
    assert_eq!(call(&e).args.len(), 3);
    let e = first_expr("m.each { k, v -> echo \"$k=$v\" }");
    let cl = call(&e).closure.as_ref().expect("closure");
    assert_eq!(cl.params.len(), 2);
    let e = first_expr("def branches = [:]");
    assert!(matches!(&e.kind, ExprKind::Map { entries } if entries.is_empty()));
}

#[test]
fn control_flow() {
    let s = script(
        "if (a) { x() } else if (b) { y() }\nelse { z() }\nfor (i in items) { echo i }\nfor (int i = 0; i < 3; i++) { echo i }\nwhile (n > 0) { n-- }\ntry { sh 'x' } catch (Exception e) { echo e.message } finally { echo 'done' }\nswitch (x) { case 'a': echo 'a'; break\n default: echo 'other' }",
    );
    assert_eq!(s.stmts.len(), 6);
    let StmtKind::If {
        otherwise: Some(o), ..
    } = &s.stmts[0].kind
    else {
        panic!("if")
    };
    assert!(matches!(
        &o.kind,
        StmtKind::If {
            otherwise: Some(_),
            ..
        }
    ));
    assert!(matches!(&s.stmts[5].kind, StmtKind::Switch { cases, .. } if cases.len() == 2));
}

#[test]
fn functions_and_noncps() {
    let s = script(
        "@NonCPS\ndef parse(String text, int limit = 3) {\n  return text.split('\\n').take(limit)\n}\nparse('a')",
    );
    let StmtKind::Function(f) = &s.stmts[0].kind else {
        panic!("function")
    };
    assert_eq!(f.params.len(), 2);
    assert!(f.params[1].default.is_some());
    assert_eq!(f.annotations, vec!["NonCPS".to_string()]);
}

#[test]
fn unsupported_constructs_are_named() {
    let s =
        script("@Library('shared') _\nimport groovy.json.JsonSlurper\nclass Foo { def x = '}' }\n");
    let kinds: Vec<String> = s
        .stmts
        .iter()
        .map(|s| match &s.kind {
            StmtKind::Unsupported { construct } => construct.clone(),
            other => format!("{other:?}"),
        })
        .collect();
    assert_eq!(
        kinds,
        vec![
            "shared libraries (`@Library`)",
            "`import` statements",
            "`class` definitions"
        ]
    );
}

#[test]
fn shebang_package_and_comments() {
    let s = script("#!groovy\npackage a.b.c\n/* block\ncomment */ // line\necho 'x' ; echo 'y'\n");
    assert_eq!(s.stmts.len(), 2);
}

#[test]
fn syntax_errors_point_at_the_spot_in_words() {
    let msg = error_of("node {\n    sh('make'\n}\n");
    assert!(msg.contains("test.groovy:2:14"), "{msg}");
    assert!(msg.contains("expected `)` or `,`"), "{msg}");
    let msg = error_of("stage('x') {\n  sh \"make\n}\n");
    assert!(
        msg.contains("unterminated string") && msg.contains(":2:11"),
        "{msg}"
    );
    let msg = error_of("node {\n  stage('a') {\n    sh 'x'\n");
    assert!(
        msg.contains("never closed") && msg.contains(":2:14"),
        "{msg}"
    );
    let msg = error_of("echo \"bad \\q escape\"");
    assert!(msg.contains("unknown escape `\\q`"), "{msg}");
}

#[test]
fn ten_thousand_deep_nesting_is_an_error_not_a_crash() {
    for (open, close) in [("(", ")"), ("[", "]"), ("{", "}")] {
        let src = format!("def x = {}1{}", open.repeat(10_000), close.repeat(10_000));
        let msg = error_of(&src);
        assert!(msg.contains("nested too deeply"), "{msg}");
    }
    let src = format!("echo \"{}\"", "${\"".repeat(5_000));
    assert!(error_of(&src).contains("nested"), "interpolation nesting");
    // Chains without brackets are loops in the grammar; their length has its own limit.
    let src = format!("def x = 1{}", " + 1".repeat(20_000));
    assert!(error_of(&src).contains("operator chain is longer than 256"));
    let src = format!("def x = a{}", ".b".repeat(20_000));
    assert!(error_of(&src).contains("chain is longer than 256"));
    let src = format!("def x = {}a", "!".repeat(20_000));
    assert!(error_of(&src).contains("chain is longer than 256"));
    let src = format!("if (a) {{ }}{}", " else if (a) { }".repeat(5_000));
    assert!(error_of(&src).contains("`else if` chain is longer than 256"));
    script(&format!("def x = 1{}", " + 1".repeat(200)));
}

#[test]
fn deep_ternary_chains_do_not_overflow() {
    // Run on a small stack on purpose: pest's stack guard must turn depth into an error.
    let handle = std::thread::Builder::new()
        .stack_size(2 * 1024 * 1024)
        .spawn(|| {
            let src = format!("def x = {} 1", "a ? b : ".repeat(20_000));
            parse(&src).diagnostics.len()
        })
        .expect("thread");
    handle.join().expect("no stack overflow");
}

#[test]
fn nesting_within_the_limit_parses() {
    let src = format!("def x = {}1{}", "(".repeat(200), ")".repeat(200));
    script(&src);
}

#[test]
fn file_size_limit() {
    let src = "echo 'x'\n".repeat(20);
    let out = parse_with(
        &src,
        Limits {
            max_bytes: 100,
            ..Limits::default()
        },
    );
    assert!(
        out.diagnostics[0]
            .message
            .contains("more than the limit of 100 bytes")
    );
}

#[test]
fn one_line_if_else_and_closures_after_a_bare_name() {
    let s = script("if (x) echo 'a' else echo 'b'");
    assert!(matches!(
        &s.stmts[0].kind,
        StmtKind::If {
            otherwise: Some(_),
            ..
        }
    ));
    let e = first_expr("node\n{\n  sh 'x'\n}");
    assert!(call(&e).closure.is_some());
    let e = first_expr("docker.image('x').inside\n{ sh 'y' }");
    assert_eq!(call(&e).name.name, "inside");
    assert!(call(&e).closure.is_some());
    let e = first_expr("def x = a\n    ?: 'b'");
    assert!(matches!(&e.kind, ExprKind::Elvis { .. }));
    let e = first_expr("assert x == 1 : 'x must be 1'");
    assert_eq!(call(&e).name.name, "assert");
    assert!(
        error_of("if (a) {\n}\n}\nelse { }").contains("`else` without a matching `if`")
            || error_of("echo 'a'\nelse { }").contains("`else` without")
    );
}

/// Inputs the fuzzer found to take exponential time (unbalanced braces after `trait`/`class`,
/// a failing closure read twice). Each must now finish: a hang fails the test run.
#[test]
fn fuzz_regressions_finish() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fuzz-regressions");
    let mut n = 0;
    for entry in std::fs::read_dir(dir).expect("regression folder") {
        let path = entry.expect("entry").path();
        let text = String::from_utf8_lossy(&std::fs::read(&path).expect("readable")).into_owned();
        let _ = parse(&text);
        n += 1;
    }
    assert!(n > 0);
    // The shape behind them, scaled up: 40 unbalanced braces after a `trait`.
    let src = format!("trait T {}\n", "{ x ".repeat(40));
    assert!(parse(&src).has_errors());
    let src = format!("{}sh 'x\n", "if (a) {\n".repeat(40));
    assert!(parse(&src).has_errors());
    let src = format!("{}sh 'x\n", "node\n{\n".repeat(40));
    assert!(parse(&src).has_errors());
}
