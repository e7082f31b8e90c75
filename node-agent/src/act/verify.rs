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
use nodemedic_crds::policy::{ActionKind, ActionStep, NodeHealthPolicy, ParentSignal, PolicyMode};
use nodemedic_crds::report::{ActionRefusal, ActionRequest, NodeAction};
use nodemedic_crds::selector::selects;
use nodemedic_crds::thresholds::SelectedPolicy;
use std::collections::{BTreeMap, HashMap};

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
    node_labels: &BTreeMap<String, String>,
    facts: &ZombieFacts,
    protected: impl Fn(&str, &[String]) -> Option<String>,
) -> Result<&'p NodeHealthPolicy, Refusal> {
    use ActionRefusal as R;
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
        _ => {
            // RequestReboot: any ladder of the policy must hold the step.
            let has = [
                &ladders.zombies,
                &ladders.hung_tasks,
                &ladders.fd_leak,
                &ladders.cpu_throttling,
            ]
            .iter()
            .any(|l| l.iter().any(|s| s.action == ActionKind::RequestReboot));
            return if has {
                Ok(policy)
            } else {
                Err(Refusal::new(
                    R::StepNotInLadder,
                    format!("policy {name:?} has no RequestReboot step"),
                ))
            };
        }
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

    fn reason(
        req: &ActionRequest,
        policies: &[NodeHealthPolicy],
        facts: &ZombieFacts,
    ) -> Option<ActionRefusal> {
        verify(req, policies, &labels(), facts, protected)
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
        let r = verify(
            &signal_request("kill", 100, 7, ParentSignal::SIGKILL),
            &policies,
            &labels(),
            &facts(),
            protected,
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
            match verify(&req, &policies, &labels(), &f, protected) {
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
    }
}
