//! The scenarios and the world they run in.
//!
//! The world is built through the public HTTP APIs only (what an outside caller can do):
//! `api::world::provision` (zone, application, provider, resource with the harness's own
//! upstream, active policy), a session mandate by bootstrap, a parent and a child Session at
//! the Coordinator, and a delegation edge parent → child for `read`.
//!
//! | Scenario | One operation | Audit events it must leave (lower bound) |
//! |---|---|---|
//! | `governed` | delegated mint at the STS over HTTP, then a Gateway call with that mandate (the Gateway re-exchanges, injects and forwards to the local upstream) | 3: two `token_exchange` decisions and one `gateway_resource_request` |
//! | `gateway` | a Gateway call with a mandate taken from a [`Pool`] minted before the window (re-exchange, inject, forward to the local upstream) | 2: one `token_exchange` decision and one `gateway_resource_request` (plus 1 per pre-minted mandate) |
//! | `exchange` | a delegated mint at the STS over HTTP | 1 |
//! | `verify` | verify a pre-minted mandate against the zone's JWKS (fetched once over HTTP) | 0 |
//! | `session-cycle` | Coordinator: start a task Session, then terminate it | 0 (the Coordinator's own chain, not the decision ledger) |
//! | `audit-ingest` | (in process, see `ingest`) 1,000 events emitted and flushed to the stream | every event, exactly |

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use caracal_core::mandate::{MandateUse, VerificationKeys, VerifyPolicy, parse_jwks, verify};
use serde_json::Value;

use crate::api::coordinator::{Coordinator, DelegationSpec};
use crate::api::gateway::Gateway;
use crate::api::sts::{Client, Sts};
use crate::api::world::{self, CHILD_LABEL, PARENT_LABEL, WorldSpec};
use crate::api::{ApiError, Http, enc};

/// The scenarios, in report order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Scenario {
    /// Delegated mint over HTTP, then a Gateway call that re-exchanges and forwards.
    Governed,
    /// A Gateway call (re-exchange, inject, forward) with a mandate minted before the window.
    Gateway,
    /// A delegated mint at the STS over HTTP.
    Exchange,
    /// Mandate verification against the zone's JWKS.
    Verify,
    /// Coordinator Session create + close.
    SessionCycle,
    /// Audit events through the emitter, the stream and the ingestor into the chain
    /// (in process; see `ingest`).
    AuditIngest,
    /// Every scenario above, in order.
    All,
}

impl Scenario {
    /// The scenarios `self` stands for.
    pub fn expand(self) -> Vec<Scenario> {
        match self {
            Scenario::All => vec![
                Scenario::Governed,
                Scenario::Gateway,
                Scenario::Exchange,
                Scenario::Verify,
                Scenario::SessionCycle,
                Scenario::AuditIngest,
            ],
            one => vec![one],
        }
    }

    /// The CLI name.
    pub fn name(self) -> &'static str {
        match self {
            Scenario::Governed => "governed",
            Scenario::Gateway => "gateway",
            Scenario::Exchange => "exchange",
            Scenario::Verify => "verify",
            Scenario::SessionCycle => "session-cycle",
            Scenario::AuditIngest => "audit-ingest",
            Scenario::All => "all",
        }
    }
}

/// Where the services answer.
pub use crate::api::Endpoints;

/// Everything the operations need, built once.
pub struct Ctx {
    /// The STS client.
    pub sts: Sts,
    /// The Gateway client.
    pub gateway: Gateway,
    /// The Coordinator client.
    pub coordinator: Coordinator,
    /// The provisioned world.
    pub world: world::World,
    /// The session mandate (bearer at the Coordinator).
    pub session_mandate: String,
    /// The child Session the edge targets.
    pub child: String,
    /// The delegation edge.
    pub edge: String,
    /// A gateway mandate and the keys and policy that verify it.
    pub verify: (String, VerificationKeys, VerifyPolicy),
}

fn api(what: &str) -> impl Fn(ApiError) -> String + '_ {
    move |e| format!("{what}: {e}")
}

/// The unverified claims of a JWT (only to learn the issuer the verify policy expects).
fn claims(token: &str) -> Value {
    use base64::Engine as _;
    let payload = token.split('.').nth(1).unwrap_or("");
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or(Value::Null)
}

impl Ctx {
    /// Provision the world at `endpoints` with the bootstrap admin token.
    pub async fn provision(
        http: Http,
        endpoints: &Endpoints,
        admin_token: &str,
        upstream_url: &str,
        tag: &str,
    ) -> Result<Arc<Self>, String> {
        let admin = crate::api::admin::Admin::new(http.clone(), &endpoints.admin, admin_token);
        let sts = Sts::new(http.clone(), &endpoints.sts);
        let coordinator = Coordinator::new(http.clone(), &endpoints.coordinator);
        let gateway = Gateway::new(http.clone(), &endpoints.gateway);
        let w = world::provision(
            &admin,
            &sts,
            &WorldSpec {
                tag,
                upstream_url,
                scopes: &["read"],
                provider_key: "bench-provider-key-0123456789",
                policy_wait: std::time::Duration::from_secs(30),
            },
            &mut |_, _, _| {},
        )
        .await
        .map_err(api("provision"))?;
        let session = sts
            .bootstrap(&w.client, &w.resource)
            .await
            .map_err(api("bootstrap"))?
            .value
            .token;
        let app = w.client.application_id.clone();
        let parent = coordinator
            .start_session(&w.zone_id, &session, &app, None, &[PARENT_LABEL])
            .await
            .map_err(api("parent session"))?
            .value;
        let child = coordinator
            .start_session(&w.zone_id, &session, &app, Some(&parent), &[CHILD_LABEL])
            .await
            .map_err(api("child session"))?
            .value;
        let edge = coordinator
            .delegate(
                &w.zone_id,
                &session,
                &DelegationSpec {
                    source_session_id: &parent,
                    target_session_id: &child,
                    issuer_application_id: &app,
                    receiver_application_id: &app,
                    resource_id: &w.resource_id,
                    scopes: &["read"],
                    ttl_seconds: 3600,
                },
            )
            .await
            .map_err(api("delegation"))?
            .value;
        let mandate = sts
            .mint(&w.client, &w.resource, "read", &child, &edge)
            .await
            .map_err(api("delegated mint"))?
            .value
            .token;
        let jwks_url = format!(
            "{}/.well-known/jwks.json?zone_id={}",
            endpoints.sts.trim_end_matches('/'),
            enc(&w.zone_id)
        );
        let jwks = http
            .send("GET", &jwks_url, &[], None)
            .await
            .map_err(api("jwks"))?
            .expect("jwks", &[200])
            .map_err(api("jwks"))?;
        let keys = parse_jwks(jwks.text.as_bytes()).map_err(|e| format!("jwks: {e}"))?;
        let c = claims(&mandate);
        let issuer = c["iss"].as_str().unwrap_or_default().to_owned();
        let audience = match &c["aud"] {
            Value::String(s) => s.clone(),
            Value::Array(a) => a.first().and_then(Value::as_str).unwrap_or("").to_owned(),
            _ => String::new(),
        };
        let policy = VerifyPolicy::new(w.zone_id.clone(), issuer, MandateUse::Gateway, audience);
        verify(&mandate, &keys, &policy, chrono::Utc::now())
            .map_err(|e| format!("the minted mandate does not verify: {e}"))?;
        Ok(Arc::new(Self {
            sts,
            gateway,
            coordinator,
            world: w,
            session_mandate: session,
            child,
            edge,
            verify: (mandate, keys, policy),
        }))
    }

    fn client(&self) -> &Client {
        &self.world.client
    }

    async fn mint(&self) -> Result<String, String> {
        self.mint_expiring().await.map(|(token, _)| token)
    }

    /// A delegated mint: the mandate and its lifetime in seconds.
    async fn mint_expiring(&self) -> Result<(String, i64), String> {
        let r = self
            .sts
            .mint_reply(
                self.client(),
                &self.world.resource,
                "read",
                &self.child,
                &self.edge,
            )
            .await
            .map_err(|e| e.to_string())?;
        Sts::mandate(r, "delegated mint")
            .map(|a| (a.value.token, a.value.expires_in))
            .map_err(|e| e.to_string())
    }

    /// A Gateway call with `mandate`, which must answer 200 from the upstream.
    async fn gateway_call(&self, mandate: &str) -> Result<u64, String> {
        let r = self
            .gateway
            .call("GET", "/items", &self.world.resource, mandate, None)
            .await
            .map_err(|e| e.to_string())?;
        r.expect("gateway call", &[200])
            .map_err(|e| e.to_string())?;
        // The Gateway's re-exchange decision and its resource-request event.
        Ok(2)
    }

    /// One operation of `scenario`; answers the audit events it must have produced.
    pub async fn once(&self, scenario: Scenario) -> Result<u64, String> {
        match scenario {
            Scenario::Governed => {
                let mandate = self.mint().await?;
                // The delegated mint's decision plus the Gateway's two events.
                self.gateway_call(&mandate).await.map(|events| events + 1)
            }
            Scenario::Exchange => self.mint().await.map(|_| 1),
            Scenario::Verify => {
                let (token, keys, policy) = &self.verify;
                verify(token, keys, policy, chrono::Utc::now())
                    .map(|_| 0)
                    .map_err(|e| e.to_string())
            }
            Scenario::SessionCycle => {
                let zone = &self.world.zone_id;
                let id = self
                    .coordinator
                    .start_session(
                        zone,
                        &self.session_mandate,
                        &self.client().application_id,
                        None,
                        &[CHILD_LABEL],
                    )
                    .await
                    .map_err(|e| e.to_string())?
                    .value;
                self.coordinator
                    .terminate(zone, &self.session_mandate, &id, "bench")
                    .await
                    .map_err(|e| e.to_string())?;
                Ok(0)
            }
            Scenario::Gateway | Scenario::AuditIngest | Scenario::All => {
                Err(format!("`{}` is not one HTTP operation", scenario.name()))
            }
        }
    }
}

/// The `gateway` scenario's pre-minted one-shot mandates: minted before the measured window
/// (so the window measures only the Gateway call), each handed out once (the Gateway burns a
/// mandate's `jti` on first use).
pub struct Pool {
    ctx: Arc<Ctx>,
    /// Each mandate and the instant after which it must not be used (its expiry less a margin).
    mandates: Vec<(String, Instant)>,
    next: AtomicUsize,
    /// How long minting the pool took.
    pub minted_in: Duration,
}

/// A pool mandate is not handed out within this margin of its expiry (a call in flight must
/// not race the `exp` check).
const EXPIRY_MARGIN: Duration = Duration::from_secs(5);

impl Pool {
    /// Mint `size` mandates with `workers` concurrent delegated mints; any failed mint fails
    /// the pool (a pool with holes would measure the refusal path).
    pub async fn mint(ctx: Arc<Ctx>, size: usize, workers: usize) -> Result<Self, String> {
        let start = Instant::now();
        let claimed = Arc::new(AtomicUsize::new(0));
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..workers.max(1) {
            let ctx = Arc::clone(&ctx);
            let claimed = Arc::clone(&claimed);
            tasks.spawn(async move {
                let mut mine = Vec::new();
                while claimed.fetch_add(1, Ordering::Relaxed) < size {
                    let asked = Instant::now();
                    let (token, expires_in) = ctx.mint_expiring().await?;
                    let lifetime = Duration::from_secs(u64::try_from(expires_in).unwrap_or(0));
                    let usable_until = (asked + lifetime)
                        .checked_sub(EXPIRY_MARGIN)
                        .unwrap_or(asked);
                    mine.push((token, usable_until));
                }
                Ok::<_, String>(mine)
            });
        }
        let mut mandates = Vec::with_capacity(size);
        while let Some(done) = tasks.join_next().await {
            let mine = done.map_err(|e| format!("a pool minter failed: {e}"))??;
            mandates.extend(mine);
        }
        Ok(Self {
            ctx,
            mandates,
            next: AtomicUsize::new(0),
            minted_in: start.elapsed(),
        })
    }

    /// Mandates in the pool.
    pub fn size(&self) -> usize {
        self.mandates.len()
    }

    /// Mandates handed out so far.
    pub fn used(&self) -> usize {
        self.next.load(Ordering::Relaxed).min(self.mandates.len())
    }

    /// One Gateway call with the next unused mandate; `None` when the pool is exhausted or
    /// its next mandate is too close to expiry (the closed loop then stops).
    pub async fn once(&self) -> Result<Option<u64>, String> {
        let i = self.next.fetch_add(1, Ordering::Relaxed);
        let Some((token, usable_until)) = self.mandates.get(i) else {
            return Ok(None);
        };
        if Instant::now() >= *usable_until {
            return Ok(None);
        }
        self.ctx.gateway_call(token).await.map(Some)
    }
}
