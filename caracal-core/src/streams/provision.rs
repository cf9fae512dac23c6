//! Stream provisioning: create the nine streams and their groups of [`names::STREAMS`], and
//! verify them.
//!
//! [`provision`] is the reference's `provision-streams.sh`, idempotent:
//! `XGROUP CREATE <stream> <group> $ MKSTREAM` per group (`BUSYGROUP` counts as success, and
//! an existing group is never moved), a warning, never a trim, when a stream is longer than
//! its intended bound, and the one-entry seed of `caracal.providers.ratelimit` (`init=1`,
//! `MAXLEN ~ 1`). The seed is written only when the stream is empty, so a second run changes
//! nothing at all (the reference re-adds it on every run).
//!
//! [`verify`] is the reference's `verify.sh`: every stream exists and holds a stream, every
//! expected group is present, the seeded stream has its entry, and re-provisioning is a
//! no-op: `XGROUP CREATE` on each group found answers `BUSYGROUP`. It never creates what is
//! missing (the reference re-ran the provisioner, which would repair what it checks); a
//! missing group is reported by name instead, and [`provision`] repairs it.
//!
//! Per-replica groups (`opa-engine:<instance>`, `sts-keys:<instance>`,
//! `gateway-revocation:<host>`; [`names::instance_group`]) are created by each replica's
//! consumer, never here. [`verify`] lists them in [`StreamVerified::instance_groups`] with
//! their consumers and pending counts, and they are never a [`Problem`]: a replica that is
//! gone leaves its group behind, and what it held pending were invalidations of a cache that
//! died with the process (a replica restarted under the same name drains them; a new one
//! loads fresh state at start-up). Remove such a group with
//! `XGROUP DESTROY <stream> <base>:<instance>`.

use std::fmt;

use super::names::{self, StreamSpec};
use super::{GroupCreated, StreamError, StreamResult, Streams, Trim};

/// What [`provision`] did to one group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupProvisioned {
    /// Group name.
    pub group: &'static str,
    /// Created now, or found (left exactly as it was).
    pub outcome: GroupCreated,
}

/// What [`provision`] did to one stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamProvisioned {
    /// Stream name.
    pub stream: &'static str,
    /// Its groups, in table order (up to the first failure).
    pub groups: Vec<GroupProvisioned>,
    /// `Some(true)` if the seed entry was written now, `Some(false)` if the stream already
    /// had entries, `None` for a stream without a seed.
    pub seeded: Option<bool>,
    /// Its length after provisioning (`None` if it could not be read).
    pub len: Option<u64>,
    /// Whether it is longer than its intended bound (a warning: nothing is trimmed).
    pub over_bound: bool,
    /// A failure that is not transient, e.g. the key holds another type.
    pub error: Option<String>,
}

/// The result of [`provision`], one row per stream in table order.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ProvisionReport {
    /// The nine streams.
    pub streams: Vec<StreamProvisioned>,
}

impl ProvisionReport {
    /// Whether every stream and group is in place.
    pub fn is_ok(&self) -> bool {
        self.streams.iter().all(|s| s.error.is_none())
    }

    /// Whether this run changed anything (created a group or a stream, or wrote the seed).
    pub fn changed_anything(&self) -> bool {
        self.streams.iter().any(|s| {
            s.seeded == Some(true) || s.groups.iter().any(|g| g.outcome == GroupCreated::Created)
        })
    }
}

/// A transient error aborts the whole run; any other is recorded against its stream.
fn recorded(e: StreamError) -> StreamResult<String> {
    if e.is_retryable() {
        Err(e)
    } else {
        Ok(e.to_string())
    }
}

async fn provision_one(
    streams: &dyn Streams,
    spec: &'static StreamSpec,
) -> StreamResult<StreamProvisioned> {
    let mut row = StreamProvisioned {
        stream: spec.name,
        groups: Vec::with_capacity(spec.groups.len()),
        seeded: None,
        len: None,
        over_bound: false,
        error: None,
    };
    for group in spec.groups {
        match streams
            .group_create(spec.name, group.name, group.start)
            .await
        {
            Ok(outcome) => row.groups.push(GroupProvisioned {
                group: group.name,
                outcome,
            }),
            Err(e) => {
                row.error = Some(recorded(e)?);
                return Ok(row);
            }
        }
    }
    if let Some(seed) = spec.seed {
        let seeded = async {
            if streams.len(spec.name).await? > 0 {
                return Ok(false);
            }
            // Check-then-add is not atomic: two provisioners racing may both seed, and the
            // seed's own `MAXLEN ~` keeps the stream at about one entry regardless.
            let fields = seed.fields.iter().copied().collect();
            let trim = Trim::MaxLen {
                max: seed.max_len,
                approximate: true,
            };
            streams.xadd_with(spec.name, &fields, trim).await?;
            Ok::<_, StreamError>(true)
        };
        match seeded.await {
            Ok(seeded) => row.seeded = Some(seeded),
            Err(e) => {
                row.error = Some(recorded(e)?);
                return Ok(row);
            }
        }
    }
    match streams.len(spec.name).await {
        Ok(len) => {
            row.len = Some(len);
            row.over_bound = spec.exceeds_bound(len);
            if row.over_bound {
                tracing::warn!(
                    stream = spec.name, len, bound = ?spec.bound,
                    "stream is longer than its intended bound; it is not trimmed: plan an \
                     explicit retention"
                );
            }
        }
        Err(e) => row.error = Some(recorded(e)?),
    }
    Ok(row)
}

/// Create the nine streams and their groups, idempotently (see the module docs).
///
/// A transient error (Redis unreachable) aborts with `Err`; a stream that cannot be
/// provisioned for another reason (a key of another type) is reported in its row and the
/// others are still provisioned.
pub async fn provision(streams: &dyn Streams) -> StreamResult<ProvisionReport> {
    let mut report = ProvisionReport::default();
    for spec in names::STREAMS {
        report.streams.push(provision_one(streams, spec).await?);
    }
    Ok(report)
}

/// Whether a stream key exists and holds a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamState {
    /// It exists and is a stream.
    Present,
    /// There is no such key.
    Missing,
    /// The key holds another type.
    NotAStream,
}

/// One expected group as [`verify`] found it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupVerified {
    /// Group name.
    pub group: &'static str,
    /// Whether `XINFO GROUPS` lists it.
    pub present: bool,
    /// For a present group: what re-issuing `XGROUP CREATE` answered (`AlreadyExists` is the
    /// no-op that idempotency requires).
    pub reprovision: Option<GroupCreated>,
}

/// A per-replica group as [`verify`] found it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceGroupVerified {
    /// Full group name, `<base>:<instance>`.
    pub group: String,
    /// Its base ([`names::StreamSpec::instance_groups`]).
    pub base: &'static str,
    /// Consumers known to the group (`XINFO GROUPS`).
    pub consumers: u64,
    /// Entries in its pending list.
    pub pending: u64,
}

/// One stream as [`verify`] found it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamVerified {
    /// Stream name.
    pub stream: &'static str,
    /// Whether the key exists with the stream type.
    pub state: StreamState,
    /// Its length, when present.
    pub len: Option<u64>,
    /// Its intended bound.
    pub bound: Option<u64>,
    /// Longer than the intended bound (a warning, not a failure).
    pub over_bound: bool,
    /// The expected groups.
    pub groups: Vec<GroupVerified>,
    /// Per-replica groups present (`<base>:<instance>`, created by each replica's consumer;
    /// see the module docs); informational.
    pub instance_groups: Vec<InstanceGroupVerified>,
    /// Groups present that are neither provisioned nor a per-replica group of this stream;
    /// informational.
    pub extra_groups: Vec<String>,
    /// For the seeded stream: whether it holds at least one entry.
    pub seed_present: Option<bool>,
}

/// Something [`verify`] found wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// The stream does not exist.
    StreamMissing {
        /// Stream name.
        stream: &'static str,
    },
    /// The key exists but is not a stream.
    NotAStream {
        /// Stream name.
        stream: &'static str,
    },
    /// An expected group is missing.
    GroupMissing {
        /// Stream name.
        stream: &'static str,
        /// Group name.
        group: &'static str,
    },
    /// Re-provisioning a present group was not a no-op.
    NotIdempotent {
        /// Stream name.
        stream: &'static str,
        /// Group name.
        group: &'static str,
    },
    /// The seeded stream is empty.
    SeedMissing {
        /// Stream name.
        stream: &'static str,
    },
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::StreamMissing { stream } => write!(f, "stream {stream} is missing"),
            Problem::NotAStream { stream } => {
                write!(f, "key {stream} exists but does not hold a stream")
            }
            Problem::GroupMissing { stream, group } => {
                write!(f, "group {group} is missing on stream {stream}")
            }
            Problem::NotIdempotent { stream, group } => write!(
                f,
                "re-provisioning group {group} on stream {stream} was not a no-op"
            ),
            Problem::SeedMissing { stream } => write!(f, "stream {stream} has no seed entry"),
        }
    }
}

/// The result of [`verify`].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct VerifyReport {
    /// The nine streams, in table order.
    pub streams: Vec<StreamVerified>,
}

impl VerifyReport {
    /// Everything found wrong, in table order.
    pub fn problems(&self) -> Vec<Problem> {
        let mut out = Vec::new();
        for s in &self.streams {
            match s.state {
                StreamState::Missing => out.push(Problem::StreamMissing { stream: s.stream }),
                StreamState::NotAStream => out.push(Problem::NotAStream { stream: s.stream }),
                StreamState::Present => {}
            }
            for g in &s.groups {
                if !g.present {
                    out.push(Problem::GroupMissing {
                        stream: s.stream,
                        group: g.group,
                    });
                } else if g.reprovision != Some(GroupCreated::AlreadyExists) {
                    out.push(Problem::NotIdempotent {
                        stream: s.stream,
                        group: g.group,
                    });
                }
            }
            if s.seed_present == Some(false) {
                out.push(Problem::SeedMissing { stream: s.stream });
            }
        }
        out
    }

    /// Whether nothing is wrong.
    pub fn is_ok(&self) -> bool {
        self.problems().is_empty()
    }
}

async fn verify_one(
    streams: &dyn Streams,
    spec: &'static StreamSpec,
) -> StreamResult<StreamVerified> {
    let absent = |state| StreamVerified {
        stream: spec.name,
        state,
        len: None,
        bound: spec.bound,
        over_bound: false,
        groups: spec
            .groups
            .iter()
            .map(|g| GroupVerified {
                group: g.name,
                present: false,
                reprovision: None,
            })
            .collect(),
        instance_groups: Vec::new(),
        extra_groups: Vec::new(),
        seed_present: spec.seed.map(|_| false),
    };
    match streams.stream_exists(spec.name).await {
        Ok(true) => {}
        Ok(false) => return Ok(absent(StreamState::Missing)),
        Err(StreamError::WrongType { .. }) => return Ok(absent(StreamState::NotAStream)),
        Err(e) => return Err(e),
    }
    let found = streams.groups(spec.name).await?;
    let mut groups = Vec::with_capacity(spec.groups.len());
    for g in spec.groups {
        let present = found.iter().any(|f| f.name == g.name);
        // Only a group that exists is re-created: Redis answers BUSYGROUP and nothing
        // changes, so verifying never repairs (and hides) what it checks.
        let reprovision = if present {
            Some(streams.group_create(spec.name, g.name, g.start).await?)
        } else {
            None
        };
        groups.push(GroupVerified {
            group: g.name,
            present,
            reprovision,
        });
    }
    let len = streams.len(spec.name).await?;
    let mut instance_groups = Vec::new();
    let mut extra_groups = Vec::new();
    for f in found.into_iter().filter(|f| !spec.has_group(&f.name)) {
        match spec.instance_group_of(&f.name) {
            Some((base, _)) => instance_groups.push(InstanceGroupVerified {
                base,
                consumers: f.consumers,
                pending: f.pending,
                group: f.name,
            }),
            None => extra_groups.push(f.name),
        }
    }
    Ok(StreamVerified {
        stream: spec.name,
        state: StreamState::Present,
        len: Some(len),
        bound: spec.bound,
        over_bound: spec.exceeds_bound(len),
        groups,
        instance_groups,
        extra_groups,
        seed_present: spec.seed.map(|_| len > 0),
    })
}

/// Check the nine streams and their groups (see the module docs). `Err` only when the
/// checks themselves could not run (Redis unreachable); what is missing is in the report.
pub async fn verify(streams: &dyn Streams) -> StreamResult<VerifyReport> {
    let mut report = VerifyReport::default();
    for spec in names::STREAMS {
        report.streams.push(verify_one(streams, spec).await?);
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::streams::names::{
        AUDIT_EVENTS, GROUP_AUDIT_INGESTOR, GROUP_OPA_ENGINE, GROUP_STS_KEYS, KEYS_INVALIDATE,
        POLICY_INVALIDATE, PROVIDERS_RATELIMIT,
    };
    use crate::streams::{EntryId, Fields, MemoryStreams};

    #[tokio::test]
    async fn provision_creates_everything_once_then_is_a_no_op() {
        let s = MemoryStreams::default();
        let before = verify(&s).await.unwrap();
        assert_eq!(
            before.problems().len(),
            9 + 9 + 1,
            "every stream and group missing, and the seed: {:?}",
            before.problems()
        );

        let first = provision(&s).await.unwrap();
        assert!(first.is_ok() && first.changed_anything());
        assert_eq!(first.streams.len(), 9);
        assert!(first.streams.iter().all(|row| {
            row.groups
                .iter()
                .all(|g| g.outcome == GroupCreated::Created)
        }));
        let rl = first
            .streams
            .iter()
            .find(|r| r.stream == PROVIDERS_RATELIMIT)
            .unwrap();
        assert_eq!((rl.seeded, rl.len), (Some(true), Some(1)));

        let second = provision(&s).await.unwrap();
        assert!(second.is_ok());
        assert!(!second.changed_anything(), "{second:?}");
        assert_eq!(s.len(PROVIDERS_RATELIMIT).await.unwrap(), 1);
        let seed = s
            .range(PROVIDERS_RATELIMIT, EntryId::MIN, EntryId::MAX, None)
            .await
            .unwrap();
        assert_eq!(seed[0].fields.get("init"), Some("1"));

        let report = verify(&s).await.unwrap();
        assert!(report.is_ok(), "{:?}", report.problems());
        assert!(
            report
                .streams
                .iter()
                .all(|r| r.state == StreamState::Present)
        );
    }

    #[tokio::test]
    async fn verify_names_what_is_missing() {
        // Everything but one group (MemoryStreams cannot destroy a group, so build the state
        // directly) and the seeded stream, plus an extra per-host group.
        let fresh = MemoryStreams::default();
        for spec in names::STREAMS {
            for g in spec.groups {
                if !(spec.name == KEYS_INVALIDATE && g.name == GROUP_STS_KEYS) {
                    fresh
                        .group_create(spec.name, g.name, g.start)
                        .await
                        .unwrap();
                }
            }
        }
        fresh
            .xadd(KEYS_INVALIDATE, &Fields::new().with("zone_id", "z"))
            .await
            .unwrap();
        fresh
            .group_create(
                AUDIT_EVENTS,
                "gateway-revocation:host-a",
                crate::streams::GroupStart::Latest,
            )
            .await
            .unwrap();
        // Per-replica groups, one holding a pending entry: listed, never a problem.
        let per_replica = names::opa_engine_group("sts-gone");
        fresh
            .group_create(
                POLICY_INVALIDATE,
                &per_replica,
                crate::streams::GroupStart::Latest,
            )
            .await
            .unwrap();
        fresh
            .xadd(POLICY_INVALIDATE, &Fields::new().with("zone_id", "z"))
            .await
            .unwrap();
        let read = fresh
            .read_group(
                POLICY_INVALIDATE,
                &per_replica,
                "sts-sts-gone-policy",
                crate::streams::ReadFrom::New,
                10,
                None,
            )
            .await
            .unwrap();
        assert_eq!(read.len(), 1);
        let report = verify(&fresh).await.unwrap();
        let problems = report.problems();
        assert_eq!(
            problems,
            vec![
                Problem::GroupMissing {
                    stream: KEYS_INVALIDATE,
                    group: GROUP_STS_KEYS
                },
                Problem::StreamMissing {
                    stream: PROVIDERS_RATELIMIT
                },
                Problem::SeedMissing {
                    stream: PROVIDERS_RATELIMIT
                },
            ]
        );
        assert_eq!(
            problems[0].to_string(),
            "group sts-keys is missing on stream caracal.keys.invalidate"
        );
        let audit = &report.streams[0];
        assert_eq!(
            audit.extra_groups,
            vec!["gateway-revocation:host-a".to_owned()],
            "a per-host group on a stream that has none is an unknown group"
        );
        assert!(audit.instance_groups.is_empty());
        let policy = report
            .streams
            .iter()
            .find(|r| r.stream == POLICY_INVALIDATE)
            .unwrap();
        assert_eq!(
            policy.instance_groups,
            vec![InstanceGroupVerified {
                group: "opa-engine:sts-gone".to_owned(),
                base: GROUP_OPA_ENGINE,
                consumers: 1,
                pending: 1,
            }]
        );
        assert!(policy.extra_groups.is_empty());
        assert!(
            audit
                .groups
                .iter()
                .any(|g| g.group == GROUP_AUDIT_INGESTOR && g.present)
        );
        // Verifying repaired nothing.
        assert!(!fresh.stream_exists(PROVIDERS_RATELIMIT).await.unwrap());
        // Provisioning does.
        let repaired = provision(&fresh).await.unwrap();
        assert!(repaired.changed_anything());
        assert!(verify(&fresh).await.unwrap().is_ok());
    }

    #[tokio::test]
    async fn over_bound_is_a_warning_not_a_trim_and_a_used_seed_stream_is_left_alone() {
        let s = MemoryStreams::default();
        let bound = names::stream_spec(KEYS_INVALIDATE).unwrap().bound.unwrap();
        for _ in 0..=bound {
            s.xadd(KEYS_INVALIDATE, &Fields::new().with("zone_id", "z"))
                .await
                .unwrap();
        }
        for _ in 0..3 {
            s.xadd(PROVIDERS_RATELIMIT, &Fields::new().with("x", "1"))
                .await
                .unwrap();
        }
        let report = provision(&s).await.unwrap();
        let row = |name| report.streams.iter().find(|r| r.stream == name).unwrap();
        let keys = row(KEYS_INVALIDATE);
        assert!(keys.over_bound);
        assert_eq!(keys.len, Some(bound + 1));
        assert_eq!(
            s.len(KEYS_INVALIDATE).await.unwrap(),
            bound + 1,
            "never trimmed"
        );
        let rl = row(PROVIDERS_RATELIMIT);
        assert_eq!((rl.seeded, rl.len), (Some(false), Some(3)));
        let verified = verify(&s).await.unwrap();
        assert!(verified.is_ok(), "over bound is only a warning");
        assert!(verified.streams.iter().any(|v| v.over_bound));
    }

    #[tokio::test]
    async fn a_key_of_another_type_is_reported_not_fatal() {
        // MemoryStreams only holds streams; a wrapper answers WRONGTYPE for one name.
        struct OneWrong(MemoryStreams);
        #[async_trait::async_trait]
        impl Streams for OneWrong {
            async fn xadd_with(
                &self,
                st: &str,
                f: &Fields,
                t: Trim,
            ) -> StreamResult<crate::streams::EntryId> {
                self.0.xadd_with(st, f, t).await
            }
            async fn len(&self, st: &str) -> StreamResult<u64> {
                self.0.len(st).await
            }
            async fn range(
                &self,
                st: &str,
                a: EntryId,
                b: EntryId,
                n: Option<usize>,
            ) -> StreamResult<Vec<crate::streams::StreamEntry>> {
                self.0.range(st, a, b, n).await
            }
            async fn del(&self, st: &str, ids: &[EntryId]) -> StreamResult<u64> {
                self.0.del(st, ids).await
            }
            async fn stream_exists(&self, st: &str) -> StreamResult<bool> {
                if st == KEYS_INVALIDATE {
                    return Err(StreamError::WrongType { key: st.into() });
                }
                self.0.stream_exists(st).await
            }
            async fn group_create(
                &self,
                st: &str,
                g: &str,
                start: crate::streams::GroupStart,
            ) -> StreamResult<GroupCreated> {
                if st == KEYS_INVALIDATE {
                    return Err(StreamError::WrongType { key: st.into() });
                }
                self.0.group_create(st, g, start).await
            }
            async fn groups(&self, st: &str) -> StreamResult<Vec<crate::streams::GroupInfo>> {
                self.0.groups(st).await
            }
            async fn read_group(
                &self,
                st: &str,
                g: &str,
                c: &str,
                from: crate::streams::ReadFrom,
                n: usize,
                block: Option<std::time::Duration>,
            ) -> StreamResult<Vec<crate::streams::StreamEntry>> {
                self.0.read_group(st, g, c, from, n, block).await
            }
            async fn ack(&self, st: &str, g: &str, ids: &[EntryId]) -> StreamResult<u64> {
                self.0.ack(st, g, ids).await
            }
            async fn autoclaim(
                &self,
                st: &str,
                g: &str,
                c: &str,
                idle: std::time::Duration,
                start: EntryId,
                n: usize,
            ) -> StreamResult<crate::streams::AutoClaim> {
                self.0.autoclaim(st, g, c, idle, start, n).await
            }
            async fn pending_summary(
                &self,
                st: &str,
                g: &str,
            ) -> StreamResult<crate::streams::PendingSummary> {
                self.0.pending_summary(st, g).await
            }
            async fn pending_range(
                &self,
                st: &str,
                g: &str,
                a: EntryId,
                b: EntryId,
                n: usize,
                c: Option<&str>,
            ) -> StreamResult<Vec<crate::streams::PendingEntry>> {
                self.0.pending_range(st, g, a, b, n, c).await
            }
        }
        let s = OneWrong(MemoryStreams::default());
        let report = provision(&s).await.unwrap();
        assert!(!report.is_ok());
        let bad: Vec<&str> = report
            .streams
            .iter()
            .filter(|r| r.error.is_some())
            .map(|r| r.stream)
            .collect();
        assert_eq!(
            bad,
            vec![KEYS_INVALIDATE],
            "the other eight were provisioned"
        );
        assert_eq!(
            verify(&s).await.unwrap().problems(),
            vec![Problem::NotAStream {
                stream: KEYS_INVALIDATE
            }]
            .into_iter()
            .chain([Problem::GroupMissing {
                stream: KEYS_INVALIDATE,
                group: GROUP_STS_KEYS
            }])
            .collect::<Vec<_>>()
        );
    }
}
