//! The tamper sweep (reference §2.6, check 31), stronger than the reference's: a **full**
//! sweep of every zone at start and every `AUDIT_VERIFY_FULL_SECS` (24 h), and between them an
//! **incremental** sweep every `AUDIT_VERIFY_INTERVAL_SECS` (300 s) that verifies only the rows
//! after each zone's last verified head, linked to that head
//! ([`verify_ledger_zone_after`]). Every row is therefore checked once soon after it lands
//! (the reference's rolling 4 h window re-reads rows and never link-checks a window's first
//! row), and the full sweep catches edits to rows behind the heads and tip deletions.
//!
//! A finding is logged at error level with the zone and the first bad row and counted; the
//! zone's head is then reset so the next pass re-verifies it from genesis (a finding is not
//! "forgotten" by moving past it). Every replica sweeps: verification only reads.
//!
//! Metrics (reference names): `caracal_audit_tamper_checked_total`,
//! `caracal_audit_tamper_mismatch_total`, `caracal_audit_tamper_chain_breaks_total`,
//! `caracal_audit_tamper_hmac_failures_total`, gauges `caracal_audit_tamper_last_sweep_unix`
//! and `caracal_audit_tamper_last_full_unix`; ours: `caracal_audit_tamper_findings_total`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use caracal_core::audit::ledger_verify::verify_ledger_zone_after;
use caracal_core::audit::{AuditHmacKey, ChainHead, VerifyReport};
use caracal_core::clock::SharedClock;
use caracal_core::store::StoreResult;
use caracal_core::store::audit::AuditLedger;
use tokio::sync::watch;

/// How the sweep runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SweepSettings {
    /// `AUDIT_VERIFY_INTERVAL_SECS` (300): time between incremental sweeps.
    pub interval: Duration,
    /// `AUDIT_VERIFY_FULL_SECS` (86400): time between full sweeps.
    pub full_every: Duration,
}

impl Default for SweepSettings {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(300),
            full_every: Duration::from_secs(24 * 60 * 60),
        }
    }
}

/// The sweep's memory: each zone's last verified head.
#[derive(Debug, Default)]
pub struct Sweeper {
    heads: HashMap<String, ChainHead>,
}

/// What one pass found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SweepOutcome {
    /// Rows verified.
    pub rows_checked: u64,
    /// Zones with findings, with their reports.
    pub dirty: Vec<VerifyReport>,
}

impl Sweeper {
    /// One pass over every zone: `full` from genesis, otherwise after each zone's head.
    pub async fn pass(
        &mut self,
        ledger: &dyn AuditLedger,
        key: Option<&AuditHmacKey>,
        full: bool,
    ) -> StoreResult<SweepOutcome> {
        let mut outcome = SweepOutcome::default();
        for zone in ledger.ledger_zones().await? {
            let head = if full { None } else { self.heads.get(&zone) };
            let report = verify_ledger_zone_after(ledger, &zone, key, head).await?;
            outcome.rows_checked += report.rows_checked;
            metrics::counter!("caracal_audit_tamper_checked_total").increment(report.rows_checked);
            if report.is_clean() {
                if let Some(h) = report.head.clone() {
                    self.heads.insert(zone, h);
                }
                continue;
            }
            metrics::counter!("caracal_audit_tamper_mismatch_total")
                .increment(report.content_mismatches);
            metrics::counter!("caracal_audit_tamper_chain_breaks_total")
                .increment(report.chain_breaks);
            metrics::counter!("caracal_audit_tamper_hmac_failures_total")
                .increment(report.hmac_failures);
            metrics::counter!("caracal_audit_tamper_findings_total")
                .increment(report.finding_count());
            let first = report.findings.first();
            tracing::error!(
                zone = %report.zone_id,
                findings = report.finding_count(),
                first_seq = first.and_then(|f| f.row.as_ref()).map(|r| r.chain_seq),
                first_event = first.and_then(|f| f.row.as_ref()).map(|r| r.event_id.as_str()),
                "audit tamper sweep: the chain does not verify"
            );
            self.heads.remove(&zone);
            outcome.dirty.push(report);
        }
        Ok(outcome)
    }
}

/// Run the sweep until `stop` turns true: full at once, then incremental every interval and
/// full every `full_every`. A failed pass (store unreachable) is retried at the next interval.
pub fn spawn(
    ledger: Arc<dyn AuditLedger>,
    key: Option<AuditHmacKey>,
    clock: SharedClock,
    settings: SweepSettings,
    mut stop: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut sweeper = Sweeper::default();
        let mut last_full: Option<tokio::time::Instant> = None;
        loop {
            let full = last_full.is_none_or(|t| t.elapsed() >= settings.full_every);
            match sweeper.pass(&*ledger, key.as_ref(), full).await {
                Ok(_) => {
                    let now = clock.now().timestamp() as f64;
                    metrics::gauge!("caracal_audit_tamper_last_sweep_unix").set(now);
                    if full {
                        last_full = Some(tokio::time::Instant::now());
                        metrics::gauge!("caracal_audit_tamper_last_full_unix").set(now);
                    }
                }
                Err(e) => tracing::warn!(error = %e, "audit tamper sweep failed; retrying"),
            }
            if crate::sleep_or_stop(settings.interval.max(Duration::from_millis(10)), &mut stop)
                .await
            {
                break;
            }
        }
    })
}
