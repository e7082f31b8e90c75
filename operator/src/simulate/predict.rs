//! What the agents would report for a policy that is not applied yet (or
//! whose detector was edited): each detector's verdict on a node, predicted
//! from the findings its report already lists.
//!
//! The agent decides from its own scans and history; a report lists only
//! the worst offenders above the loosest thresholds of the policies applied
//! now. A prediction is therefore exact where the report already carries the
//! policy's own condition for an unchanged detector, and an estimate
//! otherwise — and it says which.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::jiff::Timestamp;
use nodemedic_crds::NodeHealthReport;
use nodemedic_crds::conditions::{ConditionStatus, Detector};
use nodemedic_crds::report::{CulpritPod, ProblemScope, Workload};
use nodemedic_crds::thresholds::EffectiveThresholds;

use crate::plan::facts;

/// How a prediction was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Basis {
    /// The report's own condition for this policy and an unchanged
    /// detector: what the agent reports now.
    Reported,
    /// Estimated from the findings the report lists, with this policy's
    /// thresholds.
    Estimated,
}

impl Basis {
    pub fn as_str(self) -> &'static str {
        match self {
            Basis::Reported => "reported",
            Basis::Estimated => "estimated",
        }
    }
}

/// A detector's predicted verdict on one node.
#[derive(Debug, Clone, PartialEq)]
pub struct Prediction {
    pub detector: Detector,
    pub basis: Basis,
    /// When the condition is (or would become) True; None when it would
    /// not fire while nothing changes.
    pub fires_at: Option<Timestamp>,
    pub scope: Option<(ProblemScope, Option<CulpritPod>)>,
    /// Indexes of the listed findings that exceed (to name a zombie parent).
    pub exceeding: Vec<usize>,
    /// Why, in words.
    pub note: String,
}

/// Predicts every configured detector of `thresholds` on one node.
/// `reported` is true when the policy is applied and its detector config
/// for `d` is unchanged (`same_detector(d)`): the report's condition is
/// then taken as it is.
pub fn predict(
    report: &NodeHealthReport,
    policy: &str,
    thresholds: &EffectiveThresholds,
    same_detector: impl Fn(Detector) -> bool,
    now: Timestamp,
) -> Vec<Prediction> {
    Detector::ALL
        .into_iter()
        .filter(|d| thresholds.enabled(*d))
        .map(|d| {
            let reported = same_detector(d)
                .then(|| facts::condition(report, policy, d))
                .flatten();
            match reported {
                Some(c) => {
                    let fires_at = match c.status {
                        ConditionStatus::True => Some(c.last_transition_time.0),
                        // Pending: exceeded since, fires after `for`.
                        _ => c.exceeded_since.as_ref().map(|s| {
                            crate::plan::plus(
                                s.0,
                                thresholds.for_duration(d).unwrap_or(Duration::ZERO),
                            )
                            .max(now)
                        }),
                    };
                    Prediction {
                        detector: d,
                        basis: Basis::Reported,
                        fires_at,
                        scope: c.scope.map(|s| (s, c.culprit.clone())),
                        exceeding: exceeding_listed(report, policy, d),
                        note: c.message.clone(),
                    }
                }
                None => estimate(report, thresholds, d, now),
            }
        })
        .collect()
}

/// Findings of `detector` listed as exceeded under `policy`.
fn exceeding_listed(report: &NodeHealthReport, policy: &str, detector: Detector) -> Vec<usize> {
    let Some(s) = report.status.as_ref() else {
        return Vec::new();
    };
    let under = |exceeded: bool, list: &[String]| facts::exceeded_for(exceeded, list, policy);
    let f = &s.findings;
    match detector {
        Detector::Zombies => indexes(
            f.zombies
                .iter()
                .map(|z| under(z.exceeded, &z.exceeded_under)),
        ),
        Detector::HungTasks => indexes(
            f.hung_tasks
                .iter()
                .map(|h| under(h.exceeded, &h.exceeded_under)),
        ),
        Detector::FdLeak => indexes(
            f.fd_leak
                .iter()
                .map(|x| under(x.exceeded, &x.exceeded_under)),
        ),
        Detector::CpuThrottling => indexes(
            f.cpu_throttling
                .iter()
                .map(|c| under(c.exceeded, &c.exceeded_under)),
        ),
    }
}

fn indexes(flags: impl Iterator<Item = bool>) -> Vec<usize> {
    flags
        .enumerate()
        .filter_map(|(i, f)| f.then_some(i))
        .collect()
}

/// The verdict estimated from the listed findings, as the agent's detectors
/// decide it (docs/agent.md): the condition turns True `for` after the
/// agent first sees the policy, taken as `now`.
fn estimate(
    report: &NodeHealthReport,
    t: &EffectiveThresholds,
    detector: Detector,
    now: Timestamp,
) -> Prediction {
    let none = |note: &str| Prediction {
        detector,
        basis: Basis::Estimated,
        fires_at: None,
        scope: None,
        exceeding: Vec::new(),
        note: note.to_owned(),
    };
    let Some(s) = report.status.as_ref() else {
        return none("no scan reported yet");
    };
    let f = &s.findings;
    let (exceeded, exceeding, workloads, host_wide, note): (
        bool,
        Vec<usize>,
        Vec<Option<&Workload>>,
        bool,
        String,
    ) = match detector {
        Detector::Zombies => {
            let Some(z) = &t.zombies else {
                return none("detector off");
            };
            let min_age = z.min_age.as_secs();
            let old: Vec<(usize, u32)> = f
                .zombies
                .iter()
                .enumerate()
                .filter(|(_, p)| p.oldest_age_seconds >= min_age)
                .map(|(i, p)| (i, p.zombies_past_min_age))
                .collect();
            let total: u32 = old.iter().map(|(_, n)| *n).sum();
            let parents: Vec<usize> = old
                .iter()
                .filter(|(_, n)| *n >= z.per_parent_threshold)
                .map(|(i, _)| *i)
                .collect();
            let exceeded = total >= z.threshold || !parents.is_empty();
            let counted: Vec<usize> = if parents.is_empty() {
                old.iter().map(|(i, _)| *i).collect()
            } else {
                parents.clone()
            };
            (
                exceeded,
                parents,
                counted
                    .iter()
                    .map(|i| f.zombies[*i].parent.workload.as_ref())
                    .collect(),
                false,
                format!(
                    "{total} listed zombies older than {}s (threshold {}), {} parent(s) with at least {}",
                    min_age,
                    z.threshold,
                    counted.len().min(old.len()),
                    z.per_parent_threshold
                ),
            )
        }
        Detector::HungTasks => {
            let Some(h) = &t.hung_tasks else {
                return none("detector off");
            };
            let hung: Vec<usize> = f
                .hung_tasks
                .iter()
                .enumerate()
                .filter(|(_, x)| x.blocked_seconds >= h.min_duration.as_secs())
                .map(|(i, _)| i)
                .collect();
            (
                hung.len() as u32 >= h.threshold,
                hung.clone(),
                hung.iter()
                    .map(|i| f.hung_tasks[*i].process.workload.as_ref())
                    .collect(),
                false,
                format!(
                    "{} listed thread(s) in D for at least {}s (threshold {})",
                    hung.len(),
                    h.min_duration.as_secs(),
                    h.threshold
                ),
            )
        }
        Detector::FdLeak => {
            let Some(x) = &t.fd_leak else {
                return none("detector off");
            };
            let leaking: Vec<usize> = f
                .fd_leak
                .iter()
                .enumerate()
                .filter(|(_, p)| {
                    p.open_fds >= x.min_open_fds
                        && (p.usage_ratio.is_some_and(|r| r >= x.usage_ratio)
                            || x.growth.as_ref().is_some_and(|g| {
                                p.growth_per_minute
                                    .is_some_and(|r| r >= g.min_fds_per_minute)
                            })
                            || x.exhaustion_within.is_some_and(|w| {
                                p.exhaustion_eta_seconds.is_some_and(|e| e <= w.as_secs())
                            }))
                })
                .map(|(i, _)| i)
                .collect();
            let node = f
                .node_file_handles
                .as_ref()
                .is_some_and(|n| n.ratio >= x.node_file_ratio);
            (
                !leaking.is_empty() || node,
                leaking.clone(),
                leaking
                    .iter()
                    .map(|i| f.fd_leak[*i].process.workload.as_ref())
                    .collect(),
                node,
                format!(
                    "{} listed process(es) over the fd rules{}",
                    leaking.len(),
                    if node {
                        "; the node's file table over nodeFileRatio"
                    } else {
                        ""
                    }
                ),
            )
        }
        Detector::CpuThrottling => {
            let Some(c) = &t.cpu_throttling else {
                return none("detector off");
            };
            let hot: Vec<usize> = f
                .cpu_throttling
                .iter()
                .enumerate()
                .filter(|(_, x)| {
                    x.periods >= c.min_periods && x.throttled_ratio >= c.throttled_ratio
                })
                .map(|(i, _)| i)
                .collect();
            (
                !hot.is_empty(),
                hot.clone(),
                hot.iter()
                    .map(|i| f.cpu_throttling[*i].workload.as_ref())
                    .collect(),
                false,
                format!(
                    "{} listed container(s) throttled at least {:.0}% of {} periods",
                    hot.len(),
                    c.throttled_ratio * 100.0,
                    c.min_periods
                ),
            )
        }
    };
    if !exceeded {
        return Prediction {
            note: format!("below: {note}"),
            ..none("")
        };
    }
    let for_duration = t.for_duration(detector).unwrap_or(Duration::ZERO);
    Prediction {
        detector,
        basis: Basis::Estimated,
        fires_at: Some(crate::plan::plus(now, for_duration)),
        scope: Some(scope_of(&workloads, host_wide)),
        exceeding,
        note,
    }
}

/// Pod when every offender is in the same pod, else Node (the agent's rule).
fn scope_of(
    workloads: &[Option<&Workload>],
    host_wide: bool,
) -> (ProblemScope, Option<CulpritPod>) {
    let mut pods: BTreeMap<&str, CulpritPod> = BTreeMap::new();
    let mut host = host_wide || workloads.is_empty();
    for w in workloads {
        match w.and_then(|w| w.pod_uid.as_deref().map(|uid| (uid, w))) {
            Some((uid, w)) => {
                pods.entry(uid).or_insert_with(|| CulpritPod {
                    uid: uid.to_owned(),
                    namespace: w.pod_namespace.clone(),
                    name: w.pod_name.clone(),
                });
            }
            None => host = true,
        }
    }
    if !host && pods.len() == 1 {
        let culprit = pods.into_values().next();
        (ProblemScope::Pod, culprit)
    } else {
        (ProblemScope::Node, None)
    }
}
