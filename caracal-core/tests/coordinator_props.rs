//! Property tests of the delegation graph (reference `control-plane.md` §1.6): whatever
//! sequence of creates, revokes, terminations and clock moves,
//!
//! 1. no live edge holds a scope, resource, later expiry, hop allowance, TTL or budget its
//!    parent edge lacks, and a live edge's parent is live;
//! 2. after a revoke, none of the edges that were live below the revoked one is live, and
//!    none of their target sessions is active;
//! 3. the zone's graph epoch grows by exactly one with every unit of work that changes an
//!    edge, and not at all otherwise (including refusals).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod coordinator_support;

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use chrono::{DateTime, Duration, DurationRound, Utc};
use proptest::prelude::*;
use serde_json::{Map, json};

use caracal_core::coordinator::delegation::{EdgeBounds, downstream_edges};
use caracal_core::coordinator::{Caller, CreateDelegation, Limits};
use caracal_core::model::delegation::{DelegationEdge, EdgeStatus};
use caracal_core::model::session::Session;
use caracal_core::store::coordinator::CoordinatorStore;
use caracal_core::store::memory::MemoryStore;
use coordinator_support::*;

const SESSIONS: usize = 6;
const SCOPES: [&str; 3] = ["read", "write", "admin"];

#[derive(Debug, Clone)]
enum Op {
    Create {
        src: usize,
        dst: usize,
        scopes: u8,
        resource: u8,
        hops: Option<i64>,
        ttl: Option<i64>,
        budget: Option<i64>,
        expiry_secs: i64,
        parent: Option<usize>,
    },
    /// A child of a created edge built to fit under it (source = the parent's target), so
    /// deep chains are common; `shrink` drops scopes and `slack` shortens bounds.
    Narrow {
        edge: usize,
        dst: usize,
        shrink: u8,
        slack: i64,
    },
    Revoke(usize),
    Terminate(usize),
    Advance(i64),
}

fn op() -> impl Strategy<Value = Op> {
    let create = (
        0..SESSIONS,
        0..SESSIONS,
        1u8..8,
        0u8..4,
        proptest::option::of(1i64..6),
        proptest::option::of(1i64..2000),
        proptest::option::of(1i64..5),
        1i64..3000,
        proptest::option::of(0usize..40),
    )
        .prop_map(
            |(src, dst, scopes, resource, hops, ttl, budget, expiry_secs, parent)| Op::Create {
                src,
                dst,
                scopes,
                resource,
                hops,
                ttl,
                budget,
                expiry_secs,
                parent,
            },
        );
    prop_oneof![
        6 => create,
        6 => (0usize..40, 0..SESSIONS, 0u8..8, 0i64..50)
            .prop_map(|(edge, dst, shrink, slack)| Op::Narrow { edge, dst, shrink, slack }),
        3 => (0usize..40).prop_map(Op::Revoke),
        1 => (0..SESSIONS).prop_map(Op::Terminate),
        1 => (0i64..400).prop_map(Op::Advance),
    ]
}

async fn all_edges(f: &Fx<MemoryStore>, sessions: &[Session]) -> BTreeMap<String, DelegationEdge> {
    let mut out = BTreeMap::new();
    for s in sessions {
        for e in f
            .store
            .session_edges(&f.zone, &s.agent_session_id, true)
            .await
            .unwrap()
        {
            out.insert(e.id.clone(), e);
        }
    }
    out
}

fn bounds(f: &Fx<MemoryStore>, e: &DelegationEdge) -> EdgeBounds {
    let ident = e.resource_id.as_ref().map(|id| {
        if *id == f.r1.id {
            f.r1.identifier.clone()
        } else {
            f.r2.identifier.clone()
        }
    });
    EdgeBounds::of(e, ident.as_deref(), false).unwrap()
}

/// Invariant 1 over the whole graph.
fn check_narrowed(
    f: &Fx<MemoryStore>,
    edges: &BTreeMap<String, DelegationEdge>,
    now: DateTime<Utc>,
) {
    for e in edges.values().filter(|e| e.is_live(now)) {
        let Some(pid) = &e.parent_edge_id else {
            continue;
        };
        let p = &edges[pid];
        assert!(
            p.is_live(now),
            "live edge {} under non-live parent {}",
            e.id,
            p.id
        );
        let (c, pb) = (bounds(f, e), bounds(f, p));
        assert!(c.scopes.is_subset(&pb.scopes), "scopes widened");
        assert!(c.expires_at <= pb.expires_at, "expiry widened");
        if let Some(pr) = &pb.resources {
            assert!(
                c.resources.as_ref().is_some_and(|cr| cr.is_subset(pr)),
                "resources widened"
            );
        }
        assert!(
            pb.max_hops > 1 && c.max_hops < pb.max_hops,
            "hops not decreasing"
        );
        if let Some(pt) = pb.ttl_seconds {
            assert!(c.ttl_seconds.is_some_and(|ct| ct <= pt), "ttl widened");
        }
        if let Some(pbud) = pb.budget {
            let cb = c.budget.unwrap_or(u32::try_from(c.scopes.len()).unwrap());
            assert!(cb <= pbud, "budget widened");
        }
    }
}

/// Apply `ops`, checking the invariants after each; returns how many creates and revokes
/// succeeded (so tests can tell the sequence exercised the graph).
async fn run(ops: Vec<Op>) -> (usize, usize, usize) {
    let t0 = Utc::now()
        .duration_trunc(Duration::milliseconds(1))
        .unwrap();
    let f = Fx::new(Arc::new(MemoryStore::new()), t0, Limits::default()).await;
    let admin = Caller::operator();
    let mut sessions = Vec::new();
    for _ in 0..SESSIONS {
        sessions.push(f.task_a().await);
    }
    let mut created: Vec<String> = Vec::new();
    let mut revokes = 0;
    let mut narrowed = 0;
    let mut now = t0;
    for op in ops {
        let before = all_edges(&f, &sessions).await;
        let epoch_before = f.store.graph_epoch(&f.zone).await.unwrap();
        let mut revoked_root: Option<String> = None;
        match op {
            Op::Create {
                src,
                dst,
                scopes,
                resource,
                hops,
                ttl,
                budget,
                expiry_secs,
                parent,
            } => {
                let mut c = Map::new();
                if let Some(h) = hops {
                    c.insert("max_hops".into(), json!(h));
                }
                if let Some(b) = budget {
                    c.insert("budget".into(), json!(b));
                }
                let (resource_id, resources) = match resource {
                    0 => (Some(f.r1.id.clone()), None),
                    1 => (Some(f.r2.id.clone()), None),
                    2 => (None, None),
                    _ => (None, Some(json!(["resource://r1"]))),
                };
                if let Some(r) = resources {
                    c.insert("resources".into(), r);
                }
                let req = CreateDelegation {
                    source_session_id: sessions[src].agent_session_id.clone(),
                    target_session_id: sessions[dst].agent_session_id.clone(),
                    issuer_application_id: f.app_a.clone(),
                    receiver_application_id: f.app_a.clone(),
                    parent_edge_id: parent
                        .and_then(|i| created.get(i % created.len().max(1)).cloned()),
                    resource_id,
                    scopes: SCOPES
                        .iter()
                        .enumerate()
                        .filter(|(i, _)| scopes & (1 << i) != 0)
                        .map(|(_, s)| (*s).to_owned())
                        .collect(),
                    constraints: c,
                    expires_at: Some(now + Duration::seconds(expiry_secs)),
                    ttl_seconds: ttl,
                };
                if let Ok(made) = f.co.create_delegation(&f.zone, &admin, &req, now).await {
                    if made.edge.parent_edge_id.is_some() {
                        narrowed += 1;
                    }
                    created.push(made.edge.id);
                }
            }
            Op::Narrow {
                edge,
                dst,
                shrink,
                slack,
            } => {
                let Some(pid) = created.get(edge % created.len().max(1)).cloned() else {
                    continue;
                };
                let p = before[&pid].clone();
                let pc = &p.constraints_json;
                let mut c = Map::new();
                let hops = pc.get("max_hops").and_then(|v| v.as_i64()).unwrap_or(1);
                c.insert("max_hops".into(), json!((hops - 1).max(1)));
                for k in ["budget", "resources"] {
                    if let Some(v) = pc.get(k) {
                        c.insert(k.into(), v.clone());
                    }
                }
                let ttl = pc
                    .get("ttl_seconds")
                    .and_then(|v| v.as_i64())
                    .map(|t| (t - slack).max(1));
                let req = CreateDelegation {
                    source_session_id: p.target_session_id.clone(),
                    target_session_id: sessions[dst].agent_session_id.clone(),
                    issuer_application_id: f.app_a.clone(),
                    receiver_application_id: f.app_a.clone(),
                    parent_edge_id: Some(p.id.clone()),
                    resource_id: p.resource_id.clone(),
                    scopes: p
                        .scopes
                        .iter()
                        .enumerate()
                        .filter(|(i, _)| shrink & (1 << i) == 0)
                        .map(|(_, s)| s.clone())
                        .collect(),
                    constraints: c,
                    expires_at: Some(p.expires_at - Duration::seconds(slack)),
                    ttl_seconds: ttl,
                };
                if let Ok(made) = f.co.create_delegation(&f.zone, &admin, &req, now).await {
                    if made.edge.parent_edge_id.is_some() {
                        narrowed += 1;
                    }
                    created.push(made.edge.id);
                }
            }
            Op::Revoke(i) => {
                if let Some(id) = created.get(i % created.len().max(1)).cloned() {
                    if f.co
                        .revoke_delegation(&f.zone, &admin, &id, now)
                        .await
                        .is_ok()
                    {
                        revoked_root = Some(id);
                        revokes += 1;
                    }
                }
            }
            Op::Terminate(i) => {
                let _ =
                    f.co.terminate(
                        &f.zone,
                        &admin,
                        &sessions[i].agent_session_id,
                        "requested",
                        None,
                        now,
                    )
                    .await;
            }
            Op::Advance(s) => now += Duration::seconds(s),
        }
        let after = all_edges(&f, &sessions).await;
        let epoch_after = f.store.graph_epoch(&f.zone).await.unwrap();

        // 3. Epoch: +1 iff an edge was added or changed status in this step.
        let changed = after.len() != before.len()
            || after
                .iter()
                .any(|(id, e)| before.get(id).is_none_or(|b| b.status != e.status));
        if changed {
            assert_eq!(
                epoch_after,
                epoch_before + 1,
                "epoch must grow by one per change"
            );
        } else {
            assert_eq!(
                epoch_after, epoch_before,
                "epoch must not move without a change"
            );
        }

        // 1. Narrowing holds everywhere.
        check_narrowed(&f, &after, now);

        // 2. Nothing that was live below a revoked edge survives.
        if let Some(root) = revoked_root {
            let live_before: Vec<DelegationEdge> = before
                .values()
                .filter(|e| e.is_live(now))
                .cloned()
                .collect();
            let mut below: Vec<&DelegationEdge> = downstream_edges(&live_before, &root)
                .into_iter()
                .map(|(e, _)| e)
                .collect();
            below.push(&before[&root]);
            let targets: HashSet<&str> =
                below.iter().map(|e| e.target_session_id.as_str()).collect();
            for e in &below {
                assert_eq!(
                    after[&e.id].status,
                    EdgeStatus::Revoked,
                    "downstream edge left live"
                );
            }
            for t in targets {
                let s = f.store.get_session(&f.zone, t).await.unwrap().unwrap();
                assert!(s.status.is_terminal(), "downstream session left active");
            }
        }
    }
    (created.len(), revokes, narrowed)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn delegation_graph_invariants(ops in proptest::collection::vec(op(), 1..40)) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let (creates, revokes, narrowed) = rt.block_on(run(ops));
        if std::env::var_os("COORDINATOR_PROPS_STATS").is_some() {
            eprintln!("creates={creates} revokes={revokes} narrowed={narrowed}");
        }
    }
}

/// A deterministic chain that exercises every branch the properties watch.
#[tokio::test]
async fn deep_chain_revoke_from_the_middle() {
    let mut ops = Vec::new();
    for i in 0..5 {
        ops.push(Op::Create {
            src: i,
            dst: i + 1,
            scopes: 0b011,
            resource: 0,
            hops: Some(5 - i64::try_from(i).unwrap()),
            ttl: Some(1000 - 10 * i64::try_from(i).unwrap()),
            budget: None,
            expiry_secs: 2000 - 10 * i64::try_from(i).unwrap(),
            parent: None,
        });
    }
    ops.push(Op::Revoke(2));
    // Every link narrows its parent, so all five are created; the revoke of the third takes
    // the last three edges and sessions 3..=5 with it.
    assert_eq!(run(ops).await, (5, 1, 4));
}
