//! `valet serve --config valet.yaml`: the controller (`valet-controller`) as a process.
//!
//! The binary's part: reading the configuration (a bad one is refused with its file, line
//! and column, exit status 2), the tracing subscriber (`RUST_LOG`, default `info`), the
//! tokio runtime, and signals: Ctrl-C or SIGTERM stop accepting requests and abort the
//! running builds ("controller stopped"); queued builds stay queued for the next start.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use valet_controller::{Config, Controller};

#[derive(clap::Args)]
pub(crate) struct Args {
    /// The configuration file (see docs/controller.md).
    #[arg(long, short = 'c', value_name = "FILE", default_value = "valet.yaml")]
    config: PathBuf,
    /// Listen on this address instead of the configuration's `listen`.
    #[arg(long, value_name = "ADDR")]
    listen: Option<SocketAddr>,
}

/// How long running builds get to record their end when the controller stops.
const STOP_GRACE: Duration = Duration::from_secs(10);

/// `secrets`: the `VALET_SECRET_*` variables `main` took out of the environment.
pub(crate) fn run(args: Args, secrets: Vec<(String, String)>) -> anyhow::Result<ExitCode> {
    let mut config = match Config::load(&args.config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("valet: bad configuration: {e}");
            return Ok(ExitCode::from(2));
        }
    };
    if let Some(l) = args.listen {
        config.listen = l;
    }
    config.secrets = valet_runtime::Secrets::from_env(secrets);
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .try_init();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .thread_stack_size(valet_runtime::THREAD_STACK_SIZE)
        .enable_all()
        .build()?;
    rt.block_on(async {
        let running = Controller::start(config).await?;
        // The first line of stdout is the address (the port chosen when `listen` says 0).
        println!("valet: listening on http://{}", running.addr);
        if running.addr.ip().is_unspecified() {
            eprintln!(
                "valet: warning: listening on every interface ({}): API tokens and logs travel in clear over plain HTTP; put TLS in front, or listen on 127.0.0.1",
                running.addr.ip()
            );
        }
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        eprintln!("valet: stopping: aborting running builds");
        running.shutdown(STOP_GRACE).await;
        Ok::<_, anyhow::Error>(())
    })?;
    Ok(ExitCode::SUCCESS)
}
