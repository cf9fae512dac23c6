//! Client secrets and admin tokens: generation, Argon2id hashing, verification and the
//! verified-secret cache.
//!
//! ## Stored format
//!
//! `argon2id$<salt>$<hash>`: both parts standard base64 **without** padding (Go's
//! `base64.RawStdEncoding`), a 16-byte random salt and a 32-byte Argon2id (v1.3) output with
//! t = 3, m = 64 MiB, p = 2. This is the reference's format byte for byte, so application rows
//! and admin tokens migrate from the reference unchanged. The parameters are fixed rather than
//! encoded in the string because the reference never varied them; a record that does not have
//! exactly this shape is *malformed* and never verifies.
//!
//! ## Timing
//!
//! Verification of a malformed record still runs one full derivation (against a dummy salt),
//! so the time a failed authentication takes does not reveal whether the application's stored
//! hash is broken. The derived key is compared with the stored one in constant time.
//!
//! ## Cache
//!
//! Argon2id at 64 MiB costs about 100 ms of CPU and 64 MiB of memory, which would cap the STS at
//! a handful of exchanges per second. [`VerifiedSecretCache`] keeps, per stored hash, the
//! SHA-256 of the secret that last verified against it, for one hour (the reference's §7.6
//! cache). A hit costs one SHA-256 and a constant-time compare; only misses derive. Failures
//! are never cached, so a wrong secret costs a derivation every time (the STS bounds those with
//! its verify semaphore and its per-application failure rate limit).

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use argon2::{Algorithm, Argon2, Params, Version};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD_NO_PAD, URL_SAFE_NO_PAD};
use chrono::{DateTime, Duration, Utc};
use rand::rngs::OsRng;
use rand::{CryptoRng, RngCore};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::SecretError;
use crate::clock::SharedClock;

/// Prefix of a generated application client secret (`cs_` + base64url of 32 random bytes).
pub const CLIENT_SECRET_PREFIX: &str = "cs_";
/// Prefix of a generated admin token (`cat_` + base64url of 32 random bytes).
pub const ADMIN_TOKEN_PREFIX: &str = "cat_";
/// Random bytes behind a generated client secret or admin token (256 bits).
pub const GENERATED_SECRET_BYTES: usize = 32;

/// The algorithm tag that opens a stored hash.
pub const HASH_PREFIX: &str = "argon2id";
/// Argon2id time cost (passes), as the reference.
pub const ARGON2_T_COST: u32 = 3;
/// Argon2id memory cost in KiB (64 MiB), as the reference.
pub const ARGON2_M_COST_KIB: u32 = 65_536;
/// Argon2id parallelism (lanes), as the reference.
pub const ARGON2_P_COST: u32 = 2;
/// Length of the derived key in bytes.
pub const HASH_LEN: usize = 32;
/// Length of the random salt in bytes.
pub const SALT_LEN: usize = 16;

/// How long a verified secret stays in the cache (the reference's 1 h).
pub const VERIFIED_SECRET_TTL_SECS: i64 = 3_600;
/// How many stored hashes the cache remembers at most (the reference's 8192).
pub const VERIFIED_SECRET_CACHE_CAPACITY: usize = 8_192;

/// Salt used for the dummy derivation that a malformed record still costs. Its value does not
/// matter; it only has to be a valid Argon2 salt so the derivation does the same work.
const DUMMY_SALT: [u8; SALT_LEN] = *b"caracal.dummy.sa";

/// The Argon2id instance with the reference parameters.
fn argon2id() -> Result<Argon2<'static>, SecretError> {
    let params = Params::new(
        ARGON2_M_COST_KIB,
        ARGON2_T_COST,
        ARGON2_P_COST,
        Some(HASH_LEN),
    )
    .map_err(|_| SecretError::Hashing)?;
    Ok(Argon2::new(Algorithm::Argon2id, Version::V0x13, params))
}

#[cfg(test)]
thread_local! {
    /// Derivations run on this thread, so tests can prove what costs one.
    static DERIVATIONS_ON_THREAD: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// Derive the 32-byte Argon2id key of `secret` under `salt`.
fn derive(secret: &[u8], salt: &[u8]) -> Result<[u8; HASH_LEN], SecretError> {
    #[cfg(test)]
    DERIVATIONS_ON_THREAD.with(|n| n.set(n.get() + 1));
    let mut out = [0u8; HASH_LEN];
    argon2id()?
        .hash_password_into(secret, salt, &mut out)
        .map_err(|_| SecretError::Hashing)?;
    Ok(out)
}

/// A stored hash split into its decoded salt and key.
struct ParsedHash {
    salt: [u8; SALT_LEN],
    hash: [u8; HASH_LEN],
}

/// Parse `argon2id$<salt>$<hash>`; `None` for anything else (wrong tag, extra or missing parts,
/// padding, non-canonical base64, wrong decoded lengths).
fn parse_stored(stored: &str) -> Option<ParsedHash> {
    let mut parts = stored.split('$');
    let (tag, salt_b64, hash_b64) = (parts.next()?, parts.next()?, parts.next()?);
    if tag != HASH_PREFIX || parts.next().is_some() {
        return None;
    }
    let mut salt = [0u8; SALT_LEN];
    let mut hash = [0u8; HASH_LEN];
    // `decode_slice` refuses output that does not fit; the length checks refuse short input.
    let salt_len = STANDARD_NO_PAD.decode_slice(salt_b64, &mut salt).ok()?;
    let hash_len = STANDARD_NO_PAD.decode_slice(hash_b64, &mut hash).ok()?;
    (salt_len == SALT_LEN && hash_len == HASH_LEN).then_some(ParsedHash { salt, hash })
}

/// Hash a client secret (or admin token) for storage, with a fresh salt from the OS RNG.
///
/// Returns `argon2id$<salt>$<hash>` (raw standard base64). Costs one Argon2id derivation.
pub fn hash_client_secret(secret: &str) -> Result<String, SecretError> {
    hash_client_secret_with_rng(&mut OsRng, secret)
}

/// [`hash_client_secret`] with an injected RNG for the salt (deterministic tests and vectors).
pub fn hash_client_secret_with_rng(
    rng: &mut (impl RngCore + CryptoRng),
    secret: &str,
) -> Result<String, SecretError> {
    let mut salt = [0u8; SALT_LEN];
    rng.try_fill_bytes(&mut salt)
        .map_err(|_| SecretError::Rng)?;
    let hash = derive(secret.as_bytes(), &salt)?;
    Ok(format!(
        "{HASH_PREFIX}${}${}",
        STANDARD_NO_PAD.encode(salt),
        STANDARD_NO_PAD.encode(hash)
    ))
}

/// Whether `presented` is the secret behind the stored hash `stored`.
///
/// Always costs exactly one Argon2id derivation, including for a malformed `stored` (which
/// returns `false`), so timing does not reveal malformed records. The comparison of the derived
/// key is constant time. Never panics.
pub fn verify_client_secret(stored: &str, presented: &str) -> bool {
    let parsed = parse_stored(stored);
    let salt: &[u8] = match &parsed {
        Some(p) => &p.salt,
        None => &DUMMY_SALT,
    };
    let Ok(derived) = derive(presented.as_bytes(), salt) else {
        return false;
    };
    match parsed {
        Some(p) => bool::from(derived.ct_eq(&p.hash)),
        None => {
            // Same shape of work as the success path: a constant-time compare against a
            // fixed value, whose result is discarded.
            let _ = derived.ct_eq(&[0u8; HASH_LEN]);
            false
        }
    }
}

/// `prefix` + base64url (no padding) of [`GENERATED_SECRET_BYTES`] random bytes.
fn generate_with_prefix(
    rng: &mut (impl RngCore + CryptoRng),
    prefix: &str,
) -> Result<String, SecretError> {
    let mut raw = [0u8; GENERATED_SECRET_BYTES];
    rng.try_fill_bytes(&mut raw).map_err(|_| SecretError::Rng)?;
    let mut out = String::with_capacity(prefix.len() + 43);
    out.push_str(prefix);
    URL_SAFE_NO_PAD.encode_string(raw, &mut out);
    Ok(out)
}

/// A new application client secret: `cs_` + base64url (no padding) of 32 bytes from the OS RNG.
///
/// Shown to the operator once; only its hash ([`hash_client_secret`]) and a sealed copy are
/// stored.
pub fn generate_client_secret() -> Result<String, SecretError> {
    generate_client_secret_with_rng(&mut OsRng)
}

/// [`generate_client_secret`] with an injected RNG (deterministic tests).
pub fn generate_client_secret_with_rng(
    rng: &mut (impl RngCore + CryptoRng),
) -> Result<String, SecretError> {
    generate_with_prefix(rng, CLIENT_SECRET_PREFIX)
}

/// A new admin token: `cat_` + base64url (no padding) of 32 bytes from the OS RNG.
pub fn generate_admin_token() -> Result<String, SecretError> {
    generate_admin_token_with_rng(&mut OsRng)
}

/// [`generate_admin_token`] with an injected RNG (deterministic tests).
pub fn generate_admin_token_with_rng(
    rng: &mut (impl RngCore + CryptoRng),
) -> Result<String, SecretError> {
    generate_with_prefix(rng, ADMIN_TOKEN_PREFIX)
}

/// One remembered successful verification.
struct CacheEntry {
    /// SHA-256 of the secret that verified. A digest rather than the secret, so a memory dump
    /// of the cache does not hand the secret out; for generated secrets (256 random bits) the
    /// digest cannot be inverted.
    digest: [u8; 32],
    verified_at: DateTime<Utc>,
}

/// The verified-secret cache of the reference (§7.6): per stored hash, the SHA-256 of the
/// secret that last verified against it, for one hour, at most 8192 entries.
///
/// [`verify`](Self::verify) answers from the cache when it can and derives only on a miss.
/// Only successes are cached. Time comes from the injected [`Clock`](crate::clock::Clock), so
/// expiry is testable. Thread-safe: share it behind an `Arc`; the lock is never held during a
/// derivation.
///
/// When full, inserting first drops expired entries and then, if still full, the entry
/// verified longest ago, so the bound holds whatever the traffic.
pub struct VerifiedSecretCache {
    clock: SharedClock,
    ttl: Duration,
    capacity: usize,
    entries: Mutex<HashMap<String, CacheEntry>>,
    derivations: AtomicU64,
}

impl std::fmt::Debug for VerifiedSecretCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Entries are keyed by stored hashes; they are not secret, but they are not useful in
        // a log line either. Show only the shape.
        f.debug_struct("VerifiedSecretCache")
            .field("ttl_secs", &self.ttl.num_seconds())
            .field("capacity", &self.capacity)
            .field("len", &self.len())
            .field("derivations", &self.derivations())
            .finish()
    }
}

impl VerifiedSecretCache {
    /// A cache with the reference limits: 1 h TTL, 8192 entries.
    pub fn new(clock: SharedClock) -> Self {
        Self::with_limits(
            clock,
            Duration::seconds(VERIFIED_SECRET_TTL_SECS),
            VERIFIED_SECRET_CACHE_CAPACITY,
        )
    }

    /// A cache with explicit limits. A `capacity` of 0 or a non-positive `ttl` disables caching
    /// (every call derives).
    pub fn with_limits(clock: SharedClock, ttl: Duration, capacity: usize) -> Self {
        Self {
            clock,
            ttl,
            capacity,
            entries: Mutex::new(HashMap::new()),
            derivations: AtomicU64::new(0),
        }
    }

    /// Whether `presented` is the secret behind `stored`, answered from the cache when a
    /// fresh entry for `stored` matches, otherwise by one Argon2id derivation
    /// ([`verify_client_secret`]); a success is then remembered.
    ///
    /// A miss blocks for the derivation (about 100 ms, 64 MiB). On an async runtime, call
    /// [`check_cached`](Self::check_cached) inline first and run this on a blocking thread,
    /// under the verify-concurrency semaphore, only when that says no.
    pub fn verify(&self, stored: &str, presented: &str) -> bool {
        let digest = Self::digest(presented);
        if self.hit(stored, &digest) {
            return true;
        }
        self.derivations.fetch_add(1, Ordering::Relaxed);
        let ok = verify_client_secret(stored, presented);
        if ok {
            self.remember(stored, digest);
        }
        ok
    }

    /// Whether a fresh cache entry says `presented` is the secret behind `stored`, without
    /// ever deriving. `false` means "not known", not "wrong": follow it with
    /// [`verify`](Self::verify). Cheap (one SHA-256), so safe on the hot path.
    pub fn check_cached(&self, stored: &str, presented: &str) -> bool {
        self.hit(stored, &Self::digest(presented))
    }

    fn digest(presented: &str) -> [u8; 32] {
        Sha256::digest(presented.as_bytes()).into()
    }

    fn hit(&self, stored: &str, digest: &[u8; 32]) -> bool {
        let now = self.clock.now();
        let entries = self.lock();
        entries
            .get(stored)
            .is_some_and(|e| self.is_fresh(e, now) && bool::from(e.digest.ct_eq(digest)))
    }

    /// How many Argon2id derivations this cache has run (every miss). For metrics, and for
    /// tests proving that a hit does not derive.
    pub fn derivations(&self) -> u64 {
        self.derivations.load(Ordering::Relaxed)
    }

    /// How many entries the cache holds (expired ones included until evicted).
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether the cache holds no entry.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Forget every entry (for example after an application's secret was rotated everywhere).
    pub fn clear(&self) {
        self.lock().clear();
    }

    /// Forget the entry of one stored hash (for example when the application is archived).
    pub fn forget(&self, stored: &str) {
        self.lock().remove(stored);
    }

    /// Fresh means verified within the TTL. A clock that moved backwards past the entry
    /// makes it stale: re-deriving is the safe answer to a time anomaly.
    fn is_fresh(&self, entry: &CacheEntry, now: DateTime<Utc>) -> bool {
        let age = now - entry.verified_at;
        age >= Duration::zero() && age < self.ttl
    }

    fn remember(&self, stored: &str, digest: [u8; 32]) {
        if self.capacity == 0 || self.ttl <= Duration::zero() {
            return;
        }
        // Read the clock after the derivation: the entry's hour starts when it was verified.
        let now = self.clock.now();
        let mut entries = self.lock();
        if !entries.contains_key(stored) && entries.len() >= self.capacity {
            entries.retain(|_, e| self.is_fresh(e, now));
            if entries.len() >= self.capacity {
                // O(n) over at most `capacity` entries, run only after a ~100 ms derivation.
                let oldest = entries
                    .iter()
                    .min_by_key(|(_, e)| e.verified_at)
                    .map(|(k, _)| k.clone());
                if let Some(key) = oldest {
                    entries.remove(&key);
                }
            }
        }
        entries.insert(
            stored.to_owned(),
            CacheEntry {
                digest,
                verified_at: now,
            },
        );
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, CacheEntry>> {
        // A poisoned lock means a panic elsewhere while holding it; every entry is still a
        // complete, valid record, so the map stays usable.
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use rand::SeedableRng;
    use rand::rngs::StdRng;

    use super::*;
    use crate::clock::FakeClock;

    /// Independent vector from Python `argon2-cffi`:
    /// `argon2.low_level.hash_secret_raw(secret, salt, time_cost=3, memory_cost=65536,
    /// parallelism=2, hash_len=32, type=Type.ID)`, both parts raw standard base64.
    /// Regenerate with `tests/fixtures/secrets/make_vectors.py`.
    const VECTORS: &str = include_str!("../../tests/fixtures/secrets/vectors.json");

    /// The known-answer vector: (secret, stored hash).
    fn kat() -> (String, String) {
        let v: serde_json::Value = serde_json::from_str(VECTORS).unwrap();
        let field = |k: &str| v["argon2id"][k].as_str().unwrap().to_owned();
        (field("secret"), field("stored"))
    }

    fn cache(clock: &FakeClock) -> VerifiedSecretCache {
        VerifiedSecretCache::new(Arc::new(clock.clone()))
    }

    #[test]
    fn round_trip_and_wrong_secret() {
        let stored = hash_client_secret("cs_correct horse").unwrap();
        assert!(verify_client_secret(&stored, "cs_correct horse"));
        assert!(!verify_client_secret(&stored, "cs_correct horsf"));
        assert!(!verify_client_secret(&stored, ""));
    }

    #[test]
    fn stored_format_has_the_reference_shape() {
        let stored =
            hash_client_secret_with_rng(&mut StdRng::seed_from_u64(7), "cs_shape").unwrap();
        let parts: Vec<&str> = stored.split('$').collect();
        assert_eq!(parts.len(), 3);
        assert_eq!(parts[0], "argon2id");
        for (part, len) in [(parts[1], SALT_LEN), (parts[2], HASH_LEN)] {
            assert!(!part.contains('='), "no padding");
            assert!(
                part.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/'),
                "standard alphabet"
            );
            assert_eq!(STANDARD_NO_PAD.decode(part).unwrap().len(), len);
        }
        // 16 bytes -> 22 chars, 32 bytes -> 43 chars.
        assert_eq!((parts[1].len(), parts[2].len()), (22, 43));
    }

    #[test]
    fn known_answer_vector_from_argon2_cffi() {
        let (secret, stored) = kat();
        assert!(verify_client_secret(&stored, &secret));
        // And our derivation reproduces it exactly from the same salt.
        let parsed = parse_stored(&stored).unwrap();
        let mine = derive(secret.as_bytes(), &parsed.salt).unwrap();
        assert_eq!(mine, parsed.hash);
    }

    #[test]
    fn malformed_stored_hashes_never_verify_and_never_panic() {
        let (_, good) = kat();
        let (_, rest) = good.split_once('$').unwrap();
        let (salt, hash) = rest.split_once('$').unwrap();
        let malformed = [
            String::new(),
            "argon2id".into(),
            "argon2id$$".into(),
            format!("argon2i${salt}${hash}"),
            format!("argon2id${salt}"),
            format!("argon2id${salt}${hash}$"),
            format!("argon2id${salt}=${hash}"),        // padding
            format!("argon2id${salt}${hash}="),        // padding
            format!("argon2id${salt}${}", &hash[1..]), // short hash
            format!("argon2id${}${hash}", &salt[2..]), // short salt
            format!("argon2id${salt}${hash}AAAA"),     // long hash
            format!("argon2id${salt}${}", hash.replace('/', "_")), // url alphabet
            format!("$argon2id$v=19$m=65536,t=3,p=2${salt}${hash}"), // PHC string
        ];
        // Parsing is pure and cheap; check every case, then pay for a few derivations.
        for m in &malformed {
            assert!(parse_stored(m).is_none(), "accepted {m:?}");
        }
        // A malformed record still costs exactly one derivation, like a well-formed one.
        let derivations = || DERIVATIONS_ON_THREAD.with(|n| n.get());
        for m in [&malformed[0], &malformed[3], &malformed[8], &good] {
            let before = derivations();
            assert!(!verify_client_secret(m, "cs_not it"));
            assert_eq!(derivations() - before, 1, "{m:?}");
        }
    }

    #[test]
    fn generated_secrets_have_prefix_and_256_bits() {
        let mut rng = StdRng::seed_from_u64(1);
        let cs = generate_client_secret_with_rng(&mut rng).unwrap();
        let cat = generate_admin_token_with_rng(&mut rng).unwrap();
        for (s, prefix) in [(&cs, CLIENT_SECRET_PREFIX), (&cat, ADMIN_TOKEN_PREFIX)] {
            let body = s.strip_prefix(prefix).unwrap();
            assert_eq!(body.len(), 43);
            assert_eq!(URL_SAFE_NO_PAD.decode(body).unwrap().len(), 32);
        }
        // Deterministic under a seeded RNG, distinct across calls.
        let again = generate_client_secret_with_rng(&mut StdRng::seed_from_u64(1)).unwrap();
        assert_eq!(cs, again);
        assert_ne!(
            generate_client_secret().unwrap(),
            generate_client_secret().unwrap()
        );
        assert!(generate_admin_token().unwrap().starts_with("cat_"));
    }

    #[test]
    fn cache_hit_avoids_derivation_and_failures_are_not_cached() {
        let clock = FakeClock::at_fixture_epoch();
        let c = cache(&clock);
        let (secret, stored) = kat();
        let stored = stored.as_str();
        let secret = secret.as_str();

        assert!(!c.check_cached(stored, secret), "cold cache knows nothing");
        assert!(c.verify(stored, secret));
        assert_eq!(c.derivations(), 1);
        assert!(c.check_cached(stored, secret));
        assert!(!c.check_cached(stored, "cs_wrong"));
        assert!(c.verify(stored, secret));
        assert!(c.verify(stored, secret));
        assert_eq!(c.derivations(), 1, "hits must not derive");

        // A wrong secret misses, derives, fails, and is not remembered.
        assert!(!c.verify(stored, "cs_wrong"));
        assert!(!c.verify(stored, "cs_wrong"));
        assert_eq!(c.derivations(), 3);
        // ...and did not evict the good entry.
        assert!(c.verify(stored, secret));
        assert_eq!(c.derivations(), 3);
        assert_eq!(c.len(), 1);
    }

    #[test]
    fn cache_entries_expire_after_one_hour() {
        let clock = FakeClock::at_fixture_epoch();
        let c = cache(&clock);
        let (secret, stored) = kat();
        let stored = stored.as_str();
        let secret = secret.as_str();
        assert!(c.verify(stored, secret));
        clock.advance(Duration::seconds(VERIFIED_SECRET_TTL_SECS - 1));
        assert!(c.verify(stored, secret));
        assert_eq!(c.derivations(), 1, "still fresh at 59:59");
        clock.advance(Duration::seconds(1));
        assert!(c.verify(stored, secret));
        assert_eq!(c.derivations(), 2, "expired at 1 h, re-derived");
        // The re-derivation restarted the hour.
        clock.advance(Duration::seconds(10));
        assert!(c.verify(stored, secret));
        assert_eq!(c.derivations(), 2);
        // A clock that jumps backwards makes the entry stale rather than immortal.
        clock.advance(Duration::seconds(-60));
        assert!(c.verify(stored, secret));
        assert_eq!(c.derivations(), 3);
    }

    #[test]
    fn cache_is_bounded() {
        // Exercise the bound through `remember` directly: filling 8192 entries through real
        // derivations would take minutes.
        let clock = FakeClock::at_fixture_epoch();
        let c = VerifiedSecretCache::with_limits(
            Arc::new(clock.clone()),
            Duration::seconds(VERIFIED_SECRET_TTL_SECS),
            3,
        );
        for i in 0..3 {
            c.remember(&format!("stored-{i}"), [i; 32]);
            clock.advance(Duration::seconds(1));
        }
        assert_eq!(c.len(), 3);
        c.remember("stored-3", [3; 32]);
        assert_eq!(c.len(), 3, "bounded");
        let keys: Vec<String> = c.lock().keys().cloned().collect();
        assert!(!keys.contains(&"stored-0".to_owned()), "oldest evicted");
        // Refreshing an existing key does not evict anything.
        c.remember("stored-3", [3; 32]);
        assert_eq!(c.len(), 3);
        // Expired entries go first, all at once.
        clock.advance(Duration::seconds(VERIFIED_SECRET_TTL_SECS));
        c.remember("stored-4", [4; 32]);
        assert_eq!(c.len(), 1);

        // The reference bound, without derivations.
        let big = VerifiedSecretCache::new(Arc::new(clock.clone()));
        for i in 0..(VERIFIED_SECRET_CACHE_CAPACITY + 100) {
            big.remember(&format!("stored-{i}"), [0; 32]);
        }
        assert_eq!(big.len(), VERIFIED_SECRET_CACHE_CAPACITY);
    }

    #[test]
    fn cache_miss_on_unknown_stored_hash_and_disabled_cache() {
        let clock = FakeClock::at_fixture_epoch();
        let off = VerifiedSecretCache::with_limits(Arc::new(clock), Duration::hours(1), 0);
        off.remember("x", [0; 32]);
        assert!(off.is_empty());
        assert!(format!("{off:?}").contains("capacity: 0"));
    }
}
