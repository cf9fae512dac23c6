//! The Gateway's metrics (reference `gateway.md` §8.2): every `caracal_gateway_*` counter and
//! gauge, rendered as Prometheus text for `GET /metrics` and as a flat JSON object for
//! `GET /metrics.json`.
//!
//! Why the counters are atomics on the service rather than `metrics` facade counters: the
//! facade's registry is process-global, so two Gateways in one process (the scale-out drills,
//! an embedding host) would add into each other's figures, and `/metrics.json` needs the
//! values back, which the facade does not give. Each name is written once, in the `counters!` macro:
//! the JSON key is the field name, the Prometheus name is `caracal_gateway_<key>_total`.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

use serde_json::{Map, Value};

/// Defines [`Counters`] from `field` names (the JSON keys of §8.2).
macro_rules! counters {
    ($($(#[$doc:meta])* $field:ident),* $(,)?) => {
        /// The Gateway's own counters (monotonic; one set per [`GatewayService`](crate::GatewayService)).
        #[derive(Debug, Default)]
        pub struct Counters {
            $($(#[$doc])* pub $field: AtomicU64,)*
        }

        impl Counters {
            /// `(json key, value)` of every counter, in the reference's order.
            pub fn values(&self) -> Vec<(&'static str, u64)> {
                vec![$((stringify!($field), self.$field.load(Ordering::Relaxed)),)*]
            }
        }
    };
}

counters! {
    /// Every proxied request (pre-flight included).
    requests_total,
    /// Requests whose upstream answered (any status), counted when the body copy ends.
    requests_allowed,
    /// Pre-flight, circuit and STS refusals.
    requests_denied,
    /// Check 2.
    denials_missing_auth,
    /// Checks 3, 4.
    denials_bad_bearer,
    /// Check 5.
    denials_expiring,
    /// Checks 6–9.
    denials_bad_routing,
    /// Check 10.
    denials_path_traversal,
    /// Check 11.
    denials_signature,
    /// Check 12.
    denials_jti_replay,
    /// Check 13.
    denials_revoked,
    /// Check 1.
    denials_revocation_stale,
    /// Failed exchanges (open circuit included).
    sts_exchange_errors,
    /// Times the circuit opened.
    sts_circuit_opened,
    /// Requests refused by an open circuit.
    sts_circuit_fast_fail,
    /// Failures after the exchange (upstream refused, unreachable, or the copy failed).
    upstream_errors,
    /// Revocation stream messages applied.
    revocation_messages,
    /// Revocation messages applied on a redelivery (pending after a restart, or claimed).
    revocation_pending_replayed,
    /// Revocation messages dead-lettered (no anchor after the 5th delivery).
    revocation_dead_letters,
    /// Revocation messages dropped for a bad `_sig`.
    revocation_invalid_signatures,
    /// Successful snapshot reloads.
    revocation_reloads,
    /// Failed snapshot reloads.
    revocation_reload_errors,
}

/// Gauges the request path and the revocation consumer set (the rest are read at scrape time).
#[derive(Debug, Default)]
pub struct Gauges {
    /// Last STS exchange latency in ms (`sts_exchange_latency_ms`).
    pub sts_latency_ms: AtomicU64,
    /// Now minus the stream-id time of the last applied revocation message, in ms
    /// (`revocation_propagation_seconds`).
    pub revocation_propagation_ms: AtomicU64,
}

/// Everything one Gateway counts.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Counters.
    pub counters: Counters,
    /// Gauges set as events happen.
    pub gauges: Gauges,
}

impl Counters {
    /// Add one to `counter`.
    pub fn inc(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// One figure of the exposition.
#[derive(Debug, Clone, PartialEq)]
pub struct Figure {
    /// The `/metrics.json` key.
    pub key: &'static str,
    /// The Prometheus name.
    pub name: String,
    /// `counter` or `gauge`.
    pub kind: Kind,
    /// `# HELP` text.
    pub help: &'static str,
    /// The value.
    pub value: f64,
}

/// Prometheus metric type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Monotonic.
    Counter,
    /// Point in time.
    Gauge,
}

/// Prometheus name of a counter's JSON key (`requests_total` keeps its suffix).
pub fn counter_name(key: &str) -> String {
    if key.ends_with("_total") {
        format!("caracal_gateway_{key}")
    } else {
        format!("caracal_gateway_{key}_total")
    }
}

/// Render `figures` as Prometheus text (HELP/TYPE lines, no labels).
pub fn render_text(figures: &[Figure]) -> String {
    let mut out = String::new();
    for f in figures {
        let kind = match f.kind {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
        };
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}",
            name = f.name,
            help = f.help,
            value = f.value
        );
    }
    out
}

/// Render `figures` as the flat JSON object of `/metrics.json` (integers where whole).
pub fn render_json(figures: &[Figure]) -> Value {
    let mut m = Map::new();
    for f in figures {
        let v = if f.value.fract() == 0.0 && f.value.abs() < 9.0e15 {
            Value::from(f.value as i64)
        } else {
            serde_json::Number::from_f64(f.value).map_or(Value::Null, Value::Number)
        };
        m.insert(f.key.to_owned(), v);
    }
    Value::Object(m)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn names_follow_the_reference() {
        assert_eq!(
            counter_name("requests_total"),
            "caracal_gateway_requests_total"
        );
        assert_eq!(
            counter_name("denials_jti_replay"),
            "caracal_gateway_denials_jti_replay_total"
        );
        let c = Counters::default();
        Counters::inc(&c.requests_denied);
        Counters::inc(&c.requests_denied);
        let values = c.values();
        assert_eq!(values.len(), 22);
        assert!(values.contains(&("requests_denied", 2)));
        assert!(values.contains(&("requests_total", 0)));
    }

    #[test]
    fn renders_text_and_json() {
        let figures = [
            Figure {
                key: "requests_total",
                name: "caracal_gateway_requests_total".into(),
                kind: Kind::Counter,
                help: "requests",
                value: 3.0,
            },
            Figure {
                key: "revocation_snapshot_age_seconds",
                name: "caracal_gateway_revocation_snapshot_age_seconds".into(),
                kind: Kind::Gauge,
                help: "age",
                value: 1.5,
            },
        ];
        let text = render_text(&figures);
        assert!(text.contains(
            "# TYPE caracal_gateway_requests_total counter\ncaracal_gateway_requests_total 3\n"
        ));
        assert!(text.contains("# HELP caracal_gateway_revocation_snapshot_age_seconds age"));
        let json = render_json(&figures);
        assert_eq!(json["requests_total"], 3);
        assert_eq!(json["revocation_snapshot_age_seconds"], 1.5);
    }
}
