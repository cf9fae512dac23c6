//! The skip policy (SPEC §4): a test that needs a real server gets one, or, on a machine
//! without the binaries, says loudly that it was skipped — except under `CI=true`, where a
//! missing server fails the run.
//!
//! A server whose binaries exist but that fails to start is always a failure, never a skip:
//! that is a broken environment or a bug, and hiding it would hide the tests.
//!
//! ```no_run
//! # async fn t() {
//! let Some(pg) = caracal_test_support::postgres_or_skip("my_test") else { return };
//! let url = pg.create_database("my_test").await.unwrap();
//! # let _ = url;
//! # }
//! ```

use std::io::Write;

use crate::error::SupportError;
use crate::postgres::{EphemeralPostgres, PgOptions, shared_postgres};
use crate::redis::{EphemeralRedis, RedisOptions};

/// Whether this run is CI (`CI=true`, or `1`), where a missing server is a failure.
pub fn is_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| {
        let v = v.trim();
        v.eq_ignore_ascii_case("true") || v == "1"
    })
}

/// The shared Postgres cluster of this test binary (see [`shared_postgres`]), or `None`
/// after printing `SKIPPED: <test>: ...` when the binaries are missing outside CI.
///
/// # Panics
///
/// When the server is missing and `CI=true`, or when it exists but cannot start.
pub fn postgres_or_skip(test: &str) -> Option<&'static EphemeralPostgres> {
    decide(test, "postgres", shared_postgres())
}

/// A Postgres cluster of the test's own, for drills that stop, kill or restart it.
///
/// # Panics
///
/// As [`postgres_or_skip`].
pub fn own_postgres_or_skip(test: &str) -> Option<EphemeralPostgres> {
    own_postgres_with_or_skip(test, PgOptions::default())
}

/// [`own_postgres_or_skip`] with options (e.g. `durable`).
///
/// # Panics
///
/// As [`postgres_or_skip`].
pub fn own_postgres_with_or_skip(test: &str, opts: PgOptions) -> Option<EphemeralPostgres> {
    decide(test, "postgres", EphemeralPostgres::start_with(opts))
}

/// A Redis server of the test's own (they start in tens of milliseconds), or `None` after
/// printing `SKIPPED: ...` when `redis-server` is missing outside CI.
///
/// # Panics
///
/// When `redis-server` is missing and `CI=true`, or when it exists but cannot start.
pub fn redis_or_skip(test: &str) -> Option<EphemeralRedis> {
    decide(
        test,
        "redis",
        EphemeralRedis::start_with(RedisOptions::default()),
    )
}

fn decide<T>(test: &str, server: &str, started: Result<T, SupportError>) -> Option<T> {
    decide_with(test, server, started, is_ci())
}

// A test helper whose whole point is to fail the calling test loudly.
#[allow(clippy::panic)]
fn decide_with<T>(
    test: &str,
    server: &str,
    started: Result<T, SupportError>,
    ci: bool,
) -> Option<T> {
    match started {
        Ok(server) => Some(server),
        Err(SupportError::BinariesMissing { what, hint }) => {
            if ci {
                panic!(
                    "CI=true and the {server} server is missing ({what}: {hint}); \
                     in CI a missing server is a failure, never a skip"
                );
            }
            // Straight to the process's stderr, not `eprintln!`: the test harness captures
            // the print macros of passing tests, and a skip must be seen.
            let _ = writeln!(
                std::io::stderr(),
                "SKIPPED: {test}: no {server} server ({what}: {hint}). This test did NOT run."
            );
            None
        }
        Err(e) => panic!("{test}: could not start the {server} server: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn missing() -> Result<(), SupportError> {
        Err(SupportError::BinariesMissing {
            what: "redis-server",
            hint: "install it".into(),
        })
    }

    #[test]
    fn missing_server_is_a_skip_outside_ci() {
        assert_eq!(decide_with("t", "redis", missing(), false), None);
        assert_eq!(decide_with("t", "redis", Ok(7), false), Some(7));
    }

    #[test]
    #[should_panic(expected = "CI=true and the redis server is missing")]
    fn missing_server_fails_in_ci() {
        decide_with("t", "redis", missing(), true);
    }

    #[test]
    #[should_panic(expected = "could not start the postgres server")]
    fn a_broken_server_is_never_a_skip() {
        let broken: Result<(), SupportError> = Err(SupportError::Failed {
            what: "initdb".into(),
            detail: "exit status: 1".into(),
            log_tail: String::new(),
        });
        decide_with("t", "postgres", broken, false);
    }
}
