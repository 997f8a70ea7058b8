//! Fuzzes the whole front end: parse, plan, and every rendering; and checks that the
//! parser's fast path gives pest's tree wherever it reads the input.
//!
//! Any input must come back as a tree or diagnostics; nothing may panic, hang or blow
//! up memory, and the renderings must not panic on whatever the planner made.
#![no_main]

use libfuzzer_sys::fuzz_target;
use valet_dsl::SourceFile;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let parsed = valet_dsl::parse(text);
    // The fast path must agree with the pest grammar wherever it reads the file.
    if let Some(fast) = &parsed.script {
        if parsed.diagnostics.is_empty() && valet_dsl::parse_fast(text).is_some() {
            let spec = valet_dsl::parse_pest(text);
            assert!(spec.diagnostics.is_empty(), "fast path accepts what pest refuses");
            assert_eq!(spec.script.as_ref(), Some(fast), "fast path and pest differ");
        }
    }
    let file = SourceFile::new("fuzz.groovy", text);
    // Syntax diagnostics are rendered even when there is no tree.
    let _ = valet_dsl::render_all(&parsed.diagnostics, &file);
    let Some(script) = parsed.script else {
        return;
    };
    let out = valet_plan::plan(&script, &file);
    let _ = valet_dsl::render_all(&out.diagnostics, &file);
    let _ = valet_plan::render::text(&out.graph);
    let _ = valet_plan::render::dot(&out.graph);
});
