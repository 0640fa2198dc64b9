//! Integration tests of hive-config: real repos in a temp dir, the manager
//! played by git2 on the proposed work tree.

#![allow(clippy::unwrap_used, clippy::expect_used)] // the shared helpers are test code too

mod lifecycle;
mod mirror;
mod refusals;
mod rollback;
mod spawn;
mod support;
