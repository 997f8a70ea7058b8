//! The controller's side of dial-out: a TCP listener that agents dial, and the
//! [`AgentRunner`] over each accepted connection (see [`crate::dial`] for the handshake).
//!
//! A backend asks [`DialListener::expect`] for each container it starts: that issues a
//! one-time token scoped to the pod and the container, valid for [`TunnelConfig::token_ttl`],
//! which the backend hands to the container's agent (in its environment), and a
//! [`PendingAgent`] that becomes the container's runner once the agent dialled in.
//!
//! Refused, each with a `warn` naming the peer's address (never the token): a hello that is
//! garbage, too long or does not arrive within [`TunnelConfig::handshake_timeout`]; a token
//! that is wrong, expired or already used; a second connection for a container that is
//! connected. The listener binds a specific address only: an agent's tunnel runs commands
//! in its container, so the interfaces it is offered on are chosen, never "all".

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::time::Instant;
use tonic::transport::{Endpoint, Uri};

use crate::client::{AgentRunner, ConnectError};
use crate::dial::{ACCEPTED, HandshakeError, Hello, REFUSED};

/// How long a token stays valid when the configuration does not say.
pub const DEFAULT_TOKEN_TTL: Duration = Duration::from_secs(120);
/// How long a peer gets to send its hello when the configuration does not say.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// Handshakes in progress at once; connections past it are closed at once, so a flood of
/// silent peers costs a bounded number of tasks.
pub const MAX_HANDSHAKES: usize = 64;
/// Random bytes in a token (256 bits).
const TOKEN_BYTES: usize = 32;

/// Limits of a [`DialListener`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TunnelConfig {
    /// How long after [`DialListener::expect`] its token is accepted.
    pub token_ttl: Duration,
    /// How long a peer has, from its connection, to send a whole hello.
    pub handshake_timeout: Duration,
}

impl Default for TunnelConfig {
    fn default() -> Self {
        TunnelConfig {
            token_ttl: DEFAULT_TOKEN_TTL,
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
        }
    }
}

/// Why the tunnel listener could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum TunnelError {
    #[error(
        "the agent tunnel must listen on a specific address, not {0} (every interface): \
         agents reach the steps' runner through it"
    )]
    Unspecified(SocketAddr),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("container '{container}' of pod {pod} is expected or connected already")]
    AlreadyExpected { pod: String, container: String },
    #[error("cannot make a token: {0}")]
    Random(#[source] std::io::Error),
}

/// A one-time token: shown only through [`Token::expose`], so it does not end up in a log
/// by way of `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub struct Token(String);

impl Token {
    /// The token, for the agent's environment.
    pub fn expose(&self) -> &str {
        &self.0
    }

    fn random() -> std::io::Result<Token> {
        use std::io::Read as _;
        let mut bytes = [0u8; TOKEN_BYTES];
        std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
        Ok(Token(bytes.iter().map(|b| format!("{b:02x}")).collect()))
    }

    /// Compares in time independent of where the first difference is.
    fn matches(&self, other: &str) -> bool {
        let (a, b) = (self.0.as_bytes(), other.as_bytes());
        a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
    }
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(…)")
    }
}

/// What the listener knows of one container.
enum Slot {
    /// A token was issued; the agent has not dialled in yet.
    Waiting {
        token: Token,
        expires: Instant,
        connection: oneshot::Sender<TcpStream>,
    },
    /// The agent is connected: no other connection is taken for this container (the spent
    /// token is kept to tell a reuse apart in the log).
    Connected { spent: Token },
}

/// Why a hello was refused, for the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refusal {
    NotExpected,
    WrongToken,
    Expired,
    Reused,
    AlreadyConnected,
    NobodyWaits,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Refusal::NotExpected => "no token was issued for this container",
            Refusal::WrongToken => "wrong token",
            Refusal::Expired => "expired token",
            Refusal::Reused => "reused token",
            Refusal::AlreadyConnected => "the container is connected already",
            Refusal::NobodyWaits => "nobody waits for this container any more",
        })
    }
}

struct Shared {
    config: TunnelConfig,
    slots: Mutex<HashMap<(String, String), Slot>>,
    handshakes: Arc<tokio::sync::Semaphore>,
}

impl Shared {
    fn slots(&self) -> std::sync::MutexGuard<'_, HashMap<(String, String), Slot>> {
        self.slots.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Decides on a hello: the waiting side's sender when it is admitted.
    fn admit(&self, hello: &Hello) -> Result<oneshot::Sender<TcpStream>, Refusal> {
        let mut slots = self.slots();
        let key = (hello.pod.clone(), hello.container.clone());
        let slot = slots.remove(&key).ok_or(Refusal::NotExpected)?;
        let (token, expires, connection) = match slot {
            Slot::Connected { spent } => {
                let reused = spent.matches(&hello.token);
                slots.insert(key, Slot::Connected { spent });
                return Err(if reused {
                    Refusal::Reused
                } else {
                    Refusal::AlreadyConnected
                });
            }
            Slot::Waiting {
                token,
                expires,
                connection,
            } => (token, expires, connection),
        };
        if !token.matches(&hello.token) {
            // A wrong guess spends nothing: the right agent may still come.
            slots.insert(
                key,
                Slot::Waiting {
                    token,
                    expires,
                    connection,
                },
            );
            return Err(Refusal::WrongToken);
        }
        // An expired or orphaned slot is dropped: its waiter learns it from the sender.
        if Instant::now() >= expires {
            return Err(Refusal::Expired);
        }
        if connection.is_closed() {
            return Err(Refusal::NobodyWaits);
        }
        slots.insert(key, Slot::Connected { spent: token });
        Ok(connection)
    }

    async fn handshake(&self, mut stream: TcpStream, peer: SocketAddr) {
        let limit = self.config.handshake_timeout;
        let hello = match tokio::time::timeout(limit, Hello::read(&mut stream)).await {
            Err(_) => Err(HandshakeError::Timeout(limit)),
            Ok(r) => r,
        };
        let hello = match hello {
            Ok(h) => h,
            Err(e) => {
                tracing::warn!(%peer, error = %e, "agent tunnel: refused a connection: bad handshake");
                refuse(stream, limit).await;
                return;
            }
        };
        // The pod and container names come from the peer: logged with `?`, so control
        // characters are escaped and cannot forge log lines.
        match self.admit(&hello) {
            Ok(waiter) => {
                let _ = stream.set_nodelay(true);
                let answered = tokio::time::timeout(limit, stream.write_all(ACCEPTED)).await;
                if !matches!(answered, Ok(Ok(()))) {
                    tracing::warn!(%peer, pod = ?hello.pod, container = ?hello.container,
                        "agent tunnel: the agent went away during the handshake");
                }
                tracing::debug!(%peer, pod = ?hello.pod, container = ?hello.container, "agent tunnel: agent connected");
                // A waiter gone since the check drops the stream: the agent sees it close.
                let _ = waiter.send(stream);
            }
            Err(reason) => {
                tracing::warn!(%peer, pod = ?hello.pod, container = ?hello.container, %reason,
                    "agent tunnel: refused a connection");
                refuse(stream, limit).await;
            }
        }
    }
}

/// Says no (best effort, bounded) and closes.
async fn refuse(mut stream: TcpStream, limit: Duration) {
    let _ = tokio::time::timeout(limit, async {
        stream.write_all(REFUSED).await?;
        stream.shutdown().await
    })
    .await;
}

/// A TCP listener on one specific address that agents dial into. Dropping it stops
/// accepting; tunnels already handed out stay up.
pub struct DialListener {
    local: SocketAddr,
    shared: Arc<Shared>,
    accept: tokio::task::JoinHandle<()>,
}

impl DialListener {
    /// Listens on `addr` (port 0: any free port) with the default limits.
    pub async fn bind(addr: SocketAddr) -> Result<DialListener, TunnelError> {
        Self::bind_with(addr, TunnelConfig::default()).await
    }

    /// Listens on `addr` with these limits. An unspecified address (`0.0.0.0`, `::`) is
    /// refused.
    pub async fn bind_with(
        addr: SocketAddr,
        config: TunnelConfig,
    ) -> Result<DialListener, TunnelError> {
        if addr.ip().is_unspecified() {
            return Err(TunnelError::Unspecified(addr));
        }
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| TunnelError::Bind { addr, source })?;
        let local = listener
            .local_addr()
            .map_err(|source| TunnelError::Bind { addr, source })?;
        let shared = Arc::new(Shared {
            config,
            slots: Mutex::default(),
            handshakes: Arc::new(tokio::sync::Semaphore::new(MAX_HANDSHAKES)),
        });
        let accept = tokio::spawn(accept_loop(listener, shared.clone()));
        tracing::debug!(addr = %local, "agent tunnel: listening");
        Ok(DialListener {
            local,
            shared,
            accept,
        })
    }

    /// The address agents dial (with the port chosen when bound on port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Issues the one-time token for `container` of `pod`, and what becomes its runner once
    /// its agent dials in. Refused while that container is expected (with a token not yet
    /// expired) or connected.
    pub fn expect(&self, pod: &str, container: &str) -> Result<(Token, PendingAgent), TunnelError> {
        let token = Token::random().map_err(TunnelError::Random)?;
        let expires = Instant::now() + self.shared.config.token_ttl;
        let (tx, rx) = oneshot::channel();
        let key = (pod.to_string(), container.to_string());
        let mut slots = self.shared.slots();
        let taken = match slots.get(&key) {
            Some(Slot::Connected { .. }) => true,
            Some(Slot::Waiting {
                expires,
                connection,
                ..
            }) => Instant::now() < *expires && !connection.is_closed(),
            None => false,
        };
        if taken {
            return Err(TunnelError::AlreadyExpected {
                pod: pod.to_string(),
                container: container.to_string(),
            });
        }
        slots.insert(
            key,
            Slot::Waiting {
                token: token.clone(),
                expires,
                connection: tx,
            },
        );
        Ok((
            token,
            PendingAgent {
                connection: rx,
                pod: pod.to_string(),
                container: container.to_string(),
                listener: self.local,
                expires,
            },
        ))
    }

    /// Forgets every container of `pod` (its teardown): their tokens stop being accepted.
    pub fn forget(&self, pod: &str) {
        self.shared.slots().retain(|(p, _), _| p != pod);
    }
}

impl Drop for DialListener {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of file descriptors and the like: pass, and keep accepting.
                tracing::warn!(error = %e, "agent tunnel: accept failed");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let Ok(permit) = shared.handshakes.clone().try_acquire_owned() else {
            tracing::warn!(%peer, "agent tunnel: refused a connection: too many handshakes in progress");
            continue;
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            shared.handshake(stream, peer).await;
            drop(permit);
        });
    }
}

/// A container whose agent is expected to dial in.
pub struct PendingAgent {
    connection: oneshot::Receiver<TcpStream>,
    pod: String,
    container: String,
    listener: SocketAddr,
    expires: Instant,
}

impl PendingAgent {
    /// Waits (at most `limit`, and never past the token's expiry) for the agent to dial
    /// in, then runs the gRPC client over its connection and checks that the agent answers.
    pub async fn connect(
        self,
        workspace: &Path,
        limit: Duration,
    ) -> Result<AgentRunner, ConnectError> {
        let to = format!(
            "{}/{} (dialling {})",
            self.pod, self.container, self.listener
        );
        let deadline = (Instant::now() + limit).min(self.expires);
        let stream = match tokio::time::timeout_at(deadline, self.connection).await {
            Ok(Ok(stream)) => stream,
            Ok(Err(_)) => {
                return Err(ConnectError::Timeout {
                    to,
                    waited: limit,
                    last: "its token expired or was withdrawn".into(),
                });
            }
            Err(_) => {
                return Err(ConnectError::Timeout {
                    to,
                    waited: limit,
                    last: "the agent did not dial in".into(),
                });
            }
        };
        // The connector hands out the accepted connection once: when it breaks, the
        // channel's reconnection fails and calls end as `unavailable` (a lost agent).
        let stream = Arc::new(Mutex::new(Some(stream)));
        let channel = Endpoint::from_static("http://valet-agent")
            .connect_with_connector(tower::service_fn(move |_: Uri| {
                let stream = stream.lock().unwrap_or_else(|e| e.into_inner()).take();
                async move {
                    stream.map(hyper_util::rt::TokioIo::new).ok_or_else(|| {
                        std::io::Error::new(
                            std::io::ErrorKind::NotConnected,
                            "the agent's tunnel is closed (agents dial in once)",
                        )
                    })
                }
            }))
            .await
            .map_err(|source| ConnectError::Transport {
                to: to.clone(),
                source,
            })?;
        AgentRunner::over_channel(channel, to, workspace)
            .await
            .map(|r| r.with_name(self.container.clone()))
    }

    /// The container this waits for.
    pub fn container(&self) -> &str {
        &self.container
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_256_random_bits_compared_whole_and_never_shown() {
        let (a, b) = (Token::random().unwrap(), Token::random().unwrap());
        assert_eq!(a.expose().len(), TOKEN_BYTES * 2);
        assert!(a.expose().bytes().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
        assert!(a.matches(a.expose()));
        assert!(!a.matches(b.expose()));
        assert!(!a.matches(&a.expose()[..10]));
        assert!(!format!("{a:?}").contains(a.expose()));
    }
}
