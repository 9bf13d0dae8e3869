//! The service's HTTP listener: accepting connections under limits that keep anyone who can
//! open a TCP connection from holding the service's sockets and file descriptors.
//!
//! - a cap on open connections (a semaphore taken before `accept`: past the cap, new
//!   connections wait in the kernel's backlog rather than take a file descriptor);
//! - a header-read timeout, which also closes a keep-alive connection idle between requests
//!   and one that connects and sends nothing (hyper's HTTP/1 `header_read_timeout`);
//! - a request-body timeout (tower-http), and a TLS handshake timeout;
//! - TLS with rustls when a certificate is given ([`tls`]), re-read on SIGHUP.
//!
//! Scheduled runs never go through here: these limits can slow a client, never a schedule.

pub mod tls;

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tower_http::timeout::RequestBodyTimeout;

/// The limits one listener applies to its connections.
#[derive(Debug, Clone)]
pub struct ConnectionLimits {
    /// Connections open at once; past it, new ones wait to be accepted.
    pub max_connections: usize,
    /// How long a client has to send a request's headers (and the TLS handshake), and how
    /// long a keep-alive connection may stay idle between requests.
    pub header_read_timeout: Duration,
    /// How long reading a request's body may take.
    pub body_timeout: Duration,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        ConnectionLimits {
            max_connections: 256,
            header_read_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
        }
    }
}

/// How long open connections get to finish their requests once the service stops.
const DRAIN: Duration = Duration::from_secs(5);

/// Pause after a failed `accept` (out of file descriptors, typically): retrying at once
/// would spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Serves `router` on `listener` until `stop` turns true, then lets open connections finish
/// their requests for a moment.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ConnectionLimits,
    tls: Option<Arc<tls::TlsConfig>>,
    mut stop: watch::Receiver<bool>,
) {
    let permits = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let graceful = GracefulShutdown::new();
    let service = TowerToHyperService::new(RequestBodyTimeout::new(router, limits.body_timeout));
    loop {
        if *stop.borrow() {
            break;
        }
        let permit = tokio::select! {
            permit = permits.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
            _ = stop.changed() => break,
        };
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => stream,
                Err(e) => {
                    tracing::warn!("accepting a connection: {e}");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            },
            _ = stop.changed() => break,
        };
        let _ = stream.set_nodelay(true);
        let service = service.clone();
        let watcher = graceful.watcher();
        let limits = limits.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            match tls {
                None => serve_connection(stream, service, &limits, watcher).await,
                Some(tls) => {
                    let handshake = tls.acceptor().accept(stream);
                    match tokio::time::timeout(limits.header_read_timeout, handshake).await {
                        Ok(Ok(stream)) => serve_connection(stream, service, &limits, watcher).await,
                        Ok(Err(e)) => tracing::debug!("TLS handshake: {e}"),
                        Err(_) => tracing::debug!("TLS handshake: timed out"),
                    }
                }
            }
            drop(permit);
        });
    }
    drop(listener);
    if tokio::time::timeout(DRAIN, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::debug!("connections still open after the drain period are dropped");
    }
}

type Service = TowerToHyperService<RequestBodyTimeout<Router>>;

async fn serve_connection<I>(
    io: I,
    service: Service,
    limits: &ConnectionLimits,
    watcher: hyper_util::server::graceful::Watcher,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .keep_alive(true);
    let connection = builder.serve_connection(TokioIo::new(io), service);
    if let Err(e) = watcher.watch(connection).await {
        // Timeouts, resets and clients that hang up are routine on a public port.
        tracing::debug!("HTTP connection: {e}");
    }
}

/// The warning to log when the service listens in clear text beyond this machine.
pub fn plaintext_exposure_warning(addr: std::net::SocketAddr, tls: bool) -> Option<String> {
    if tls || addr.ip().is_loopback() {
        return None;
    }
    Some(format!(
        "LISTENING ON {addr} WITHOUT TLS: API tokens, session cookies and the data shown in the \
         UI cross the network in clear text. Serve HTTPS with --tls-cert/--tls-key, or listen \
         on 127.0.0.1 behind a TLS-terminating proxy."
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_clear_text_beyond_loopback_warns() {
        let public: std::net::SocketAddr = "0.0.0.0:8080".parse().unwrap();
        let loopback: std::net::SocketAddr = "127.0.0.1:8080".parse().unwrap();
        let loopback6: std::net::SocketAddr = "[::1]:8080".parse().unwrap();
        let warning = plaintext_exposure_warning(public, false).unwrap();
        assert!(warning.contains("0.0.0.0:8080") && warning.contains("--tls-cert"));
        assert!(plaintext_exposure_warning(public, true).is_none());
        assert!(plaintext_exposure_warning(loopback, false).is_none());
        assert!(plaintext_exposure_warning(loopback6, false).is_none());
    }
}
