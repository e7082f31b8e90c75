//! The one way the agent signals a process: pin it with a pidfd, re-verify
//! that it is still the process the request was about (start time, and
//! parent or state where given), refuse anything that must never be hit,
//! then signal through the pidfd so PID reuse cannot redirect the signal.

pub mod request;
pub mod verify;

use crate::scan::parse::{self, ProcStat};
use crate::scan::reader::{self, ReadFailure};
use nodemedic_crds::report::{ActionRefusal, ActionResultOutcome};
use rustix::fd::OwnedFd;
use rustix::io::Errno;
use rustix::process::{Pid, PidfdFlags, Signal};
use serde::Serialize;
use std::path::Path;
use thiserror::Error;

/// The process a request is about, as it was observed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub pid: i32,
    /// stat field 22 when observed; a different value means PID reuse.
    pub start_time: u64,
    /// When set, the parent must still be this pid.
    pub expected_ppid: Option<i32>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum RefusalReason {
    /// PID 1 (of the host namespace) or a non-positive pid.
    InitOrInvalidPid,
    KernelThread,
    /// The agent itself.
    OwnProcess,
    /// A protected name matched (the pattern that matched).
    Protected(String),
}

impl RefusalReason {
    /// The stable reason recorded in `status.actionResults`.
    pub fn to_api(&self) -> ActionRefusal {
        match self {
            RefusalReason::InitOrInvalidPid => ActionRefusal::InitProcess,
            RefusalReason::KernelThread => ActionRefusal::KernelThread,
            RefusalReason::OwnProcess => ActionRefusal::OwnProcess,
            RefusalReason::Protected(_) => ActionRefusal::ProtectedProcess,
        }
    }
}

impl std::fmt::Display for RefusalReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RefusalReason::InitOrInvalidPid => f.write_str("PID 1 or an invalid pid"),
            RefusalReason::KernelThread => f.write_str("kernel thread"),
            RefusalReason::OwnProcess => f.write_str("the agent itself"),
            RefusalReason::Protected(p) => write!(f, "protected process (matches {p:?})"),
        }
    }
}

/// What happened to a signal request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum SignalOutcome {
    Signalled {
        comm: String,
        /// The target is PID 1 of its own PID namespace (a container's init):
        /// killing it restarts the container rather than just the process.
        container_init: bool,
    },
    TargetGone,
    /// The pid belongs to a different process now, or its parent changed.
    TargetChanged {
        detail: String,
    },
    Refused {
        reason: RefusalReason,
    },
}

impl SignalOutcome {
    /// Why it was not delivered, when it was not.
    pub fn refusal(&self) -> Option<ActionRefusal> {
        match self {
            SignalOutcome::Signalled { .. } => None,
            SignalOutcome::TargetGone => Some(ActionRefusal::TargetGone),
            SignalOutcome::TargetChanged { .. } => Some(ActionRefusal::TargetChanged),
            SignalOutcome::Refused { reason } => Some(reason.to_api()),
        }
    }

    pub fn to_api(&self) -> ActionResultOutcome {
        match self {
            SignalOutcome::Signalled { .. } => ActionResultOutcome::Signalled,
            SignalOutcome::TargetGone => ActionResultOutcome::TargetGone,
            SignalOutcome::TargetChanged { .. } => ActionResultOutcome::TargetChanged,
            SignalOutcome::Refused { .. } => ActionResultOutcome::Refused,
        }
    }
}

#[derive(Debug, Error)]
pub enum SignalError {
    #[error("pidfd_open({pid}): {errno}")]
    PidfdOpen { pid: i32, errno: Errno },
    #[error("pidfd_send_signal({pid}): {errno}")]
    Send { pid: i32, errno: Errno },
    #[error("cannot re-read /proc/{pid}/stat: {failure:?}")]
    Reread { pid: i32, failure: ReadFailure },
    #[error("/proc/{pid}/stat is unparsable")]
    Unparsable { pid: i32 },
}

/// Signals processes safely. `proc_root` is the host's /proc (the agent
/// runs with hostPID, so pids are the host's).
#[derive(Debug)]
pub struct Signaller {
    proc_dir: OwnedFd,
    own_pid: i32,
}

impl Signaller {
    pub fn new(proc_root: &Path) -> Result<Self, ReadFailure> {
        Ok(Self {
            proc_dir: reader::open_dir(proc_root)?,
            own_pid: rustix::process::getpid().as_raw_nonzero().get(),
        })
    }

    fn read_stat(&self, pid: i32) -> Result<Option<ProcStat>, SignalError> {
        let mut buf = Vec::with_capacity(1024);
        match reader::read_at(&self.proc_dir, &format!("{pid}/stat"), &mut buf) {
            Ok(()) if buf.is_empty() => Ok(None),
            Ok(()) => parse::parse_stat(&buf)
                .map(Some)
                .map_err(|_| SignalError::Unparsable { pid }),
            Err(ReadFailure::Vanished) => Ok(None),
            Err(failure) => Err(SignalError::Reread { pid, failure }),
        }
    }

    /// NSpid has more than one level and ends in 1: init of a child namespace.
    fn is_namespace_init(&self, pid: i32) -> bool {
        let mut buf = Vec::with_capacity(2048);
        reader::read_at(&self.proc_dir, &format!("{pid}/status"), &mut buf).is_ok()
            && parse::parse_status(&String::from_utf8_lossy(&buf))
                .is_ok_and(|s| s.nspid.len() > 1 && s.innermost_pid() == Some(1))
    }

    /// Checks everything that does not need the process: pid 1, ourselves.
    fn refuse_by_pid(&self, pid: i32) -> Option<RefusalReason> {
        if pid <= 1 {
            Some(RefusalReason::InitOrInvalidPid)
        } else if pid == self.own_pid {
            Some(RefusalReason::OwnProcess)
        } else {
            None
        }
    }

    /// Verifies `target` and sends `signal` to it. `extra_protected` (a
    /// policy's `protectedProcesses`) adds to the built-in protected names
    /// (`nodemedic_crds::protected`, shared with the operator).
    pub fn signal(
        &self,
        target: &Target,
        signal: Signal,
        extra_protected: &[String],
    ) -> Result<SignalOutcome, SignalError> {
        if let Some(reason) = self.refuse_by_pid(target.pid) {
            return Ok(SignalOutcome::Refused { reason });
        }
        let Some(pid) = Pid::from_raw(target.pid) else {
            return Ok(SignalOutcome::Refused {
                reason: RefusalReason::InitOrInvalidPid,
            });
        };
        // From here on the pidfd names one process: if the pid is reused
        // later, signals through the pidfd fail with ESRCH instead of
        // reaching the newcomer.
        let pidfd = match rustix::process::pidfd_open(pid, PidfdFlags::empty()) {
            Ok(fd) => fd,
            Err(Errno::SRCH) => return Ok(SignalOutcome::TargetGone),
            Err(errno) => {
                return Err(SignalError::PidfdOpen {
                    pid: target.pid,
                    errno,
                });
            }
        };
        let Some(stat) = self.read_stat(target.pid)? else {
            return Ok(SignalOutcome::TargetGone);
        };
        // The details name only what the request carried: the identity the
        // pid belongs to now is none of the requester's business.
        if stat.starttime != target.start_time {
            return Ok(SignalOutcome::TargetChanged {
                detail: format!(
                    "its start time is not {}: the pid belongs to another process now",
                    target.start_time
                ),
            });
        }
        if let Some(ppid) = target.expected_ppid
            && stat.ppid != ppid
        {
            return Ok(SignalOutcome::TargetChanged {
                detail: format!("its parent is not {ppid} any more"),
            });
        }
        if stat.is_kernel_thread() {
            return Ok(SignalOutcome::Refused {
                reason: RefusalReason::KernelThread,
            });
        }
        if let Some(p) = nodemedic_crds::protected::protecting(&stat.comm, extra_protected) {
            return Ok(SignalOutcome::Refused {
                reason: RefusalReason::Protected(p.to_owned()),
            });
        }
        let container_init = self.is_namespace_init(target.pid);
        match rustix::process::pidfd_send_signal(&pidfd, signal) {
            Ok(()) => Ok(SignalOutcome::Signalled {
                comm: stat.comm,
                container_init,
            }),
            Err(Errno::SRCH) => Ok(SignalOutcome::TargetGone),
            Err(errno) => Err(SignalError::Send {
                pid: target.pid,
                errno,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_pid_1_and_itself_without_touching_them() {
        let s = Signaller::new(Path::new("/proc")).expect("open /proc");
        let own = rustix::process::getpid().as_raw_nonzero().get();
        for (pid, reason) in [
            (1, RefusalReason::InitOrInvalidPid),
            (0, RefusalReason::InitOrInvalidPid),
            (-5, RefusalReason::InitOrInvalidPid),
            (own, RefusalReason::OwnProcess),
        ] {
            let t = Target {
                pid,
                start_time: 1,
                expected_ppid: None,
            };
            assert_eq!(
                s.signal(&t, Signal::TERM, &[]).expect("no error"),
                SignalOutcome::Refused { reason },
                "pid {pid}"
            );
        }
    }
}
