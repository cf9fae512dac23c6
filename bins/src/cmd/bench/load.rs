//! The closed-loop load runner: `workers` tasks each issue one operation, wait for its
//! answer, and issue the next, for `warmup + duration`. Only operations that *start* after the
//! warmup are measured; latency goes into one HDR histogram per worker (microseconds, three
//! significant digits), merged at the end.
//!
//! Why closed loop: it measures what the stack sustains at a fixed concurrency without
//! queueing requests the stack cannot take (an open-loop generator on the same two cores
//! would measure its own backlog).

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

/// The highest latency recorded: 60 s in microseconds (longer is clamped).
const MAX_MICROS: u64 = 60_000_000;

/// How one scenario ran.
#[derive(Debug, Clone)]
pub struct Figures {
    /// Operations measured (successful or not).
    pub requests: u64,
    /// Operations that failed.
    pub errors: u64,
    /// The first few distinct error messages (for the operator; never secrets).
    pub error_samples: Vec<String>,
    /// Successful operations per second over the measured window.
    pub per_second: f64,
    /// Latency percentiles of every measured operation, in microseconds.
    pub p50_us: u64,
    /// 95th percentile.
    pub p95_us: u64,
    /// 99th percentile.
    pub p99_us: u64,
    /// Maximum.
    pub max_us: u64,
    /// The measured window.
    pub window: Duration,
    /// Audit events the successful operations must have produced (a lower bound).
    pub audit_events_expected: u64,
    /// True when an operation answered that there was nothing left to do before the window
    /// ended (the window, and so req/s, then covers only what was measured).
    pub exhausted: bool,
}

/// What one worker brings home.
struct Tally {
    histogram: Histogram<u64>,
    ok: u64,
    errors: u64,
    samples: Vec<String>,
    audit: u64,
    exhausted: bool,
}

fn histogram() -> Result<Histogram<u64>, String> {
    Histogram::new_with_bounds(1, MAX_MICROS, 3).map_err(|e| e.to_string())
}

/// Run `op(worker, n)` in a closed loop on `workers` tasks. `op` answers the number of audit
/// events the operation produced, `None` when it has nothing left to do (the worker stops), or
/// why it failed.
pub async fn run<F, Fut>(
    workers: usize,
    warmup: Duration,
    duration: Duration,
    op: F,
) -> Result<Figures, String>
where
    F: Fn(usize, u64) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Option<u64>, String>> + Send,
{
    let op = Arc::new(op);
    let begin = Instant::now();
    let measure_from = begin + warmup;
    let end = measure_from + duration;
    let mut tasks = Vec::with_capacity(workers);
    for w in 0..workers {
        let op = op.clone();
        tasks.push(tokio::spawn(async move {
            let mut tally = Tally {
                histogram: histogram()?,
                ok: 0,
                errors: 0,
                samples: Vec::new(),
                audit: 0,
                exhausted: false,
            };
            let mut n = 0u64;
            loop {
                let start = Instant::now();
                if start >= end {
                    break;
                }
                let result = match op(w, n).await {
                    Ok(None) => {
                        tally.exhausted = true;
                        break;
                    }
                    Ok(Some(events)) => Ok(events),
                    Err(e) => Err(e),
                };
                n += 1;
                if start < measure_from {
                    continue;
                }
                let micros = u64::try_from(start.elapsed().as_micros()).unwrap_or(MAX_MICROS);
                tally
                    .histogram
                    .saturating_record(micros.clamp(1, MAX_MICROS));
                match result {
                    Ok(events) => {
                        tally.ok += 1;
                        tally.audit += events;
                    }
                    Err(e) => {
                        tally.errors += 1;
                        // One sample per kind of failure: request ids make every message
                        // distinct, so they are left out of the sample.
                        let e = e.split(" [request ").next().unwrap_or_default().to_owned();
                        if tally.samples.len() < 3 && !tally.samples.contains(&e) {
                            tally.samples.push(e);
                        }
                    }
                }
            }
            Ok::<Tally, String>(tally)
        }));
    }
    let mut total = histogram()?;
    let (mut ok, mut errors, mut audit) = (0u64, 0u64, 0u64);
    let mut exhausted = false;
    let mut samples: Vec<String> = Vec::new();
    for t in tasks {
        let tally = t
            .await
            .map_err(|e| format!("a load worker failed: {e}"))??;
        total.add(&tally.histogram).map_err(|e| e.to_string())?;
        ok += tally.ok;
        errors += tally.errors;
        audit += tally.audit;
        exhausted |= tally.exhausted;
        for s in tally.samples {
            if samples.len() < 5 && !samples.contains(&s) {
                samples.push(s);
            }
        }
    }
    // The window is from the end of the warmup to when the last measured operation finished.
    let window = Instant::now().saturating_duration_since(measure_from);
    let secs = window.as_secs_f64().max(f64::EPSILON);
    Ok(Figures {
        requests: ok + errors,
        errors,
        error_samples: samples,
        per_second: ok as f64 / secs,
        p50_us: total.value_at_quantile(0.50),
        p95_us: total.value_at_quantile(0.95),
        p99_us: total.value_at_quantile(0.99),
        max_us: total.max(),
        window,
        audit_events_expected: audit,
        exhausted,
    })
}

/// `20s`, `500ms`, `2m` or a bare number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let (number, unit) = match t.find(|c: char| !c.is_ascii_digit() && c != '.') {
        Some(i) => t.split_at(i),
        None => (t, "s"),
    };
    let value: f64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a duration (e.g. 20s, 500ms, 2m)"))?;
    let secs = match unit {
        "ms" => value / 1000.0,
        "s" => value,
        "m" => value * 60.0,
        _ => return Err(format!("`{text}`: unit must be ms, s or m")),
    };
    if !secs.is_finite() || !(0.0..=86_400.0).contains(&secs) {
        return Err(format!("`{text}` is out of range"));
    }
    Ok(Duration::from_secs_f64(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(parse_duration("20s").unwrap(), Duration::from_secs(20));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("3").unwrap(), Duration::from_secs(3));
        assert!(parse_duration("3h").is_err());
        assert!(parse_duration("x").is_err());
        assert!(parse_duration("-1s").is_err());
    }

    #[tokio::test]
    async fn the_loop_counts_successes_errors_and_audit_events() {
        let f = run(
            2,
            Duration::from_millis(20),
            Duration::from_millis(100),
            |_, n| async move {
                tokio::time::sleep(Duration::from_millis(1)).await;
                if n % 4 == 3 {
                    Err("boom".to_owned())
                } else {
                    Ok(Some(2))
                }
            },
        )
        .await
        .unwrap();
        assert!(f.requests > 10, "{f:?}");
        assert!(f.errors > 0 && f.errors < f.requests);
        assert_eq!(f.audit_events_expected, 2 * (f.requests - f.errors));
        assert_eq!(f.error_samples, vec!["boom".to_owned()]);
        assert!(f.p50_us >= 1000 && f.p50_us <= f.p99_us && f.p99_us <= f.max_us);
        assert!(f.per_second > 0.0);
        assert!(!f.exhausted);
    }

    #[tokio::test]
    async fn a_worker_with_nothing_left_stops_and_the_window_says_so() {
        let left = Arc::new(std::sync::atomic::AtomicU64::new(30));
        let l = Arc::clone(&left);
        let begin = Instant::now();
        let f = run(2, Duration::ZERO, Duration::from_secs(30), move |_, _| {
            let l = Arc::clone(&l);
            async move {
                let took = l.fetch_update(
                    std::sync::atomic::Ordering::SeqCst,
                    std::sync::atomic::Ordering::SeqCst,
                    |n| n.checked_sub(1),
                );
                Ok(took.ok().map(|_| 1))
            }
        })
        .await
        .unwrap();
        assert!(
            begin.elapsed() < Duration::from_secs(10),
            "the loop did not stop"
        );
        assert!(f.exhausted);
        assert_eq!(f.requests, 30);
        assert_eq!(f.errors, 0);
        assert_eq!(f.audit_events_expected, 30);
        assert_eq!(left.load(std::sync::atomic::Ordering::SeqCst), 0);
    }
}
