//! `valet gc`: removes what valet runs left on the Docker engine and the host.
//!
//! Every container, volume and pod directory valet makes names its owner process (see
//! `valet_docker::gc`). By default only objects whose owner is gone are removed (a run that
//! was killed, a machine that crashed); `--all` removes every valet object, also those of
//! runs still going.

use std::process::ExitCode;

use valet_docker::gc::{Removed, Scope};

#[derive(clap::Args)]
pub(crate) struct Args {
    /// Remove every object valet made, also those of valet processes still running.
    #[arg(long)]
    all: bool,
}

pub(crate) fn run(args: Args) -> anyhow::Result<ExitCode> {
    let scope = if args.all { Scope::All } else { Scope::Orphans };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let removed = rt.block_on(async {
        let docker = valet_docker::DockerBackend::connect().await?;
        docker.gc(&scope).await
    })?;
    if removed.is_empty() {
        println!("valet gc: nothing to remove");
    } else {
        print!("{}", removed_lines(&removed));
    }
    Ok(ExitCode::SUCCESS)
}

/// One line per removed object: `removed container valet-pod-1a2b-maven`.
pub(crate) fn removed_lines(removed: &Removed) -> String {
    removed
        .summary()
        .lines()
        .map(|l| format!("removed {l}\n"))
        .collect()
}
