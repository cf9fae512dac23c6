//! W3C trace context and baggage (fixtures `trace-context.headers.valid.json` and
//! `w3c-baggage.valid.json`).
//!
//! Caracal propagates its lineage in baggage members named `caracal.*`
//! (`caracal.agent_session`, `caracal.delegation_edge`, `caracal.parent_edge`,
//! `caracal.session`, `caracal.hop`). The Gateway strips caller-supplied `caracal.*` members,
//! so the parser here keeps member order and exposes the members by name.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::WireError;

/// The trace headers a connector propagates.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TraceHeaders {
    /// `traceparent`.
    pub traceparent: String,
    /// `tracestate`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tracestate: Option<String>,
    /// `baggage`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baggage: Option<String>,
}

/// A validated W3C `traceparent` (version `00`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceParent {
    /// 16-byte trace id.
    pub trace_id: [u8; 16],
    /// 8-byte parent span id.
    pub parent_id: [u8; 8],
    /// Trace flags.
    pub flags: u8,
}

impl TraceParent {
    /// Parse and validate `00-<32 hex>-<16 hex>-<2 hex>`: lowercase hex only, and neither id
    /// may be all zeros (W3C Trace Context §3.2).
    pub fn parse(s: &str) -> Result<Self, WireError> {
        let bad = |reason: &str| WireError::Malformed {
            what: "traceparent",
            reason: reason.to_owned(),
        };
        let parts: Vec<&str> = s.split('-').collect();
        let [version, trace, parent, flags] = parts.as_slice() else {
            return Err(bad("expected four dash-separated fields"));
        };
        if *version != "00" {
            return Err(bad("unsupported version"));
        }
        let lower_hex = |p: &str, n: usize| {
            p.len() == n && p.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        };
        if !lower_hex(trace, 32) || !lower_hex(parent, 16) || !lower_hex(flags, 2) {
            return Err(bad("fields must be lowercase hex of the right length"));
        }
        let mut tp = TraceParent {
            trace_id: [0; 16],
            parent_id: [0; 8],
            flags: 0,
        };
        hex::decode_to_slice(trace, &mut tp.trace_id).map_err(|_| bad("trace id"))?;
        hex::decode_to_slice(parent, &mut tp.parent_id).map_err(|_| bad("parent id"))?;
        let mut f = [0u8; 1];
        hex::decode_to_slice(flags, &mut f).map_err(|_| bad("flags"))?;
        tp.flags = f[0];
        if tp.trace_id == [0; 16] || tp.parent_id == [0; 8] {
            return Err(bad("all-zero id"));
        }
        Ok(tp)
    }

    /// The trace id as 32 lowercase hex characters.
    pub fn trace_id_hex(&self) -> String {
        hex::encode(self.trace_id)
    }
}

/// Maximum baggage header length we accept (W3C Baggage §3.3.1 limit).
pub const MAX_BAGGAGE_BYTES: usize = 8192;
/// Maximum number of baggage members we accept.
pub const MAX_BAGGAGE_MEMBERS: usize = 180;

/// A parsed `baggage` header: members in order, properties kept verbatim.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Baggage {
    members: Vec<BaggageMember>,
}

/// One baggage member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BaggageMember {
    /// The key.
    pub key: String,
    /// The value, as sent (percent-encoding is not undone).
    pub value: String,
    /// Everything after the first `;`, verbatim, if present.
    pub properties: Option<String>,
}

impl Baggage {
    /// Parse a `baggage` header value. Empty list members are skipped; a member without `=`,
    /// an empty key, or a header over the size limits is an error.
    pub fn parse(header: &str) -> Result<Self, WireError> {
        let bad = |reason: &str| WireError::Malformed {
            what: "baggage",
            reason: reason.to_owned(),
        };
        if header.len() > MAX_BAGGAGE_BYTES {
            return Err(bad("header too large"));
        }
        let mut members = Vec::new();
        for raw in header.split(',') {
            let raw = raw.trim();
            if raw.is_empty() {
                continue;
            }
            let (kv, properties) = match raw.split_once(';') {
                Some((kv, p)) => (kv, Some(p.trim().to_owned())),
                None => (raw, None),
            };
            let (k, v) = kv
                .split_once('=')
                .ok_or_else(|| bad("member without '='"))?;
            let key = k.trim();
            if key.is_empty() || !key.bytes().all(is_token_byte) {
                return Err(bad("invalid member key"));
            }
            members.push(BaggageMember {
                key: key.to_owned(),
                value: v.trim().to_owned(),
                properties,
            });
            if members.len() > MAX_BAGGAGE_MEMBERS {
                return Err(bad("too many members"));
            }
        }
        Ok(Self { members })
    }

    /// The members in header order.
    pub fn members(&self) -> &[BaggageMember] {
        &self.members
    }

    /// The value of the last member named `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.members
            .iter()
            .rev()
            .find(|m| m.key == key)
            .map(|m| m.value.as_str())
    }

    /// Drop every member whose key starts with `prefix` (the Gateway removes caller-supplied
    /// `caracal.` members before adding its own).
    pub fn remove_prefixed(&mut self, prefix: &str) {
        self.members.retain(|m| !m.key.starts_with(prefix));
    }

    /// Append a member.
    pub fn push(&mut self, key: impl Into<String>, value: impl Into<String>) {
        self.members.push(BaggageMember {
            key: key.into(),
            value: value.into(),
            properties: None,
        });
    }

    /// Key → value, last member wins (the shape of `w3c-baggage.valid.json`).
    pub fn to_map(&self) -> BTreeMap<String, String> {
        self.members
            .iter()
            .map(|m| (m.key.clone(), m.value.clone()))
            .collect()
    }
}

impl std::fmt::Display for Baggage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, m) in self.members.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{}={}", m.key, m.value)?;
            if let Some(p) = &m.properties {
                write!(f, ";{p}")?;
            }
        }
        Ok(())
    }
}

/// RFC 7230 `tchar`, the alphabet of baggage keys.
fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparent_validation() {
        let tp =
            TraceParent::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").unwrap();
        assert_eq!(tp.trace_id_hex(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(tp.flags, 1);
        for bad in [
            "",
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
        ] {
            assert!(TraceParent::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn baggage_strip_and_rebuild() {
        let mut b = Baggage::parse("caracal.session=evil, tenant=example;p=1 ,").unwrap();
        b.remove_prefixed("caracal.");
        b.push("caracal.hop", "1");
        assert_eq!(b.to_string(), "tenant=example;p=1,caracal.hop=1");
        assert!(Baggage::parse("novalue").is_err());
        assert!(Baggage::parse("=x").is_err());
        assert!(Baggage::parse(&"a=b,".repeat(5000)).is_err());
    }
}
