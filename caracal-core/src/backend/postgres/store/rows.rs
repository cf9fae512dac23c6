//! Decoding rows without panics, and the text forms of the model's enumerations.
//!
//! `Row::get` panics when a column is missing or does not convert; every read here goes
//! through [`col`], which turns that into a typed error naming the entity and column (never
//! the value). Enumerations are stored as their wire strings (the schema's `CHECK`s list the
//! same strings), converted through serde so there is one spelling of each.

use chrono::{DateTime, Utc};
use postgres_types::FromSql;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};
use tokio_postgres::Row;

use super::error::malformed;
use crate::model::Attribution;
use crate::store::{Cursor, Page, StoreError, StoreResult};

/// Column `name` of `row`, or a typed "malformed row" error.
pub(crate) fn col<'a, T: FromSql<'a>>(row: &'a Row, entity: &str, name: &str) -> StoreResult<T> {
    row.try_get(name)
        .map_err(|e| malformed(entity, format_args!("column {name}: {e}")))
}

/// The four attribution columns every administered record carries.
pub(crate) fn attribution(row: &Row, entity: &str) -> StoreResult<Attribution> {
    Ok(Attribution {
        created_by: col(row, entity, "created_by")?,
        created_via_operator: col(row, entity, "created_via_operator")?,
        updated_by: col(row, entity, "updated_by")?,
        updated_via_operator: col(row, entity, "updated_via_operator")?,
    })
}

/// A text column holding an enumeration's wire string.
pub(crate) fn col_enum<T: DeserializeOwned>(row: &Row, entity: &str, name: &str) -> StoreResult<T> {
    let raw: String = col(row, entity, name)?;
    parse_enum(&raw).ok_or_else(|| malformed(entity, format_args!("column {name}: unknown value")))
}

/// A jsonb column holding a JSON object.
pub(crate) fn col_object(row: &Row, entity: &str, name: &str) -> StoreResult<Map<String, Value>> {
    match col::<Value>(row, entity, name)? {
        Value::Object(map) => Ok(map),
        _ => Err(malformed(
            entity,
            format_args!("column {name}: not a JSON object"),
        )),
    }
}

/// A jsonb column decoded into `T`.
pub(crate) fn col_json<T: DeserializeOwned>(row: &Row, entity: &str, name: &str) -> StoreResult<T> {
    let value: Value = col(row, entity, name)?;
    serde_json::from_value(value).map_err(|e| malformed(entity, format_args!("column {name}: {e}")))
}

/// An enumeration from its wire string.
pub(crate) fn parse_enum<T: DeserializeOwned>(raw: &str) -> Option<T> {
    serde_json::from_value(Value::String(raw.to_owned())).ok()
}

/// An enumeration's wire string (the value its serde form serialises to).
pub(crate) fn enum_str<T: Serialize>(value: &T) -> StoreResult<String> {
    match serde_json::to_value(value) {
        Ok(Value::String(s)) => Ok(s),
        _ => Err(StoreError::Invalid(
            "an enumeration has no string form".to_owned(),
        )),
    }
}

/// A value as a jsonb parameter.
pub(crate) fn to_json<T: Serialize>(value: &T, what: &str) -> StoreResult<Value> {
    serde_json::to_value(value).map_err(|_| StoreError::Invalid(format!("{what} is not JSON")))
}

/// The `LIMIT` of a page: at least 1 (callers validate 1..=500; a zero limit would page
/// forever on empty pages).
pub(crate) fn limit(n: u32) -> StoreResult<i64> {
    if n == 0 {
        return Err(StoreError::Invalid(
            "page limit must be at least 1".to_owned(),
        ));
    }
    Ok(i64::from(n))
}

/// Assemble a keyset page: `next` is present iff the page is full (the trait's rule), and
/// points after the last row.
pub(crate) fn page<T>(
    items: Vec<T>,
    limit: u32,
    key: impl Fn(&T) -> (DateTime<Utc>, String),
) -> Page<T> {
    let full = limit > 0 && items.len() >= limit as usize;
    let next = if full {
        items.last().map(|last| {
            let (created_at, id) = key(last);
            Cursor { created_at, id }
        })
    } else {
        None
    };
    Page { items, next }
}

/// The keyset parameters of a page request: `(created_at, id)` of the cursor, or `None`s.
pub(crate) fn after(page: &crate::store::PageRequest) -> (Option<DateTime<Utc>>, Option<&str>) {
    match &page.after {
        Some(c) => (Some(c.created_at), Some(c.id.as_str())),
        None => (None, None),
    }
}

/// Decode every row with `f`.
pub(crate) fn all<T>(rows: &[Row], f: impl Fn(&Row) -> StoreResult<T>) -> StoreResult<Vec<T>> {
    rows.iter().map(f).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::provider::ProviderKind;
    use crate::model::session::SessionStatus;

    #[test]
    fn enums_round_trip_through_their_wire_strings() {
        assert_eq!(
            enum_str(&ProviderKind::OAuth2ClientCredentials).unwrap(),
            "oauth2_client_credentials"
        );
        assert_eq!(
            parse_enum::<ProviderKind>("bearer_token"),
            Some(ProviderKind::BearerToken)
        );
        assert_eq!(
            parse_enum::<SessionStatus>("suspended"),
            Some(SessionStatus::Suspended)
        );
        assert_eq!(parse_enum::<SessionStatus>("Suspended"), None);
    }

    #[test]
    fn pages_have_a_next_cursor_iff_full() {
        let t = DateTime::<Utc>::from_timestamp(1_779_364_800, 0).unwrap();
        let key = |s: &&str| (t, (*s).to_owned());
        let p = page(vec!["a", "b"], 2, key);
        assert_eq!(p.next.unwrap().id, "b");
        let p = page(vec!["a"], 2, key);
        assert!(p.next.is_none());
        let p = page(Vec::<&str>::new(), 0, key);
        assert!(p.next.is_none());
    }
}
