//! Runtime backends driven for real: one module per backend.

mod process;
mod support;
