//! Secret custody: client-secret hashing and the CSS1 envelope sealing under a KEK.
//!
//! Caracal's promise is *authority, not credentials*: an agent never holds an upstream API key.
//! The credentials the Gateway injects (provider API keys, bearer tokens, OAuth tokens), the
//! per-zone mandate signing keys and the re-revealable copies of application client secrets all
//! live in the database **sealed**, never in the clear, so a database dump alone yields nothing
//! usable. This module holds the two primitives that custody rests on:
//!
//! - [`client_secret`]: application client secrets and admin tokens are generated here and
//!   stored only as Argon2id hashes (`argon2id$<salt>$<hash>`, the reference's format, so rows
//!   migrate unchanged). Argon2id at 64 MiB costs about 100 ms, so the STS keeps the reference's
//!   verified-secret cache ([`VerifiedSecretCache`]) and the derivation runs once per secret per
//!   hour, never on the hot path.
//! - [`envelope`]: the CSS1 envelope, byte-compatible with the reference: a fresh random data
//!   key (DEK) per value, wrapped under the master key (KEK) from `SECRET_STORE_KEK`, and the
//!   value sealed under the DEK with an AAD naming its *purpose* (its logical location), so a
//!   blob copied to another row or column refuses to open. A [`Keyring`] holds the current KEK
//!   and, during a rotation, the previous one; envelopes route to their KEK by an 8-byte id.
//!
//! ## Invariants
//!
//! - Secret material (plaintexts, keys, presented secrets) never appears in an error message,
//!   a `Debug` rendering or a log line. [`SecretError`] carries only the *kind* of failure, and
//!   [`Kek`]'s `Debug` shows only its public id.
//! - Every comparison of a secret or a derived key is constant time.
//! - Nothing here panics on input: malformed hashes verify as `false`, malformed envelopes open
//!   as a typed error.
//! - Fail closed: when randomness is unavailable, sealing and hashing return an error rather
//!   than produce weak output.

pub mod client_secret;
pub mod envelope;

pub use client_secret::{
    ADMIN_TOKEN_PREFIX, CLIENT_SECRET_PREFIX, VerifiedSecretCache, generate_admin_token,
    generate_admin_token_with_rng, generate_client_secret, generate_client_secret_with_rng,
    hash_client_secret, hash_client_secret_with_rng, verify_client_secret,
};
pub use envelope::{
    Kek, KekId, Keyring, PROVIDER_ACCESS_TOKEN_AAD, PROVIDER_REFRESH_TOKEN_AAD,
    ZONE_SIGNING_KEY_AAD, envelope_kek_id, provider_secret_config_ref, weak_kek_reason,
};

/// Why a KEK was refused as too weak to protect the Secret Store.
///
/// The messages mirror the reference's startup errors. See [`Kek`] for the exact rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum WeakKekReason {
    /// All 32 bytes are zero.
    AllZeros,
    /// All 32 bytes are the same non-zero byte.
    RepeatedByte,
    /// Each byte is the previous one plus one, or minus one (modulo 256).
    Sequential,
    /// The key is a short block (2, 4, 8 or 16 bytes) repeated to fill 32 bytes.
    RepeatingPattern,
}

impl std::fmt::Display for WeakKekReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::AllZeros => "must not be all zeros",
            Self::RepeatedByte => "must not repeat the same byte",
            Self::Sequential => "must not use a sequential byte pattern",
            Self::RepeatingPattern => "must not use a repeating byte pattern",
        })
    }
}

/// An error of the secrets module.
///
/// No variant carries secret material: each names only the kind of failure, so an error can be
/// logged or rendered without leaking a key, a plaintext or a presented secret. The envelope
/// variants follow the order in which `open` checks an envelope.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SecretError {
    /// A KEK was not exactly 64 hexadecimal characters (32 bytes).
    #[error("KEK must be 64 hex characters (32 bytes)")]
    KekFormat,
    /// A KEK had the right length but a pattern too weak to be a random key.
    #[error("KEK {0}")]
    WeakKek(WeakKekReason),
    /// A purpose (AAD) was empty; every sealed value must be bound to its location.
    #[error("secret envelope purpose must not be empty")]
    EmptyPurpose,
    /// The envelope is shorter than the smallest possible CSS1 envelope (truncated or not one).
    #[error("secret envelope too short")]
    EnvelopeTooShort,
    /// The envelope does not start with the `CSS1` magic.
    #[error("secret envelope has unknown format")]
    UnknownFormat,
    /// The envelope names a KEK id that is neither the current nor the previous KEK.
    #[error("secret envelope was sealed under an unknown KEK")]
    UnknownKek,
    /// The wrapped data key failed authentication under the routed KEK (tampered header).
    #[error("secret envelope data key rejected")]
    DataKeyRejected,
    /// The value failed authentication: the purpose (AAD) is wrong, or the value block was
    /// tampered with or truncated. The two cannot be told apart, by design of the AEAD.
    #[error("secret envelope value rejected")]
    ValueRejected,
    /// The value is too large to seal.
    #[error("plaintext too large to seal")]
    PlaintextTooLarge,
    /// The random number generator failed; nothing was sealed or hashed.
    #[error("random number generator unavailable")]
    Rng,
    /// The Argon2id derivation failed (only possible with invalid parameters).
    #[error("password hashing failed")]
    Hashing,
}
