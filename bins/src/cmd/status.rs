//! `caracal status`: is each service up, and is it ready — and if not, why.
//!
//! For each of the five services it asks `GET /health` and `GET /ready` and reports the
//! readiness reason the service gives (`{"ready":false,"reason":…}`, `caracal-service`'s
//! shape), or the transport error when nothing answers. A service that serves `/health` but
//! no `/ready` (the Admin API and Coordinator inside `caracal up`, which have no backing
//! stores of their own to probe) is ready when healthy, and says so.
//!
//! `--ready` turns the report into a gate: exit 1 unless every service is ready. `--json`
//! prints one machine-readable object instead of the table.

use std::time::Duration;

use clap::Args;
use serde_json::{Value, json};

use super::CmdError;
use crate::api::{ApiError, Endpoints, Http};

/// Arguments of `caracal status`.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Exit 1 unless every service is ready.
    #[arg(long)]
    pub ready: bool,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// The port offset of `caracal up` (the defaults are 8080, 8081, 4000, 3000, 9090).
    #[arg(long, default_value_t = 0)]
    pub port_offset: u16,
    /// The STS base URL (overrides the offset).
    #[arg(long)]
    pub sts_url: Option<String>,
    /// The Gateway base URL.
    #[arg(long)]
    pub gateway_url: Option<String>,
    /// The Coordinator base URL.
    #[arg(long)]
    pub coordinator_url: Option<String>,
    /// The Admin API base URL (without `/v1`).
    #[arg(long)]
    pub admin_url: Option<String>,
    /// The Audit service base URL.
    #[arg(long)]
    pub audit_url: Option<String>,
    /// Per-request timeout in seconds.
    #[arg(long, default_value_t = 3)]
    pub timeout_secs: u64,
}

/// One service's state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceStatus {
    /// Display name.
    pub name: &'static str,
    /// Base URL.
    pub url: String,
    /// `/health` answered 200.
    pub up: bool,
    /// The `/health` status, when anything answered.
    pub health_status: Option<u16>,
    /// Ready (see the module docs for services without `/ready`).
    pub ready: bool,
    /// The `/ready` status, when anything answered.
    pub ready_status: Option<u16>,
    /// Why it is not ready (or not up); a note when ready without a `/ready` endpoint.
    pub reason: Option<String>,
}

impl ServiceStatus {
    fn to_json(&self) -> Value {
        json!({
            "service": self.name,
            "url": self.url,
            "up": self.up,
            "health_status": self.health_status,
            "ready": self.ready,
            "ready_status": self.ready_status,
            "reason": self.reason,
        })
    }
}

fn targets(args: &StatusArgs) -> Result<Vec<(&'static str, String)>, CmdError> {
    let local = Endpoints::local(args.port_offset).ok_or_else(|| {
        CmdError::Config(format!(
            "--port-offset {} moves a port past 65535",
            args.port_offset
        ))
    })?;
    let pick = |given: &Option<String>, default: String| {
        given
            .as_deref()
            .map(|u| u.trim_end_matches('/').to_owned())
            .unwrap_or(default)
    };
    Ok(vec![
        ("STS", pick(&args.sts_url, local.sts)),
        ("Gateway", pick(&args.gateway_url, local.gateway)),
        (
            "Coordinator",
            pick(&args.coordinator_url, local.coordinator),
        ),
        ("Admin API", pick(&args.admin_url, local.admin)),
        ("Audit", pick(&args.audit_url, local.audit)),
    ])
}

/// Probe one service.
pub async fn probe(http: &Http, name: &'static str, url: &str) -> ServiceStatus {
    let down = |e: &ApiError| match e {
        ApiError::Timeout { secs, .. } => format!("no answer within {secs} s"),
        // The innermost cause says it best ("Connection refused (os error 111)").
        ApiError::Transport { reason, .. } => format!(
            "unreachable: {}",
            reason.rsplit(": ").next().unwrap_or(reason)
        ),
        other => other.to_string(),
    };
    let health = http.send("GET", &format!("{url}/health"), &[], None).await;
    let (up, health_status, health_reason) = match &health {
        Ok(r) => (
            r.status == 200,
            Some(r.status),
            r.body["reason"].as_str().map(str::to_owned),
        ),
        Err(e) => (false, None, Some(down(e))),
    };
    let ready = http.send("GET", &format!("{url}/ready"), &[], None).await;
    let (ready_ok, ready_status, reason) = match &ready {
        Ok(r) if r.status == 200 => (true, Some(200), None),
        Ok(r) if r.status == 404 && up => (
            true,
            Some(404),
            Some("no /ready endpoint; ready when healthy".to_owned()),
        ),
        Ok(r) => (
            false,
            Some(r.status),
            r.body["reason"]
                .as_str()
                .map(str::to_owned)
                .or_else(|| health_reason.clone())
                .or_else(|| Some(format!("/ready answered HTTP {}", r.status))),
        ),
        Err(e) => (false, None, health_reason.clone().or_else(|| Some(down(e)))),
    };
    ServiceStatus {
        name,
        url: url.to_owned(),
        up,
        health_status,
        ready: ready_ok && up,
        ready_status,
        reason,
    }
}

/// Render the table.
pub fn table(statuses: &[ServiceStatus]) -> String {
    let mut out = format!(
        "{:<12} {:<24} {:<6} {:<9} {}\n",
        "SERVICE", "URL", "HEALTH", "READY", "REASON"
    );
    for s in statuses {
        out.push_str(&format!(
            "{:<12} {:<24} {:<6} {:<9} {}\n",
            s.name,
            s.url,
            if s.up { "up" } else { "down" },
            if s.ready { "ready" } else { "not ready" },
            s.reason.as_deref().unwrap_or("-")
        ));
    }
    out
}

/// Run `caracal status`.
pub async fn run(args: StatusArgs) -> Result<(), CmdError> {
    let http = Http::new(Duration::from_secs(args.timeout_secs.max(1)));
    let targets = targets(&args)?;
    let mut statuses = Vec::with_capacity(targets.len());
    for (name, url) in &targets {
        statuses.push(probe(&http, name, url).await);
    }
    let all_ready = statuses.iter().all(|s| s.ready);
    if args.json {
        let doc = json!({
            "all_ready": all_ready,
            "services": statuses.iter().map(ServiceStatus::to_json).collect::<Vec<_>>(),
        });
        println!("{doc}");
    } else {
        print!("{}", table(&statuses));
    }
    if args.ready && !all_ready {
        let names: Vec<&str> = statuses
            .iter()
            .filter(|s| !s.ready)
            .map(|s| s.name)
            .collect();
        return Err(CmdError::Status(format!("not ready: {}", names.join(", "))));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args() -> StatusArgs {
        StatusArgs {
            ready: false,
            json: false,
            port_offset: 10,
            sts_url: Some("http://sts.example/".into()),
            gateway_url: None,
            coordinator_url: None,
            admin_url: None,
            audit_url: None,
            timeout_secs: 1,
        }
    }

    #[test]
    fn urls_follow_the_offset_unless_given() {
        let t = targets(&args()).unwrap();
        assert_eq!(t[0], ("STS", "http://sts.example".to_owned()));
        assert_eq!(t[1], ("Gateway", "http://127.0.0.1:8091".to_owned()));
        assert_eq!(t[4], ("Audit", "http://127.0.0.1:9100".to_owned()));
    }

    #[test]
    fn the_table_names_the_reason() {
        let s = ServiceStatus {
            name: "Audit",
            url: "http://127.0.0.1:9090".into(),
            up: false,
            health_status: Some(503),
            ready: false,
            ready_status: Some(503),
            reason: Some("consumer_unhealthy".into()),
        };
        let t = table(&[s]);
        assert!(t.contains("down") && t.contains("not ready") && t.contains("consumer_unhealthy"));
    }
}
