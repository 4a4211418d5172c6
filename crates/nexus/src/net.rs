//! Connections of `nexus serve`: accepting them under a cap, TLS (rustls), HTTP/1.1
//! (hyper) with a header-read timeout, and graceful shutdown.
//!
//! hyper's own server builder and `hyper-util`'s graceful shutdown do the HTTP work;
//! what is written here is only what no crate offers for a hand-rolled accept loop:
//! the cap on open connections with an answer instead of silence when it is reached,
//! and a timeout on the TLS handshake.
//!
//! - **Header timeout** (hyper's `header_read_timeout`): from the moment the server
//!   waits for a request — on a new connection, and after each answer on a kept-alive
//!   one — its headers must be complete within it, or the connection is closed. It is
//!   therefore also the idle keep-alive timeout. The TLS handshake gets the same time.
//! - **Connection cap**: at most `max_connections` connections are served at once.
//!   Above it, up to [`OVERFLOW_CONNECTIONS`] more are answered `503
//!   too_many_connections` (the API's error shape, `Retry-After: 1`,
//!   `Connection: close`) to their first request, within the header timeout; beyond
//!   those, a new connection is closed as soon as it is accepted. So a host never holds
//!   more than `max_connections + OVERFLOW_CONNECTIONS` sockets for its clients.
//! - The body timeout belongs to the request handler (`serve.rs`, `408`).

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use axum::body::Body;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use nexus_api::Metrics;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls;

/// Connections above the cap that are still answered `503` (the rest are closed).
pub const OVERFLOW_CONNECTIONS: usize = 64;
/// Longest wait, after the shutdown signal, for open connections to finish their
/// requests; then they are dropped (queued writes still finish, see `serve.rs`).
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

/// How the listener treats connections.
#[derive(Clone)]
pub struct NetConfig {
    /// Time to receive a request's headers (and the TLS handshake, and the idle time
    /// between requests on a kept-alive connection).
    pub header_timeout: Duration,
    /// Most connections served at once.
    pub max_connections: usize,
    /// TLS, when the server has a certificate.
    pub tls: Option<TlsAcceptor>,
}

/// What the listener serves on each connection.
pub trait Host: Send + Sync + 'static {
    /// Answers one request from `peer`.
    fn call(
        self: Arc<Self>,
        peer: SocketAddr,
        req: hyper::Request<Incoming>,
    ) -> impl Future<Output = hyper::Response<Body>> + Send;

    /// The answer to every request of a connection over the cap.
    fn refusal(&self, limit: usize) -> hyper::Response<Body>;

    /// Where connection events are counted.
    fn metrics(&self) -> &Metrics;
}

/// A rustls acceptor for a PEM certificate chain and private key.
pub fn tls_acceptor(cert: &Path, key: &Path) -> Result<TlsAcceptor> {
    use rustls::pki_types::pem::PemObject as _;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .with_context(|| format!("cannot read the certificate chain {}", cert.display()))?;
    if certs.is_empty() {
        anyhow::bail!("{} holds no PEM certificate", cert.display());
    }
    let private = PrivateKeyDer::from_pem_file(key)
        .with_context(|| format!("cannot read the private key {}", key.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_no_client_auth()
        .with_single_cert(certs, private)
        .with_context(|| {
            format!(
                "the key {} does not fit the certificate {}",
                key.display(),
                cert.display()
            )
        })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// Serves `listener` until `shutdown` completes, then lets open connections finish
/// their requests (at most [`SHUTDOWN_GRACE`]).
pub async fn serve<H: Host>(
    listener: TcpListener,
    config: NetConfig,
    host: Arc<H>,
    shutdown: impl Future<Output = ()>,
) -> Result<()> {
    let slots = Arc::new(Semaphore::new(config.max_connections));
    let overflow = Arc::new(Semaphore::new(OVERFLOW_CONNECTIONS));
    let graceful = GracefulShutdown::new();
    let mut served = http1::Builder::new();
    served
        .timer(TokioTimer::new())
        .header_read_timeout(config.header_timeout)
        .keep_alive(true);
    let mut refused = http1::Builder::new();
    refused
        .timer(TokioTimer::new())
        .header_read_timeout(config.header_timeout)
        .keep_alive(false);
    tokio::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors (or another transient failure): the
                    // pending connection stays in the backlog; try again shortly.
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        // Answers go out whole at once; Nagle's algorithm would only hold back the
        // tail of a large one until the client's delayed ACK.
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!("cannot set TCP_NODELAY: {e}");
        }
        let (permit, over_cap) = match Arc::clone(&slots).try_acquire_owned() {
            Ok(p) => (p, false),
            Err(_) => {
                host.metrics().record_connection_refused();
                match Arc::clone(&overflow).try_acquire_owned() {
                    Ok(p) => (p, true),
                    Err(_) => continue, // closed on drop
                }
            }
        };
        let host = Arc::clone(&host);
        let config = config.clone();
        let http = if over_cap {
            refused.clone()
        } else {
            served.clone()
        };
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let _permit = permit;
            let conn = Connection {
                host,
                peer,
                http,
                over_cap,
                limit: config.max_connections,
                watcher,
            };
            match config.tls {
                None => conn.run(tcp).await,
                Some(acceptor) => {
                    match tokio::time::timeout(config.header_timeout, acceptor.accept(tcp)).await {
                        Ok(Ok(tls)) => conn.run(tls).await,
                        Ok(Err(e)) => tracing::debug!(%peer, "TLS handshake failed: {e}"),
                        Err(_) => conn.host.metrics().record_timeout("tls"),
                    }
                }
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(SHUTDOWN_GRACE, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("connections still open after {SHUTDOWN_GRACE:?}: dropping them");
    }
    Ok(())
}

/// One accepted connection.
struct Connection<H> {
    host: Arc<H>,
    peer: SocketAddr,
    http: http1::Builder,
    over_cap: bool,
    limit: usize,
    watcher: hyper_util::server::graceful::Watcher,
}

impl<H: Host> Connection<H> {
    async fn run<I>(self, io: I)
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let io = TokioIo::new(io);
        let (host, peer) = (self.host, self.peer);
        if self.over_cap {
            let limit = self.limit;
            let h = Arc::clone(&host);
            let svc = service_fn(move |_req| {
                let r = h.refusal(limit);
                async move { Ok::<_, Infallible>(r) }
            });
            if let Err(e) = self.http.serve_connection(io, svc).await
                && e.is_timeout()
            {
                host.metrics().record_timeout("header");
            }
            return;
        }
        host.metrics().connection_opened();
        let h = Arc::clone(&host);
        let svc = service_fn(move |req| {
            let h = Arc::clone(&h);
            async move { Ok::<_, Infallible>(h.call(peer, req).await) }
        });
        let served = self
            .watcher
            .watch(self.http.serve_connection(io, svc))
            .await;
        host.metrics().connection_closed();
        if let Err(e) = served {
            if e.is_timeout() {
                host.metrics().record_timeout("header");
            } else {
                tracing::debug!(%peer, "connection: {e}");
            }
        }
    }
}
