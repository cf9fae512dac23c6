//! The resource-side verifier on a fake clock with a counting key source.

use std::sync::atomic::{AtomicUsize, Ordering};

use super::*;
use crate::clock::{Clock, FakeClock};
use crate::mandate::{Jwks, SigningKey, mint};
use crate::streams::consumer::DeliveryKind;
use crate::streams::signature::StreamKey;
use crate::streams::{EntryId, Fields, names};

const ISSUER: &str = "https://sts.example.com";
const ZONE: &str = "zone-1";
const RESOURCE: &str = "resource://api";

fn fixture_claims() -> MandateClaims {
    serde_json::from_str(include_str!(
        "../../../tests/fixtures/interop/jwt-claims.resource.valid.json"
    ))
    .unwrap()
}

/// The fixture's `iat`.
fn t0() -> DateTime<Utc> {
    DateTime::<Utc>::from_timestamp(1_790_000_000, 0).unwrap()
}

/// A static source that counts fetches.
#[derive(Default)]
struct Counting {
    inner: StaticJwksSource,
    fetches: AtomicUsize,
}

impl Counting {
    fn count(&self) -> usize {
        self.fetches.load(Ordering::SeqCst)
    }

    fn publish(&self, zone: &str, keys: &[&SigningKey]) {
        let set = VerificationKeys::new(keys.iter().map(|k| k.verification_key().unwrap()));
        self.inner.set(zone, Jwks::from_keys(&set).to_json());
    }
}

#[async_trait]
impl JwksSource for Counting {
    async fn fetch(&self, zone_id: &str) -> Result<VerificationKeys, MandateError> {
        self.fetches.fetch_add(1, Ordering::SeqCst);
        self.inner.fetch(zone_id).await
    }
}

struct Harness {
    clock: FakeClock,
    source: Arc<Counting>,
    set: Arc<RevocationSet>,
    verifier: RemoteVerifier,
}

fn harness() -> Harness {
    let clock = FakeClock::new(t0());
    let shared: SharedClock = Arc::new(clock.clone());
    let source = Arc::new(Counting::default());
    let set = Arc::new(RevocationSet::new(shared.clone()));
    let verifier = RemoteVerifier::new(source.clone(), ISSUER, shared, set.clone());
    Harness {
        clock,
        source,
        set,
        verifier,
    }
}

fn key(kid: &str) -> SigningKey {
    SigningKey::generate(kid).unwrap().0
}

/// The fixture claims, valid for an hour from `t0`.
fn claims() -> MandateClaims {
    let mut c = fixture_claims();
    c.exp = c.iat + 3600;
    c
}

fn token(c: &MandateClaims, k: &SigningKey) -> String {
    mint(c, k).unwrap()
}

impl Harness {
    async fn check(&self, token: &str) -> Result<MandateClaims, MandateError> {
        self.verifier
            .verify(token, ZONE, MandateUse::Resource, RESOURCE, &["read"])
            .await
    }
}

#[tokio::test]
async fn accepts_a_valid_mandate_and_caches_keys() {
    let h = harness();
    let k1 = key("k1");
    h.source.publish(ZONE, &[&k1]);
    let t = token(&claims(), &k1);
    let got = h.check(&t).await.unwrap();
    assert_eq!(got.sid, "authority-record-1");
    h.check(&t).await.unwrap();
    assert_eq!(h.source.count(), 1, "the second call uses the cache");
    // After the 15-minute TTL the set is fetched again.
    h.clock.advance(Duration::minutes(15));
    h.check(&t).await.unwrap();
    assert_eq!(h.source.count(), 2);
}

#[tokio::test]
async fn unknown_kid_forces_at_most_one_refetch_per_30_seconds() {
    let h = harness();
    let (k1, k2, k3) = (key("k1"), key("k2"), key("k3"));
    h.source.publish(ZONE, &[&k1]);
    h.check(&token(&claims(), &k1)).await.unwrap();
    assert_eq!(h.source.count(), 1);

    // Rotation: k2 is published; the cached set lacks it → one forced refetch, accepted.
    h.source.publish(ZONE, &[&k2, &k1]);
    h.check(&token(&claims(), &k2)).await.unwrap();
    assert_eq!(h.source.count(), 2);

    // k3 is not published yet: refused, and inside the window no further fetch happens,
    // even once it is published.
    let t3 = token(&claims(), &k3);
    h.clock.advance(Duration::seconds(1));
    assert!(matches!(h.check(&t3).await, Err(MandateError::UnknownKid)));
    h.source.publish(ZONE, &[&k3, &k2]);
    h.clock.advance(Duration::seconds(28));
    assert!(matches!(h.check(&t3).await, Err(MandateError::UnknownKid)));
    assert_eq!(h.source.count(), 2);

    // After the window: one forced refetch picks the rotation up.
    h.clock.advance(Duration::seconds(1));
    h.check(&t3).await.unwrap();
    assert_eq!(h.source.count(), 3);
    // A forged kid now costs nothing for another 30 s.
    let stranger = token(&claims(), &key("k4"));
    assert!(matches!(
        h.check(&stranger).await,
        Err(MandateError::UnknownKid)
    ));
    assert_eq!(h.source.count(), 3);
}

#[tokio::test]
async fn a_failed_fetch_fails_closed_and_is_not_cached() {
    let h = harness();
    let k1 = key("k1");
    let t = token(&claims(), &k1);
    let err = h.check(&t).await.unwrap_err();
    assert!(matches!(err, MandateError::KeySetUnavailable(_)), "{err:?}");
    assert!(err.is_rejection());
    assert_eq!(err.verifier_code(), "invalid_token");
    h.source.publish(ZONE, &[&k1]);
    h.check(&t).await.unwrap();
    assert_eq!(h.source.count(), 2);
    // An empty configured zone is refused before anything is fetched.
    let err = h
        .verifier
        .verify(&t, "", MandateUse::Resource, RESOURCE, &[])
        .await
        .unwrap_err();
    assert_eq!(err.verifier_code(), "invalid_zone");
    assert_eq!(h.source.count(), 2);
}

#[tokio::test]
async fn class_audience_issuer_zone_and_signature_are_enforced() {
    let h = harness();
    let k1 = key("k1");
    h.source.publish(ZONE, &[&k1]);
    h.source.publish("zone-2", &[&k1]);
    let t = token(&claims(), &k1);
    let v = &h.verifier;
    assert!(matches!(
        v.verify(&t, ZONE, MandateUse::Session, RESOURCE, &[]).await,
        Err(MandateError::WrongUse { .. })
    ));
    assert!(matches!(
        v.verify(&t, ZONE, MandateUse::Resource, "resource://other", &[])
            .await,
        Err(MandateError::WrongAudience)
    ));
    let err = v
        .verify(&t, "zone-2", MandateUse::Resource, RESOURCE, &[])
        .await
        .unwrap_err();
    assert!(matches!(err, MandateError::ZoneMismatch));
    assert_eq!(err.verifier_code(), "invalid_zone");

    let other_issuer = RemoteVerifier::new(
        h.source.clone(),
        "https://evil.example.com",
        Arc::new(h.clock.clone()),
        h.set.clone(),
    );
    assert!(matches!(
        other_issuer
            .verify(&t, ZONE, MandateUse::Resource, RESOURCE, &[])
            .await,
        Err(MandateError::WrongIssuer)
    ));
    // Same kid, different key: the signature fails.
    let impostor = token(&claims(), &key("k1"));
    assert!(matches!(
        h.check(&impostor).await,
        Err(MandateError::BadSignature)
    ));
}

#[tokio::test]
async fn expiry_leeway_is_60_seconds() {
    let h = harness();
    let k1 = key("k1");
    h.source.publish(ZONE, &[&k1]);
    let c = fixture_claims(); // exp = iat + 300
    let t = token(&c, &k1);
    let exp = DateTime::<Utc>::from_timestamp(c.exp, 0).unwrap();
    h.clock.set(exp + Duration::seconds(59));
    h.check(&t).await.unwrap();
    h.clock.set(exp + Duration::seconds(60));
    assert!(matches!(h.check(&t).await, Err(MandateError::Expired)));
    // `iat` up to 60 s in the future is tolerated, beyond is not.
    let iat = DateTime::<Utc>::from_timestamp(c.iat, 0).unwrap();
    h.clock.set(iat - Duration::seconds(60));
    h.check(&t).await.unwrap();
    h.clock.set(iat - Duration::seconds(61));
    assert!(matches!(
        h.check(&t).await,
        Err(MandateError::IssuedInFuture)
    ));
}

#[tokio::test]
async fn required_scopes_are_exact_members() {
    let h = harness();
    let k1 = key("k1");
    h.source.publish(ZONE, &[&k1]);
    let t = token(&claims(), &k1); // scope "read write"
    let v = &h.verifier;
    v.verify(&t, ZONE, MandateUse::Resource, RESOURCE, &["read", "write"])
        .await
        .unwrap();
    for (required, missing) in [
        (&["read", "admin"][..], "admin"),
        (&["rea"][..], "rea"),
        (&[""][..], ""),
    ] {
        let err = v
            .verify(&t, ZONE, MandateUse::Resource, RESOURCE, required)
            .await
            .unwrap_err();
        match &err {
            MandateError::MissingScope { scope } => assert_eq!(scope, missing),
            other => panic!("{other:?}"),
        }
        assert_eq!(err.verifier_code(), "insufficient_scope");
        assert!(err.is_rejection());
    }
}

#[tokio::test]
async fn every_revocation_anchor_is_honoured() {
    let c = claims();
    let anchors = [
        Anchor::AuthorityRecord(c.sid.clone()),
        Anchor::AuthorityRecord(c.root_sid.clone()),
        Anchor::Session(c.agent_session_id.clone().unwrap()),
        Anchor::DelegationEdge(c.delegation_edge_id.clone().unwrap()),
    ];
    for anchor in anchors {
        let h = harness();
        let k1 = key("k1");
        h.source.publish(ZONE, &[&k1]);
        let t = token(&c, &k1);
        h.check(&t).await.unwrap();
        h.set.insert(anchor.clone(), h.clock.now());
        let err = h.check(&t).await.unwrap_err();
        assert!(matches!(err, MandateError::Revoked), "{anchor:?}: {err:?}");
        assert_eq!(err.verifier_code(), "session_revoked");
    }
}

#[test]
fn the_revocation_set_has_namespaces_and_forgets() {
    let clock = FakeClock::new(t0());
    let set = RevocationSet::new(Arc::new(clock.clone()));
    let c = claims();
    // An id of one kind never revokes a claim of another kind; empty ids never count.
    set.insert(Anchor::Session(c.sid.clone()), t0());
    set.insert(Anchor::AuthorityRecord(String::new()), t0());
    assert!(!set.is_revoked(&c));
    assert_eq!(set.len(), 1);
    // A delegation-path edge counts like the leaf edge.
    let mut deep = c.clone();
    deep.delegation_edge_id = Some("leaf".into());
    deep.delegation_path = vec!["parent-edge".into(), "leaf".into()];
    set.insert(Anchor::DelegationEdge("parent-edge".into()), t0());
    assert!(set.is_revoked(&deep));
    assert!(!set.is_revoked(&c));

    set.insert(Anchor::AuthorityRecord(c.root_sid.clone()), t0());
    clock.advance(REVOCATION_RETENTION - Duration::seconds(1));
    assert!(set.is_revoked(&c));
    clock.advance(Duration::seconds(1));
    assert!(!set.is_revoked(&c), "forgotten after the retention");
    // The next insertion prunes what expired.
    set.insert(Anchor::Session("fresh".into()), clock.now());
    assert_eq!(set.len(), 1);
}

fn delivery(fields: Fields) -> Delivery {
    Delivery {
        stream: names::SESSIONS_REVOKE.to_owned(),
        id: EntryId::MIN,
        fields,
        deliveries: 1,
        kind: DeliveryKind::New,
    }
}

#[tokio::test]
async fn the_handler_inserts_every_anchor_of_a_verified_message() {
    let clock = FakeClock::new(t0());
    let set = Arc::new(RevocationSet::new(Arc::new(clock.clone())));
    let sig = SigPolicy::Verify(
        StreamKey::from_hex("0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef")
            .unwrap(),
    );
    let h = RevocationSetHandler::new(set.clone(), sig.clone());
    let signed = |pairs: &[(&str, &str)]| {
        let mut f: Fields = pairs.iter().copied().collect();
        sig.sign_into(names::SESSIONS_REVOKE, &mut f);
        f
    };
    let c = claims();

    // Unsigned or no anchor: dead-lettered, nothing inserted.
    let unsigned: Fields = [("zone_id", ZONE), ("session_id", "x")]
        .into_iter()
        .collect();
    assert_eq!(
        h.handle(&delivery(unsigned)).await,
        Outcome::DeadLetter {
            reason: REASON_HMAC_FAILED.into()
        }
    );
    assert_eq!(
        h.handle(&delivery(signed(&[("zone_id", ZONE), ("grant_id", "g")])))
            .await,
        Outcome::DeadLetter {
            reason: REASON_MISSING_ANCHOR.into()
        }
    );
    assert!(set.is_empty());

    let msg = signed(&[
        ("zone_id", ZONE),
        ("session_id", "record-x"),
        ("agent_session_id", "session-child"),
        ("delegation_edge_id", "edge-x"),
        ("reason", "delegation_revoked"),
    ]);
    assert_eq!(h.handle(&delivery(msg)).await, Outcome::Ack);
    assert_eq!(set.len(), 3);
    assert!(set.is_revoked(&c), "agent_session_id matches");
    let mut other = c.clone();
    other.agent_session_id = None;
    other.delegation_edge_id = Some("edge-x".into());
    assert!(set.is_revoked(&other));
    other.delegation_edge_id = None;
    other.sid = "record-x".into();
    assert!(set.is_revoked(&other));
}

#[tokio::test]
async fn the_in_process_source_follows_the_zone_key_ring() {
    use crate::ids::UuidV7;
    use crate::secrets::Keyring;
    use crate::store::memory::MemoryStore;

    let clock = FakeClock::new(t0());
    let shared: SharedClock = Arc::new(clock.clone());
    let store = Arc::new(MemoryStore::new());
    let ring = Arc::new(ZoneKeys::new(
        store.clone(),
        store,
        Arc::new(
            Keyring::from_hex(
                "5f0c3a7e9b2d4c6e8a1f3b5d7c9e0a2b4d6f8e1c3a5b7d9f0e2c4a6b8d0f1e3a",
                None,
            )
            .unwrap(),
        ),
        shared.clone(),
        Arc::new(UuidV7),
    ));
    let verifier = RemoteVerifier::new(
        Arc::new(ZoneKeysSource::new(ring.clone())),
        ISSUER,
        shared.clone(),
        Arc::new(RevocationSet::new(shared)),
    );
    let signing = ring.signing_key(ZONE).await.unwrap();
    let t = mint(&claims(), &signing).unwrap();
    verifier
        .verify(&t, ZONE, MandateUse::Resource, RESOURCE, &["read"])
        .await
        .unwrap();
    // A rotation in the ring is picked up through the forced refetch.
    let rotated = ring.rotate(ZONE).await.unwrap();
    clock.advance(Duration::seconds(1));
    let new_key = ring.signing_key(ZONE).await.unwrap();
    assert_eq!(new_key.kid(), rotated.kid);
    let t2 = mint(&claims(), &new_key).unwrap();
    verifier
        .verify(&t2, ZONE, MandateUse::Resource, RESOURCE, &[])
        .await
        .unwrap();
}
