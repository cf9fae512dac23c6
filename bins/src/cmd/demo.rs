//! `caracal demo`: the guided tour of issue #9 — authority granted, narrowed, used and
//! revoked — against a running `caracal up` (or, with `--embedded`, one started in-process).
//!
//! Every step goes over HTTP through [`crate::api`], as an outside caller would, and prints
//! the request id(s) of its calls so each one can be found in the logs and the audit ledger.
//! The demo checks every outcome it shows: an unexpected answer stops it with a message naming
//! the step, and the command exits 1.
//!
//! The story: a zone, an application, a provider holding a secret API key and a resource in
//! front of a local echo upstream (started by the demo on 127.0.0.1, a free port; it answers
//! with what it received), a policy; a session mandate; a parent and a child session; a
//! delegation of a narrowed scope (`read` of `read, write`) to the child; a mint and a call
//! through the Gateway (the upstream sees the provider key, never the mandate); a wider mint
//! (`read write`) that the STS refuses; the parent terminated (the child's next call is
//! refused); and the audit chain of the zone verified.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use super::CmdError;
use crate::api::coordinator::{Coordinator, DelegationSpec};
use crate::api::echo::Echo;
use crate::api::gateway::Gateway;
use crate::api::sts::Sts;
use crate::api::world::{self, CHILD_LABEL, PARENT_LABEL, Step, WorldSpec};
use crate::api::{ApiError, Endpoints, Http, Reply, admin::Admin, audit::Audit};

/// Arguments of `caracal demo`.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Start the services in this process (dev mode, in memory) on a free port offset and
    /// stop them at the end, instead of using a running `caracal up`.
    #[arg(long)]
    pub embedded: bool,
    /// The port offset of the running `caracal up` (with --embedded: use this offset instead
    /// of searching for a free one).
    #[arg(long, default_value_t = 0)]
    pub port_offset: u16,
    /// The Admin API bootstrap token; read from `<data-dir>/bootstrap-admin-token` when unset.
    #[arg(long, env = "CARACAL_BOOTSTRAP_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// The Audit service's admin token (`AUDIT_ADMIN_TOKEN`); defaults to the admin token.
    #[arg(long, env = "AUDIT_ADMIN_TOKEN", hide_env_values = true)]
    pub audit_token: Option<String>,
    /// Where `caracal up` keeps its bootstrap token.
    #[arg(long, env = "CARACAL_DATA_DIR", default_value = ".caracal")]
    pub data_dir: PathBuf,
    /// Per-request timeout in seconds.
    #[arg(long, default_value_t = 20)]
    pub timeout_secs: u64,
}

/// How the demo failed: the step and what went wrong.
#[derive(Debug, thiserror::Error)]
enum DemoError {
    #[error("step {step} ({title}): {source}")]
    Api {
        step: usize,
        title: &'static str,
        #[source]
        source: ApiError,
    },
    #[error("step {step} ({title}): {message}")]
    Unexpected {
        step: usize,
        title: &'static str,
        message: String,
    },
}

/// Run the demo; exit 1 on any unexpected outcome.
pub fn run(args: &DemoArgs) -> Result<(), CmdError> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(CmdError::Runtime)?
        .block_on(async {
            if args.embedded {
                embedded(args).await
            } else {
                let endpoints = Endpoints::local(args.port_offset).ok_or_else(|| {
                    CmdError::Config(format!(
                        "--port-offset {} moves a port past 65535",
                        args.port_offset
                    ))
                })?;
                let token = admin_token(args)?;
                story(args, &endpoints, &token).await
            }
        })
}

fn admin_token(args: &DemoArgs) -> Result<String, CmdError> {
    if let Some(t) = args.admin_token.as_deref().filter(|t| !t.trim().is_empty()) {
        return Ok(t.trim().to_owned());
    }
    let path = args.data_dir.join("bootstrap-admin-token");
    std::fs::read_to_string(&path)
        .map(|t| t.trim().to_owned())
        .ok()
        .filter(|t| !t.is_empty())
        .ok_or_else(|| {
            CmdError::Config(format!(
                "no admin token: pass --admin-token (or CARACAL_BOOTSTRAP_ADMIN_TOKEN), or run \
                 from where `caracal up` wrote {}; or use --embedded",
                path.display()
            ))
        })
}

/// The first offset from a per-process start at which all five ports are free.
fn free_offset(start: u16) -> Option<u16> {
    let free = |p: u16| std::net::TcpListener::bind(("0.0.0.0", p)).is_ok();
    (0..200u16)
        .map(|i| start.wrapping_add(i.wrapping_mul(7)) % 30_000 + 20_000)
        .find(|o| {
            [8080u16, 8081, 4000, 3000, 9090]
                .iter()
                .all(|b| b.checked_add(*o).is_some_and(free))
        })
}

/// `--embedded`: `caracal up` in this process on a free offset, the story, a clean stop.
async fn embedded(args: &DemoArgs) -> Result<(), CmdError> {
    let offset = if args.port_offset != 0 {
        args.port_offset
    } else {
        free_offset((std::process::id() % 30_000) as u16)
            .ok_or_else(|| CmdError::Config("no free port offset for --embedded".to_owned()))?
    };
    let token = caracal_core::secrets::client_secret::generate_admin_token()
        .map_err(|e| CmdError::Config(e.to_string()))?;
    let data_dir = std::env::temp_dir().join(format!(
        "caracal-demo-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos())
    ));
    // Parse like the command line would, so `up`'s defaults apply; empty URLs select the
    // in-memory store whatever DATABASE_URL / REDIS_URL say.
    #[derive(clap::Parser)]
    struct Up {
        #[command(flatten)]
        up: super::up::UpArgs,
    }
    let data = data_dir.to_string_lossy().into_owned();
    let offset_s = offset.to_string();
    let parsed = <Up as clap::Parser>::try_parse_from([
        "up",
        "--port-offset",
        &offset_s,
        "--data-dir",
        &data,
        "--bootstrap-admin-token",
        &token,
        "--database-url=",
        "--redis-url=",
    ])
    .map_err(|e| CmdError::Config(format!("embedded up arguments: {e}")))?;
    let up_args = parsed.up;
    println!("Starting the services in-process (dev mode, in memory, port offset {offset})...");
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        super::up::serve(
            &up_args,
            async {
                let _ = stop_rx.await;
            },
            move |_banner| {
                let _ = ready_tx.send(());
            },
        )
        .await
    });
    let result = match tokio::time::timeout(Duration::from_secs(60), ready_rx).await {
        Ok(Ok(())) => {
            let endpoints = Endpoints::local(offset)
                .ok_or_else(|| CmdError::Config("port offset out of range".to_owned()))?;
            story(args, &endpoints, &token).await
        }
        Ok(Err(_)) => Err(CmdError::Config(
            "the embedded services stopped before they were ready".to_owned(),
        )),
        Err(_) => Err(CmdError::Config(
            "the embedded services were not ready within 60 s".to_owned(),
        )),
    };
    let _ = stop_tx.send(());
    let stopped = match tokio::time::timeout(Duration::from_secs(30), server).await {
        Ok(Ok(Ok(()))) => Ok(()),
        Ok(Ok(Err(e))) => Err(e),
        Ok(Err(e)) => Err(CmdError::Config(format!(
            "the embedded services failed: {e}"
        ))),
        Err(_) => Err(CmdError::Config(
            "the embedded services did not stop within 30 s".to_owned(),
        )),
    };
    let _ = std::fs::remove_dir_all(&data_dir);
    result.and(stopped.map(|()| println!("Embedded services stopped.")))
}

/// Print one step line: its number, title and request ids.
fn step(n: usize, title: &str) {
    println!("\n{n:>2}. {title}");
}

fn detail(text: &str, request_id: Option<&str>) {
    match request_id {
        Some(r) => println!("    {text}  [request {r}]"),
        None => println!("    {text}"),
    }
}

/// A short, non-reversible hint of a secret, for showing that two values match.
fn hint(secret: &str) -> String {
    let head: String = secret.chars().take(8).collect();
    format!("{head}…")
}

fn refusal(r: &Reply) -> String {
    format!(
        "HTTP {} {}{}",
        r.status,
        r.code(),
        r.description()
            .map(|d| format!(": {d}"))
            .unwrap_or_default()
    )
}

/// The story, against `endpoints`.
async fn story(args: &DemoArgs, endpoints: &Endpoints, token: &str) -> Result<(), CmdError> {
    match tell(args, endpoints, token).await {
        Ok(()) => {
            println!("\nDemo complete: every step behaved as expected.");
            Ok(())
        }
        Err(e) => Err(CmdError::Demo(e.to_string())),
    }
}

async fn tell(args: &DemoArgs, endpoints: &Endpoints, token: &str) -> Result<(), DemoError> {
    let http = Http::new(Duration::from_secs(args.timeout_secs.max(1)));
    let admin = Admin::new(http.clone(), &endpoints.admin, token);
    let sts = Sts::new(http.clone(), &endpoints.sts);
    let coordinator = Coordinator::new(http.clone(), &endpoints.coordinator);
    let gateway = Gateway::new(http.clone(), &endpoints.gateway);
    let audit_token = args.audit_token.as_deref().unwrap_or(token);
    let audit = Audit::new(http.clone(), &endpoints.audit, audit_token);

    println!("caracal demo: authority granted, narrowed, used and revoked");
    println!(
        "  Admin API {}  STS {}  Coordinator {}  Gateway {}  Audit {}",
        endpoints.admin, endpoints.sts, endpoints.coordinator, endpoints.gateway, endpoints.audit
    );

    let echo = Echo::start().await.map_err(|e| DemoError::Unexpected {
        step: 0,
        title: "start the echo upstream",
        message: e.to_string(),
    })?;
    println!(
        "  Echo upstream (answers with what it received): {}",
        echo.url()
    );

    let tag = demo_tag();
    let provider_key = format!("demo-key-{tag}");
    let spec = WorldSpec {
        tag: &tag,
        upstream_url: &echo.url(),
        scopes: &["read", "write"],
        provider_key: &provider_key,
        policy_wait: Duration::from_secs(30),
    };
    let mut on_step = |s: Step, text: &str, rid: Option<&str>| {
        match s {
            Step::Zone => step(1, "Create a zone (Admin API)"),
            Step::Application => step(2, "Create an application with a client secret"),
            Step::Provider => step(3, "Create a provider holding a secret API key"),
            Step::Resource => step(4, "Create a resource in front of the echo upstream"),
            Step::Policy => step(5, "Write a policy and activate it"),
            _ => {}
        }
        detail(text, rid);
    };
    let w = world::provision(&admin, &sts, &spec, &mut on_step)
        .await
        .map_err(|source| DemoError::Api {
            step: 5,
            title: "provision the world",
            source,
        })?;

    let title = "Bootstrap a session mandate (STS, scope agent:lifecycle)";
    step(6, title);
    let session = sts
        .bootstrap(&w.client, &w.resource)
        .await
        .map_err(|source| DemoError::Api {
            step: 6,
            title,
            source,
        })?;
    detail(
        &format!(
            "use=session mandate, expires in {} s",
            session.value.expires_in
        ),
        session.request_id.as_deref(),
    );
    let bearer = session.value.token.as_str();

    let title = "Start a parent session (Coordinator)";
    step(7, title);
    let parent = coordinator
        .start_session(
            &w.zone_id,
            bearer,
            &w.client.application_id,
            None,
            &[PARENT_LABEL],
        )
        .await
        .map_err(|source| DemoError::Api {
            step: 7,
            title,
            source,
        })?;
    detail(
        &format!("parent session {} (label {PARENT_LABEL})", parent.value),
        parent.request_id.as_deref(),
    );

    let title = "Start a child session under the parent";
    step(8, title);
    let child = coordinator
        .start_session(
            &w.zone_id,
            bearer,
            &w.client.application_id,
            Some(&parent.value),
            &[CHILD_LABEL],
        )
        .await
        .map_err(|source| DemoError::Api {
            step: 8,
            title,
            source,
        })?;
    detail(
        &format!("child session {} (label {CHILD_LABEL})", child.value),
        child.request_id.as_deref(),
    );

    let title = "Delegate a narrowed scope to the child";
    step(9, title);
    let edge = coordinator
        .delegate(
            &w.zone_id,
            bearer,
            &DelegationSpec {
                source_session_id: &parent.value,
                target_session_id: &child.value,
                issuer_application_id: &w.client.application_id,
                receiver_application_id: &w.client.application_id,
                resource_id: &w.resource_id,
                scopes: &["read"],
                ttl_seconds: 600,
            },
        )
        .await
        .map_err(|source| DemoError::Api {
            step: 9,
            title,
            source,
        })?;
    detail(
        &format!(
            "delegation {}: parent -> child, scope `read` (the resource has `read write`)",
            edge.value
        ),
        edge.request_id.as_deref(),
    );

    let title = "Mint `read` for the child and call the upstream through the Gateway";
    step(10, title);
    let fail = |message: String| DemoError::Unexpected {
        step: 10,
        title,
        message,
    };
    let api = |source| DemoError::Api {
        step: 10,
        title,
        source,
    };
    let mandate = sts
        .mint(&w.client, &w.resource, "read", &child.value, &edge.value)
        .await
        .map_err(api)?;
    detail(
        &format!(
            "use=gateway mandate for `read`, expires in {} s",
            mandate.value.expires_in
        ),
        mandate.request_id.as_deref(),
    );
    let call = gateway
        .call(
            "GET",
            "/demo/hello",
            &w.resource,
            &mandate.value.token,
            None,
        )
        .await
        .map_err(api)?;
    if !call.ok() {
        return Err(fail(format!("the Gateway refused: {}", refusal(&call))));
    }
    detail(
        &format!("GET /demo/hello via the Gateway: HTTP {}", call.status),
        call.request_id.as_deref(),
    );
    let seen = echo
        .requests()
        .pop()
        .ok_or_else(|| fail("the upstream received nothing".to_owned()))?;
    let key_seen = seen.header("x-api-key") == Some(w.provider_key.as_str());
    let mandate_seen = seen.any_header_contains(&mandate.value.token)
        || seen.any_header_contains(bearer)
        || seen.uri.contains(&mandate.value.token);
    println!("    upstream received {} {}", seen.method, seen.uri);
    if !key_seen {
        return Err(fail(format!(
            "the upstream did not receive the provider key (X-Api-Key: {:?})",
            seen.header("x-api-key").map(hint)
        )));
    }
    println!(
        "    upstream saw the provider key: yes (X-Api-Key {})",
        hint(&w.provider_key)
    );
    if mandate_seen {
        return Err(fail("the upstream received the agent's mandate".to_owned()));
    }
    println!("    upstream saw the agent's mandate: no");

    let title = "Try a wider scope (`read write`) for the child";
    step(11, title);
    let wider = sts
        .mint_reply(
            &w.client,
            &w.resource,
            "read write",
            &child.value,
            &edge.value,
        )
        .await
        .map_err(|source| DemoError::Api {
            step: 11,
            title,
            source,
        })?;
    if wider.ok() {
        return Err(DemoError::Unexpected {
            step: 11,
            title,
            message: "the STS minted a scope wider than the delegation".to_owned(),
        });
    }
    detail(
        &format!("wider scope denied: {}", refusal(&wider)),
        wider.request_id.as_deref(),
    );

    let title = "Revoke the parent: the child's next call is refused";
    step(12, title);
    let fail = |message: String| DemoError::Unexpected {
        step: 12,
        title,
        message,
    };
    let api = |source| DemoError::Api {
        step: 12,
        title,
        source,
    };
    // A mandate the child already holds: revocation must stop it too, not only new mints.
    let held = sts
        .mint(&w.client, &w.resource, "read", &child.value, &edge.value)
        .await
        .map_err(api)?;
    detail(
        "the child holds a fresh `read` mandate",
        held.request_id.as_deref(),
    );
    let revoked = coordinator
        .terminate(&w.zone_id, bearer, &parent.value, "demo_revoke")
        .await
        .map_err(api)?;
    detail(
        &format!(
            "parent session {} terminated (its subtree with it)",
            parent.value
        ),
        revoked.request_id.as_deref(),
    );
    let before = echo.requests().len();
    let after = gateway
        .call("GET", "/demo/hello", &w.resource, &held.value.token, None)
        .await
        .map_err(api)?;
    if after.ok() {
        return Err(fail(format!(
            "the Gateway served the child after the revoke: HTTP {}",
            after.status
        )));
    }
    if echo.requests().len() != before {
        return Err(fail(
            "the refused call still reached the upstream".to_owned(),
        ));
    }
    detail(
        &format!("child refused after revoke: {}", refusal(&after)),
        after.request_id.as_deref(),
    );
    let remint = sts
        .mint_reply(&w.client, &w.resource, "read", &child.value, &edge.value)
        .await
        .map_err(api)?;
    if remint.ok() {
        return Err(fail(
            "the STS minted for the child after the revoke".to_owned(),
        ));
    }
    detail(
        &format!("a new mint for the child: {}", refusal(&remint)),
        remint.request_id.as_deref(),
    );

    let title = "Verify the zone's audit chain (Audit service)";
    step(13, title);
    verify_chain(&audit, &w.zone_id).await?;
    Ok(())
}

/// Poll the verifier until the decisions of the story have been ingested (the row count is
/// non-zero and stopped growing between two polls) and report; any finding fails the demo.
async fn verify_chain(audit: &Audit, zone: &str) -> Result<(), DemoError> {
    let title = "Verify the zone's audit chain (Audit service)";
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let mut previous = 0u64;
    loop {
        let verdict = audit.verify_zone(zone).await.map_err(|source| {
            let source = match source {
                ApiError::Status {
                    status: 404,
                    request_id,
                    ..
                } => ApiError::Status {
                    what: "audit verify".to_owned(),
                    status: 404,
                    code: "not_found".to_owned(),
                    description: Some(
                        "the Audit service does not serve /api/audit/verify: it has no \
                         AUDIT_ADMIN_TOKEN configured"
                            .to_owned(),
                    ),
                    request_id,
                },
                other => other,
            };
            DemoError::Api {
                step: 13,
                title,
                source,
            }
        })?;
        let v = &verdict.value;
        if !v.clean() {
            return Err(DemoError::Unexpected {
                step: 13,
                title,
                message: format!(
                    "the chain has {} finding(s): {}",
                    v.findings, v.report["findings"]
                ),
            });
        }
        let settled = v.rows_checked > 0 && v.rows_checked == previous;
        previous = v.rows_checked;
        if settled || tokio::time::Instant::now() >= deadline {
            if v.rows_checked == 0 {
                return Err(DemoError::Unexpected {
                    step: 13,
                    title,
                    message: "no audit rows were ingested for the zone within 20 s".to_owned(),
                });
            }
            detail(
                &format!(
                    "audit chain verified: {} rows, 0 findings{}",
                    v.rows_checked,
                    if v.hmac_checked {
                        ", chain HMACs checked"
                    } else {
                        ""
                    }
                ),
                verdict.request_id.as_deref(),
            );
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// A short tag unique to this run (names and identifiers must not collide with an earlier
/// demo on the same `caracal up`).
fn demo_tag() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("{:x}", (nanos as u64) ^ u64::from(std::process::id()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hint_never_shows_the_whole_secret() {
        assert_eq!(hint("demo-key-0123456789"), "demo-key…");
    }

    #[test]
    fn tags_are_lowercase_hex() {
        let t = demo_tag();
        assert!(!t.is_empty() && t.chars().all(|c| c.is_ascii_hexdigit()));
    }
}
