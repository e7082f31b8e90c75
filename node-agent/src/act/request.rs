//! Carrying out the operator's node-local action requests
//! (`NodeHealthReport.spec.actionRequests`): signals through the safe
//! primitive, and the reboot hand-off to a reboot daemon's sentinel file.

use super::{SignalError, SignalOutcome, Signaller, Target};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use nodemedic_crds::duration::format_duration;
use nodemedic_crds::policy::ParentSignal;
use nodemedic_crds::report::{
    ActionRefusal, ActionRequest, ActionResult, ActionResultOutcome, NodeAction,
};
use rustix::process::Signal;
use std::path::Path;
use std::time::Duration;

pub fn signal_of(s: ParentSignal) -> Signal {
    match s {
        ParentSignal::SIGCHLD => Signal::CHILD,
        ParentSignal::SIGTERM => Signal::TERM,
        ParentSignal::SIGKILL => Signal::KILL,
    }
}

/// What a request is executed against.
#[derive(Debug, Clone, Copy)]
pub struct RequestContext<'a> {
    /// Stamps the result.
    pub now: Timestamp,
    /// `safety.protectedProcesses` of the policy that requested it.
    pub protected: &'a [String],
    /// The reboot daemon's sentinel file (absolute, under the host root);
    /// `None` when the reboot hand-off is not enabled on this agent.
    pub reboot_sentinel: Option<&'a Path>,
}

/// The message of a request refused for its age: it was seen by this agent,
/// unexecuted, for longer than the action TTL (on the agent's own
/// monotonic clock; `requestedAt` is the operator's clock and plays no part).
pub fn expired_message(age: Duration, ttl: Duration) -> String {
    format!(
        "expired: this agent first saw it {} ago and has not executed it; the action TTL is {}; not executed",
        format_duration(Duration::from_secs(age.as_secs())),
        format_duration(ttl)
    )
}

/// What became of a request: outcome, the refusal reason when it was not
/// carried out, and the message.
type Described = (ActionResultOutcome, Option<ActionRefusal>, String);

/// Executes one request and describes the outcome for `status.actionResults`.
/// The request must have passed [`super::verify::verify`]; this re-checks
/// the target itself at the moment of acting.
pub fn execute(
    signaller: &Signaller,
    request: &ActionRequest,
    ctx: RequestContext<'_>,
) -> ActionResult {
    let (outcome, reason, message) = {
        match request.action {
            NodeAction::SignalParent => match (&request.target, request.signal) {
                (Some(t), Some(sig)) => {
                    let target = Target {
                        pid: t.pid,
                        start_time: t.start_time,
                        expected_ppid: None,
                    };
                    describe(
                        signaller.signal(&target, signal_of(sig), ctx.protected),
                        t.pid,
                        sig,
                    )
                }
                _ => (
                    ActionResultOutcome::Refused,
                    Some(ActionRefusal::MalformedRequest),
                    "malformed request: SignalParent needs target and signal".to_owned(),
                ),
            },
            NodeAction::RequestReboot => request_reboot(ctx.reboot_sentinel, request),
        }
    };
    ActionResult {
        id: request.id.clone(),
        outcome,
        reason,
        message,
        completed_at: Time(ctx.now),
        follow_up: None,
    }
}

/// How creating the sentinel ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Sentinel {
    Created,
    /// A regular file of that name was there: a reboot is already requested.
    AlreadyThere,
}

/// Why the sentinel was not created.
#[derive(Debug, thiserror::Error)]
pub enum SentinelError {
    #[error("{0} names no file inside a directory")]
    NoFileName(std::path::PathBuf),
    #[error("cannot open the sentinel directory {dir} (a symbolic link is not followed): {errno}")]
    OpenDir {
        dir: std::path::PathBuf,
        errno: rustix::io::Errno,
    },
    #[error("{0} is a symbolic link: not followed, nothing written")]
    Symlink(std::path::PathBuf),
    #[error("{0} exists and is not a regular file: nothing written")]
    NotRegular(std::path::PathBuf),
    #[error("cannot create {path}: {source}")]
    Io {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl SentinelError {
    /// Whether the path is unsafe (refused) rather than the write failing.
    fn unsafe_path(&self) -> bool {
        matches!(
            self,
            SentinelError::Symlink(_) | SentinelError::NotRegular(_) | SentinelError::NoFileName(_)
        )
    }
}

/// Creates `path` with `text` without following a symbolic link at any
/// step the agent controls: the directory is opened with `O_NOFOLLOW`, the
/// file created inside it with `O_CREAT | O_EXCL | O_NOFOLLOW` (so a link
/// planted at the sentinel's name, dangling or not, is never written
/// through). An existing regular file is success; a link or anything but a
/// regular file is an error.
pub fn create_sentinel(path: &Path, text: &str) -> Result<Sentinel, SentinelError> {
    use rustix::fs::{AtFlags, FileType, Mode, OFlags};
    use std::io::Write as _;
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return Err(SentinelError::NoFileName(path.to_owned()));
    };
    let dir_fd = rustix::fs::open(
        dir,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|errno| SentinelError::OpenDir {
        dir: dir.to_owned(),
        errno,
    })?;
    match rustix::fs::openat(
        &dir_fd,
        name,
        OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::from_raw_mode(0o644),
    ) {
        Ok(fd) => {
            let mut file = std::fs::File::from(fd);
            file.write_all(text.as_bytes())
                .map_err(|source| SentinelError::Io {
                    path: path.to_owned(),
                    source,
                })?;
            Ok(Sentinel::Created)
        }
        Err(rustix::io::Errno::EXIST) => {
            let st =
                rustix::fs::statat(&dir_fd, name, AtFlags::SYMLINK_NOFOLLOW).map_err(|errno| {
                    SentinelError::Io {
                        path: path.to_owned(),
                        source: errno.into(),
                    }
                })?;
            match FileType::from_raw_mode(st.st_mode) {
                FileType::RegularFile => Ok(Sentinel::AlreadyThere),
                FileType::Symlink => Err(SentinelError::Symlink(path.to_owned())),
                _ => Err(SentinelError::NotRegular(path.to_owned())),
            }
        }
        Err(errno) => Err(SentinelError::Io {
            path: path.to_owned(),
            source: errno.into(),
        }),
    }
}

/// Creates the reboot daemon's sentinel (e.g. the file kured is started
/// with as `--reboot-sentinel`): the daemon then drains and reboots the
/// node under its own lock and schedule.
fn request_reboot(sentinel: Option<&Path>, request: &ActionRequest) -> Described {
    let Some(path) = sentinel else {
        return (
            ActionResultOutcome::Refused,
            Some(ActionRefusal::RebootNotEnabled),
            "the reboot hand-off is not enabled on this agent (--reboot-sentinel)".to_owned(),
        );
    };
    let text = format!(
        "reboot requested by nodemedic policy {} at {}{}\n",
        request.policy,
        request.requested_at.0,
        request
            .reason
            .as_ref()
            .map(|r| format!(": {r}"))
            .unwrap_or_default()
    );
    match create_sentinel(path, &text) {
        Ok(Sentinel::Created) => (
            ActionResultOutcome::Completed,
            None,
            format!("created {} for the reboot daemon", path.display()),
        ),
        Ok(Sentinel::AlreadyThere) => (
            ActionResultOutcome::Completed,
            None,
            format!(
                "{} already exists: a reboot is already requested",
                path.display()
            ),
        ),
        Err(e) if e.unsafe_path() => (
            ActionResultOutcome::Refused,
            Some(ActionRefusal::SentinelUnsafe),
            format!("refused: {e}"),
        ),
        Err(e) => (ActionResultOutcome::Failed, None, e.to_string()),
    }
}

fn describe(r: Result<SignalOutcome, SignalError>, pid: i32, signal: ParentSignal) -> Described {
    let sig = format!("{signal:?}");
    match r {
        Ok(o) => {
            let msg = match &o {
                SignalOutcome::Signalled {
                    comm,
                    container_init: true,
                } => format!(
                    "sent {sig} to {comm} (pid {pid}), PID 1 of its container: if it exits the container restarts"
                ),
                SignalOutcome::Signalled { comm, .. } => {
                    format!("sent {sig} to {comm} (pid {pid})")
                }
                SignalOutcome::TargetGone => format!("pid {pid} has exited"),
                SignalOutcome::TargetChanged { detail } => {
                    format!("pid {pid} is no longer the requested process: {detail}")
                }
                SignalOutcome::Refused { reason } => {
                    format!("refused to signal pid {pid}: {reason}")
                }
            };
            (o.to_api(), o.refusal(), msg)
        }
        Err(e) => (ActionResultOutcome::Failed, None, e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nodemedic_crds::report::ProcessTarget;

    fn request(pid: i32, start_time: u64, at: Timestamp) -> ActionRequest {
        ActionRequest {
            id: "r1".to_owned(),
            action: NodeAction::SignalParent,
            target: Some(ProcessTarget {
                pid,
                start_time,
                comm: "php-fpm".to_owned(),
            }),
            signal: Some(ParentSignal::SIGCHLD),
            policy: "p".to_owned(),
            requested_at: Time(at),
            reason: None,
        }
    }

    fn ctx(now: Timestamp) -> RequestContext<'static> {
        RequestContext {
            now,
            protected: &[],
            reboot_sentinel: None,
        }
    }

    #[test]
    fn results_carry_the_request_id_and_outcome() {
        let s = Signaller::new(Path::new("/proc")).expect("open /proc");
        let now = Timestamp::now();
        let r = execute(&s, &request(1, 1, now), ctx(now));
        assert_eq!(r.id, "r1");
        assert_eq!(r.outcome, ActionResultOutcome::Refused);
        assert!(r.message.contains("PID 1"), "{}", r.message);
        // A pid above pid_max's ceiling never exists.
        let gone = execute(&s, &request(i32::MAX, 1, now), ctx(now));
        assert_eq!(
            gone.outcome,
            ActionResultOutcome::TargetGone,
            "{}",
            gone.message
        );
    }

    #[test]
    fn reboot_hand_off_creates_the_sentinel_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let sentinel = dir.path().join("reboot-required");
        let s = Signaller::new(Path::new("/proc")).expect("open /proc");
        let now = Timestamp::now();
        let mut req = request(2, 1, now);
        req.action = NodeAction::RequestReboot;
        req.target = None;
        req.signal = None;
        let off = execute(&s, &req, ctx(now));
        assert_eq!(off.outcome, ActionResultOutcome::Refused, "{}", off.message);
        let on = RequestContext {
            reboot_sentinel: Some(&sentinel),
            ..ctx(now)
        };
        let first = execute(&s, &req, on);
        assert_eq!(
            first.outcome,
            ActionResultOutcome::Completed,
            "{}",
            first.message
        );
        let text = std::fs::read_to_string(&sentinel).expect("sentinel written");
        assert!(text.contains("policy p"), "{text}");
        let again = execute(&s, &req, on);
        assert!(
            again.message.contains("already exists"),
            "{}",
            again.message
        );
    }

    #[test]
    fn the_sentinel_is_never_written_through_a_symbolic_link() {
        let dir = tempfile::tempdir().expect("tempdir");
        let outside = tempfile::tempdir().expect("tempdir");
        let target = outside.path().join("containerd.sock");
        std::fs::write(&target, "precious").expect("target");
        let sentinel = dir.path().join("reboot-required");
        std::os::unix::fs::symlink(&target, &sentinel).expect("symlink");
        let s = Signaller::new(Path::new("/proc")).expect("open /proc");
        let now = Timestamp::now();
        let mut req = request(2, 1, now);
        req.action = NodeAction::RequestReboot;
        req.target = None;
        req.signal = None;
        let on = RequestContext {
            reboot_sentinel: Some(&sentinel),
            ..ctx(now)
        };
        let r = execute(&s, &req, on);
        assert_eq!(r.outcome, ActionResultOutcome::Refused, "{}", r.message);
        assert_eq!(r.reason, Some(ActionRefusal::SentinelUnsafe));
        assert!(r.message.contains("symbolic link"), "{}", r.message);
        assert_eq!(
            std::fs::read_to_string(&target).expect("target"),
            "precious",
            "the link's target is untouched"
        );
        // A dangling link: its target is not created either.
        let missing = outside.path().join("created-through-the-link");
        std::fs::remove_file(&sentinel).expect("unlink");
        std::os::unix::fs::symlink(&missing, &sentinel).expect("symlink");
        assert!(matches!(
            create_sentinel(&sentinel, "x"),
            Err(SentinelError::Symlink(_))
        ));
        assert!(!missing.exists(), "nothing created through a dangling link");
        // Not a regular file.
        std::fs::remove_file(&sentinel).expect("unlink");
        std::fs::create_dir(&sentinel).expect("dir");
        assert!(matches!(
            create_sentinel(&sentinel, "x"),
            Err(SentinelError::NotRegular(_))
        ));
        // A linked directory is not followed either.
        let linked_dir = dir.path().join("linked");
        std::os::unix::fs::symlink(outside.path(), &linked_dir).expect("dir link");
        assert!(matches!(
            create_sentinel(&linked_dir.join("reboot-required"), "x"),
            Err(SentinelError::OpenDir { .. })
        ));
        assert!(!outside.path().join("reboot-required").exists());
    }

    #[test]
    fn signals_map_one_to_one() {
        assert_eq!(signal_of(ParentSignal::SIGCHLD), Signal::CHILD);
        assert_eq!(signal_of(ParentSignal::SIGTERM), Signal::TERM);
        assert_eq!(signal_of(ParentSignal::SIGKILL), Signal::KILL);
    }
}
