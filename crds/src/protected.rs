//! The one list of processes nodemedic never signals, and its matcher,
//! shared by the agent (which refuses to signal them) and the operator
//! (which does not ask). Pure: no I/O.
//!
//! Processes are matched by their `comm` (`/proc/PID/comm`, stat field 2),
//! which the kernel truncates to 15 bytes (TASK_COMM_LEN 16, with the NUL).
//! An entry is therefore compared with `comm` after truncating the entry to
//! 15 bytes — `kube-controller-manager` protects comm `kube-controller` — and
//! a trailing `*` makes it a prefix (also truncated to 15 bytes).

/// The kernel's bound on `comm`, in bytes (TASK_COMM_LEN - 1).
pub const COMM_LEN: usize = 15;

/// Node daemons never signalled, whatever a policy says; a policy's
/// `safety.protectedProcesses` adds to them.
pub const BUILTIN_PROTECTED: &[&str] = &[
    // The kubelet and the control plane (static pods on control-plane nodes).
    "kubelet",
    "kube-proxy",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "etcd",
    // Container runtimes, their shims and monitors, and the OCI runtimes.
    "containerd",
    "containerd-shim*",
    "crio",
    "cri-o",
    "conmon",
    "conmonrs",
    "dockerd",
    "runc*",
    "crun",
    // Every pod's sandbox: its death takes the pod's namespaces with it.
    "pause",
    // systemd and its helpers: systemd-journald is comm "systemd-journal".
    "systemd*",
    // Remote access: sshd, and OpenSSH 9.8+'s per-connection sshd-session.
    "sshd*",
    // nodemedic itself.
    "nodemedic-agent",
    "nodemedic-operator",
];

/// `text` cut to at most `COMM_LEN` bytes, at a character boundary.
fn truncated(text: &str) -> &str {
    if text.len() <= COMM_LEN {
        return text;
    }
    let mut end = COMM_LEN;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// Whether `pattern` (an exact name, or a prefix ending in `*`) matches
/// `comm`, both compared as the kernel stores them (15 bytes at most).
pub fn matches(pattern: &str, comm: &str) -> bool {
    let comm = truncated(comm);
    match pattern.strip_suffix('*') {
        Some(prefix) => comm.starts_with(truncated(prefix)),
        None => comm == truncated(pattern),
    }
}

/// The first of `patterns` that matches `comm`.
pub fn first_match<'a>(comm: &str, patterns: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    patterns.into_iter().find(|p| matches(p, comm))
}

/// The built-in or `extra` (a policy's `protectedProcesses`) entry that
/// protects `comm`, if any.
pub fn protecting<'a>(comm: &str, extra: &'a [String]) -> Option<&'a str> {
    first_match(
        comm,
        BUILTIN_PROTECTED
            .iter()
            .copied()
            .chain(extra.iter().map(String::as_str)),
    )
}

/// Whether `comm` is protected by the built-ins or `extra`.
pub fn is_protected(comm: &str, extra: &[String]) -> bool {
    protecting(comm, extra).is_some()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn real_node_daemons_are_protected_by_their_kernel_comm() {
        // comm as the kernel shows it (15 bytes at most).
        for comm in [
            "kubelet",
            "kube-proxy",
            "kube-apiserver",
            "kube-controller", // kube-controller-manager
            "kube-scheduler",
            "etcd",
            "containerd",
            "containerd-shim", // containerd-shim-runc-v2
            "crio",
            "cri-o",
            "conmon",
            "dockerd",
            "runc",
            "runc:[2:INIT]",
            "crun",
            "pause",
            "systemd",
            "systemd-journal", // systemd-journald
            "systemd-udevd",
            "systemd-logind",
            "sshd",
            "sshd-session",
            "nodemedic-agent",
            "nodemedic-opera", // nodemedic-operator
        ] {
            assert!(is_protected(comm, &[]), "{comm} must be protected");
        }
        for comm in [
            "php-fpm",
            "java",
            "sleep",
            "kubectl",
            "kube-state-metr",
            "etcdctl",
            "run",
        ] {
            assert!(!is_protected(comm, &[]), "{comm} is not a node daemon");
        }
    }

    #[test]
    fn entries_longer_than_comm_match_the_truncated_name() {
        assert!(matches("kube-controller-manager", "kube-controller"));
        assert!(matches("cloud-controller-manager", "cloud-controller"));
        // An entry is not a prefix unless it says so.
        assert!(!matches("kube-controller-manager", "kube-controll"));
        assert!(!matches("kubelet", "kubelet2"));
        // A long prefix is cut too.
        assert!(matches("containerd-shim-runc-v2*", "containerd-shim"));
        assert_eq!(
            protecting("php-fpm", &["php*".to_owned()]),
            Some("php*"),
            "a policy's entries add to the built-ins"
        );
        assert_eq!(protecting("systemd-journal", &[]), Some("systemd*"));
        // Multi-byte names are cut at a character boundary.
        assert!(matches("ééééééééé", "ééééééé"));
        assert!(!matches("ééééééééé", "éééééää"));
    }

    proptest! {
        /// Whatever the name, the kernel's truncated comm of a protected
        /// exact entry is protected, and a comm never matches an exact
        /// entry whose first 15 bytes differ from it.
        #[test]
        fn truncation_never_hides_a_protected_name(name in "[a-z-]{1,30}", comm in "[a-z-]{1,15}") {
            let kernel_comm = truncated(&name);
            prop_assert!(matches(&name, kernel_comm));
            prop_assert_eq!(matches(&name, &comm), comm == kernel_comm);
        }
    }
}
