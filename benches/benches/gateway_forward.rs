//! The Gateway's per-request cost as a whole (issue #7, Proof), next to its floor:
//!
//! - `gateway/overhead_in_process`: one request through the Gateway's router by tower
//!   `oneshot` (no socket on the agent side): pre-flight, `jti` burn, the in-process exchange
//!   against the embedded STS (which mints the `caracal_jwt` resource mandate), injection,
//!   forwarding, streaming the answer back, audit. The Gateway has no seam for an in-process
//!   upstream (its upstream client is built inside `GatewayService::new` over the egress-guarded
//!   connector), so the upstream here is the tiny hyper server on loopback below: **its
//!   round trip is included** (`upstream/direct_loopback` measures it alone);
//! - `gateway/forward_loopback`: a real HTTP/1.1 request over loopback to the Gateway served by
//!   `serve_on` on 127.0.0.1, forwarded to the same upstream;
//! - `bare_proxy/forward_loopback`: the same request through a minimal hyper reverse proxy
//!   (method, path, headers and body forwarded, the answer streamed back): the floor;
//! - `upstream/direct_loopback`: the same request straight to the upstream.
//!
//! Every Gateway request needs a fresh single-use mandate: they are minted through the seeded
//! STS world of the Gateway's test support (reused by `#[path]`; the Gateway is assembled here
//! as its `harness_parts` does, with the STS mint limit lifted) in the `iter_batched` setup, so
//! minting is not measured. The three loopback benches share one keep-alive client (`TCP_NODELAY`); every
//! server sets `TCP_NODELAY` on accepted sockets, as the Gateway's own server does. Each
//! iteration reads the whole response body and checks the status is 200. Every iteration
//! drives its future with `Runtime::block_on` from the bench thread (the servers run on a
//! two-worker runtime), identically for all four.

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../../caracal-gateway/tests/support/mod.rs"]
mod support;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ConnectInfo;
use caracal_core::clock::SharedClock;
use caracal_core::store::directory::ResourceStore;
use caracal_gateway::{GatewayService, GatewaySettings};
use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode, header};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tower::ServiceExt;

/// The agent's request target (path and query).
const TARGET: &str = "/v1/items/42?page=2";
/// The upstream's answer.
const ANSWER: &[u8] = br#"{"ok":true,"items":[{"id":42,"name":"item"}]}"#;
/// A valid W3C trace context, so the Gateway's `traceparent` check does its real work.
const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

type ProxyBody = BoxBody<Bytes, hyper::Error>;
type LoopbackClient = Client<HttpConnector, Empty<Bytes>>;

/// The upstream: answers every request with [`ANSWER`] after reading its body.
async fn upstream() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let _ = stream.set_nodelay(true);
            tokio::spawn(async move {
                let service = service_fn(|request: Request<Incoming>| async move {
                    let _ = request.into_body().collect().await;
                    Ok::<_, Infallible>(
                        Response::builder()
                            .header(header::CONTENT_TYPE, "application/json")
                            .body(Full::new(Bytes::from_static(ANSWER)))
                            .unwrap(),
                    )
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

/// The bare reverse proxy: forwards method, path, query, headers (but `Host`, which the
/// client sets to the upstream's) and the streaming body to `upstream` over a keep-alive
/// client, and streams the answer back.
async fn bare_proxy(upstream: SocketAddr) -> SocketAddr {
    let mut http = HttpConnector::new();
    http.set_nodelay(true);
    let client: Client<HttpConnector, Incoming> = Client::builder(TokioExecutor::new()).build(http);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let _ = stream.set_nodelay(true);
            let client = client.clone();
            tokio::spawn(async move {
                let service = service_fn(move |request: Request<Incoming>| {
                    let client = client.clone();
                    async move {
                        let (mut parts, body) = request.into_parts();
                        let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
                        let Ok(uri) = format!("http://{upstream}{path}").parse() else {
                            return Ok::<_, Infallible>(bad_gateway());
                        };
                        parts.uri = uri;
                        parts.headers.remove(header::HOST);
                        match client.request(Request::from_parts(parts, body)).await {
                            Ok(answer) => Ok(answer.map(BodyExt::boxed)),
                            Err(_) => Ok(bad_gateway()),
                        }
                    }
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

fn bad_gateway() -> Response<ProxyBody> {
    let body = Empty::<Bytes>::new()
        .map_err(|never| match never {})
        .boxed();
    let mut response = Response::new(body);
    *response.status_mut() = StatusCode::BAD_GATEWAY;
    response
}

/// The agent's request headers, identical for every target (the non-Gateway targets ignore
/// the mandate; it is there so every request has the same size).
fn agent_request<B>(uri: &str, token: &str, body: B) -> Request<B> {
    Request::get(uri)
        .header("x-caracal-resource", support::PIPERNET)
        .header(header::AUTHORIZATION, format!("Bearer {token}"))
        .header(header::ACCEPT, "application/json")
        .header(header::USER_AGENT, "agent/1.0")
        .header("traceparent", TRACEPARENT)
        .body(body)
        .unwrap()
}

/// One request over loopback; the whole body is read.
async fn over_loopback(client: &LoopbackClient, addr: SocketAddr, token: &str) -> Bytes {
    let request = agent_request(&format!("http://{addr}{TARGET}"), token, Empty::new());
    let response = client.request(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    response.into_body().collect().await.unwrap().to_bytes()
}

/// The Gateway served on loopback, as `support::harness_parts` builds it, but over a seeded STS
/// world whose per-minute mint limit is lifted: the world's clock is frozen, so the default
/// limit (1000 per window) would be reached during warm-up and never reset. The resource
/// points at `upstream`.
async fn gateway(upstream: SocketAddr) -> Gateway {
    let w = support::sts::world_with(|s| s.mint_limit_per_min = u32::MAX).await;
    let mut pipernet = w.pipernet.clone();
    pipernet.upstream_url = Some(format!("http://{upstream}/base?fixed=1"));
    w.store.update_resource(&pipernet).await.unwrap();
    let replay = tempfile::tempdir().unwrap();
    let settings = GatewaySettings::dev(replay.path().to_path_buf());
    let clock: SharedClock = Arc::new(w.clock.clone());
    let gw = GatewayService::in_process(
        settings,
        w.svc.sts().clone(),
        Arc::new(w.store.clone()),
        w.streams.clone(),
        clock,
    )
    .unwrap();
    gw.reload_revocations().await.unwrap();
    std::mem::forget(gw.spawn_workers());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
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
    Gateway {
        w,
        gw,
        addr,
        _replay: replay,
        _stop: stop,
    }
}

/// The served Gateway and its world (the test support's `Harness` without its recording
/// upstream, whose fields are private to the tests).
struct Gateway {
    w: support::World,
    gw: Arc<GatewayService>,
    addr: SocketAddr,
    _replay: tempfile::TempDir,
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl Gateway {
    /// A fresh `use=gateway` mandate of B for pipernet (`read`), as `Harness::mandate`.
    async fn mandate(&self) -> String {
        let r = self.w.delegated_mint("read", support::PIPERNET).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        r.token().to_owned()
    }
}

fn benches(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let upstream_addr = rt.block_on(upstream());
    let proxy_addr = rt.block_on(bare_proxy(upstream_addr));
    let h = rt.block_on(gateway(upstream_addr));
    let router = h.gw.router();
    let mut http = HttpConnector::new();
    http.set_nodelay(true);
    let client: LoopbackClient = Client::builder(TokioExecutor::new()).build(http);
    // One mandate for the targets that do not check it (same request size everywhere).
    let spare = rt.block_on(h.mandate());
    // The first request of each path proves it answers 200 before anything is measured.
    let first = rt.block_on(h.mandate());
    assert_eq!(
        rt.block_on(over_loopback(&client, h.addr, &first)).as_ref(),
        ANSWER
    );
    assert_eq!(
        rt.block_on(over_loopback(&client, proxy_addr, &spare))
            .as_ref(),
        ANSWER
    );
    // The peer the socket path would record, so both Gateway paths do the same work.
    let peer = ConnectInfo(SocketAddr::from(([127, 0, 0, 1], 40000)));

    let mut g = c.benchmark_group("gateway");
    g.bench_function("overhead_in_process", |b| {
        b.iter_batched(
            || rt.block_on(h.mandate()),
            |token| {
                rt.block_on(async {
                    let mut request = agent_request(TARGET, &token, axum::body::Body::empty());
                    request.extensions_mut().insert(peer);
                    let response = router.clone().oneshot(request).await.unwrap();
                    assert_eq!(response.status(), StatusCode::OK);
                    response.into_body().collect().await.unwrap().to_bytes()
                })
            },
            BatchSize::SmallInput,
        )
    });
    g.bench_function("forward_loopback", |b| {
        b.iter_batched(
            || rt.block_on(h.mandate()),
            |token| rt.block_on(over_loopback(&client, h.addr, &token)),
            BatchSize::SmallInput,
        )
    });
    g.finish();

    let mut g = c.benchmark_group("bare_proxy");
    g.bench_function("forward_loopback", |b| {
        b.iter(|| rt.block_on(over_loopback(&client, proxy_addr, &spare)))
    });
    g.finish();

    let mut g = c.benchmark_group("upstream");
    g.bench_function("direct_loopback", |b| {
        b.iter(|| rt.block_on(over_loopback(&client, upstream_addr, &spare)))
    });
    g.finish();

    drop(h);
    rt.shutdown_background();
}

criterion_group!(gateway_forward, benches);
criterion_main!(gateway_forward);
