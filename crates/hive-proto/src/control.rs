//! The control dir: files core writes for the harness.
//!
//! Core owns the dir (`<state-dir>/agents/<name>/control/` on the host) and
//! binds it read-only into the container at `/run/hive/control`
//! (`HIVE_CONTROL_DIR`), so an agent can read these files but never plant a
//! link or a file core would then follow. Both sides name the files
//! through these constants.

/// Present while the operator has paused the agent; the harness starts no
/// turn while it exists.
pub const PAUSED: &str = "paused";
/// The deployed config (sha, `agent.toml`, role prompt) as JSON.
pub const DEPLOYED: &str = "deployed.json";
