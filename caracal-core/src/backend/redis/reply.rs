//! Replies to stream commands, parsed without panics.
//!
//! Every function takes a reply [`Value`] and returns the typed result or a
//! [`Failure::Other`] naming what was unexpected. Both protocol versions are accepted where
//! they differ (RESP3 answers `XREADGROUP` and `XINFO` with maps where RESP2 has arrays).

use std::time::Duration;

use ::redis::Value;

use super::pool::Failure;
use crate::streams::{
    ConsumerPending, EntryId, Fields, GroupInfo, PendingEntry, PendingSummary, StreamEntry,
};

type Parsed<T> = Result<T, Failure>;

/// A string-like value as text. Stream data is binary-safe in Redis but text in Caracal:
/// bytes that are not UTF-8 are replaced (U+FFFD) rather than refused, so one malformed entry
/// cannot wedge a consumer; a signed entry altered that way fails its `_sig` check and is
/// dead-lettered.
pub(crate) fn text(v: &Value, what: &str) -> Parsed<String> {
    match v {
        Value::BulkString(b) => Ok(String::from_utf8_lossy(b).into_owned()),
        Value::SimpleString(s) => Ok(s.clone()),
        Value::VerbatimString { text, .. } => Ok(text.clone()),
        Value::Okay => Ok("OK".to_owned()),
        Value::Int(i) => Ok(i.to_string()),
        _ => Err(Failure::protocol(what)),
    }
}

/// An integer reply (or a decimal string, which some commands return).
pub(crate) fn int(v: &Value, what: &str) -> Parsed<i64> {
    match v {
        Value::Int(i) => Ok(*i),
        other => text(other, what)?
            .parse()
            .map_err(|_| Failure::protocol(what)),
    }
}

/// A non-negative integer reply.
pub(crate) fn count(v: &Value, what: &str) -> Parsed<u64> {
    u64::try_from(int(v, what)?).map_err(|_| Failure::protocol(what))
}

/// An entry id.
pub(crate) fn id(v: &Value, what: &str) -> Parsed<EntryId> {
    text(v, what)?.parse().map_err(|_| Failure::protocol(what))
}

/// An array's items; nil is an empty array (Redis answers "nothing" with either).
pub(crate) fn items<'a>(v: &'a Value, what: &str) -> Parsed<&'a [Value]> {
    match v {
        Value::Array(a) | Value::Set(a) => Ok(a),
        Value::Nil => Ok(&[]),
        _ => Err(Failure::protocol(what)),
    }
}

/// Key/value pairs from a flat array (RESP2) or a map (RESP3).
fn pairs<'a>(v: &'a Value, what: &str) -> Parsed<Vec<(&'a Value, &'a Value)>> {
    match v {
        Value::Map(m) => Ok(m.iter().map(|(k, v)| (k, v)).collect()),
        other => {
            let flat = items(other, what)?;
            if flat.len() % 2 != 0 {
                return Err(Failure::protocol(what));
            }
            Ok(flat.chunks_exact(2).map(|kv| (&kv[0], &kv[1])).collect())
        }
    }
}

/// One entry, `[id, [field, value, …]]`; a nil field list (an entry deleted while pending)
/// gives empty [`Fields`].
pub(crate) fn entry(v: &Value) -> Parsed<StreamEntry> {
    let [raw_id, raw_fields] = items(v, "stream entry")? else {
        return Err(Failure::protocol("stream entry"));
    };
    let id = id(raw_id, "stream entry id")?;
    let mut fields = Fields::new();
    for (k, v) in pairs(raw_fields, "stream entry fields")? {
        fields.insert(text(k, "field name")?, text(v, "field value")?);
    }
    Ok(StreamEntry { id, fields })
}

/// A list of entries (`XRANGE`, and the entries of `XREADGROUP` / `XAUTOCLAIM`).
pub(crate) fn entries(v: &Value) -> Parsed<Vec<StreamEntry>> {
    items(v, "entry list")?.iter().map(entry).collect()
}

/// `XREADGROUP` for one stream: `[[stream, entries]]` (RESP2), `{stream: entries}` (RESP3),
/// or nil when a blocking read timed out.
pub(crate) fn read_group(v: &Value) -> Parsed<Vec<StreamEntry>> {
    match v {
        Value::Nil => Ok(Vec::new()),
        Value::Map(m) => match m.as_slice() {
            [] => Ok(Vec::new()),
            [(_, list)] => entries(list),
            _ => Err(Failure::protocol("XREADGROUP: more than one stream")),
        },
        other => match items(other, "XREADGROUP")? {
            [] => Ok(Vec::new()),
            [one] => match items(one, "XREADGROUP stream")? {
                [_, list] => entries(list),
                _ => Err(Failure::protocol("XREADGROUP stream")),
            },
            _ => Err(Failure::protocol("XREADGROUP: more than one stream")),
        },
    }
}

/// `XAUTOCLAIM`: `[next, entries, deleted ids]` (Redis 7; 6.2 has no third element).
pub(crate) fn autoclaim(v: &Value) -> Parsed<crate::streams::AutoClaim> {
    let parts = items(v, "XAUTOCLAIM")?;
    let (next, claimed, deleted) = match parts {
        [next, claimed] => (next, claimed, None),
        [next, claimed, deleted] => (next, claimed, Some(deleted)),
        _ => return Err(Failure::protocol("XAUTOCLAIM")),
    };
    let deleted = match deleted {
        Some(d) => items(d, "XAUTOCLAIM deleted")?
            .iter()
            .map(|i| id(i, "XAUTOCLAIM deleted id"))
            .collect::<Parsed<_>>()?,
        None => Vec::new(),
    };
    Ok(crate::streams::AutoClaim {
        next: id(next, "XAUTOCLAIM cursor")?,
        entries: entries(claimed)?,
        deleted,
    })
}

/// `XPENDING stream group`: `[count, min, max, [[consumer, n], …]]`.
pub(crate) fn pending_summary(v: &Value) -> Parsed<PendingSummary> {
    let [n, min, max, per] = items(v, "XPENDING")? else {
        return Err(Failure::protocol("XPENDING"));
    };
    let opt_id = |v: &Value| match v {
        Value::Nil => Ok(None),
        other => id(other, "XPENDING bound").map(Some),
    };
    let per_consumer = items(per, "XPENDING consumers")?
        .iter()
        .map(|c| match items(c, "XPENDING consumer")? {
            [name, n] => Ok(ConsumerPending {
                consumer: text(name, "XPENDING consumer name")?,
                pending: count(n, "XPENDING consumer count")?,
            }),
            _ => Err(Failure::protocol("XPENDING consumer")),
        })
        .collect::<Parsed<Vec<_>>>()?;
    Ok(PendingSummary {
        count: count(n, "XPENDING count")?,
        min: opt_id(min)?,
        max: opt_id(max)?,
        per_consumer,
    })
}

/// `XPENDING stream group start end count [consumer]`: `[[id, consumer, idle ms, n], …]`.
pub(crate) fn pending_range(v: &Value) -> Parsed<Vec<PendingEntry>> {
    items(v, "XPENDING range")?
        .iter()
        .map(|p| match items(p, "XPENDING entry")? {
            [raw_id, consumer, idle, n] => Ok(PendingEntry {
                id: id(raw_id, "XPENDING id")?,
                consumer: text(consumer, "XPENDING consumer")?,
                idle: Duration::from_millis(count(idle, "XPENDING idle")?),
                deliveries: count(n, "XPENDING deliveries")?,
            }),
            _ => Err(Failure::protocol("XPENDING entry")),
        })
        .collect()
}

/// `XINFO GROUPS`: one map per group. `lag` is nil when Redis cannot tell, and absent before
/// Redis 7.
pub(crate) fn groups(v: &Value) -> Parsed<Vec<GroupInfo>> {
    let mut out = items(v, "XINFO GROUPS")?
        .iter()
        .map(|g| {
            let kv = pairs(g, "XINFO group")?;
            let get = |name: &str| -> Parsed<Option<&Value>> {
                for (k, v) in &kv {
                    if text(k, "XINFO key")? == name {
                        return Ok(Some(*v));
                    }
                }
                Ok(None)
            };
            let need = |name: &'static str| -> Parsed<&Value> {
                get(name)?.ok_or_else(|| Failure::protocol(name))
            };
            Ok(GroupInfo {
                name: text(need("name")?, "XINFO name")?,
                consumers: count(need("consumers")?, "XINFO consumers")?,
                pending: count(need("pending")?, "XINFO pending")?,
                last_delivered: id(need("last-delivered-id")?, "XINFO last-delivered-id")?,
                lag: match get("lag")? {
                    None | Some(Value::Nil) => None,
                    Some(v) => Some(count(v, "XINFO lag")?),
                },
            })
        })
        .collect::<Parsed<Vec<_>>>()?;
    // Redis lists groups in creation order; the trait promises name order.
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// `CONFIG GET name`: `[name, value]` (RESP2) or `{name: value}` (RESP3); empty when the
/// parameter is unknown.
pub(crate) fn config_value(v: &Value) -> Parsed<Option<String>> {
    match pairs(v, "CONFIG GET")?.first() {
        Some((_, value)) => Ok(Some(text(value, "CONFIG GET value")?)),
        None => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    #[test]
    fn entries_parse_with_fields_in_order_and_deleted_ones_empty() {
        let v = Value::Array(vec![
            Value::Array(vec![
                bulk("1-0"),
                Value::Array(vec![bulk("b"), bulk("2"), bulk("a"), bulk("1")]),
            ]),
            Value::Array(vec![bulk("2-0"), Value::Nil]),
        ]);
        let got = entries(&v).unwrap();
        assert_eq!(got[0].id, EntryId::new(1, 0));
        assert_eq!(
            got[0].fields.iter().collect::<Vec<_>>(),
            vec![("b", "2"), ("a", "1")]
        );
        assert!(got[1].is_deleted());
    }

    #[test]
    fn malformed_replies_are_errors_not_panics() {
        for bad in [
            Value::Int(3),
            Value::Array(vec![bulk("1-0")]),
            Value::Array(vec![Value::Array(vec![bulk("x"), Value::Nil])]),
            Value::Array(vec![Value::Array(vec![
                bulk("1-0"),
                Value::Array(vec![bulk("odd")]),
            ])]),
        ] {
            assert!(entries(&bad).is_err(), "{bad:?}");
            assert!(read_group(&Value::Array(vec![bad.clone()])).is_err());
        }
        assert!(pending_summary(&Value::Array(vec![])).is_err());
        assert!(pending_range(&Value::Array(vec![Value::Array(vec![bulk("1-0")])])).is_err());
        assert!(autoclaim(&Value::Nil).is_err());
        assert!(groups(&Value::Array(vec![Value::Array(vec![bulk("name")])])).is_err());
        assert!(count(&Value::Int(-1), "n").is_err());
    }

    #[test]
    fn resp3_maps_are_accepted() {
        let v = Value::Map(vec![(
            bulk("s"),
            Value::Array(vec![Value::Array(vec![
                bulk("1-1"),
                Value::Array(vec![bulk("k"), bulk("v")]),
            ])]),
        )]);
        assert_eq!(read_group(&v).unwrap()[0].fields.get("k"), Some("v"));
        let cfg = Value::Map(vec![(bulk("maxmemory-policy"), bulk("noeviction"))]);
        assert_eq!(config_value(&cfg).unwrap().as_deref(), Some("noeviction"));
        assert_eq!(config_value(&Value::Array(vec![])).unwrap(), None);
    }

    #[test]
    fn non_utf8_values_are_replaced_not_refused() {
        let v = Value::BulkString(vec![b'a', 0xff, b'b']);
        assert_eq!(text(&v, "x").unwrap(), "a\u{fffd}b");
    }
}
