//! The `caracal-control` service (`serve_on`, what the binary runs) on an ephemeral Postgres
//! and Redis: `/health` and `/ready` answer on both ports, an Admin API mutation over real
//! HTTP lands on the Postgres admin audit chain, and `/ready` names Redis when it goes away.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::Duration;

use caracal_control::{ControlService, ControlSettings, serve_on};
use caracal_core::backend::postgres::migrate::migrate;
use caracal_core::backend::postgres::{PgStore, PgStoreOptions};
use caracal_core::clock::SystemClock;
use caracal_core::store::admin_audit::verify_admin_audit;
use caracal_service::Env;
use caracal_test_support::{connect, postgres_or_skip, redis_or_skip};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

const KEK: &str = "8f2a6c1e9b3d4f5a7c8e0b1d2f3a4c5e6f7a8b9c0d1e2f3a4b5c6d7e8f9a0b1c";
const HEX: &str = "6a0f7c2e9b1d4f3a8c5e7b9d1f2a4c6e8b0d2f4a6c8e0b2d4f6a8c0e2b4d6f8a";
const BOOT: &str = "boot-token-0123456789-0123456789-abcdef";

/// One HTTP/1.1 exchange over a fresh connection: `(status, body)`.
async fn http(port: u16, method: &str, path: &str, body: Option<&str>) -> (u16, String) {
    let go = async {
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .unwrap();
        let body = body.unwrap_or("");
        let req = format!(
            "{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\
             Authorization: Bearer {BOOT}\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\n\r\n{body}",
            body.len()
        );
        s.write_all(req.as_bytes()).await.unwrap();
        let mut out = Vec::new();
        s.read_to_end(&mut out).await.unwrap();
        let text = String::from_utf8_lossy(&out).into_owned();
        let status = text
            .split(' ')
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        let body = text.split("\r\n\r\n").nth(1).unwrap_or("").to_owned();
        (status, body)
    };
    tokio::time::timeout(Duration::from_secs(10), go)
        .await
        .expect("http exchange timed out")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn serves_both_apis_on_postgres_and_redis() {
    let test = "control_service_pg_redis";
    let Some(pg) = postgres_or_skip(test) else {
        return;
    };
    let Some(redis) = redis_or_skip(test) else {
        return;
    };
    let url = pg.create_database(test).await.unwrap();
    let mut client = connect(&url).await.unwrap();
    migrate(&mut client).await.unwrap();
    drop(client);
    let redis_url = redis.url();
    let env = Env::from_pairs([
        ("CARACAL_MODE", "stable"),
        ("SECRET_STORE_KEK", KEK),
        ("ISSUER_URL", "https://sts.caracal.test"),
        ("CARACAL_BOOTSTRAP_ADMIN_TOKEN", BOOT),
        ("ADMIN_AUDIT_HMAC_KEY", HEX),
        ("IDEMPOTENCY_HMAC_KEY", HEX),
        ("STREAMS_HMAC_KEY", HEX),
        ("DATABASE_URL", url.as_str()),
        ("REDIS_URL", redis_url.as_str()),
        ("HOSTNAME", "control-test"),
    ]);
    let settings = ControlSettings::from_env(&env).unwrap();
    let audit_key = settings.audit_key.clone();
    let service = ControlService::connect(settings, Arc::new(SystemClock))
        .await
        .unwrap();
    let admin = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let coordinator = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (admin_port, coordinator_port) = (
        admin.local_addr().unwrap().port(),
        coordinator.local_addr().unwrap().port(),
    );
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(serve_on(service, admin, coordinator, async {
        let _ = stopped.await;
    }));

    for port in [admin_port, coordinator_port] {
        assert_eq!(http(port, "GET", "/health", None).await.0, 200);
        let (status, body) = http(port, "GET", "/ready", None).await;
        assert_eq!(status, 200, "{body}");
        assert!(body.contains("\"ready\":true"), "{body}");
    }

    // A mutation through the Admin API is on the Postgres admin audit chain, verified.
    let (status, body) = http(admin_port, "POST", "/v1/zones", Some(r#"{"name":"Svc"}"#)).await;
    assert_eq!(status, 201, "{body}");
    let store = PgStore::open(&url, PgStoreOptions::default())
        .await
        .unwrap();
    let report = verify_admin_audit(&store, None, audit_key.as_ref())
        .await
        .unwrap();
    assert_eq!(report.rows_checked, 1);
    assert!(report.is_clean(), "{report:?}");

    // The Coordinator's public verify route answers without a token.
    let (status, body) = http(
        coordinator_port,
        "POST",
        "/v1/verify",
        Some(r#"{"token":"x.y.z","zone_id":"z"}"#),
    )
    .await;
    assert_eq!(status, 401, "{body}");

    // Redis going away shows in /ready (only a Redis this test owns can be stopped).
    if !redis.is_external() {
        redis.stop().unwrap();
        let (status, body) = http(admin_port, "GET", "/ready", None).await;
        assert_eq!(status, 503, "{body}");
        assert!(body.contains("redis_unreachable"), "{body}");
    }

    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(30), server)
        .await
        .expect("the service did not stop")
        .unwrap()
        .unwrap();
}
