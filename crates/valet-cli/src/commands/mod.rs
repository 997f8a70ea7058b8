//! One module per subcommand, plus what they share: loading and compiling a file.

pub(crate) mod check;
pub(crate) mod gc;
pub(crate) mod plan;
pub(crate) mod run;
pub(crate) mod serve;
pub(crate) mod token;

use anyhow::Context as _;
use valet_dsl::{Diagnostic, SourceFile};
use valet_plan::model::JobGraph;

/// A pipeline file read, parsed and planned.
pub(crate) struct Compiled {
    pub(crate) source: SourceFile,
    pub(crate) graph: Option<JobGraph>,
    pub(crate) script: Option<valet_dsl::ast::Script>,
    pub(crate) diagnostics: Vec<Diagnostic>,
}

impl Compiled {
    pub(crate) fn has_errors(&self) -> bool {
        self.diagnostics.iter().any(Diagnostic::is_error)
    }

    pub(crate) fn render_diagnostics(&self) -> String {
        valet_dsl::render_all(&self.diagnostics, &self.source)
    }
}

/// Reads and compiles `path`. I/O errors are errors; problems in the pipeline are diagnostics.
pub(crate) fn compile_file(path: &str) -> anyhow::Result<Compiled> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {path}"))?;
    let text = String::from_utf8(bytes).map_err(|e| {
        anyhow::anyhow!(
            "{path} is not UTF-8 text (invalid byte at offset {})",
            e.utf8_error().valid_up_to()
        )
    })?;
    Ok(compile_source(SourceFile::new(path, text)))
}

/// Parses and plans on a thread with a large stack: both recurse once per nesting level,
/// and the language's limits (256 levels) are sized for this stack, not the main thread's.
pub(crate) fn compile_source(source: SourceFile) -> Compiled {
    std::thread::Builder::new()
        .name("compile".into())
        .stack_size(64 * 1024 * 1024)
        .spawn(move || compile_on_this_thread(source))
        .expect("a compile thread")
        .join()
        .expect("compile thread finished")
}

fn compile_on_this_thread(source: SourceFile) -> Compiled {
    let c = valet_plan::compile(&source);
    Compiled {
        source,
        graph: c.graph,
        script: c.script,
        diagnostics: c.diagnostics,
    }
}
