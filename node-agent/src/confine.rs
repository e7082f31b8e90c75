//! The agent's self-restriction at start-up: it enters a Landlock domain
//! before it starts any thread.
//!
//! Being inside a Landlock domain makes the kernel's ptrace access check
//! fail for every process outside the domain, whatever the caller's uid and
//! capabilities (`CAP_SYS_PTRACE` included). Procfs guards with that check
//! what the agent never reads and an intruder in the agent would want:
//! `/proc/PID/root`, `cwd` and `fd/N` (another pod's files and its
//! ServiceAccount token), `environ`, `mem`, `io`, `wchan`, and `ptrace(2)`
//! itself. What the agent does read (`stat`, `status`, `limits`, `cgroup`,
//! `sched`, `schedstat`, the fd count by `stat()`) is not guarded by it, and
//! signals are not scoped, so `SignalParent` works as before.
//!
//! The ruleset handles only `Execute` and allows it nowhere: the agent never
//! runs a program, and its file access is otherwise unchanged (the kube
//! client still reads its token, the sentinel is still written). The domain
//! is inherited by every thread started afterwards and cannot be left.

use landlock::{AccessFs, Ruleset, RulesetAttr, RulesetError, RulesetStatus};
use thiserror::Error;

#[derive(Debug, Error)]
#[error("entering a Landlock domain: {0}")]
pub struct ConfineError(#[from] RulesetError);

/// What [`confine_self`] achieved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Confinement {
    /// The calling thread (and every thread and child it starts from now
    /// on) is in a Landlock domain.
    Enforced,
    /// The kernel offers no Landlock (before 5.13, or the LSM not enabled).
    Unavailable,
}

/// Enters the domain. Call it before any other thread exists: a thread
/// started earlier stays outside.
pub fn confine_self() -> Result<Confinement, ConfineError> {
    let status = Ruleset::default()
        .handle_access(AccessFs::Execute)?
        .create()?
        .restrict_self()?;
    Ok(match status.ruleset {
        RulesetStatus::NotEnforced => Confinement::Unavailable,
        RulesetStatus::FullyEnforced | RulesetStatus::PartiallyEnforced => Confinement::Enforced,
    })
}
