//! The seccomp filter of the `bwrap` backend: a deny-list modelled on
//! Docker's default profile, compiled to a classic BPF program with
//! `seccompiler` and handed to bwrap's `--seccomp FD` in a sealed memfd.
//!
//! Everything is allowed except the syscalls a coding agent never needs
//! and that widen the kernel's reach, which fail with `EPERM`:
//!
//! - kernel modules, kexec, reboot, swap, clock setting, `acct`,
//!   `quotactl`, `syslog`, `vhangup`, the legacy x86 ones (`iopl`,
//!   `ioperm`, `uselib`, `ustat`, `sysfs`, `_sysctl`);
//! - the keyring (`add_key`, `request_key`, `keyctl`), `bpf`,
//!   `userfaultfd`, `perf_event_open`, `fanotify_init`, `io_uring_*`,
//!   `lookup_dcookie`, `nfsservctl`;
//! - the mount family (`mount`, `umount2`, the new mount API, `pivot_root`,
//!   `chroot`), `open_by_handle_at` and `name_to_handle_at`;
//! - other namespaces: `setns`, and `unshare` and `clone` with a
//!   namespace flag (plain `clone` for threads and forks is allowed);
//! - `ptrace`, `process_vm_readv`/`writev` and `kcmp` (node, git and the
//!   engine CLI use none of them; debuggers are not an agent's job);
//! - `personality` except the values Docker allows (query, `PER_LINUX`,
//!   `PER_LINUX32`, `UNAME26`).
//!
//! `clone3` fails with `ENOSYS` instead, as in Docker: its flags are in
//! memory a filter cannot read, and `ENOSYS` makes libc fall back to
//! `clone`, whose flags it can. On x86_64 every x32 syscall (number with
//! bit 30 set, same audit arch) fails with `EPERM`, else the deny-list
//! could be dodged through the x32 numbers of the same calls; calls of
//! another ABI (i386, arm32) kill the process (seccompiler's arch check).
//!
//! Those two checks are a five-instruction preamble written here, put
//! right after seccompiler's arch check: seccompiler has one action per
//! filter and cannot compare the syscall number to a range. A syscall the
//! architecture lacks is simply not in its list.

use std::io::{Seek as _, Write as _};
use std::os::fd::OwnedFd;

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch, sock_filter,
};

/// Syscalls denied outright, on every architecture hive builds for.
const DENIED: &[libc::c_long] = &[
    libc::SYS_init_module,
    libc::SYS_finit_module,
    libc::SYS_delete_module,
    libc::SYS_kexec_load,
    libc::SYS_kexec_file_load,
    libc::SYS_reboot,
    libc::SYS_swapon,
    libc::SYS_swapoff,
    libc::SYS_settimeofday,
    libc::SYS_clock_settime,
    libc::SYS_clock_adjtime,
    libc::SYS_acct,
    libc::SYS_quotactl,
    libc::SYS_quotactl_fd,
    libc::SYS_syslog,
    libc::SYS_vhangup,
    libc::SYS_add_key,
    libc::SYS_request_key,
    libc::SYS_keyctl,
    libc::SYS_bpf,
    libc::SYS_userfaultfd,
    libc::SYS_perf_event_open,
    libc::SYS_fanotify_init,
    libc::SYS_io_uring_setup,
    libc::SYS_io_uring_enter,
    libc::SYS_io_uring_register,
    libc::SYS_lookup_dcookie,
    libc::SYS_nfsservctl,
    libc::SYS_mount,
    libc::SYS_umount2,
    libc::SYS_fsopen,
    libc::SYS_fsconfig,
    libc::SYS_fsmount,
    libc::SYS_fspick,
    libc::SYS_move_mount,
    libc::SYS_open_tree,
    libc::SYS_mount_setattr,
    libc::SYS_pivot_root,
    libc::SYS_chroot,
    libc::SYS_open_by_handle_at,
    libc::SYS_name_to_handle_at,
    libc::SYS_setns,
    libc::SYS_ptrace,
    libc::SYS_process_vm_readv,
    libc::SYS_process_vm_writev,
    libc::SYS_kcmp,
];

/// Denied syscalls only this architecture has.
#[cfg(target_arch = "x86_64")]
const DENIED_ARCH: &[libc::c_long] = &[
    libc::SYS_iopl,
    libc::SYS_ioperm,
    libc::SYS_uselib,
    libc::SYS_ustat,
    libc::SYS_sysfs,
    libc::SYS__sysctl,
];
#[cfg(not(target_arch = "x86_64"))]
const DENIED_ARCH: &[libc::c_long] = &[];

/// The namespace flags `clone` may not carry (`CLONE_NEWTIME` shares its
/// bit with the exit signal there, so it is only checked for `unshare`).
const CLONE_NAMESPACES: &[libc::c_int] = &[
    libc::CLONE_NEWNS,
    libc::CLONE_NEWCGROUP,
    libc::CLONE_NEWUTS,
    libc::CLONE_NEWIPC,
    libc::CLONE_NEWUSER,
    libc::CLONE_NEWPID,
    libc::CLONE_NEWNET,
];

/// `CLONE_NEWTIME`, which libc does not name on every target.
const CLONE_NEWTIME: libc::c_int = 0x80;

/// `personality` values allowed, as in Docker: `PER_LINUX`,
/// `PER_LINUX32`, `UNAME26`, both, and the query.
const PERSONALITIES: &[u64] = &[0x0, 0x8, 0x2_0000, 0x2_0008, 0xffff_ffff];

/// The first syscall number of the x32 ABI.
#[cfg(target_arch = "x86_64")]
const X32_SYSCALL_BIT: u32 = 0x4000_0000;

#[cfg(target_arch = "x86_64")]
const ARCH: Option<TargetArch> = Some(TargetArch::x86_64);
#[cfg(target_arch = "aarch64")]
const ARCH: Option<TargetArch> = Some(TargetArch::aarch64);
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
const ARCH: Option<TargetArch> = None;

/// The filter as BPF instructions.
pub fn program() -> Result<BpfProgram, String> {
    let arch = ARCH.ok_or("no seccomp filter for this architecture")?;
    let mut rules: std::collections::BTreeMap<i64, Vec<SeccompRule>> = DENIED
        .iter()
        .chain(DENIED_ARCH)
        .map(|&nr| (nr, Vec::new()))
        .collect();
    let flag_set = |flag: libc::c_int| -> Result<SeccompRule, String> {
        let flag = u64::try_from(flag).map_err(|e| e.to_string())?;
        rule(vec![condition(
            SeccompCmpArgLen::Qword,
            SeccompCmpOp::MaskedEq(flag),
            flag,
        )?])
    };
    let clone: Vec<SeccompRule> = CLONE_NAMESPACES
        .iter()
        .map(|&flag| flag_set(flag))
        .collect::<Result<_, _>>()?;
    let mut unshare = clone.clone();
    unshare.push(flag_set(CLONE_NEWTIME)?);
    rules.insert(libc::SYS_clone, clone);
    rules.insert(libc::SYS_unshare, unshare);
    let other_personality = PERSONALITIES
        .iter()
        .map(|&value| condition(SeccompCmpArgLen::Dword, SeccompCmpOp::Ne, value))
        .collect::<Result<_, _>>()?;
    rules.insert(libc::SYS_personality, vec![rule(other_personality)?]);

    let filter = SeccompFilter::new(
        rules,
        SeccompAction::Allow,
        SeccompAction::Errno(errno(libc::EPERM)),
        arch,
    )
    .map_err(|e| format!("seccomp filter: {e}"))?;
    let mut program: BpfProgram =
        BpfProgram::try_from(filter).map_err(|e| format!("seccomp filter: {e}"))?;
    // seccompiler opens with its arch check: load the arch, jump over the
    // kill if it matches, kill. The preamble goes where that jump lands.
    let after_arch_check = 3;
    if program.get(after_arch_check - 1).map(|i| (i.code, i.k))
        != Some((BPF_RET, libc::SECCOMP_RET_KILL_PROCESS))
    {
        return Err("seccomp filter: unexpected layout from seccompiler".into());
    }
    program.splice(after_arch_check..after_arch_check, preamble());
    Ok(program)
}

/// The filter as the bytes bwrap reads: `struct sock_filter` in native
/// byte order, one after another.
pub fn bytes() -> Result<Vec<u8>, String> {
    Ok(program()?
        .iter()
        .flat_map(|i| {
            let mut b = Vec::with_capacity(8);
            b.extend(i.code.to_ne_bytes());
            b.extend([i.jt, i.jf]);
            b.extend(i.k.to_ne_bytes());
            b
        })
        .collect())
}

/// The filter in a sealed memfd (close-on-exec, offset 0), for bwrap's
/// `--seccomp FD`: nothing on disk, nothing anyone can change.
pub fn memfd() -> Result<OwnedFd, String> {
    use nix::fcntl::{FcntlArg, SealFlag, fcntl};
    use nix::sys::memfd::{MFdFlags, memfd_create};
    let bytes = bytes()?;
    let fd = memfd_create(
        c"hive-seccomp",
        MFdFlags::MFD_CLOEXEC | MFdFlags::MFD_ALLOW_SEALING,
    )
    .map_err(|e| format!("memfd for the seccomp filter: {e}"))?;
    let mut file = std::fs::File::from(fd);
    file.write_all(&bytes)
        .and_then(|()| file.rewind())
        .map_err(|e| format!("write the seccomp filter: {e}"))?;
    let seals = SealFlag::F_SEAL_WRITE
        | SealFlag::F_SEAL_GROW
        | SealFlag::F_SEAL_SHRINK
        | SealFlag::F_SEAL_SEAL;
    fcntl(&file, FcntlArg::F_ADD_SEALS(seals))
        .map_err(|e| format!("seal the seccomp filter: {e}"))?;
    Ok(OwnedFd::from(file))
}

fn rule(conditions: Vec<SeccompCondition>) -> Result<SeccompRule, String> {
    SeccompRule::new(conditions).map_err(|e| format!("seccomp rule: {e}"))
}

/// A condition on the first argument.
fn condition(
    len: SeccompCmpArgLen,
    op: SeccompCmpOp,
    value: u64,
) -> Result<SeccompCondition, String> {
    SeccompCondition::new(0, len, op, value).map_err(|e| format!("seccomp condition: {e}"))
}

fn errno(value: libc::c_int) -> u32 {
    value.unsigned_abs()
}

const BPF_LD_W_ABS: u16 = (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16;
const BPF_JEQ_K: u16 = (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16;
#[cfg(target_arch = "x86_64")]
const BPF_JGE_K: u16 = (libc::BPF_JMP | libc::BPF_JGE | libc::BPF_K) as u16;
const BPF_RET: u16 = (libc::BPF_RET | libc::BPF_K) as u16;

/// `clone3` → `ENOSYS`; on x86_64, any x32 syscall → `EPERM`. Falls
/// through to seccompiler's rules (which reload the number).
fn preamble() -> Vec<sock_filter> {
    let op = |code, jt, jf, k| sock_filter { code, jt, jf, k };
    // `seccomp_data.nr` is the first field.
    let mut preamble = vec![
        op(BPF_LD_W_ABS, 0, 0, 0),
        op(BPF_JEQ_K, 0, 1, libc::SYS_clone3 as u32),
        op(BPF_RET, 0, 0, libc::SECCOMP_RET_ERRNO | errno(libc::ENOSYS)),
    ];
    #[cfg(target_arch = "x86_64")]
    preamble.extend([
        op(BPF_JGE_K, 0, 1, X32_SYSCALL_BIT),
        op(BPF_RET, 0, 0, libc::SECCOMP_RET_ERRNO | errno(libc::EPERM)),
    ]);
    preamble
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compiles_with_the_preamble_after_the_arch_check() {
        let program = program().unwrap();
        assert_eq!(program[3].code, BPF_LD_W_ABS);
        assert_eq!(program[4].k, libc::SYS_clone3 as u32);
        assert_eq!(program[5].k, libc::SECCOMP_RET_ERRNO | libc::ENOSYS as u32);
        // The kernel takes at most 4096 instructions.
        assert!(program.len() < 4096, "{}", program.len());
        assert_eq!(bytes().unwrap().len(), program.len() * 8);
    }

    #[test]
    fn the_memfd_is_sealed_and_holds_the_program() {
        use std::io::Read as _;
        let mut file = std::fs::File::from(memfd().unwrap());
        let mut read = Vec::new();
        file.read_to_end(&mut read).unwrap();
        assert_eq!(read, bytes().unwrap());
        let err = file.write_all(b"x").unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EPERM), "{err}");
    }
}
