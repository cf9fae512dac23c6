//! Criterion benches for the stream origin signature (`_sig` sign and verify over a
//! revocation-sized field map) and the audit chain step (content hash of the reference's
//! fixture event, and the full link of a new row onto a head). Inputs are built once; only the
//! call is measured.

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use caracal_core::audit::{
    AuditEvent, AuditHmacKey, ChainHead, LedgerRow, chain_hmac, content_hash,
};
use caracal_core::streams::signature::{StreamKey, sign, verify};
use criterion::{Criterion, black_box, criterion_group, criterion_main};

const KEY_HEX: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
const FIXTURE: &str =
    include_str!("../../caracal-core/tests/fixtures/interop/audit-event.allow.valid.json");

fn stream_signature(c: &mut Criterion) {
    let key = StreamKey::from_hex(KEY_HEX).unwrap();
    let fields: Vec<(String, Option<String>)> = [
        ("zone_id", "zone-1"),
        ("reason", "delegation_revoked"),
        ("session_id", "018f7d6a-8f4a-7d9f-9a54-5e4fd7df0001"),
        ("agent_session_id", "018f7d6a-8f4a-7d9f-9a54-5e4fd7df0002"),
        ("delegation_edge_id", "018f7d6a-8f4a-7d9f-9a54-5e4fd7df0003"),
        ("outbox_id", "018f7d6a-8f4a-7d9f-9a54-5e4fd7df0004"),
        (
            "dedupe_key",
            "edge_revoke:018f7d6a-8f4a-7d9f-9a54-5e4fd7df0003",
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), Some(v.to_owned())))
    .collect();
    let stream = "caracal.sessions.revoke";
    let sig = sign(
        &key,
        stream,
        fields.iter().map(|(k, v)| (k.as_str(), v.as_deref())),
    );
    let mut signed = fields.clone();
    signed.push(("_sig".to_owned(), Some(sig)));

    let mut g = c.benchmark_group("stream_sig");
    g.bench_function("sign", |b| {
        b.iter(|| {
            sign(
                &key,
                black_box(stream),
                fields.iter().map(|(k, v)| (k.as_str(), v.as_deref())),
            )
        })
    });
    g.bench_function("verify", |b| {
        b.iter(|| {
            verify(
                &key,
                black_box(stream),
                signed.iter().map(|(k, v)| (k.as_str(), v.as_deref())),
            )
            .unwrap()
        })
    });
    g.finish();
}

fn audit_chain(c: &mut Criterion) {
    let key = AuditHmacKey::from_hex(KEY_HEX).unwrap();
    let event = AuditEvent::parse(FIXTURE.as_bytes()).unwrap();
    let stored = event.clone().into_stored().unwrap();
    let content = content_hash(&stored).unwrap();
    let head = ChainHead {
        content_sha256: content.clone(),
        chain_seq: 41,
    };
    let now = chrono::Utc::now();

    let mut g = c.benchmark_group("audit_chain");
    g.bench_function("parse_event", |b| {
        b.iter(|| AuditEvent::parse(black_box(FIXTURE.as_bytes())).unwrap())
    });
    g.bench_function("content_hash", |b| {
        b.iter(|| content_hash(black_box(&stored)).unwrap())
    });
    g.bench_function("chain_hmac", |b| {
        b.iter(|| chain_hmac(Some(&key), black_box(&content), black_box(&content)))
    });
    g.bench_function("append_row (stored form + hash + link)", |b| {
        b.iter(|| {
            LedgerRow::append(black_box(event.clone()), Some(&head), Some(&key), None, now).unwrap()
        })
    });
    g.finish();
}

criterion_group!(benches, stream_signature, audit_chain);
criterion_main!(benches);
