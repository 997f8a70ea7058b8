//! `valet check FILE...`

use std::process::ExitCode;

#[derive(clap::Args)]
pub(crate) struct Args {
    /// Pipeline files to check (Jenkinsfiles, `*.groovy`).
    #[arg(required = true, value_name = "FILE")]
    files: Vec<String>,
    /// Print nothing for valid files.
    #[arg(short, long)]
    quiet: bool,
}

pub(crate) fn run(args: Args) -> anyhow::Result<ExitCode> {
    let mut failed = 0usize;
    let mut unreadable = 0usize;
    for path in &args.files {
        if std::path::Path::new(path).is_dir() {
            if !args.quiet {
                eprintln!("{path}: skipped (a directory)");
            }
            continue;
        }
        let compiled = match super::compile_file(path) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("error: {e:#}");
                unreadable += 1;
                continue;
            }
        };
        let errors = compiled.diagnostics.iter().filter(|d| d.is_error()).count();
        if !compiled.diagnostics.is_empty() {
            eprint!("{}", compiled.render_diagnostics());
        }
        if errors > 0 {
            failed += 1;
            eprintln!(
                "{path}: {errors} error{}\n",
                if errors == 1 { "" } else { "s" }
            );
        } else if !args.quiet {
            println!("{path}: ok");
        }
    }
    let bad = failed + unreadable;
    if bad > 0 {
        eprintln!(
            "{bad} of {} file{} failed",
            args.files.len(),
            if args.files.len() == 1 { "" } else { "s" }
        );
        return Ok(ExitCode::from(1));
    }
    Ok(ExitCode::SUCCESS)
}
