//! Accepting connections: a bound on how many are open, the TLS handshake off the accept
//! loop, and what a call learns of its connection (`Peer`).
//!
//! At most `CONNECTIONS_MAX` connections are open over every listener; one beyond is
//! closed as soon as it is accepted (`stockd_connections_refused_total`), so a flood of
//! idle connections cannot take the server's memory. With TLS, each handshake runs in a
//! task of its own (at most `TLS_HANDSHAKES_MAX` at once, each at most
//! `TLS_HANDSHAKE_TIMEOUT_MS`), so a slow or silent client delays no one else; a failed
//! handshake (plaintext, a client certificate of another CA) closes the connection.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::server::Connected;

use super::gather::Gathered;
use super::identity::cert_names;
use super::reload::Watched;
use crate::limits::{
    ACCEPT_ERROR_BACKOFF_MS, ACCEPTED_QUEUE_CAPACITY, TLS_HANDSHAKE_TIMEOUT_MS, TLS_HANDSHAKES_MAX,
};
use crate::metrics;

/// What a call knows of its connection (in its request's extensions).
#[derive(Clone, Debug)]
pub struct Peer {
    pub remote: SocketAddr,
    /// The names of the client certificate (`identity::cert_names`); empty without one.
    pub cert_names: Arc<[String]>,
}

/// An accepted connection, plaintext or TLS, holding its slot of `CONNECTIONS_MAX`.
pub struct Conn {
    io: Gathered<Io>,
    peer: Peer,
    _slot: OwnedSemaphorePermit,
}

enum Io {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl Connected for Conn {
    type ConnectInfo = Peer;

    fn connect_info(&self) -> Peer {
        self.peer.clone()
    }
}

/// The limits every listener shares.
#[derive(Clone)]
pub struct Gate {
    connections: Arc<Semaphore>,
    handshakes: Arc<Semaphore>,
}

impl Gate {
    pub fn new(connections_max: usize) -> Gate {
        Gate {
            connections: Arc::new(Semaphore::new(connections_max)),
            handshakes: Arc::new(Semaphore::new(TLS_HANDSHAKES_MAX)),
        }
    }
}

/// The connections `listener` accepts, handshaken with the current TLS configuration if
/// there is one, as tonic's incoming stream. The accept loop stops when the stream is
/// dropped.
pub fn incoming(
    listener: TcpListener,
    tls: Option<Watched<TlsAcceptor>>,
    gate: Gate,
) -> ReceiverStream<io::Result<Conn>> {
    let (tx, rx) = mpsc::channel(ACCEPTED_QUEUE_CAPACITY);
    tokio::spawn(async move {
        loop {
            let (tcp, remote) = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        // Out of file descriptors, a connection reset before accept: wait a
                        // moment rather than spin.
                        tracing::debug!("accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(ACCEPT_ERROR_BACKOFF_MS)).await;
                        continue;
                    }
                },
                _ = tx.closed() => return,
            };
            let Ok(slot) = gate.connections.clone().try_acquire_owned() else {
                metrics::connection_refused();
                continue;
            };
            // Replies are small and latency-bound: never wait to coalesce them.
            let _ = tcp.set_nodelay(true);
            let Some(tls) = &tls else {
                let peer = Peer {
                    remote,
                    cert_names: Arc::from([]),
                };
                let conn = Conn {
                    io: Gathered::new(Io::Plain(tcp)),
                    peer,
                    _slot: slot,
                };
                if tx.send(Ok(conn)).await.is_err() {
                    return;
                }
                continue;
            };
            let handshake = Handshake {
                acceptor: tls.current().as_ref().clone(),
                turns: gate.handshakes.clone(),
                tx: tx.clone(),
            };
            tokio::spawn(handshake.run(tcp, remote, slot));
        }
    });
    ReceiverStream::new(rx)
}

/// One connection's TLS handshake, in a task of its own.
struct Handshake {
    acceptor: TlsAcceptor,
    turns: Arc<Semaphore>,
    tx: mpsc::Sender<io::Result<Conn>>,
}

impl Handshake {
    async fn run(self, tcp: TcpStream, remote: SocketAddr, slot: OwnedSemaphorePermit) {
        let Ok(_turn) = self.turns.acquire_owned().await else {
            return;
        };
        let timeout = Duration::from_millis(TLS_HANDSHAKE_TIMEOUT_MS);
        let stream = match tokio::time::timeout(timeout, self.acceptor.accept(tcp)).await {
            Ok(Ok(stream)) => stream,
            Ok(Err(e)) => {
                metrics::tls_handshake("failed");
                tracing::debug!(%remote, "TLS handshake failed: {e}");
                return;
            }
            Err(_) => {
                metrics::tls_handshake("timeout");
                tracing::debug!(%remote, "TLS handshake timed out");
                return;
            }
        };
        metrics::tls_handshake("ok");
        let names = stream
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|chain| chain.first())
            .map(|leaf| cert_names(leaf))
            .unwrap_or_default();
        let conn = Conn {
            io: Gathered::new(Io::Tls(Box::new(stream))),
            peer: Peer {
                remote,
                cert_names: names.into(),
            },
            _slot: slot,
        };
        let _ = self.tx.send(Ok(conn)).await;
    }
}

impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_read(cx, buf)
    }
}

/// Writes go through `Gathered`, which says it does not write vectored (so that h2 copies
/// small payloads into its buffer) and sends one turn's frames in one write.
impl AsyncWrite for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

impl AsyncRead for Io {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Io {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_flush(cx),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}
