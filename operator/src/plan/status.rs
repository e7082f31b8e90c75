//! The policy status, computed from a plan's summary and records. Pure; the
//! controller writes it (server-side apply) only when it differs from what is
//! stored.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;
use nodemedic_crds::PolicyMode;
use nodemedic_crds::conditions::policy_condition;
use nodemedic_crds::pause::Pause;
use nodemedic_crds::policy::{
    ActionRecord, NodeHealthPolicyStatus, PolicyNodeSummary, PolicyPause,
};

use super::policy::{PolicyError, PolicyView};
use super::{HoldReason, Summary, truncate_note};

/// Bound of `status.recentActions`.
pub const MAX_RECENT_ACTIONS: usize = 20;
/// Bound of `status.nodes`.
pub const MAX_NODES: usize = 50;

/// Names listed in a condition message before "and N more".
const MAX_NAMED: usize = 10;

/// The policy's pause as the status records it: the annotations' time or,
/// when they give none that is usable, when the operator first saw the
/// pause (kept in the status, so it survives operator restarts).
pub fn recorded_pause(
    pause: Option<&Pause>,
    previous: Option<&NodeHealthPolicyStatus>,
    now: Timestamp,
) -> Option<PolicyPause> {
    let pause = pause?.clone().checked_at(now);
    let first_seen = previous
        .and_then(|p| p.paused.as_ref())
        .map_or(now, |p| p.since.0);
    Some(PolicyPause {
        reason: pause.reason.clone(),
        by: pause.by.clone(),
        since: Time(pause.since_or(first_seen)),
        problem: pause.problem,
    })
}

/// A pause changed between two statuses: the Event and log line to
/// publish (once per transition: the previous status is the record).
#[derive(Debug, Clone, PartialEq)]
pub enum PauseTransition {
    Paused(PolicyPause),
    Resumed { paused_since: Time },
}

/// The transition from `previous` to `current`, if any.
pub fn pause_transition(
    previous: Option<&NodeHealthPolicyStatus>,
    current: &NodeHealthPolicyStatus,
) -> Option<PauseTransition> {
    match (previous.and_then(|p| p.paused.as_ref()), &current.paused) {
        (None, Some(now)) => Some(PauseTransition::Paused(now.clone())),
        (Some(before), None) => Some(PauseTransition::Resumed {
            paused_since: before.since.clone(),
        }),
        _ => None,
    }
}

/// "by alice since 2025-06-01T12:00:00Z: kernel upgrade".
pub fn describe_pause(pause: &PolicyPause) -> String {
    let mut text = String::new();
    if let Some(by) = &pause.by {
        text.push_str(&format!("by {by} "));
    }
    text.push_str(&format!("since {}", pause.since.0));
    if !pause.reason.is_empty() {
        text.push_str(&format!(": {}", pause.reason));
    }
    if let Some(problem) = &pause.problem {
        text.push_str(&format!(" (annotation problem: {problem})"));
    }
    text
}

fn paused_condition(
    prev_conditions: &[Condition],
    pause: Option<&PolicyPause>,
    summary: &Summary,
    generation: Option<i64>,
    now: Timestamp,
) -> Condition {
    let (status, reason, message) = match pause {
        Some(pause) => (
            true,
            "PolicyPaused",
            format!(
                "paused {}; no new ladder step starts on any of its nodes (steps in flight finish) until the nodemedic.io/paused annotation is removed",
                describe_pause(pause)
            ),
        ),
        None if !summary.paused_nodes.is_empty() => (
            false,
            "NodesPaused",
            format!(
                "the policy is not paused; no new step starts on {} paused node(s): {}",
                summary.paused_nodes.len(),
                names(&summary.paused_nodes)
            ),
        ),
        None => (false, "NotPaused", "not paused".to_owned()),
    };
    condition(
        prev_conditions,
        policy_condition::PAUSED,
        status,
        reason,
        truncate_note(&message),
        generation,
        now,
    )
}

/// Status of a valid policy.
pub fn build(
    policy: &PolicyView,
    previous: Option<&NodeHealthPolicyStatus>,
    summary: &Summary,
    records: &[ActionRecord],
    now: Timestamp,
) -> NodeHealthPolicyStatus {
    let paused = recorded_pause(policy.pause.as_ref(), previous, now);
    let generation = policy.generation;
    let prev_conditions = previous
        .map(|p| p.conditions.as_slice())
        .unwrap_or_default();
    let mode = match policy.mode {
        PolicyMode::Observe => "Observe: findings are reported, nothing is planned",
        PolicyMode::DryRun => "DryRun: remediations are planned and recorded, none is executed",
        PolicyMode::Enforce => "Enforce: remediations are executed within the safety budgets",
    };
    let ready = condition(
        prev_conditions,
        policy_condition::READY,
        true,
        "Valid",
        mode.to_owned(),
        generation,
        now,
    );
    let unknown = summary.stale.len();
    let storm_message = format!(
        "{} of {} selected nodes unhealthy ({} firing, {} with stale reports); maxUnhealthy {} allows {}{}",
        summary.unhealthy as usize + unknown,
        summary.matched,
        summary.unhealthy,
        unknown,
        policy.safety.max_unhealthy,
        summary.storm_limit,
        if summary.storm {
            ": node-level actions (EvictPod, Taint, Cordon, Drain, RequestReboot) are held"
        } else {
            ""
        }
    );
    let storm = condition(
        prev_conditions,
        policy_condition::STORM_ACTIVE,
        summary.storm,
        if summary.storm {
            "MaxUnhealthyExceeded"
        } else {
            "WithinBudget"
        },
        storm_message,
        generation,
        now,
    );
    let mut parts = Vec::new();
    let mut reason = "AsExpected";
    if !summary.stale.is_empty() {
        reason = "StaleReports";
        parts.push(format!(
            "stale reports (nothing is planned from them): {}",
            names(&summary.stale)
        ));
    }
    if !summary.missing.is_empty() {
        if reason == "AsExpected" {
            reason = "MissingReports";
        }
        parts.push(format!("no report yet: {}", names(&summary.missing)));
    }
    if !summary.failing.is_empty() {
        if reason == "AsExpected" {
            reason = "ActionsFailing";
        }
        parts.push(format!("failed actions on: {}", names(&summary.failing)));
    }
    if !summary.needs_attention.is_empty() {
        if reason == "AsExpected" {
            reason = "NeedsAttention";
        }
        parts.push(format!(
            "ladder exhausted while still unhealthy (nodemedic does nothing more there): {}",
            names(&summary.needs_attention)
        ));
    }
    let degraded = condition(
        prev_conditions,
        policy_condition::DEGRADED,
        !parts.is_empty(),
        reason,
        if parts.is_empty() {
            "every selected node has a fresh report and no action failed".to_owned()
        } else {
            parts.join("; ")
        },
        generation,
        now,
    );

    let paused_condition =
        paused_condition(prev_conditions, paused.as_ref(), summary, generation, now);

    let mut recent: Vec<ActionRecord> = records.iter().rev().cloned().collect();
    if let Some(prev) = previous {
        recent.extend(prev.recent_actions.iter().cloned());
    }
    recent.truncate(MAX_RECENT_ACTIONS);

    NodeHealthPolicyStatus {
        observed_generation: generation,
        conditions: vec![ready, storm, degraded, paused_condition],
        matched_nodes: summary.matched,
        unhealthy_nodes: summary.unhealthy,
        actions_last24h: summary.actions_last_24h,
        nodes: summary
            .nodes
            .iter()
            .take(MAX_NODES)
            .map(|n| PolicyNodeSummary {
                node: n.node.clone(),
                firing: n.firing.iter().map(|d| d.name().to_owned()).collect(),
                since: n.since.map(Time),
                escalation: if n.stale {
                    Some("report stale".to_owned())
                } else {
                    n.escalation.clone()
                },
                scope: n.scope.as_ref().map(|(s, _)| *s),
                culprit: n.scope.as_ref().and_then(|(_, c)| c.clone()),
                held: n.paused.then(|| HoldReason::Paused.as_str().to_owned()),
            })
            .collect(),
        recent_actions: recent,
        paused,
    }
}

/// Status of a policy that cannot be acted on: Ready=False, nothing else
/// claimed but its pause (read from its annotations).
pub fn invalid(
    generation: Option<i64>,
    error: &PolicyError,
    pause: Option<&Pause>,
    previous: Option<&NodeHealthPolicyStatus>,
    now: Timestamp,
) -> NodeHealthPolicyStatus {
    let prev_conditions = previous
        .map(|p| p.conditions.as_slice())
        .unwrap_or_default();
    NodeHealthPolicyStatus {
        observed_generation: generation,
        conditions: vec![condition(
            prev_conditions,
            policy_condition::READY,
            false,
            error.reason(),
            format!("{error}; nothing is planned for this policy"),
            generation,
            now,
        )],
        matched_nodes: 0,
        unhealthy_nodes: 0,
        actions_last24h: previous.map_or(0, |p| p.actions_last24h),
        nodes: Vec::new(),
        recent_actions: previous
            .map(|p| p.recent_actions.clone())
            .unwrap_or_default(),
        paused: recorded_pause(pause, previous, now),
    }
}

fn names(list: &[String]) -> String {
    let mut out: Vec<&str> = list.iter().take(MAX_NAMED).map(String::as_str).collect();
    let more = list.len().saturating_sub(MAX_NAMED);
    let mut text = out.join(", ");
    if more > 0 {
        text.push_str(&format!(" and {more} more"));
    }
    out.clear();
    text
}

fn condition(
    previous: &[Condition],
    type_: &str,
    status: bool,
    reason: &str,
    message: String,
    generation: Option<i64>,
    now: Timestamp,
) -> Condition {
    let status = if status { "True" } else { "False" };
    let last_transition_time = previous
        .iter()
        .find(|c| c.type_ == type_ && c.status == status)
        .map(|c| c.last_transition_time.clone())
        .unwrap_or(Time(now));
    Condition {
        type_: type_.to_owned(),
        status: status.to_owned(),
        reason: reason.to_owned(),
        message,
        observed_generation: generation,
        last_transition_time,
    }
}

/// Whether two statuses say the same, ignoring nothing: used to skip writes.
pub fn same(a: &NodeHealthPolicyStatus, b: &NodeHealthPolicyStatus) -> bool {
    a == b
}
