//! Where decision events go: the [`AuditSink`] seam.
//!
//! The exchange, the approval plane and the consumers describe what they decided as an
//! [`AuditEvent`] and hand it to a sink. Emission never blocks a decision and never fails it:
//! the production sink ([`super::emitter::AuditEmitter`]) buffers, spills to disk when the
//! stream refuses, and replays later; the in-memory sink here keeps events for tests and for
//! embedded hosts that read them directly.

use std::sync::Mutex;

use super::event::AuditEvent;

/// A destination for audit events.
///
/// Invariant: `emit` returns at once (no network round trip on the caller's path) and never
/// reports failure to the caller; loss is the sink's to count and surface (`/ready`).
pub trait AuditSink: Send + Sync {
    /// Queue one event for delivery.
    fn emit(&self, event: AuditEvent);
}

/// Keeps every event in memory, in emission order.
#[derive(Debug, Default)]
pub struct MemoryAuditSink {
    events: Mutex<Vec<AuditEvent>>,
}

impl MemoryAuditSink {
    /// An empty sink.
    pub fn new() -> Self {
        Self::default()
    }

    /// A copy of the events emitted so far.
    pub fn events(&self) -> Vec<AuditEvent> {
        match self.events.lock() {
            Ok(events) => events.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Remove and return the events emitted so far.
    pub fn take(&self) -> Vec<AuditEvent> {
        match self.events.lock() {
            Ok(mut events) => std::mem::take(&mut *events),
            Err(poisoned) => std::mem::take(&mut *poisoned.into_inner()),
        }
    }
}

impl AuditSink for MemoryAuditSink {
    fn emit(&self, event: AuditEvent) {
        match self.events.lock() {
            Ok(mut events) => events.push(event),
            Err(poisoned) => poisoned.into_inner().push(event),
        }
    }
}
