//! Shared helpers of the `mandate_*` tests: the fixture claims, a key ring over a store, and
//! a store wrapper that can be told to fail.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use caracal_core::clock::{FakeClock, SharedClock};
use caracal_core::ids::UuidV7;
use caracal_core::mandate::{Audience, MandateClaims, MandateUse, VerifyPolicy, ZoneKeys};
use caracal_core::secrets::Keyring;
use caracal_core::store::keys::{SigningKeyRow, SigningKeyStore};
use caracal_core::store::outbox::OutboxStore;
use caracal_core::store::{StoreError, StoreResult};

pub const ISSUER: &str = "https://sts.example.com";
pub const ZONE: &str = "zone-1";
pub const RESOURCE: &str = "resource://api";
pub const KEK: &str = "5f0c3a7e9b2d4c6e8a1f3b5d7c9e0a2b4d6f8e1c3a5b7d9f0e2c4a6b8d0f1e3a";

/// The interop fixture: a faithful resource mandate of the reference.
pub fn fixture_claims() -> MandateClaims {
    let raw = include_str!("../fixtures/interop/jwt-claims.resource.valid.json");
    serde_json::from_str(raw).unwrap()
}

/// The fixture re-timed to `now` (issued now, valid for `ttl` seconds), for class `use_`:
/// `aud` is `[ISSUER]` for session and gateway mandates, the resource for resource ones.
pub fn claims_for(use_: MandateUse, now: DateTime<Utc>, ttl: i64) -> MandateClaims {
    let mut c = fixture_claims();
    c.use_ = use_;
    c.iat = now.timestamp();
    c.exp = now.timestamp() + ttl;
    if use_ != MandateUse::Resource {
        c.aud = Audience::Many(vec![ISSUER.to_owned()]);
    }
    c
}

/// The policy that accepts `claims_for(use_, ..)`.
pub fn policy_for(use_: MandateUse) -> VerifyPolicy {
    let audience = if use_ == MandateUse::Resource {
        RESOURCE
    } else {
        ISSUER
    };
    VerifyPolicy::new(ZONE, ISSUER, use_, audience)
}

/// The fixture's instant (its `iat`).
pub fn fixture_now() -> DateTime<Utc> {
    DateTime::<Utc>::from_timestamp(1_790_000_000, 0).unwrap()
}

pub fn keyring() -> Arc<Keyring> {
    Arc::new(Keyring::from_hex(KEK, None).unwrap())
}

/// A ring over `store` (keys and outbox) with the given clock.
pub fn ring<S>(store: Arc<S>, clock: &FakeClock) -> ZoneKeys
where
    S: SigningKeyStore + OutboxStore + 'static,
{
    let clock: SharedClock = Arc::new(clock.clone());
    ZoneKeys::new(store.clone(), store, keyring(), clock, Arc::new(UuidV7))
}

/// A signing-key store that fails every call while `down` is set.
pub struct Flaky<S> {
    pub inner: Arc<S>,
    pub down: AtomicBool,
}

impl<S> Flaky<S> {
    pub fn new(inner: Arc<S>) -> Self {
        Self {
            inner,
            down: AtomicBool::new(false),
        }
    }
    pub fn set_down(&self, down: bool) {
        self.down.store(down, Ordering::SeqCst);
    }
    fn check(&self) -> StoreResult<()> {
        if self.down.load(Ordering::SeqCst) {
            Err(StoreError::Unavailable {
                message: "injected outage".into(),
                retryable: true,
            })
        } else {
            Ok(())
        }
    }
}

#[async_trait]
impl<S: SigningKeyStore> SigningKeyStore for Flaky<S> {
    async fn insert_signing_key(
        &self,
        zone_id: &str,
        kid: &str,
        envelope: &[u8],
        created_at: DateTime<Utc>,
    ) -> StoreResult<SigningKeyRow> {
        self.check()?;
        self.inner
            .insert_signing_key(zone_id, kid, envelope, created_at)
            .await
    }
    async fn latest_signing_keys(
        &self,
        zone_id: &str,
        limit: u32,
    ) -> StoreResult<Vec<SigningKeyRow>> {
        self.check()?;
        self.inner.latest_signing_keys(zone_id, limit).await
    }
}
