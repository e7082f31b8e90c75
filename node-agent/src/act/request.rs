//! Carrying out the operator's node-local action requests
//! (`NodeHealthReport.spec.actionRequests`): signals through the safe
//! primitive, and the reboot hand-off to a reboot daemon's sentinel file.

use super::{SignalError, SignalOutcome, Signaller, Target};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
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
    pub now: Timestamp,
    /// Requests older than this are refused: the situation they were
    /// decided on is likely gone.
    pub ttl: Duration,
    /// `safety.protectedProcesses` of the policy that requested it.
    pub protected: &'a [String],
    /// The reboot daemon's sentinel file (absolute, under the host root);
    /// `None` when the reboot hand-off is not enabled on this agent.
    pub reboot_sentinel: Option<&'a Path>,
}

/// How old a request is, when it is older than `ttl`.
pub fn expired(request: &ActionRequest, now: Timestamp, ttl: Duration) -> Option<Duration> {
    let age = now.duration_since(request.requested_at.0);
    let age = Duration::try_from(age.max(SignedDuration::ZERO)).unwrap_or_default();
    (age > ttl).then_some(age)
}

/// The message of a request refused for its age.
pub fn expired_message(age: Duration, ttl: Duration) -> String {
    format!(
        "expired: requested {} ago, the agent's action TTL is {}; not executed",
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
    let (outcome, reason, message) = if let Some(age) = expired(request, ctx.now, ctx.ttl) {
        (
            ActionResultOutcome::Refused,
            Some(ActionRefusal::Expired),
            expired_message(age, ctx.ttl),
        )
    } else {
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

/// Creates the reboot daemon's sentinel (e.g. kured's
/// `/var/run/reboot-required`): the daemon then drains and reboots the
/// node under its own lock and schedule.
fn request_reboot(sentinel: Option<&Path>, request: &ActionRequest) -> Described {
    let Some(path) = sentinel else {
        return (
            ActionResultOutcome::Refused,
            Some(ActionRefusal::RebootNotEnabled),
            "the reboot hand-off is not enabled on this agent (--reboot-sentinel)".to_owned(),
        );
    };
    if path.exists() {
        return (
            ActionResultOutcome::Completed,
            None,
            format!(
                "{} already exists: a reboot is already requested",
                path.display()
            ),
        );
    }
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
    match std::fs::write(path, text) {
        Ok(()) => (
            ActionResultOutcome::Completed,
            None,
            format!("created {} for the reboot daemon", path.display()),
        ),
        Err(e) => (
            ActionResultOutcome::Failed,
            None,
            format!("cannot create {}: {e}", path.display()),
        ),
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
            ttl: Duration::from_secs(600),
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
    fn requests_older_than_the_ttl_are_refused_unexecuted() {
        let s = Signaller::new(Path::new("/proc")).expect("open /proc");
        let now = Timestamp::now();
        let old = now - SignedDuration::from_secs(601);
        // i32::MAX would be TargetGone if it were tried.
        let r = execute(&s, &request(i32::MAX, 1, old), ctx(now));
        assert_eq!(r.outcome, ActionResultOutcome::Refused);
        assert!(
            r.message.starts_with("expired: requested 10m1s ago"),
            "{}",
            r.message
        );
        // A clock slightly ahead on the operator's side is not "expired".
        let future = now + SignedDuration::from_secs(5);
        assert_eq!(
            expired(&request(2, 1, future), now, Duration::from_secs(600)),
            None
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
    fn signals_map_one_to_one() {
        assert_eq!(signal_of(ParentSignal::SIGCHLD), Signal::CHILD);
        assert_eq!(signal_of(ParentSignal::SIGTERM), Signal::TERM);
        assert_eq!(signal_of(ParentSignal::SIGKILL), Signal::KILL);
    }
}
