//! Broker benchmark (work in progress).
fn main() {}
