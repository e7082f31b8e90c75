//! D-state waits that are not hangs.
//!
//! A thread that calls `vfork()` (glibc's `posix_spawn`, Python's
//! `subprocess`, a JVM's process launcher) sleeps in `D` until its child
//! calls `execve` or exits. It is waiting on the child, not stuck: the
//! kernel's own hung-task detector does not report it, and nodemedic does
//! not count it either. The wait is attributed to the child instead: if the
//! child is itself stuck, the child's own `D` thread is the hung task.
//!
//! The agent cannot read `wchan` or `stack` of other processes (it runs in
//! a Landlock domain with only `CAP_KILL`), so the wait is recognised from
//! what any process may read, measured on Linux 6.18 (see
//! `docs/agent.md`, "What counts as hung"):
//!
//! - the waiting thread is in `D`;
//! - one of its newest children (`/proc/PID/task/TID/children`, which lists
//!   the children of that very thread) has `PF_FORKNOEXEC` (0x40) in its
//!   stat flags: it was forked and has not exec'd — a vfork child that
//!   exec'd or exited has released its parent;
//! - the child shares the thread's address space: a vfork child runs on
//!   its parent's `mm`, so its `vsize` and `rss` (stat fields 23 and 24)
//!   equal the parent's exactly, read back to back. A plain `fork()` child
//!   gets a copy: the same `vsize` but a different `rss` (file-backed pages
//!   are not copied), measured 2536 against 3424 pages right after fork.
//!
//! Nothing else is exempted: a thread in `D` that shares its address space
//! with no un-exec'd child — NFS, FUSE, a disk, a lock — is counted when
//! it is blocked for `minDuration`, killable wait or not.

use crate::scan::procfs::{BlockedThread, ChildObs};

/// Why a thread in `D` is not counted as hung (the API's enum).
pub use nodemedic_crds::report::WaitReason;

/// The child a blocked thread waits on in `vfork()`, if the evidence holds:
/// a child that has not exec'd, is not a zombie, and shows the thread's own
/// address space (same non-zero `vsize` and `rss`).
pub fn vfork_child(b: &BlockedThread) -> Option<&ChildObs> {
    b.children.iter().find(|c| is_vfork_child(c))
}

/// The evidence for one child (see the module documentation).
pub fn is_vfork_child(c: &ChildObs) -> bool {
    c.fork_no_exec
        && !matches!(c.state, b'Z' | b'X' | b'x')
        && matches!(c.mm, Some((vsize, _)) if vsize > 0)
        && c.mm == c.parent_mm
}

/// How a blocked thread is classified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Blocked<'a> {
    /// May be hung: counted once blocked for `minDuration`.
    Candidate,
    /// Waits on another task; never counted.
    Waits(WaitReason, &'a ChildObs),
}

pub fn classify(b: &BlockedThread) -> Blocked<'_> {
    match vfork_child(b) {
        Some(c) => Blocked::Waits(WaitReason::VforkChild, c),
        None => Blocked::Candidate,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn blocked(children: Vec<ChildObs>) -> BlockedThread {
        BlockedThread {
            tgid: 100,
            tid: 101,
            comm: "java".into(),
            starttime: 5,
            exec_start_ns: None,
            switches: Some(3),
            wchan: None,
            cpu: None,
            children,
        }
    }

    fn child(pid: i32, state: u8, fork_no_exec: bool, mm: Option<(u64, u64)>) -> ChildObs {
        ChildObs {
            pid,
            comm: "java".into(),
            starttime: 9,
            state,
            fork_no_exec,
            mm,
            parent_mm: Some((17_276_928, 3420)),
        }
    }

    const SAME: Option<(u64, u64)> = Some((17_276_928, 3420));

    #[test]
    fn table() {
        // (case, children, expected child pid of the wait)
        let cases: Vec<(&str, Vec<ChildObs>, Option<i32>)> = vec![
            ("no children: a plain D thread", vec![], None),
            (
                "vfork child sleeping, same mm",
                vec![child(7, b'S', true, SAME)],
                Some(7),
            ),
            (
                "vfork child itself in D: still the parent's wait",
                vec![child(7, b'D', true, SAME)],
                Some(7),
            ),
            (
                "vfork child running",
                vec![child(7, b'R', true, SAME)],
                Some(7),
            ),
            (
                "fork child: same vsize, other rss",
                vec![child(7, b'S', true, Some((17_276_928, 2536)))],
                None,
            ),
            (
                "child exec'd (PF_FORKNOEXEC clear) with equal figures",
                vec![child(7, b'S', false, SAME)],
                None,
            ),
            ("zombie child", vec![child(7, b'Z', true, SAME)], None),
            ("figures unreadable", vec![child(7, b'S', true, None)], None),
            (
                "empty address space on both sides",
                vec![ChildObs {
                    parent_mm: Some((0, 0)),
                    ..child(7, b'S', true, Some((0, 0)))
                }],
                None,
            ),
            (
                "parent figures unreadable",
                vec![ChildObs {
                    parent_mm: None,
                    ..child(7, b'S', true, SAME)
                }],
                None,
            ),
            (
                "an older fork child before the vfork child",
                vec![
                    child(8, b'S', true, SAME),
                    child(7, b'S', true, Some((17_276_928, 1))),
                ],
                Some(8),
            ),
        ];
        for (case, children, want) in cases {
            let b = blocked(children);
            let got = match classify(&b) {
                Blocked::Waits(WaitReason::VforkChild, c) => Some(c.pid),
                Blocked::Candidate => None,
            };
            assert_eq!(got, want, "{case}");
        }
    }

    fn arb_child() -> impl Strategy<Value = ChildObs> {
        let mm = prop_oneof![
            Just(None),
            Just(SAME),
            (0u64..3, 0u64..3).prop_map(|(v, r)| Some((v, r))),
        ];
        (
            1i32..50,
            prop::sample::select(vec![b'R', b'S', b'D', b'Z', b'T', b'X']),
            any::<bool>(),
            mm.clone(),
            mm,
        )
            .prop_map(|(pid, state, fork_no_exec, mm, parent_mm)| ChildObs {
                pid,
                comm: "c".into(),
                starttime: 1,
                state,
                fork_no_exec,
                mm,
                parent_mm,
            })
    }

    proptest! {
        /// A thread is taken for a vfork wait exactly when one of its
        /// children shows all the evidence, and the child it names is one
        /// of them; nothing else exempts it.
        #[test]
        fn waits_only_on_a_child_with_all_the_evidence(
            children in prop::collection::vec(arb_child(), 0..6)
        ) {
            let b = blocked(children.clone());
            let evidence = |c: &ChildObs| {
                c.fork_no_exec
                    && c.state != b'Z'
                    && c.state != b'X'
                    && c.mm.is_some_and(|(v, _)| v > 0)
                    && c.mm == c.parent_mm
            };
            match classify(&b) {
                Blocked::Waits(_, c) => {
                    prop_assert!(evidence(c));
                    prop_assert!(children.contains(c));
                }
                Blocked::Candidate => prop_assert!(!children.iter().any(evidence)),
            }
        }
    }
}
