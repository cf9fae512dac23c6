//! The Gateway's settings (reference `gateway.md` §8.3), from the environment.

use std::path::PathBuf;
use std::time::Duration;

use caracal_core::audit::AuditHmacKey;
use caracal_core::exchange::envelope::GatewayKey;
use caracal_service::config::{Secret, parse_hex_key};
use caracal_service::{ConfigError, Env, Mode};

use crate::ssrf::EgressPolicy;

/// The reference port.
pub const PORT: u16 = 8081;
/// Default `AUDIT_REPLAY_DIR`.
pub const DEFAULT_REPLAY_DIR: &str = "/var/lib/caracal/audit-replay";
/// Default `MAX_REQUEST_BYTES` (10 MiB).
pub const DEFAULT_MAX_REQUEST_BYTES: u64 = 10 * 1024 * 1024;

/// The §2.4 limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// `STS_TIMEOUT` (5 s): the whole STS call, and the JWKS fetch.
    pub sts: Duration,
    /// `UPSTREAM_TIMEOUT` (30 s): until the upstream's response headers.
    pub upstream: Duration,
    /// Upstream connect (5 s).
    pub connect: Duration,
    /// `READ_HEADER_TIMEOUT` (5 s).
    pub read_header: Duration,
    /// `READ_TIMEOUT` (45 s): the whole inbound request body.
    pub read: Duration,
    /// `WRITE_TIMEOUT` (60 s): a non-streaming response copy.
    pub write: Duration,
    /// `STREAM_IDLE_TIMEOUT` (60 s): the longest wait for one upstream chunk.
    pub stream_idle: Duration,
    /// `IDLE_TIMEOUT` (120 s): keep-alive idle.
    pub idle: Duration,
}

impl Timeouts {
    /// The server's header deadline. hyper starts it whenever a connection waits for a
    /// request head, the first one and every keep-alive one, so it is also the keep-alive idle
    /// bound: an idle connection is closed after `min(READ_HEADER_TIMEOUT, IDLE_TIMEOUT)`.
    /// (Go's server waits `IdleTimeout` for the first byte and only then `ReadHeaderTimeout`;
    /// with the defaults ours closes idle keep-alive connections after 5 s instead of 120 s,
    /// the stricter side.)
    pub fn keep_alive(&self) -> Duration {
        self.read_header.min(self.idle)
    }
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            sts: Duration::from_secs(5),
            upstream: Duration::from_secs(30),
            connect: Duration::from_secs(5),
            read_header: Duration::from_secs(5),
            read: Duration::from_secs(45),
            write: Duration::from_secs(60),
            stream_idle: Duration::from_secs(60),
            idle: Duration::from_secs(120),
        }
    }
}

/// Everything the Gateway reads from its environment.
#[derive(Clone)]
pub struct GatewaySettings {
    /// `CARACAL_MODE` (default `stable`).
    pub mode: Mode,
    /// `GATEWAY_PORT`, else `PORT` (8081; published modes require 8081).
    pub port: u16,
    /// `STS_URL`: the STS the Gateway exchanges with (`None`: in-process only).
    pub sts_url: Option<String>,
    /// `GATEWAY_STS_HMAC_KEY` (required in published modes).
    pub gateway_key: Option<GatewayKey>,
    /// `STREAMS_HMAC_KEY` (required in published modes).
    pub streams_key: Option<Vec<u8>>,
    /// `AUDIT_HMAC_KEY` (required in published modes).
    pub audit_key: Option<AuditHmacKey>,
    /// `AUDIT_REPLAY_DIR`.
    pub replay_dir: PathBuf,
    /// `JTI_FAIL_OPEN` (dev only).
    pub jti_fail_open: bool,
    /// `UPSTREAM_ALLOW_PRIVATE`, `UPSTREAM_ALLOW_LOOPBACK`, `UPSTREAM_ALLOW_HOSTS`
    /// (alias `UPSTREAM_HOST_ALLOWLIST`).
    pub egress: EgressPolicy,
    /// `MAX_REQUEST_BYTES`.
    pub max_request_bytes: u64,
    /// The timeouts.
    pub timeouts: Timeouts,
    /// `TRUST_PROXY`.
    pub trust_proxy: bool,
    /// `TLS_CERT_FILE` and `TLS_KEY_FILE` (both or neither): serve HTTPS on the port. The files
    /// are read at start; a bad pair refuses to start instead of serving plain HTTP.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// `CARACAL_ADMIN_TOKEN`: enables `POST /internal/revocations/reload`.
    pub admin_token: Option<Secret>,
    /// `METRICS_BEARER`.
    pub metrics_bearer: Option<Secret>,
    /// `DATABASE_URL` (required in published modes; the revocation snapshot).
    pub database_url: Option<Secret>,
    /// `REDIS_URL` (required in published modes).
    pub redis_url: Option<Secret>,
    /// `HOSTNAME` (consumer group `gateway-revocation:<host>`).
    pub hostname: String,
}

impl std::fmt::Debug for GatewaySettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GatewaySettings")
            .field("mode", &self.mode)
            .field("port", &self.port)
            .field("sts_url", &self.sts_url)
            .field("gateway_key", &self.gateway_key.is_some())
            .field("streams_key", &self.streams_key.is_some())
            .field("audit_key", &self.audit_key.is_some())
            .field("replay_dir", &self.replay_dir)
            .field("egress", &self.egress)
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

/// A duration setting: Go-style `5s`, `500ms`, `2m`, `1h`, or bare seconds; must be > 0.
pub fn parse_duration(name: &str, text: &str) -> Result<Duration, ConfigError> {
    let t = text.trim();
    let bad = || ConfigError::invalid(name, "must be a positive duration such as 5s or 500ms");
    let (num, unit) = match t.find(|c: char| !c.is_ascii_digit() && c != '.') {
        Some(i) => t.split_at(i),
        None => (t, "s"),
    };
    let n: f64 = num.parse().map_err(|_| bad())?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return Err(bad()),
    };
    if !(secs > 0.0 && secs.is_finite()) {
        return Err(bad());
    }
    Ok(Duration::from_secs_f64(secs))
}

/// `STS_URL` rules: absolute http(s) with a host; in published modes plain http only for an
/// internal host (`localhost`, `127.0.0.1`, `::1`, or a single label).
pub fn check_sts_url(url: &str, mode: Mode) -> Result<(), ConfigError> {
    let bad = |why: &str| Err(ConfigError::invalid("STS_URL", why.to_owned()));
    let Ok(uri) = url.parse::<hyper::Uri>() else {
        return bad("must be an absolute http or https URL");
    };
    let Some(host) = uri.host() else {
        return bad("must name a host");
    };
    match uri.scheme_str() {
        Some("https") => Ok(()),
        Some("http") => {
            let host = host.trim_start_matches('[').trim_end_matches(']');
            let internal = matches!(host, "localhost" | "127.0.0.1" | "::1") || !host.contains('.');
            if mode.is_published() && !internal {
                return bad("plain http is allowed only for an internal host in published modes");
            }
            Ok(())
        }
        _ => bad("must be an absolute http or https URL"),
    }
}

impl GatewaySettings {
    /// Development settings for an embedded Gateway (`caracal up`): in-process STS, loopback
    /// upstreams allowed, no keys, in-memory backends.
    pub fn dev(replay_dir: PathBuf) -> Self {
        Self {
            mode: Mode::Dev,
            port: PORT,
            sts_url: None,
            gateway_key: None,
            streams_key: None,
            audit_key: None,
            replay_dir,
            jti_fail_open: false,
            egress: EgressPolicy {
                allow_loopback: true,
                ..EgressPolicy::default()
            },
            max_request_bytes: DEFAULT_MAX_REQUEST_BYTES,
            timeouts: Timeouts::default(),
            trust_proxy: false,
            tls: None,
            admin_token: None,
            metrics_bearer: None,
            database_url: None,
            redis_url: None,
            hostname: "gateway-0".to_owned(),
        }
    }

    /// Read and check the settings; any violation refuses to start.
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let mode = env.mode()?;
        let port: u16 = match env.raw("GATEWAY_PORT") {
            Some(_) => env.parse_or("GATEWAY_PORT", PORT)?,
            None => env.parse_or("PORT", PORT)?,
        };
        let sts_url = env.raw("STS_URL");
        if let Some(url) = &sts_url {
            check_sts_url(url, mode)?;
        }
        let key = |name: &str| -> Result<Option<Vec<u8>>, ConfigError> {
            env.var(name)?.map(|h| parse_hex_key(name, &h)).transpose()
        };
        let gateway_key = key("GATEWAY_STS_HMAC_KEY")?
            .map(|b| {
                GatewayKey::from_bytes(&b)
                    .map_err(|e| ConfigError::invalid("GATEWAY_STS_HMAC_KEY", e.to_string()))
            })
            .transpose()?;
        let streams_key = key("STREAMS_HMAC_KEY")?;
        let audit_key = key("AUDIT_HMAC_KEY")?
            .map(|b| {
                AuditHmacKey::from_bytes(b)
                    .map_err(|e| ConfigError::invalid("AUDIT_HMAC_KEY", e.to_string()))
            })
            .transpose()?;
        let duration = |name: &str, default: Duration| -> Result<Duration, ConfigError> {
            env.raw(name)
                .map_or(Ok(default), |v| parse_duration(name, &v))
        };
        let d = Timeouts::default();
        let timeouts = Timeouts {
            sts: duration("STS_TIMEOUT", d.sts)?,
            upstream: duration("UPSTREAM_TIMEOUT", d.upstream)?,
            connect: d.connect,
            read_header: duration("READ_HEADER_TIMEOUT", d.read_header)?,
            read: duration("READ_TIMEOUT", d.read)?,
            write: duration("WRITE_TIMEOUT", d.write)?,
            stream_idle: duration("STREAM_IDLE_TIMEOUT", d.stream_idle)?,
            idle: duration("IDLE_TIMEOUT", d.idle)?,
        };
        if timeouts.read <= timeouts.sts + timeouts.upstream {
            return Err(ConfigError::invalid(
                "READ_TIMEOUT",
                "must exceed STS_TIMEOUT + UPSTREAM_TIMEOUT",
            ));
        }
        let max_request_bytes: u64 =
            env.parse_or("MAX_REQUEST_BYTES", DEFAULT_MAX_REQUEST_BYTES)?;
        if max_request_bytes == 0 {
            return Err(ConfigError::invalid(
                "MAX_REQUEST_BYTES",
                "must be positive",
            ));
        }
        let hosts = env
            .raw("UPSTREAM_ALLOW_HOSTS")
            .or_else(|| env.raw("UPSTREAM_HOST_ALLOWLIST"))
            .unwrap_or_default();
        let egress = EgressPolicy {
            allow_private: truthy(env.raw("UPSTREAM_ALLOW_PRIVATE")),
            allow_loopback: truthy(env.raw("UPSTREAM_ALLOW_LOOPBACK")),
            allow_hosts: hosts
                .split(',')
                .map(|h| h.trim().to_ascii_lowercase())
                .filter(|h| !h.is_empty())
                .collect(),
        };
        let secret = |name: &str| env.var(name).map(|v| v.map(Secret::new));
        let settings = Self {
            mode,
            port,
            sts_url,
            gateway_key,
            streams_key,
            audit_key,
            replay_dir: env
                .raw("AUDIT_REPLAY_DIR")
                .map_or_else(|| PathBuf::from(DEFAULT_REPLAY_DIR), PathBuf::from),
            jti_fail_open: truthy(env.raw("JTI_FAIL_OPEN")),
            egress,
            max_request_bytes,
            timeouts,
            trust_proxy: truthy(env.raw("TRUST_PROXY")),
            tls: match (env.raw("TLS_CERT_FILE"), env.raw("TLS_KEY_FILE")) {
                (None, None) => None,
                (Some(cert), Some(key)) => Some((PathBuf::from(cert), PathBuf::from(key))),
                _ => {
                    return Err(ConfigError::invalid(
                        "TLS_CERT_FILE",
                        "TLS_CERT_FILE and TLS_KEY_FILE must be set together",
                    ));
                }
            },
            admin_token: secret("CARACAL_ADMIN_TOKEN")?,
            metrics_bearer: secret("METRICS_BEARER")?,
            database_url: secret("DATABASE_URL")?,
            redis_url: secret("REDIS_URL")?,
            hostname: env.raw("HOSTNAME").unwrap_or_else(|| "gateway".to_owned()),
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

    /// The published-mode refusals (also applied to embedded settings).
    pub fn check(&self) -> Result<(), ConfigError> {
        if !self.mode.is_published() {
            return Ok(());
        }
        let refuse = |name: &str, why: &str| {
            Err(ConfigError::invalid(
                name,
                format!("{why} when CARACAL_MODE is {}", self.mode),
            ))
        };
        if self.port != PORT {
            return refuse("PORT", "must be 8081");
        }
        if self.jti_fail_open {
            return refuse("JTI_FAIL_OPEN", "must not be true");
        }
        if self.egress.allow_loopback {
            return refuse(
                "UPSTREAM_ALLOW_LOOPBACK",
                "is a development setting, refused",
            );
        }
        self.mode.require(&[
            ("STS_URL", self.sts_url.is_none()),
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
    #![allow(clippy::unwrap_used)]
    use super::*;

    const HMAC: &str = "6a0f7c2e9b1d4f3a8c5e7b9d1f2a4c6e8b0d2f4a6c8e0b2d4f6a8c0e2b4d6f8a";

    fn published() -> Vec<(&'static str, &'static str)> {
        vec![
            ("CARACAL_MODE", "stable"),
            ("STS_URL", "http://sts:8080"),
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
    ) -> Result<GatewaySettings, ConfigError> {
        let mut pairs: Vec<_> = published()
            .into_iter()
            .filter(|(k, _)| !without.contains(k) && !extra.iter().any(|(e, _)| e == k))
            .collect();
        pairs.extend_from_slice(extra);
        GatewaySettings::from_env(&Env::from_pairs(pairs))
    }

    #[test]
    fn published_configuration_and_refusals() {
        let s = with(&[], &[]).unwrap();
        assert_eq!(s.port, PORT);
        assert_eq!(s.timeouts, Timeouts::default());
        assert!(!format!("{s:?}").contains(HMAC));
        for missing in [
            "STS_URL",
            "GATEWAY_STS_HMAC_KEY",
            "STREAMS_HMAC_KEY",
            "AUDIT_HMAC_KEY",
            "DATABASE_URL",
            "REDIS_URL",
            "METRICS_BEARER",
        ] {
            assert!(with(&[], &[missing]).is_err(), "{missing}");
        }
        assert!(with(&[("JTI_FAIL_OPEN", "true")], &[]).is_err());
        assert!(with(&[("UPSTREAM_ALLOW_LOOPBACK", "true")], &[]).is_err());
        assert!(with(&[("INSECURE_HTTP", "1")], &[]).is_err());
        assert!(with(&[("PORT", "9000")], &[]).is_err());
        assert!(with(&[("STS_URL", "http://sts.example.com")], &[]).is_err());
        assert!(with(&[("STS_URL", "https://sts.example.com")], &[]).is_ok());
        assert!(with(&[("READ_TIMEOUT", "30s")], &[]).is_err());
        assert!(with(&[("STS_TIMEOUT", "0s")], &[]).is_err());
        assert!(with(&[("MAX_REQUEST_BYTES", "0")], &[]).is_err());
        let s = with(&[("UPSTREAM_HOST_ALLOWLIST", " API.example.com ,")], &[]).unwrap();
        assert_eq!(s.egress.allow_hosts, vec!["api.example.com".to_owned()]);
    }

    #[test]
    fn tls_files_come_in_pairs() {
        assert_eq!(with(&[], &[]).unwrap().tls, None);
        let both = with(
            &[
                ("TLS_CERT_FILE", "/etc/c.pem"),
                ("TLS_KEY_FILE", "/etc/k.pem"),
            ],
            &[],
        )
        .unwrap();
        assert_eq!(
            both.tls,
            Some((PathBuf::from("/etc/c.pem"), PathBuf::from("/etc/k.pem")))
        );
        assert!(with(&[("TLS_CERT_FILE", "/etc/c.pem")], &[]).is_err());
        assert!(with(&[("TLS_KEY_FILE", "/etc/k.pem")], &[]).is_err());
    }

    #[test]
    fn dev_mode_and_durations() {
        let s = GatewaySettings::from_env(&Env::from_pairs([
            ("CARACAL_MODE", "dev"),
            ("GATEWAY_PORT", "18081"),
            ("JTI_FAIL_OPEN", "true"),
            ("UPSTREAM_ALLOW_LOOPBACK", "1"),
        ]))
        .unwrap();
        assert_eq!(s.port, 18081);
        assert!(s.jti_fail_open && s.egress.allow_loopback);
        assert_eq!(
            parse_duration("X", "500ms").unwrap(),
            Duration::from_millis(500)
        );
        assert_eq!(parse_duration("X", "2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("X", "7").unwrap(), Duration::from_secs(7));
        assert!(parse_duration("X", "-1s").is_err());
        assert!(parse_duration("X", "5d").is_err());
    }
}
