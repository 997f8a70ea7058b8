//! Every file in `pipelines/` is a test: its plan is a snapshot, and it must have no
//! errors. Every file in `pipelines/invalid/` must fail, and its rendered diagnostics are
//! a snapshot. Adding a file adds a test.

use valet_dsl::SourceFile;

fn compile(
    path: &std::path::Path,
) -> (
    SourceFile,
    Option<valet_plan::model::JobGraph>,
    Vec<valet_dsl::Diagnostic>,
) {
    let text = std::fs::read_to_string(path).expect("readable pipeline");
    let file = path.file_name().expect("file name").to_string_lossy();
    let dir = if path.parent().is_some_and(|p| p.ends_with("invalid")) {
        "pipelines/invalid"
    } else {
        "pipelines"
    };
    let source = SourceFile::new(format!("{dir}/{file}"), text);
    let compiled = valet_plan::compile(&source);
    (source, compiled.graph, compiled.diagnostics)
}

#[test]
fn valid_pipelines_plan_without_errors() {
    insta::glob!("../../../pipelines", "*.groovy", |path| {
        let (source, planned, diags) = compile(path);
        let errors: Vec<_> = diags.iter().filter(|d| d.is_error()).cloned().collect();
        assert!(
            errors.is_empty(),
            "{} has errors:\n{}",
            source.name,
            valet_dsl::render_all(&errors, &source)
        );
        let graph = planned.expect("a plan");
        // The JSON form must always serialise; the text form is what the snapshot pins.
        serde_json::to_string(&graph).expect("plan serialises");
        insta::assert_snapshot!(valet_plan::render::text(&graph));
    });
}

#[test]
fn invalid_pipelines_fail_with_diagnostics() {
    insta::glob!("../../../pipelines/invalid", "*.groovy", |path| {
        let (source, _, diags) = compile(path);
        assert!(
            diags.iter().any(|d| d.is_error()),
            "{} should fail but has no error",
            source.name
        );
        let rendered = valet_dsl::render_all(&diags, &source);
        // Diagnostics speak in words: no grammar rule identifiers leak into them.
        for leak in [
            "call_or_var",
            "paren_args",
            "dq_string",
            "expr_stmt",
            "command_call",
            "EOI",
        ] {
            assert!(
                !rendered.contains(leak),
                "{} leaks `{leak}`:\n{rendered}",
                source.name
            );
        }
        insta::assert_snapshot!(rendered);
    });
}
