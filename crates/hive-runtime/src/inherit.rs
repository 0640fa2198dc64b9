//! Descriptors a spawned child inherits at their own numbers (bwrap's
//! seccomp memfd): close-on-exec in the daemon, as every descriptor there
//! is, and cleared of it in the child alone, between fork and exec, so
//! no other spawn gets them.

use std::os::fd::OwnedFd;

/// Makes `fds` survive the exec of `command`'s child, at their numbers;
/// they stay close-on-exec in the daemon, so no other child gets them.
pub(crate) fn keep_open(command: &mut std::process::Command, fds: &[OwnedFd]) {
    use std::os::fd::AsRawFd;
    use std::os::unix::process::CommandExt as _;
    if fds.is_empty() {
        return;
    }
    let fds: Vec<i32> = fds.iter().map(AsRawFd::as_raw_fd).collect();
    let clear_cloexec = move || {
        for &fd in &fds {
            // SAFETY: fcntl is async-signal-safe; `fd` is open in the
            // child (the parent holds it open across the spawn).
            #[allow(unsafe_code)]
            if unsafe { nix::libc::fcntl(fd, nix::libc::F_SETFD, 0) } == -1 {
                return Err(std::io::Error::last_os_error());
            }
        }
        Ok(())
    };
    // SAFETY: the hook runs in the forked child before exec; it only calls
    // fcntl and reads a vector allocated before the fork (no allocation,
    // no lock).
    #[allow(unsafe_code)]
    unsafe {
        command.pre_exec(clear_cloexec);
    }
}
