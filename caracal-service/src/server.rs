//! Serving a router with graceful shutdown.

use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;

/// How long in-flight requests get after shutdown is requested (the reference's 10 s).
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}

/// Bind `0.0.0.0:port`.
pub async fn bind(port: u16) -> std::io::Result<TcpListener> {
    TcpListener::bind(SocketAddr::from(([0, 0, 0, 0], port))).await
}

/// Connection limits of every Caracal HTTP server.
///
/// `axum::serve` sets no header-read deadline, so a client that opens a connection and trickles
/// its headers (slowloris) holds a task and a socket forever; the reference's Go servers use
/// `ReadHeaderTimeout` 5 s and `MaxHeaderBytes` 16 KiB. This is why [`serve`] drives hyper's
/// HTTP/1 connection itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerLimits {
    /// A request's headers must arrive within this time of the connection waiting for them
    /// (the first request and every keep-alive request); then the connection is closed.
    pub header_read_timeout: Duration,
    /// Most header bytes hyper buffers for one request (hyper's floor is 8 KiB; beyond it
    /// hyper answers 431). Bodies stream through the buffer in pieces.
    pub max_header_bytes: usize,
    /// How long in-flight requests get after shutdown is requested.
    pub shutdown_grace: Duration,
}

impl Default for ServerLimits {
    fn default() -> Self {
        Self {
            header_read_timeout: Duration::from_secs(5),
            max_header_bytes: 16 * 1024,
            shutdown_grace: SHUTDOWN_GRACE,
        }
    }
}

/// Serve `router` on `listener` with the default [`ServerLimits`] until `shutdown` resolves,
/// then give in-flight requests [`SHUTDOWN_GRACE`] to finish.
pub async fn serve(
    listener: TcpListener,
    router: axum::Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    serve_with(listener, router, shutdown, ServerLimits::default()).await
}

/// A TLS server configuration from PEM files (`TLS_CERT_FILE`: the chain, leaf first;
/// `TLS_KEY_FILE`: a PKCS#8, PKCS#1 or SEC1 private key): aws-lc-rs, TLS 1.2 and 1.3, ALPN
/// `http/1.1`. Any unreadable file, an empty chain or a key that does not match is an error,
/// so a service asked for TLS never falls back to plain HTTP.
pub fn tls_config(cert: &Path, key: &Path) -> Result<Arc<rustls::ServerConfig>, String> {
    use rustls::pki_types::pem::PemObject as _;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let chain = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("TLS_CERT_FILE {}: {e}", cert.display()))?;
    if chain.is_empty() {
        return Err(format!("TLS_CERT_FILE {}: no certificate", cert.display()));
    }
    let key = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| format!("TLS_KEY_FILE {}: {e}", key.display()))?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| format!("TLS_CERT_FILE / TLS_KEY_FILE: {e}"))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// [`serve`] with explicit limits. Every request carries the peer address as
/// `axum::extract::ConnectInfo<SocketAddr>` (the Gateway's `X-Forwarded-For`, per-IP limits).
pub async fn serve_with(
    listener: TcpListener,
    router: axum::Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
    limits: ServerLimits,
) -> std::io::Result<()> {
    serve_tls_with(listener, router, shutdown, limits, None).await
}

/// [`serve_with`], over TLS when `tls` is set (see [`tls_config`]). The handshake must finish
/// within the header deadline, like the request head it precedes.
pub async fn serve_tls_with(
    listener: TcpListener,
    router: axum::Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
    limits: ServerLimits,
    tls: Option<Arc<rustls::ServerConfig>>,
) -> std::io::Result<()> {
    use hyper_util::rt::{TokioIo, TokioTimer};
    use hyper_util::service::TowerToHyperService;

    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(limits.max_header_bytes.max(8 * 1024));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let _ = stream.set_nodelay(true);
                    let service = tower::ServiceExt::map_request(
                        router.clone(),
                        move |mut r: hyper::Request<hyper::body::Incoming>| {
                            r.extensions_mut()
                                .insert(axum::extract::ConnectInfo::<SocketAddr>(peer));
                            r
                        },
                    );
                    let service = TowerToHyperService::new(service);
                    match &tls {
                        None => {
                            let conn = http.serve_connection(TokioIo::new(stream), service);
                            let conn = graceful.watch(conn);
                            tokio::spawn(async move {
                                // A client that goes away mid-request is not a server error.
                                let _ = conn.await;
                            });
                        }
                        Some(config) => {
                            let acceptor = tokio_rustls::TlsAcceptor::from(Arc::clone(config));
                            let watcher = graceful.watcher();
                            let http = http.clone();
                            let deadline = limits.header_read_timeout;
                            tokio::spawn(async move {
                                let accepted =
                                    tokio::time::timeout(deadline, acceptor.accept(stream)).await;
                                let Ok(Ok(stream)) = accepted else {
                                    // A failed or slow handshake: nothing was served.
                                    return;
                                };
                                let conn = http.serve_connection(TokioIo::new(stream), service);
                                let _ = watcher.watch(conn).await;
                            });
                        }
                    }
                }
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            () = &mut shutdown => break,
        }
    }
    drop(listener);
    if tokio::time::timeout(limits.shutdown_grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("in-flight requests did not finish within the shutdown grace");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    async fn start(limits: ServerLimits) -> (SocketAddr, tokio::sync::oneshot::Sender<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let router = axum::Router::new().route("/", axum::routing::get(|| async { "ok" }));
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(serve_with(
            listener,
            router,
            async move {
                let _ = rx.await;
            },
            limits,
        ));
        (addr, tx)
    }

    #[tokio::test]
    async fn answers_and_closes_a_connection_that_trickles_its_headers() {
        let limits = ServerLimits {
            header_read_timeout: Duration::from_millis(300),
            ..ServerLimits::default()
        };
        let (addr, _stop) = start(limits).await;
        let mut ok = tokio::net::TcpStream::connect(addr).await.unwrap();
        ok.write_all(b"GET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut body = String::new();
        tokio::time::timeout(Duration::from_secs(5), ok.read_to_string(&mut body))
            .await
            .unwrap()
            .unwrap();
        assert!(body.starts_with("HTTP/1.1 200"), "{body}");

        // Half a request line, then silence: the server hangs up after the timeout.
        let mut slow = tokio::net::TcpStream::connect(addr).await.unwrap();
        slow.write_all(b"GET / HT").await.unwrap();
        let mut rest = Vec::new();
        // Without the header deadline this read would wait forever (and the timeout fail).
        let _closed_or_reset =
            tokio::time::timeout(Duration::from_secs(5), slow.read_to_end(&mut rest))
                .await
                .expect("the server must close the connection");
        assert!(!String::from_utf8_lossy(&rest).contains("200"));
    }

    #[tokio::test]
    async fn oversized_headers_are_refused() {
        let (addr, _stop) = start(ServerLimits::default()).await;
        let mut c = tokio::net::TcpStream::connect(addr).await.unwrap();
        let big = "a".repeat(64 * 1024);
        let req = format!("GET / HTTP/1.1\r\nhost: x\r\nx-big: {big}\r\n\r\n");
        let _ = c.write_all(req.as_bytes()).await;
        let mut rest = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), c.read_to_end(&mut rest))
            .await
            .expect("the server must answer or close");
        let text = String::from_utf8_lossy(&rest);
        assert!(!text.contains(" 200 "), "{text}");
    }

    #[tokio::test]
    async fn an_idle_keep_alive_connection_is_closed_after_the_header_deadline() {
        // hyper starts the header timer whenever the connection waits for a request, so the
        // header deadline is also the keep-alive idle bound (the Gateway's IDLE_TIMEOUT relies
        // on this; see caracal_gateway::config::Timeouts::keep_alive).
        let limits = ServerLimits {
            header_read_timeout: Duration::from_millis(300),
            ..ServerLimits::default()
        };
        let (addr, _stop) = start(limits).await;
        let mut c = tokio::net::TcpStream::connect(addr).await.unwrap();
        c.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .unwrap();
        let mut buf = vec![0u8; 1024];
        let n = tokio::time::timeout(Duration::from_secs(5), c.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
        // Kept alive, then silent: closed (EOF or reset) well before the 5 s test bound.
        let started = std::time::Instant::now();
        let mut rest = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), c.read_to_end(&mut rest))
            .await
            .expect("the idle keep-alive connection must be closed");
        assert!(started.elapsed() >= Duration::from_millis(200));
    }

    #[tokio::test]
    async fn serves_over_tls_and_refuses_bad_files() {
        let dir = tempfile::tempdir().unwrap();
        let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
        let (cert_path, key_path) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
        std::fs::write(&cert_path, cert.cert.pem()).unwrap();
        std::fs::write(&key_path, cert.key_pair.serialize_pem()).unwrap();
        assert!(tls_config(&cert_path, &dir.path().join("missing.pem")).is_err());
        assert!(
            tls_config(&key_path, &key_path).is_err(),
            "a key is not a chain"
        );
        let config = tls_config(&cert_path, &key_path).unwrap();

        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let router = axum::Router::new().route("/", axum::routing::get(|| async { "ok" }));
        let (_stop, rx) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(serve_tls_with(
            listener,
            router,
            async move {
                let _ = rx.await;
            },
            ServerLimits::default(),
            Some(config),
        ));

        let mut roots = rustls::RootCertStore::empty();
        roots.add(cert.cert.der().clone()).unwrap();
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let client = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let connector = tokio_rustls::TlsConnector::from(Arc::new(client));
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        let mut tls = tokio::time::timeout(Duration::from_secs(5), connector.connect(name, tcp))
            .await
            .unwrap()
            .unwrap();
        tls.write_all(b"GET / HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut body = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), tls.read_to_end(&mut body)).await;
        let text = String::from_utf8_lossy(&body);
        assert!(text.starts_with("HTTP/1.1 200"), "{text}");

        // Plain HTTP on the TLS port is not served.
        let mut plain = tokio::net::TcpStream::connect(addr).await.unwrap();
        plain
            .write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .unwrap();
        let mut rest = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), plain.read_to_end(&mut rest)).await;
        assert!(!String::from_utf8_lossy(&rest).contains("200"));
    }

    #[tokio::test]
    async fn shutdown_stops_accepting() {
        let (addr, stop) = start(ServerLimits::default()).await;
        stop.send(()).unwrap();
        let mut refused = false;
        for _ in 0..50 {
            if tokio::net::TcpStream::connect(addr).await.is_err() {
                refused = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(refused, "the listener must close after shutdown");
    }
}
