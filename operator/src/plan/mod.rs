//! The pure planner: (policy, the nodes it selects, their reports and Nodes,
//! the durable remediation state in those reports, the other policies'
//! budgets, now) → (what to write ahead, what to do, what to record, when to
//! look again). No I/O happens here; the controller reads, this decides, the
//! `remediation` module carries the decision out and [`settle`] folds the
//! outcomes back into the durable state.
//!
//! The semantics implemented here are documented in `docs/operator.md`
//! ("Remediation semantics"); the table tests in `tests.rs` pin them.

pub mod facts;
mod model;
mod node;
pub mod policy;
pub mod reasons;
mod settle;
pub mod slots;
pub mod status;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use k8s_openapi::jiff::{SignedDuration, Timestamp};
use nodemedic_crds::conditions::Detector;
use nodemedic_crds::policy::ActionKind;

use self::facts::Freshness;

pub use self::model::*;
use self::node::NodePlanner;
pub use self::node::{prune_history, truncate_note};
pub use self::reasons::{EndReason, EventReason, HoldReason};
pub use self::settle::{next_retry, settle};

/// `t + d`, saturating.
pub fn plus(t: Timestamp, d: Duration) -> Timestamp {
    SignedDuration::try_from(d)
        .ok()
        .and_then(|d| t.checked_add(d).ok())
        .unwrap_or(Timestamp::MAX)
}

/// `t - d`, saturating.
pub fn minus(t: Timestamp, d: Duration) -> Timestamp {
    SignedDuration::try_from(d)
        .ok()
        .and_then(|d| t.checked_sub(d).ok())
        .unwrap_or(Timestamp::MIN)
}

/// `later - earlier`, zero when negative.
pub fn elapsed(earlier: Timestamp, later: Timestamp) -> Duration {
    Duration::try_from(later.duration_since(earlier)).unwrap_or(Duration::ZERO)
}

/// Whole seconds (the API's precision for `Time`).
pub fn truncate(t: Timestamp) -> Timestamp {
    Timestamp::from_second(t.as_second()).unwrap_or(t)
}

/// Delay before retry number `attempts + 1` of a refused eviction.
pub fn retry_delay(attempts: u32) -> Duration {
    let factor = 1u32.checked_shl(attempts.min(16)).unwrap_or(u32::MAX);
    RETRY_BASE.saturating_mul(factor).min(RETRY_MAX)
}

/// A deterministic id for the action request of a step: the same step of
/// the same episode on the same node always gets the same id, so a retried
/// write can never make the agent act twice. The action is part of it: after
/// a ladder edit puts another action at the same index, the new step gets a
/// new id and an old result is never read as its own. At most 128
/// characters.
pub fn request_id(
    policy: &str,
    detector: Detector,
    node: &str,
    since: Timestamp,
    index: u32,
    action: ActionKind,
) -> String {
    let action = action.as_str().to_ascii_lowercase();
    let full = format!(
        "{policy}.{}.{node}.{}.{index}.{action}",
        detector.name(),
        since.as_second()
    );
    if full.len() <= 128 {
        return full;
    }
    let hash = fnv1a(full.as_bytes());
    let tail = format!(
        ".{}.{}.{index}.{action}.{hash:016x}",
        detector.name(),
        since.as_second()
    );
    let keep = 128usize.saturating_sub(tail.len());
    let mut prefix: String = policy.chars().take(keep).collect();
    while prefix.len() > keep {
        prefix.pop();
    }
    format!("{prefix}{tail}")
}

fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// Whether `comm` is protected by the built-ins or `extra` (the one list
/// the agent also enforces: `nodemedic_crds::protected`). Checked here too
/// so that a hopeless request is not sent.
pub fn is_protected_process(comm: &str, extra: &[String]) -> bool {
    nodemedic_crds::protected::is_protected(comm, extra)
}

struct Wake {
    now: Timestamp,
    at: Timestamp,
}

impl Wake {
    fn at(&mut self, t: Timestamp) {
        if t > self.now && t < self.at {
            self.at = t;
        }
    }
}

/// The budgets that govern a node: the strictest of every policy selecting it.
#[derive(Debug, Clone, PartialEq)]
struct NodeBudget {
    cooldown: Duration,
    max_signals_per_hour: u32,
    /// A selecting policy (this one or another) with an active storm.
    storm: Option<String>,
    /// Policies selecting the node, with their uncordonWhenHealthy.
    here: BTreeMap<String, bool>,
}

/// Plans one policy.
pub fn plan(input: &PlanInput<'_>) -> Plan {
    let p = input.policy;
    let now = input.now;
    let mut wake = Wake {
        now,
        at: plus(now, input.settings.resync),
    };

    // Pass 1: freshness, health, storm, policies in progress.
    let mut summary = Summary::default();
    let mut in_progress: BTreeSet<String> = BTreeSet::new();
    let mut order: Vec<(Option<Timestamp>, usize)> = Vec::with_capacity(input.nodes.len());
    let mut healthy_names: Vec<usize> = Vec::new();
    for (i, n) in input.nodes.iter().enumerate() {
        if n.selected {
            summary.matched += 1;
            if facts::node_pause(n.node).is_some() {
                summary.paused_nodes.push(n.name.to_owned());
            }
        }
        // Not known to be healthy (no report, or a stale one): a
        // remediation taken there is still in progress.
        let holds_slot = || {
            n.remediation().is_some_and(|l| {
                l.episodes
                    .iter()
                    .any(|e| e.policy == p.name && slots::occupies_slot(e, p.ladder(e.detector)))
            })
        };
        let Some(report) = n.report else {
            if n.selected {
                summary.missing.push(n.name.to_owned());
            }
            if holds_slot() {
                in_progress.insert(n.name.to_owned());
            }
            continue;
        };
        match facts::freshness(report.status.as_ref(), n.observed_scan, now) {
            Freshness::Stale => {
                if n.selected {
                    summary.stale.push(n.name.to_owned());
                }
                if holds_slot() {
                    in_progress.insert(n.name.to_owned());
                }
            }
            Freshness::Fresh { stale_at } => {
                wake.at(stale_at);
                let firing_since = p
                    .detectors
                    .iter()
                    .filter_map(|d| facts::condition(report, &p.name, *d))
                    .filter(|c| facts::is_true(c))
                    .map(|c| c.last_transition_time.0)
                    .min();
                if n.selected && firing_since.is_some() {
                    summary.unhealthy += 1;
                }
                for e in n
                    .remediation()
                    .into_iter()
                    .flat_map(|l| l.episodes.iter())
                    .filter(|e| e.policy == p.name)
                {
                    let open = facts::condition(report, &p.name, e.detector)
                        .is_some_and(|c| facts::is_true(c) && c.last_transition_time == e.since);
                    if open && slots::occupies_slot(e, p.ladder(e.detector)) {
                        in_progress.insert(n.name.to_owned());
                    }
                }
                if firing_since.is_some() {
                    order.push((firing_since, i));
                    continue;
                }
            }
        }
        if n.selected {
            healthy_names.push(i);
        }
        order.push((None, i));
    }
    summary.storm_limit = p.safety.max_unhealthy.limit(summary.matched);
    let stale_count = u32::try_from(summary.stale.len()).unwrap_or(u32::MAX);
    summary.storm = summary.unhealthy.saturating_add(stale_count) > summary.storm_limit;
    // Oldest firing first: they get concurrency slots first.
    order.sort_by(|a, b| match (a.0, b.0) {
        (Some(x), Some(y)) => x.cmp(&y).then(a.1.cmp(&b.1)),
        (Some(_), None) => std::cmp::Ordering::Less,
        (None, Some(_)) => std::cmp::Ordering::Greater,
        (None, None) => a.1.cmp(&b.1),
    });

    // A policy being deleted no longer exists for the planner: what it
    // holds is released like a deleted policy's.
    let existing: BTreeSet<&str> = std::iter::once(p.name.as_str())
        .filter(|_| !input.deleting)
        .chain(input.others.iter().map(|o| o.view.name.as_str()))
        .chain(input.invalid.iter().map(String::as_str))
        .collect();

    let mut planner = NodePlanner {
        input,
        existing,
        storm: summary.storm,
        in_progress,
    };
    let mut work = Vec::new();
    let mut summaries: Vec<NodeSummary> = Vec::new();
    for (_, i) in &order {
        let n = &input.nodes[*i];
        let result = planner.node(n, &mut wake);
        // Counted from the state as it will be written.
        let history = match (&result.work, n.report) {
            (Some(w), _) => Some(&w.ahead.remediation.history),
            (None, _) => n.remediation().map(|l| &l.history),
        };
        summary.actions_last_24h += history.map_or(0, |h| {
            h.iter()
                .filter(|h| h.policy == p.name && h.at.0 > minus(now, HISTORY_WINDOW))
                .count() as u32
        });
        if let Some(w) = result.work {
            work.push(w);
        }
        if let Some(s) = result.summary {
            summaries.push(s);
        }
        if result.failing {
            summary.failing.push(n.name.to_owned());
        }
        if result.needs_attention {
            summary.needs_attention.push(n.name.to_owned());
        }
    }
    summary.failing.sort();
    summary.needs_attention.sort();
    for name in &summary.stale {
        if summaries.len() >= 50 {
            break;
        }
        summaries.push(NodeSummary {
            node: name.clone(),
            firing: Vec::new(),
            since: None,
            escalation: None,
            stale: true,
            scope: None,
            paused: summary.paused_nodes.contains(name),
        });
    }
    for i in healthy_names {
        if summaries.len() >= 50 {
            break;
        }
        summaries.push(NodeSummary {
            node: input.nodes[i].name.to_owned(),
            firing: Vec::new(),
            since: None,
            escalation: None,
            stale: false,
            scope: None,
            paused: facts::node_pause(input.nodes[i].node).is_some(),
        });
    }
    summaries.truncate(50);
    summary.nodes = summaries;
    Plan {
        work,
        summary,
        wake_at: wake.at,
    }
}
