//! The optional mirror: a force push of an applied repo's `main` and every
//! tag to `<base>/<name>.git`, best-effort.
//!
//! The push uses an anonymous remote and hands credentials over through
//! libgit2's credential callback, per push: no URL with a token, no named
//! remote, nothing is ever written into a repo's config. That matters
//! because the manager sees `/applied` read-only — a token in
//! `.git/config` would leak core's credential to an agent.
//!
//! Transports: local paths and `file://` URLs, `http://` and `https://`
//! (user name + token as basic auth). `ssh://` is not built in.

use std::cell::RefCell;
use std::fmt;

use git2::{Cred, CredentialType, PushOptions, RemoteCallbacks};
use hive_proto::AgentName;
use serde::{Deserialize, Serialize};

use crate::error::{Error, GitContext, Result};
use crate::repos::ConfigRepos;

/// User name sent with a token when neither the config nor the URL names
/// one (forges such as Forgejo and Gitea accept any name with a token).
pub const DEFAULT_MIRROR_USER: &str = "hyperhive";

/// Where and as whom to mirror. `Debug` never shows the token.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MirrorConfig {
    /// A base (`https://forge.example/agent-configs`, `/srv/mirrors`) under
    /// which `<name>.git` lives, or a template containing `{name}`.
    pub url_template: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
}

impl fmt::Debug for MirrorConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MirrorConfig")
            .field("url_template", &redact_url(&self.url_template))
            .field("username", &self.username)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

impl MirrorConfig {
    /// The remote of `name`: the template with `{name}` replaced, or
    /// `<base>/<name>.git`.
    pub fn url_for(&self, name: &AgentName) -> String {
        if self.url_template.contains("{name}") {
            self.url_template.replace("{name}", name.as_str())
        } else {
            format!("{}/{name}.git", self.url_template.trim_end_matches('/'))
        }
    }
}

impl ConfigRepos {
    /// Force-pushes applied `main` and every tag to the mirror. The remote
    /// repo must exist. Best-effort by contract: core logs an error and goes
    /// on; nothing in applied changes either way.
    pub fn mirror(&self, name: &AgentName, mirror: &MirrorConfig) -> Result<()> {
        let applied = self.open_applied(name)?;
        let url = mirror.url_for(name);
        let fail = |message: &str| Error::Mirror {
            agent: name.to_string(),
            url: redact_url(&url),
            message: match &mirror.token {
                Some(token) if !token.is_empty() => message.replace(token.as_str(), "<redacted>"),
                _ => message.to_owned(),
            },
        };

        let mut refspecs = vec!["+refs/heads/main:refs/heads/main".to_owned()];
        let ctx = || format!("list the refs of the applied config repo of {name}");
        for reference in applied.references_glob("refs/tags/*").git(ctx)? {
            let reference = reference.git(ctx)?;
            if let Ok(refname) = reference.name() {
                refspecs.push(format!("+{refname}:{refname}"));
            }
        }

        let rejected = RefCell::new(Vec::new());
        let asked = RefCell::new(0u32);
        let mut callbacks = RemoteCallbacks::new();
        callbacks.credentials(|_url, user_from_url, allowed| {
            *asked.borrow_mut() += 1;
            if *asked.borrow() > 1 {
                return Err(git2::Error::from_str(
                    "the remote refused the configured credentials",
                ));
            }
            match mirror.token.as_deref() {
                Some(token) if allowed.contains(CredentialType::USER_PASS_PLAINTEXT) => {
                    let user = mirror
                        .username
                        .as_deref()
                        .or(user_from_url)
                        .unwrap_or(DEFAULT_MIRROR_USER);
                    Cred::userpass_plaintext(user, token)
                }
                Some(_) => Err(git2::Error::from_str(
                    "the remote wants credentials other than a user name and token",
                )),
                None => Err(git2::Error::from_str(
                    "the remote wants credentials and no mirror token is configured",
                )),
            }
        });
        callbacks.push_update_reference(|refname, status| {
            if let Some(status) = status {
                rejected.borrow_mut().push(format!("{refname} ({status})"));
            }
            Ok(())
        });
        let mut options = PushOptions::new();
        options.remote_callbacks(callbacks);

        let mut remote = applied
            .remote_anonymous(&url)
            .map_err(|e| fail(e.message()))?;
        remote
            .push(&refspecs, Some(&mut options))
            .map_err(|e| fail(e.message()))?;
        drop(options);
        let rejected = rejected.into_inner();
        if !rejected.is_empty() {
            return Err(fail(&format!("rejected {}", rejected.join(", "))));
        }
        tracing::debug!(agent = %name, url = %redact_url(&url), refs = refspecs.len(), "mirrored");
        Ok(())
    }
}

/// `url` without user-info (`https://user:token@host/x` → `https://host/x`).
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => format!("{scheme}://{}", &rest[at + 1..]),
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let name = AgentName::parse("coder").unwrap();
        let m = |t: &str| MirrorConfig {
            url_template: t.into(),
            username: None,
            token: Some("s3cret".into()),
        };
        assert_eq!(
            m("http://forge:3000/agent-configs/").url_for(&name),
            "http://forge:3000/agent-configs/coder.git"
        );
        assert_eq!(m("/srv/m").url_for(&name), "/srv/m/coder.git");
        assert_eq!(
            m("file:///srv/{name}/config.git").url_for(&name),
            "file:///srv/coder/config.git"
        );
        assert!(!format!("{:?}", m("/x")).contains("s3cret"));
        assert_eq!(
            redact_url("https://u:tok@forge.example/a/b.git"),
            "https://forge.example/a/b.git"
        );
        assert_eq!(redact_url("/srv/a@b/x.git"), "/srv/a@b/x.git");
        assert_eq!(
            redact_url("http://forge/a@b/x.git"),
            "http://forge/a@b/x.git"
        );
    }
}
