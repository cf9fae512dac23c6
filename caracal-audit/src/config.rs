//! The Audit service's settings (reference §2.11), from the environment.

use std::time::Duration;

use caracal_core::audit::AuditHmacKey;
use caracal_core::audit::ingest::{DEFAULT_MAX_DELIVERIES, IngestConfig};
use caracal_service::config::{Secret, parse_hex_key};
use caracal_service::{ConfigError, Env, Mode};

use crate::export::ExportSettings;
use crate::retention::RetentionSettings;
use crate::sweep::SweepSettings;
use caracal_core::backend::postgres::store::DEFAULT_RETENTION_DAYS;

/// The reference's port.
pub const DEFAULT_PORT: u16 = 9090;
/// The consumer name when `HOSTNAME` is unset.
pub const DEFAULT_CONSUMER: &str = "audit-worker-0";

/// Everything the Audit service reads from its environment.
#[derive(Debug, Clone)]
pub struct AuditConfig {
    /// `CARACAL_MODE` (default `stable`).
    pub mode: Mode,
    /// `PORT` (default 9090).
    pub port: u16,
    /// `AUDIT_HMAC_KEY` (or `_FILE`): payload `sig`, chain HMACs and checkpoints. Required in
    /// published modes.
    pub hmac_key: Option<AuditHmacKey>,
    /// `AUDIT_ADMIN_TOKEN` (or `_FILE`): enables the admin endpoints.
    pub admin_token: Option<Secret>,
    /// `METRICS_BEARER` (or `_FILE`).
    pub metrics_bearer: Option<Secret>,
    /// `DATABASE_URL` (or `_FILE`); unset: the in-memory ledger (dev only).
    pub database_url: Option<Secret>,
    /// `REDIS_URL` (or `_FILE`); unset: in-memory streams (dev only).
    pub redis_url: Option<Secret>,
    /// `HOSTNAME`: the stable consumer name (default `audit-worker-0`).
    pub consumer: String,
    /// `AUDIT_MAX_DELIVERIES` (8), `AUDIT_CHECKPOINT_EVERY` (1000), `AUDIT_CHECKPOINT_SECS` (60).
    pub ingest: IngestConfig,
    /// `AUDIT_CLAIM_IDLE_SECS` (30): reaper idle threshold and interval.
    pub claim_idle: Duration,
    /// `AUDIT_READY_DLQ_MAX` (0 = off).
    pub ready_dlq_max: u64,
    /// `AUDIT_READY_LAG_MAX` (0 = off).
    pub ready_lag_max: u64,
    /// `AUDIT_READY_PEL_OLDEST_SECS_MAX` (0 = off).
    pub ready_pel_oldest_secs_max: u64,
    /// `AUDIT_POLL_SECS` (30): how often the DLQ size, lag and oldest pending age are read.
    pub poll_interval: Duration,
    /// `AUDIT_RETENTION_DAYS` (365, the ceiling of the console's value) and
    /// `AUDIT_RETENTION_INTERVAL_SECS` (21600): the leader-only partition retention.
    pub retention: RetentionSettings,
    /// `AUDIT_EXPORT_DIR` (+ `AUDIT_EXPORT_INTERVAL_SECS` 300, `AUDIT_EXPORT_SETTLE_SECS` 300):
    /// the hourly NDJSON exporter; off when the directory is unset.
    pub export: Option<ExportSettings>,
    /// `AUDIT_VERIFY_INTERVAL_SECS` (300), `AUDIT_VERIFY_FULL_SECS` (86400): the tamper sweep.
    pub sweep: SweepSettings,
}

impl AuditConfig {
    /// Development defaults: dev mode, no key, in-memory backends.
    pub fn dev() -> Self {
        Self {
            mode: Mode::Dev,
            port: DEFAULT_PORT,
            hmac_key: None,
            admin_token: None,
            metrics_bearer: None,
            database_url: None,
            redis_url: None,
            consumer: DEFAULT_CONSUMER.to_owned(),
            ingest: IngestConfig::default(),
            claim_idle: Duration::from_secs(30),
            ready_dlq_max: 0,
            ready_lag_max: 0,
            ready_pel_oldest_secs_max: 0,
            poll_interval: Duration::from_secs(30),
            retention: RetentionSettings::default(),
            export: None,
            sweep: SweepSettings::default(),
        }
    }

    /// Read and check the settings. Published modes refuse to start without `AUDIT_HMAC_KEY`,
    /// `DATABASE_URL` or `REDIS_URL`.
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let mode = env.mode()?;
        let hmac_key = env
            .var("AUDIT_HMAC_KEY")?
            .map(|hex| {
                let bytes = parse_hex_key("AUDIT_HMAC_KEY", &hex)?;
                AuditHmacKey::from_bytes(bytes)
                    .map_err(|e| ConfigError::invalid("AUDIT_HMAC_KEY", e.to_string()))
            })
            .transpose()?;
        let secret = |name: &str| env.var(name).map(|v| v.map(Secret::new));
        let config = Self {
            mode,
            port: env.parse_or("PORT", DEFAULT_PORT)?,
            hmac_key,
            admin_token: secret("AUDIT_ADMIN_TOKEN")?,
            metrics_bearer: secret("METRICS_BEARER")?,
            database_url: secret("DATABASE_URL")?,
            redis_url: secret("REDIS_URL")?,
            consumer: env
                .raw("HOSTNAME")
                .unwrap_or_else(|| DEFAULT_CONSUMER.to_owned()),
            ingest: IngestConfig {
                max_deliveries: env.parse_or("AUDIT_MAX_DELIVERIES", DEFAULT_MAX_DELIVERIES)?,
                checkpoint_every: env.parse_or("AUDIT_CHECKPOINT_EVERY", 1_000)?,
                checkpoint_interval: Duration::from_secs(
                    env.parse_or("AUDIT_CHECKPOINT_SECS", 60)?,
                ),
            },
            claim_idle: Duration::from_secs(env.parse_or("AUDIT_CLAIM_IDLE_SECS", 30)?),
            ready_dlq_max: env.parse_or("AUDIT_READY_DLQ_MAX", 0)?,
            ready_lag_max: env.parse_or("AUDIT_READY_LAG_MAX", 0)?,
            ready_pel_oldest_secs_max: env.parse_or("AUDIT_READY_PEL_OLDEST_SECS_MAX", 0)?,
            poll_interval: Duration::from_secs(env.parse_or("AUDIT_POLL_SECS", 30)?),
            retention: RetentionSettings {
                retention_days: env.parse_or("AUDIT_RETENTION_DAYS", DEFAULT_RETENTION_DAYS)?,
                interval: Duration::from_secs(
                    env.parse_or("AUDIT_RETENTION_INTERVAL_SECS", 6 * 60 * 60)?,
                ),
                ..RetentionSettings::default()
            },
            export: match env.var("AUDIT_EXPORT_DIR")? {
                Some(dir) => Some(ExportSettings {
                    interval: Duration::from_secs(env.parse_or("AUDIT_EXPORT_INTERVAL_SECS", 300)?),
                    settle: Duration::from_secs(env.parse_or("AUDIT_EXPORT_SETTLE_SECS", 300)?),
                    ..ExportSettings::new(dir)
                }),
                None => None,
            },
            sweep: SweepSettings {
                interval: Duration::from_secs(env.parse_or("AUDIT_VERIFY_INTERVAL_SECS", 300)?),
                full_every: Duration::from_secs(env.parse_or("AUDIT_VERIFY_FULL_SECS", 86_400)?),
            },
        };
        config.check()?;
        Ok(config)
    }

    /// The published-mode refusals, and positive intervals.
    pub fn check(&self) -> Result<(), ConfigError> {
        self.mode.require(&[
            ("AUDIT_HMAC_KEY", self.hmac_key.is_none()),
            ("DATABASE_URL", self.database_url.is_none()),
            ("REDIS_URL", self.redis_url.is_none()),
            ("METRICS_BEARER", self.metrics_bearer.is_none()),
        ])?;
        if self.claim_idle.is_zero() {
            return Err(ConfigError::invalid(
                "AUDIT_CLAIM_IDLE_SECS",
                "must be positive",
            ));
        }
        if self.poll_interval.is_zero() || self.ingest.checkpoint_interval.is_zero() {
            return Err(ConfigError::invalid(
                "AUDIT_POLL_SECS / AUDIT_CHECKPOINT_SECS",
                "must be positive",
            ));
        }
        if self.retention.retention_days == 0 {
            return Err(ConfigError::invalid(
                "AUDIT_RETENTION_DAYS",
                "must be at least 1",
            ));
        }
        if self.export.as_ref().is_some_and(|e| e.interval.is_zero()) {
            return Err(ConfigError::invalid(
                "AUDIT_EXPORT_INTERVAL_SECS",
                "must be positive",
            ));
        }
        if self.sweep.interval.is_zero() || self.sweep.full_every.is_zero() {
            return Err(ConfigError::invalid(
                "AUDIT_VERIFY_INTERVAL_SECS / AUDIT_VERIFY_FULL_SECS",
                "must be positive",
            ));
        }
        if self.retention.interval.is_zero() {
            return Err(ConfigError::invalid(
                "AUDIT_RETENTION_INTERVAL_SECS",
                "must be positive",
            ));
        }
        Ok(())
    }
}
