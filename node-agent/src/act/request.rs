//! Carrying out the operator's node-local action requests
//! (`NodeHealthReport.spec.actionRequests`) through the safe primitive.

use super::{SignalError, SignalOutcome, Signaller, Target};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use nodemedic_crds::policy::ParentSignal;
use nodemedic_crds::report::{ActionRequest, ActionResult, ActionResultOutcome, NodeAction};
use rustix::process::Signal;

pub fn signal_of(s: ParentSignal) -> Signal {
    match s {
        ParentSignal::SIGCHLD => Signal::CHILD,
        ParentSignal::SIGTERM => Signal::TERM,
        ParentSignal::SIGKILL => Signal::KILL,
    }
}

/// Executes one request and describes the outcome for `status.actionResults`.
pub fn execute(signaller: &Signaller, request: &ActionRequest, now: Time) -> ActionResult {
    let (outcome, message) = match request.action {
        NodeAction::SignalParent => {
            let target = Target {
                pid: request.target.pid,
                start_time: request.target.start_time,
                expected_ppid: None,
            };
            describe(
                signaller.signal(&target, signal_of(request.signal)),
                request,
            )
        }
    };
    ActionResult {
        id: request.id.clone(),
        outcome,
        message,
        completed_at: now,
    }
}

fn describe(
    r: Result<SignalOutcome, SignalError>,
    request: &ActionRequest,
) -> (ActionResultOutcome, String) {
    let pid = request.target.pid;
    let sig = format!("{:?}", request.signal);
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
            (o.to_api(), msg)
        }
        Err(e) => (ActionResultOutcome::Failed, e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nodemedic_crds::report::ProcessTarget;
    use std::path::Path;

    fn request(pid: i32, start_time: u64) -> ActionRequest {
        ActionRequest {
            id: "r1".to_owned(),
            action: NodeAction::SignalParent,
            target: ProcessTarget {
                pid,
                start_time,
                comm: "php-fpm".to_owned(),
            },
            signal: ParentSignal::SIGCHLD,
            policy: "p".to_owned(),
            requested_at: Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH),
            reason: None,
        }
    }

    #[test]
    fn results_carry_the_request_id_and_outcome() {
        let s = Signaller::new(Path::new("/proc"), &[]).expect("open /proc");
        let now = Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH);
        let r = execute(&s, &request(1, 1), now.clone());
        assert_eq!(r.id, "r1");
        assert_eq!(r.outcome, ActionResultOutcome::Refused);
        assert!(r.message.contains("PID 1"), "{}", r.message);
        // A pid above pid_max's ceiling never exists.
        let gone = execute(&s, &request(i32::MAX, 1), now);
        assert_eq!(
            gone.outcome,
            ActionResultOutcome::TargetGone,
            "{}",
            gone.message
        );
    }

    #[test]
    fn signals_map_one_to_one() {
        assert_eq!(signal_of(ParentSignal::SIGCHLD), Signal::CHILD);
        assert_eq!(signal_of(ParentSignal::SIGTERM), Signal::TERM);
        assert_eq!(signal_of(ParentSignal::SIGKILL), Signal::KILL);
    }
}
