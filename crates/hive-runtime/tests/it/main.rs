//! Runtime backends driven for real: one module per backend.
#![allow(clippy::unwrap_used, clippy::expect_used)] // the shared helpers are test code too

mod docker;
mod process;
mod support;
