//! The STS's settings (reference `sts.md` §9), from the environment.

use caracal_core::streams::relay::RelayConfig;
use std::path::PathBuf;
use std::time::Duration;

use caracal_core::audit::AuditHmacKey;
use caracal_core::exchange::envelope::GatewayKey;
use caracal_core::exchange::ratelimit::DEFAULT_MINT_LIMIT_PER_MIN;
use caracal_core::exchange::{DEFAULT_CONTROL_AUDIENCE, DEFAULT_SECRET_VERIFY_CONCURRENCY};
use caracal_core::policy::cache::poll_interval;
use caracal_core::secrets::envelope::Keyring;
use caracal_service::config::{Secret, parse_hex_key};
use caracal_service::{ConfigError, Env, Mode};

/// The only port the reference STS listens on.
pub const PORT: u16 = 8080;
/// Default `AUDIT_REPLAY_DIR`.
pub const DEFAULT_REPLAY_DIR: &str = "/var/lib/caracal/audit-replay";

/// Everything the STS reads from its environment.
#[derive(Clone)]
pub struct StsSettings {
    /// `CARACAL_MODE` (default `stable`).
    pub mode: Mode,
    /// `PORT` (must be 8080 when set).
    pub port: u16,
    /// `ISSUER_URL`: absolute http(s) URL with a host, no userinfo, query or fragment.
    pub issuer: String,
    /// `SECRET_STORE_KEK` (+ `_PREVIOUS`).
    pub keyring: std::sync::Arc<Keyring>,
    /// `GATEWAY_STS_HMAC_KEY` (required in published modes).
    pub gateway_key: Option<GatewayKey>,
    /// `STREAMS_HMAC_KEY` (required in published modes).
    pub streams_key: Option<Vec<u8>>,
    /// `AUDIT_HMAC_KEY` (required in published modes).
    pub audit_key: Option<AuditHmacKey>,
    /// `AUDIT_REPLAY_DIR`.
    pub replay_dir: PathBuf,
    /// `OPA_POLL_SECONDS` (60, 1–300).
    pub poll_interval: Duration,
    /// `STS_MINT_RATE_LIMIT_PER_MIN` (1000).
    pub mint_limit_per_min: u32,
    /// `STS_SECRET_VERIFY_CONCURRENCY` (2).
    pub secret_verify_concurrency: usize,
    /// `STS_ADMIN_TOKEN`: enables the rotate endpoint.
    pub admin_token: Option<Secret>,
    /// `METRICS_BEARER`.
    pub metrics_bearer: Option<Secret>,
    /// `CONTROL_AUDIENCE`.
    pub control_audience: String,
    /// `DATABASE_URL`; unset: in-memory stores (dev only).
    pub database_url: Option<Secret>,
    /// `REDIS_URL`; unset: in-memory streams and keys (dev only).
    pub redis_url: Option<Secret>,
    /// `HOSTNAME` (consumer names, and the per-replica groups `opa-engine:<host>` and
    /// `sts-keys:<host>`, so it must differ between replicas).
    pub hostname: String,
    /// The outbox relay's idle interval (default [`RelayConfig::new`]'s; not an environment
    /// setting: tests and drills lengthen it to hold rows unpublished).
    pub relay_interval: Duration,
}

impl std::fmt::Debug for StsSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StsSettings")
            .field("mode", &self.mode)
            .field("port", &self.port)
            .field("issuer", &self.issuer)
            .field("gateway_key", &self.gateway_key.is_some())
            .field("streams_key", &self.streams_key.is_some())
            .field("audit_key", &self.audit_key.is_some())
            .field("replay_dir", &self.replay_dir)
            .field("database_url", &self.database_url.is_some())
            .field("redis_url", &self.redis_url.is_some())
            .finish_non_exhaustive()
    }
}

fn truthy(value: Option<String>) -> bool {
    matches!(
        value.map(|v| v.trim().to_ascii_lowercase()).as_deref(),
        Some("true" | "1" | "yes")
    )
}

/// `ISSUER_URL` rules (§9): absolute http/https with a host; no userinfo, query or fragment.
pub fn check_issuer(value: &str) -> Result<(), ConfigError> {
    let bad = |why: &str| Err(ConfigError::invalid("ISSUER_URL", why.to_owned()));
    let rest = match value.split_once("://") {
        Some(("http" | "https", rest)) => rest,
        _ => return bad("must be an absolute http or https URL"),
    };
    if value.contains('?') || value.contains('#') {
        return bad("must not carry a query or fragment");
    }
    let authority = rest.split('/').next().unwrap_or("");
    if authority.contains('@') {
        return bad("must not carry userinfo");
    }
    let host = authority.rsplit_once(':').map_or(authority, |(h, _)| h);
    if host.is_empty() {
        return bad("must name a host");
    }
    Ok(())
}

impl StsSettings {
    /// Development settings on in-memory backends: `issuer`, a fresh random KEK, no keys.
    pub fn dev(issuer: impl Into<String>, replay_dir: PathBuf) -> Result<Self, ConfigError> {
        let kek = caracal_core::secrets::envelope::Kek::generate_hex()
            .map_err(|e| ConfigError::invalid("SECRET_STORE_KEK", e.to_string()))?;
        let keyring = Keyring::from_hex(&kek, None)
            .map_err(|e| ConfigError::invalid("SECRET_STORE_KEK", e.to_string()))?;
        Ok(Self {
            mode: Mode::Dev,
            port: PORT,
            issuer: issuer.into(),
            keyring: std::sync::Arc::new(keyring),
            gateway_key: None,
            streams_key: None,
            audit_key: None,
            replay_dir,
            poll_interval: Duration::from_secs(60),
            mint_limit_per_min: DEFAULT_MINT_LIMIT_PER_MIN,
            secret_verify_concurrency: DEFAULT_SECRET_VERIFY_CONCURRENCY,
            admin_token: None,
            metrics_bearer: None,
            control_audience: DEFAULT_CONTROL_AUDIENCE.to_owned(),
            database_url: None,
            redis_url: None,
            hostname: "sts-0".to_owned(),
            relay_interval: RelayConfig::new("").interval,
        })
    }

    /// Read and check the settings (§9); any violation refuses to start.
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let mode = env.mode()?;
        let port: u16 = env.parse_or("PORT", PORT)?;
        if port != PORT {
            return Err(ConfigError::invalid("PORT", format!("must be {PORT}")));
        }
        let issuer = env.required("ISSUER_URL")?;
        check_issuer(&issuer)?;
        let kek = env.required("SECRET_STORE_KEK")?;
        let previous = env.var("SECRET_STORE_KEK_PREVIOUS")?;
        let keyring = Keyring::from_hex(&kek, previous.as_deref())
            .map_err(|e| ConfigError::invalid("SECRET_STORE_KEK", e.to_string()))?;
        let gateway_key = env
            .var("GATEWAY_STS_HMAC_KEY")?
            .map(|hex| {
                let bytes = parse_hex_key("GATEWAY_STS_HMAC_KEY", &hex)?;
                GatewayKey::from_bytes(&bytes)
                    .map_err(|e| ConfigError::invalid("GATEWAY_STS_HMAC_KEY", e.to_string()))
            })
            .transpose()?;
        let streams_key = env
            .var("STREAMS_HMAC_KEY")?
            .map(|hex| parse_hex_key("STREAMS_HMAC_KEY", &hex))
            .transpose()?;
        let audit_key = env
            .var("AUDIT_HMAC_KEY")?
            .map(|hex| {
                let bytes = parse_hex_key("AUDIT_HMAC_KEY", &hex)?;
                AuditHmacKey::from_bytes(bytes)
                    .map_err(|e| ConfigError::invalid("AUDIT_HMAC_KEY", e.to_string()))
            })
            .transpose()?;
        let poll = poll_interval(env.raw("OPA_POLL_SECONDS").as_deref())
            .map_err(|e| ConfigError::invalid("OPA_POLL_SECONDS", e.to_string()))?;
        let positive = |name: &str, default: u64| -> Result<u64, ConfigError> {
            let v: u64 = env.parse_or(name, default)?;
            if v == 0 {
                return Err(ConfigError::invalid(name, "must be a positive integer"));
            }
            Ok(v)
        };
        let mint_limit = u32::try_from(positive(
            "STS_MINT_RATE_LIMIT_PER_MIN",
            u64::from(DEFAULT_MINT_LIMIT_PER_MIN),
        )?)
        .map_err(|_| ConfigError::invalid("STS_MINT_RATE_LIMIT_PER_MIN", "too large"))?;
        let concurrency = usize::try_from(positive(
            "STS_SECRET_VERIFY_CONCURRENCY",
            u64::try_from(DEFAULT_SECRET_VERIFY_CONCURRENCY).unwrap_or(2),
        )?)
        .map_err(|_| ConfigError::invalid("STS_SECRET_VERIFY_CONCURRENCY", "too large"))?;
        let secret = |name: &str| env.var(name).map(|v| v.map(Secret::new));
        let settings = Self {
            mode,
            port,
            issuer,
            keyring: std::sync::Arc::new(keyring),
            gateway_key,
            streams_key,
            audit_key,
            replay_dir: env
                .raw("AUDIT_REPLAY_DIR")
                .map_or_else(|| PathBuf::from(DEFAULT_REPLAY_DIR), PathBuf::from),
            poll_interval: poll,
            mint_limit_per_min: mint_limit,
            secret_verify_concurrency: concurrency,
            admin_token: secret("STS_ADMIN_TOKEN")?,
            metrics_bearer: secret("METRICS_BEARER")?,
            control_audience: env
                .raw("CONTROL_AUDIENCE")
                .unwrap_or_else(|| DEFAULT_CONTROL_AUDIENCE.to_owned()),
            database_url: secret("DATABASE_URL")?,
            redis_url: secret("REDIS_URL")?,
            hostname: env.raw("HOSTNAME").unwrap_or_else(|| "sts".to_owned()),
            relay_interval: RelayConfig::new("").interval,
        };
        if mode.is_published() {
            for name in ["INSECURE_STS", "INSECURE_HTTP"] {
                if truthy(env.raw(name)) {
                    return Err(ConfigError::invalid(
                        name,
                        format!("is not allowed when CARACAL_MODE is {mode}"),
                    ));
                }
            }
        }
        settings.check()?;
        Ok(settings)
    }

    /// The published-mode refusals.
    pub fn check(&self) -> Result<(), ConfigError> {
        self.mode.require(&[
            ("GATEWAY_STS_HMAC_KEY", self.gateway_key.is_none()),
            ("STREAMS_HMAC_KEY", self.streams_key.is_none()),
            ("AUDIT_HMAC_KEY", self.audit_key.is_none()),
            ("DATABASE_URL", self.database_url.is_none()),
            ("REDIS_URL", self.redis_url.is_none()),
            ("METRICS_BEARER", self.metrics_bearer.is_none()),
        ])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEK: &str = "5f1c9a7e3b2d4f6081a3c5e7092b4d6f8a1c3e5b7d9f0b2d4f6a8c0e2b4d6f81";
    const HMAC: &str = "6a0f7c2e9b1d4f3a8c5e7b9d1f2a4c6e8b0d2f4a6c8e0b2d4f6a8c0e2b4d6f8a";

    fn published() -> Vec<(&'static str, &'static str)> {
        vec![
            ("CARACAL_MODE", "stable"),
            ("ISSUER_URL", "https://sts.example"),
            ("SECRET_STORE_KEK", KEK),
            ("GATEWAY_STS_HMAC_KEY", HMAC),
            ("STREAMS_HMAC_KEY", HMAC),
            ("AUDIT_HMAC_KEY", HMAC),
            ("DATABASE_URL", "postgres://localhost/caracal"),
            ("REDIS_URL", "redis://localhost"),
            ("METRICS_BEARER", "metrics-bearer-token"),
        ]
    }

    fn with(
        extra: &[(&'static str, &'static str)],
        without: &[&str],
    ) -> Result<StsSettings, ConfigError> {
        let mut pairs: Vec<_> = published()
            .into_iter()
            .filter(|(k, _)| !without.contains(k))
            .collect();
        pairs.retain(|(k, _)| !extra.iter().any(|(e, _)| e == k));
        pairs.extend_from_slice(extra);
        StsSettings::from_env(&Env::from_pairs(pairs))
    }

    #[test]
    fn a_complete_published_configuration_starts() {
        let s = with(&[], &[]).unwrap();
        assert_eq!(s.port, PORT);
        assert_eq!(s.poll_interval, Duration::from_secs(60));
        assert_eq!(s.mint_limit_per_min, 1000);
        assert_eq!(s.replay_dir, PathBuf::from(DEFAULT_REPLAY_DIR));
        // Debug never shows key material.
        assert!(!format!("{s:?}").contains(HMAC));
    }

    /// Conformance check 58: each of these refuses to start.
    #[test]
    fn published_mode_refusals() {
        for missing in [
            "STREAMS_HMAC_KEY",
            "GATEWAY_STS_HMAC_KEY",
            "AUDIT_HMAC_KEY",
            "DATABASE_URL",
            "REDIS_URL",
            "METRICS_BEARER",
        ] {
            assert!(with(&[], &[missing]).is_err(), "{missing}");
        }
        assert!(with(&[("INSECURE_HTTP", "1")], &[]).is_err());
        assert!(with(&[("INSECURE_STS", "true")], &[]).is_err());
        assert!(with(&[("PORT", "9000")], &[]).is_err());
        assert!(with(&[("ISSUER_URL", "https://sts.example/?x=1")], &[]).is_err());
        assert!(with(&[("ISSUER_URL", "https://user@sts.example")], &[]).is_err());
        assert!(with(&[("ISSUER_URL", "ftp://sts.example")], &[]).is_err());
        assert!(with(&[("OPA_POLL_SECONDS", "301")], &[]).is_err());
        assert!(with(&[("STS_MINT_RATE_LIMIT_PER_MIN", "0")], &[]).is_err());
        assert!(with(&[("SECRET_STORE_KEK", "00")], &[]).is_err());
        assert!(with(&[], &["SECRET_STORE_KEK"]).is_err());
    }

    #[test]
    fn dev_mode_runs_without_keys_or_backends() {
        let s = StsSettings::from_env(&Env::from_pairs([
            ("CARACAL_MODE", "dev"),
            ("ISSUER_URL", "http://localhost:8080"),
            ("SECRET_STORE_KEK", KEK),
            ("INSECURE_HTTP", "1"),
        ]))
        .unwrap();
        assert!(s.gateway_key.is_none() && s.database_url.is_none());
    }
}
