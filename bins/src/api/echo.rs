//! A local echo upstream: answers every request with a JSON description of what it received
//! (method, path and query, headers) and keeps the same record in memory, so a caller can
//! show exactly what the Gateway forwarded (the provider key, never the agent's mandate).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::extract::Request;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde_json::{Map, Value, json};
use tokio::sync::oneshot;

/// One request the upstream received.
#[derive(Debug, Clone)]
pub struct Seen {
    /// The method.
    pub method: String,
    /// Path and query.
    pub uri: String,
    /// Headers, lower-case names (a repeated header keeps its last value).
    pub headers: Map<String, Value>,
}

impl Seen {
    /// A header value.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(Value::as_str)
    }

    /// Whether any header value contains `needle`.
    pub fn any_header_contains(&self, needle: &str) -> bool {
        self.headers
            .values()
            .filter_map(Value::as_str)
            .any(|v| v.contains(needle))
    }
}

/// The running echo upstream; stops when dropped.
#[derive(Debug)]
pub struct Echo {
    /// Where it listens (127.0.0.1, a free port).
    pub addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    _stop: oneshot::Sender<()>,
}

impl Echo {
    /// Start on 127.0.0.1 on a free port.
    pub async fn start() -> std::io::Result<Self> {
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let record = seen.clone();
        let app = axum::Router::new().fallback(move |req: Request| {
            let record = record.clone();
            async move {
                let headers: Map<String, Value> = req
                    .headers()
                    .iter()
                    .map(|(k, v)| {
                        (
                            k.as_str().to_owned(),
                            Value::String(String::from_utf8_lossy(v.as_bytes()).into_owned()),
                        )
                    })
                    .collect();
                let entry = Seen {
                    method: req.method().to_string(),
                    uri: req.uri().to_string(),
                    headers,
                };
                let body = json!({"method": entry.method, "uri": entry.uri,
                    "headers": entry.headers});
                record
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .push(entry);
                (
                    StatusCode::OK,
                    [("content-type", "application/json")],
                    body.to_string(),
                )
                    .into_response()
            }
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
        Ok(Self {
            addr,
            seen,
            _stop: stop,
        })
    }

    /// The base URL, e.g. `http://127.0.0.1:41234`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every request received so far, oldest first.
    pub fn requests(&self) -> Vec<Seen> {
        self.seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
}
