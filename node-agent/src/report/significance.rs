//! What makes a new status worth writing. Ages, counts, load and other
//! figures that tick on every scan are not a change; what the operator acts
//! on is: conditions (status, reason, transition times), which offenders
//! exceed and under which policies, and action results.

use nodemedic_crds::NodeHealthReportStatus;
use nodemedic_crds::conditions::{ConditionReason, ConditionStatus, ConditionType};
use nodemedic_crds::report::ActionResultOutcome;

/// A condition's status, reason and times, under its policy and type.
type ConditionKey = (
    String,
    ConditionType,
    ConditionStatus,
    ConditionReason,
    String,
    Option<String>,
);

/// An action result's id, outcome and (reaped, parent exited).
type ResultKey = (String, ActionResultOutcome, Option<(bool, bool)>);

/// The part of a status that, when it changes, is written at once.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Significant {
    healthy: bool,
    conditions: Vec<ConditionKey>,
    /// (detector, identity, policies under which it exceeds)
    offenders: Vec<(&'static str, String, Vec<String>)>,
    node_file_handles_exceeded: Vec<String>,
    action_results: Vec<ResultKey>,
    intervals: (Option<String>, Option<String>),
}

impl Significant {
    /// Which parts differ from `before` (for a debug log line).
    pub fn changes_from(&self, before: &Significant) -> Vec<&'static str> {
        let mut out = Vec::new();
        if self.healthy != before.healthy {
            out.push("healthy");
        }
        if self.conditions != before.conditions {
            out.push("conditions");
        }
        if self.offenders != before.offenders {
            out.push("offenders");
        }
        if self.node_file_handles_exceeded != before.node_file_handles_exceeded {
            out.push("nodeFileHandles");
        }
        if self.action_results != before.action_results {
            out.push("actionResults");
        }
        if self.intervals != before.intervals {
            out.push("intervals");
        }
        out
    }
}

/// Projects a status onto what matters.
pub fn significant(s: &NodeHealthReportStatus) -> Significant {
    let f = &s.findings;
    let mut offenders = Vec::new();
    for z in f.zombies.iter().filter(|z| z.exceeded) {
        offenders.push((
            "zombies",
            format!("{}/{}", z.parent.host_pid, z.parent.start_time),
            z.exceeded_under.clone(),
        ));
    }
    for h in f.hung_tasks.iter().filter(|h| h.exceeded) {
        offenders.push((
            "hungTasks",
            format!("{}/{}", h.tid, h.process.start_time),
            h.exceeded_under.clone(),
        ));
    }
    for x in f.fd_leak.iter().filter(|x| x.exceeded) {
        offenders.push((
            "fdLeak",
            format!("{}/{}", x.process.host_pid, x.process.start_time),
            x.exceeded_under.clone(),
        ));
    }
    for c in f.cpu_throttling.iter().filter(|c| c.exceeded) {
        offenders.push(("cpuThrottling", c.cgroup.clone(), c.exceeded_under.clone()));
    }
    offenders.sort();
    let mut conditions: Vec<_> = s
        .conditions
        .iter()
        .map(|c| {
            (
                c.policy.clone(),
                c.type_,
                c.status,
                c.reason,
                c.last_transition_time.0.to_string(),
                c.exceeded_since.as_ref().map(|t| t.0.to_string()),
            )
        })
        .collect();
    conditions.sort_by(|a, b| (&a.0, a.1 as u8).cmp(&(&b.0, b.1 as u8)));
    Significant {
        healthy: s.healthy,
        conditions,
        offenders,
        node_file_handles_exceeded: f
            .node_file_handles
            .as_ref()
            .map(|n| n.exceeded_under.clone())
            .unwrap_or_default(),
        action_results: s
            .action_results
            .iter()
            .map(|r| {
                (
                    r.id.clone(),
                    r.outcome,
                    r.follow_up.as_ref().map(|f| (f.reaped, f.parent_exited)),
                )
            })
            .collect(),
        intervals: (s.scan_interval.clone(), s.heartbeat_interval.clone()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use k8s_openapi::jiff::Timestamp;
    use nodemedic_crds::report::{PolicyCondition, ProcessRef, ZombieFinding};

    fn status(zombies: u32, age: u64, reason: ConditionReason) -> NodeHealthReportStatus {
        let mut s = NodeHealthReportStatus::default();
        s.summary.tasks.zombie = zombies;
        s.summary.load.one = zombies as f64 / 10.0;
        s.findings.zombies.push(ZombieFinding {
            parent: ProcessRef {
                host_pid: 42,
                ns_pid: None,
                comm: "php-fpm".to_owned(),
                start_time: 7,
                workload: None,
            },
            zombies,
            zombies_past_min_age: zombies,
            oldest_age_seconds: age,
            exceeded: true,
            exceeded_under: vec!["p".to_owned()],
            exceeded_under_omitted: 0,
        });
        s.conditions.push(PolicyCondition {
            policy: "p".to_owned(),
            type_: ConditionType::ZombiesDetected,
            status: ConditionStatus::False,
            reason,
            message: format!("{zombies} zombies"),
            last_transition_time: Time(Timestamp::UNIX_EPOCH),
            exceeded_since: None,
            scope: None,
            culprit: None,
        });
        s
    }

    #[test]
    fn ticking_figures_are_not_a_change() {
        let a = status(60, 100, ConditionReason::Pending);
        let b = status(75, 160, ConditionReason::Pending);
        assert_eq!(significant(&a), significant(&b));
    }

    #[test]
    fn reasons_offenders_and_results_are() {
        let a = status(60, 100, ConditionReason::Pending);
        assert_ne!(
            significant(&a),
            significant(&status(60, 100, ConditionReason::BelowThreshold))
        );
        let mut other_parent = a.clone();
        other_parent.findings.zombies[0].parent.host_pid = 43;
        assert_ne!(significant(&a), significant(&other_parent));
        let mut not_exceeding = a.clone();
        not_exceeding.findings.zombies[0].exceeded = false;
        assert_ne!(significant(&a), significant(&not_exceeding));
    }
}
