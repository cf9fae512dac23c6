//! # caracal-benches
//!
//! Holds Caracal's criterion benches (`benches/*.rs` beside this file, run with
//! `cargo bench -p caracal-benches`) and, from the Benchmarks issue on, the end-to-end load
//! harness behind `caracal bench`. Benches build their inputs once and measure only the call.
