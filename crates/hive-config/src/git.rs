//! The git vocabulary core shares across config repos: the deployed
//! branch, core's signature, short shas.

use git2::{Oid, Signature};

use crate::error::{GitContext, Result};

/// The deployed branch of an applied repo (and the branch of a new
/// proposed repo).
pub const MAIN: &str = "refs/heads/main";

/// Name and e-mail on every commit and annotated tag core writes.
pub const CORE_SIGNATURE: (&str, &str) = ("hyperhive", "hive@localhost");

pub(crate) fn core_signature() -> Result<Signature<'static>> {
    Signature::now(CORE_SIGNATURE.0, CORE_SIGNATURE.1).git(|| "make a signature".to_owned())
}

/// Short form of a sha for messages.
pub(crate) fn short(oid: Oid) -> String {
    oid.to_string().chars().take(12).collect()
}
