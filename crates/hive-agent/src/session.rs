//! Which system prompt the engine's current session started with.
//!
//! A session keeps the system prompt of its first run (`claude --continue`
//! ignores a new `--append-system-prompt`), so a turn whose prompt differs
//! from the one recorded here — a deployed role change — starts a fresh
//! session, and its prompt opens with a short handoff pointing the agent at
//! its notes. A switch of engine (claude → codex) does the same. The record
//! is the harness's own file in the state dir.

use std::path::Path;

use crate::files;

/// The fingerprint of a session of `engine` with system prompt `prompt`:
/// an engine switch starts a fresh session too (claude's is the prompt's
/// alone, as before there was a second engine).
pub fn fingerprint_for(engine: &str, prompt: &str) -> String {
    if engine == "claude" {
        fingerprint(prompt)
    } else {
        fingerprint(&format!("engine: {engine}\n{prompt}"))
    }
}

/// A stable fingerprint of a system prompt (FNV-1a, 64 bits, hex).
pub fn fingerprint(prompt: &str) -> String {
    let hash = prompt.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    format!("{hash:016x}")
}

/// The fingerprint the current session started with, if recorded.
pub fn started_with(state_dir: &Path) -> Option<String> {
    std::fs::read_to_string(state_dir.join(files::SESSION_PROMPT))
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
}

/// Records that a session starts (or goes on) with `fingerprint`.
pub fn record(state_dir: &Path, fingerprint: &str) {
    if let Err(e) = std::fs::write(
        state_dir.join(files::SESSION_PROMPT),
        format!("{fingerprint}\n"),
    ) {
        tracing::warn!("session prompt not recorded: {e}");
    }
}

/// The first prompt of a session started because the system prompt
/// changed.
pub fn handoff(prompt: &str, state_dir: &Path) -> String {
    format!(
        "[hive] A new config was deployed and your system prompt (your role) or your engine \
         changed, so this turn starts a fresh session: your earlier conversation is not in context. Before \
         anything else, read the notes and checkpoints you keep under {} to pick up your \
         thread, then follow your role as it reads now.\n\n{prompt}",
        state_dir.display()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_are_stable_and_tell_prompts_apart() {
        assert_eq!(fingerprint(""), "cbf29ce484222325");
        assert_eq!(fingerprint_for("claude", "x"), fingerprint("x"));
        assert_ne!(fingerprint_for("codex", "x"), fingerprint("x"));
        assert_ne!(
            fingerprint("You review code."),
            fingerprint("You write docs.")
        );
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(started_with(dir.path()), None);
        record(dir.path(), &fingerprint("a"));
        assert_eq!(started_with(dir.path()), Some(fingerprint("a")));
    }
}
