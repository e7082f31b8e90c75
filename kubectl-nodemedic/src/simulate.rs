//! `kubectl nodemedic simulate -f POLICY.yaml`: the operator's planner run
//! in process, read-only, on the live cluster as if the policy were applied
//! (or edited) now.

use std::time::Duration;

use k8s_openapi::jiff::Timestamp;
use nodemedic_crds::NodeHealthPolicy;
use nodemedic_operator::plan::Settings;
use nodemedic_operator::simulate::{self, Options, Projection, What, World};
use serde::Serialize;

use crate::cli::SimulateArgs;
use crate::error::Error;
use crate::render::{self, Cell, Table, Tone};

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SimulationView {
    pub policy: String,
    pub mode: String,
    pub applied: bool,
    pub from: String,
    pub until: String,
    pub writes: &'static str,
    pub selected: Vec<SelectedNode>,
    pub storm_limit: u32,
    pub timeline: Vec<Entry>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SelectedNode {
    pub node: String,
    pub report: &'static str,
    pub verdicts: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Entry {
    pub at: String,
    pub offset: String,
    pub node: String,
    pub detector: Option<String>,
    pub action: Option<String>,
    pub verdict: String,
    pub reason: Option<String>,
    pub message: String,
}

pub const WRITES_NOTHING: &str = "nothing was written to the cluster: this is a projection by the operator's own planner, run here";

/// Runs the projection.
pub fn run(
    policy: &NodeHealthPolicy,
    world: &World,
    args: &SimulateArgs,
    now: Timestamp,
) -> Result<Projection, Error> {
    simulate::project(
        policy,
        world,
        &Options {
            now,
            horizon: args.horizon,
            settings: Settings {
                eviction_timeout: args.eviction_timeout,
                drain_timeout: args.drain_timeout,
                request_ttl: args.request_ttl,
                resync: Duration::from_secs(300),
            },
            answer_within: args.agent_answer,
        },
    )
    .map_err(|e| Error::InvalidPolicy(e.to_string()))
}

pub fn view(p: &Projection) -> SimulationView {
    SimulationView {
        policy: p.policy.clone(),
        mode: format!("{:?}", p.mode),
        applied: p.applied,
        from: render::stamp(p.now),
        until: render::stamp(p.until),
        writes: WRITES_NOTHING,
        selected: p
            .nodes
            .iter()
            .map(|n| SelectedNode {
                node: n.node.clone(),
                report: if n.missing_report {
                    "missing"
                } else if n.stale {
                    "stale"
                } else {
                    "fresh"
                },
                verdicts: n
                    .predictions
                    .iter()
                    .map(|v| {
                        format!(
                            "{}: {} ({}){}",
                            v.detector.name(),
                            match v.fires_at {
                                Some(t) if t <= p.now => "firing".to_owned(),
                                Some(t) => format!("fires at {}", render::stamp(t)),
                                None => "does not fire".to_owned(),
                            },
                            v.basis.as_str(),
                            v.scope
                                .as_ref()
                                .map(|(s, c)| format!(
                                    ", scope {}{}",
                                    s.as_str(),
                                    c.as_ref().map(|c| format!(" {c}")).unwrap_or_default()
                                ))
                                .unwrap_or_default()
                        )
                    })
                    .collect(),
            })
            .collect(),
        storm_limit: p.storm_limit,
        timeline: p
            .timeline
            .iter()
            .map(|e| Entry {
                at: render::stamp(e.at),
                offset: render::offset(e.at, p.now),
                node: e.node.clone(),
                detector: e.detector.map(|d| d.name().to_owned()),
                action: e.what.action().map(|a| format!("{a:?}")),
                verdict: e.what.verdict(),
                reason: match &e.what {
                    What::Held(_, r) => Some(r.clone()),
                    _ => None,
                },
                message: e.message.clone(),
            })
            .collect(),
    }
}

pub fn render(v: &SimulationView, color: bool) -> String {
    let mut out = format!(
        "Simulation of policy {} ({}{}) from {} to {}\n{}.\n\n",
        v.policy,
        v.mode,
        if v.applied {
            ", an edit of the applied policy"
        } else {
            ", not applied"
        },
        v.from,
        v.until,
        v.writes
    );
    if v.selected.is_empty() {
        out.push_str("It selects no node.\n");
        return out;
    }
    out.push_str(&format!(
        "It selects {} node(s); maxUnhealthy allows {} unhealthy before node-level actions hold.\n",
        v.selected.len(),
        v.storm_limit
    ));
    let mut t = Table::new(&["NODE", "REPORT", "DETECTORS"]);
    for n in &v.selected {
        t.row(vec![
            n.node.clone().into(),
            Cell::new(
                n.report,
                if n.report == "fresh" {
                    Tone::Plain
                } else {
                    Tone::Warn
                },
            ),
            n.verdicts.join("; ").into(),
        ]);
    }
    out.push_str(&t.render(color));
    out.push('\n');
    if v.timeline.is_empty() {
        out.push_str("Nothing would happen while nothing changes.\n");
        return out;
    }
    let mut t = Table::new(&["WHEN", "AT", "NODE", "DETECTOR", "ACTION", "OUTCOME", "WHY"]);
    for e in &v.timeline {
        t.row(vec![
            e.offset.clone().into(),
            e.at.clone().into(),
            e.node.clone().into(),
            e.detector.clone().unwrap_or_else(|| "-".into()).into(),
            e.action.clone().unwrap_or_else(|| "-".into()).into(),
            Cell::new(
                e.verdict.clone(),
                match e.verdict.as_str() {
                    "Held" | "Skipped" => Tone::Warn,
                    "Failed" => Tone::Bad,
                    "Fires" => Tone::Plain,
                    _ => Tone::Good,
                },
            ),
            e.reason.clone().unwrap_or_else(|| e.message.clone()).into(),
        ]);
    }
    out.push_str(&t.render(color));
    out.push_str("\nAssumed: every problem found now persists, every action succeeds, agents answer within --agent-answer, other policies stay as they are. Verdicts marked \"estimated\" are computed from the findings the reports list (only the worst offenders, above the thresholds of the policies applied now).\n");
    out
}
