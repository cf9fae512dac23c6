//! The audit ledger on Postgres (`audit_events`, `audit_ingest_alerts`,
//! `audit_chain_checkpoints`).
//!
//! An append runs in one transaction holding `pg_advisory_xact_lock(hashtext(zone_id))` (the
//! reference's lock, so a Go ingestor and this one serialise on the same key), reads the zone's
//! head, links each row with the shared rule [`LedgerRow::append`], and inserts with
//! `ON CONFLICT (id, occurred_at) DO NOTHING`. The JSON columns are written from the native
//! `jsonb`-normalised text; Postgres stores and prints the same text, so a row read back with
//! `::text` hashes to its stored `content_sha256` (the live test in `tests/ledger_postgres.rs`
//! checks exactly that).

use std::collections::HashMap;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use tokio_postgres::Row;

use super::PgStore;
use super::conn::Tx;
use super::rows::{all, col};
use crate::audit::{
    AuditEvent, AuditHmacKey, ChainCheckpoint, ChainHead, JsonText, LedgerRow, ReplayVerdict,
};
use crate::store::audit::{
    ALERT_CONTENT_MISMATCH, AppendOutcome, AuditExportStore, AuditLedger, AuditQuery,
    IncomingEvent, IngestAlert, PreparedEvent, prepare_batch,
};
use crate::store::{StoreError, StoreResult};

/// A `SELECT` of every ledger column (JSON columns as their `jsonb` text) with `$tail`
/// appended; a macro so the statement stays a `&'static str` for the statement cache.
macro_rules! select_rows {
    ($tail:literal) => {
        concat!(
            "SELECT id, zone_id, event_type, request_id, decision, policy_set_id, \
             policy_set_version_id, manifest_sha, evaluation_status, \
             determining_policies_json::text AS determining_policies_json, \
             diagnostics_json::text AS diagnostics_json, metadata_json::text AS metadata_json, \
             occurred_at, ingested_at, content_sha256, prev_content_sha256, chain_hmac, \
             chain_seq, ingest_signature FROM audit_events ",
            $tail
        )
    };
}

/// Decode a JSON column read back as text.
fn json_col(row: &Row, name: &str) -> StoreResult<Option<JsonText>> {
    let text: Option<String> = col(row, "audit_event", name)?;
    text.map(|t| JsonText::parse(t).map_err(|e| super::error::malformed("audit_event", e)))
        .transpose()
}

fn ledger_row(row: &Row) -> StoreResult<LedgerRow> {
    const E: &str = "audit_event";
    let text = |name: &str| -> StoreResult<String> {
        Ok(col::<Option<String>>(row, E, name)?.unwrap_or_default())
    };
    Ok(LedgerRow {
        event: AuditEvent {
            id: col(row, E, "id")?,
            zone_id: col(row, E, "zone_id")?,
            event_type: col(row, E, "event_type")?,
            request_id: text("request_id")?,
            decision: text("decision")?,
            policy_set_id: text("policy_set_id")?,
            policy_set_version_id: text("policy_set_version_id")?,
            manifest_sha: text("manifest_sha")?,
            evaluation_status: text("evaluation_status")?,
            determining_policies_json: json_col(row, "determining_policies_json")?,
            diagnostics_json: json_col(row, "diagnostics_json")?,
            metadata_json: json_col(row, "metadata_json")?,
            occurred_at: col(row, E, "occurred_at")?,
        },
        content_sha256: col(row, E, "content_sha256")?,
        prev_content_sha256: col(row, E, "prev_content_sha256")?,
        chain_hmac: col(row, E, "chain_hmac")?,
        chain_seq: col(row, E, "chain_seq")?,
        ingest_signature: col(row, E, "ingest_signature")?,
        ingested_at: col(row, E, "ingested_at")?,
    })
}

fn checkpoint(row: &Row) -> StoreResult<ChainCheckpoint> {
    const E: &str = "audit_chain_checkpoint";
    Ok(ChainCheckpoint {
        zone_id: col(row, E, "zone_id")?,
        chain_seq: col(row, E, "chain_seq")?,
        content_sha256: col(row, E, "head_sha256")?,
        signature: col(row, E, "signature")?,
    })
}

/// An empty string as SQL NULL (the reference stores empty optional strings as NULL).
fn nullable(s: &str) -> Option<&str> {
    (!s.is_empty()).then_some(s)
}

async fn insert_row(tx: &mut Tx<'_>, r: &LedgerRow) -> StoreResult<u64> {
    let e = &r.event;
    tx.exec(
        "INSERT INTO audit_events (id, zone_id, event_type, request_id, decision, \
             policy_set_id, policy_set_version_id, manifest_sha, evaluation_status, \
             determining_policies_json, diagnostics_json, metadata_json, occurred_at, \
             ingested_at, content_sha256, prev_content_sha256, chain_hmac, chain_seq, \
             ingest_signature) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10::text::jsonb, $11::text::jsonb, \
             $12::text::jsonb, $13, $14, $15, $16, $17, $18, $19) \
         ON CONFLICT (id, occurred_at) DO NOTHING",
        &[
            &e.id,
            &e.zone_id,
            &e.event_type,
            &e.request_id,
            &e.decision,
            &nullable(&e.policy_set_id),
            &nullable(&e.policy_set_version_id),
            &nullable(&e.manifest_sha),
            &e.evaluation_status,
            &e.determining_policies_json.as_ref().map(JsonText::as_str),
            &e.diagnostics_json.as_ref().map(JsonText::as_str),
            &e.metadata_json.as_ref().map(JsonText::as_str),
            &e.occurred_at,
            &r.ingested_at,
            &r.content_sha256,
            &r.prev_content_sha256,
            &r.chain_hmac,
            &r.chain_seq,
            &r.ingest_signature,
        ],
    )
    .await
}

/// Insert linked rows in one statement (`unnest` of one array per column); the number
/// inserted (a key that already exists is skipped, and the caller then gives up the batch).
async fn insert_rows(tx: &mut Tx<'_>, rows: &[LedgerRow]) -> StoreResult<u64> {
    let text = |f: fn(&LedgerRow) -> &str| rows.iter().map(f).collect::<Vec<&str>>();
    let opt = |f: fn(&LedgerRow) -> Option<&str>| rows.iter().map(f).collect::<Vec<Option<&str>>>();
    let ids = text(|r| &r.event.id);
    let zones = text(|r| &r.event.zone_id);
    let types = text(|r| &r.event.event_type);
    let requests = text(|r| &r.event.request_id);
    let decisions = text(|r| &r.event.decision);
    let sets = opt(|r| nullable(&r.event.policy_set_id));
    let set_versions = opt(|r| nullable(&r.event.policy_set_version_id));
    let manifests = opt(|r| nullable(&r.event.manifest_sha));
    let statuses = text(|r| &r.event.evaluation_status);
    let determining = opt(|r| {
        r.event
            .determining_policies_json
            .as_ref()
            .map(JsonText::as_str)
    });
    let diagnostics = opt(|r| r.event.diagnostics_json.as_ref().map(JsonText::as_str));
    let metadata = opt(|r| r.event.metadata_json.as_ref().map(JsonText::as_str));
    let occurred: Vec<DateTime<Utc>> = rows.iter().map(|r| r.event.occurred_at).collect();
    let ingested: Vec<DateTime<Utc>> = rows.iter().map(|r| r.ingested_at).collect();
    let hashes = text(|r| &r.content_sha256);
    let prevs = opt(|r| r.prev_content_sha256.as_deref());
    let hmacs = text(|r| &r.chain_hmac);
    let seqs: Vec<i64> = rows.iter().map(|r| r.chain_seq).collect();
    let sigs = opt(|r| r.ingest_signature.as_deref());
    tx.exec(
        "INSERT INTO audit_events (id, zone_id, event_type, request_id, decision, \
             policy_set_id, policy_set_version_id, manifest_sha, evaluation_status, \
             determining_policies_json, diagnostics_json, metadata_json, occurred_at, \
             ingested_at, content_sha256, prev_content_sha256, chain_hmac, chain_seq, \
             ingest_signature) \
         SELECT id, zone_id, event_type, request_id, decision, psid, psvid, msha, status, \
             dp::jsonb, dg::jsonb, md::jsonb, occ, ing, cs, pcs, ch, seq, isig \
         FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], \
             $7::text[], $8::text[], $9::text[], $10::text[], $11::text[], $12::text[], \
             $13::timestamptz[], $14::timestamptz[], $15::text[], $16::text[], $17::text[], \
             $18::bigint[], $19::text[]) \
             AS t(id, zone_id, event_type, request_id, decision, psid, psvid, msha, status, \
             dp, dg, md, occ, ing, cs, pcs, ch, seq, isig) \
         ON CONFLICT (id, occurred_at) DO NOTHING",
        &[
            &ids,
            &zones,
            &types,
            &requests,
            &decisions,
            &sets,
            &set_versions,
            &manifests,
            &statuses,
            &determining,
            &diagnostics,
            &metadata,
            &occurred,
            &ingested,
            &hashes,
            &prevs,
            &hmacs,
            &seqs,
            &sigs,
        ],
    )
    .await
}

#[async_trait]
impl AuditLedger for PgStore {
    async fn append(
        &self,
        zone_id: &str,
        events: &[IncomingEvent],
        key: Option<&AuditHmacKey>,
    ) -> StoreResult<Vec<AppendOutcome>> {
        let prepared = prepare_batch(zone_id, events)?;
        // The batched path first; a key inserted meanwhile by another zone's append (the
        // `(id, occurred_at)` key is global) makes it give up, and the row-at-a-time path,
        // which judges every conflict on its own, takes over.
        if let Some(outcomes) = self.append_batched(zone_id, &prepared, key).await? {
            return Ok(outcomes);
        }
        self.append_per_row(zone_id, prepared, key).await
    }

    async fn chain_head(&self, zone_id: &str) -> StoreResult<Option<ChainHead>> {
        self.bounded("audit_chain_head", async {
            let conn = self.conn().await?;
            conn.row_opt(
                "SELECT content_sha256, chain_seq FROM audit_events WHERE zone_id = $1 \
                 ORDER BY chain_seq DESC LIMIT 1",
                &[&zone_id],
            )
            .await?
            .map(|r| {
                Ok(ChainHead {
                    content_sha256: col(&r, "audit_event", "content_sha256")?,
                    chain_seq: col(&r, "audit_event", "chain_seq")?,
                })
            })
            .transpose()
        })
        .await
    }

    async fn read_chain(
        &self,
        zone_id: &str,
        after_seq: i64,
        limit: u32,
    ) -> StoreResult<Vec<LedgerRow>> {
        self.bounded("audit_read_chain", async {
            let conn = self.conn().await?;
            let rows = conn
                .rows(
                    select_rows!(
                        "WHERE zone_id = $1 AND chain_seq > $2 \
                         ORDER BY chain_seq, occurred_at, id LIMIT $3"
                    ),
                    &[&zone_id, &after_seq, &i64::from(limit)],
                )
                .await?;
            all(&rows, ledger_row)
        })
        .await
    }

    async fn ledger_zones(&self) -> StoreResult<Vec<String>> {
        self.bounded("audit_ledger_zones", async {
            let conn = self.conn().await?;
            let rows = conn
                .rows(
                    "SELECT DISTINCT zone_id FROM audit_events ORDER BY zone_id",
                    &[],
                )
                .await?;
            all(&rows, |r| col(r, "audit_event", "zone_id"))
        })
        .await
    }

    async fn search_audit(&self, q: &AuditQuery) -> StoreResult<Vec<LedgerRow>> {
        if q.limit == 0 {
            return Err(StoreError::Invalid("limit must be at least 1".into()));
        }
        self.bounded("audit_search", async {
            let conn = self.conn().await?;
            let rows = conn
                .rows(
                    select_rows!(
                        "WHERE zone_id = $1 AND chain_seq > $2 \
                           AND ($3::timestamptz IS NULL OR occurred_at >= $3) \
                           AND ($4::timestamptz IS NULL OR occurred_at < $4) \
                           AND ($5::text IS NULL OR decision = $5) \
                           AND ($6::text IS NULL OR request_id = $6) \
                         ORDER BY chain_seq, occurred_at, id LIMIT $7"
                    ),
                    &[
                        &q.zone_id,
                        &q.after_seq,
                        &q.since,
                        &q.until,
                        &q.decision,
                        &q.request_id,
                        &i64::from(q.limit),
                    ],
                )
                .await?;
            all(&rows, ledger_row)
        })
        .await
    }

    async fn ingest_alerts(
        &self,
        zone_id: Option<&str>,
        limit: u32,
    ) -> StoreResult<Vec<IngestAlert>> {
        self.bounded("audit_ingest_alerts", async {
            let conn = self.conn().await?;
            let rows = conn
                .rows(
                    "SELECT event_id, zone_id, kind, detail, observed_at FROM audit_ingest_alerts \
                     WHERE $1::text IS NULL OR zone_id = $1 ORDER BY id DESC LIMIT $2",
                    &[&zone_id, &i64::from(limit)],
                )
                .await?;
            all(&rows, |r| {
                const E: &str = "audit_ingest_alert";
                Ok(IngestAlert {
                    event_id: col::<Option<String>>(r, E, "event_id")?.unwrap_or_default(),
                    zone_id: col::<Option<String>>(r, E, "zone_id")?.unwrap_or_default(),
                    kind: col(r, E, "kind")?,
                    detail: col::<Option<String>>(r, E, "detail")?.unwrap_or_default(),
                    observed_at: col(r, E, "observed_at")?,
                })
            })
        })
        .await
    }

    async fn put_checkpoint(&self, cp: &ChainCheckpoint) -> StoreResult<()> {
        self.bounded("audit_put_checkpoint", async {
            let conn = self.conn().await?;
            conn.exec(
                "INSERT INTO audit_chain_checkpoints (zone_id, chain_seq, head_sha256, signature) \
                 VALUES ($1, $2, $3, $4) ON CONFLICT (zone_id, chain_seq) DO NOTHING",
                &[
                    &cp.zone_id,
                    &cp.chain_seq,
                    &cp.content_sha256,
                    &cp.signature,
                ],
            )
            .await?;
            Ok(())
        })
        .await
    }

    async fn latest_checkpoint(&self, zone_id: &str) -> StoreResult<Option<ChainCheckpoint>> {
        self.bounded("audit_latest_checkpoint", async {
            let conn = self.conn().await?;
            conn.row_opt(
                "SELECT zone_id, chain_seq, head_sha256, signature FROM audit_chain_checkpoints \
                 WHERE zone_id = $1 ORDER BY chain_seq DESC LIMIT 1",
                &[&zone_id],
            )
            .await?
            .map(|r| checkpoint(&r))
            .transpose()
        })
        .await
    }
}

#[async_trait]
impl AuditExportStore for PgStore {
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
        let (after_zone, after_seq) = match after {
            Some((z, s)) => (Some(z), s),
            None => (None, 0),
        };
        self.bounded("audit_read_ingest_window", async {
            let conn = self.conn().await?;
            let rows = conn
                .rows(
                    select_rows!(
                        "WHERE ingested_at >= $1 AND ingested_at < $2 \
                           AND ($3::text IS NULL OR (zone_id, chain_seq) > ($3::text, $4::bigint)) \
                         ORDER BY zone_id, chain_seq, occurred_at, id LIMIT $5"
                    ),
                    &[&from, &until, &after_zone, &after_seq, &i64::from(limit)],
                )
                .await?;
            all(&rows, ledger_row)
        })
        .await
    }

    async fn export_watermark(&self, name: &str) -> StoreResult<Option<DateTime<Utc>>> {
        self.bounded("audit_export_watermark", async {
            let conn = self.conn().await?;
            conn.row_opt(
                "SELECT last_exported_hour FROM audit_export_watermark WHERE name = $1",
                &[&name],
            )
            .await?
            .map(|r| col(&r, "audit_export_watermark", "last_exported_hour"))
            .transpose()
        })
        .await
    }

    async fn set_export_watermark(&self, name: &str, hour: DateTime<Utc>) -> StoreResult<()> {
        self.bounded("audit_set_export_watermark", async {
            let conn = self.conn().await?;
            conn.exec(
                "INSERT INTO audit_export_watermark (name, last_exported_hour, updated_at) \
                 VALUES ($1, $2, now()) ON CONFLICT (name) DO UPDATE \
                 SET last_exported_hour = EXCLUDED.last_exported_hour, updated_at = now()",
                &[&name, &hour],
            )
            .await?;
            Ok(())
        })
        .await
    }
}

impl PgStore {
    /// The batched append: one transaction of five statements whatever the batch size (lock,
    /// clock and head, the existing keys of the batch, one multi-row `INSERT`, the alerts).
    /// Duplicates and tampered replays are judged against the keys read under the zone lock
    /// and against earlier events of the same batch, exactly as the row-at-a-time path judges
    /// them. `None` (rolled back) when the `INSERT` met a key that appeared after the check.
    async fn append_batched(
        &self,
        zone_id: &str,
        prepared: &[PreparedEvent],
        key: Option<&AuditHmacKey>,
    ) -> StoreResult<Option<Vec<AppendOutcome>>> {
        self.bounded("audit_append", async {
            let mut tx = Tx::begin(self.conn().await?).await?;
            // INVARIANT: every append to this zone serialises on this lock until commit, so
            // the head read below cannot move before our rows are linked onto it.
            tx.exec("SELECT pg_advisory_xact_lock(hashtext($1))", &[&zone_id])
                .await?;
            // Read after the lock (see `append_per_row`): per zone, ingest time follows seq.
            let head_row = tx
                .row(
                    "SELECT clock_timestamp() AS now, \
                     (SELECT content_sha256 FROM audit_events WHERE zone_id = $1 \
                      ORDER BY chain_seq DESC LIMIT 1) AS head_sha256, \
                     (SELECT max(chain_seq) FROM audit_events WHERE zone_id = $1) AS head_seq",
                    &[&zone_id],
                )
                .await?;
            let now: DateTime<Utc> = col(&head_row, "clock", "now")?;
            let head_sha: Option<String> = col(&head_row, "audit_event", "head_sha256")?;
            let head_seq: Option<i64> = col(&head_row, "audit_event", "head_seq")?;
            let mut head = match (head_sha, head_seq) {
                (Some(content_sha256), Some(chain_seq)) => Some(ChainHead {
                    content_sha256,
                    chain_seq,
                }),
                _ => None,
            };
            let ids: Vec<&str> = prepared.iter().map(|p| p.stored.id.as_str()).collect();
            let ats: Vec<DateTime<Utc>> = prepared.iter().map(|p| p.stored.occurred_at).collect();
            let mut known: HashMap<(String, DateTime<Utc>), String> = HashMap::new();
            for r in tx
                .rows(
                    // One primary-key probe per (id, occurred_at) pair of the batch. Not
                    // `id = ANY(..) AND occurred_at = ANY(..)`: the index scan then probes the
                    // cross product of the two arrays (n² for a batch of n), which made each
                    // batch's lookup take most of a second once the ledger held 10⁵ rows.
                    "SELECT e.id, e.occurred_at, e.content_sha256 \
                     FROM unnest($1::text[], $2::timestamptz[]) AS k(id, occurred_at) \
                     JOIN audit_events e ON e.id = k.id AND e.occurred_at = k.occurred_at",
                    &[&ids, &ats],
                )
                .await?
            {
                known.insert(
                    (
                        col(&r, "audit_event", "id")?,
                        col(&r, "audit_event", "occurred_at")?,
                    ),
                    col(&r, "audit_event", "content_sha256")?,
                );
            }
            let mut outcomes = Vec::with_capacity(prepared.len());
            let mut rows: Vec<LedgerRow> = Vec::with_capacity(prepared.len());
            let mut alerts: Vec<(String, String)> = Vec::new();
            for p in prepared {
                let pk = (p.stored.id.clone(), p.stored.occurred_at);
                if let Some(existing) = known.get(&pk) {
                    match ReplayVerdict::judge(existing, &p.content_sha256) {
                        ReplayVerdict::BenignDuplicate => outcomes.push(AppendOutcome::Duplicate),
                        ReplayVerdict::Tampered => {
                            alerts.push((
                                p.stored.id.clone(),
                                format!("stored={existing} incoming={}", p.content_sha256),
                            ));
                            outcomes.push(AppendOutcome::Tampered {
                                stored: existing.clone(),
                                incoming: p.content_sha256.clone(),
                            });
                        }
                    }
                    continue;
                }
                let row = LedgerRow::append(
                    p.stored.clone(),
                    head.as_ref(),
                    key,
                    p.ingest_signature.clone(),
                    now,
                )
                .map_err(|e| StoreError::Invalid(e.to_string()))?;
                outcomes.push(AppendOutcome::Inserted {
                    chain_seq: row.chain_seq,
                    content_sha256: row.content_sha256.clone(),
                });
                known.insert(pk, row.content_sha256.clone());
                head = Some(row.head());
                rows.push(row);
            }
            if !rows.is_empty() && insert_rows(&mut tx, &rows).await? != rows.len() as u64 {
                // Dropping the transaction rolls it back.
                return Ok(None);
            }
            for (event_id, detail) in &alerts {
                tx.exec(
                    "INSERT INTO audit_ingest_alerts (event_id, zone_id, kind, detail, \
                     observed_at) VALUES ($1, $2, $3, $4, $5)",
                    &[event_id, &zone_id, &ALERT_CONTENT_MISMATCH, detail, &now],
                )
                .await?;
            }
            tx.commit().await?;
            Ok(Some(outcomes))
        })
        .await
    }

    /// The row-at-a-time append: each row inserted with `ON CONFLICT DO NOTHING` and, on a
    /// conflict, judged against the stored row.
    async fn append_per_row(
        &self,
        zone_id: &str,
        prepared: Vec<PreparedEvent>,
        key: Option<&AuditHmacKey>,
    ) -> StoreResult<Vec<AppendOutcome>> {
        self.bounded("audit_append", async {
            let mut tx = Tx::begin(self.conn().await?).await?;
            // INVARIANT: every append to this zone serialises on this lock until commit, so
            // the head read below cannot move before our rows are linked onto it.
            tx.exec("SELECT pg_advisory_xact_lock(hashtext($1))", &[&zone_id])
                .await?;
            // The ingest time is read after the lock (not the transaction's start time, as the
            // reference does): a later append to this zone starts after this one committed,
            // so per zone `ingested_at` follows `chain_seq` and an export by ingest hour holds
            // contiguous runs of each chain (audit::export).
            let now: DateTime<Utc> = col(
                &tx.row("SELECT clock_timestamp() AS now", &[]).await?,
                "clock",
                "now",
            )?;
            let mut head = tx
                .row_opt(
                    "SELECT content_sha256, chain_seq FROM audit_events WHERE zone_id = $1 \
                     ORDER BY chain_seq DESC LIMIT 1",
                    &[&zone_id],
                )
                .await?
                .map(|r| -> StoreResult<ChainHead> {
                    Ok(ChainHead {
                        content_sha256: col(&r, "audit_event", "content_sha256")?,
                        chain_seq: col(&r, "audit_event", "chain_seq")?,
                    })
                })
                .transpose()?;
            let mut outcomes = Vec::with_capacity(prepared.len());
            for PreparedEvent {
                stored,
                content_sha256: incoming_hash,
                ingest_signature: sig,
            } in prepared
            {
                let row = LedgerRow::append(stored, head.as_ref(), key, sig, now)
                    .map_err(|e| StoreError::Invalid(e.to_string()))?;
                if insert_row(&mut tx, &row).await? == 1 {
                    outcomes.push(AppendOutcome::Inserted {
                        chain_seq: row.chain_seq,
                        content_sha256: row.content_sha256.clone(),
                    });
                    head = Some(row.head());
                    continue;
                }
                let existing: String = tx
                    .row_opt(
                        "SELECT content_sha256 FROM audit_events \
                         WHERE id = $1 AND occurred_at = $2",
                        &[&row.event.id, &row.event.occurred_at],
                    )
                    .await?
                    .map(|r| col::<String>(&r, "audit_event", "content_sha256"))
                    .transpose()?
                    .unwrap_or_default();
                match ReplayVerdict::judge(&existing, &incoming_hash) {
                    ReplayVerdict::BenignDuplicate => outcomes.push(AppendOutcome::Duplicate),
                    ReplayVerdict::Tampered => {
                        let detail = format!("stored={existing} incoming={incoming_hash}");
                        tx.exec(
                            "INSERT INTO audit_ingest_alerts (event_id, zone_id, kind, detail, \
                             observed_at) VALUES ($1, $2, $3, $4, $5)",
                            &[
                                &row.event.id,
                                &zone_id,
                                &ALERT_CONTENT_MISMATCH,
                                &detail,
                                &now,
                            ],
                        )
                        .await?;
                        outcomes.push(AppendOutcome::Tampered {
                            stored: existing,
                            incoming: incoming_hash,
                        });
                    }
                }
            }
            tx.commit().await?;
            Ok(outcomes)
        })
        .await
    }
}
