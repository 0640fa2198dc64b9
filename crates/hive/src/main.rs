//! The `hive` binary (work in progress).
fn main() {}
