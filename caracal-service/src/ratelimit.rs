//! A per-client-address request limit for HTTP surfaces (the Coordinator's 600 requests per
//! minute per IP, and 60 for its public `/v1/verify`): a fixed one-minute window per key, in
//! process memory, as the reference's in-process limiter keeps it.
//!
//! Written by hand (about forty lines) rather than pulling `governor`/`tower_governor`: the
//! rule is one counter per key and window, and the answer must be the reference's error shape
//! (429 `rate_limited` with the request id), which a generic layer would not render.
//!
//! Invariants: memory stays bounded (windows older than the current one are pruned whenever
//! the map grows past [`PRUNE_AT`] keys); a request without a peer address (an embedding host
//! that did not provide `ConnectInfo`) is counted under one shared key, so it is limited, never
//! exempt.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, Request};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use caracal_core::api::ApiError;

use crate::http::HttpError;

/// Keys kept before stale windows are pruned.
pub const PRUNE_AT: usize = 10_000;

/// Requests allowed per key per window.
#[derive(Debug)]
pub struct WindowLimiter {
    limit: u32,
    window: Duration,
    counts: Mutex<HashMap<IpAddr, (Instant, u32)>>,
}

impl WindowLimiter {
    /// `limit` requests per `window` per client address.
    pub fn new(limit: u32, window: Duration) -> Arc<Self> {
        Arc::new(Self {
            limit,
            window,
            counts: Mutex::new(HashMap::new()),
        })
    }

    /// Count one request from `ip` at `now`; whether it is within the limit.
    pub fn admit(&self, ip: IpAddr, now: Instant) -> bool {
        let mut counts = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        if counts.len() >= PRUNE_AT {
            let window = self.window;
            counts.retain(|_, (start, _)| now.duration_since(*start) < window);
        }
        let entry = counts.entry(ip).or_insert((now, 0));
        if now.duration_since(entry.0) >= self.window {
            *entry = (now, 0);
        }
        entry.1 = entry.1.saturating_add(1);
        entry.1 <= self.limit
    }
}

/// The client address of a request (unspecified when the server did not record one).
pub fn client_ip(req: &Request) -> IpAddr {
    req.extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |c| c.0.ip())
}

/// Middleware: 429 `rate_limited` once the client's window is spent.
pub async fn limit(
    axum::extract::State(limiter): axum::extract::State<Arc<WindowLimiter>>,
    req: Request,
    next: Next,
) -> Response {
    if limiter.admit(client_ip(&req), Instant::now()) {
        next.run(req).await
    } else {
        HttpError(ApiError::new(429, "rate_limited").with_description("Too many requests"))
            .into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_window_admits_the_limit_then_refuses_until_it_rolls() {
        let l = WindowLimiter::new(3, Duration::from_secs(60));
        let ip: IpAddr = "10.0.0.1"
            .parse()
            .unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST));
        let other: IpAddr = "10.0.0.2"
            .parse()
            .unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST));
        let t0 = Instant::now();
        assert!((0..3).all(|_| l.admit(ip, t0)));
        assert!(!l.admit(ip, t0));
        assert!(l.admit(other, t0), "keys are independent");
        assert!(l.admit(ip, t0 + Duration::from_secs(60)), "a new window");
    }
}
