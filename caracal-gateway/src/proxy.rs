//! The proxy path (reference `gateway.md` §1.2–§1.9): pre-flight, exchange, upstream checks,
//! credential injection, dispatch and the streamed response.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{ConnectInfo, Request};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use caracal_core::audit::sink::AuditSink as _;
use caracal_service::http::{HttpError, RequestId};

use crate::GatewayService;
use crate::audit::{Evaluation, RequestRecord, replay_detected, subject_fingerprint};
use crate::body::{CappedBody, REVOKED_TRAILER, RelayBody};
use crate::breaker::Admission;
use crate::error::{Denial, Deny};
use crate::exchange::ExchangeInput;
use crate::forward::{
    Forwarding, Injection, query_credential, trace_id, upstream_headers, upstream_url,
};
use crate::metrics::Counters;
use crate::preflight::{self, CLIENT_ID_HEADER, RESOURCE_HEADER, RequestHead};

/// Key prefix of consumed ingress `jti`s.
pub const JTI_KEY_PREFIX: &str = "seen:jti:";

fn deny(counters: &Counters, d: &Deny) -> Response {
    if let Some(denial) = d.denial {
        Counters::inc(&counters.requests_denied);
        Counters::inc(denial.counter(counters));
    } else {
        Counters::inc(&counters.upstream_errors);
    }
    HttpError(d.to_api()).into_response()
}

/// The proxy handler: every request not matched by an operator route.
pub async fn handle(svc: Arc<GatewayService>, request: Request) -> Response {
    Counters::inc(&svc.metrics.counters.requests_total);
    let request_id = request
        .extensions()
        .get::<RequestId>()
        .map(|r| r.0.clone())
        .unwrap_or_else(|| uuid::Uuid::now_v7().to_string());
    match run(&svc, request, &request_id).await {
        Ok(r) => r,
        Err(d) => deny(&svc.metrics.counters, &d),
    }
}

async fn run(
    svc: &Arc<GatewayService>,
    request: Request,
    request_id: &str,
) -> Result<Response, Deny> {
    let now = svc.clock.now();
    // 1
    if svc.revocations.is_stale() {
        return Err(Deny::new(
            503,
            "sts_unavailable",
            "revocation state unavailable",
            Denial::RevocationStale,
        ));
    }
    let (parts, body) = request.into_parts();
    let te_trailers = parts
        .headers
        .get_all(header::TE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("trailers"));
    let headers = &parts.headers;
    let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let head = RequestHead {
        authorization: text(header::AUTHORIZATION.as_str()),
        has_client_id: headers
            .get(CLIENT_ID_HEADER)
            .is_some_and(|v| !v.as_bytes().iter().all(u8::is_ascii_whitespace)),
        resource: text(RESOURCE_HEADER),
        path: parts.uri.path(),
    };
    // 2–10
    let admitted = preflight::check(&head, now.timestamp())?;
    let claims = &admitted.claims;
    // 11
    let Some(proof) = svc.keys.verify(admitted.token, &admitted.zone_id).await else {
        return Err(Deny::new(
            401,
            "invalid_token",
            "bearer signature invalid",
            Denial::Signature,
        ));
    };
    // 12
    let fingerprint = subject_fingerprint(admitted.token);
    consume_jti(svc, &admitted, &fingerprint, request_id).await?;
    // 13
    if svc.revocations.is_revoked(claims) {
        return Err(Deny::new(
            401,
            "invalid_token",
            "session revoked",
            Denial::Revoked,
        ));
    }
    // 14
    if svc.breaker.admit() == Admission::Open {
        Counters::inc(&svc.metrics.counters.sts_circuit_fast_fail);
        return Err(Deny::new(
            503,
            "sts_unavailable",
            "sts unavailable",
            Denial::Sts,
        ));
    }
    let decoded = preflight::decoded_path(parts.uri.path()).unwrap_or_default();
    let input = ExchangeInput {
        zone_id: &admitted.zone_id,
        client_id: &admitted.client_id,
        subject_token: admitted.token,
        resource: admitted.resource,
        method: parts.method.as_str(),
        path: &decoded,
        request_id,
        signature: Some(&proof),
    };
    let started = Instant::now();
    let outcome = svc.exchanger.exchange(&input).await;
    svc.metrics
        .gauges
        .sts_latency_ms
        .store(started.elapsed().as_millis() as u64, Ordering::Relaxed);
    let granted = match outcome {
        Ok(g) => {
            svc.breaker.record(true, false);
            g
        }
        Err(f) => {
            if svc.breaker.record(false, f.counted()) {
                Counters::inc(&svc.metrics.counters.sts_circuit_opened);
            }
            return Err(f.deny);
        }
    };
    let directive = &granted.directive;
    let mut record = RequestRecord {
        zone_id: admitted.zone_id.clone(),
        request_id: request_id.to_owned(),
        application_id: admitted.client_id.clone(),
        resource: admitted.resource.to_owned(),
        subject_fingerprint: fingerprint,
        method: parts.method.as_str().to_owned(),
        subject_kind: claims
            .sub_type
            .clone()
            .filter(|k| k == "user" || k == "application"),
        auth_mode: serde_json::to_value(directive.auth_mode)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned)),
        provider_id: directive.provider_id.clone(),
        connection_id: directive.connection_id.clone(),
        ..RequestRecord::default()
    };
    let fail = |svc: &GatewayService,
                record: &mut RequestRecord,
                d: Deny,
                eval: Evaluation,
                kind: &'static str| {
        record.gateway_status = d.status;
        record.error_kind = Some(kind);
        svc.audit(record, eval);
        d
    };
    // §1.6 (1): the egress guard.
    let target = match svc.guard.check(&directive.url).await {
        Ok(t) => t,
        Err(e) => {
            tracing::warn!(reason = %e, "upstream refused by the egress guard");
            return Err(fail(
                svc,
                &mut record,
                Deny::upstream(502, "internal_error", "upstream not addressable"),
                Evaluation::UpstreamRejected,
                "upstream_not_addressable",
            ));
        }
    };
    record.upstream_host = Some(match target.port {
        Some(p) => format!("{}:{p}", target.host),
        None => target.host.clone(),
    });
    // §1.6 (2): the provider credential host pin.
    if !directive.allowed_token_hosts.is_empty()
        && !directive
            .allowed_token_hosts
            .iter()
            .any(|h| h.trim().eq_ignore_ascii_case(&target.host))
    {
        return Err(fail(
            svc,
            &mut record,
            Deny::upstream(
                502,
                "internal_error",
                "provider credential not allowed for upstream host",
            ),
            Evaluation::UpstreamRejected,
            "provider_host_not_allowed",
        ));
    }
    // §1.7
    let build_failed = |svc: &GatewayService, record: &mut RequestRecord| {
        fail(
            svc,
            record,
            Deny::upstream(400, "internal_error", "upstream request build failed"),
            Evaluation::BuildFailed,
            "request_build_failed",
        )
    };
    let set_query = match query_credential(directive) {
        Ok(q) => q,
        Err(_) => return Err(build_failed(svc, &mut record)),
    };
    let url = match upstream_url(&directive.url, &decoded, parts.uri.query(), set_query) {
        Ok(u) => u,
        Err(_) => return Err(build_failed(svc, &mut record)),
    };
    let mut out_headers = parts.headers.clone();
    let peer = parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip());
    let traceparent = match upstream_headers(
        &mut out_headers,
        &Injection {
            directive,
            resource_mandate: &granted.access_token,
            request_id,
        },
        &Forwarding {
            peer,
            trust_proxy: svc.settings.trust_proxy,
            tls: false,
        },
    ) {
        Ok(t) => t,
        Err(_) => return Err(build_failed(svc, &mut record)),
    };
    record.trace_id = trace_id(&traceparent).map(str::to_owned);
    let transport = |svc: &GatewayService, record: &mut RequestRecord, d: Deny| {
        fail(svc, record, d, Evaluation::UpstreamError, "transport_error")
    };
    let cap = svc.settings.max_request_bytes;
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|n| n > cap) {
        return Err(transport(
            svc,
            &mut record,
            Deny::upstream(413, "payload_too_large", "request body too large"),
        ));
    }
    let over = Arc::new(AtomicBool::new(false));
    let capped = CappedBody::new(body, cap, svc.settings.timeouts.read, over.clone());
    let mut builder = hyper::Request::builder()
        .method(parts.method.clone())
        .uri(url.as_str());
    if let Some(h) = builder.headers_mut() {
        *h = out_headers;
    }
    let Ok(upstream_request) = builder.body(capped) else {
        return Err(build_failed(svc, &mut record));
    };
    let dispatched = Instant::now();
    let response = tokio::time::timeout(
        svc.settings.timeouts.upstream,
        svc.upstream.request(upstream_request),
    )
    .await;
    record.latency_ms = dispatched.elapsed().as_millis() as u64;
    let response = match response {
        Err(_) => {
            return Err(transport(
                svc,
                &mut record,
                Deny::upstream(504, "internal_error", "upstream timeout"),
            ));
        }
        Ok(Err(e)) => {
            if over.load(Ordering::SeqCst) {
                return Err(transport(
                    svc,
                    &mut record,
                    Deny::upstream(413, "payload_too_large", "request body too large"),
                ));
            }
            // The cause only: the URL may carry a query-placed key.
            tracing::warn!(error = %std::error::Error::source(&e).map_or_else(|| e.to_string(), ToString::to_string), "upstream unreachable");
            return Err(transport(
                svc,
                &mut record,
                Deny::upstream(502, "internal_error", "upstream unreachable"),
            ));
        }
        Ok(Ok(r)) => r,
    };
    let status = response.status();
    if status == StatusCode::SWITCHING_PROTOCOLS {
        return Err(transport(
            svc,
            &mut record,
            Deny::upstream(502, "internal_error", "upstream unreachable"),
        ));
    }
    record.upstream_status = Some(status.as_u16());
    record.gateway_status = status.as_u16();
    let (up_parts, up_body) = response.into_parts();
    let mut headers = crate::forward::response_headers(&up_parts.headers);
    let exp_in = admitted.exp - svc.clock.now().timestamp();
    if exp_in > 0
        && let Ok(v) = HeaderValue::from_str(&exp_in.to_string())
    {
        headers.insert("x-caracal-token-expires-in", v);
    }
    let event_stream = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|m| m.trim().eq_ignore_ascii_case("text/event-stream"));
    let streaming = event_stream || !headers.contains_key(header::CONTENT_LENGTH);
    if streaming {
        // A chunked response can carry the revocation trailer.
        headers.remove(header::CONTENT_LENGTH);
        headers.insert(header::TRAILER, HeaderValue::from_static(REVOKED_TRAILER));
    }
    let anchors = admitted.claims.clone();
    let state = svc.revocations.clone();
    let revoked: Arc<dyn Fn() -> bool + Send + Sync> = Arc::new(move || state.is_revoked(&anchors));
    let finisher_svc = svc.clone();
    let finisher = Box::new(move |end: crate::body::RelayEnd| {
        Counters::inc(&finisher_svc.metrics.counters.requests_allowed);
        record.response_bytes = end.bytes;
        record.revocation_interrupted = end.revoked;
        let eval = if end.failed {
            Counters::inc(&finisher_svc.metrics.counters.upstream_errors);
            record.error_kind = Some("response_copy_failed");
            Evaluation::UpstreamError
        } else {
            Evaluation::Executed
        };
        finisher_svc.audit(&record, eval);
    });
    let idle = if streaming {
        svc.settings.timeouts.stream_idle
    } else {
        svc.settings.timeouts.write
    };
    let body = RelayBody::new(up_body, revoked, idle, streaming, te_trailers, finisher);
    let mut response = Response::new(Body::new(body));
    *response.status_mut() = status;
    *response.headers_mut() = headers;
    Ok(response)
}

/// Check 12 (§3): the single use of a `use=gateway` mandate, consumed before the exchange.
async fn consume_jti(
    svc: &GatewayService,
    admitted: &preflight::Admitted<'_>,
    fingerprint: &str,
    request_id: &str,
) -> Result<(), Deny> {
    let claims = &admitted.claims;
    let jti = claims.jti.as_deref().unwrap_or("");
    let ttl = admitted.exp - svc.clock.now().timestamp();
    if jti.is_empty() || claims.use_.as_deref() == Some("session") || ttl <= 0 {
        return Ok(());
    }
    let replay = || {
        Deny::new(
            401,
            "invalid_token",
            "token replay detected",
            Denial::JtiReplay,
        )
    };
    let key = format!("{JTI_KEY_PREFIX}{jti}");
    let ttl = Duration::from_secs(ttl.unsigned_abs());
    match svc.jti.set_nx_ex(&key, request_id, ttl).await {
        Ok(true) => Ok(()),
        Ok(false) => {
            if let Some(event) = replay_detected(
                svc.ids.next_id(),
                &admitted.zone_id,
                request_id,
                jti,
                admitted.resource,
                &admitted.client_id,
                fingerprint,
                svc.clock.now(),
            ) {
                svc.emitter.emit(event);
            }
            Err(replay())
        }
        Err(e) if svc.settings.jti_fail_open => {
            tracing::warn!(error = %e, "jti store unavailable; proceeding (JTI_FAIL_OPEN, dev only)");
            Ok(())
        }
        Err(e) => {
            tracing::warn!(error = %e, "jti store unavailable; refusing");
            Err(replay())
        }
    }
}
