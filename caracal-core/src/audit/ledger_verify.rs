//! Verifying a stored ledger: stream a zone's rows out of an [`AuditLedger`] page by page into
//! a [`ChainVerifier`], with the zone's newest checkpoint, so the CLI (`caracal audit verify`)
//! and the endpoint (`GET /api/audit/verify`) run the same check in constant memory.

use super::{AuditHmacKey, ChainHead, ChainStart, ChainVerifier, VerifyOptions, VerifyReport};
use crate::store::StoreResult;
use crate::store::audit::{AuditExportStore, AuditLedger};
use chrono::{DateTime, Utc};

/// Rows per `read_chain` page.
pub const VERIFY_PAGE: u32 = 1_000;

/// Verify one zone's whole chain (genesis to tip) against its newest checkpoint. With `key`,
/// chain HMACs and the checkpoint's signature are checked too.
pub async fn verify_ledger_zone(
    ledger: &dyn AuditLedger,
    zone_id: &str,
    key: Option<&AuditHmacKey>,
) -> StoreResult<VerifyReport> {
    verify_paged(ledger, zone_id, key, None, VERIFY_PAGE).await
}

/// Verify the rows of a zone after a head verified earlier (the incremental sweep): the first
/// row must be `head.chain_seq + 1` and link to it; the zone's newest checkpoint is checked
/// when it lies at or after the head. With no head this is [`verify_ledger_zone`]. The
/// report's `head` is `None` when no row follows: keep the previous head then.
pub async fn verify_ledger_zone_after(
    ledger: &dyn AuditLedger,
    zone_id: &str,
    key: Option<&AuditHmacKey>,
    head: Option<&ChainHead>,
) -> StoreResult<VerifyReport> {
    verify_paged(ledger, zone_id, key, head, VERIFY_PAGE).await
}

/// Verify the rows of a zone ingested at or after `since` (the `--since` of
/// `caracal audit verify`): a window starting at the zone's first such row, whose own link is
/// not judged (its predecessor is outside the window) while every later row's is. Per zone,
/// ingest time follows `chain_seq` (both ledgers take it under the zone's append lock), so the
/// window is every row from that one on. A zone with no such row gives an empty report.
pub async fn verify_ledger_zone_since(
    ledger: &dyn AuditLedger,
    exports: &dyn AuditExportStore,
    zone_id: &str,
    key: Option<&AuditHmacKey>,
    since: DateTime<Utc>,
) -> StoreResult<VerifyReport> {
    // Rows come ordered by (zone, seq) after the keyset position (zone, 0): the first one is
    // this zone's first row in the window, if it has one.
    // Any bound past every ingest time that Postgres can store will do.
    let end = DateTime::<Utc>::from_timestamp(253_402_300_799, 0).unwrap_or(since);
    let first = exports
        .read_ingest_window(since, end, Some((zone_id, 0)), 1)
        .await?
        .into_iter()
        .next()
        .filter(|r| r.event.zone_id == zone_id);
    let Some(first) = first else {
        return Ok(ChainVerifier::new(
            zone_id,
            VerifyOptions {
                key: key.cloned(),
                start: ChainStart::Window,
                ..VerifyOptions::default()
            },
        )
        .finish());
    };
    verify_from(
        ledger,
        zone_id,
        key,
        ChainStart::Window,
        first.chain_seq - 1,
        VERIFY_PAGE,
    )
    .await
}

async fn verify_paged(
    ledger: &dyn AuditLedger,
    zone_id: &str,
    key: Option<&AuditHmacKey>,
    head: Option<&ChainHead>,
    page_size: u32,
) -> StoreResult<VerifyReport> {
    let (start, after) = match head {
        Some(h) => (ChainStart::After(h.clone()), h.chain_seq),
        None => (ChainStart::Genesis, 0i64),
    };
    verify_from(ledger, zone_id, key, start, after, page_size).await
}

/// Feed the zone's rows after `after` to a verifier starting as `start`, page by page, with
/// the zone's newest checkpoint.
async fn verify_from(
    ledger: &dyn AuditLedger,
    zone_id: &str,
    key: Option<&AuditHmacKey>,
    start: ChainStart,
    mut after: i64,
    page_size: u32,
) -> StoreResult<VerifyReport> {
    let checkpoint = ledger.latest_checkpoint(zone_id).await?;
    let mut verifier = ChainVerifier::new(
        zone_id,
        VerifyOptions {
            key: key.cloned(),
            start,
            checkpoint,
            ..VerifyOptions::default()
        },
    );
    loop {
        let page = ledger.read_chain(zone_id, after, page_size).await?;
        let Some(last_seq) = page.last().map(|r| r.chain_seq) else {
            break;
        };
        if (page.len() as u64) < u64::from(page_size) {
            for row in &page {
                verifier.push(row);
            }
            break;
        }
        // A full page may end inside a run of rows sharing one seq (possible only through
        // tampering): hold that run back and read it again with the next page, so no copy is
        // skipped. A page that is one run only is taken whole.
        let run = page
            .iter()
            .rev()
            .take_while(|r| r.chain_seq == last_seq)
            .count();
        let take = if run < page.len() {
            page.len() - run
        } else {
            page.len()
        };
        for row in page.iter().take(take) {
            verifier.push(row);
        }
        let next = if take < page.len() {
            last_seq - 1
        } else {
            last_seq
        };
        if next <= after {
            break;
        }
        after = next;
    }
    Ok(verifier.finish())
}

/// Verify `zone` only, or every zone of the ledger (in the ledger's zone order).
pub async fn verify_ledger(
    ledger: &dyn AuditLedger,
    zone: Option<&str>,
    key: Option<&AuditHmacKey>,
) -> StoreResult<Vec<VerifyReport>> {
    let zones = match zone {
        Some(z) => vec![z.to_owned()],
        None => ledger.ledger_zones().await?,
    };
    let mut reports = Vec::with_capacity(zones.len());
    for z in zones {
        reports.push(verify_ledger_zone(ledger, &z, key).await?);
    }
    Ok(reports)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::audit::{AuditEvent, ChainCheckpoint, ChainHead, LedgerRow};
    use crate::store::StoreError;
    use crate::store::audit::{AppendOutcome, AuditQuery, IncomingEvent, IngestAlert};
    use async_trait::async_trait;
    use chrono::Utc;

    /// Rows as given, served with `read_chain`'s contract (seq > after, ascending, limit).
    struct Rows(Vec<LedgerRow>);

    fn refused<T>() -> StoreResult<T> {
        Err(StoreError::Invalid("not in this stub".into()))
    }

    #[async_trait]
    impl AuditLedger for Rows {
        async fn append(
            &self,
            _: &str,
            _: &[IncomingEvent],
            _: Option<&AuditHmacKey>,
        ) -> StoreResult<Vec<AppendOutcome>> {
            refused()
        }
        async fn chain_head(&self, _: &str) -> StoreResult<Option<ChainHead>> {
            refused()
        }
        async fn read_chain(&self, _: &str, after: i64, limit: u32) -> StoreResult<Vec<LedgerRow>> {
            Ok(self
                .0
                .iter()
                .filter(|r| r.chain_seq > after)
                .take(limit as usize)
                .cloned()
                .collect())
        }
        async fn ledger_zones(&self) -> StoreResult<Vec<String>> {
            Ok(vec!["z".into()])
        }
        async fn search_audit(&self, _: &AuditQuery) -> StoreResult<Vec<LedgerRow>> {
            refused()
        }
        async fn ingest_alerts(&self, _: Option<&str>, _: u32) -> StoreResult<Vec<IngestAlert>> {
            refused()
        }
        async fn put_checkpoint(&self, _: &ChainCheckpoint) -> StoreResult<()> {
            refused()
        }
        async fn latest_checkpoint(&self, _: &str) -> StoreResult<Option<ChainCheckpoint>> {
            Ok(None)
        }
    }

    fn chain(n: usize) -> Vec<LedgerRow> {
        let mut rows: Vec<LedgerRow> = Vec::new();
        for i in 0..n {
            let json =
                format!(r#"{{"id":"e{i}","zone_id":"z","occurred_at":"2026-05-21T12:00:00Z"}}"#);
            let event = AuditEvent::parse(json.as_bytes()).unwrap();
            let head = rows.last().map(LedgerRow::head);
            rows.push(LedgerRow::append(event, head.as_ref(), None, None, Utc::now()).unwrap());
        }
        rows
    }

    #[tokio::test]
    async fn pages_cover_every_row() {
        for page in [1, 2, 3, 10, 11] {
            let r = verify_paged(&Rows(chain(10)), "z", None, None, page)
                .await
                .unwrap();
            assert!(r.is_clean(), "page {page}: {r:?}");
            assert_eq!(r.rows_checked, 10, "page {page}");
        }
    }

    #[tokio::test]
    async fn a_duplicate_seq_across_a_page_boundary_is_seen() {
        let mut rows = chain(6);
        // A forged copy of row 3 (same seq), placed right after it.
        let mut copy = rows[2].clone();
        copy.event.id = "forged".into();
        rows.insert(3, copy);
        for page in [2, 3, 4, 100] {
            let r = verify_paged(&Rows(rows.clone()), "z", None, None, page)
                .await
                .unwrap();
            assert_eq!(r.rows_checked, 7, "page {page}: {r:?}");
            assert_eq!(r.duplicate_seqs, 1, "page {page}: {r:?}");
        }
    }

    #[tokio::test]
    async fn an_incremental_run_continues_from_a_verified_head() {
        let rows = chain(10);
        let head = rows[5].head();
        let r = verify_paged(&Rows(rows.clone()), "z", None, Some(&head), 3)
            .await
            .unwrap();
        assert!(r.is_clean(), "{r:?}");
        assert_eq!((r.rows_checked, r.first_seq), (4, Some(7)));
        // A head that the stored rows no longer continue is a break.
        let mut forged = head.clone();
        forged.content_sha256 = "0".repeat(64);
        let r = verify_paged(&Rows(rows), "z", None, Some(&forged), 3)
            .await
            .unwrap();
        assert_eq!(r.chain_breaks, 1, "{r:?}");
    }
}
