//! Zone signing keys (reference `sts.md` §5.1): one P-256 key per zone version, sealed at rest,
//! generated lazily, rotated with a 24 h overlap, cached, and invalidated over
//! `caracal.keys.invalidate`.
//!
//! ## Storage format
//!
//! A key is stored as its **PKCS#8 v1 DER** (what aws-lc-rs generates and parses without a
//! PEM layer), sealed as a CSS1 envelope under the KEK with AAD
//! [`ZONE_SIGNING_KEY_AAD`]. The reference stores SEC1 `EC PRIVATE KEY` PEM; rows migrated
//! from it open too ([`SigningKey::from_private_key`] accepts PKCS#8 DER, SEC1 DER and SEC1 PEM),
//! so a migrated database keeps verifying its tokens.
//!
//! ## Caches
//!
//! - Private keys: per zone, the decrypted key of the latest `kid`, for 15 minutes. Issuance
//!   reads the latest version from the store every time (so a rotation on another replica is
//!   picked up at once) and reuses the cached key when the `kid` matches; when the store
//!   fails, a cached key inside its TTL is used (the reference's behaviour).
//! - Public keys: per zone, the verification set parsed once, for 15 minutes. Verification
//!   does no unsealing and no key decoding; the 24 h overlap is evaluated at each lookup, so a
//!   previous key drops out exactly when the overlap ends, not up to 15 minutes later.
//! - [`ZoneKeys::invalidate`] flushes both for a zone; the `caracal.keys.invalidate` consumer
//!   calls it.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_FIXED, ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair,
    ParsedPublicKey,
};
use base64::Engine as _;
use chrono::{DateTime, Duration, Utc};
use jsonwebtoken::DecodingKey;

use super::error::MandateError;
use crate::clock::SharedClock;
use crate::ids::SharedIdGen;
use crate::secrets::{Keyring, ZONE_SIGNING_KEY_AAD};
use crate::store::keys::{SigningKeyRow, SigningKeyStore};
use crate::store::outbox::{OutboxMessage, OutboxStore};
use crate::streams::names::KEYS_INVALIDATE;

/// How long decrypted private keys and parsed public keys are cached.
pub const KEY_CACHE_TTL: Duration = Duration::minutes(15);
/// How long the previous key version stays in the verification set after a rotation.
pub const ROTATION_OVERLAP: Duration = Duration::hours(24);

/// The length of an uncompressed SEC1 P-256 point: `0x04 || x || y`.
const POINT_LEN: usize = 65;

/// A zone's private signing key with its `kid`, ready to sign (parsed once).
///
/// `Debug` shows only the `kid`: the private key never reaches a log.
pub struct SigningKey {
    kid: String,
    pair: EcdsaKeyPair,
    rng: SystemRandom,
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

impl SigningKey {
    /// A fresh P-256 key named `kid`, with its PKCS#8 v1 DER (the form that is sealed).
    pub fn generate(kid: impl Into<String>) -> Result<(Self, Vec<u8>), MandateError> {
        let rng = SystemRandom::new();
        let doc = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
            .map_err(|_| MandateError::Crypto)?;
        let pkcs8 = doc.as_ref().to_vec();
        let key = Self::from_private_key(kid, &pkcs8)?;
        Ok((key, pkcs8))
    }

    /// A key from its private-key bytes: PKCS#8 v1 DER (our form), SEC1 `ECPrivateKey` DER,
    /// or SEC1 `-----BEGIN EC PRIVATE KEY-----` PEM (the reference's form).
    pub fn from_private_key(kid: impl Into<String>, bytes: &[u8]) -> Result<Self, MandateError> {
        let kid = kid.into();
        let bad = || MandateError::KeyMaterial { kid: kid.clone() };
        let pair = if bytes.starts_with(b"-----BEGIN") {
            let mut der = pem_body(bytes, "EC PRIVATE KEY")
                .or_else(|| pem_body(bytes, "PRIVATE KEY"))
                .ok_or_else(bad)?;
            let pair = EcdsaKeyPair::from_private_key_der(&ECDSA_P256_SHA256_FIXED_SIGNING, &der);
            wipe(&mut der);
            pair
        } else {
            EcdsaKeyPair::from_private_key_der(&ECDSA_P256_SHA256_FIXED_SIGNING, bytes)
        }
        .map_err(|_| bad())?;
        Ok(Self {
            kid,
            pair,
            rng: SystemRandom::new(),
        })
    }

    /// The key id (the JWT header `kid`).
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The matching verification key.
    pub fn verification_key(&self) -> Result<VerificationKey, MandateError> {
        VerificationKey::from_sec1_point(self.kid.clone(), self.pair.public_key().as_ref())
    }

    /// An ES256 signature of `message`: fixed-width `r || s` (64 bytes), the JOSE form.
    pub(crate) fn sign(&self, message: &[u8]) -> Result<Vec<u8>, MandateError> {
        self.pair
            .sign(&self.rng, message)
            .map(|s| s.as_ref().to_vec())
            .map_err(|_| MandateError::Crypto)
    }
}

/// A public P-256 key with its `kid`, decoded and checked (point on the curve) once.
#[derive(Clone)]
pub struct VerificationKey {
    kid: String,
    /// `0x04 || x || y`, 32-byte big-endian coordinates.
    point: [u8; POINT_LEN],
    /// The form jsonwebtoken verifies with (the raw point for its aws-lc-rs backend).
    decoding: DecodingKey,
}

impl fmt::Debug for VerificationKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VerificationKey")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

impl VerificationKey {
    /// A key from an uncompressed SEC1 point (`0x04 || x || y`, 65 bytes). The point must be
    /// on P-256.
    pub fn from_sec1_point(kid: impl Into<String>, point: &[u8]) -> Result<Self, MandateError> {
        let kid = kid.into();
        let bytes: [u8; POINT_LEN] = point
            .try_into()
            .map_err(|_| MandateError::KeyMaterial { kid: kid.clone() })?;
        if bytes[0] != 0x04 {
            return Err(MandateError::KeyMaterial { kid });
        }
        // Validates the point (on the curve, not infinity); the parsed form is not kept
        // because jsonwebtoken's public API takes the raw point.
        ParsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, bytes)
            .map_err(|_| MandateError::KeyMaterial { kid: kid.clone() })?;
        Ok(Self {
            kid,
            point: bytes,
            decoding: DecodingKey::from_ec_der(&bytes),
        })
    }

    /// A key from JWK coordinates (each exactly 32 bytes, big-endian).
    pub fn from_coordinates(
        kid: impl Into<String>,
        x: &[u8],
        y: &[u8],
    ) -> Result<Self, MandateError> {
        let kid = kid.into();
        if x.len() != 32 || y.len() != 32 {
            return Err(MandateError::KeyMaterial { kid });
        }
        let mut point = [0u8; POINT_LEN];
        point[0] = 0x04;
        point[1..33].copy_from_slice(x);
        point[33..].copy_from_slice(y);
        Self::from_sec1_point(kid, &point)
    }

    /// The key id.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The x coordinate, 32 bytes big-endian (left-padded).
    pub fn x(&self) -> &[u8] {
        &self.point[1..33]
    }

    /// The y coordinate, 32 bytes big-endian (left-padded).
    pub fn y(&self) -> &[u8] {
        &self.point[33..]
    }

    /// The uncompressed SEC1 point.
    pub fn sec1_point(&self) -> &[u8] {
        &self.point
    }

    pub(crate) fn decoding_key(&self) -> &DecodingKey {
        &self.decoding
    }
}

/// The keys a verifier accepts for one zone, active first.
#[derive(Debug, Clone, Default)]
pub struct VerificationKeys {
    keys: Vec<Arc<VerificationKey>>,
}

impl VerificationKeys {
    /// A set from keys in order (active first). A later duplicate `kid` is ignored.
    pub fn new(keys: impl IntoIterator<Item = VerificationKey>) -> Self {
        let mut out: Vec<Arc<VerificationKey>> = Vec::new();
        for k in keys {
            if !out.iter().any(|e| e.kid == k.kid) {
                out.push(Arc::new(k));
            }
        }
        Self { keys: out }
    }

    /// The key named `kid`.
    pub fn get(&self, kid: &str) -> Option<&VerificationKey> {
        self.keys.iter().find(|k| k.kid == kid).map(|k| k.as_ref())
    }

    /// The keys, active first.
    pub fn iter(&self) -> impl Iterator<Item = &VerificationKey> {
        self.keys.iter().map(|k| k.as_ref())
    }

    /// How many keys.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

/// Which key versions are in the verification set (and the JWKS) at `now`: the latest, and
/// the previous one only while the latest is less than [`ROTATION_OVERLAP`] old. `rows` are
/// newest first.
pub fn verification_rows(rows: &[SigningKeyRow], now: DateTime<Utc>) -> &[SigningKeyRow] {
    match rows {
        [] => &[],
        [latest, ..] if rows.len() >= 2 && now - latest.created_at < ROTATION_OVERLAP => &rows[..2],
        _ => &rows[..1],
    }
}

/// The result of a rotation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rotated {
    /// The new key id.
    pub kid: String,
    /// Its version.
    pub version: i64,
    /// The outbox row of the `caracal.keys.invalidate` message.
    pub outbox_id: String,
}

struct CachedSigning {
    key: Arc<SigningKey>,
    cached_at: DateTime<Utc>,
}

struct CachedVerification {
    /// Latest and, when it was inside the overlap at load time, the previous key.
    full: Arc<VerificationKeys>,
    /// The latest key alone.
    latest_only: Arc<VerificationKeys>,
    /// When the previous key leaves the set (`None` when `full` has only one key).
    overlap_ends: Option<DateTime<Utc>>,
    cached_at: DateTime<Utc>,
}

/// The zone key ring: lazily generated, sealed, cached signing keys and their verification
/// sets, over a [`SigningKeyStore`], an [`OutboxStore`], a KEK [`Keyring`], a clock and an id
/// generator.
///
/// ## Concurrency
///
/// The first key of a zone is generated lazily by [`Self::signing_key`]. Within one process a
/// lock makes concurrent callers share one generation. Across processes two STS replicas may
/// both generate: the store serialises versions (`latest + 1` under a per-zone lock), so the
/// later insert simply becomes version 2, the newer key; a token signed with version 1 still
/// verifies because version 1 is the previous key inside its 24 h overlap. No caller ever
/// signs with a key that is not in the set.
pub struct ZoneKeys {
    store: Arc<dyn SigningKeyStore>,
    outbox: Arc<dyn OutboxStore>,
    keyring: Arc<Keyring>,
    clock: SharedClock,
    ids: SharedIdGen,
    signing: Mutex<HashMap<String, CachedSigning>>,
    verification: Mutex<HashMap<String, CachedVerification>>,
    generate: tokio::sync::Mutex<()>,
}

impl fmt::Debug for ZoneKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ZoneKeys").finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A poisoned cache only means another thread panicked while holding it; the map is
    // still consistent (every write is a single insert or remove).
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl ZoneKeys {
    /// A key ring over the given store, outbox, KEK ring, clock and id generator.
    pub fn new(
        store: Arc<dyn SigningKeyStore>,
        outbox: Arc<dyn OutboxStore>,
        keyring: Arc<Keyring>,
        clock: SharedClock,
        ids: SharedIdGen,
    ) -> Self {
        Self {
            store,
            outbox,
            keyring,
            clock,
            ids,
            signing: Mutex::new(HashMap::new()),
            verification: Mutex::new(HashMap::new()),
            generate: tokio::sync::Mutex::new(()),
        }
    }

    /// The clock this ring reads.
    pub fn clock(&self) -> &SharedClock {
        &self.clock
    }

    /// The zone's active (latest) signing key, generating and storing the first one when the
    /// zone has none. The latest version is read from the store every time; its decrypted key
    /// comes from the cache when the `kid` matches. On a store error a cached key younger than
    /// [`KEY_CACHE_TTL`] is used; otherwise the error is returned (never mint without a key).
    pub async fn signing_key(&self, zone_id: &str) -> Result<Arc<SigningKey>, MandateError> {
        let now = self.clock.now();
        let latest = match self.store.latest_signing_keys(zone_id, 1).await {
            Ok(rows) => rows.into_iter().next(),
            Err(e) => {
                if let Some(key) = self.cached_signing(zone_id, None, now) {
                    tracing::warn!(zone_id, kid = key.kid(), error = %e,
                        "signing key store unavailable; using the cached key");
                    return Ok(key);
                }
                return Err(e.into());
            }
        };
        let row = match latest {
            Some(row) => row,
            None => self.generate_first(zone_id).await?,
        };
        if let Some(key) = self.cached_signing(zone_id, Some(&row.kid), now) {
            return Ok(key);
        }
        let key = Arc::new(self.open_row(&row)?);
        lock(&self.signing).insert(
            zone_id.to_owned(),
            CachedSigning {
                key: key.clone(),
                cached_at: now,
            },
        );
        Ok(key)
    }

    /// The zone's verification set: the latest key, plus the previous one while the latest is
    /// less than 24 h old. Parsed once and cached for [`KEY_CACHE_TTL`]. Any row of the set
    /// that fails to decrypt or parse fails the whole set (reference `sts.md` §3.6); a zone
    /// without keys is [`MandateError::NoKeys`]. Never generates a key.
    pub async fn verification_keys(
        &self,
        zone_id: &str,
    ) -> Result<Arc<VerificationKeys>, MandateError> {
        let now = self.clock.now();
        if let Some(set) = self.cached_verification(zone_id, now) {
            return Ok(set);
        }
        let rows = self.store.latest_signing_keys(zone_id, 2).await?;
        let in_set = verification_rows(&rows, now);
        if in_set.is_empty() {
            return Err(MandateError::NoKeys);
        }
        let mut keys = Vec::with_capacity(in_set.len());
        for row in in_set {
            keys.push(self.open_row(row)?.verification_key()?);
        }
        let overlap_ends = (keys.len() > 1).then(|| in_set[0].created_at + ROTATION_OVERLAP);
        let latest_only = Arc::new(VerificationKeys::new(keys.iter().take(1).cloned()));
        let full = Arc::new(VerificationKeys::new(keys));
        lock(&self.verification).insert(
            zone_id.to_owned(),
            CachedVerification {
                full: full.clone(),
                latest_only,
                overlap_ends,
                cached_at: now,
            },
        );
        Ok(full)
    }

    /// The public keys of the JWKS (reference `sts.md` §1.2): the same rows as the
    /// verification set, active first, but a row that fails to decrypt or parse is skipped
    /// (logged by `kid`). No rows → [`MandateError::NoKeys`] (404); rows but none usable →
    /// [`MandateError::NoUsableKeys`] (500). Never generates a key.
    pub async fn jwks_keys(&self, zone_id: &str) -> Result<VerificationKeys, MandateError> {
        let now = self.clock.now();
        let rows = self.store.latest_signing_keys(zone_id, 2).await?;
        let in_set = verification_rows(&rows, now);
        if in_set.is_empty() {
            return Err(MandateError::NoKeys);
        }
        let mut keys = Vec::with_capacity(in_set.len());
        for row in in_set {
            match self.open_row(row).and_then(|k| k.verification_key()) {
                Ok(k) => keys.push(k),
                Err(e) => {
                    tracing::warn!(zone_id, kid = %row.kid, error = %e,
                        "jwks: skipping an unusable signing key row");
                }
            }
        }
        if keys.is_empty() {
            return Err(MandateError::NoUsableKeys);
        }
        Ok(VerificationKeys::new(keys))
    }

    /// Insert a new key version for the zone, flush this process's caches for it, and enqueue
    /// a `caracal.keys.invalidate` message (`zone_id`) through the outbox so every other
    /// replica flushes too (SPEC §5 item 6). When the enqueue fails the rotation has still
    /// taken effect: [`MandateError::InvalidationNotQueued`] names the new `kid`.
    pub async fn rotate(&self, zone_id: &str) -> Result<Rotated, MandateError> {
        let row = self.insert_new(zone_id).await?;
        self.invalidate(zone_id);
        let message = OutboxMessage::new(
            KEYS_INVALIDATE,
            vec![("zone_id".to_owned(), zone_id.to_owned())],
        )
        .dedupe(format!("keys.invalidate:{}", row.kid));
        let outbox_id = self
            .outbox
            .enqueue(&message, self.clock.now())
            .await
            .map_err(|source| MandateError::InvalidationNotQueued {
                kid: row.kid.clone(),
                source,
            })?;
        Ok(Rotated {
            kid: row.kid,
            version: row.version,
            outbox_id,
        })
    }

    /// Flush the zone's private-key and public-key caches (what the `caracal.keys.invalidate`
    /// consumer calls).
    pub fn invalidate(&self, zone_id: &str) {
        lock(&self.signing).remove(zone_id);
        lock(&self.verification).remove(zone_id);
    }

    async fn generate_first(&self, zone_id: &str) -> Result<SigningKeyRow, MandateError> {
        let _guard = self.generate.lock().await;
        // Another caller in this process may have generated while we waited.
        if let Some(row) = self
            .store
            .latest_signing_keys(zone_id, 1)
            .await?
            .into_iter()
            .next()
        {
            return Ok(row);
        }
        self.insert_new(zone_id).await
    }

    async fn insert_new(&self, zone_id: &str) -> Result<SigningKeyRow, MandateError> {
        let kid = self.ids.next_id();
        let (_, mut pkcs8) = SigningKey::generate(kid.clone())?;
        let sealed = self.keyring.seal(ZONE_SIGNING_KEY_AAD, &pkcs8);
        wipe(&mut pkcs8);
        let row = self
            .store
            .insert_signing_key(zone_id, &kid, &sealed?, self.clock.now())
            .await?;
        tracing::info!(zone_id, kid = %row.kid, version = row.version, "zone signing key created");
        Ok(row)
    }

    fn open_row(&self, row: &SigningKeyRow) -> Result<SigningKey, MandateError> {
        let mut plain = self
            .keyring
            .open(ZONE_SIGNING_KEY_AAD, &row.envelope)
            .map_err(|_| MandateError::KeyMaterial {
                kid: row.kid.clone(),
            })?;
        let key = SigningKey::from_private_key(row.kid.clone(), &plain);
        wipe(&mut plain);
        key
    }

    fn cached_signing(
        &self,
        zone_id: &str,
        kid: Option<&str>,
        now: DateTime<Utc>,
    ) -> Option<Arc<SigningKey>> {
        let cache = lock(&self.signing);
        let entry = cache.get(zone_id)?;
        let fresh = now - entry.cached_at < KEY_CACHE_TTL;
        (fresh && kid.is_none_or(|k| entry.key.kid == k)).then(|| entry.key.clone())
    }

    fn cached_verification(
        &self,
        zone_id: &str,
        now: DateTime<Utc>,
    ) -> Option<Arc<VerificationKeys>> {
        let cache = lock(&self.verification);
        let entry = cache.get(zone_id)?;
        if now - entry.cached_at >= KEY_CACHE_TTL {
            return None;
        }
        Some(match entry.overlap_ends {
            Some(end) if now >= end => entry.latest_only.clone(),
            _ => entry.full.clone(),
        })
    }
}

/// The base64 body of the first PEM block labelled `label`, decoded.
fn pem_body(pem: &[u8], label: &str) -> Option<Vec<u8>> {
    let text = std::str::from_utf8(pem).ok()?;
    let begin = format!("-----BEGIN {label}-----");
    let end = format!("-----END {label}-----");
    let start = text.find(&begin)? + begin.len();
    let stop = start + text.get(start..)?.find(&end)?;
    let body: String = text
        .get(start..stop)?
        .chars()
        .filter(|c| !c.is_ascii_whitespace())
        .collect();
    base64::engine::general_purpose::STANDARD.decode(body).ok()
}

/// Overwrite key bytes before they are freed (best effort; the allocator may have copied).
fn wipe(buf: &mut [u8]) {
    buf.fill(0);
    std::hint::black_box(buf);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sec1_pem_and_pkcs8_both_open() {
        let (key, pkcs8) = SigningKey::generate("k1").unwrap();
        let again = SigningKey::from_private_key("k1", &pkcs8).unwrap();
        assert_eq!(
            key.verification_key().unwrap().sec1_point(),
            again.verification_key().unwrap().sec1_point()
        );
        // A PKCS#8 key wrapped as PEM ("PRIVATE KEY") opens too.
        let b64 = base64::engine::general_purpose::STANDARD.encode(&pkcs8);
        let pem = format!("-----BEGIN PRIVATE KEY-----\n{b64}\n-----END PRIVATE KEY-----\n");
        assert!(SigningKey::from_private_key("k1", pem.as_bytes()).is_ok());
        assert!(matches!(
            SigningKey::from_private_key("k1", b"-----BEGIN EC PRIVATE KEY-----\n!!\n"),
            Err(MandateError::KeyMaterial { .. })
        ));
        assert!(SigningKey::from_private_key("k1", b"junk").is_err());
        // The reference's form: SEC1 (RFC 5915) `EC PRIVATE KEY` PEM.
        use aws_lc_rs::encoding::{AsDer, EcPrivateKeyRfc5915Der};
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &pkcs8).unwrap();
        let sec1: EcPrivateKeyRfc5915Der<'_> = pair.private_key().as_der().unwrap();
        let b64 = base64::engine::general_purpose::STANDARD.encode(sec1.as_ref());
        let pem = format!("-----BEGIN EC PRIVATE KEY-----\n{b64}\n-----END EC PRIVATE KEY-----\n");
        let from_pem = SigningKey::from_private_key("k1", pem.as_bytes()).unwrap();
        assert_eq!(
            from_pem.verification_key().unwrap().sec1_point(),
            key.verification_key().unwrap().sec1_point()
        );
        assert!(SigningKey::from_private_key("k1", sec1.as_ref()).is_ok());
        assert!(!format!("{key:?}").contains("pair"));
    }

    #[test]
    fn points_must_be_on_the_curve() {
        let (key, _) = SigningKey::generate("k").unwrap();
        let vk = key.verification_key().unwrap();
        assert!(VerificationKey::from_coordinates("k", vk.x(), vk.y()).is_ok());
        let mut y = vk.y().to_vec();
        y[31] ^= 1;
        assert!(VerificationKey::from_coordinates("k", vk.x(), &y).is_err());
        assert!(VerificationKey::from_coordinates("k", &[0; 31], vk.y()).is_err());
        assert!(VerificationKey::from_sec1_point("k", &[4; 10]).is_err());
    }
}
