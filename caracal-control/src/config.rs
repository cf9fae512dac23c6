//! Settings of the Admin API ([`AdminSettings`]) and of the `caracal-control` binary
//! ([`ControlSettings`]) from the environment.
//!
//! | Setting | |
//! |---|---|
//! | `PORT` / `ADMIN_PORT` | Admin API listen port, default 3000 (`ADMIN_PORT` wins) |
//! | `COORDINATOR_PORT` | Coordinator listen port, default 4000 |
//! | `SECRET_STORE_KEK` (+ `_PREVIOUS`, `_FILE`) | the KEK that seals provider secrets and zone signing keys (required) |
//! | `CARACAL_BOOTSTRAP_ADMIN_TOKEN` (+ `_FILE`) | an optional global admin token from the environment |
//! | `ADMIN_AUDIT_HMAC_KEY` (fallback `AUDIT_HMAC_KEY`) | hex, ≥ 32 bytes: signs the admin audit chain; required in published modes, generated per process in dev |
//! | `ISSUER_URL` | the STS issuer whose session mandates the Coordinator accepts (required) |
//! | `AGENT_COORDINATOR_SCOPE` | scope a mandate must carry (default `agent:lifecycle`) |
//! | `CARACAL_COORDINATOR_TOKEN` | the Coordinator operator token (optional) |
//! | `IDEMPOTENCY_HMAC_KEY` (+ `_PREVIOUS`) | hex, ≥ 32 bytes: keys `Idempotency-Key` receipts; required in published modes |
//! | `STREAMS_HMAC_KEY` | hex, ≥ 32 bytes: the outbox relay's `_sig`; required in published modes |
//! | `DATABASE_URL`, `REDIS_URL` | Postgres and Redis; required in published modes, in memory in dev when unset |
//! | `HOSTNAME` | consumer names of the relay |
//!
//! The bootstrap token is the way in before any admin token row exists: it acts as a global
//! token with every capability (the reference exempts it from the approve-capability rule).

use std::sync::Arc;

use caracal_core::audit::AuditHmacKey;
use caracal_core::secrets::Keyring;
use caracal_service::config::{Secret, parse_hex_key};
use caracal_service::{ConfigError, Env, Mode};

/// The Admin API's default port.
pub const PORT: u16 = 3000;

/// The shortest bootstrap token accepted: a guessable bootstrap token would open every zone.
pub const MIN_BOOTSTRAP_TOKEN_LEN: usize = 32;

/// Settings of the Admin API.
#[derive(Clone)]
pub struct AdminSettings {
    /// Listen port.
    pub port: u16,
    /// The KEK ring that seals provider secret documents.
    pub keyring: Arc<Keyring>,
    /// `CARACAL_BOOTSTRAP_ADMIN_TOKEN`, if set.
    pub bootstrap_token: Option<Secret>,
}

impl std::fmt::Debug for AdminSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminSettings")
            .field("port", &self.port)
            .field("bootstrap_token", &self.bootstrap_token.is_some())
            .finish_non_exhaustive()
    }
}

impl AdminSettings {
    /// Read and check the settings; any violation refuses to start.
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let port: u16 = env.parse_or("PORT", PORT)?;
        let kek = env.required("SECRET_STORE_KEK")?;
        let previous = env.var("SECRET_STORE_KEK_PREVIOUS")?;
        let keyring = Keyring::from_hex(&kek, previous.as_deref())
            .map_err(|e| ConfigError::invalid("SECRET_STORE_KEK", e.to_string()))?;
        let bootstrap_token = env
            .var("CARACAL_BOOTSTRAP_ADMIN_TOKEN")?
            .map(|t| {
                if t.len() < MIN_BOOTSTRAP_TOKEN_LEN {
                    Err(ConfigError::invalid(
                        "CARACAL_BOOTSTRAP_ADMIN_TOKEN",
                        format!("must be at least {MIN_BOOTSTRAP_TOKEN_LEN} characters"),
                    ))
                } else {
                    Ok(Secret::new(t))
                }
            })
            .transpose()?;
        Ok(Self {
            port,
            keyring: Arc::new(keyring),
            bootstrap_token,
        })
    }
}

/// The Coordinator's default port.
pub const COORDINATOR_PORT: u16 = 4000;

/// Everything the `caracal-control` binary reads from its environment.
#[derive(Clone)]
pub struct ControlSettings {
    /// `CARACAL_MODE` (default `stable`).
    pub mode: Mode,
    /// The Admin API's settings (port from `ADMIN_PORT`, else `PORT`).
    pub admin: AdminSettings,
    /// `COORDINATOR_PORT`.
    pub coordinator_port: u16,
    /// `ADMIN_AUDIT_HMAC_KEY` (fallback `AUDIT_HMAC_KEY`); `None` only in dev.
    pub audit_key: Option<AuditHmacKey>,
    /// `ISSUER_URL`.
    pub issuer: String,
    /// `AGENT_COORDINATOR_SCOPE`.
    pub coordinator_scope: String,
    /// `CARACAL_COORDINATOR_TOKEN`.
    pub operator_token: Option<Secret>,
    /// `IDEMPOTENCY_HMAC_KEY`; `None` only in dev (a per-process key is generated).
    pub idempotency_key: Option<Vec<u8>>,
    /// `IDEMPOTENCY_HMAC_KEY_PREVIOUS`.
    pub idempotency_key_previous: Option<Vec<u8>>,
    /// `STREAMS_HMAC_KEY`; `None` only in dev (unsigned stream messages).
    pub streams_key: Option<Vec<u8>>,
    /// `DATABASE_URL`; unset: in-memory stores (dev only).
    pub database_url: Option<Secret>,
    /// `REDIS_URL`; unset: in-memory streams (dev only).
    pub redis_url: Option<Secret>,
    /// `HOSTNAME`.
    pub hostname: String,
}

impl std::fmt::Debug for ControlSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControlSettings")
            .field("mode", &self.mode)
            .field("admin", &self.admin)
            .field("coordinator_port", &self.coordinator_port)
            .field("audit_key", &self.audit_key.is_some())
            .field("issuer", &self.issuer)
            .field("idempotency_key", &self.idempotency_key.is_some())
            .field("streams_key", &self.streams_key.is_some())
            .field("database_url", &self.database_url.is_some())
            .field("redis_url", &self.redis_url.is_some())
            .finish_non_exhaustive()
    }
}

fn hex_key(env: &Env, name: &str) -> Result<Option<Vec<u8>>, ConfigError> {
    env.var(name)?.map(|h| parse_hex_key(name, &h)).transpose()
}

impl ControlSettings {
    /// Read and check the settings; any violation refuses to start.
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let mode = env.mode()?;
        let mut admin = AdminSettings::from_env(env)?;
        if env.raw("ADMIN_PORT").is_some() {
            admin.port = env.parse_or("ADMIN_PORT", PORT)?;
        }
        let coordinator_port = env.parse_or("COORDINATOR_PORT", COORDINATOR_PORT)?;
        let audit_name = if env.var("ADMIN_AUDIT_HMAC_KEY")?.is_some() {
            "ADMIN_AUDIT_HMAC_KEY"
        } else {
            "AUDIT_HMAC_KEY"
        };
        let audit_key = hex_key(env, audit_name)?
            .map(|bytes| {
                AuditHmacKey::from_bytes(bytes)
                    .map_err(|e| ConfigError::invalid(audit_name, e.to_string()))
            })
            .transpose()?;
        let issuer = env.required("ISSUER_URL")?;
        if !(issuer.starts_with("https://") || issuer.starts_with("http://")) {
            return Err(ConfigError::invalid(
                "ISSUER_URL",
                "must be an absolute http or https URL",
            ));
        }
        let secret = |name: &str| env.var(name).map(|v| v.map(Secret::new));
        let settings = Self {
            mode,
            admin,
            coordinator_port,
            audit_key,
            issuer,
            coordinator_scope: env
                .raw("AGENT_COORDINATOR_SCOPE")
                .unwrap_or_else(|| crate::coordinator::DEFAULT_COORDINATOR_SCOPE.to_owned()),
            operator_token: secret("CARACAL_COORDINATOR_TOKEN")?,
            idempotency_key: hex_key(env, "IDEMPOTENCY_HMAC_KEY")?,
            idempotency_key_previous: hex_key(env, "IDEMPOTENCY_HMAC_KEY_PREVIOUS")?,
            streams_key: hex_key(env, "STREAMS_HMAC_KEY")?,
            database_url: secret("DATABASE_URL")?,
            redis_url: secret("REDIS_URL")?,
            hostname: env.raw("HOSTNAME").unwrap_or_else(|| "control".to_owned()),
        };
        settings.check()?;
        Ok(settings)
    }

    /// The published-mode refusals: every key and both backends must be configured (dev
    /// falls back to generated keys and in-memory backends).
    pub fn check(&self) -> Result<(), ConfigError> {
        self.mode.require(&[
            ("ADMIN_AUDIT_HMAC_KEY", self.audit_key.is_none()),
            ("IDEMPOTENCY_HMAC_KEY", self.idempotency_key.is_none()),
            ("STREAMS_HMAC_KEY", self.streams_key.is_none()),
            ("DATABASE_URL", self.database_url.is_none()),
            ("REDIS_URL", self.redis_url.is_none()),
        ])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEK: &str = "8f2a6c1e9b3d4f5a7c8e0b1d2f3a4c5e6f7a8b9c0d1e2f3a4b5c6d7e8f9a0b1c";

    #[test]
    fn reads_kek_and_bootstrap() {
        let token = "t".repeat(40);
        let env = Env::from_pairs([
            ("SECRET_STORE_KEK", KEK),
            ("CARACAL_BOOTSTRAP_ADMIN_TOKEN", token.as_str()),
        ]);
        let s = AdminSettings::from_env(&env).unwrap();
        assert_eq!(s.port, PORT);
        assert_eq!(s.bootstrap_token.unwrap().expose(), token);
        assert!(AdminSettings::from_env(&Env::from_pairs([])).is_err());
        let short = Env::from_pairs([
            ("SECRET_STORE_KEK", KEK),
            ("CARACAL_BOOTSTRAP_ADMIN_TOKEN", "short"),
        ]);
        let err = AdminSettings::from_env(&short).unwrap_err().to_string();
        assert!(!err.contains("short"), "no value in the message");
    }

    const HEX: &str = "6a0f7c2e9b1d4f3a8c5e7b9d1f2a4c6e8b0d2f4a6c8e0b2d4f6a8c0e2b4d6f8a";

    #[test]
    fn control_settings_refuse_published_without_keys() {
        let base = [
            ("SECRET_STORE_KEK", KEK),
            ("ISSUER_URL", "https://sts.example"),
        ];
        let dev: Vec<_> = base.into_iter().chain([("CARACAL_MODE", "dev")]).collect();
        let s = ControlSettings::from_env(&Env::from_pairs(dev)).unwrap();
        assert!(s.audit_key.is_none());
        assert_eq!((s.admin.port, s.coordinator_port), (PORT, COORDINATOR_PORT));
        let err = ControlSettings::from_env(&Env::from_pairs(base))
            .unwrap_err()
            .to_string();
        assert!(err.contains("ADMIN_AUDIT_HMAC_KEY"), "{err}");
        let full: Vec<_> = base
            .into_iter()
            .chain([
                ("AUDIT_HMAC_KEY", HEX),
                ("IDEMPOTENCY_HMAC_KEY", HEX),
                ("STREAMS_HMAC_KEY", HEX),
                ("DATABASE_URL", "postgres://x@localhost/db"),
                ("REDIS_URL", "redis://localhost"),
                ("ADMIN_PORT", "3100"),
                ("COORDINATOR_PORT", "4100"),
            ])
            .collect();
        let s = ControlSettings::from_env(&Env::from_pairs(full)).unwrap();
        assert!(s.audit_key.is_some(), "AUDIT_HMAC_KEY is the fallback");
        assert_eq!((s.admin.port, s.coordinator_port), (3100, 4100));
        let short: Vec<_> = base
            .into_iter()
            .chain([("CARACAL_MODE", "dev"), ("ADMIN_AUDIT_HMAC_KEY", "abcd")])
            .collect();
        assert!(ControlSettings::from_env(&Env::from_pairs(short)).is_err());
    }
}
