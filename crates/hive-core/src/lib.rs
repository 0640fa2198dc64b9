//! The hyperhive daemon (`hive serve`).
//!
//! This crate owns the running hive: its components (status rows, the
//! task board, config repos, the agent lifecycle — the one holder of the
//! container runtime —, approvals, budget questions), which
//! [`coordinator::Coordinator`] composes; the three kinds of unix sockets
//! (host.sock for the operator, one per agent, the manager's); the timers
//! (reminders, question TTLs, broker vacuum); and the dashboard's HTTP
//! API. Durable state lives in `hive-store`; wire types in `hive-proto`.

pub mod actions;
pub mod activity;
pub mod agent_server;
pub mod budget;
pub mod checkpoint;
pub mod config;
pub mod coordinator;
pub mod deploys;
pub mod egress;
pub mod engine;
pub mod error;
pub mod events;
pub mod host_server;
pub mod http;
pub mod jsonl;
pub mod lifecycle;
pub mod link;
pub mod link_server;
pub mod listener;
pub mod paths;
pub mod ports;
pub mod safe_fs;
pub mod sandbox_files;
pub mod scheduler;
pub mod serve;
pub mod settings;
pub mod status;
pub mod tasks;

pub use paths::Paths;
pub use serve::{ServeConfig, Started};
