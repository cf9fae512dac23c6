//! The nine streams, their provisioned consumer groups, bounds and dead-letter names.
//!
//! [`STREAMS`] is the single table the provisioner, its verifier and the docs read. Wire names
//! are the reference system's, byte for byte (audit-streams §1.2; ops doc "Operate Redis
//! Streams").
//!
//! # Per-replica groups
//!
//! Redis delivers each entry to one consumer of a group. A stream whose consumers keep a
//! per-process cache (the STS's policy bundles and zone keys, the Gateway's revocation set)
//! must reach every replica, so each replica reads in its own group `<base>:<instance>`
//! ([`instance_group`]): `opa-engine:<instance>` and `sts-keys:<instance>` for the STS,
//! `gateway-revocation:<host>` for the Gateway. The reference shares `opa-engine` and
//! `sts-keys` between replicas, so with two STS replicas a policy activation reached one at
//! once and the other only at its safety poll, and a key rotation left the other replicas on
//! their 15-minute key cache.
//!
//! These groups are created by the consumer itself (at `$`, `MKSTREAM`: the process loads
//! fresh state at start-up, so earlier entries are not needed) and never by the provisioner,
//! which cannot know the instances. [`StreamSpec::instance_groups`] lists their bases so the
//! verifier can tell them from unknown groups. The shared `opa-engine` and `sts-keys` groups
//! are still provisioned, as the reference does, so provisioning creates the streams; no
//! consumer of this edition reads them. `sts-revocation` stays shared: its handler only writes
//! Postgres, once per revocation, and keeps no per-process state.

use std::borrow::Cow;

use super::GroupStart;

/// Audit events from the STS, Gateway, API and outboxes; consumed by the audit ingestor.
pub const AUDIT_EVENTS: &str = "caracal.audit.events";
/// The audit ingestor's dead-letter stream.
pub const AUDIT_EVENTS_DLQ: &str = "caracal.audit.events.dlq";
/// Policy-set activation: the STS reloads the zone's bundle.
pub const POLICY_INVALIDATE: &str = "caracal.policy.invalidate";
/// Revocations of authority records, sessions and delegation edges.
pub const SESSIONS_REVOKE: &str = "caracal.sessions.revoke";
/// Signing-key rotation: the STS flushes the zone's key cache.
pub const KEYS_INVALIDATE: &str = "caracal.keys.invalidate";
/// Session lifecycle (spawn, suspend, resume, terminate).
pub const AGENTS_LIFECYCLE: &str = "caracal.agents.lifecycle";
/// Invocation lifecycle from the Coordinator.
pub const INVOCATIONS_LIFECYCLE: &str = "caracal.invocations.lifecycle";
/// Delegation-edge changes and graph epochs.
pub const DELEGATIONS_INVALIDATE: &str = "caracal.delegations.invalidate";
/// Provider rate-limit stream; only ever seeded with one entry.
pub const PROVIDERS_RATELIMIT: &str = "caracal.providers.ratelimit";

/// Group of the audit ingestor on [`AUDIT_EVENTS`].
pub const GROUP_AUDIT_INGESTOR: &str = "audit-ingestor";
/// SIEM export group on [`AUDIT_EVENTS`] (provisioned for compatibility; no consumer yet).
pub const GROUP_SIEM_EXPORT: &str = "siem-export";
/// Observer group on [`AUDIT_EVENTS_DLQ`] (provisioned for compatibility).
pub const GROUP_AUDIT_DLQ_OBSERVER: &str = "audit-dlq-observer";
/// The reference's shared STS policy-reload group on [`POLICY_INVALIDATE`], and the base of
/// the per-replica groups the STS reads in ([`opa_engine_group`]).
pub const GROUP_OPA_ENGINE: &str = "opa-engine";
/// The STS revocation group on [`SESSIONS_REVOKE`].
pub const GROUP_STS_REVOCATION: &str = "sts-revocation";
/// The reference's shared STS key-cache group on [`KEYS_INVALIDATE`], and the base of the
/// per-replica groups the STS reads in ([`sts_keys_group`]).
pub const GROUP_STS_KEYS: &str = "sts-keys";
/// The Coordinator lifecycle relay on [`AGENTS_LIFECYCLE`].
pub const GROUP_COORDINATOR_RELAY: &str = "coordinator-relay";
/// Observer group on [`INVOCATIONS_LIFECYCLE`] (provisioned for compatibility).
pub const GROUP_INVOCATIONS_OBSERVER: &str = "invocations-observer";
/// Observer group on [`DELEGATIONS_INVALIDATE`] (provisioned for compatibility).
pub const GROUP_DELEGATIONS_OBSERVER: &str = "delegations-observer";

/// Base of the Gateway's per-host revocation groups on [`SESSIONS_REVOKE`]
/// ([`gateway_revocation_group`]).
pub const GROUP_GATEWAY_REVOCATION: &str = "gateway-revocation";

/// Separator of a per-replica group's base and instance: `<base>:<instance>`.
pub const INSTANCE_GROUP_SEPARATOR: char = ':';

/// The per-replica group of `instance` under `base`: `<base>:<instance>` (see the module docs).
///
/// `instance` must be stable across restarts of the same replica (the pod or host name): a
/// restarted replica then finds its own group and drains what was pending in it, and a new
/// name leaves the old group behind until it is removed (`XGROUP DESTROY`).
pub fn instance_group(base: &str, instance: &str) -> String {
    format!("{base}{INSTANCE_GROUP_SEPARATOR}{instance}")
}

/// The STS policy-reload group of replica `instance` on [`POLICY_INVALIDATE`]:
/// `opa-engine:<instance>`.
pub fn opa_engine_group(instance: &str) -> String {
    instance_group(GROUP_OPA_ENGINE, instance)
}

/// The STS key-cache group of replica `instance` on [`KEYS_INVALIDATE`]: `sts-keys:<instance>`.
pub fn sts_keys_group(instance: &str) -> String {
    instance_group(GROUP_STS_KEYS, instance)
}

/// The Gateway revocation group of host `host` on [`SESSIONS_REVOKE`]:
/// `gateway-revocation:<host>`.
pub fn gateway_revocation_group(host: &str) -> String {
    instance_group(GROUP_GATEWAY_REVOCATION, host)
}

/// Suffix of a control stream's dead-letter stream: `<stream>.dead`.
pub const DEAD_LETTER_SUFFIX: &str = ".dead";

/// A consumer group the provisioner creates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupSpec {
    /// Group name.
    pub name: &'static str,
    /// Where the group starts when it is first created (an existing group is never moved).
    pub start: GroupStart,
}

/// The entry the provisioner adds to a stream when it is empty (`XADD … MAXLEN ~ n * …`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Seed {
    /// The entry's fields.
    pub fields: &'static [(&'static str, &'static str)],
    /// Approximate `MAXLEN` applied with the seed, so the stream stays about this long.
    pub max_len: u64,
}

/// One of the nine streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamSpec {
    /// Stream name (the Redis key).
    pub name: &'static str,
    /// Groups created with `MKSTREAM`; `BUSYGROUP` counts as success.
    pub groups: &'static [GroupSpec],
    /// Bases of the per-replica groups `<base>:<instance>` that consumers create for
    /// themselves on this stream ([`instance_group`]); never provisioned.
    pub instance_groups: &'static [&'static str],
    /// Intended length bound: exceeding it is a warning only. The provisioner never trims or
    /// recreates a stream (and the audit stream is never trimmed below what its ingest group
    /// has acknowledged, SPEC §5.1).
    pub bound: Option<u64>,
    /// Entry added by the provisioner when the stream is empty, if any.
    pub seed: Option<Seed>,
}

impl StreamSpec {
    /// Whether a stream of length `len` is over its intended bound (warn, never trim).
    pub fn exceeds_bound(&self, len: u64) -> bool {
        self.bound.is_some_and(|bound| len > bound)
    }

    /// Whether the provisioner creates group `name` on this stream.
    pub fn has_group(&self, name: &str) -> bool {
        self.groups.iter().any(|g| g.name == name)
    }

    /// If `name` is a per-replica group of this stream (`<base>:<instance>` with a base of
    /// [`StreamSpec::instance_groups`] and a non-empty instance), its base and instance.
    pub fn instance_group_of<'a>(&self, name: &'a str) -> Option<(&'static str, &'a str)> {
        let (base, instance) = name.split_once(INSTANCE_GROUP_SEPARATOR)?;
        let base = self.instance_groups.iter().copied().find(|b| *b == base)?;
        (!instance.is_empty()).then_some((base, instance))
    }
}

const fn latest(name: &'static str) -> GroupSpec {
    // The reference provisioner creates every group at `$`: a fresh group does not replay
    // history that was published before the deployment existed.
    GroupSpec {
        name,
        start: GroupStart::Latest,
    }
}

/// The nine streams, in the reference provisioner's order.
pub const STREAMS: &[StreamSpec] = &[
    StreamSpec {
        name: AUDIT_EVENTS,
        groups: &[latest(GROUP_AUDIT_INGESTOR), latest(GROUP_SIEM_EXPORT)],
        instance_groups: &[],
        bound: Some(1_000_000),
        seed: None,
    },
    StreamSpec {
        name: AUDIT_EVENTS_DLQ,
        groups: &[latest(GROUP_AUDIT_DLQ_OBSERVER)],
        instance_groups: &[],
        bound: Some(100_000),
        seed: None,
    },
    StreamSpec {
        name: POLICY_INVALIDATE,
        groups: &[latest(GROUP_OPA_ENGINE)],
        instance_groups: &[GROUP_OPA_ENGINE],
        bound: Some(10_000),
        seed: None,
    },
    StreamSpec {
        name: SESSIONS_REVOKE,
        groups: &[latest(GROUP_STS_REVOCATION)],
        instance_groups: &[GROUP_GATEWAY_REVOCATION],
        bound: Some(10_000),
        seed: None,
    },
    StreamSpec {
        name: KEYS_INVALIDATE,
        groups: &[latest(GROUP_STS_KEYS)],
        instance_groups: &[GROUP_STS_KEYS],
        bound: Some(10_000),
        seed: None,
    },
    StreamSpec {
        name: AGENTS_LIFECYCLE,
        groups: &[latest(GROUP_COORDINATOR_RELAY)],
        instance_groups: &[],
        bound: None,
        seed: None,
    },
    StreamSpec {
        name: INVOCATIONS_LIFECYCLE,
        groups: &[latest(GROUP_INVOCATIONS_OBSERVER)],
        instance_groups: &[],
        bound: None,
        seed: None,
    },
    StreamSpec {
        name: DELEGATIONS_INVALIDATE,
        groups: &[latest(GROUP_DELEGATIONS_OBSERVER)],
        instance_groups: &[],
        bound: None,
        seed: None,
    },
    StreamSpec {
        name: PROVIDERS_RATELIMIT,
        groups: &[],
        instance_groups: &[],
        // Kept near one entry by the seed's own MAXLEN; approximate trimming can leave a
        // whole node behind, so a numeric bound here would only produce false warnings.
        bound: None,
        seed: Some(Seed {
            fields: &[("init", "1")],
            max_len: 1,
        }),
    },
];

/// The table row for stream `name`, if it is one of the nine.
pub fn stream_spec(name: &str) -> Option<&'static StreamSpec> {
    STREAMS.iter().find(|s| s.name == name)
}

/// The dead-letter stream for messages consumed from `stream`.
///
/// The audit stream has its own, [`AUDIT_EVENTS_DLQ`] (`.dlq`, written by the audit ingestor);
/// every other stream's consumers use `<stream>.dead`, which is not provisioned and has no
/// group (the first dead letter creates it).
pub fn dead_letter_stream(stream: &str) -> Cow<'static, str> {
    if stream == AUDIT_EVENTS {
        Cow::Borrowed(AUDIT_EVENTS_DLQ)
    } else {
        Cow::Owned(format!("{stream}{DEAD_LETTER_SUFFIX}"))
    }
}

/// Whether a Redis `maxmemory-policy` value is safe for streams: `noeviction`, or unset.
///
/// Anything else (`allkeys-*`, `volatile-*`) can evict pending stream entries and revocation
/// keys. Consumers warn at start-up and never refuse to start (reference §1.1).
pub fn eviction_policy_is_safe(policy: &str) -> bool {
    let policy = policy.trim();
    policy.is_empty() || policy.eq_ignore_ascii_case("noeviction")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn nine_streams_with_the_reference_groups() {
        assert_eq!(STREAMS.len(), 9);
        let names: HashSet<_> = STREAMS.iter().map(|s| s.name).collect();
        assert_eq!(names.len(), 9, "stream names are unique");
        let groups: Vec<(&str, &str)> = STREAMS
            .iter()
            .flat_map(|s| s.groups.iter().map(move |g| (s.name, g.name)))
            .collect();
        assert_eq!(
            groups,
            vec![
                ("caracal.audit.events", "audit-ingestor"),
                ("caracal.audit.events", "siem-export"),
                ("caracal.audit.events.dlq", "audit-dlq-observer"),
                ("caracal.policy.invalidate", "opa-engine"),
                ("caracal.sessions.revoke", "sts-revocation"),
                ("caracal.keys.invalidate", "sts-keys"),
                ("caracal.agents.lifecycle", "coordinator-relay"),
                ("caracal.invocations.lifecycle", "invocations-observer"),
                ("caracal.delegations.invalidate", "delegations-observer"),
            ]
        );
        assert!(
            STREAMS
                .iter()
                .flat_map(|s| s.groups)
                .all(|g| g.start == GroupStart::Latest)
        );
    }

    #[test]
    fn per_replica_groups_are_named_in_one_place_and_recognised() {
        assert_eq!(opa_engine_group("sts-a"), "opa-engine:sts-a");
        assert_eq!(sts_keys_group("sts-a"), "sts-keys:sts-a");
        assert_eq!(gateway_revocation_group("gw-1"), "gateway-revocation:gw-1");
        let per_stream: Vec<(&str, &[&str])> = STREAMS
            .iter()
            .filter(|s| !s.instance_groups.is_empty())
            .map(|s| (s.name, s.instance_groups))
            .collect();
        assert_eq!(
            per_stream,
            vec![
                ("caracal.policy.invalidate", &["opa-engine"][..]),
                ("caracal.sessions.revoke", &["gateway-revocation"][..]),
                ("caracal.keys.invalidate", &["sts-keys"][..]),
            ]
        );
        let policy = stream_spec(POLICY_INVALIDATE).unwrap();
        let keys = stream_spec(KEYS_INVALIDATE).unwrap();
        let revoke = stream_spec(SESSIONS_REVOKE).unwrap();
        assert_eq!(
            policy.instance_group_of(&opa_engine_group("pod:7")),
            Some(("opa-engine", "pod:7")),
            "only the first separator splits"
        );
        assert_eq!(
            keys.instance_group_of(&sts_keys_group("pod-a")),
            Some(("sts-keys", "pod-a"))
        );
        assert_eq!(
            revoke.instance_group_of(&gateway_revocation_group("h")),
            Some(("gateway-revocation", "h"))
        );
        // The shared groups, another stream's base, an empty instance, and an unknown base
        // are not per-replica groups of the stream.
        assert_eq!(policy.instance_group_of(GROUP_OPA_ENGINE), None);
        assert_eq!(policy.instance_group_of(&sts_keys_group("pod-a")), None);
        assert_eq!(policy.instance_group_of("opa-engine:"), None);
        assert_eq!(
            revoke.instance_group_of(&instance_group(GROUP_STS_REVOCATION, "a")),
            None
        );
        assert_eq!(
            stream_spec(AUDIT_EVENTS)
                .unwrap()
                .instance_group_of(&gateway_revocation_group("h")),
            None
        );
    }

    #[test]
    fn bounds_warn_only_above() {
        let audit = stream_spec(AUDIT_EVENTS).unwrap();
        assert!(!audit.exceeds_bound(1_000_000));
        assert!(audit.exceeds_bound(1_000_001));
        assert!(audit.has_group(GROUP_AUDIT_INGESTOR));
        let lifecycle = stream_spec(AGENTS_LIFECYCLE).unwrap();
        assert!(!lifecycle.exceeds_bound(u64::MAX));
        assert_eq!(
            stream_spec(PROVIDERS_RATELIMIT)
                .unwrap()
                .seed
                .unwrap()
                .fields,
            &[("init", "1")]
        );
        assert!(stream_spec("caracal.nope").is_none());
    }

    #[test]
    fn dead_letter_names() {
        assert_eq!(dead_letter_stream(AUDIT_EVENTS), "caracal.audit.events.dlq");
        assert_eq!(
            dead_letter_stream(SESSIONS_REVOKE),
            "caracal.sessions.revoke.dead"
        );
    }

    #[test]
    fn eviction_policy() {
        assert!(eviction_policy_is_safe("noeviction"));
        assert!(eviction_policy_is_safe(""));
        assert!(!eviction_policy_is_safe("allkeys-lru"));
        assert!(!eviction_policy_is_safe("volatile-ttl"));
    }
}
