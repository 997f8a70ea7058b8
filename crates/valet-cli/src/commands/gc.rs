//! `valet gc`: removes what valet runs left on every backend.
//!
//! Everything a backend makes names its owner process (`valet_backend::owner`). By default
//! only objects whose owner is gone are removed (a run that was killed, a machine that
//! crashed); `--all` removes every valet object, also those of runs still going.

use std::process::ExitCode;

use valet_backend::owner::Scope;
use valet_backends::{BackendConfig, KINDS};

#[derive(clap::Args)]
pub(crate) struct Args {
    /// Remove every object valet made, also those of valet processes still running.
    #[arg(long)]
    all: bool,
    /// Only this backend (default: every backend that can be reached).
    #[arg(long, value_name = "KIND",
          value_parser = clap::builder::PossibleValuesParser::new(KINDS))]
    backend: Option<String>,
}

pub(crate) fn run(args: Args) -> anyhow::Result<ExitCode> {
    let scope = if args.all { Scope::All } else { Scope::Orphans };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let kinds: Vec<&str> = match &args.backend {
        Some(k) => vec![k.as_str()],
        None => KINDS.to_vec(),
    };
    let mut removed = Vec::new();
    let mut failed = false;
    for kind in kinds {
        let config = BackendConfig::of_kind(kind)?;
        let result = rt.block_on(async {
            let backend = config.connect().await?;
            backend.collect_orphans(&scope).await
        });
        match result {
            Ok(r) => removed.extend(r),
            // Without `--backend`, a backend that is not there has nothing to collect.
            Err(e) if args.backend.is_some() => {
                eprintln!("valet gc: the {kind} backend: {e}");
                failed = true;
            }
            Err(e) => eprintln!("valet gc: skipping the {kind} backend: {e}"),
        }
    }
    if removed.is_empty() {
        println!("valet gc: nothing to remove");
    } else {
        print!("{}", removed_lines(&removed));
    }
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// One line per removed object: `removed container valet-pod-1a2b-maven`.
pub(crate) fn removed_lines(removed: &[String]) -> String {
    removed.iter().map(|l| format!("removed {l}\n")).collect()
}
