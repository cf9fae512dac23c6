//! The one place Postgres and pool failures become [`StoreError`]s.
//!
//! - `23505 unique_violation` → [`StoreError::Conflict`] named after the constraint, using the
//!   names the storage traits document (the baseline's constraint and unique-index names were
//!   chosen to match; the few that differ are translated in [`conflict_name`]).
//! - `23502 not_null_violation`, `23503 foreign_key_violation`, `23514 check_violation` and
//!   class `22` (data exceptions) → [`StoreError::Invalid`]: the request itself cannot be
//!   stored (a reference to a record that is not in the zone, a value outside its column's
//!   rules). The message names the constraint, never the row's values.
//! - A closed connection, an I/O error, a pool timeout, and SQLSTATEs `40001`, `40P01`,
//!   `55P03`, `57014`, `57P01`–`57P03`, class `08`, `53300`, `53400` →
//!   [`StoreError::Unavailable`] with `retryable: true`.
//! - Anything else (including a row that does not decode) → `Unavailable` with
//!   `retryable: false`.
//!
//! Messages never carry secrets: no `DETAIL` or `CONTEXT` of a server error (they echo row
//! values) and no server message of class `22` (it may echo the offending input).

use std::time::Duration;

use tokio_postgres::error::{DbError, SqlState};

use crate::store::StoreError;

/// Translate a database-side constraint name into the conflict name the traits document.
///
/// Primary keys, which the traits name after the id (`session_id`), and the few unique
/// constraints whose SQL name differs from the trait's, are mapped explicitly; a name this
/// table does not know becomes `unique`, so a new constraint is still a `Conflict`.
pub(crate) fn conflict_name(constraint: &str) -> &'static str {
    match constraint {
        // Names shared verbatim by the schema and the traits.
        "zone_slug" => "zone_slug",
        "application_name" => "application_name",
        "resource_identifier" => "resource_identifier",
        "provider_identifier" => "provider_identifier",
        "admin_token_sha256" => "admin_token_sha256",
        "policy_name" => "policy_name",
        "policy_set_name" => "policy_set_name",
        "policy_version_number" => "policy_version_number",
        "policy_set_version_number" => "policy_set_version_number",
        "policy_set_binding_one_active" => "policy_set_binding_one_active",
        "approval_live_binding" => "approval_live_binding",
        "zone_signing_key_version" => "zone_signing_key_version",
        "outbox_dedupe" => "outbox_dedupe",
        // The receipt's primary key carries a `_key` suffix in SQL.
        "idempotency_receipt_key" => "idempotency_receipt",
        // Primary keys, and the `(zone_id, id)` keys that back zone-aware foreign keys (a
        // duplicate id in another zone trips one or the other).
        "zones_pkey" => "zone_id",
        "applications_pkey" | "applications_zone_id_key" => "application_id",
        "resources_pkey" | "resources_zone_id_key" => "resource_id",
        "providers_pkey" | "providers_zone_id_key" => "provider_id",
        "admin_tokens_pkey" => "admin_token_id",
        "zone_signing_keys_pkey" => "signing_key_id",
        "authority_records_pkey" | "authority_records_zone_id_key" => "authority_record_id",
        "sessions_pkey" | "sessions_zone_id_key" => "session_id",
        "delegation_edges_pkey" | "delegation_edges_zone_id_key" => "delegation_edge_id",
        "policies_pkey" | "policies_zone_id_key" => "policy_id",
        "policy_versions_pkey" | "policy_versions_zone_id_key" => "policy_version_id",
        "policy_sets_pkey" | "policy_sets_zone_id_key" => "policy_set_id",
        "policy_set_versions_pkey"
        | "policy_set_versions_zone_id_key"
        | "policy_set_versions_set_id_key" => "policy_set_version_id",
        "policy_set_bindings_pkey" => "policy_set_binding",
        "approvals_pkey" => "approval_id",
        "outbox_pkey" => "outbox_id",
        "admin_audit_events_pkey" => "admin_audit_id",
        _ => "unique",
    }
}

/// Whether a SQLSTATE means "try again": the server is going away or starting, the
/// connection broke, too many connections, a serialisation failure or deadlock, or a lock or
/// statement timeout.
pub(crate) fn is_retryable_state(code: &SqlState) -> bool {
    let c = code.code();
    c.starts_with("08")
        || matches!(
            c,
            "40001" | "40P01" | "55P03" | "57014" | "57P01" | "57P02" | "57P03" | "53300" | "53400"
        )
}

/// A `tokio_postgres` error as a [`StoreError`].
pub(crate) fn pg_error(e: tokio_postgres::Error) -> StoreError {
    if let Some(db) = e.as_db_error() {
        return db_error(db);
    }
    if e.is_closed() {
        return StoreError::Unavailable {
            retryable: true,
            message: "the Postgres connection is closed".to_owned(),
        };
    }
    // An I/O error (connect refused, reset, timeout) is the network's fault: retryable.
    // Anything else without a server error (a value that does not convert, an unexpected
    // protocol message) will fail again the same way.
    let io = std::error::Error::source(&e).is_some_and(|s| s.is::<std::io::Error>());
    StoreError::Unavailable {
        retryable: io,
        message: format!("postgres: {}", describe_client_error(&e)),
    }
}

/// A server-reported error as a [`StoreError`].
pub(crate) fn db_error(db: &DbError) -> StoreError {
    let code = db.code();
    if *code == SqlState::UNIQUE_VIOLATION {
        return StoreError::Conflict {
            constraint: conflict_name(db.constraint().unwrap_or_default()),
        };
    }
    if *code == SqlState::FOREIGN_KEY_VIOLATION {
        return StoreError::Invalid(format!(
            "{}: the record refers to one that does not exist in its zone",
            db.constraint().unwrap_or("foreign key")
        ));
    }
    if *code == SqlState::NOT_NULL_VIOLATION || *code == SqlState::CHECK_VIOLATION {
        return StoreError::Invalid(format!("{} (SQLSTATE {})", safe_message(db), code.code()));
    }
    if code.code().starts_with("22") {
        return StoreError::Invalid(safe_message(db));
    }
    StoreError::Unavailable {
        retryable: is_retryable_state(code),
        message: format!("postgres: {}", safe_message(db)),
    }
}

/// The server's message when it cannot echo input, else the SQLSTATE alone. `DETAIL` and
/// `CONTEXT` are never included: they carry the failing row's values.
fn safe_message(db: &DbError) -> String {
    let code = db.code().code();
    if code.starts_with("22") {
        // Data exceptions quote the offending input ("invalid input syntax for type ...").
        let mut s = format!("a value was rejected by the database (SQLSTATE {code})");
        if let Some(column) = db.column() {
            s.push_str(&format!(" in column {column}"));
        }
        s
    } else {
        format!("{} (SQLSTATE {code})", db.message())
    }
}

/// A client-side error with its cause (the `Display` of `tokio_postgres::Error` alone is
/// often just "error connecting to server").
pub(crate) fn describe_client_error(e: &tokio_postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        return safe_message(db);
    }
    match std::error::Error::source(e) {
        Some(cause) => format!("{e}: {cause}"),
        None => e.to_string(),
    }
}

/// A row that does not decode: the schema and this code disagree, or the row was edited by
/// hand. Not retryable; the caller fails closed.
pub(crate) fn malformed(entity: &str, what: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable {
        retryable: false,
        message: format!("malformed {entity} row: {what}"),
    }
}

/// An operation that did not finish within the store's operation timeout.
pub(crate) fn timed_out(what: &str, after: Duration) -> StoreError {
    StoreError::Unavailable {
        retryable: true,
        message: format!("postgres: {what} did not finish within {after:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retryable_states() {
        for c in [
            SqlState::T_R_SERIALIZATION_FAILURE,
            SqlState::T_R_DEADLOCK_DETECTED,
            SqlState::ADMIN_SHUTDOWN,
            SqlState::CRASH_SHUTDOWN,
            SqlState::CANNOT_CONNECT_NOW,
            SqlState::CONNECTION_FAILURE,
            SqlState::CONNECTION_EXCEPTION,
            SqlState::TOO_MANY_CONNECTIONS,
            SqlState::CONFIGURATION_LIMIT_EXCEEDED,
            SqlState::LOCK_NOT_AVAILABLE,
            SqlState::QUERY_CANCELED,
        ] {
            assert!(is_retryable_state(&c), "{c:?}");
        }
        for c in [
            SqlState::SYNTAX_ERROR,
            SqlState::UNDEFINED_TABLE,
            SqlState::RESTRICT_VIOLATION,
            SqlState::DISK_FULL,
        ] {
            assert!(!is_retryable_state(&c), "{c:?}");
        }
    }

    #[test]
    fn trait_names_for_keys() {
        assert_eq!(conflict_name("zone_slug"), "zone_slug");
        assert_eq!(
            conflict_name("idempotency_receipt_key"),
            "idempotency_receipt"
        );
        assert_eq!(conflict_name("sessions_pkey"), "session_id");
        assert_eq!(
            conflict_name("authority_records_pkey"),
            "authority_record_id"
        );
        assert_eq!(conflict_name("delegation_edges_pkey"), "delegation_edge_id");
        assert_eq!(conflict_name("something_new"), "unique");
    }
}
