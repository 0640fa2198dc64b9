//! The shape check of a `commit_ref`: 7–40 hex digits, nothing else.
//!
//! Branch and tag names are refused before anything is resolved, so an
//! approval always pins one immutable commit.

use crate::error::{Error, Result};

/// Fewest hex digits a `commit_ref` may have.
pub const MIN_SHA_LEN: usize = 7;
/// Most hex digits a `commit_ref` may have (a full SHA-1).
pub const MAX_SHA_LEN: usize = 40;

/// Refuses anything but 7–40 hex digits.
pub fn validate_commit_ref(commit_ref: &str) -> Result<()> {
    let shown = shown(commit_ref);
    if commit_ref.is_empty() {
        return Err(Error::BadCommitRef(
            "commit_ref is empty: pass the sha of a commit in the agent's config repo \
             (7 to 40 hex digits)"
                .to_owned(),
        ));
    }
    if !commit_ref.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(Error::BadCommitRef(format!(
            "commit_ref `{shown}` is not a commit sha: pass 7 to 40 hex digits (branch and tag \
             names are refused so that an approval pins one immutable commit)"
        )));
    }
    if commit_ref.len() < MIN_SHA_LEN {
        return Err(Error::BadCommitRef(format!(
            "commit_ref `{shown}` is too short: pass at least 7 hex digits of the commit sha"
        )));
    }
    if commit_ref.len() > MAX_SHA_LEN {
        return Err(Error::BadCommitRef(format!(
            "commit_ref `{shown}` is too long: a commit sha has at most 40 hex digits"
        )));
    }
    Ok(())
}

/// `s`, cut to 48 characters for messages.
fn shown(s: &str) -> String {
    const MAX: usize = 48;
    if s.chars().count() <= MAX {
        s.to_owned()
    } else {
        let mut cut: String = s.chars().take(MAX).collect();
        cut.push('…');
        cut
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes() {
        for ok in [
            "abcdef0",
            "ABCDEF0",
            "0123456789abcdef0123456789abcdef01234567",
        ] {
            assert!(validate_commit_ref(ok).is_ok(), "{ok}");
        }
        for (input, expected) in [
            (
                "",
                "commit_ref is empty: pass the sha of a commit in the agent's config repo (7 to 40 hex digits)",
            ),
            (
                "main",
                "commit_ref `main` is not a commit sha: pass 7 to 40 hex digits (branch and tag names are refused so that an approval pins one immutable commit)",
            ),
            (
                "HEAD~1",
                "commit_ref `HEAD~1` is not a commit sha: pass 7 to 40 hex digits (branch and tag names are refused so that an approval pins one immutable commit)",
            ),
            (
                "abc123",
                "commit_ref `abc123` is too short: pass at least 7 hex digits of the commit sha",
            ),
            (
                "0123456789abcdef0123456789abcdef012345678",
                "commit_ref `0123456789abcdef0123456789abcdef012345678` is too long: a commit sha has at most 40 hex digits",
            ),
        ] {
            assert_eq!(
                validate_commit_ref(input).unwrap_err().to_string(),
                expected
            );
        }
    }
}
