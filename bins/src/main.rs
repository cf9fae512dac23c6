//! The `caracal` command line (placeholder).
fn main() {}
