//! The curated `/etc` every sandboxing backend binds read-only instead of the host's.
//!
//! [`write_etc`] fills the spec's core-owned `etc_dir` at `create`: a
//! `passwd` and `group` naming only `root`, `nobody`/`nogroup` and the
//! agent's own user (`agent`, home `/state`) and group (`agents`);
//! `hosts` (localhost and the container's hostname); a `resolv.conf` with
//! no server (the sandbox has no network of its own: core's egress proxy
//! resolves names); an `nsswitch.conf` that reads files only; and copies of
//! what programs need from the host: the dynamic loader's cache and config
//! (multiarch libraries), the CA bundle (`ssl/certs/ca-certificates.crt`,
//! which TLS stacks read by default; not the hashed symlink set, hundreds
//! of entries rewritten at every create), the alternatives symlinks (not
//! the man pages' `*.gz`), `localtime`, `os-release`, shell profiles and
//! `gitconfig` (with every directory marked safe: repos under `/agents`
//! and `/shared` belong to another uid, and everything in the sandbox is
//! the agent's anyway). Nothing else of the host's `/etc` — `shadow`,
//! `ssh`, credentials — exists inside.
//!
//! Files are written 0644 and directories 0755, so the agent's uid can
//! read them; the directory is bound read-only, so it cannot change them.

use std::io::ErrorKind;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

use crate::{ContainerSpec, Error, Result};

/// The name of the agent's user in the curated `passwd`.
pub const USER_NAME: &str = "agent";
/// The name of the agents' group in the curated `group`.
pub const GROUP_NAME: &str = "agents";

/// Host entries copied as they are (files copied, symlinks recreated,
/// directories mirrored), where they exist.
const COPIED: &[&str] = &[
    "ld.so.cache",
    "ld.so.conf",
    "ld.so.conf.d",
    "ssl/certs/ca-certificates.crt",
    "ssl/openssl.cnf",
    "ca-certificates.conf",
    "alternatives",
    "localtime",
    "timezone",
    "os-release",
    "bash.bashrc",
    "profile",
    "profile.d",
    "inputrc",
    "protocols",
    "services",
    "mime.types",
    "environment",
];

/// Writes the curated `/etc` for `spec` into `spec.etc_dir`, replacing
/// whatever an earlier `create` left there.
pub fn write_etc(spec: &ContainerSpec) -> Result<()> {
    write_etc_from(spec, Path::new("/etc"))
}

/// [`write_etc`] with the host's `/etc` at `host_etc`.
pub fn write_etc_from(spec: &ContainerSpec, host_etc: &Path) -> Result<()> {
    let dir = &spec.etc_dir;
    make_dir(dir)?;
    clear(dir)?;
    for (name, text) in agent_files(spec) {
        write_file(&dir.join(name), text.as_bytes())?;
    }
    write_common(dir, host_etc)
}

/// The files of the curated `/etc` that are the agent's own: `passwd` and
/// `group` (its user and group), `hosts` and `hostname` (its hostname).
pub fn agent_files(spec: &ContainerSpec) -> [(&'static str, String); 4] {
    let (uid, gid) = match spec.user {
        Some(user) => (user.uid, user.gid),
        None => (
            nix::unistd::getuid().as_raw(),
            nix::unistd::getgid().as_raw(),
        ),
    };
    let hostname = spec.container_name();
    let shell = if Path::new("/bin/bash").exists() {
        "/bin/bash"
    } else {
        "/bin/sh"
    };
    let mut passwd = String::from("root:x:0:0:root:/root:/bin/sh\n");
    if uid != 0 {
        passwd.push_str(&format!(
            "{USER_NAME}:x:{uid}:{gid}:hyperhive agent:{}:{shell}\n",
            crate::mount::STATE
        ));
    }
    passwd.push_str("nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n");
    let mut group = String::from("root:x:0:\n");
    if gid != 0 {
        group.push_str(&format!("{GROUP_NAME}:x:{gid}:{USER_NAME}\n"));
    }
    group.push_str("nogroup:x:65534:\n");
    [
        ("passwd", passwd),
        ("group", group),
        (
            "hosts",
            format!("127.0.0.1\tlocalhost\n::1\tlocalhost\n127.0.1.1\t{hostname}\n"),
        ),
        ("hostname", format!("{hostname}\n")),
    ]
}

/// Writes the part of the curated `/etc` every agent shares into `dir`
/// (which must exist): no DNS, files-only name service, the host's
/// `gitconfig` with every directory safe, and the [`COPIED`] entries of
/// `host_etc`.
pub fn write_common(dir: &Path, host_etc: &Path) -> Result<()> {
    let files: [(&str, &str); 2] = [
        (
            "resolv.conf",
            "# No DNS inside the sandbox: core's egress proxy resolves names.\n",
        ),
        (
            "nsswitch.conf",
            "passwd: files\ngroup: files\nshadow: files\nhosts: files\nnetworks: files\n\
             protocols: files\nservices: files\nethers: files\nrpc: files\n",
        ),
    ];
    for (name, text) in files {
        write_file(&dir.join(name), text.as_bytes())?;
    }
    let mut gitconfig = std::fs::read(host_etc.join("gitconfig")).unwrap_or_default();
    if !gitconfig.is_empty() && !gitconfig.ends_with(b"\n") {
        gitconfig.push(b'\n');
    }
    gitconfig.extend_from_slice(b"[safe]\n\tdirectory = *\n");
    write_file(&dir.join("gitconfig"), &gitconfig)?;
    for entry in COPIED {
        let from = host_etc.join(entry);
        let to = dir.join(entry);
        if let Some(parent) = to.parent() {
            make_dir(parent)?;
        }
        copy_entry(&from, &to)?;
    }
    Ok(())
}

/// Removes everything inside `dir` (never following a link).
fn clear(dir: &Path) -> Result<()> {
    let entries = std::fs::read_dir(dir).map_err(Error::io(format!("read {}", dir.display())))?;
    for entry in entries {
        let entry = entry.map_err(Error::io(format!("read {}", dir.display())))?;
        let path = entry.path();
        let removed = match entry.file_type() {
            Ok(t) if t.is_dir() => std::fs::remove_dir_all(&path),
            _ => std::fs::remove_file(&path),
        };
        removed.map_err(Error::io(format!("remove {}", path.display())))?;
    }
    Ok(())
}

fn make_dir(dir: &Path) -> Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(dir)
        .map_err(Error::io(format!("create {}", dir.display())))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))
        .map_err(Error::io(format!("chmod {}", dir.display())))
}

fn write_file(path: &Path, contents: &[u8]) -> Result<()> {
    use std::io::Write;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .open(path)
        .map_err(Error::io(format!("create {}", path.display())))?;
    file.write_all(contents)
        .map_err(Error::io(format!("write {}", path.display())))
}

/// Copies one host entry: a symlink as the same link, a file's contents,
/// a directory entry by entry. A missing or unreadable entry is skipped.
fn copy_entry(from: &Path, to: &Path) -> Result<()> {
    let meta = match std::fs::symlink_metadata(from) {
        Ok(meta) => meta,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::io(format!("stat {}", from.display()))(e)),
    };
    let kind = meta.file_type();
    if kind.is_symlink() {
        let target =
            std::fs::read_link(from).map_err(Error::io(format!("read link {}", from.display())))?;
        std::os::unix::fs::symlink(&target, to).map_err(Error::io(format!("link {}", to.display())))
    } else if kind.is_dir() {
        make_dir(to)?;
        let entries =
            std::fs::read_dir(from).map_err(Error::io(format!("read {}", from.display())))?;
        for entry in entries.flatten() {
            let name = entry.file_name();
            if name.as_encoded_bytes().ends_with(b".gz") {
                continue; // alternatives of man pages
            }
            copy_entry(&entry.path(), &to.join(name))?;
        }
        Ok(())
    } else if kind.is_file() {
        match std::fs::read(from) {
            Ok(bytes) => write_file(to, &bytes),
            Err(e) if e.kind() == ErrorKind::PermissionDenied => Ok(()),
            Err(e) => Err(Error::io(format!("read {}", from.display()))(e)),
        }
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn curates_a_small_etc() {
        let dir = tempfile::tempdir().unwrap();
        let host = dir.path().join("host");
        std::fs::create_dir_all(host.join("ssl/certs")).unwrap();
        std::fs::write(host.join("shadow"), "root:secret").unwrap();
        std::fs::write(host.join("ssl/certs/ca-certificates.crt"), "CERTS").unwrap();
        std::os::unix::fs::symlink("ca-certificates.crt", host.join("ssl/certs/abcd.0")).unwrap();
        std::fs::create_dir_all(host.join("alternatives")).unwrap();
        std::os::unix::fs::symlink("/usr/bin/gawk", host.join("alternatives/awk")).unwrap();
        std::os::unix::fs::symlink("/usr/x.7.gz", host.join("alternatives/x.7.gz")).unwrap();
        std::os::unix::fs::symlink("../usr/lib/os-release", host.join("os-release")).unwrap();
        std::fs::write(host.join("gitconfig"), "[core]\n\tpager = less").unwrap();
        let etc = dir.path().join("etc");
        let spec = ContainerSpec {
            etc_dir: etc.clone(),
            ..crate::test_spec()
        };
        std::fs::create_dir_all(&etc).unwrap();
        std::fs::write(etc.join("stale"), "from before").unwrap();
        write_etc_from(&spec, &host).unwrap();
        let read = |p: &str| std::fs::read_to_string(etc.join(p)).unwrap();
        assert!(read("passwd").contains("agent:x:108100:100000:"));
        assert!(read("group").contains("agents:x:100000:agent"));
        assert!(read("hosts").contains("h-coder"));
        assert!(read("gitconfig").starts_with("[core]\n\tpager = less\n[safe]"));
        assert_eq!(read("ssl/certs/ca-certificates.crt"), "CERTS");
        assert_eq!(
            std::fs::read_link(etc.join("alternatives/awk")).unwrap(),
            Path::new("/usr/bin/gawk")
        );
        assert!(!etc.join("alternatives/x.7.gz").exists());
        assert_eq!(
            std::fs::read_link(etc.join("os-release")).unwrap(),
            Path::new("../usr/lib/os-release")
        );
        assert!(!etc.join("shadow").exists());
        assert!(!etc.join("stale").exists());
        // Again: rewritten in place.
        write_etc_from(&spec, &host).unwrap();
        assert!(read("passwd").contains("agent:x:108100"));
    }
}
