//! `valet token create|list|revoke`: the API tokens of a controller, kept in its data
//! directory (only their SHA-256 digests). Works whether `valet serve` is running or not.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use valet_controller::{Config, Scope};

#[derive(clap::Args)]
pub(crate) struct Args {
    #[command(subcommand)]
    action: Action,
    /// The controller's configuration file (its `data_dir` holds the tokens).
    #[arg(
        long,
        short = 'c',
        value_name = "FILE",
        default_value = "valet.yaml",
        global = true
    )]
    config: PathBuf,
}

#[derive(clap::Subcommand)]
enum Action {
    /// Create a token and print it once (it is stored only as a digest).
    ///
    /// Scopes: `read` (builds, logs, events, the build page, metrics), `trigger` (start
    /// builds), `cancel` (abort builds), or `all`.
    Create {
        /// A name for the token: shown in listings and in the cause of what it starts or
        /// cancels.
        name: String,
        /// What the token may do, comma-separated.
        #[arg(long, default_value = "read")]
        scopes: String,
    },
    /// List the tokens: names, scopes, when created and last used (never the secrets).
    List,
    /// Revoke a token by name; requests with it are refused from then on.
    Revoke { name: String },
}

pub(crate) fn run(args: Args) -> anyhow::Result<ExitCode> {
    let config = match Config::load(&args.config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("valet: bad configuration: {e}");
            return Ok(ExitCode::from(2));
        }
    };
    let store = valet_controller::open_store(&config.data_dir)
        .with_context(|| format!("cannot open the store in {}", config.data_dir.display()))?;
    match args.action {
        Action::Create { name, scopes } => {
            let scopes = match Scope::parse_list(&scopes) {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("valet: --scopes: {e}");
                    return Ok(ExitCode::from(2));
                }
            };
            let secret = match store.create_token(&name, &scopes, valet_controller::now_ms()) {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("valet: {e}");
                    return Ok(ExitCode::from(2));
                }
            };
            let names: Vec<&str> = scopes.iter().map(|s| s.as_str()).collect();
            eprintln!(
                "valet: token `{name}` created with scopes {}; it is shown once, here:",
                names.join(", ")
            );
            println!("{secret}");
        }
        Action::List => {
            let tokens = store.list_tokens()?;
            if tokens.is_empty() {
                eprintln!("valet: no tokens (create one with `valet token create NAME`)");
            }
            for t in tokens {
                let scopes: Vec<&str> = t.scopes.iter().map(|s| s.as_str()).collect();
                println!(
                    "{}\t{}\tcreated {}\tlast used {}",
                    t.name,
                    scopes.join(","),
                    valet_controller::utc(t.created_ms),
                    t.last_used_ms
                        .map_or_else(|| "never".to_string(), valet_controller::utc)
                );
            }
        }
        Action::Revoke { name } => {
            if !store.revoke_token(&name)? {
                eprintln!("valet: no token named `{name}`");
                return Ok(ExitCode::from(1));
            }
            eprintln!("valet: token `{name}` revoked");
        }
    }
    Ok(ExitCode::SUCCESS)
}
