//! The local upstream the Gateway forwards to: answers every request `200 {"ok":true}` and
//! keeps nothing (a recording echo would grow without bound under load).

use std::net::SocketAddr;

use axum::http::StatusCode;
use axum::response::IntoResponse;
use tokio::sync::oneshot;

/// The running upstream; stops when dropped.
#[derive(Debug)]
pub struct Upstream {
    /// Where it listens (127.0.0.1, a free port).
    pub addr: SocketAddr,
    _stop: oneshot::Sender<()>,
}

impl Upstream {
    /// Start on 127.0.0.1 on a free port.
    pub async fn start() -> std::io::Result<Self> {
        let app = axum::Router::new().fallback(|| async {
            (
                StatusCode::OK,
                [("content-type", "application/json")],
                "{\"ok\":true}",
            )
                .into_response()
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (stop, stopped) = oneshot::channel::<()>();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = stopped.await;
                })
                .await;
        });
        Ok(Self { addr, _stop: stop })
    }

    /// The base URL.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}
