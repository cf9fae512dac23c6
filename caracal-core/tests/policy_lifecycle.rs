//! The policy lifecycle (policies, versions, sets, set versions, activation, rollback,
//! simulate) and the per-zone bundle cache (lazy load, invalidation, safety poll, last good
//! bundle, freshness), on the in-memory store.

// Test code: a failed unwrap or panic is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod policy_support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use caracal_core::clock::{Clock, FakeClock, SharedClock};
use caracal_core::ids::{SharedIdGen, UuidV7};
use caracal_core::model::policy::Decision;
use caracal_core::model::policy_set::{
    ManifestEntry, Policy, PolicySet, PolicySetVersion, PolicyVersion, content_sha256,
    manifest_sha256,
};
use caracal_core::policy::cache::{BundleCache, InvalidateHandler, ReloadOutcome, poll_interval};
use caracal_core::policy::lifecycle::{NewPolicy, PolicyLifecycle};
use caracal_core::policy::{DenyReason, PolicyError, evaluate};
use caracal_core::store::memory::MemoryStore;
use caracal_core::store::outbox::{OutboxMessage, OutboxStore};
use caracal_core::store::policy::{ActivePolicy, PolicyStore};
use caracal_core::store::{Page, PageRequest, StoreError, StoreResult};
use caracal_core::streams::consumer::{Delivery, DeliveryKind, Handler, Outcome};
use caracal_core::streams::signature::{SigPolicy, StreamKey, sign_fields};
use caracal_core::streams::{EntryId, Fields};
use chrono::{DateTime, Utc};
use policy_support::*;
use serde_json::json;

const ZONE: &str = "zone-1";

const APPS: &str = r#"# caracal:data-document
package caracal.authz

app_ids := {"files": "app-1"}
"#;

const GRANTS_READ: &str = r#"# caracal:data-document
package caracal.authz

grants := {"resource://api": {"application": "files", "roles": {"files.read": ["read"]}}}
"#;

const GRANTS_NONE: &str = r#"# caracal:data-document
package caracal.authz

grants := {"resource://api": {"application": "files", "roles": {"files.read": []}}}
"#;

struct World {
    store: MemoryStore,
    clock: FakeClock,
    life: PolicyLifecycle<MemoryStore>,
}

fn world() -> World {
    let clock = FakeClock::at_fixture_epoch();
    let shared: SharedClock = Arc::new(clock.clone());
    let ids: SharedIdGen = Arc::new(UuidV7);
    let store = MemoryStore::with_clock(shared.clone());
    let life = PolicyLifecycle::new(Arc::new(store.clone()), shared, ids);
    World { store, clock, life }
}

fn entry(id: &str) -> ManifestEntry {
    ManifestEntry {
        policy_version_id: id.to_owned(),
    }
}

async fn policy(w: &World, name: &str, content: &str) -> PolicyVersion {
    w.life
        .create_policy(
            ZONE,
            NewPolicy {
                name,
                description: None,
                content,
                actor: Some("admin:t1"),
            },
        )
        .await
        .unwrap()
        .1
}

/// A set with two versions: v1 grants `read` to `files.read`, v2 grants nothing.
async fn two_versions(w: &World) -> (PolicySet, PolicySetVersion, PolicySetVersion) {
    let apps = policy(w, "apps", APPS).await;
    let grants = policy(w, "grants", GRANTS_READ).await;
    let narrowed = w
        .life
        .add_policy_version(ZONE, &grants.policy_id, GRANTS_NONE, None)
        .await
        .unwrap();
    assert_eq!(narrowed.version, 2);
    let set = w
        .life
        .create_policy_set(ZONE, "main", None, Some("admin:t1"))
        .await
        .unwrap();
    let v1 = w
        .life
        .create_policy_set_version(ZONE, &set.id, &[entry(&apps.id), entry(&grants.id)])
        .await
        .unwrap();
    let v2 = w
        .life
        .create_policy_set_version(ZONE, &set.id, &[entry(&apps.id), entry(&narrowed.id)])
        .await
        .unwrap();
    (set, v1, v2)
}

// ------------------------------------------------------------------ lifecycle

#[tokio::test]
async fn policies_are_validated_versioned_and_hashed() {
    let w = world();
    let v1 = policy(&w, "apps", APPS).await;
    assert_eq!(v1.version, 1);
    assert_eq!(v1.content_sha256, content_sha256(APPS));
    assert_eq!(v1.schema_version, "2026-05-20");
    let v2 = w
        .life
        .add_policy_version(
            ZONE,
            &v1.policy_id,
            r#"{"app_ids": {"files": "app-9"}}"#,
            None,
        )
        .await
        .unwrap();
    assert_eq!(v2.version, 2);

    let bad = w
        .life
        .create_policy(
            ZONE,
            NewPolicy {
                name: "bad",
                description: None,
                content: "# caracal:data-document\npackage caracal.authz\nallow := true\n",
                actor: None,
            },
        )
        .await
        .unwrap_err();
    assert_eq!(bad.code(), "invalid_rego");
    assert_eq!(bad.description(), "data_document_rule_not_allowed:allow");

    let err = w
        .life
        .add_policy_version(ZONE, &v1.policy_id, "package x", None)
        .await
        .unwrap_err();
    assert_eq!(err.description(), "must_use_package_caracal_authz");
    let err = w
        .life
        .add_policy_version(ZONE, "missing", APPS, None)
        .await
        .unwrap_err();
    assert_eq!(err.code(), "policy_not_found");

    let reserved = w
        .life
        .create_policy(
            ZONE,
            NewPolicy {
                name: "caracal.sys/x",
                description: None,
                content: APPS,
                actor: None,
            },
        )
        .await
        .unwrap_err();
    assert_eq!(reserved.code(), "reserved_namespace");
}

#[tokio::test]
async fn set_versions_check_the_manifest_and_compile_the_bundle() {
    let w = world();
    let (set, v1, _) = two_versions(&w).await;
    assert_eq!(v1.version, 1);
    assert_eq!(v1.manifest_sha256, manifest_sha256(&v1.manifest_json));
    assert_eq!(v1.schema_version, "2026-05-20");

    let apps = &v1.manifest_json[0].policy_version_id;
    let contract = |e: PolicyError| {
        assert_eq!(e.code(), "invalid_policy_contract", "{e}");
        e.description()
    };
    let err = w
        .life
        .create_policy_set_version(ZONE, &set.id, &[])
        .await
        .unwrap_err();
    assert_eq!(
        contract(err),
        "policy set manifest must reference at least one policy version"
    );
    let too_many: Vec<ManifestEntry> = (0..257).map(|i| entry(&format!("v{i}"))).collect();
    let err = w
        .life
        .create_policy_set_version(ZONE, &set.id, &too_many)
        .await
        .unwrap_err();
    assert_eq!(
        contract(err),
        "policy set manifest exceeds maximum of 256 entries"
    );
    let err = w
        .life
        .create_policy_set_version(ZONE, &set.id, &[entry(apps), entry(apps)])
        .await
        .unwrap_err();
    assert_eq!(
        contract(err),
        "policy set manifest contains duplicate policy_version_id entries"
    );
    let err = w
        .life
        .create_policy_set_version(ZONE, &set.id, &[entry(apps), entry("nope")])
        .await
        .unwrap_err();
    assert_eq!(
        contract(err),
        "policy set manifest references missing policy versions"
    );
    // Another zone's versions are invisible, hence missing.
    let err = w
        .life
        .create_policy_set_version("zone-2", &set.id, &[entry(apps)])
        .await
        .unwrap_err();
    assert_eq!(err.code(), "policy_set_not_found");

    // Two policies defining the same rule: the merged bundle does not compile.
    let other_apps = policy(&w, "apps-2", APPS).await;
    let err = w
        .life
        .create_policy_set_version(ZONE, &set.id, &[entry(apps), entry(&other_apps.id)])
        .await
        .unwrap_err();
    assert_eq!(err.code(), "invalid_policy_bundle");
    assert!(err.description().contains("app_ids"), "{err}");
    // A grant without an application is a shape error of the bundle.
    let broken = policy(
        &w,
        "broken",
        "# caracal:data-document\npackage caracal.authz\ngrants := {\"r\": {}}\n",
    )
    .await;
    let err = w
        .life
        .create_policy_set_version(ZONE, &set.id, &[entry(&broken.id)])
        .await
        .unwrap_err();
    assert_eq!(err.code(), "invalid_policy_bundle");
}

#[tokio::test]
async fn activation_publishes_invalidate_and_rollback_reactivates() {
    let w = world();
    let (set, v1, v2) = two_versions(&w).await;
    assert!(w.store.active_policy(ZONE).await.unwrap().is_none());

    let act = w.life.activate(ZONE, &set.id, &v2.id).await.unwrap();
    assert_eq!(act.version_id, v2.id);
    let row = w.store.get_outbox(&act.outbox_id).await.unwrap().unwrap();
    assert_eq!(row.message.stream, "caracal.policy.invalidate");
    assert_eq!(
        row.message.fields,
        vec![
            ("zone_id".to_owned(), ZONE.to_owned()),
            ("policy_set_id".to_owned(), set.id.clone()),
            ("policy_set_version_id".to_owned(), v2.id.clone()),
        ]
    );
    let active = w.store.active_policy(ZONE).await.unwrap().unwrap();
    assert_eq!(active.version.id, v2.id);

    // Rollback: re-activate the older, immutable version.
    let back = w.life.rollback(ZONE, &set.id, &v1.id).await.unwrap();
    assert_ne!(back.outbox_id, act.outbox_id);
    assert_eq!(
        w.store
            .active_policy(ZONE)
            .await
            .unwrap()
            .unwrap()
            .version
            .id,
        v1.id
    );

    // Activating another set leaves one active set version in the zone.
    let other = w
        .life
        .create_policy_set(ZONE, "other", None, None)
        .await
        .unwrap();
    let dup = w
        .life
        .create_policy_set(ZONE, "other", None, None)
        .await
        .unwrap_err();
    assert_eq!(dup.code(), "policy_set_name_conflict");
    let ov = w
        .life
        .create_policy_set_version(ZONE, &other.id, &v1.manifest_json)
        .await
        .unwrap();
    w.life.activate(ZONE, &other.id, &ov.id).await.unwrap();
    let first = w
        .store
        .get_policy_set(ZONE, &set.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(first.active_version_id, None);

    // A version of another set, or an unknown one, is not found.
    let err = w.life.activate(ZONE, &set.id, &ov.id).await.unwrap_err();
    assert_eq!(err.code(), "version_not_found");
}

#[tokio::test]
async fn simulate_explains_and_never_changes_bindings() {
    let w = world();
    let (set, v1, v2) = two_versions(&w).await;
    w.life.activate(ZONE, &set.id, &v2.id).await.unwrap();

    let input = serde_json::to_value(mint()).unwrap();
    let sim = w
        .life
        .simulate(ZONE, &set.id, &v1.id, Some(&input))
        .await
        .unwrap();
    assert!(sim.dry_run && sim.would_activate);
    assert_eq!(sim.explanation.evaluation, "executed");
    assert_eq!(sim.explanation.decision, Some(Decision::Allow));
    assert_eq!(
        sim.explanation.decided_by.as_deref(),
        Some("caracal-files-mint")
    );
    assert!(sim.explanation.reason.starts_with("delegated mint"));
    assert_eq!(sim.policies.len(), 2);
    assert_eq!(sim.manifest_sha256, v1.manifest_sha256);
    let wire = serde_json::to_value(&sim).unwrap();
    assert_eq!(
        wire["result"]["determining_policies"],
        json!([{"policy": "caracal-files-mint"}])
    );
    assert_eq!(wire["input_schema_version"], "2026-05-20");

    // The active version (v2, roles narrowed) denies the same input.
    let sim2 = w
        .life
        .simulate(ZONE, &set.id, &v2.id, Some(&input))
        .await
        .unwrap();
    assert_eq!(
        sim2.explanation.decided_by.as_deref(),
        Some("role_scope_mismatch")
    );

    // Nothing moved.
    assert_eq!(
        w.store
            .active_policy(ZONE)
            .await
            .unwrap()
            .unwrap()
            .version
            .id,
        v2.id
    );

    // No input: not executed.
    let none = w.life.simulate(ZONE, &set.id, &v1.id, None).await.unwrap();
    assert_eq!(none.explanation.evaluation, "not_executed");
    assert!(none.result.is_none());

    // Warnings, and a schema mismatch fails the evaluation (an error, not a deny).
    let mut odd = input.clone();
    odd["schema_version"] = json!("2025-01-01");
    odd["principal"]["zone_id"] = json!("zone-9");
    let sim = w
        .life
        .simulate(ZONE, &set.id, &v1.id, Some(&odd))
        .await
        .unwrap();
    assert_eq!(
        sim.warnings,
        vec![
            "input_schema_mismatch:2025-01-01",
            "principal_zone_mismatch"
        ]
    );
    assert!(!sim.would_activate);
    assert_eq!(sim.explanation.evaluation, "failed");
    assert!(sim.explanation.reason.starts_with("policy_eval_failed"));
    let sim = w
        .life
        .simulate(
            ZONE,
            &set.id,
            &v1.id,
            Some(&json!({"schema_version": "2026-05-20"})),
        )
        .await
        .unwrap();
    assert!(sim.warnings.contains(&"missing_resource".to_owned()));
    assert!(sim.warnings.contains(&"missing_action".to_owned()));
    assert!(sim.warnings.contains(&"missing_context".to_owned()));
    assert_eq!(sim.explanation.evaluation, "failed");

    let err = w
        .life
        .simulate(ZONE, &set.id, "nope", None)
        .await
        .unwrap_err();
    assert_eq!(err.code(), "version_not_found");
}

// ------------------------------------------------------------------ cache

fn cache(w: &World) -> Arc<BundleCache> {
    Arc::new(BundleCache::new(
        Arc::new(w.store.clone()),
        Arc::new(w.clock.clone()),
    ))
}

fn decide(bundle: &caracal_core::policy::CompiledBundle) -> String {
    let input = mint();
    let eval = evaluate(&input, bundle).unwrap();
    match eval.deny_reason() {
        Some(r) => r.as_str().to_owned(),
        None => "allow".to_owned(),
    }
}

#[tokio::test]
async fn a_zone_without_active_set_is_deny_all() {
    let w = world();
    let c = cache(&w);
    let loaded = c.get(ZONE).await.unwrap();
    assert!(loaded.bundle.is_deny_all());
    assert_eq!(loaded.policy_set_version_id, None);
    let input = mint();
    assert_eq!(
        evaluate(&input, &loaded.bundle).unwrap().deny_reason(),
        Some(DenyReason::NoActivePolicySet)
    );
    let status = c.status(ZONE).unwrap();
    assert!(status.loaded && status.deny_all);
}

#[tokio::test]
async fn invalidate_swaps_bundles_and_the_age_is_visible() {
    let w = world();
    let (set, v1, v2) = two_versions(&w).await;
    let c = cache(&w);
    assert!(c.cached(ZONE).is_none());
    assert_eq!(c.max_policy_age_seconds(), None);

    w.life.activate(ZONE, &set.id, &v1.id).await.unwrap();
    // Lazy load on first use.
    let first = c.get(ZONE).await.unwrap();
    assert_eq!(first.policy_set_version_id.as_deref(), Some(v1.id.as_str()));
    assert_eq!(
        first.manifest_sha256.as_deref(),
        Some(v1.manifest_sha256.as_str())
    );
    assert_eq!(decide(&first.bundle), "allow");

    // Nothing new: unchanged, same Arc.
    assert_eq!(c.invalidate(ZONE).await.unwrap(), ReloadOutcome::Unchanged);
    assert!(Arc::ptr_eq(&first, &c.get(ZONE).await.unwrap()));

    w.clock.advance(chrono::Duration::seconds(42));
    assert_eq!(c.max_policy_age_seconds(), Some(42));

    // Activation of v2 + invalidate: the next decision uses the narrowed roles.
    w.life.activate(ZONE, &set.id, &v2.id).await.unwrap();
    assert_eq!(
        decide(&c.get(ZONE).await.unwrap().bundle),
        "allow",
        "not yet invalidated"
    );
    assert_eq!(c.invalidate(ZONE).await.unwrap(), ReloadOutcome::Loaded);
    let second = c.get(ZONE).await.unwrap();
    assert_eq!(
        second.policy_set_version_id.as_deref(),
        Some(v2.id.as_str())
    );
    assert_eq!(decide(&second.bundle), "role_scope_mismatch");
    assert_eq!(c.max_policy_age_seconds(), Some(0));
    // A reader holding the old Arc still sees a complete old bundle.
    assert_eq!(decide(&first.bundle), "allow");

    // Rollback.
    w.life.rollback(ZONE, &set.id, &v1.id).await.unwrap();
    c.invalidate(ZONE).await.unwrap();
    assert_eq!(decide(&c.get(ZONE).await.unwrap().bundle), "allow");

    // Archiving the active set: deny-all, announced without a version.
    w.life.archive_policy_set(ZONE, &set.id).await.unwrap();
    let err = w.life.archive_policy_set(ZONE, &set.id).await.unwrap_err();
    assert_eq!(err.code(), "policy_set_not_found");
    assert_eq!(c.invalidate(ZONE).await.unwrap(), ReloadOutcome::DenyAll);
    assert!(c.get(ZONE).await.unwrap().bundle.is_deny_all());
}

/// Put a set version straight into the store and activate it, bypassing the lifecycle's
/// checks (what a bad migration or a concurrent writer could leave behind).
async fn activate_raw(w: &World, set_id: &str, version: PolicySetVersion) -> PolicySetVersion {
    let stored = w.store.add_policy_set_version(&version).await.unwrap();
    w.store
        .activate_policy_set(
            ZONE,
            set_id,
            &stored.id,
            &OutboxMessage::new("caracal.policy.invalidate", vec![]),
            w.clock.now(),
        )
        .await
        .unwrap();
    stored
}

fn raw_version(
    set_id: &str,
    id: &str,
    manifest: Vec<ManifestEntry>,
    sha: Option<String>,
) -> PolicySetVersion {
    PolicySetVersion {
        id: id.to_owned(),
        policy_set_id: set_id.to_owned(),
        zone_id: ZONE.to_owned(),
        version: 0,
        manifest_sha256: sha.unwrap_or_else(|| manifest_sha256(&manifest)),
        manifest_json: manifest,
        schema_version: "2026-05-20".to_owned(),
        created_at: Utc::now(),
    }
}

async fn raw_policy(w: &World, id: &str, content: &str) -> String {
    let now = w.clock.now();
    let policy = Policy {
        id: format!("p-{id}"),
        zone_id: ZONE.to_owned(),
        name: format!("raw-{id}"),
        description: None,
        attribution: Default::default(),
        created_at: now,
        updated_at: now,
        archived_at: None,
    };
    let version = PolicyVersion {
        id: format!("pv-{id}"),
        policy_id: policy.id.clone(),
        zone_id: ZONE.to_owned(),
        version: 1,
        content: content.to_owned(),
        content_sha256: content_sha256(content),
        schema_version: "2026-05-20".to_owned(),
        created_by: None,
        created_at: now,
    };
    w.store.insert_policy(&policy, &version).await.unwrap();
    version.id
}

#[tokio::test]
async fn a_failed_reload_keeps_the_last_good_bundle() {
    let w = world();
    let (set, v1, _) = two_versions(&w).await;
    w.life.activate(ZONE, &set.id, &v1.id).await.unwrap();
    let c = cache(&w);
    let good = c.get(ZONE).await.unwrap();

    // A version whose data has the wrong shape: compile error, previous bundle kept.
    let bad = raw_policy(
        &w,
        "shape",
        "# caracal:data-document\npackage caracal.authz\ngrants := []\n",
    )
    .await;
    activate_raw(
        &w,
        &set.id,
        raw_version(&set.id, "sv-shape", vec![entry(&bad)], None),
    )
    .await;
    let err = c.invalidate(ZONE).await.unwrap_err();
    assert_eq!(err.code(), "invalid_policy_bundle");
    assert!(Arc::ptr_eq(&good, &c.get(ZONE).await.unwrap()));
    assert!(c.status(ZONE).unwrap().last_error.is_some());

    // A manifest whose hash does not match: error, previous bundle kept.
    activate_raw(
        &w,
        &set.id,
        raw_version(&set.id, "sv-hash", vec![entry(&bad)], Some("00".repeat(32))),
    )
    .await;
    assert!(matches!(
        c.invalidate(ZONE).await,
        Err(PolicyError::ManifestMismatch { .. })
    ));
    assert!(Arc::ptr_eq(&good, &c.get(ZONE).await.unwrap()));

    // Age grows while reloads fail.
    w.clock.advance(chrono::Duration::seconds(90));
    assert_eq!(c.max_policy_age_seconds(), Some(90));

    // A document that is not a data document at all: the zone falls to deny-all
    // (conformance 33).
    let result = raw_policy(
        &w,
        "result",
        "# caracal:data-document\npackage caracal.authz\nresult := {}\n",
    )
    .await;
    activate_raw(
        &w,
        &set.id,
        raw_version(&set.id, "sv-result", vec![entry(&result)], None),
    )
    .await;
    assert_eq!(c.invalidate(ZONE).await.unwrap(), ReloadOutcome::DenyAll);
    assert!(c.get(ZONE).await.unwrap().bundle.is_deny_all());
    assert_eq!(c.status(ZONE).unwrap().last_error, None);
}

#[tokio::test]
async fn the_safety_poll_seeds_and_refreshes_zones() {
    let w = world();
    let (set, v1, v2) = two_versions(&w).await;
    w.life.activate(ZONE, &set.id, &v1.id).await.unwrap();
    let c = cache(&w);
    let report = c.poll_once().await;
    assert_eq!((report.changed, report.unchanged, report.failed), (1, 0, 0));
    assert!(
        c.cached(ZONE).is_some(),
        "seeded from zones_with_active_policy"
    );
    // No invalidate message: the poll picks the activation up.
    w.life.activate(ZONE, &set.id, &v2.id).await.unwrap();
    let report = c.poll_once().await;
    assert_eq!(report.changed, 1);
    assert_eq!(
        c.cached(ZONE).unwrap().policy_set_version_id.as_deref(),
        Some(v2.id.as_str())
    );
    assert_eq!(c.poll_once().await.unchanged, 1);
    assert_eq!(c.known_zones(), vec![ZONE.to_owned()]);
}

#[tokio::test(start_paused = true)]
async fn the_poller_runs_on_its_interval_until_shutdown() {
    let w = world();
    let (set, v1, v2) = two_versions(&w).await;
    w.life.activate(ZONE, &set.id, &v1.id).await.unwrap();
    let c = cache(&w);
    let (tx, rx) = tokio::sync::watch::channel(false);
    let task = c.clone().spawn_poller(Duration::from_secs(60), rx);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(c.cached(ZONE).is_some(), "first tick polls at once");
    w.life.activate(ZONE, &set.id, &v2.id).await.unwrap();
    tokio::time::sleep(Duration::from_secs(61)).await;
    assert_eq!(
        c.cached(ZONE).unwrap().policy_set_version_id.as_deref(),
        Some(v2.id.as_str())
    );
    tx.send(true).unwrap();
    task.await.unwrap();
}

#[test]
fn opa_poll_seconds_is_validated() {
    assert_eq!(poll_interval(None).unwrap(), Duration::from_secs(60));
    assert_eq!(poll_interval(Some(" ")).unwrap(), Duration::from_secs(60));
    assert_eq!(poll_interval(Some("1")).unwrap(), Duration::from_secs(1));
    assert_eq!(
        poll_interval(Some("300")).unwrap(),
        Duration::from_secs(300)
    );
    for bad in ["0", "301", "-1", "1.5", "abc"] {
        let err = poll_interval(Some(bad)).unwrap_err();
        assert!(err.to_string().contains("OPA_POLL_SECONDS"), "{bad}: {err}");
    }
}

// ------------------------------------------------------------------ store outage and handler

/// The in-memory store with a switch that makes `active_policy` fail as unreachable.
#[derive(Clone)]
struct FlakyStore {
    inner: MemoryStore,
    down: Arc<AtomicBool>,
}

impl FlakyStore {
    fn check(&self) -> StoreResult<()> {
        if self.down.load(Ordering::SeqCst) {
            return Err(StoreError::Unavailable {
                retryable: true,
                message: "connection refused".into(),
            });
        }
        Ok(())
    }
}

#[async_trait]
impl PolicyStore for FlakyStore {
    async fn insert_policy(&self, p: &Policy, v: &PolicyVersion) -> StoreResult<()> {
        self.inner.insert_policy(p, v).await
    }
    async fn add_policy_version(&self, v: &PolicyVersion) -> StoreResult<PolicyVersion> {
        self.inner.add_policy_version(v).await
    }
    async fn get_policy(&self, z: &str, id: &str) -> StoreResult<Option<Policy>> {
        self.inner.get_policy(z, id).await
    }
    async fn list_policies(&self, z: &str, p: &PageRequest) -> StoreResult<Page<Policy>> {
        self.inner.list_policies(z, p).await
    }
    async fn policy_versions(&self, z: &str, id: &str) -> StoreResult<Vec<PolicyVersion>> {
        self.inner.policy_versions(z, id).await
    }
    async fn get_policy_versions(
        &self,
        z: &str,
        ids: &[String],
    ) -> StoreResult<Vec<PolicyVersion>> {
        self.check()?;
        self.inner.get_policy_versions(z, ids).await
    }
    async fn archive_policy(&self, z: &str, id: &str, at: DateTime<Utc>) -> StoreResult<()> {
        self.inner.archive_policy(z, id, at).await
    }
    async fn insert_policy_set(&self, s: &PolicySet) -> StoreResult<()> {
        self.inner.insert_policy_set(s).await
    }
    async fn get_policy_set(&self, z: &str, id: &str) -> StoreResult<Option<PolicySet>> {
        self.inner.get_policy_set(z, id).await
    }
    async fn list_policy_sets(&self, z: &str, p: &PageRequest) -> StoreResult<Page<PolicySet>> {
        self.inner.list_policy_sets(z, p).await
    }
    async fn add_policy_set_version(&self, v: &PolicySetVersion) -> StoreResult<PolicySetVersion> {
        self.inner.add_policy_set_version(v).await
    }
    async fn get_policy_set_version(
        &self,
        z: &str,
        id: &str,
    ) -> StoreResult<Option<PolicySetVersion>> {
        self.inner.get_policy_set_version(z, id).await
    }
    async fn list_policy_set_versions(
        &self,
        z: &str,
        s: &str,
        p: &PageRequest,
    ) -> StoreResult<Page<PolicySetVersion>> {
        self.inner.list_policy_set_versions(z, s, p).await
    }
    async fn activate_policy_set(
        &self,
        z: &str,
        s: &str,
        v: &str,
        m: &OutboxMessage,
        now: DateTime<Utc>,
    ) -> StoreResult<String> {
        self.inner.activate_policy_set(z, s, v, m, now).await
    }
    async fn archive_policy_set(
        &self,
        z: &str,
        id: &str,
        m: &OutboxMessage,
        at: DateTime<Utc>,
    ) -> StoreResult<()> {
        self.inner.archive_policy_set(z, id, m, at).await
    }
    async fn active_policy(&self, z: &str) -> StoreResult<Option<ActivePolicy>> {
        self.check()?;
        self.inner.active_policy(z).await
    }
    async fn zones_with_active_policy(&self) -> StoreResult<Vec<String>> {
        self.check()?;
        self.inner.zones_with_active_policy().await
    }
}

fn delivery(fields: Fields) -> Delivery {
    Delivery {
        stream: "caracal.policy.invalidate".into(),
        id: EntryId { ms: 1, seq: 0 },
        fields,
        deliveries: 1,
        kind: DeliveryKind::New,
    }
}

#[tokio::test]
async fn a_store_outage_keeps_the_bundle_and_retries_the_message() {
    let w = world();
    let (set, v1, v2) = two_versions(&w).await;
    w.life.activate(ZONE, &set.id, &v1.id).await.unwrap();
    let flaky = FlakyStore {
        inner: w.store.clone(),
        down: Arc::new(AtomicBool::new(false)),
    };
    let c = Arc::new(BundleCache::new(
        Arc::new(flaky.clone()),
        Arc::new(w.clock.clone()),
    ));
    let handler = InvalidateHandler::new(c.clone(), SigPolicy::AcceptUnsigned);

    // Unknown zone while the store is down: no bundle, the caller fails closed (503).
    flaky.down.store(true, Ordering::SeqCst);
    let err = c.get(ZONE).await.unwrap_err();
    assert!(err.is_retryable(), "{err}");
    assert!(c.cached(ZONE).is_none());
    assert_eq!(c.poll_once().await.failed, 1);

    flaky.down.store(false, Ordering::SeqCst);
    let msg = Fields::new()
        .with("zone_id", ZONE)
        .with("policy_set_id", set.id.as_str())
        .with("policy_set_version_id", v1.id.as_str());
    assert_eq!(handler.handle(&delivery(msg.clone())).await, Outcome::Ack);
    let good = c.cached(ZONE).unwrap();

    // Down again: the message stays pending, the last good bundle keeps serving.
    w.life.activate(ZONE, &set.id, &v2.id).await.unwrap();
    flaky.down.store(true, Ordering::SeqCst);
    assert_eq!(handler.handle(&delivery(msg.clone())).await, Outcome::Retry);
    assert!(Arc::ptr_eq(&good, &c.get(ZONE).await.unwrap()));

    // Back: the redelivery loads v2.
    flaky.down.store(false, Ordering::SeqCst);
    assert_eq!(handler.handle(&delivery(msg)).await, Outcome::Ack);
    assert_eq!(
        c.cached(ZONE).unwrap().policy_set_version_id.as_deref(),
        Some(v2.id.as_str())
    );

    // A message without a zone is dead-lettered.
    assert_eq!(
        handler
            .handle(&delivery(Fields::new().with("policy_set_id", "x")))
            .await,
        Outcome::DeadLetter {
            reason: "missing_zone_id".into()
        }
    );

    // With a stream key, only correctly signed messages are acted on.
    let key = StreamKey::from_hex(&"ab".repeat(32)).unwrap();
    let strict = InvalidateHandler::new(c.clone(), SigPolicy::Verify(key.clone()));
    let unsigned = Fields::new().with("zone_id", ZONE);
    assert_eq!(
        strict.handle(&delivery(unsigned.clone())).await,
        Outcome::DeadLetter {
            reason: "hmac_verify_failed".into()
        }
    );
    let mut signed = unsigned;
    sign_fields(&key, "caracal.policy.invalidate", &mut signed);
    assert_eq!(strict.handle(&delivery(signed)).await, Outcome::Ack);
}
