//! Facts shared by `status` and `explain`, computed from what was read:
//! policies as the operator validates them, nodes in progress, pauses, and
//! what the planner would do next (the projection of each applied policy).

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::Node;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use nodemedic_crds::pause::{Pause, PauseKind, pause_from_annotations};
use nodemedic_crds::remediation::Episode;
use nodemedic_crds::{NodeHealthPolicy, NodeRemediation};
use nodemedic_operator::plan::policy::PolicyView;
use nodemedic_operator::plan::{Settings, slots};
use nodemedic_operator::simulate::{self, Options, Projected, Projection, What, World};
use serde::Serialize;

/// How far ahead `status` and `explain` look for the next step.
pub const NEXT_HORIZON: Duration = Duration::from_secs(24 * 3600);

/// A pause as shown.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PauseView {
    pub kind: &'static str,
    pub name: String,
    pub reason: String,
    pub by: Option<String>,
    pub since: Option<String>,
    pub problem: Option<String>,
}

impl PauseView {
    pub fn of(kind: PauseKind, name: &str, p: &Pause) -> Self {
        Self {
            kind: kind.as_str(),
            name: name.to_owned(),
            reason: p.reason.clone(),
            by: p.by.clone(),
            since: p.since.map(crate::render::stamp),
            problem: p.problem.clone(),
        }
    }
}

/// A policy's pause, if any.
pub fn policy_pause(p: &NodeHealthPolicy) -> Option<PauseView> {
    pause_from_annotations(p.annotations())
        .map(|x| PauseView::of(PauseKind::Policy, &p.name_any(), &x))
}

/// A node's pause, if any.
pub fn node_pause(n: &Node) -> Option<PauseView> {
    pause_from_annotations(n.annotations())
        .map(|x| PauseView::of(PauseKind::Node, &n.name_any(), &x))
}

/// The open episodes of `policy` on a node.
pub fn episodes<'a>(
    ledger: Option<&'a NodeRemediation>,
    policy: &'a str,
) -> impl Iterator<Item = &'a Episode> {
    ledger
        .into_iter()
        .flat_map(|l| l.spec.episodes.iter())
        .filter(move |e| e.policy == policy)
}

/// Nodes where `policy` holds one of its maxConcurrentActions slots.
pub fn in_progress(world: &World, view: &PolicyView) -> Vec<String> {
    world
        .ledgers
        .iter()
        .filter(|l| {
            l.spec
                .episodes
                .iter()
                .any(|e| e.policy == view.name && slots::occupies_slot(e, view.ladder(e.detector)))
        })
        .map(|l| l.name_any())
        .collect()
}

/// Each valid policy's projection from now, by policy name; the invalid
/// ones with their error.
pub fn projections(world: &World, now: Timestamp) -> BTreeMap<String, Result<Projection, String>> {
    world
        .policies
        .iter()
        .map(|p| {
            let r = simulate::project(
                p,
                world,
                &Options {
                    now,
                    horizon: NEXT_HORIZON,
                    settings: Settings::default(),
                    answer_within: Duration::from_secs(30),
                },
            )
            .map_err(|e| e.to_string());
            (p.name_any(), r)
        })
        .collect()
}

/// The first thing the projection says happens on `node` at or after `now`
/// (a step or a hold), not counting the detector's own firing.
pub fn next_on<'a>(projection: &'a Projection, node: &str) -> Option<&'a Projected> {
    projection
        .timeline
        .iter()
        .find(|e| e.node == node && e.at >= projection.now && e.what != What::Fires)
}

/// Steps of `policy` on a node that wait on a hold now (from its ledger):
/// "Cordon held (StormActive)".
pub fn held_now(ledger: Option<&NodeRemediation>, policy: &str) -> Vec<String> {
    episodes(ledger, policy)
        .flat_map(|e| e.steps.iter())
        .filter(|s| s.phase == nodemedic_crds::remediation::StepPhase::Held)
        .map(|s| {
            format!(
                "{:?} held ({})",
                s.action,
                s.reason.as_deref().unwrap_or("?")
            )
        })
        .collect()
}
