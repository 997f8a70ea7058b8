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
    /// The Kubernetes Pod objects the pipeline's jobs would run in, one YAML document per
    /// job: the template's fields combined with its raw YAML, the agent's init container,
    /// the wrapped commands, limits and labels. Values known only when the pipeline runs are
    /// shown as written (`${params.V}`).
    K8s,
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
        Format::K8s => match k8s(&graph, &args.file) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("{}: {e}", args.file);
                return Ok(ExitCode::from(1));
            }
        },
    };
    print!("{out}");
    Ok(ExitCode::SUCCESS)
}

/// The Pod manifests of every job, with the default container policy applied (what
/// `valet run` would ask for without policy flags).
fn k8s(graph: &valet_plan::model::JobGraph, file: &str) -> anyhow::Result<String> {
    let policy = valet_backend::ContainerPolicy::default();
    let mut pods = Vec::with_capacity(graph.jobs.len());
    for job in &graph.jobs {
        let mut spec = valet_runtime::planned_pod(&job.pod);
        policy
            .apply(&mut spec)
            .map_err(|e| anyhow::anyhow!("job {}: {e}", job.id))?;
        pods.push(valet_backends::PlannedPod {
            job: job.id.clone(),
            spec,
        });
    }
    Ok(valet_backends::kubernetes_manifests(&pods, file)?)
}
