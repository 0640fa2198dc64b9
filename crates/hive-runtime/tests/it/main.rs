//! Runtime backends driven for real: one module per backend.
#![allow(clippy::unwrap_used, clippy::expect_used)] // the shared helpers are test code too

mod bwrap;
mod docker;
mod nspawn;
mod process;
mod support;
mod swarm;
