//! The Gateway in front of the real STS (the STS's seeded test world, in process) and a real
//! local upstream that records what it received.

#![allow(dead_code)]

#[path = "../../../caracal-sts/tests/support/mod.rs"]
pub mod sts;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::Request;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use caracal_core::clock::SharedClock;
use caracal_core::model::provider::{Provider, ProviderKind};
use caracal_core::secrets::envelope::provider_secret_config_ref;
use caracal_core::store::directory::{ProviderStore, ResourceStore, SecretStore};
use caracal_gateway::config::GatewaySettings;
use caracal_gateway::{GatewayParts, GatewayService};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot};

pub use sts::{PIPERNET, World};

/// What the upstream received.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub uri: String,
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// The recording upstream. `/sse` streams events fed through `sse`.
pub struct Upstream {
    pub addr: SocketAddr,
    pub seen: Arc<Mutex<Vec<Recorded>>>,
    pub sse: Arc<Mutex<Option<oneshot::Sender<mpsc::Sender<Bytes>>>>>,
    _stop: oneshot::Sender<()>,
}

impl Upstream {
    pub fn requests(&self) -> Vec<Recorded> {
        self.seen.lock().unwrap().clone()
    }
}

pub async fn upstream() -> Upstream {
    let seen: Arc<Mutex<Vec<Recorded>>> = Arc::default();
    let sse: Arc<Mutex<Option<oneshot::Sender<mpsc::Sender<Bytes>>>>> = Arc::default();
    let (s2, sse2) = (seen.clone(), sse.clone());
    let app = axum::Router::new().fallback(move |req: Request| {
        let seen = s2.clone();
        let sse = sse2.clone();
        async move {
            let (parts, body) = req.into_parts();
            let body = body
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            seen.lock().unwrap().push(Recorded {
                method: parts.method.to_string(),
                uri: parts.uri.to_string(),
                headers: parts.headers.clone(),
                body,
            });
            let path = parts.uri.path().to_owned();
            if path.ends_with("/sse") {
                let (tx, rx) = mpsc::channel::<Bytes>(16);
                if let Some(waiter) = sse.lock().unwrap().take() {
                    let _ = waiter.send(tx);
                }
                return Response::builder()
                    .header("content-type", "text/event-stream")
                    .body(Body::new(ChanStream(rx)))
                    .unwrap();
            }
            if path.ends_with("/redirect") {
                return Response::builder()
                    .status(302)
                    .header("location", "http://evil.example/x")
                    .header("server", "upstream/1.0")
                    .header("x-caracal-identity", "echo")
                    .body(Body::empty())
                    .unwrap();
            }
            (
                StatusCode::OK,
                [("content-type", "application/json")],
                json!({"ok": true}).to_string(),
            )
                .into_response()
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(async {
                let _ = stopped.await;
            })
            .await;
    });
    Upstream {
        addr,
        seen,
        sse,
        _stop: stop,
    }
}

/// A frame stream over a channel (for the SSE upstream).
pub struct ChanStream(pub mpsc::Receiver<Bytes>);

impl http_body::Body for ChanStream {
    type Data = Bytes;
    type Error = std::io::Error;
    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, std::io::Error>>> {
        self.get_mut()
            .0
            .poll_recv(cx)
            .map(|o| o.map(|b| Ok(http_body::Frame::data(b))))
    }
}

/// The world: STS world, recording upstream, Gateway served on a local port.
pub struct Harness {
    pub w: World,
    pub up: Upstream,
    pub gw: Arc<GatewayService>,
    pub addr: SocketAddr,
    pub client: Client<HttpConnector, Full<Bytes>>,
    _replay: tempfile::TempDir,
    _stop: oneshot::Sender<()>,
}

pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Value,
    pub text: String,
    pub trailers: Option<HeaderMap>,
}

impl Reply {
    pub fn error(&self) -> &str {
        self.body["error"].as_str().unwrap_or("")
    }
    pub fn description(&self) -> &str {
        self.body["error_description"].as_str().unwrap_or("")
    }
}

pub async fn harness() -> Harness {
    harness_with(|_| {}).await
}

pub async fn harness_with(tune: impl FnOnce(&mut GatewaySettings)) -> Harness {
    harness_parts(tune, |_, p| p).await
}

/// A harness whose Gateway parts are adjusted by `parts` (real Redis, Postgres, ...).
pub async fn harness_parts(
    tune: impl FnOnce(&mut GatewaySettings),
    parts: impl FnOnce(&World, GatewayParts) -> GatewayParts,
) -> Harness {
    let w = sts::world().await;
    let up = upstream().await;
    // pipernet now points at the recording upstream.
    let mut pipernet = w.pipernet.clone();
    pipernet.upstream_url = Some(format!("http://127.0.0.1:{}/base?fixed=1", up.addr.port()));
    w.store.update_resource(&pipernet).await.unwrap();
    let replay = tempfile::tempdir().unwrap();
    let mut settings = GatewaySettings::dev(replay.path().to_path_buf());
    tune(&mut settings);
    let clock: SharedClock = Arc::new(w.clock.clone());
    let defaults = GatewayService::in_process_parts(
        settings,
        w.svc.sts().clone(),
        Arc::new(w.store.clone()),
        w.streams.clone(),
        clock,
    );
    let gw = GatewayService::new(parts(&w, defaults)).unwrap();
    // The initial snapshot (a failing source is the startup test's business).
    let _ = gw.reload_revocations().await;
    let _workers = gw.spawn_workers();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let router = gw.router();
    tokio::spawn(async move {
        let _ = caracal_gateway::serve_on(
            listener,
            router,
            Duration::from_secs(5),
            async {
                let _ = stopped.await;
            },
            Duration::from_secs(1),
        )
        .await;
    });
    std::mem::forget(_workers);
    Harness {
        w,
        up,
        gw,
        addr,
        client: Client::builder(TokioExecutor::new()).build_http(),
        _replay: replay,
        _stop: stop,
    }
}

impl Harness {
    /// A fresh `use=gateway` mandate of B for pipernet (`read`).
    pub async fn mandate(&self) -> String {
        let r = self.w.delegated_mint("read", PIPERNET).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        r.token().to_owned()
    }

    /// Configure pipernet with a provider of `kind`, `config` and sealed `secret`.
    pub async fn provider(&self, kind: ProviderKind, config: Value, secret: Value) {
        let t = self.w.clock_now();
        let provider = Provider {
            id: "0190f2a0-0000-7000-8000-0000000000aa".into(),
            zone_id: self.w.zone.clone(),
            name: "vendor".into(),
            identifier: "provider://vendor".into(),
            kind,
            config_json: config.as_object().cloned().unwrap_or_default(),
            secret_config_keys: secret
                .as_object()
                .map(|m| m.keys().cloned().collect())
                .unwrap_or_default(),
            connectivity_failed_at: None,
            attribution: sts::attribution(),
            created_at: t,
            updated_at: t,
            archived_at: None,
        };
        self.w.store.insert_provider(&provider).await.unwrap();
        let reference = provider_secret_config_ref(&self.w.zone, &provider.id);
        let sealed = self
            .w
            .svc
            .settings()
            .keyring
            .seal(&reference, secret.to_string().as_bytes())
            .unwrap();
        self.w.store.put_secret(&reference, &sealed).await.unwrap();
        let mut r = self
            .w
            .store
            .get_resource(&self.w.zone, &self.w.pipernet.id)
            .await
            .unwrap()
            .unwrap();
        r.credential_provider_id = Some(provider.id.clone());
        self.w.store.update_resource(&r).await.unwrap();
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub async fn send(&self, request: hyper::Request<Full<Bytes>>) -> Reply {
        let response = tokio::time::timeout(Duration::from_secs(30), self.client.request(request))
            .await
            .expect("gateway request timed out")
            .unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let mut body = response.into_body();
        let mut data = Vec::new();
        let mut trailers = None;
        while let Some(frame) = tokio::time::timeout(Duration::from_secs(30), body.frame())
            .await
            .expect("body timed out")
        {
            let Ok(frame) = frame else { break };
            match frame.into_data() {
                Ok(d) => data.extend_from_slice(&d),
                Err(f) => trailers = f.into_trailers().ok(),
            }
        }
        let text = String::from_utf8_lossy(&data).into_owned();
        Reply {
            status,
            headers,
            body: serde_json::from_slice(&data).unwrap_or(Value::Null),
            text,
            trailers,
        }
    }

    /// `GET path` with `Authorization: Bearer <token>` and the pipernet resource header.
    pub async fn get(&self, path: &str, token: Option<&str>, extra: &[(&str, &str)]) -> Reply {
        let mut r = hyper::Request::get(self.url(path)).header("x-caracal-resource", PIPERNET);
        if let Some(t) = token {
            r = r.header("authorization", format!("Bearer {t}"));
        }
        for (k, v) in extra {
            r = r.header(*k, *v);
        }
        self.send(r.body(Full::new(Bytes::new())).unwrap()).await
    }
}

trait ClockNow {
    fn clock_now(&self) -> chrono::DateTime<chrono::Utc>;
}

impl ClockNow for World {
    fn clock_now(&self) -> chrono::DateTime<chrono::Utc> {
        use caracal_core::clock::Clock;
        self.clock.now()
    }
}
