//! `caracal up` runs every service on the embedded default (and on Postgres and Redis): each
//! answers on its port (moved by `--port-offset`), readiness is reached, and the process stops
//! cleanly.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::{Command, Stdio};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A port offset whose five service ports are free right now (tests run in parallel, in
/// several binaries, so a pid-derived offset can collide).
fn free_offset() -> u16 {
    use std::sync::atomic::{AtomicU16, Ordering};
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let start = 20_000 + (std::process::id() % 997) as u16 * 20;
    loop {
        let offset = start + NEXT.fetch_add(7, Ordering::Relaxed) % 20_000;
        let free = [8080u16, 8081, 4000, 3000, 9090]
            .iter()
            .all(|base| std::net::TcpListener::bind(("0.0.0.0", base + offset)).is_ok());
        if free {
            return offset;
        }
    }
}

async fn get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .ok()?;
    let req = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.ok()?;
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf))
        .await
        .ok()?
        .ok()?;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text.split(' ').nth(1)?.parse().ok()?;
    Some((status, text))
}

async fn get_auth(port: u16, path: &str, bearer: &str) -> Option<(u16, String)> {
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .ok()?;
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {bearer}\r\nConnection: close\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await.ok()?;
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf))
        .await
        .ok()?
        .ok()?;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text.split(' ').nth(1)?.parse().ok()?;
    Some((status, text))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_serves_sts_and_audit_until_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let offset = free_offset();
    let mut child = Command::new(env!("CARGO_BIN_EXE_caracal"))
        .args(["up", "--port-offset", &offset.to_string(), "--data-dir"])
        .arg(dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let (sts, audit, admin, coordinator) =
        (8080 + offset, 9090 + offset, 3000 + offset, 4000 + offset);
    let mut ready = false;
    for _ in 0..300 {
        if let Some((200, _)) = get(sts, "/ready").await {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ready, "the STS never became ready");
    assert_eq!(get(audit, "/health").await.unwrap().0, 200);
    // The Gateway is ready (its revocation snapshot is fresh) and refuses a bare request.
    let (status, body) = get(8081 + offset, "/ready").await.unwrap();
    assert_eq!(status, 200, "{body}");
    let (status, body) = get(8081 + offset, "/anything").await.unwrap();
    assert_eq!(status, 401, "{body}");
    // The Coordinator answers and refuses an anonymous caller.
    assert_eq!(get(coordinator, "/health").await.unwrap().0, 200);
    let (status, body) = get(coordinator, "/zones/z/agents/a").await.unwrap();
    assert_eq!(status, 401, "{body}");
    // The Admin API refuses an anonymous caller and accepts the bootstrap token.
    assert_eq!(get(admin, "/v1/zones").await.unwrap().0, 401);
    let token = std::fs::read_to_string(dir.path().join("bootstrap-admin-token")).unwrap();
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(dir.path().join("bootstrap-admin-token"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let (status, body) = get_auth(admin, "/v1/zones", token.trim()).await.unwrap();
    assert_eq!(status, 200, "{body}");
    let (status, body) = get(sts, "/.well-known/jwks.json?zone_id=nope")
        .await
        .unwrap();
    assert_eq!(status, 404, "{body}");
    assert!(body.contains("resource_not_found"));
    // SIGTERM: a clean stop with exit code 0.
    let pid = child.id().to_string();
    Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    let mut status = None;
    for _ in 0..300 {
        if let Some(s) = child.try_wait().unwrap() {
            status = Some(s);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let status = status.unwrap_or_else(|| {
        let _ = child.kill();
        panic!("caracal up did not stop within 30 s of SIGTERM")
    });
    assert!(status.success(), "{status:?}");
    let mut out = String::new();
    std::io::Read::read_to_string(&mut child.stdout.take().unwrap(), &mut out).unwrap();
    assert!(out.contains(&format!("http://127.0.0.1:{sts}")), "{out}");
    assert!(out.contains(token.trim()), "{out}");
}

async fn send(port: u16, method: &str, path: &str, bearer: &str, body: &str) -> (u16, String) {
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {bearer}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut buf))
        .await
        .unwrap()
        .unwrap();
    let text = String::from_utf8_lossy(&buf).into_owned();
    (text.split(' ').nth(1).unwrap().parse().unwrap(), text)
}

/// Start `caracal up` with `extra` arguments; wait for the STS to be ready.
async fn start(dir: &std::path::Path, offset: u16, extra: &[&str]) -> std::process::Child {
    let mut child = Command::new(env!("CARGO_BIN_EXE_caracal"))
        .args(["up", "--port-offset", &offset.to_string(), "--data-dir"])
        .arg(dir)
        .args(extra)
        .env_remove("DATABASE_URL")
        .env_remove("REDIS_URL")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    for _ in 0..600 {
        if let Some((200, _)) = get(8080 + offset, "/ready").await {
            return child;
        }
        if let Some(status) = child.try_wait().unwrap() {
            let mut err = String::new();
            std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
            panic!("caracal up exited early ({status:?}): {err}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = child.kill();
    panic!("caracal up never became ready");
}

async fn stop(mut child: std::process::Child) {
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    for _ in 0..300 {
        if let Some(s) = child.try_wait().unwrap() {
            assert!(s.success(), "{s:?}");
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = child.kill();
    panic!("caracal up did not stop within 30 s of SIGTERM");
}

/// With `--database-url` and `--redis-url`, `up` migrates, provisions the stream groups and
/// keeps its state in Postgres: after a full demo and a restart, the zones, the demo's
/// sessions, the zone's signing keys and its audit chain are intact, and the development keys
/// (KEK, HMAC keys) are reused from the data directory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_on_postgres_and_redis_keeps_state_across_restarts() {
    let Some(pg) = caracal_test_support::postgres_or_skip("up_on_postgres_and_redis") else {
        return;
    };
    let Some(redis) = caracal_test_support::redis_or_skip("up_on_postgres_and_redis") else {
        return;
    };
    let db = pg.create_database("up_durable").await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let offset = free_offset();
    let durable = ["--database-url", db.as_str(), "--redis-url", &redis.url()];
    let durable: Vec<&str> = durable.iter().map(|s| &**s).collect();

    let child = start(dir.path(), offset, &durable).await;
    let token = std::fs::read_to_string(dir.path().join("bootstrap-admin-token")).unwrap();
    let keys = std::fs::read_to_string(dir.path().join("dev-keys.json")).unwrap();
    let (status, body) = send(
        3000 + offset,
        "POST",
        "/v1/zones",
        token.trim(),
        r#"{"name":"durable-zone"}"#,
    )
    .await;
    assert_eq!(status, 201, "{body}");
    // The whole demo runs against it (sessions, delegation, Gateway call, revoke, audit).
    let demo = Command::new(env!("CARGO_BIN_EXE_caracal"))
        .args(["demo", "--port-offset", &offset.to_string(), "--data-dir"])
        .arg(dir.path())
        .env_remove("CARACAL_BOOTSTRAP_ADMIN_TOKEN")
        .env_remove("AUDIT_ADMIN_TOKEN")
        .env("RUST_LOG", "error")
        .output()
        .unwrap();
    let demo_out = String::from_utf8_lossy(&demo.stdout).into_owned();
    assert!(
        demo.status.success(),
        "{demo_out}{}",
        String::from_utf8_lossy(&demo.stderr)
    );
    let demo_zone = demo_out
        .lines()
        .find_map(|l| l.trim().strip_prefix("zone "))
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap()
        .to_owned();
    let jwks_path = format!("/.well-known/jwks.json?zone_id={demo_zone}");
    let (status, jwks_before) = get(8080 + offset, &jwks_path).await.unwrap();
    assert_eq!(status, 200, "{jwks_before}");
    // The stream groups were provisioned on the real Redis; the Gateway loaded its snapshot
    // from Postgres.
    let (status, body) = get(9090 + offset, "/ready").await.unwrap();
    assert_eq!(status, 200, "{body}");
    let (status, body) = get(8081 + offset, "/ready").await.unwrap();
    assert_eq!(status, 200, "{body}");
    stop(child).await;

    let child = start(dir.path(), offset, &durable).await;
    let (status, body) = send(3000 + offset, "GET", "/v1/zones", token.trim(), "").await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("durable-zone"), "{body}");
    assert_eq!(
        std::fs::read_to_string(dir.path().join("dev-keys.json")).unwrap(),
        keys,
        "the dev keys are reused"
    );
    // The demo's sessions survived the restart (the bootstrap token is the operator token in
    // `up`): the parent and the child, both ended by the demo's revoke.
    let (status, agents) = send(
        4000 + offset,
        "GET",
        &format!("/zones/{demo_zone}/agents"),
        token.trim(),
        "",
    )
    .await;
    assert_eq!(status, 200, "{agents}");
    let body_of = |r: &str| r.split("\r\n\r\n").nth(1).unwrap_or_default().to_owned();
    let page: serde_json::Value = serde_json::from_str(&body_of(&agents)).unwrap();
    let items = page["items"].as_array().unwrap();
    assert_eq!(items.len(), 2, "{page}");
    assert!(items.iter().all(|a| a["status"] == "terminated"), "{page}");
    // The zone's signing keys and its audit chain survived the restart.
    let (status, jwks_after) = get(8080 + offset, &jwks_path).await.unwrap();
    assert_eq!(status, 200, "{jwks_after}");
    let body = |r: &str| r.split("\r\n\r\n").nth(1).unwrap_or_default().to_owned();
    assert!(body(&jwks_after).contains(r#""kid""#), "{jwks_after}");
    assert_eq!(
        body(&jwks_before),
        body(&jwks_after),
        "the zone keys are intact"
    );
    let (status, verify) = send(
        9090 + offset,
        "GET",
        &format!("/api/audit/verify?zone_id={demo_zone}"),
        token.trim(),
        "",
    )
    .await;
    assert_eq!(status, 200, "{verify}");
    let report: serde_json::Value = serde_json::from_str(&body(&verify)).unwrap();
    assert!(report["rows_checked"].as_u64().unwrap() > 0, "{report}");
    assert_eq!(report["findings"].as_array().unwrap().len(), 0, "{report}");
    stop(child).await;

    // Only one of the two URLs is refused with a message naming the other.
    let out = Command::new(env!("CARGO_BIN_EXE_caracal"))
        .args(["up", "--data-dir"])
        .arg(dir.path())
        .args(["--database-url", db.as_str()])
        .env_remove("REDIS_URL")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--redis-url"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
