//! The outbox relay: publishes committed outbox rows to their streams.
//!
//! Producers write an outbox row in the transaction of their change
//! ([`crate::store::outbox::OutboxStore`]); this relay claims due rows under a
//! lease, adds `outbox_id`, signs the message (`_sig`) under the service's
//! [`SigPolicy`], `XADD`s it, and only then marks the row dispatched. A crash between the
//! `XADD` and the mark republishes after the lease, so delivery is at least once and
//! consumers dedupe on `outbox_id`. A row that keeps failing backs off exponentially and is
//! marked dead after [`RelayConfig::max_attempts`] claims (an operator requeues it).

use std::sync::Arc;
use std::time::Duration;

use chrono::Duration as ChronoDuration;
use tokio::sync::watch;

use super::signature::SigPolicy;
use super::{Fields, Streams};
use crate::clock::SharedClock;
use crate::store::outbox::{OutboxRow, OutboxStore};

/// Relay settings.
#[derive(Debug, Clone)]
pub struct RelayConfig {
    /// This worker's name on leases.
    pub worker: String,
    /// Rows per claim.
    pub batch: u32,
    /// Lease of a claim.
    pub lease: Duration,
    /// Time between passes when idle. It bounds how long a committed revocation waits before
    /// it is published, so it is most of the revocation's propagation to the Gateways (SPEC §6:
    /// within 100 ms p99 at every replica); an idle pass is one indexed `SKIP LOCKED` claim
    /// that finds nothing.
    pub interval: Duration,
    /// Claims before a row is marked dead.
    pub max_attempts: i32,
    /// First retry delay; doubled per attempt up to [`RelayConfig::max_backoff`].
    pub min_backoff: Duration,
    /// Longest retry delay.
    pub max_backoff: Duration,
}

impl RelayConfig {
    /// Defaults: batches of 100, 30 s lease, 40 ms idle interval, 10 attempts, 1 s..5 min.
    pub fn new(worker: impl Into<String>) -> Self {
        Self {
            worker: worker.into(),
            batch: 100,
            lease: Duration::from_secs(30),
            interval: Duration::from_millis(40),
            max_attempts: 10,
            min_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(300),
        }
    }
}

/// What one pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RelayReport {
    /// Rows published and marked.
    pub published: usize,
    /// Rows whose publish failed (retried later or dead).
    pub failed: usize,
}

/// Publishes outbox rows (see the module docs).
pub struct OutboxRelay {
    outbox: Arc<dyn OutboxStore>,
    streams: Arc<dyn Streams>,
    sig: SigPolicy,
    clock: SharedClock,
    config: RelayConfig,
}

impl std::fmt::Debug for OutboxRelay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OutboxRelay")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl OutboxRelay {
    /// A relay from `outbox` to `streams`, signing under `sig`.
    pub fn new(
        outbox: Arc<dyn OutboxStore>,
        streams: Arc<dyn Streams>,
        sig: SigPolicy,
        clock: SharedClock,
        config: RelayConfig,
    ) -> Self {
        Self {
            outbox,
            streams,
            sig,
            clock,
            config,
        }
    }

    /// The message of `row` as published: its fields, `outbox_id`, and `_sig`.
    pub fn frame(&self, row: &OutboxRow) -> Fields {
        let mut fields = Fields::with_capacity(row.message.fields.len() + 2);
        for (k, v) in &row.message.fields {
            fields.insert(k.clone(), v.clone());
        }
        fields.insert("outbox_id", row.id.clone());
        self.sig.sign_into(&row.message.stream, &mut fields);
        fields
    }

    fn backoff(&self, attempts: i32) -> Duration {
        let exp = u32::try_from(attempts.saturating_sub(1).clamp(0, 20)).unwrap_or(20);
        self.config
            .min_backoff
            .saturating_mul(2u32.saturating_pow(exp))
            .min(self.config.max_backoff)
    }

    /// One pass: claim due rows and publish them. A store error ends the pass.
    pub async fn run_once(&self) -> Result<RelayReport, crate::store::StoreError> {
        let now = self.clock.now();
        let lease = ChronoDuration::from_std(self.config.lease)
            .unwrap_or_else(|_| ChronoDuration::seconds(30));
        let rows = self
            .outbox
            .claim(&self.config.worker, self.config.batch, lease, now)
            .await?;
        let mut report = RelayReport::default();
        for row in rows {
            let fields = self.frame(&row);
            match self.streams.xadd(&row.message.stream, &fields).await {
                Ok(_) => {
                    self.outbox
                        .mark_dispatched(&row.id, self.clock.now())
                        .await?;
                    report.published += 1;
                }
                Err(e) => {
                    report.failed += 1;
                    let now = self.clock.now();
                    let retry_at = (row.attempts < self.config.max_attempts).then(|| {
                        now + ChronoDuration::from_std(self.backoff(row.attempts))
                            .unwrap_or_else(|_| ChronoDuration::seconds(1))
                    });
                    tracing::warn!(outbox_id = %row.id, stream = %row.message.stream,
                        error = %e, dead = retry_at.is_none(), "outbox publish failed");
                    self.outbox
                        .mark_failed(&row.id, &e.to_string(), retry_at, now)
                        .await?;
                }
            }
        }
        Ok(report)
    }

    /// Run passes until `shutdown` turns true: immediately again after a full batch, else
    /// after [`RelayConfig::interval`].
    pub fn spawn(
        self: Arc<Self>,
        mut shutdown: watch::Receiver<bool>,
    ) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            loop {
                let busy = match self.run_once().await {
                    Ok(r) => r.published + r.failed >= self.config.batch as usize,
                    Err(e) => {
                        tracing::warn!(error = %e, "outbox relay pass failed");
                        false
                    }
                };
                if *shutdown.borrow() {
                    break;
                }
                if !busy {
                    tokio::select! {
                        () = tokio::time::sleep(self.config.interval) => {}
                        _ = shutdown.wait_for(|s| *s) => break,
                    }
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::FakeClock;
    use crate::store::memory::MemoryStore;
    use crate::store::outbox::OutboxMessage;
    use crate::streams::signature::StreamKey;
    use crate::streams::{EntryId, MemoryStreams};

    fn key() -> StreamKey {
        StreamKey::from_hex(&"0123456789abcdef".repeat(4)).unwrap()
    }

    #[tokio::test]
    async fn publishes_signed_frames_with_outbox_id_and_marks_them() {
        let clock: SharedClock = Arc::new(FakeClock::at_fixture_epoch());
        let store = Arc::new(MemoryStore::with_clock(clock.clone()));
        let streams = Arc::new(MemoryStreams::new(clock.clone()));
        let id = store
            .enqueue(
                &OutboxMessage::new(
                    "caracal.keys.invalidate",
                    vec![("zone_id".into(), "z1".into())],
                ),
                clock.now(),
            )
            .await
            .unwrap();
        let relay = OutboxRelay::new(
            store.clone(),
            streams.clone(),
            SigPolicy::Verify(key()),
            clock.clone(),
            RelayConfig::new("t"),
        );
        let report = relay.run_once().await.unwrap();
        assert_eq!(
            report,
            RelayReport {
                published: 1,
                failed: 0
            }
        );
        let entries = streams
            .range("caracal.keys.invalidate", EntryId::MIN, EntryId::MAX, None)
            .await
            .unwrap();
        assert_eq!(entries.len(), 1);
        let fields = &entries[0].fields;
        assert_eq!(fields.get("zone_id"), Some("z1"));
        assert_eq!(fields.get("outbox_id"), Some(id.as_str()));
        SigPolicy::Verify(key())
            .check("caracal.keys.invalidate", fields.iter())
            .unwrap();
        assert!(
            store
                .get_outbox(&id)
                .await
                .unwrap()
                .unwrap()
                .dispatched_at
                .is_some()
        );
        // Nothing left to publish.
        assert_eq!(relay.run_once().await.unwrap(), RelayReport::default());
    }
}
