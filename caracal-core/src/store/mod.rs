//! Storage traits and their in-memory implementations.
//!
//! Each aggregate the services persist has a trait here, written against the domain types of
//! [`crate::model`]. Two implementations honour each trait with the same contract: the
//! in-memory one in [`memory`] (always available; the embedded default and the test double)
//! and the Postgres one behind the `postgres` feature. One contract test suite
//! (`caracal-core/tests/contract/`) runs against both.
//!
//! ## Contract rules every implementation keeps
//!
//! - **Zone isolation.** Every zone-scoped method takes the zone id and never returns or
//!   changes a row of another zone; a row of another zone is "not found".
//! - **Unique keys** are enforced by the store and reported as [`StoreError::Conflict`] with
//!   the constraint's name (e.g. `zone_slug`), never silently overwritten. Row ids are
//!   unique over every zone like primary keys; inserting a taken id is a `Conflict` named
//!   after the id: `zone_id`, `application_id`, `resource_id`, `provider_id`,
//!   `admin_token_id`, `authority_record_id`, `signing_key_id`, `policy_id`,
//!   `policy_version_id`, `policy_set_id`, `policy_set_version_id`, `approval_id`,
//!   `session_id`, `delegation_edge_id`.
//! - **Updates and archives.** An `update_*` never changes a row's id, zone, `created_at`,
//!   `created_by`/`created_via_operator` or `archived_at` (only `updated_by` and
//!   `updated_via_operator` of the attribution); an `archive_*` sets both `archived_at` and
//!   `updated_at` to the given instant.
//! - **Time.** Instants passed in (`now`, `at`) are stored and compared as given.
//! - **Atomicity.** Methods documented as atomic change every listed record or none, and
//!   change-plus-outbox pairs are written in one transaction, so an event is published iff its
//!   change committed.
//! - **Fail closed.** A backend failure is [`StoreError::Unavailable`]; callers on a path
//!   that grants authority deny on it.
//!
//! ## Layout
//!
//! - [`directory`]: zones, applications, resources, providers, sealed secrets, admin tokens.
//! - [`authority`]: authority records and their `parent_id` lineage.
//! - [`coordinator`]: sessions, delegation edges, graph epochs and idempotency receipts,
//!   changed through a per-zone unit of work.
//! - [`policy`]: policies, versions, sets, set versions and the per-zone binding.
//! - [`approvals`]: human approval holds with single decision and single consumption.
//! - [`audit`]: the hash-chained audit ledger.
//! - [`admin_audit`]: the hash-chained admin audit chain (one record per mutating request).
//! - [`keys`]: zone signing keys (sealed).
//! - [`outbox`]: the transactional outbox.
//! - [`ephemeral`]: expiring keys for single-use ids, nonces and rate windows.
//! - [`leader`]: one leader per background job across replicas (try-locks per job name).
//! - [`memory`]: the in-memory implementation of all of the above.

pub mod admin_audit;
pub mod approvals;
pub mod audit;
pub mod authority;
pub mod coordinator;
pub mod directory;
pub mod ephemeral;
pub mod keys;
pub mod leader;
pub mod memory;
pub mod outbox;
pub mod policy;

use chrono::{DateTime, Utc};

/// A storage failure.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The record does not exist in this zone (or is not visible to the caller).
    #[error("{entity} not found")]
    NotFound {
        /// The kind of record, e.g. `zone`.
        entity: &'static str,
    },
    /// A unique key or a conditional update refused the write.
    #[error("conflict on {constraint}")]
    Conflict {
        /// The constraint's name, e.g. `zone_slug` or `policy_set_name`.
        constraint: &'static str,
    },
    /// The request itself is invalid for the store (e.g. a bad cursor).
    #[error("invalid: {0}")]
    Invalid(String),
    /// The backend could not be reached or failed; retryable unless stated.
    #[error("store unavailable: {message}")]
    Unavailable {
        /// Whether retrying the same call may succeed (connection loss, serialisation
        /// failure, pool timeout).
        retryable: bool,
        /// What failed, without secrets.
        message: String,
    },
    /// A bound on work (depth, size) was exceeded; fails closed.
    #[error("limit exceeded: {0}")]
    LimitExceeded(&'static str),
}

impl StoreError {
    /// A `NotFound` for `entity`.
    pub fn not_found(entity: &'static str) -> Self {
        StoreError::NotFound { entity }
    }

    /// A `Conflict` on `constraint`.
    pub fn conflict(constraint: &'static str) -> Self {
        StoreError::Conflict { constraint }
    }

    /// Whether retrying may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            StoreError::Unavailable {
                retryable: true,
                ..
            }
        )
    }
}

/// `Result` with [`StoreError`].
pub type StoreResult<T> = Result<T, StoreError>;

/// A keyset position: lists are ordered `created_at DESC, id DESC` and the next page starts
/// strictly after the cursor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor {
    /// `created_at` of the last row returned.
    pub created_at: DateTime<Utc>,
    /// `id` of the last row returned.
    pub id: String,
}

/// A page request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageRequest {
    /// Maximum rows (the services validate 1..=500; the stores refuse 0 as `Invalid`).
    pub limit: u32,
    /// Start after this position.
    pub after: Option<Cursor>,
}

impl PageRequest {
    /// The first page of `limit` rows.
    pub fn first(limit: u32) -> Self {
        Self { limit, after: None }
    }
}

impl Default for PageRequest {
    fn default() -> Self {
        Self::first(200)
    }
}

/// A page of rows with the cursor of the next page (present iff the page is full).
#[derive(Debug, Clone, PartialEq)]
pub struct Page<T> {
    /// The rows, newest first.
    pub items: Vec<T>,
    /// Where the next page starts.
    pub next: Option<Cursor>,
}

/// Whether rows that were archived are listed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Listing {
    /// Only rows with no `archived_at`.
    #[default]
    Active,
    /// Only archived rows.
    Archived,
}
