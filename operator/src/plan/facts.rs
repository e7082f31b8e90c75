//! Facts the planner reads from Nodes and reports, extracted once so that the
//! planner itself stays free of Kubernetes object plumbing.

use std::collections::BTreeSet;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, Taint};
use k8s_openapi::jiff::Timestamp;
use nodemedic_crds::conditions::{ConditionStatus, Detector};
use nodemedic_crds::duration::parse_duration;
use nodemedic_crds::pause::{Pause, pause_from_annotations};
use nodemedic_crds::policy::TaintEffect;
use nodemedic_crds::remediation::{
    CORDONED_BY_ANNOTATION, Episode, OwnedTaint, TAINTED_BY_ANNOTATION,
};
use nodemedic_crds::report::{PolicyCondition, ProcessTarget, Workload};
use nodemedic_crds::{NodeHealthReport, NodeHealthReportStatus, NodeRemediation};

/// Heartbeat assumed when a report does not state one.
pub const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(300);
/// A report older than this many heartbeats is stale.
pub const STALE_HEARTBEATS: u32 = 3;

/// What the planner needs of a Node.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NodeFacts {
    pub uid: Option<String>,
    pub unschedulable: bool,
    /// Policies nodemedic cordoned the node for (the annotation); `None`
    /// when the annotation is absent.
    pub cordoned_by: Option<BTreeSet<String>>,
    pub taints: Vec<Taint>,
    /// Taints nodemedic placed (the annotation).
    pub owned_taints: Vec<OwnedTaint>,
    /// nodemedic's Node conditions: detector → (True?, lastTransitionTime).
    pub conditions: Vec<(Detector, bool, Option<Timestamp>)>,
    /// The node is paused (its `nodemedic.io/paused` annotation): no new
    /// ladder step of any policy starts there and nothing is undone.
    pub pause: Option<Pause>,
}

impl NodeFacts {
    /// Extracts the facts from a Node.
    pub fn from_node(node: &Node) -> Self {
        let annotations = node.metadata.annotations.as_ref();
        let cordoned_by = annotations
            .and_then(|a| a.get(CORDONED_BY_ANNOTATION))
            .map(|v| parse_policy_list(v));
        let owned_taints = annotations
            .and_then(|a| a.get(TAINTED_BY_ANNOTATION))
            .and_then(|v| serde_json::from_str::<Vec<OwnedTaint>>(v).ok())
            .unwrap_or_default();
        let spec = node.spec.as_ref();
        let conditions = node
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .map(|cs| {
                cs.iter()
                    .filter_map(|c| {
                        let d = Detector::ALL
                            .into_iter()
                            .find(|d| d.node_condition_type() == c.type_)?;
                        Some((
                            d,
                            c.status == "True",
                            c.last_transition_time.as_ref().map(|t| t.0),
                        ))
                    })
                    .collect()
            })
            .unwrap_or_default();
        Self {
            uid: node.metadata.uid.clone(),
            unschedulable: spec.and_then(|s| s.unschedulable).unwrap_or(false),
            cordoned_by,
            taints: spec.and_then(|s| s.taints.clone()).unwrap_or_default(),
            owned_taints,
            conditions,
            pause: annotations.and_then(pause_from_annotations),
        }
    }

    /// Whether the node carries a taint with this key and effect.
    pub fn has_taint(&self, key: &str, effect: TaintEffect) -> bool {
        self.taints
            .iter()
            .any(|t| t.key == key && t.effect == effect_str(effect))
    }

    /// The current nodemedic condition for `detector`: Some(true) when True.
    pub fn condition(&self, detector: Detector) -> Option<bool> {
        self.conditions
            .iter()
            .find(|(d, _, _)| *d == detector)
            .map(|(_, s, _)| *s)
    }
}

/// The pause a Node carries, if any (its `nodemedic.io/paused` annotation).
pub fn node_pause(node: Option<&Node>) -> Option<Pause> {
    node?
        .metadata
        .annotations
        .as_ref()
        .and_then(pause_from_annotations)
}

/// The API string of a taint effect.
pub fn effect_str(effect: TaintEffect) -> &'static str {
    match effect {
        TaintEffect::NoSchedule => "NoSchedule",
        TaintEffect::PreferNoSchedule => "PreferNoSchedule",
        TaintEffect::NoExecute => "NoExecute",
    }
}

/// `a,b,c` → {a, b, c}.
pub fn parse_policy_list(value: &str) -> BTreeSet<String> {
    value
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

/// {a, b} → `a,b`.
pub fn format_policy_list(policies: &BTreeSet<String>) -> String {
    policies.iter().cloned().collect::<Vec<_>>().join(",")
}

/// Freshness of a report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Freshness {
    /// Usable; becomes stale at the given time.
    Fresh { stale_at: Timestamp },
    /// Older than three heartbeats (or never scanned): nothing is planned
    /// from it.
    Stale,
}

/// Clock skew between an agent and the operator that changes no decision.
pub const SKEW_TOLERANCE: Duration = Duration::from_secs(30);

/// When an episode's ladder starts: the condition's `lastTransitionTime`
/// (the agent's clock), held within [`SKEW_TOLERANCE`] before the
/// operator's own first observation and never after it. An agent clock
/// behind the operator's cannot make steps come due early, one ahead
/// cannot hold them back. Episodes recorded before observations were
/// (no `observedAt`) keep the agent's time.
pub fn ladder_start(episode: &Episode) -> Timestamp {
    let since = episode.since.0;
    match &episode.observed_at {
        Some(seen) => since.clamp(super::minus(seen.0, SKEW_TOLERANCE), seen.0),
        None => since,
    }
}

/// Longest heartbeat the operator believes: an agent stating a longer one
/// (a typo, or a compromised agent keeping a dead node "fresh") gets this.
pub const MAX_HEARTBEAT: Duration = Duration::from_secs(15 * 60);

/// Whether `status` is fresh at `now`, on the operator's clock.
///
/// `observed` is when the operator itself first saw the report's current
/// `lastScanTime` (the watch event that carried it): a report is stale three
/// heartbeats after that, on the operator's clock, so an agent whose clock
/// runs ahead cannot keep a dead node fresh. It is also stale three
/// heartbeats (plus [`SKEW_TOLERANCE`]) after its own `lastScanTime`, which
/// covers a report this process has just met (after a restart) that was
/// already old. Without an observation only the second rule applies.
pub fn freshness(
    status: Option<&NodeHealthReportStatus>,
    observed: Option<Timestamp>,
    now: Timestamp,
) -> Freshness {
    let Some(status) = status else {
        return Freshness::Stale;
    };
    let Some(last) = status.last_scan_time.as_ref() else {
        return Freshness::Stale;
    };
    let heartbeat = status
        .heartbeat_interval
        .as_deref()
        .and_then(|h| parse_duration(h).ok())
        .filter(|h| !h.is_zero())
        .unwrap_or(DEFAULT_HEARTBEAT)
        .min(MAX_HEARTBEAT);
    let window = heartbeat.saturating_mul(STALE_HEARTBEATS);
    // By the agent's own stamp, allowing for the documented skew: an agent
    // whose clock runs far behind reads as stale (nothing is planned, the
    // policy is Degraded), never the reverse.
    let by_stamp = super::plus(last.0, window.saturating_add(SKEW_TOLERANCE));
    let stale_at = match observed {
        Some(seen) => by_stamp.min(super::plus(seen, window)),
        None => by_stamp,
    };
    if now >= stale_at {
        Freshness::Stale
    } else {
        Freshness::Fresh { stale_at }
    }
}

/// The agent's stamp of the report's current scan.
pub fn scan_time(report: &NodeHealthReport) -> Option<Timestamp> {
    report
        .status
        .as_ref()
        .and_then(|s| s.last_scan_time.as_ref())
        .map(|t| t.0)
}

/// How often the agent scans, as it reports (10 s when it does not say),
/// kept within 1 s to 5 min: how soon the next scan can be expected.
pub fn scan_interval(report: &NodeHealthReport) -> Duration {
    report
        .status
        .as_ref()
        .and_then(|s| s.scan_interval.as_deref())
        .and_then(|i| parse_duration(i).ok())
        .unwrap_or(Duration::from_secs(10))
        .clamp(Duration::from_secs(1), Duration::from_secs(300))
}

/// The report condition of `policy` for `detector`.
pub fn condition<'a>(
    report: &'a NodeHealthReport,
    policy: &str,
    detector: Detector,
) -> Option<&'a PolicyCondition> {
    report.status.as_ref().and_then(|s| {
        s.conditions
            .iter()
            .find(|c| c.policy == policy && c.type_ == detector.condition_type())
    })
}

/// Whether the condition fires.
pub fn is_true(condition: &PolicyCondition) -> bool {
    condition.status == ConditionStatus::True
}

/// Whether `policy` is listed as exceeded (an empty list with `exceeded`
/// set is taken as "every policy", for agents that do not fill the list).
pub fn exceeded_for(exceeded: bool, under: &[String], policy: &str) -> bool {
    exceeded && (under.is_empty() || under.iter().any(|p| p == policy))
}

/// The zombie parent to signal for `policy`: the first listed parent
/// exceeding `perParentThreshold` under the policy. There is no fallback to
/// "the parent with the most zombies": a node-wide count made of many
/// parents' few zombies names no parent to signal.
pub fn zombie_target(
    report: &NodeHealthReport,
    policy: &str,
) -> Option<(ProcessTarget, Option<Workload>)> {
    let findings = &report.status.as_ref()?.findings.zombies;
    let finding = findings
        .iter()
        .find(|f| exceeded_for(f.exceeded, &f.exceeded_under, policy))?;
    let p = &finding.parent;
    if p.host_pid < 2 || p.start_time == 0 {
        return None;
    }
    Some((
        ProcessTarget {
            pid: p.host_pid,
            start_time: p.start_time,
            comm: p.comm.clone(),
        },
        p.workload.clone(),
    ))
}

/// A pod named by a finding.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PodRef {
    pub namespace: String,
    pub name: String,
    pub uid: Option<String>,
}

impl std::fmt::Display for PodRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

fn pod_of(workload: Option<&Workload>) -> Option<PodRef> {
    let w = workload?;
    Some(PodRef {
        namespace: w.pod_namespace.clone()?,
        name: w.pod_name.clone()?,
        uid: w.pod_uid.clone(),
    })
}

/// The pod a pod-contained problem lives in, as its condition names it
/// (with namespace and name, which an eviction needs).
pub fn culprit_pod(cond: &PolicyCondition) -> Option<PodRef> {
    if cond.scope != Some(nodemedic_crds::report::ProblemScope::Pod) {
        return None;
    }
    let c = cond.culprit.as_ref()?;
    Some(PodRef {
        namespace: c.namespace.clone()?,
        name: c.name.clone()?,
        uid: Some(c.uid.clone()),
    })
}

/// Where the firing problems of a node live together: Pod (and its
/// culprit) when every one is in the same pod, else Node; None when no
/// condition says (agents older than the field).
pub fn node_scope<'c>(
    firing: impl Iterator<Item = &'c PolicyCondition>,
) -> Option<(nodemedic_crds::report::ProblemScope, Option<String>)> {
    use nodemedic_crds::report::ProblemScope;
    let mut pods: BTreeSet<String> = BTreeSet::new();
    let mut culprit = None;
    let mut any = false;
    for c in firing {
        match (c.scope?, &c.culprit) {
            (ProblemScope::Pod, Some(pod)) => {
                pods.insert(pod.uid.clone());
                culprit.get_or_insert_with(|| pod.to_string());
            }
            _ => return Some((ProblemScope::Node, None)),
        }
        any = true;
    }
    if !any {
        return None;
    }
    Some(if pods.len() == 1 {
        (ProblemScope::Pod, culprit)
    } else {
        (ProblemScope::Node, None)
    })
}

/// Where the problem lives, for messages: "Pod shop/php-0" or "Node".
pub fn scope_text(cond: &PolicyCondition) -> Option<String> {
    let scope = cond.scope?;
    Some(match &cond.culprit {
        Some(pod) if scope == nodemedic_crds::report::ProblemScope::Pod => {
            format!("{} {pod}", scope.as_str())
        }
        _ => scope.as_str().to_owned(),
    })
}

/// The pod a detector's findings attribute the problem to under `policy`:
/// the first exceeding finding that names a pod.
pub fn attributed_pod(
    report: &NodeHealthReport,
    policy: &str,
    detector: Detector,
) -> Option<PodRef> {
    let f = &report.status.as_ref()?.findings;
    let candidates: Vec<(bool, Option<PodRef>)> = match detector {
        Detector::Zombies => f
            .zombies
            .iter()
            .map(|z| {
                (
                    exceeded_for(z.exceeded, &z.exceeded_under, policy),
                    pod_of(z.parent.workload.as_ref()),
                )
            })
            .collect(),
        Detector::HungTasks => f
            .hung_tasks
            .iter()
            .map(|h| {
                (
                    exceeded_for(h.exceeded, &h.exceeded_under, policy),
                    pod_of(h.process.workload.as_ref()),
                )
            })
            .collect(),
        Detector::FdLeak => f
            .fd_leak
            .iter()
            .map(|x| {
                (
                    exceeded_for(x.exceeded, &x.exceeded_under, policy),
                    pod_of(x.process.workload.as_ref()),
                )
            })
            .collect(),
        Detector::CpuThrottling => f
            .cpu_throttling
            .iter()
            .map(|c| {
                (
                    exceeded_for(c.exceeded, &c.exceeded_under, policy),
                    pod_of(c.workload.as_ref()),
                )
            })
            .collect(),
    };
    candidates
        .into_iter()
        .filter(|(exceeded, _)| *exceeded)
        .find_map(|(_, pod)| pod)
}

/// Whether `policy` left state on a node: an episode, history or request
/// in its ledger or report, or a share of nodemedic's cordon or taints.
pub fn mentions(
    policy: &str,
    report: Option<&NodeHealthReport>,
    ledger: Option<&NodeRemediation>,
    node: Option<&Node>,
) -> bool {
    let in_ledger = |l: &nodemedic_crds::remediation::Remediation| {
        l.episodes.iter().any(|e| e.policy == policy)
            || l.history.iter().any(|h| h.policy == policy)
    };
    let in_report = report.is_some_and(|r| {
        in_ledger(&r.spec.remediation) || r.spec.action_requests.iter().any(|a| a.policy == policy)
    }) || ledger.is_some_and(|l| in_ledger(&l.spec));
    let on_node = node.is_some_and(|n| {
        let f = NodeFacts::from_node(n);
        f.cordoned_by.is_some_and(|o| o.contains(policy))
            || f.owned_taints
                .iter()
                .any(|t| t.policies.iter().any(|p| p == policy))
    });
    in_report || on_node
}
