//! `valet plan FILE [--format text|json|dot]`

use std::process::ExitCode;

#[derive(Clone, Copy, clap::ValueEnum)]
pub(crate) enum Format {
    /// A tree a person reads at a glance.
    Text,
    /// The bill of materials: images, resources, stages (see docs/plan-json.md).
    Json,
    /// A Graphviz graph of jobs and stages (`valet plan F --format dot | dot -Tsvg`).
    Dot,
}

#[derive(clap::Args)]
pub(crate) struct Args {
    /// The pipeline file.
    #[arg(value_name = "FILE")]
    file: String,
    #[arg(long, short, value_enum, default_value = "text")]
    format: Format,
}

pub(crate) fn run(args: Args) -> anyhow::Result<ExitCode> {
    let compiled = super::compile_file(&args.file)?;
    if !compiled.diagnostics.is_empty() {
        eprint!("{}", compiled.render_diagnostics());
    }
    if compiled.has_errors() {
        return Ok(ExitCode::from(1));
    }
    let graph = compiled.graph.expect("a plan when there are no errors");
    let out = match args.format {
        Format::Text => valet_plan::render::text(&graph),
        Format::Json => serde_json::to_string_pretty(&graph)? + "\n",
        Format::Dot => valet_plan::render::dot(&graph),
    };
    print!("{out}");
    Ok(ExitCode::SUCCESS)
}
