//! `kubectl nodemedic status`: every policy and every unhealthy node in one
//! view.

use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use nodemedic_crds::conditions::policy_condition;
use nodemedic_crds::policy::ActionOutcome;
use nodemedic_operator::plan::policy::PolicyView;
use nodemedic_operator::simulate::{What, World};
use serde::Serialize;

use crate::cluster::Leadership;
use crate::fleet::{self, PauseView};
use crate::render::{self, Cell, Table, Tone};

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FleetStatus {
    pub generated_at: String,
    pub operator: Leadership,
    pub policies: Vec<PolicyRow>,
    pub unhealthy_nodes: Vec<NodeRow>,
    pub paused_nodes: Vec<PauseView>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PolicyRow {
    pub name: String,
    pub mode: String,
    pub ready: bool,
    /// Why the policy cannot be acted on.
    pub invalid: Option<String>,
    pub matched: u32,
    pub unhealthy: u32,
    pub storm: bool,
    pub in_progress: u32,
    pub degraded: bool,
    pub degraded_reason: Option<String>,
    pub paused: Option<PauseView>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeRow {
    pub node: String,
    pub policy: String,
    pub firing: Vec<String>,
    pub since: Option<String>,
    pub scope: Option<String>,
    pub culprit: Option<String>,
    /// The latest step taken or held: "#2 SignalParent Done".
    pub step: Option<String>,
    /// What the planner does next: "#3 EvictPod", "Held (Cooldown)".
    pub next: Option<String>,
    pub next_at: Option<String>,
    #[serde(skip)]
    next_time: Option<Timestamp>,
}

/// Builds the fleet status from what was read.
pub fn build(world: &World, operator: Leadership, now: Timestamp) -> FleetStatus {
    let projections = fleet::projections(world, now);
    let mut policies = Vec::new();
    let mut nodes = Vec::new();
    for p in &world.policies {
        let name = p.name_any();
        let status = p.status.clone().unwrap_or_default();
        let cond = |t: &str| status.conditions.iter().find(|c| c.type_ == t);
        let view = PolicyView::from_policy(p);
        let in_progress = view
            .as_ref()
            .map(|v| fleet::in_progress(world, v).len() as u32)
            .unwrap_or(0);
        let degraded = cond(policy_condition::DEGRADED);
        policies.push(PolicyRow {
            name: name.clone(),
            mode: format!("{:?}", p.spec.mode),
            ready: view.is_ok(),
            invalid: view.as_ref().err().map(|e| e.to_string()),
            matched: status.matched_nodes,
            unhealthy: status.unhealthy_nodes,
            storm: cond(policy_condition::STORM_ACTIVE).is_some_and(|c| c.status == "True"),
            in_progress,
            degraded: degraded.is_some_and(|c| c.status == "True"),
            degraded_reason: degraded
                .filter(|c| c.status == "True")
                .map(|c| c.reason.clone()),
            paused: fleet::policy_pause(p),
        });
        let projection = projections.get(&name).and_then(|r| r.as_ref().ok());
        for n in status.nodes.iter().filter(|n| !n.firing.is_empty()) {
            let ledger = world.ledgers.iter().find(|l| l.name_any() == n.node);
            let step = fleet::episodes(ledger, &name)
                .flat_map(|e| e.steps.iter().map(move |s| (e, s)))
                .max_by_key(|(_, s)| (s.since.0, s.index))
                .map(|(_, s)| {
                    let reason = s
                        .reason
                        .as_deref()
                        .map(|r| format!(" ({r})"))
                        .unwrap_or_default();
                    format!("#{} {:?} {:?}{reason}", s.index + 1, s.action, s.phase)
                });
            let next = projection.and_then(|pr| fleet::next_on(pr, &n.node));
            nodes.push(NodeRow {
                node: n.node.clone(),
                policy: name.clone(),
                firing: n.firing.clone(),
                since: n.since.as_ref().map(|t| render::stamp(t.0)),
                scope: n.scope.map(|s| s.as_str().to_owned()),
                culprit: n.culprit.clone(),
                step,
                next: next
                    .map(|e| match &e.what {
                        What::Step(a, ActionOutcome::Executed) => format!("{a:?}"),
                        What::Step(a, o) => format!("{a:?} ({o:?})"),
                        What::Held(a, r) => format!("{a:?} held ({r})"),
                        What::Fires => "fires".into(),
                    })
                    .or_else(|| fleet::held_now(ledger, &name).into_iter().next()),
                next_at: next.map(|e| render::stamp(e.at)),
                next_time: next.map(|e| e.at),
            });
        }
    }
    nodes.sort_by(|a, b| a.node.cmp(&b.node).then_with(|| a.policy.cmp(&b.policy)));
    FleetStatus {
        generated_at: render::stamp(now),
        operator,
        policies,
        unhealthy_nodes: nodes,
        paused_nodes: world.nodes.iter().filter_map(fleet::node_pause).collect(),
    }
}

/// The table view.
pub fn render(s: &FleetStatus, now: Timestamp, color: bool) -> String {
    let mut out = String::new();
    if let Some(problem) = &s.operator.problem {
        out.push_str(&render::paint(
            &format!("WARNING: {problem}"),
            Tone::Bad,
            color,
        ));
        out.push_str("\n\n");
    }
    if s.policies.is_empty() {
        out.push_str("No NodeHealthPolicy in this cluster: nothing is watched or remediated (kubectl apply -f examples/observe-only.yaml to start).\n");
        return out;
    }
    let yes_no = |b: bool, bad: Tone| {
        if b {
            Cell::new("yes", bad)
        } else {
            Cell::new("no", Tone::Dim)
        }
    };
    let mut t = Table::new(&[
        "POLICY",
        "MODE",
        "READY",
        "MATCHED",
        "UNHEALTHY",
        "STORM",
        "IN-PROGRESS",
        "DEGRADED",
        "PAUSED",
    ]);
    for p in &s.policies {
        t.row(vec![
            p.name.clone().into(),
            p.mode.clone().into(),
            if p.ready {
                Cell::new("yes", Tone::Good)
            } else {
                Cell::new("no", Tone::Bad)
            },
            p.matched.to_string().into(),
            Cell::new(
                p.unhealthy.to_string(),
                if p.unhealthy > 0 {
                    Tone::Warn
                } else {
                    Tone::Plain
                },
            ),
            yes_no(p.storm, Tone::Bad),
            p.in_progress.to_string().into(),
            match &p.degraded_reason {
                Some(r) => Cell::new(r.clone(), Tone::Warn),
                None => Cell::new("no", Tone::Dim),
            },
            match &p.paused {
                Some(x) => Cell::new(
                    format!("by {} ({})", x.by.as_deref().unwrap_or("?"), x.reason),
                    Tone::Warn,
                ),
                None => Cell::new("no", Tone::Dim),
            },
        ]);
    }
    out.push_str(&t.render(color));
    for p in s.policies.iter().filter(|p| p.invalid.is_some()) {
        out.push_str(&format!(
            "policy {} cannot be acted on: {}\n",
            p.name,
            p.invalid.as_deref().unwrap_or_default()
        ));
    }
    out.push('\n');
    if s.unhealthy_nodes.is_empty() {
        out.push_str("No unhealthy node.\n");
    } else {
        let mut t = Table::new(&[
            "NODE", "POLICY", "FIRING", "SCOPE", "CULPRIT", "STEP", "NEXT", "WHEN",
        ]);
        for n in &s.unhealthy_nodes {
            t.row(vec![
                n.node.clone().into(),
                n.policy.clone().into(),
                Cell::new(n.firing.join(","), Tone::Warn),
                n.scope.clone().unwrap_or_else(|| "-".into()).into(),
                n.culprit.clone().unwrap_or_else(|| "-".into()).into(),
                n.step.clone().unwrap_or_else(|| "-".into()).into(),
                n.next.clone().unwrap_or_else(|| "-".into()).into(),
                n.next_time
                    .map(|t| render::until(t, now))
                    .unwrap_or_else(|| "-".into())
                    .into(),
            ]);
        }
        out.push_str(&t.render(color));
    }
    for p in &s.paused_nodes {
        out.push_str(&format!(
            "\nnode {} is paused by {} ({}): no policy starts a step there\n",
            p.name,
            p.by.as_deref().unwrap_or("?"),
            p.reason
        ));
    }
    out
}
