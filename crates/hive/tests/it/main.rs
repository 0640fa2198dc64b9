//! Integration tests: the real `hive` binary in a temp dir, spoken to over
//! real unix sockets and HTTP.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers panic on failure

mod adversary;
mod agent;
mod agent_page;
mod board;
mod broker;
mod browser;
mod busy;
mod checkpoint;
mod cli;
mod codex;
mod config;
mod deploy;
mod e2e;
mod egress;
mod engine;
mod hives;
mod host;
mod lifecycle;
mod operator;
mod pages;
mod planted;
mod pressure;
mod sandboxes;
mod spend;
mod support;
mod swarm;
mod tasks;
mod tidy;
mod tls;
