//! The audit ledger.

use std::collections::{BTreeMap, HashMap};

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::{MemoryStore, lock};
use crate::audit::{AuditHmacKey, ChainCheckpoint, ChainHead, LedgerRow, ReplayVerdict};
use crate::store::audit::{
    ALERT_CONTENT_MISMATCH, AppendOutcome, AuditExportStore, AuditLedger, AuditQuery,
    IncomingEvent, IngestAlert, PreparedEvent, prepare_batch,
};
use crate::store::{StoreError, StoreResult};

/// Per-zone chains, the `(id, occurred_at)` index, alerts and checkpoints.
#[derive(Default)]
pub(super) struct Tables {
    /// zone → rows in append order (which is `chain_seq` order).
    chains: HashMap<String, Vec<LedgerRow>>,
    /// `(id, occurred_at)` → (zone, index into its chain): the ledger's primary key.
    by_key: HashMap<(String, DateTime<Utc>), (String, usize)>,
    /// Alerts, oldest first.
    alerts: Vec<IngestAlert>,
    /// zone → seq → checkpoint.
    checkpoints: HashMap<String, BTreeMap<i64, ChainCheckpoint>>,
    /// exporter → last exported hour.
    watermarks: HashMap<String, DateTime<Utc>>,
}

#[async_trait]
impl AuditLedger for MemoryStore {
    async fn append(
        &self,
        zone_id: &str,
        events: &[IncomingEvent],
        key: Option<&AuditHmacKey>,
    ) -> StoreResult<Vec<AppendOutcome>> {
        let prepared = prepare_batch(zone_id, events)?;

        let now = self.inner.clock.now();
        // INVARIANT: one lock serialises every append, so a zone's head cannot move between
        // reading it and linking onto it (the Postgres ledger uses a per-zone advisory lock).
        let mut t = lock(&self.inner.audit);
        let mut outcomes = Vec::with_capacity(prepared.len());
        let mut head: Option<ChainHead> = t
            .chains
            .get(zone_id)
            .and_then(|rows| rows.last())
            .map(LedgerRow::head);
        for PreparedEvent {
            stored,
            content_sha256: incoming_hash,
            ingest_signature: sig,
        } in prepared
        {
            let pk = (stored.id.clone(), stored.occurred_at);
            if let Some((zone, idx)) = t.by_key.get(&pk) {
                let existing = t
                    .chains
                    .get(zone)
                    .and_then(|rows| rows.get(*idx))
                    .map(|r| r.content_sha256.clone())
                    .unwrap_or_default();
                match ReplayVerdict::judge(&existing, &incoming_hash) {
                    ReplayVerdict::BenignDuplicate => outcomes.push(AppendOutcome::Duplicate),
                    ReplayVerdict::Tampered => {
                        t.alerts.push(IngestAlert {
                            event_id: stored.id.clone(),
                            zone_id: zone_id.to_owned(),
                            kind: ALERT_CONTENT_MISMATCH.to_owned(),
                            detail: format!("stored={existing} incoming={incoming_hash}"),
                            observed_at: now,
                        });
                        outcomes.push(AppendOutcome::Tampered {
                            stored: existing,
                            incoming: incoming_hash,
                        });
                    }
                }
                continue;
            }
            let row = LedgerRow::append(stored, head.as_ref(), key, sig, now)
                .map_err(|e| StoreError::Invalid(e.to_string()))?;
            head = Some(row.head());
            outcomes.push(AppendOutcome::Inserted {
                chain_seq: row.chain_seq,
                content_sha256: row.content_sha256.clone(),
            });
            let chain = t.chains.entry(zone_id.to_owned()).or_default();
            chain.push(row);
            let idx = chain.len() - 1;
            t.by_key.insert(pk, (zone_id.to_owned(), idx));
        }
        Ok(outcomes)
    }

    async fn chain_head(&self, zone_id: &str) -> StoreResult<Option<ChainHead>> {
        let t = lock(&self.inner.audit);
        Ok(t.chains
            .get(zone_id)
            .and_then(|rows| rows.last())
            .map(LedgerRow::head))
    }

    async fn read_chain(
        &self,
        zone_id: &str,
        after_seq: i64,
        limit: u32,
    ) -> StoreResult<Vec<LedgerRow>> {
        let t = lock(&self.inner.audit);
        let limit = usize::try_from(limit).unwrap_or(usize::MAX);
        Ok(t.chains
            .get(zone_id)
            .map(|rows| {
                rows.iter()
                    .filter(|r| r.chain_seq > after_seq)
                    .take(limit)
                    .cloned()
                    .collect()
            })
            .unwrap_or_default())
    }

    async fn ledger_zones(&self) -> StoreResult<Vec<String>> {
        let t = lock(&self.inner.audit);
        let mut zones: Vec<String> = t
            .chains
            .iter()
            .filter(|(_, rows)| !rows.is_empty())
            .map(|(z, _)| z.clone())
            .collect();
        zones.sort();
        Ok(zones)
    }

    async fn search_audit(&self, q: &AuditQuery) -> StoreResult<Vec<LedgerRow>> {
        if q.limit == 0 {
            return Err(StoreError::Invalid("limit must be at least 1".into()));
        }
        let t = lock(&self.inner.audit);
        let limit = usize::try_from(q.limit).unwrap_or(usize::MAX);
        Ok(t.chains
            .get(&q.zone_id)
            .map(|rows| {
                rows.iter()
                    .filter(|r| r.chain_seq > q.after_seq)
                    .filter(|r| q.since.is_none_or(|s| r.event.occurred_at >= s))
                    .filter(|r| q.until.is_none_or(|u| r.event.occurred_at < u))
                    .filter(|r| q.decision.as_ref().is_none_or(|d| &r.event.decision == d))
                    .filter(|r| {
                        q.request_id
                            .as_ref()
                            .is_none_or(|id| &r.event.request_id == id)
                    })
                    .take(limit)
                    .cloned()
                    .collect()
            })
            .unwrap_or_default())
    }

    async fn ingest_alerts(
        &self,
        zone_id: Option<&str>,
        limit: u32,
    ) -> StoreResult<Vec<IngestAlert>> {
        let t = lock(&self.inner.audit);
        let limit = usize::try_from(limit).unwrap_or(usize::MAX);
        Ok(t.alerts
            .iter()
            .rev()
            .filter(|a| zone_id.is_none_or(|z| a.zone_id == z))
            .take(limit)
            .cloned()
            .collect())
    }

    async fn put_checkpoint(&self, checkpoint: &ChainCheckpoint) -> StoreResult<()> {
        let mut t = lock(&self.inner.audit);
        t.checkpoints
            .entry(checkpoint.zone_id.clone())
            .or_default()
            .entry(checkpoint.chain_seq)
            .or_insert_with(|| checkpoint.clone());
        Ok(())
    }

    async fn latest_checkpoint(&self, zone_id: &str) -> StoreResult<Option<ChainCheckpoint>> {
        let t = lock(&self.inner.audit);
        Ok(t.checkpoints
            .get(zone_id)
            .and_then(|m| m.last_key_value())
            .map(|(_, cp)| cp.clone()))
    }
}

#[async_trait]
impl AuditExportStore for MemoryStore {
    async fn read_ingest_window(
        &self,
        from: DateTime<Utc>,
        until: DateTime<Utc>,
        after: Option<(&str, i64)>,
        limit: u32,
    ) -> StoreResult<Vec<LedgerRow>> {
        if limit == 0 {
            return Err(StoreError::Invalid("limit must be at least 1".into()));
        }
        let t = lock(&self.inner.audit);
        let mut zones: Vec<&String> = t.chains.keys().collect();
        zones.sort();
        let mut out = Vec::new();
        for zone in zones {
            let Some(rows) = t.chains.get(zone) else {
                continue;
            };
            for row in rows {
                let past = match after {
                    Some((z, seq)) => (zone.as_str(), row.chain_seq) > (z, seq),
                    None => true,
                };
                if past && row.ingested_at >= from && row.ingested_at < until {
                    out.push(row.clone());
                    if out.len() >= usize::try_from(limit).unwrap_or(usize::MAX) {
                        return Ok(out);
                    }
                }
            }
        }
        Ok(out)
    }

    async fn export_watermark(&self, name: &str) -> StoreResult<Option<DateTime<Utc>>> {
        Ok(lock(&self.inner.audit).watermarks.get(name).copied())
    }

    async fn set_export_watermark(&self, name: &str, hour: DateTime<Utc>) -> StoreResult<()> {
        lock(&self.inner.audit)
            .watermarks
            .insert(name.to_owned(), hour);
        Ok(())
    }
}
