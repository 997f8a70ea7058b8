//! The dial-out handshake: how an agent that cannot offer a unix socket (a pod on
//! Kubernetes, on another host) reaches the controller instead.
//!
//! The agent opens a TCP connection to the controller's tunnel listener
//! ([`crate::tunnel::DialListener`], feature `client`) and sends one *hello* before
//! anything else: [`MAGIC`], a big-endian `u16` length, then `pod\ncontainer\ntoken` (UTF-8,
//! at most [`MAX_HELLO`] bytes). The listener answers [`ACCEPTED`] or [`REFUSED`] (then
//! closes). Once accepted the roles turn around: the agent serves its gRPC server over that
//! same connection and the controller is the HTTP/2 client (a reverse tunnel), so the
//! controller needs no route into the pod, only the pod one to the controller.
//!
//! The token (from [`TOKEN_ENV`], never the command line, which any user of the host can
//! read in `/proc`) is what proves the connection comes from the container it names: the
//! listener issued it for that pod and container, once, for a short time.
//!
//! The length comes first so the listener knows how much to read before it reads it: a
//! peer that sends garbage is refused at once, and one that sends nothing is cut off by the
//! listener's read timeout. The hello never holds more than the listener asked for, so no
//! HTTP/2 byte is read into the handshake.

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The first bytes of a hello (name and version of the handshake).
pub const MAGIC: &[u8; 8] = b"VALETDL1";
/// The longest hello body the listener reads.
pub const MAX_HELLO: usize = 1024;
/// The listener's answer to a hello it accepts: HTTP/2 follows.
pub const ACCEPTED: &[u8; 3] = b"OK\n";
/// The listener's answer to a hello it refuses, before it closes the connection.
pub const REFUSED: &[u8; 3] = b"NO\n";
/// The environment variable holding the agent's one-time token.
pub const TOKEN_ENV: &str = "VALET_AGENT_TOKEN";

/// What an agent says about itself when it dials out.
#[derive(Clone, PartialEq, Eq)]
pub struct Hello {
    pub pod: String,
    pub container: String,
    pub token: String,
}

impl std::fmt::Debug for Hello {
    /// Never the token: a hello may end up in a log.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hello")
            .field("pod", &self.pod)
            .field("container", &self.container)
            .finish_non_exhaustive()
    }
}

/// Why a handshake failed.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("not a valet dial-out handshake")]
    BadMagic,
    #[error("the handshake is {0} bytes long, more than {MAX_HELLO}")]
    TooLong(usize),
    #[error("malformed handshake: {0}")]
    Malformed(&'static str),
    #[error("no handshake within {0:?}")]
    Timeout(Duration),
    #[error(
        "the controller refused the connection (unknown, reused or expired token, or the \
         container is connected already)"
    )]
    Refused,
}

impl Hello {
    /// The hello on the wire.
    pub fn encode(&self) -> Result<Vec<u8>, HandshakeError> {
        for (what, field) in [
            ("empty or multi-line pod", &self.pod),
            ("empty or multi-line container", &self.container),
            ("empty or multi-line token", &self.token),
        ] {
            if field.is_empty() || field.contains('\n') {
                return Err(HandshakeError::Malformed(what));
            }
        }
        let body = format!("{}\n{}\n{}", self.pod, self.container, self.token);
        if body.len() > MAX_HELLO {
            return Err(HandshakeError::TooLong(body.len()));
        }
        let mut out = Vec::with_capacity(MAGIC.len() + 2 + body.len());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&(body.len() as u16).to_be_bytes());
        out.extend_from_slice(body.as_bytes());
        Ok(out)
    }

    /// Reads a hello, refusing a wrong magic or a length past [`MAX_HELLO`] before reading
    /// the body. No timeout here: the caller bounds the whole handshake.
    pub async fn read<R: AsyncRead + Unpin>(r: &mut R) -> Result<Hello, HandshakeError> {
        let mut head = [0u8; MAGIC.len() + 2];
        r.read_exact(&mut head).await?;
        if &head[..MAGIC.len()] != MAGIC {
            return Err(HandshakeError::BadMagic);
        }
        let len = u16::from_be_bytes([head[MAGIC.len()], head[MAGIC.len() + 1]]) as usize;
        if len > MAX_HELLO {
            return Err(HandshakeError::TooLong(len));
        }
        let mut body = vec![0u8; len];
        r.read_exact(&mut body).await?;
        let body = String::from_utf8(body).map_err(|_| HandshakeError::Malformed("not UTF-8"))?;
        let mut parts = body.split('\n');
        let (Some(pod), Some(container), Some(token), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(HandshakeError::Malformed("want pod, container and token"));
        };
        if pod.is_empty() || container.is_empty() || token.is_empty() {
            return Err(HandshakeError::Malformed("an empty field"));
        }
        Ok(Hello {
            pod: pod.to_string(),
            container: container.to_string(),
            token: token.to_string(),
        })
    }
}

/// The agent's side: connects to `addr` (`HOST:PORT`), sends `hello` and waits for the
/// answer, all within `limit`. The returned stream is ready for the agent's HTTP/2 server.
pub async fn dial(addr: &str, hello: &Hello, limit: Duration) -> Result<TcpStream, HandshakeError> {
    let bytes = hello.encode()?;
    let handshake = async {
        let mut stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        stream.write_all(&bytes).await?;
        let mut answer = [0u8; ACCEPTED.len()];
        match stream.read_exact(&mut answer).await {
            Ok(_) if &answer == ACCEPTED => Ok(stream),
            // A refusal, or the listener closing without a word: refused either way.
            Ok(_) => Err(HandshakeError::Refused),
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Err(HandshakeError::Refused),
            Err(e) => Err(e.into()),
        }
    };
    tokio::time::timeout(limit, handshake)
        .await
        .map_err(|_| HandshakeError::Timeout(limit))?
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hello() -> Hello {
        Hello {
            pod: "valet-p-1".into(),
            container: "main".into(),
            token: "secret-token".into(),
        }
    }

    #[tokio::test]
    async fn a_hello_reads_back_as_written() {
        let bytes = hello().encode().unwrap();
        assert_eq!(Hello::read(&mut &bytes[..]).await.unwrap(), hello());
    }

    #[tokio::test]
    async fn garbage_and_oversized_hellos_are_refused_before_the_body_is_read() {
        let e = Hello::read(&mut &b"GET / HTTP/1.1\r\n\r\n"[..])
            .await
            .unwrap_err();
        assert!(matches!(e, HandshakeError::BadMagic), "{e}");
        let mut big = MAGIC.to_vec();
        big.extend_from_slice(&u16::MAX.to_be_bytes());
        let e = Hello::read(&mut &big[..]).await.unwrap_err();
        assert!(
            matches!(e, HandshakeError::TooLong(n) if n == u16::MAX as usize),
            "{e}"
        );
        let mut two = MAGIC.to_vec();
        two.extend_from_slice(&3u16.to_be_bytes());
        two.extend_from_slice(b"a\nb");
        let e = Hello::read(&mut &two[..]).await.unwrap_err();
        assert!(matches!(e, HandshakeError::Malformed(_)), "{e}");
    }

    #[test]
    fn the_token_never_shows_in_debug_output() {
        let shown = format!("{:?}", hello());
        assert!(
            shown.contains("main") && !shown.contains("secret-token"),
            "{shown}"
        );
    }
}
