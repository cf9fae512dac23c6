//! The STS stream consumers (reference `sts.md` §6.1, §4.5, §5.1): their handlers and wiring.
//!
//! | stream | group | handler | effect |
//! |---|---|---|---|
//! | `caracal.sessions.revoke` | `sts-revocation` | [`RevocationHandler`] | the authority record named by `session_id` and every `parent_id` descendant become `revoked` |
//! | `caracal.policy.invalidate` | `opa-engine:<instance>` | [`InvalidateHandler`] (the policy cache's own) | the zone's bundle is reloaded |
//! | `caracal.keys.invalidate` | `sts-keys:<instance>` | [`KeysInvalidateHandler`] | the zone's signing and verification key caches are flushed |
//!
//! The policy and keys handlers act on per-process caches, so every replica must see every
//! message: each replica reads in its own group ([`names::opa_engine_group`],
//! [`names::sts_keys_group`]), which its consumer creates at `$` on first start (the STS loads
//! fresh bundles and keys at start-up). The reference shares `opa-engine` and `sts-keys`
//! between replicas, so only one replica reacted to each message and the others waited for
//! their safety poll or key-cache TTL. `sts-revocation` stays shared: [`RevocationHandler`]
//! only writes the authority records in the store (Postgres), which one replica does for all.
//!
//! Every handler checks the message's `_sig` first under the service's [`SigPolicy`]; a message
//! that does not verify is never acted on: it is dead-lettered (`hmac_verify_failed`) and
//! acknowledged by the consumer loop, which also runs the periodic idle-claim reaper
//! ([`crate::streams::consumer`]). The reference acknowledges and drops such messages with a
//! warning; a dead letter keeps a trace.
//!
//! [`sts_consumers`] builds the three consumers with stable names
//! (`sts-<instance>-revocations|policy|keys`). The reference appends the process id, so every
//! restart orphaned the previous consumer's pending entries; SPEC §5.2 asks for a stable name.

use std::sync::Arc;

use chrono::{DateTime, Utc};

use crate::clock::SharedClock;
use crate::mandate::ZoneKeys;
use crate::model::revocation::RevocationEvent;
use crate::policy::cache::{
    BundleCache, InvalidateHandler, REASON_HMAC_FAILED, REASON_MISSING_ZONE,
};
use crate::store::authority::AuthorityStore;
use crate::streams::consumer::{
    Consumer, ConsumerConfig, ConsumerConfigError, Delivery, Handler, Outcome,
};
use crate::streams::signature::SigPolicy;
use crate::streams::{Streams, names};

/// The `revoked_reason` recorded when a revocation message carries no (or an empty) reason.
pub const DEFAULT_REVOKE_REASON: &str = "session_revoked";
/// The dead-letter reason of a revocation naming none of `session_id`, `agent_session_id`,
/// `delegation_edge_id` (or `edge_id`).
pub const REASON_MISSING_ANCHOR: &str = "missing_revocation_anchor";
/// Dead-letter reason prefix of a revocation whose store write still failed on the
/// [`MAX_REVOCATION_DELIVERIES`]th delivery; the store error follows the prefix.
pub const REASON_REVOKE_FAILED: &str = "revoke_failed_max_deliveries:";
/// Deliveries after which a revocation that keeps failing is dead-lettered rather than
/// retried (the reference gives up on the 5th handler failure, conformance 42).
pub const MAX_REVOCATION_DELIVERIES: u64 = 5;

/// Consumer-name suffix of the revocation consumer.
pub const SUFFIX_REVOCATIONS: &str = "revocations";
/// Consumer-name suffix of the policy consumer.
pub const SUFFIX_POLICY: &str = "policy";
/// Consumer-name suffix of the keys consumer.
pub const SUFFIX_KEYS: &str = "keys";

/// The `caracal.sessions.revoke` handler of the STS (group `sts-revocation`).
///
/// Rules, first match wins:
///
/// 1. `_sig` does not verify under the policy → dead letter `hmac_verify_failed`.
/// 2. No `zone_id` → dead letter `missing_zone_id`.
/// 3. None of `session_id`, `agent_session_id`, `delegation_edge_id`/`edge_id` → dead letter
///    [`REASON_MISSING_ANCHOR`] (a grant-only message names nothing the STS can revoke).
/// 4. No `session_id` (only a Session and/or delegation edge) → acknowledged, no effect. The
///    STS re-reads Session and delegation state at every exchange (§6.3), so there is nothing
///    to cache. The reference treats these as errors and eventually dead-letters them
///    (§6.1 [DIVERGENCE/bug]; SPEC §5.3).
/// 5. `session_id` → [`AuthorityStore::revoke_authority_tree`] with the message's reason
///    (default [`DEFAULT_REVOKE_REASON`]) at the clock's time → acknowledged. A store error
///    leaves the message pending for the reaper; on the [`MAX_REVOCATION_DELIVERIES`]th
///    delivery it is dead-lettered instead. The cascade is idempotent, so redelivery is
///    harmless.
pub struct RevocationHandler {
    store: Arc<dyn AuthorityStore>,
    sig: SigPolicy,
    clock: SharedClock,
}

impl std::fmt::Debug for RevocationHandler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RevocationHandler")
            .field("sig", &self.sig)
            .finish_non_exhaustive()
    }
}

impl RevocationHandler {
    /// A handler revoking in `store`, checking `_sig` under `sig`, stamping `revoked_at` from
    /// `clock`.
    pub fn new(store: Arc<dyn AuthorityStore>, sig: SigPolicy, clock: SharedClock) -> Self {
        Self { store, sig, clock }
    }

    /// The pure part: what a verified message asks for.
    fn plan(delivery: &Delivery) -> Result<Plan, Outcome> {
        let dead = |reason: &str| Outcome::DeadLetter {
            reason: reason.to_owned(),
        };
        let event = match RevocationEvent::from_fields(delivery.fields.iter()) {
            Ok(event) => event,
            // `from_fields` refuses only a missing zone or a message without any anchor.
            Err(_) => {
                let has_zone = delivery
                    .fields
                    .get("zone_id")
                    .is_some_and(|z| !z.is_empty());
                return Err(dead(if has_zone {
                    REASON_MISSING_ANCHOR
                } else {
                    REASON_MISSING_ZONE
                }));
            }
        };
        let present = |v: &Option<String>| v.as_deref().is_some_and(|s| !s.is_empty());
        match event.session_id.as_deref().filter(|s| !s.is_empty()) {
            Some(record) => Ok(Plan::RevokeTree {
                zone_id: event.zone_id.clone(),
                record: record.to_owned(),
                reason: if event.reason.is_empty() {
                    DEFAULT_REVOKE_REASON.to_owned()
                } else {
                    event.reason.clone()
                },
            }),
            None if present(&event.agent_session_id)
                || present(&event.delegation_edge_id)
                || present(&event.edge_id) =>
            {
                Ok(Plan::Nothing)
            }
            None => Err(dead(REASON_MISSING_ANCHOR)),
        }
    }
}

/// What a revocation message asks the STS to do.
enum Plan {
    /// Only Session/delegation anchors: state is re-read at exchange.
    Nothing,
    /// Revoke the authority-record tree rooted at `record`.
    RevokeTree {
        zone_id: String,
        record: String,
        reason: String,
    },
}

/// Check `_sig` under `sig`: the dead-letter outcome when it does not verify.
fn check_sig(sig: &SigPolicy, delivery: &Delivery) -> Result<(), Outcome> {
    sig.check(&delivery.stream, delivery.fields.iter())
        .map(|_| ())
        .map_err(|_| Outcome::DeadLetter {
            reason: REASON_HMAC_FAILED.to_owned(),
        })
}

#[async_trait::async_trait]
impl Handler for RevocationHandler {
    async fn handle(&self, delivery: &Delivery) -> Outcome {
        if let Err(outcome) = check_sig(&self.sig, delivery) {
            return outcome;
        }
        let (zone_id, record, reason) = match Self::plan(delivery) {
            Err(outcome) => return outcome,
            Ok(Plan::Nothing) => return Outcome::Ack,
            Ok(Plan::RevokeTree {
                zone_id,
                record,
                reason,
            }) => (zone_id, record, reason),
        };
        let at: DateTime<Utc> = self.clock.now();
        match self
            .store
            .revoke_authority_tree(&zone_id, &record, &reason, at)
            .await
        {
            Ok(changed) => {
                tracing::info!(
                    zone_id,
                    record,
                    reason,
                    revoked = changed.len(),
                    "authority record tree revoked"
                );
                Outcome::Ack
            }
            Err(e) if delivery.deliveries >= MAX_REVOCATION_DELIVERIES => {
                tracing::error!(zone_id, record, error = %e, deliveries = delivery.deliveries,
                    "revocation failed on its last delivery; dead-lettering it");
                Outcome::DeadLetter {
                    reason: format!("{REASON_REVOKE_FAILED}{e}"),
                }
            }
            Err(e) => {
                tracing::warn!(zone_id, record, error = %e, deliveries = delivery.deliveries,
                    "revocation failed; left pending for redelivery");
                Outcome::Retry
            }
        }
    }
}

/// The `caracal.keys.invalidate` handler of the STS (group `sts-keys:<instance>`): flushes the zone's
/// private- and public-key caches ([`ZoneKeys::invalidate`]), so a key rotated by another
/// replica is used and accepted at once instead of after the 15-minute cache TTL.
///
/// A message whose `_sig` does not verify, or without `zone_id`, is dead-lettered. Flushing is
/// idempotent and cannot fail.
#[derive(Debug, Clone)]
pub struct KeysInvalidateHandler {
    keys: Arc<ZoneKeys>,
    sig: SigPolicy,
}

impl KeysInvalidateHandler {
    /// A handler flushing `keys`, checking `_sig` under `sig`.
    pub fn new(keys: Arc<ZoneKeys>, sig: SigPolicy) -> Self {
        Self { keys, sig }
    }
}

#[async_trait::async_trait]
impl Handler for KeysInvalidateHandler {
    async fn handle(&self, delivery: &Delivery) -> Outcome {
        if let Err(outcome) = check_sig(&self.sig, delivery) {
            return outcome;
        }
        let Some(zone_id) = delivery.fields.get("zone_id").filter(|z| !z.is_empty()) else {
            return Outcome::DeadLetter {
                reason: REASON_MISSING_ZONE.to_owned(),
            };
        };
        self.keys.invalidate(zone_id);
        tracing::info!(zone_id, "zone key caches flushed");
        Outcome::Ack
    }
}

/// The STS consumer name for `suffix`: `sts-<instance>-<suffix>`. `instance` must be stable
/// across restarts of the same replica (the pod or host name), so a restarted replica drains
/// its own pending entries at once.
pub fn sts_consumer_name(instance: &str, suffix: &str) -> String {
    format!("sts-{instance}-{suffix}")
}

/// What the STS consumers act on.
#[derive(Clone)]
pub struct StsConsumerDeps {
    /// The stream backend.
    pub streams: Arc<dyn Streams>,
    /// Authority records (revocation cascade).
    pub authority: Arc<dyn AuthorityStore>,
    /// The zone key ring (key cache flush).
    pub keys: Arc<ZoneKeys>,
    /// The policy bundle cache (reload).
    pub bundles: Arc<BundleCache>,
    /// `_sig` policy: checks consumed messages and signs dead letters.
    pub sig: SigPolicy,
    /// Time of revocations and dead letters.
    pub clock: SharedClock,
}

impl std::fmt::Debug for StsConsumerDeps {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StsConsumerDeps")
            .field("sig", &self.sig)
            .finish_non_exhaustive()
    }
}

/// The three consumer configurations of the STS, in the order revocation, policy, keys:
/// reference streams; the shared group `sts-revocation` and the per-replica groups
/// `opa-engine:<instance>`, `sts-keys:<instance>` (module docs); consumer names from
/// [`sts_consumer_name`]; dead letters to `<stream>.dead` signed under `sig`; every other
/// setting (groups created at `$`, claim idle 30 s, reaper every 30 s) is
/// [`ConsumerConfig::new`]'s.
pub fn sts_consumer_configs(instance: &str, sig: &SigPolicy) -> [ConsumerConfig; 3] {
    let config = |stream: &str, group: String, suffix: &str| {
        let mut c = ConsumerConfig::new(stream, group, sts_consumer_name(instance, suffix));
        c.dead_letter_sig = sig.clone();
        c
    };
    [
        config(
            names::SESSIONS_REVOKE,
            names::GROUP_STS_REVOCATION.to_owned(),
            SUFFIX_REVOCATIONS,
        ),
        config(
            names::POLICY_INVALIDATE,
            names::opa_engine_group(instance),
            SUFFIX_POLICY,
        ),
        config(
            names::KEYS_INVALIDATE,
            names::sts_keys_group(instance),
            SUFFIX_KEYS,
        ),
    ]
}

/// The three STS consumers (revocation, policy, keys), built but not started: keep each
/// one's [`Consumer::health`] for `/ready`, then [`Consumer::spawn`] them.
pub fn sts_consumers(
    deps: &StsConsumerDeps,
    instance: &str,
) -> Result<Vec<Consumer>, ConsumerConfigError> {
    let [revocation, policy, keys] = sts_consumer_configs(instance, &deps.sig);
    let handlers: [(ConsumerConfig, Arc<dyn Handler>); 3] = [
        (
            revocation,
            Arc::new(RevocationHandler::new(
                Arc::clone(&deps.authority),
                deps.sig.clone(),
                Arc::clone(&deps.clock),
            )),
        ),
        (
            policy,
            Arc::new(InvalidateHandler::new(
                Arc::clone(&deps.bundles),
                deps.sig.clone(),
            )),
        ),
        (
            keys,
            Arc::new(KeysInvalidateHandler::new(
                Arc::clone(&deps.keys),
                deps.sig.clone(),
            )),
        ),
    ];
    handlers
        .into_iter()
        .map(|(config, handler)| {
            Consumer::new(Arc::clone(&deps.streams), config, handler)
                .map(|c| c.with_clock(Arc::clone(&deps.clock)))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::sync::watch;

    use super::*;
    use crate::clock::FakeClock;
    use crate::ids::UuidV7;
    use crate::model::authority::{AuthorityRecord, AuthorityStatus, SubjectType};
    use crate::secrets::Keyring;
    use crate::store::memory::MemoryStore;
    use crate::streams::consumer::{DLQ_REASON, DeliveryKind};
    use crate::streams::signature::StreamKey;
    use crate::streams::{EntryId, Fields, GroupStart, MemoryStreams};

    const KEY: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    const KEK: &str = "5f0c3a7e9b2d4c6e8a1f3b5d7c9e0a2b4d6f8e1c3a5b7d9f0e2c4a6b8d0f1e3a";
    const ZONE: &str = "zone-1";

    fn sig() -> SigPolicy {
        SigPolicy::Verify(StreamKey::from_hex(KEY).unwrap())
    }

    fn clock() -> (FakeClock, SharedClock) {
        let c = FakeClock::at_fixture_epoch();
        (c.clone(), Arc::new(c))
    }

    fn record(id: &str, parent: Option<&str>, now: DateTime<Utc>) -> AuthorityRecord {
        AuthorityRecord {
            id: id.into(),
            zone_id: ZONE.into(),
            session_type: SubjectType::Application,
            subject_id: "app-1".into(),
            parent_id: parent.map(Into::into),
            status: AuthorityStatus::Active,
            expires_at: now + chrono::Duration::hours(1),
            authenticated_at: Some(now),
            claims_json: serde_json::Value::Null,
            revoked_at: None,
            revoked_reason: None,
            created_at: now,
        }
    }

    /// root → child → grandchild, plus an unrelated record.
    async fn tree(store: &MemoryStore, now: DateTime<Utc>) {
        for (id, parent) in [
            ("root", None),
            ("child", Some("root")),
            ("grandchild", Some("child")),
            ("other", None),
        ] {
            store
                .insert_authority(&record(id, parent, now))
                .await
                .unwrap();
        }
    }

    fn signed(stream: &str, pairs: &[(&str, &str)]) -> Fields {
        let mut f: Fields = pairs.iter().copied().collect();
        sig().sign_into(stream, &mut f);
        f
    }

    fn delivery(stream: &str, fields: Fields, deliveries: u64) -> Delivery {
        Delivery {
            stream: stream.to_owned(),
            id: EntryId::MIN,
            fields,
            deliveries,
            kind: DeliveryKind::New,
        }
    }

    async fn status(store: &MemoryStore, id: &str) -> AuthorityStatus {
        store.get_authority(ZONE, id).await.unwrap().unwrap().status
    }

    fn dead(reason: &str) -> Outcome {
        Outcome::DeadLetter {
            reason: reason.to_owned(),
        }
    }

    #[tokio::test]
    async fn handler_rules() {
        let (_, clk) = clock();
        let store = Arc::new(MemoryStore::new());
        tree(&store, clk.now()).await;
        let h = RevocationHandler::new(store.clone(), sig(), clk.clone());
        let s = names::SESSIONS_REVOKE;
        let d = |pairs: &[(&str, &str)]| delivery(s, signed(s, pairs), 1);

        // Delegation-only and session-only messages: acknowledged, nothing changes.
        for pairs in [
            &[
                ("zone_id", ZONE),
                ("delegation_edge_id", "e1"),
                ("reason", "delegation_revoked"),
            ][..],
            &[("zone_id", ZONE), ("agent_session_id", "s1")][..],
            &[("zone_id", ZONE), ("edge_id", "e1")][..],
        ] {
            assert_eq!(h.handle(&d(pairs)).await, Outcome::Ack);
        }
        for id in ["root", "child", "grandchild", "other"] {
            assert_eq!(status(&store, id).await, AuthorityStatus::Active);
        }
        // No zone, no anchor, grant-only, empty session id: dead letters.
        assert_eq!(
            h.handle(&d(&[("session_id", "root")])).await,
            dead(REASON_MISSING_ZONE)
        );
        assert_eq!(
            h.handle(&d(&[("zone_id", ZONE), ("reason", "x")])).await,
            dead(REASON_MISSING_ANCHOR)
        );
        assert_eq!(
            h.handle(&d(&[("zone_id", ZONE), ("grant_id", "g")])).await,
            dead(REASON_MISSING_ANCHOR)
        );
        assert_eq!(
            h.handle(&d(&[("zone_id", ZONE), ("session_id", "")])).await,
            dead(REASON_MISSING_ANCHOR)
        );
        // A bad or missing signature is never acted on.
        let mut forged = signed(s, &[("zone_id", ZONE), ("session_id", "root")]);
        forged.insert("reason", "tampered");
        assert_eq!(
            h.handle(&delivery(s, forged, 1)).await,
            dead(REASON_HMAC_FAILED)
        );
        let unsigned: Fields = [("zone_id", ZONE), ("session_id", "root")]
            .into_iter()
            .collect();
        assert_eq!(
            h.handle(&delivery(s, unsigned, 1)).await,
            dead(REASON_HMAC_FAILED)
        );
        assert_eq!(status(&store, "root").await, AuthorityStatus::Active);

        // A session id revokes the tree, with the default reason.
        assert_eq!(
            h.handle(&d(&[("zone_id", ZONE), ("session_id", "child")]))
                .await,
            Outcome::Ack
        );
        for id in ["child", "grandchild"] {
            let r = store.get_authority(ZONE, id).await.unwrap().unwrap();
            assert_eq!(r.status, AuthorityStatus::Revoked);
            assert_eq!(r.revoked_reason.as_deref(), Some(DEFAULT_REVOKE_REASON));
            assert_eq!(r.revoked_at, Some(clk.now()));
        }
        assert_eq!(status(&store, "root").await, AuthorityStatus::Active);
        // Redelivery is harmless.
        assert_eq!(
            h.handle(&d(&[("zone_id", ZONE), ("session_id", "child")]))
                .await,
            Outcome::Ack
        );
    }

    /// A store that always fails.
    struct Down;

    #[async_trait::async_trait]
    impl AuthorityStore for Down {
        async fn insert_authority(&self, _: &AuthorityRecord) -> crate::store::StoreResult<()> {
            Err(down())
        }
        async fn get_authority(
            &self,
            _: &str,
            _: &str,
        ) -> crate::store::StoreResult<Option<AuthorityRecord>> {
            Err(down())
        }
        async fn authority_lineage(
            &self,
            _: &str,
            _: &str,
        ) -> crate::store::StoreResult<Vec<AuthorityRecord>> {
            Err(down())
        }
        async fn revoke_authority(
            &self,
            _: &str,
            _: &str,
            _: &str,
            _: DateTime<Utc>,
        ) -> crate::store::StoreResult<bool> {
            Err(down())
        }
        async fn revoke_authority_tree(
            &self,
            _: &str,
            _: &str,
            _: &str,
            _: DateTime<Utc>,
        ) -> crate::store::StoreResult<Vec<String>> {
            Err(down())
        }
        async fn revoke_subject(
            &self,
            _: &str,
            _: &str,
            _: &str,
            _: DateTime<Utc>,
        ) -> crate::store::StoreResult<Vec<String>> {
            Err(down())
        }
    }

    fn down() -> crate::store::StoreError {
        crate::store::StoreError::Unavailable {
            retryable: true,
            message: "injected".into(),
        }
    }

    #[tokio::test]
    async fn store_errors_retry_then_dead_letter_on_the_last_delivery() {
        let (_, clk) = clock();
        let h = RevocationHandler::new(Arc::new(Down), SigPolicy::AcceptUnsigned, clk);
        let s = names::SESSIONS_REVOKE;
        let fields: Fields = [("zone_id", ZONE), ("session_id", "root")]
            .into_iter()
            .collect();
        for n in 1..MAX_REVOCATION_DELIVERIES {
            assert_eq!(
                h.handle(&delivery(s, fields.clone(), n)).await,
                Outcome::Retry
            );
        }
        let last = h
            .handle(&delivery(s, fields, MAX_REVOCATION_DELIVERIES))
            .await;
        assert!(
            matches!(&last, Outcome::DeadLetter { reason } if reason.starts_with(REASON_REVOKE_FAILED)),
            "{last:?}"
        );
    }

    fn fast(mut c: ConsumerConfig) -> ConsumerConfig {
        c.block = Duration::from_millis(20);
        c.claim_idle = Duration::from_millis(100);
        c.claim_interval = Duration::from_millis(100);
        c.backoff_min = Duration::from_millis(10);
        c.backoff_max = Duration::from_millis(50);
        c
    }

    async fn wait_until(what: &str, mut cond: impl AsyncFnMut() -> bool) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while !cond().await {
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting for: {what}"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// End to end through the consumer loop: a signed revoke cascades (conformance 45); a
    /// badly signed one is dead-lettered and acknowledged and changes nothing (46); a
    /// Session-only one is acknowledged without effect (47).
    #[tokio::test]
    async fn consumer_end_to_end() {
        let (_, clk) = clock();
        let store = Arc::new(MemoryStore::new());
        tree(&store, clk.now()).await;
        let streams = Arc::new(MemoryStreams::new(clk.clone()));
        let s = names::SESSIONS_REVOKE;
        streams
            .group_create(s, names::GROUP_STS_REVOCATION, GroupStart::Beginning)
            .await
            .unwrap();
        let [config, _, _] = sts_consumer_configs("test-0", &sig());
        assert_eq!(config.consumer, "sts-test-0-revocations");
        let handler = Arc::new(RevocationHandler::new(store.clone(), sig(), clk.clone()));
        let consumer = Consumer::new(streams.clone() as Arc<dyn Streams>, fast(config), handler)
            .unwrap()
            .with_clock(clk.clone());
        let health = consumer.health();
        let (stop, rx) = watch::channel(false);
        let task = consumer.spawn(rx);

        let mut forged = signed(s, &[("zone_id", ZONE), ("session_id", "root")]);
        forged.insert("_sig", "00".repeat(32));
        streams.xadd(s, &forged).await.unwrap();
        streams
            .xadd(
                s,
                &signed(s, &[("zone_id", ZONE), ("agent_session_id", "sess-1")]),
            )
            .await
            .unwrap();
        wait_until("two handled", async || health.stats().handled == 2).await;
        assert_eq!(health.stats().dead_lettered, 1);
        assert_eq!(health.stats().acked, 1);
        for id in ["root", "child", "grandchild"] {
            assert_eq!(status(&store, id).await, AuthorityStatus::Active);
        }
        let dlq = streams
            .range(
                &names::dead_letter_stream(s),
                EntryId::MIN,
                EntryId::MAX,
                None,
            )
            .await
            .unwrap();
        assert_eq!(dlq.len(), 1);
        assert_eq!(dlq[0].fields.get(DLQ_REASON), Some(REASON_HMAC_FAILED));

        streams
            .xadd(
                s,
                &signed(
                    s,
                    &[
                        ("zone_id", ZONE),
                        ("session_id", "root"),
                        ("reason", "grant_revoked"),
                    ],
                ),
            )
            .await
            .unwrap();
        wait_until("revoke acked", async || health.stats().acked == 2).await;
        for id in ["root", "child", "grandchild"] {
            let r = store.get_authority(ZONE, id).await.unwrap().unwrap();
            assert_eq!(r.status, AuthorityStatus::Revoked, "{id}");
            assert_eq!(r.revoked_reason.as_deref(), Some("grant_revoked"));
        }
        assert_eq!(status(&store, "other").await, AuthorityStatus::Active);
        assert_eq!(
            streams
                .pending_summary(s, names::GROUP_STS_REVOCATION)
                .await
                .unwrap()
                .count,
            0
        );
        stop.send(true).unwrap();
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .unwrap()
            .unwrap();
    }

    #[tokio::test]
    async fn keys_invalidate_makes_a_rotated_key_visible() {
        let (_, clk) = clock();
        let store = Arc::new(MemoryStore::new());
        let ring = |store: &Arc<MemoryStore>| {
            Arc::new(ZoneKeys::new(
                store.clone(),
                store.clone(),
                Arc::new(Keyring::from_hex(KEK, None).unwrap()),
                clk.clone(),
                Arc::new(UuidV7),
            ))
        };
        let here = ring(&store);
        let replica = ring(&store);
        let first = here.signing_key(ZONE).await.unwrap();
        let cached = here.verification_keys(ZONE).await.unwrap();
        assert_eq!(cached.len(), 1);
        // Another replica rotates: this one's caches still hold the old set.
        let rotated = replica.rotate(ZONE).await.unwrap();
        assert!(
            here.verification_keys(ZONE)
                .await
                .unwrap()
                .get(&rotated.kid)
                .is_none()
        );

        let h = KeysInvalidateHandler::new(here.clone(), sig());
        let s = names::KEYS_INVALIDATE;
        assert_eq!(
            h.handle(&delivery(s, signed(s, &[]), 1)).await,
            dead(REASON_MISSING_ZONE)
        );
        let unsigned: Fields = [("zone_id", ZONE)].into_iter().collect();
        assert_eq!(
            h.handle(&delivery(s, unsigned, 1)).await,
            dead(REASON_HMAC_FAILED)
        );
        assert!(
            here.verification_keys(ZONE)
                .await
                .unwrap()
                .get(&rotated.kid)
                .is_none()
        );
        assert_eq!(
            h.handle(&delivery(s, signed(s, &[("zone_id", ZONE)]), 1))
                .await,
            Outcome::Ack
        );
        let set = here.verification_keys(ZONE).await.unwrap();
        assert!(set.get(&rotated.kid).is_some());
        assert!(
            set.get(first.kid()).is_some(),
            "the previous key stays in its overlap"
        );
        assert_eq!(here.signing_key(ZONE).await.unwrap().kid(), rotated.kid);
    }

    /// Two replicas on one stream backend: a key invalidation flushes the key cache of both,
    /// because each reads in its own group (`sts-keys:<instance>`), which each consumer
    /// creates for itself. With one shared group only one replica would see the message.
    #[tokio::test]
    async fn every_replica_flushes_its_key_cache() {
        let (_, clk) = clock();
        let store = Arc::new(MemoryStore::new());
        let ring = || {
            Arc::new(ZoneKeys::new(
                store.clone(),
                store.clone(),
                Arc::new(Keyring::from_hex(KEK, None).unwrap()),
                clk.clone(),
                Arc::new(UuidV7),
            ))
        };
        let replicas = [("pod-a", ring()), ("pod-b", ring())];
        for (_, keys) in &replicas {
            keys.signing_key(ZONE).await.unwrap();
            keys.verification_keys(ZONE).await.unwrap();
        }
        let rotated = ring().rotate(ZONE).await.unwrap();
        let sees_rotated = async |keys: &Arc<ZoneKeys>| {
            keys.verification_keys(ZONE)
                .await
                .unwrap()
                .get(&rotated.kid)
                .is_some()
        };
        for (_, keys) in &replicas {
            assert!(!sees_rotated(keys).await, "both still cache the old set");
        }

        let streams = Arc::new(MemoryStreams::new(clk.clone()));
        let s = names::KEYS_INVALIDATE;
        let (stop, rx) = watch::channel(false);
        let mut tasks = Vec::new();
        for (instance, keys) in &replicas {
            let [_, _, config] = sts_consumer_configs(instance, &sig());
            let handler = Arc::new(KeysInvalidateHandler::new(keys.clone(), sig()));
            let consumer =
                Consumer::new(streams.clone() as Arc<dyn Streams>, fast(config), handler)
                    .unwrap()
                    .with_clock(clk.clone());
            tasks.push(consumer.spawn(rx.clone()));
        }
        // Nobody provisioned anything: each consumer created its own group.
        let mut want = vec![
            names::sts_keys_group("pod-a"),
            names::sts_keys_group("pod-b"),
        ];
        want.sort();
        wait_until("both per-replica groups exist", async || {
            let mut got: Vec<String> = streams
                .groups(s)
                .await
                .unwrap_or_default()
                .into_iter()
                .map(|g| g.name)
                .collect();
            got.sort();
            got == want
        })
        .await;

        streams
            .xadd(s, &signed(s, &[("zone_id", ZONE)]))
            .await
            .unwrap();
        for (instance, keys) in &replicas {
            wait_until(&format!("{instance} sees the rotated key"), async || {
                sees_rotated(keys).await
            })
            .await;
            assert_eq!(keys.signing_key(ZONE).await.unwrap().kid(), rotated.kid);
        }
        for group in &want {
            wait_until(&format!("the entry acknowledged in {group}"), async || {
                streams
                    .pending_summary(s, group)
                    .await
                    .is_ok_and(|p| p.count == 0)
            })
            .await;
        }
        stop.send(true).unwrap();
        for task in tasks {
            tokio::time::timeout(Duration::from_secs(5), task)
                .await
                .unwrap()
                .unwrap();
        }
    }

    #[test]
    fn consumer_names_and_groups() {
        let configs = sts_consumer_configs("pod-a", &SigPolicy::AcceptUnsigned);
        let got: Vec<_> = configs
            .iter()
            .map(|c| (c.stream.as_str(), c.group.as_str(), c.consumer.as_str()))
            .collect();
        assert_eq!(
            got,
            vec![
                (
                    "caracal.sessions.revoke",
                    "sts-revocation",
                    "sts-pod-a-revocations"
                ),
                (
                    "caracal.policy.invalidate",
                    "opa-engine:pod-a",
                    "sts-pod-a-policy"
                ),
                (
                    "caracal.keys.invalidate",
                    "sts-keys:pod-a",
                    "sts-pod-a-keys"
                ),
            ]
        );
        // Each cache group is per replica (every replica sees every message); the
        // revocation group is shared (one replica writes Postgres for all).
        let other = sts_consumer_configs("pod-b", &SigPolicy::AcceptUnsigned);
        let differs: Vec<bool> = configs
            .iter()
            .zip(&other)
            .map(|(a, b)| a.group != b.group)
            .collect();
        assert_eq!(differs, vec![false, true, true]);
        assert!(configs.iter().all(|c| c.group_start == GroupStart::Latest));
        assert!(
            configs
                .iter()
                .all(|c| c.dead_letter_stream.ends_with(".dead"))
        );
    }
}
