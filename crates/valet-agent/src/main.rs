//! `valet-agent serve --socket PATH [--output-cap BYTES] [-- CMD ARGS...]`: the first process
//! of every container of a valet pod. See the crate documentation.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use nix::sys::signal::Signal;
use valet_agent::reaper::{self, Reaper};
use valet_agent::server::{self, Agent, DEFAULT_OUTPUT_CAP};

const USAGE: &str = "usage: valet-agent serve --socket PATH [--output-cap BYTES] [--stop-grace-ms MS] [-- CMD ARGS...]

Serves valet's step protocol on a unix socket; runs CMD (the container's own command) beside.
  --socket PATH        the unix socket to listen on
  --output-cap BYTES   output kept per step, stdout and stderr together (default 64 MiB)
  --stop-grace-ms MS   how long children get to end after TERM or INT reaches the agent (default 5000)
  VALET_AGENT_LOG      log level: error, warn, info (default), debug, trace";

struct Serve {
    socket: PathBuf,
    output_cap: u64,
    stop_grace_ms: u64,
    command: Vec<String>,
}

/// The command line, by hand: a parser crate would be most of the static binary's build time.
fn parse(args: &[String]) -> anyhow::Result<Option<Serve>> {
    match args.first().map(String::as_str) {
        Some("--version" | "-V") => {
            println!("valet-agent {}", env!("CARGO_PKG_VERSION"));
            return Ok(None);
        }
        Some("--help" | "-h" | "help") | None => {
            println!("{USAGE}");
            return Ok(None);
        }
        Some("serve") => {}
        Some(other) => bail!("unknown command {other:?}\n{USAGE}"),
    }
    let mut serve = Serve {
        socket: PathBuf::new(),
        output_cap: DEFAULT_OUTPUT_CAP,
        stop_grace_ms: 5000,
        command: Vec::new(),
    };
    let mut it = args[1..].iter();
    while let Some(a) = it.next() {
        let mut value = || {
            it.next()
                .cloned()
                .with_context(|| format!("{a} needs a value\n{USAGE}"))
        };
        match a.as_str() {
            "--socket" => serve.socket = PathBuf::from(value()?),
            "--output-cap" => {
                serve.output_cap = value()?
                    .parse()
                    .context("--output-cap: a number of bytes")?
            }
            "--stop-grace-ms" => {
                serve.stop_grace_ms = value()?.parse().context("--stop-grace-ms: milliseconds")?
            }
            "--" => {
                serve.command = it.cloned().collect();
                break;
            }
            other => bail!("unknown option {other:?}\n{USAGE}"),
        }
    }
    if serve.socket.as_os_str().is_empty() {
        bail!("--socket is required\n{USAGE}");
    }
    Ok(Some(serve))
}

fn main() -> anyhow::Result<()> {
    // A level only (no per-target filters): the static build stays small without regex.
    let level = std::env::var("VALET_AGENT_LOG")
        .ok()
        .and_then(|l| l.parse::<tracing_subscriber::filter::LevelFilter>().ok())
        .unwrap_or(tracing_subscriber::filter::LevelFilter::INFO);
    tracing_subscriber::fmt()
        .with_max_level(level)
        .with_ansi(false)
        .with_writer(std::io::stderr)
        .init();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(Serve {
        socket,
        output_cap,
        stop_grace_ms,
        command,
    }) = parse(&args)?
    else {
        return Ok(());
    };
    reaper::become_subreaper().context("cannot become a child subreaper")?;
    // Two threads: the machine is shared with the steps the agent runs.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(serve(
        socket,
        output_cap,
        Duration::from_millis(stop_grace_ms),
        command,
    ))
}

async fn serve(
    socket: PathBuf,
    output_cap: u64,
    stop_grace: Duration,
    command: Vec<String>,
) -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let reaper = Reaper::new();
    // Signal handlers first, so no SIGCHLD or TERM is missed once children exist.
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let reaping = tokio::spawn(reaper.clone().run());
    let agent = Agent::new(reaper, output_cap);
    if !command.is_empty() {
        agent
            .start_sidecar(&command)
            .with_context(|| format!("cannot start the container's command {command:?}"))?;
    }
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(server::serve(agent.clone(), socket.clone(), async {
        let _ = stop_rx.await;
    }));
    let sig = tokio::select! {
        _ = term.recv() => Signal::SIGTERM,
        _ = int.recv() => Signal::SIGINT,
        r = server => {
            reaping.abort();
            return r?;
        }
    };
    tracing::info!(signal = %sig, "stopping: forwarding to children");
    agent.forward_and_wait(sig, stop_grace).await;
    let _ = stop_tx.send(());
    // Not waiting for the server's graceful end: a client may keep its connection open.
    let _ = std::fs::remove_file(&socket);
    reaping.abort();
    Ok(())
}
