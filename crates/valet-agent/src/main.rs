//! `valet-agent serve (--socket PATH | --dial HOST:PORT --pod POD --container NAME)
//! [--output-cap BYTES] [-- CMD ARGS...]`: the first process of every container of a valet
//! pod. See the crate documentation.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use nix::sys::signal::Signal;
use valet_agent::dial::{self, Hello, TOKEN_ENV};
use valet_agent::reaper::{self, Reaper};
use valet_agent::server::{self, Agent, DEFAULT_OUTPUT_CAP};

const USAGE: &str = "usage: valet-agent serve (--socket PATH | --dial HOST:PORT --pod POD --container NAME)
                         [--output-cap BYTES] [--stop-grace-ms MS] [-- CMD ARGS...]

Serves valet's step protocol on a unix socket, or over a connection it dials out to the
controller; runs CMD (the container's own command) beside.
  --socket PATH        the unix socket to listen on
  --dial HOST:PORT     dial the controller's agent tunnel instead (once; the agent stops when
                       the tunnel closes), presenting the one-time token of VALET_AGENT_TOKEN
  --pod POD            with --dial: the pod this container belongs to
  --container NAME     with --dial: this container's name in the pod
  --output-cap BYTES   output kept per step, stdout and stderr together (default 64 MiB)
  --stop-grace-ms MS   how long children get to end after TERM or INT reaches the agent (default 5000)
  VALET_AGENT_LOG      log level: error, warn, info (default), debug, trace";

/// Where the steps come from.
enum Channel {
    Socket(PathBuf),
    Dial(valet_agent::dial::Hello, String),
}

/// How long dialling out and the handshake may take.
const DIAL_WITHIN: Duration = Duration::from_secs(15);

struct Serve {
    channel: Channel,
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
    let (mut socket, mut dial, mut pod, mut container) = (None, None, None, None);
    let mut serve = Serve {
        channel: Channel::Socket(PathBuf::new()),
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
            "--socket" => socket = Some(PathBuf::from(value()?)),
            "--dial" => dial = Some(value()?),
            "--pod" => pod = Some(value()?),
            "--container" => container = Some(value()?),
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
    serve.channel = match (socket, dial, pod, container) {
        (Some(s), None, None, None) if !s.as_os_str().is_empty() => Channel::Socket(s),
        (None, Some(addr), Some(pod), Some(container)) => {
            // From the environment: a command line is readable by every user of the host.
            let token = std::env::var(TOKEN_ENV)
                .ok()
                .filter(|t| !t.is_empty())
                .with_context(|| format!("--dial needs the token in {TOKEN_ENV}"))?;
            Channel::Dial(
                Hello {
                    pod,
                    container,
                    token,
                },
                addr,
            )
        }
        (None, Some(_), _, _) => bail!("--dial needs --pod and --container\n{USAGE}"),
        (None, None, _, _) => bail!("--socket or --dial is required\n{USAGE}"),
        _ => bail!(
            "--socket and --dial exclude each other; --pod and --container go with --dial\n{USAGE}"
        ),
    };
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
        channel,
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
        channel,
        output_cap,
        Duration::from_millis(stop_grace_ms),
        command,
    ))
}

async fn serve(
    channel: Channel,
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
    let socket = match &channel {
        Channel::Socket(s) => Some(s.clone()),
        Channel::Dial(..) => None,
    };
    let server = match channel {
        Channel::Socket(socket) => tokio::spawn(server::serve(agent.clone(), socket, async {
            let _ = stop_rx.await;
        })),
        Channel::Dial(hello, addr) => {
            let stream = dial::dial(&addr, &hello, DIAL_WITHIN)
                .await
                .with_context(|| format!("cannot dial the controller at {addr}"))?;
            tracing::info!(%addr, pod = %hello.pod, container = %hello.container, "serving over the tunnel");
            let service = agent.service();
            tokio::spawn(async move {
                server::serve_connection(service, stream).await;
                tracing::info!("the tunnel closed");
                Ok(())
            })
        }
    };
    let sig = tokio::select! {
        _ = term.recv() => Signal::SIGTERM,
        _ = int.recv() => Signal::SIGINT,
        r = server => {
            match socket {
                Some(_) => {
                    reaping.abort();
                    return r?;
                }
                // Reconnecting is not done: nobody can reach this agent any more, so its
                // children are stopped as on TERM.
                None => Signal::SIGTERM,
            }
        }
    };
    tracing::info!(signal = %sig, "stopping: forwarding to children");
    agent.forward_and_wait(sig, stop_grace).await;
    let _ = stop_tx.send(());
    // Not waiting for the server's graceful end: a client may keep its connection open.
    if let Some(socket) = socket {
        let _ = std::fs::remove_file(&socket);
    }
    reaping.abort();
    Ok(())
}
