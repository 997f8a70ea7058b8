//! `valet`: run Jenkins pipelines without Jenkins.
//!
//! The binary edge: argument parsing, rendering, process-wide settings. Each subcommand
//! lives in `commands/`.

mod commands;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

/// valet runs the pipeline files people write for Jenkins (Jenkinsfiles), without Jenkins.
#[derive(Parser)]
#[command(name = "valet", version, about, long_about = None, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Parse and plan pipeline files and report every problem found, without running anything.
    ///
    /// Exits 0 when every file is valid, 1 when any has an error.
    Check(commands::check::Args),
    /// Show the job graph of a pipeline: jobs, their pods (containers, images, limits),
    /// stages and steps, without running anything (a dry run).
    Plan(commands::plan::Args),
    /// Run a pipeline on this machine: checks and plans it first, and refuses an invalid one.
    ///
    /// Exits with the build's result: 0 SUCCESS, 1 FAILURE, 2 UNSTABLE, 3 ABORTED,
    /// 4 ERROR (an invalid pipeline or a backend failure).
    #[command(after_long_help = commands::run::AFTER_HELP)]
    Run(commands::run::Args),
    /// Remove the containers, volumes and directories that valet runs left behind on the
    /// Docker engine (runs that were killed); `--all` removes every valet object.
    Gc(commands::gc::Args),
    /// Serve webhooks and the HTTP API: the controller (`--config valet.yaml`, see
    /// docs/controller.md). A bad configuration is refused with its line (exit status 2).
    Serve(commands::serve::Args),
    /// Create, list and revoke the API tokens of a controller (`--config valet.yaml`): the
    /// API and the build page refuse requests without one (see docs/controller.md).
    Token(commands::token::Args),
}

/// Where credentials come from in the environment (see `valet run --help`).
const SECRET_PREFIX: &str = "VALET_SECRET_";

fn main() -> ExitCode {
    // First, while this is the only thread: the steps this process runs are its children,
    // and must not find its credentials in its environment, its memory or `/proc`.
    let secrets = match valet_process::protect::take_env(SECRET_PREFIX) {
        Ok(taken) => taken,
        Err(e) => {
            eprintln!("valet: cannot take {SECRET_PREFIX}* out of the environment: {e}");
            return ExitCode::from(2);
        }
    };
    if let Err(e) = valet_process::protect::set_non_dumpable() {
        eprintln!("valet: warning: steps of this user may read this process's memory: {e}");
    }
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Check(args) => commands::check::run(args),
        Command::Plan(args) => commands::plan::run(args),
        Command::Run(args) => commands::run::run(args, secrets),
        Command::Gc(args) => commands::gc::run(args),
        Command::Serve(args) => commands::serve::run(args, secrets),
        Command::Token(args) => commands::token::run(args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}
