//! Defence in depth: before the agent carries out an action request it
//! checks the request against its **own** view — the policies it watches,
//! its node's labels and its latest scan — whoever wrote the request. The
//! operator's word is necessary, never sufficient: a request written by
//! hand into `NodeHealthReport.spec` that no enforcing policy of this node
//! would have produced is refused.
//!
//! [`verify`] is pure (no I/O, no clock): inputs in, `Ok` or a typed
//! [`Refusal`] out. Its messages repeat only what the request itself
//! carried (pid, start time, policy name) and what the policy says; they
//! never disclose the identity of a process the request did not name (the
//! real start time behind a pid, another process's parent).

use crate::scan::Observation;
use k8s_openapi::jiff::Timestamp;
use nodemedic_crds::conditions::{ConditionStatus, Detector};
use nodemedic_crds::policy::{
    ActionKind, ActionStep, NodeHealthPolicy, ParentSignal, PolicyMode, StepScope,
};
use nodemedic_crds::report::{
    ActionRefusal, ActionRequest, NodeAction, PolicyCondition, ProblemScope,
};
use nodemedic_crds::selector::selects;
use nodemedic_crds::thresholds::SelectedPolicy;
use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

/// How much sooner than its step's `after` a RequestReboot may arrive. The
/// operator starts a ladder at the condition's `lastTransitionTime` (the
/// agent's clock), held within 30 s of when it first saw the condition;
/// this covers that and a report's propagation.
pub const REBOOT_AFTER_TOLERANCE: Duration = Duration::from_secs(60);

/// What the agent itself knows of its node when it checks a request.
#[derive(Debug, Clone, Copy)]
pub struct AgentView<'a> {
    pub node_labels: &'a BTreeMap<String, String>,
    /// The zombie parents of the latest scan.
    pub zombie_facts: &'a ZombieFacts,
    /// The conditions of the agent's latest report (every policy's).
    pub conditions: &'a [PolicyCondition],
    /// The agent's clock, the one the conditions' times are on.
    pub now: Timestamp,
}

/// Where a zombie parent runs, as far as the agent can tell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Placement {
    /// Not in a pod: its cgroup names no pod UID.
    Host,
    /// In a pod; the namespace when the kubelet's log layout names it.
    Pod { namespace: Option<String> },
    /// Not looked up: when scanned it held fewer zombies than any
    /// selecting policy's perParentThreshold.
    Unknown,
}

/// A process with zombie children in the latest scan.
#[derive(Debug, Clone, PartialEq)]
pub struct ZombieParentFact {
    pub start_time: u64,
    pub comm: String,
    pub placement: Placement,
    /// The age, in seconds, of each zombie under it (measured as the
    /// zombies detector measures it).
    pub zombie_ages: Vec<f64>,
}

impl ZombieParentFact {
    /// Zombies at least `min_age` old.
    pub fn past(&self, min_age: std::time::Duration) -> usize {
        let min = min_age.as_secs_f64();
        self.zombie_ages.iter().filter(|a| **a >= min).count()
    }
}

/// The zombie parents of the agent's latest scan, by pid.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ZombieFacts {
    pub parents: HashMap<i32, ZombieParentFact>,
}

impl ZombieFacts {
    /// Groups the observation's zombies by parent. `age` gives a zombie's
    /// age in seconds; `placement` is asked only for parents holding at
    /// least `lookup_from` zombies (`None`: for none).
    pub fn collect(
        obs: &Observation,
        mut age: impl FnMut(&crate::scan::procfs::ZombieObs) -> f64,
        lookup_from: Option<usize>,
        mut placement: impl FnMut(i32, u64) -> Placement,
    ) -> Self {
        if obs.procs.zombies.is_empty() {
            return Self::default();
        }
        let mut ages: HashMap<i32, Vec<f64>> = HashMap::new();
        for z in &obs.procs.zombies {
            ages.entry(z.ppid).or_default().push(age(z));
        }
        let mut parents = HashMap::with_capacity(ages.len());
        for p in &obs.procs.processes {
            let Some(zombie_ages) = ages.remove(&p.pid) else {
                continue;
            };
            let placement = match lookup_from {
                Some(n) if zombie_ages.len() >= n => placement(p.pid, p.starttime),
                _ => Placement::Unknown,
            };
            parents.insert(
                p.pid,
                ZombieParentFact {
                    start_time: p.starttime,
                    comm: p.comm.clone(),
                    placement,
                    zombie_ages,
                },
            );
        }
        Self { parents }
    }
}

/// Why a request is not carried out, in words for `status.actionResults`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub reason: ActionRefusal,
    pub message: String,
}

impl Refusal {
    fn new(reason: ActionRefusal, message: impl Into<String>) -> Self {
        Self {
            reason,
            message: message.into(),
        }
    }
}

/// The signal a ladder step sends: SIGCHLD when the step names none.
pub fn step_signal(step: &ActionStep) -> ParentSignal {
    step.signal.unwrap_or(ParentSignal::SIGCHLD)
}

/// Checks `request` against the agent's own view. On success returns the
/// requesting policy (its `protectedProcesses` still apply when the
/// signaller re-reads the target).
///
/// `protected` names the built-in protected processes and their matcher:
/// `Some(pattern)` when `comm` is protected under the policy's extras.
pub fn verify<'p>(
    request: &ActionRequest,
    policies: impl IntoIterator<Item = &'p NodeHealthPolicy>,
    view: &AgentView<'_>,
    protected: impl Fn(&str, &[String]) -> Option<String>,
) -> Result<&'p NodeHealthPolicy, Refusal> {
    use ActionRefusal as R;
    let (node_labels, facts) = (view.node_labels, view.zombie_facts);
    let name = request.policy.as_str();
    match (request.action, &request.target, request.signal) {
        (NodeAction::SignalParent, Some(_), Some(_)) | (NodeAction::RequestReboot, None, None) => {}
        (NodeAction::SignalParent, _, _) => {
            return Err(Refusal::new(
                R::MalformedRequest,
                "malformed request: SignalParent needs target and signal",
            ));
        }
        (NodeAction::RequestReboot, _, _) => {
            return Err(Refusal::new(
                R::MalformedRequest,
                "malformed request: RequestReboot takes no target and no signal",
            ));
        }
    }
    let Some(policy) = policies
        .into_iter()
        .find(|p| p.metadata.name.as_deref() == Some(name))
    else {
        return Err(Refusal::new(
            R::UnknownPolicy,
            format!("policy {name:?} does not exist in the agent's view"),
        ));
    };
    let selected = SelectedPolicy::from_policy(policy)
        .map_err(|e| Refusal::new(R::PolicyInvalid, format!("cannot evaluate {e}")))?;
    match selects(policy.spec.node_selector.as_ref(), node_labels) {
        Ok(true) => {}
        Ok(false) => {
            return Err(Refusal::new(
                R::PolicyDoesNotSelectNode,
                format!("policy {name:?} does not select this node"),
            ));
        }
        Err(e) => {
            return Err(Refusal::new(
                R::PolicyInvalid,
                format!("cannot evaluate policy {name:?}: nodeSelector: {e}"),
            ));
        }
    }
    if policy.spec.mode != PolicyMode::Enforce {
        return Err(Refusal::new(
            R::PolicyNotEnforcing,
            format!(
                "policy {name:?} is in {:?} mode; only Enforce executes",
                policy.spec.mode
            ),
        ));
    }
    let ladders = &policy.spec.actions;
    let (target, signal) = match (request.action, &request.target, request.signal) {
        (NodeAction::SignalParent, Some(t), Some(s)) => (t, s),
        _ => return verify_reboot(policy, view).map(|()| policy),
    };
    let steps: Vec<&ActionStep> = ladders
        .zombies
        .iter()
        .filter(|s| s.action == ActionKind::SignalParent)
        .collect();
    if steps.is_empty() {
        return Err(Refusal::new(
            R::StepNotInLadder,
            format!("policy {name:?} has no SignalParent step in its zombies ladder"),
        ));
    }
    if !steps.iter().any(|s| step_signal(s) == signal) {
        return Err(Refusal::new(
            R::SignalNotInLadder,
            format!(
                "policy {name:?} signals zombie parents with {} only, not {signal:?}",
                steps
                    .iter()
                    .map(|s| format!("{:?}", step_signal(s)))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ));
    }
    let Some(zombies) = selected.thresholds.zombies.as_ref() else {
        return Err(Refusal::new(
            R::PolicyInvalid,
            format!("policy {name:?} has a SignalParent step but no zombies detector"),
        ));
    };
    // From here on every message names only what the request carried.
    let who = format!("pid {} (start time {})", target.pid, target.start_time);
    let Some(fact) = facts.parents.get(&target.pid) else {
        return Err(Refusal::new(
            R::NotAZombieParent,
            format!("{who} is not the parent of any zombie in the agent's latest scan"),
        ));
    };
    if fact.start_time != target.start_time {
        return Err(Refusal::new(
            R::TargetChanged,
            format!("{who}: the pid belongs to another process than the one requested"),
        ));
    }
    if let Some(pattern) = protected(&fact.comm, &policy.spec.safety.protected_processes) {
        return Err(Refusal::new(
            R::ProtectedProcess,
            format!("{who} is a protected process (matches {pattern:?})"),
        ));
    }
    let past = fact.past(zombies.min_age);
    if past < zombies.per_parent_threshold as usize {
        return Err(Refusal::new(
            R::BelowPerParentThreshold,
            format!(
                "{who} holds {past} zombie(s) older than {}s; policy {name:?} signals a parent from {} (perParentThreshold)",
                zombies.min_age.as_secs(),
                zombies.per_parent_threshold
            ),
        ));
    }
    let excluded = &policy.spec.safety.exclude_namespaces;
    if !excluded.is_empty() {
        match &fact.placement {
            Placement::Host => {}
            Placement::Pod {
                namespace: Some(ns),
            } => {
                if excluded.iter().any(|e| e == ns) {
                    return Err(Refusal::new(
                        R::ExcludedNamespace,
                        format!("{who} runs in namespace {ns:?}, which policy {name:?} excludes"),
                    ));
                }
            }
            Placement::Pod { namespace: None } | Placement::Unknown => {
                return Err(Refusal::new(
                    R::NamespaceUnknown,
                    format!(
                        "the agent cannot tell the namespace of {who}, and policy {name:?} excludes namespaces"
                    ),
                ));
            }
        }
    }
    Ok(policy)
}

/// Why one RequestReboot step of a policy does not apply now.
enum RebootBlock {
    NotFiring(String),
    OutOfScope(String),
}

/// RequestReboot is allowed when some ladder of the policy holds the step
/// and, in the agent's own latest report, that ladder's detector is firing
/// for the policy, has been for the step's `after` (less
/// [`REBOOT_AFTER_TOLERANCE`]), and the problem's scope is one the step is
/// for. A Node-scoped step (the default) reaches a problem contained in one
/// pod only through a pod-level step earlier in its ladder; whether that
/// step was carried out is the operator's record, not the agent's, so this
/// checks that the ladder offers one. A request for a healthy node, too
/// early, or for one pod's problem with no pod-level step first is refused
/// whoever wrote it.
fn verify_reboot(policy: &NodeHealthPolicy, view: &AgentView<'_>) -> Result<(), Refusal> {
    use ActionRefusal as R;
    let name = policy.metadata.name.as_deref().unwrap_or_default();
    let mut blocks = Vec::new();
    for detector in Detector::ALL {
        let steps = policy.spec.actions.ladder(detector);
        for (index, step) in steps.iter().enumerate() {
            if step.action != ActionKind::RequestReboot {
                continue;
            }
            match reboot_step_applies(name, detector, steps, index, view) {
                Ok(()) => return Ok(()),
                Err(block) => blocks.push(block),
            }
        }
    }
    if blocks.is_empty() {
        return Err(Refusal::new(
            R::StepNotInLadder,
            format!("policy {name:?} has no RequestReboot step"),
        ));
    }
    let reason = if blocks
        .iter()
        .any(|b| matches!(b, RebootBlock::OutOfScope(_)))
    {
        R::OutOfScope
    } else {
        R::NotFiring
    };
    let why: Vec<String> = blocks
        .into_iter()
        .map(|b| match b {
            RebootBlock::NotFiring(m) | RebootBlock::OutOfScope(m) => m,
        })
        .collect();
    Err(Refusal::new(reason, why.join("; ")))
}

fn reboot_step_applies(
    policy: &str,
    detector: Detector,
    steps: &[ActionStep],
    index: usize,
    view: &AgentView<'_>,
) -> Result<(), RebootBlock> {
    let step = &steps[index];
    let ladder = detector.name();
    let Some(cond) = view.conditions.iter().find(|c| {
        c.policy == policy && c.type_.detector() == detector && c.status == ConditionStatus::True
    }) else {
        return Err(RebootBlock::NotFiring(format!(
            "{ladder}: not firing for policy {policy:?} in the agent's latest report"
        )));
    };
    let after = step.after().map_err(|e| {
        RebootBlock::NotFiring(format!("{ladder}: the RequestReboot step's after: {e}"))
    })?;
    let firing_for = view
        .now
        .as_second()
        .saturating_sub(cond.last_transition_time.0.as_second())
        .max(0)
        .unsigned_abs();
    if Duration::from_secs(firing_for) + REBOOT_AFTER_TOLERANCE < after {
        return Err(RebootBlock::NotFiring(format!(
            "{ladder}: firing for {firing_for}s, the RequestReboot step is after {}s",
            after.as_secs()
        )));
    }
    let problem = cond.scope.unwrap_or(ProblemScope::Node);
    let pod_level_first = || {
        steps[..index].iter().any(|s| {
            matches!(s.action, ActionKind::SignalParent | ActionKind::EvictPod)
                && s.effective_scope() != StepScope::Node
        })
    };
    let fits = match (step.effective_scope(), problem) {
        (StepScope::Any, _) | (StepScope::Node, ProblemScope::Node) => true,
        (StepScope::Pod, ProblemScope::Pod) => true,
        (StepScope::Pod, ProblemScope::Node) => false,
        (StepScope::Node, ProblemScope::Pod) => pod_level_first(),
    };
    if fits {
        Ok(())
    } else {
        Err(RebootBlock::OutOfScope(format!(
            "{ladder}: the problem is {}-scoped and the RequestReboot step (scope {:?}) does not reach it{}",
            problem.as_str(),
            step.effective_scope(),
            if problem == ProblemScope::Pod {
                " without a pod-level step (SignalParent, EvictPod) before it"
            } else {
                ""
            }
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use k8s_openapi::jiff::Timestamp;
    use nodemedic_crds::report::ProcessTarget;
    use proptest::prelude::*;

    const NODE_LABEL: (&str, &str) = ("pool", "web");

    fn labels() -> BTreeMap<String, String> {
        BTreeMap::from([(NODE_LABEL.0.to_owned(), NODE_LABEL.1.to_owned())])
    }

    fn policy(name: &str, spec: serde_json::Value) -> NodeHealthPolicy {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "nodemedic.io/v1alpha1",
            "kind": "NodeHealthPolicy",
            "metadata": {"name": name},
            "spec": spec,
        }))
        .expect("policy")
    }

    /// An Enforce policy selecting the node with a zombies ladder.
    fn enforce(name: &str, ladder: serde_json::Value) -> NodeHealthPolicy {
        policy(
            name,
            serde_json::json!({
                "mode": "Enforce",
                "nodeSelector": {"matchLabels": {"pool": "web"}},
                "detectors": {"zombies": {"perParentThreshold": 5, "minAge": "30s"}},
                "actions": {"zombies": ladder},
            }),
        )
    }

    fn signal_request(policy: &str, pid: i32, start: u64, signal: ParentSignal) -> ActionRequest {
        ActionRequest {
            id: "r".to_owned(),
            action: NodeAction::SignalParent,
            target: Some(ProcessTarget {
                pid,
                start_time: start,
                comm: "x".to_owned(),
            }),
            signal: Some(signal),
            policy: policy.to_owned(),
            requested_at: Time(Timestamp::UNIX_EPOCH),
            reason: None,
        }
    }

    fn reboot_request(policy: &str) -> ActionRequest {
        ActionRequest {
            action: NodeAction::RequestReboot,
            target: None,
            signal: None,
            ..signal_request(policy, 2, 1, ParentSignal::SIGCHLD)
        }
    }

    fn parent(start: u64, comm: &str, placement: Placement, ages: &[f64]) -> ZombieParentFact {
        ZombieParentFact {
            start_time: start,
            comm: comm.to_owned(),
            placement,
            zombie_ages: ages.to_vec(),
        }
    }

    fn in_ns(ns: &str) -> Placement {
        Placement::Pod {
            namespace: Some(ns.to_owned()),
        }
    }

    /// pid 100: php-fpm in "shop" with 6 old zombies; pid 200: 6 young ones;
    /// pid 300: kubelet with 9; pid 400: in kube-system; pid 500: namespace
    /// unknown; pid 600: a host process.
    fn facts() -> ZombieFacts {
        let old = [60.0; 6];
        ZombieFacts {
            parents: HashMap::from([
                (100, parent(1000, "php-fpm", in_ns("shop"), &old)),
                (200, parent(2000, "php-fpm", in_ns("shop"), &[1.0; 6])),
                (300, parent(3000, "kubelet", Placement::Host, &[60.0; 9])),
                (400, parent(4000, "coredns", in_ns("kube-system"), &old)),
                (
                    500,
                    parent(5000, "java", Placement::Pod { namespace: None }, &old),
                ),
                (600, parent(6000, "cron", Placement::Host, &old)),
            ]),
        }
    }

    fn protected(comm: &str, extra: &[String]) -> Option<String> {
        nodemedic_crds::protected::protecting(comm, extra).map(str::to_owned)
    }

    /// The agent's clock in these tests.
    fn now() -> Timestamp {
        Timestamp::from_second(1_000_000).expect("time")
    }

    /// A condition of `policy`'s `detector`, True for `firing_for` seconds
    /// (False when `None`), with `scope`.
    fn cond(
        policy: &str,
        detector: Detector,
        firing_for: Option<i64>,
        scope: Option<ProblemScope>,
    ) -> PolicyCondition {
        use nodemedic_crds::conditions::ConditionReason;
        PolicyCondition {
            policy: policy.to_owned(),
            type_: detector.condition_type(),
            status: ConditionStatus::from_bool(firing_for.is_some()),
            reason: if firing_for.is_some() {
                ConditionReason::ThresholdExceeded
            } else {
                ConditionReason::BelowThreshold
            },
            message: String::new(),
            last_transition_time: Time(
                Timestamp::from_second(now().as_second() - firing_for.unwrap_or(7200))
                    .expect("time"),
            ),
            exceeded_since: None,
            scope,
            culprit: None,
        }
    }

    /// The zombies condition of every policy these tests name, firing
    /// node-wide for two hours.
    fn firing_everywhere() -> Vec<PolicyCondition> {
        ["reboot", "kill", "a", "b", "c"]
            .iter()
            .map(|p| cond(p, Detector::Zombies, Some(7200), Some(ProblemScope::Node)))
            .collect()
    }

    fn verify_with<'p>(
        req: &ActionRequest,
        policies: &'p [NodeHealthPolicy],
        facts: &ZombieFacts,
        conditions: &[PolicyCondition],
    ) -> Result<&'p NodeHealthPolicy, Refusal> {
        let labels = labels();
        let view = AgentView {
            node_labels: &labels,
            zombie_facts: facts,
            conditions,
            now: now(),
        };
        verify(req, policies, &view, protected)
    }

    fn reason(
        req: &ActionRequest,
        policies: &[NodeHealthPolicy],
        facts: &ZombieFacts,
    ) -> Option<ActionRefusal> {
        verify_with(req, policies, facts, &firing_everywhere())
            .err()
            .map(|r| r.reason)
    }

    #[test]
    fn each_check_has_its_own_reason() {
        use ActionRefusal as R;
        use ParentSignal::*;
        let kill = serde_json::json!([{"action": "SignalParent", "signal": "SIGKILL"}]);
        let mut observe = enforce("observe", kill.clone());
        observe.spec.mode = PolicyMode::Observe;
        let mut dry = enforce("dry", kill.clone());
        dry.spec.mode = PolicyMode::DryRun;
        let mut elsewhere = enforce("elsewhere", kill.clone());
        elsewhere.spec.node_selector =
            serde_json::from_value(serde_json::json!({"matchLabels": {"pool": "batch"}}))
                .expect("selector");
        let mut broken = enforce("broken", kill.clone());
        if let Some(z) = broken.spec.detectors.zombies.as_mut() {
            z.min_age = serde_json::from_value(serde_json::json!("soon")).expect("duration");
        }
        let mut open = enforce("open", kill.clone());
        open.spec.safety.exclude_namespaces.clear();
        let mut guarded = enforce("guarded", kill.clone());
        guarded.spec.safety.protected_processes = vec!["php*".to_owned()];
        let policies = vec![
            enforce("kill", kill.clone()),
            enforce(
                "chld",
                serde_json::json!([{"action": "SignalParent"}, {"action": "Cordon", "after": "5m"}]),
            ),
            enforce("cordon", serde_json::json!([{"action": "Cordon"}])),
            enforce(
                "reboot",
                serde_json::json!([{"action": "RequestReboot", "after": "1h"}]),
            ),
            observe,
            dry,
            elsewhere,
            broken,
            open,
            guarded,
        ];
        let f = facts();
        let cases: Vec<(&str, ActionRequest, Option<ActionRefusal>)> = vec![
            ("allowed", signal_request("kill", 100, 1000, SIGKILL), None),
            (
                "SIGCHLD from a step without signal",
                signal_request("chld", 100, 1000, SIGCHLD),
                None,
            ),
            (
                "host process, namespaces excluded",
                signal_request("kill", 600, 6000, SIGKILL),
                None,
            ),
            (
                "unknown namespace, none excluded",
                signal_request("open", 500, 5000, SIGKILL),
                None,
            ),
            ("reboot step", reboot_request("reboot"), None),
            (
                "no such policy",
                signal_request("nope", 100, 1000, SIGKILL),
                Some(R::UnknownPolicy),
            ),
            (
                "Observe",
                signal_request("observe", 100, 1000, SIGKILL),
                Some(R::PolicyNotEnforcing),
            ),
            (
                "DryRun",
                signal_request("dry", 100, 1000, SIGKILL),
                Some(R::PolicyNotEnforcing),
            ),
            (
                "other nodes",
                signal_request("elsewhere", 100, 1000, SIGKILL),
                Some(R::PolicyDoesNotSelectNode),
            ),
            (
                "undecodable minAge",
                signal_request("broken", 100, 1000, SIGKILL),
                Some(R::PolicyInvalid),
            ),
            (
                "no SignalParent step",
                signal_request("cordon", 100, 1000, SIGKILL),
                Some(R::StepNotInLadder),
            ),
            (
                "SIGKILL under a SIGCHLD ladder",
                signal_request("chld", 100, 1000, SIGKILL),
                Some(R::SignalNotInLadder),
            ),
            (
                "SIGTERM under a SIGKILL ladder",
                signal_request("kill", 100, 1000, SIGTERM),
                Some(R::SignalNotInLadder),
            ),
            (
                "no reboot step",
                reboot_request("kill"),
                Some(R::StepNotInLadder),
            ),
            (
                "not a zombie parent",
                signal_request("kill", 12345, 1, SIGKILL),
                Some(R::NotAZombieParent),
            ),
            (
                "pid reused",
                signal_request("kill", 100, 999, SIGKILL),
                Some(R::TargetChanged),
            ),
            (
                "zombies younger than minAge",
                signal_request("kill", 200, 2000, SIGKILL),
                Some(R::BelowPerParentThreshold),
            ),
            (
                "built-in protected",
                signal_request("kill", 300, 3000, SIGKILL),
                Some(R::ProtectedProcess),
            ),
            (
                "policy-protected",
                signal_request("guarded", 100, 1000, SIGKILL),
                Some(R::ProtectedProcess),
            ),
            (
                "kube-system",
                signal_request("kill", 400, 4000, SIGKILL),
                Some(R::ExcludedNamespace),
            ),
            (
                "namespace unknown",
                signal_request("kill", 500, 5000, SIGKILL),
                Some(R::NamespaceUnknown),
            ),
            (
                "reboot with a target",
                ActionRequest {
                    action: NodeAction::RequestReboot,
                    ..signal_request("reboot", 100, 1000, SIGKILL)
                },
                Some(R::MalformedRequest),
            ),
            (
                "signal without target",
                ActionRequest {
                    target: None,
                    ..signal_request("kill", 100, 1000, SIGKILL)
                },
                Some(R::MalformedRequest),
            ),
        ];
        for (what, req, want) in cases {
            assert_eq!(reason(&req, &policies, &f), want, "{what}");
        }
    }

    #[test]
    fn messages_never_disclose_the_real_start_time() {
        let policies = [enforce(
            "kill",
            serde_json::json!([{"action": "SignalParent", "signal": "SIGKILL"}]),
        )];
        let r = verify_with(
            &signal_request("kill", 100, 7, ParentSignal::SIGKILL),
            &policies,
            &facts(),
            &firing_everywhere(),
        )
        .expect_err("refused");
        assert_eq!(r.reason, ActionRefusal::TargetChanged);
        assert!(!r.message.contains("1000"), "{}", r.message);
        assert!(!r.message.contains("php-fpm"), "{}", r.message);
    }

    #[test]
    fn zombie_facts_group_by_parent_and_look_up_only_big_parents() {
        use crate::scan::procfs::{ProcessObs, ZombieObs};
        let mut obs = crate::scan::Observation {
            taken_at: std::time::Instant::now(),
            hostname: None,
            clock_ticks: 100,
            procs: Default::default(),
            node: Default::default(),
            cgroups: Vec::new(),
            pids: Default::default(),
            counters: Default::default(),
            duration: Default::default(),
        };
        let proc_ = |pid, comm: &str| ProcessObs {
            pid,
            ppid: 1,
            state: b'S',
            comm: comm.to_owned(),
            starttime: pid as u64 * 10,
            num_threads: 1,
            kernel_thread: false,
            fd_count: None,
            fd_soft_limit: None,
        };
        obs.procs.processes = vec![proc_(10, "big"), proc_(20, "small"), proc_(30, "none")];
        let zombie = |pid, ppid| ZombieObs {
            pid,
            ppid,
            comm: "z".to_owned(),
            starttime: 1,
            exec_start_ns: None,
            cpu: None,
        };
        obs.procs.zombies = vec![zombie(11, 10), zombie(12, 10), zombie(21, 20)];
        let mut looked_up = Vec::new();
        let f = ZombieFacts::collect(
            &obs,
            |z| f64::from(z.pid),
            Some(2),
            |pid, _| {
                looked_up.push(pid);
                Placement::Host
            },
        );
        assert_eq!(looked_up, [10]);
        assert_eq!(f.parents.len(), 2);
        assert_eq!(f.parents[&10].zombie_ages, [11.0, 12.0]);
        assert_eq!(f.parents[&10].start_time, 100);
        assert_eq!(f.parents[&20].placement, Placement::Unknown);
        assert!(!f.parents.contains_key(&30));
    }

    /// An Enforce policy selecting the node with `actions` (hungTasks and
    /// zombies detectors).
    fn enforce_actions(name: &str, actions: serde_json::Value) -> NodeHealthPolicy {
        policy(
            name,
            serde_json::json!({
                "mode": "Enforce",
                "nodeSelector": {"matchLabels": {"pool": "web"}},
                "detectors": {
                    "zombies": {"perParentThreshold": 5, "minAge": "30s"},
                    "hungTasks": {"threshold": 1, "minDuration": "2m"},
                },
                "actions": actions,
            }),
        )
    }

    /// Adversarial: a RequestReboot written into the report by anyone
    /// (a forged or stale request) for a node whose problem does not call
    /// for it is refused, however the policy's ladder reads.
    #[test]
    fn a_reboot_needs_its_ladder_firing_long_enough_and_in_scope() {
        use ActionRefusal as R;
        use Detector::*;
        use ProblemScope::{Node, Pod};
        let policies = vec![
            enforce_actions(
                "late",
                serde_json::json!({"zombies": [{"action": "RequestReboot", "after": "1h"}]}),
            ),
            enforce_actions(
                "evict-first",
                serde_json::json!({"hungTasks": [
                    {"action": "EvictPod"},
                    {"action": "RequestReboot", "after": "10m"},
                ]}),
            ),
            enforce_actions(
                "any",
                serde_json::json!({"hungTasks": [{"action": "RequestReboot", "scope": "Any"}]}),
            ),
            enforce_actions(
                "evict-after",
                serde_json::json!({"hungTasks": [
                    {"action": "RequestReboot"},
                    {"action": "EvictPod", "after": "5m"},
                ]}),
            ),
        ];
        let f = facts();
        let cases: Vec<(&str, &str, Vec<PolicyCondition>, Option<ActionRefusal>)> = vec![
            ("healthy node", "late", vec![], Some(R::NotFiring)),
            (
                "condition False",
                "late",
                vec![cond("late", Zombies, None, Some(Node))],
                Some(R::NotFiring),
            ),
            (
                "firing 10 min of the step's 1 h",
                "late",
                vec![cond("late", Zombies, Some(600), Some(Node))],
                Some(R::NotFiring),
            ),
            (
                "firing 59 min 30 s: within the tolerance",
                "late",
                vec![cond("late", Zombies, Some(3570), Some(Node))],
                None,
            ),
            (
                "firing 2 h, node-wide",
                "late",
                vec![cond("late", Zombies, Some(7200), Some(Node))],
                None,
            ),
            (
                "no scope (an older agent's condition) reads as Node",
                "late",
                vec![cond("late", Zombies, Some(7200), None)],
                None,
            ),
            (
                "another policy's condition",
                "late",
                vec![cond("evict-first", Zombies, Some(7200), Some(Node))],
                Some(R::NotFiring),
            ),
            (
                "another detector firing",
                "late",
                vec![cond("late", HungTasks, Some(7200), Some(Node))],
                Some(R::NotFiring),
            ),
            (
                "one pod's problem, no pod-level step",
                "late",
                vec![cond("late", Zombies, Some(7200), Some(Pod))],
                Some(R::OutOfScope),
            ),
            (
                "one pod's problem after EvictPod",
                "evict-first",
                vec![cond("evict-first", HungTasks, Some(7200), Some(Pod))],
                None,
            ),
            (
                "one pod's problem, EvictPod only after the reboot",
                "evict-after",
                vec![cond("evict-after", HungTasks, Some(7200), Some(Pod))],
                Some(R::OutOfScope),
            ),
            (
                "one pod's problem, step scope Any",
                "any",
                vec![cond("any", HungTasks, Some(60), Some(Pod))],
                None,
            ),
        ];
        for (what, name, conditions, want) in cases {
            let got = verify_with(&reboot_request(name), &policies, &f, &conditions);
            assert_eq!(
                got.as_ref().err().map(|r| r.reason),
                want,
                "{what}: {got:?}"
            );
            if let Err(r) = got {
                assert!(!r.message.is_empty(), "{what}");
            }
        }
    }

    fn arb_signal() -> impl Strategy<Value = ParentSignal> {
        prop_oneof![
            Just(ParentSignal::SIGCHLD),
            Just(ParentSignal::SIGTERM),
            Just(ParentSignal::SIGKILL)
        ]
    }

    fn arb_step() -> impl Strategy<Value = serde_json::Value> {
        prop_oneof![
            Just(serde_json::json!({"action": "SignalParent"})),
            arb_signal().prop_map(|s| serde_json::json!({"action": "SignalParent", "signal": s})),
            Just(serde_json::json!({"action": "Cordon"})),
            Just(serde_json::json!({"action": "Event"})),
            Just(serde_json::json!({"action": "RequestReboot"})),
        ]
    }

    fn arb_policy(name: &'static str) -> impl Strategy<Value = NodeHealthPolicy> {
        (
            prop_oneof![
                Just(PolicyMode::Observe),
                Just(PolicyMode::DryRun),
                Just(PolicyMode::Enforce)
            ],
            any::<bool>(),
            proptest::collection::vec(arb_step(), 0..4),
            1u32..10,
            0u64..120,
            proptest::collection::vec(prop_oneof![Just("shop"), Just("kube-system")], 0..2),
            proptest::collection::vec(prop_oneof![Just("php*"), Just("cron")], 0..2),
        )
            .prop_map(
                move |(mode, selects_node, ladder, per_parent, min_age, excl, prot)| {
                    let mut p = enforce(name, serde_json::Value::Array(ladder));
                    p.spec.mode = mode;
                    if !selects_node {
                        p.spec.node_selector = serde_json::from_value(
                            serde_json::json!({"matchLabels": {"pool": "batch"}}),
                        )
                        .expect("selector");
                    }
                    if let Some(z) = p.spec.detectors.zombies.as_mut() {
                        z.per_parent_threshold = per_parent;
                        z.min_age =
                            serde_json::from_value(serde_json::json!(format!("{min_age}s")))
                                .expect("duration");
                    }
                    p.spec.safety.exclude_namespaces =
                        excl.into_iter().map(str::to_owned).collect();
                    p.spec.safety.protected_processes =
                        prot.into_iter().map(str::to_owned).collect();
                    p
                },
            )
    }

    fn arb_request() -> impl Strategy<Value = ActionRequest> {
        let policy = prop_oneof![Just("a"), Just("b"), Just("c"), Just("missing")];
        let pid = prop_oneof![
            Just(100),
            Just(200),
            Just(300),
            Just(400),
            Just(500),
            Just(600),
            2i32..700
        ];
        let start = prop_oneof![
            Just(1000u64),
            Just(2000),
            Just(3000),
            Just(4000),
            Just(5000),
            Just(6000),
            1u64..7000
        ];
        (any::<bool>(), policy, pid, start, arb_signal(), any::<u8>()).prop_map(
            |(reboot, policy, pid, start, signal, shape)| {
                let mut r = if reboot {
                    reboot_request(policy)
                } else {
                    signal_request(policy, pid, start, signal)
                };
                // Now and then a malformed shape.
                if shape == 0 {
                    r.target = None;
                }
                if shape == 1 {
                    r.signal = Some(signal);
                }
                r
            },
        )
    }

    fn arb_reboot_ladder() -> impl Strategy<Value = Vec<serde_json::Value>> {
        let step = prop_oneof![
            Just(serde_json::json!({"action": "EvictPod"})),
            Just(serde_json::json!({"action": "EvictPod", "scope": "Node"})),
            Just(serde_json::json!({"action": "Event"})),
            Just(serde_json::json!({"action": "Cordon"})),
            (0u64..3, prop_oneof![Just(None), Just(Some("Node")), Just(Some("Any"))]).prop_map(
                |(hours, scope)| {
                    let mut s = serde_json::json!({"action": "RequestReboot", "after": format!("{hours}h")});
                    if let Some(scope) = scope {
                        s["scope"] = serde_json::json!(scope);
                    }
                    s
                }
            ),
        ];
        proptest::collection::vec(step, 1..4).prop_map(|mut steps| {
            // Ladders are in `after` order (the CRD's rule).
            steps.sort_by_key(|s| {
                s.get("after")
                    .and_then(serde_json::Value::as_str)
                    .and_then(|a| a.trim_end_matches('h').parse::<u64>().ok())
                    .unwrap_or(0)
            });
            steps
        })
    }

    fn arb_condition() -> impl Strategy<Value = PolicyCondition> {
        (
            prop_oneof![3 => Just("p"), 1 => Just("other")],
            prop_oneof![Just(Detector::Zombies), Just(Detector::HungTasks)],
            prop_oneof![1 => Just(None), 3 => (0i64..4 * 3600).prop_map(Some)],
            proptest::option::of(prop_oneof![
                Just(ProblemScope::Pod),
                Just(ProblemScope::Node)
            ]),
        )
            .prop_map(|(p, d, firing, scope)| cond(p, d, firing, scope))
    }

    proptest! {
        /// Whatever the request, an allowed one is exactly what an
        /// enforcing policy of this node would have asked for, and no
        /// refusal message names a start time or comm the request did not.
        #[test]
        fn only_requests_an_enforcing_policy_would_make_are_allowed(
            req in arb_request(),
            a in arb_policy("a"),
            b in arb_policy("b"),
            c in arb_policy("c"),
        ) {
            let policies = [a, b, c];
            let f = facts();
            match verify_with(&req, &policies, &f, &firing_everywhere()) {
                Ok(p) => {
                    prop_assert_eq!(p.metadata.name.as_deref(), Some(req.policy.as_str()));
                    prop_assert_eq!(p.spec.mode, PolicyMode::Enforce);
                    prop_assert!(p.spec.node_selector.as_ref()
                        .and_then(|s| s.match_labels.as_ref())
                        .is_some_and(|m| m.get("pool").map(String::as_str) == Some("web")));
                    let all_steps = || p.spec.actions.zombies.iter();
                    match (&req.target, req.signal) {
                        (Some(t), Some(sig)) => {
                            prop_assert_eq!(req.action, NodeAction::SignalParent);
                            prop_assert!(all_steps().any(|s| s.action == ActionKind::SignalParent
                                && s.signal.unwrap_or(ParentSignal::SIGCHLD) == sig));
                            let fact = f.parents.get(&t.pid);
                            prop_assert!(fact.is_some());
                            let fact = fact.expect("checked");
                            prop_assert_eq!(fact.start_time, t.start_time);
                            let z = p.spec.detectors.zombies.as_ref().expect("zombies");
                            let min_age = nodemedic_crds::parse_duration(z.min_age.as_str())
                                .expect("min age");
                            prop_assert!(fact.past(min_age) >= z.per_parent_threshold as usize);
                            prop_assert!(protected(&fact.comm, &p.spec.safety.protected_processes).is_none());
                            let excl = &p.spec.safety.exclude_namespaces;
                            match &fact.placement {
                                Placement::Host => {}
                                Placement::Pod { namespace: Some(ns) } => prop_assert!(!excl.contains(ns)),
                                _ => prop_assert!(excl.is_empty()),
                            }
                        }
                        (None, None) => {
                            prop_assert_eq!(req.action, NodeAction::RequestReboot);
                            prop_assert!(p.spec.actions.zombies.iter()
                                .any(|s| s.action == ActionKind::RequestReboot));
                        }
                        _ => prop_assert!(false, "a malformed request was allowed"),
                    }
                }
                Err(r) => {
                    if let Some(t) = &req.target
                        && let Some(fact) = f.parents.get(&t.pid)
                        && fact.start_time != t.start_time
                    {
                        let real = fact.start_time.to_string();
                        prop_assert!(!r.message.contains(&real), "{}", r.message);
                        prop_assert!(!r.message.contains(&fact.comm), "{}", r.message);
                    }
                    prop_assert!(!r.message.is_empty());
                }
            }
        }

        /// An allowed RequestReboot has, in the agent's own report, a
        /// firing condition of the same policy whose detector's ladder
        /// holds the step, firing for the step's `after` (less the
        /// tolerance), and reaching one pod's problem only with scope Any or
        /// a pod-level step before it. Nothing firing: never allowed.
        #[test]
        fn an_allowed_reboot_is_one_the_agents_own_report_calls_for(
            zombies in arb_reboot_ladder(),
            hung in arb_reboot_ladder(),
            conditions in proptest::collection::vec(arb_condition(), 0..4),
        ) {
            let p = enforce_actions("p", serde_json::json!({"zombies": zombies, "hungTasks": hung}));
            let policies = [p];
            let got = verify_with(&reboot_request("p"), &policies, &facts(), &conditions);
            let firing: Vec<&PolicyCondition> = conditions
                .iter()
                .filter(|c| c.policy == "p" && c.status == ConditionStatus::True)
                .collect();
            match got {
                Ok(_) => {
                    let justified = firing.iter().any(|c| {
                        let steps = policies[0].spec.actions.ladder(c.type_.detector());
                        let firing_for = Duration::from_secs(
                            (now().as_second() - c.last_transition_time.0.as_second()) as u64,
                        );
                        steps.iter().enumerate().any(|(i, s)| {
                            s.action == ActionKind::RequestReboot
                                && s.after().expect("after") <= firing_for + REBOOT_AFTER_TOLERANCE
                                && (c.scope != Some(ProblemScope::Pod)
                                    || s.effective_scope() == StepScope::Any
                                    || steps[..i].iter().any(|e| {
                                        e.action == ActionKind::EvictPod
                                            && e.effective_scope() != StepScope::Node
                                    }))
                        })
                    });
                    prop_assert!(justified, "allowed without a reason: {:?}", conditions);
                }
                Err(r) => {
                    prop_assert!(!r.message.is_empty());
                    if firing.is_empty() {
                        prop_assert!(
                            matches!(r.reason, ActionRefusal::NotFiring | ActionRefusal::StepNotInLadder),
                            "{:?}", r
                        );
                    }
                }
            }
        }
    }
}
