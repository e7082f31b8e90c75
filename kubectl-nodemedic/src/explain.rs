//! `kubectl nodemedic explain NODE`: the node's story — what the agent
//! found (process, pod, container), per policy the episode and its steps,
//! every gate as it stands now, what happens next, and who owns the node's
//! cordon and taints.

use k8s_openapi::api::core::v1::Node;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use nodemedic_crds::conditions::policy_condition;
use nodemedic_crds::remediation::{OwnedTaint, TAINTED_BY_ANNOTATION};
use nodemedic_crds::report::{ProcessRef, Workload};
use nodemedic_crds::{NodeHealthReport, PolicyMode};
use nodemedic_operator::plan::facts::{self, Freshness};
use nodemedic_operator::plan::policy::PolicyView;
use nodemedic_operator::plan::{self, SIGNAL_WINDOW};
use nodemedic_operator::simulate::{What, World};
use serde::Serialize;

use crate::cluster::Leadership;
use crate::error::Error;
use crate::fleet::{self, PauseView};
use crate::render::{self, Tone};

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeStory {
    pub node: String,
    pub generated_at: String,
    pub operator: Leadership,
    pub report: ReportView,
    pub findings: Vec<FindingView>,
    pub waits: Vec<String>,
    pub policies: Vec<PolicyStory>,
    pub cordon: CordonView,
    pub taints: Vec<TaintView>,
    pub paused: Option<PauseView>,
    pub events: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ReportView {
    pub exists: bool,
    pub fresh: bool,
    pub last_scan: Option<String>,
    pub agent_version: Option<String>,
    pub problems: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FindingView {
    pub detector: &'static str,
    pub exceeded: bool,
    pub process: String,
    pub pod: Option<String>,
    pub container: Option<String>,
    pub detail: String,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PolicyStory {
    pub policy: String,
    pub mode: String,
    pub selected: bool,
    pub conditions: Vec<String>,
    pub episodes: Vec<EpisodeView>,
    pub gates: Vec<Gate>,
    pub next: Vec<String>,
    /// The policy status' recent actions on this node, newest first.
    pub recent_actions: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EpisodeView {
    pub detector: String,
    pub since: String,
    pub steps: Vec<String>,
    pub needs_attention_since: Option<String>,
}

/// A gate and its verdict now.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Gate {
    pub gate: &'static str,
    pub open: bool,
    pub detail: String,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CordonView {
    pub unschedulable: bool,
    /// Policies on whose behalf nodemedic cordoned (empty: not nodemedic's).
    pub owned_by: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TaintView {
    pub key: String,
    pub effect: String,
    /// Policies that own it; empty: someone else's taint.
    pub owned_by: Vec<String>,
}

fn who(p: &ProcessRef) -> (String, Option<String>, Option<String>) {
    let process = format!("pid {} ({})", p.host_pid, p.comm);
    let w: Option<&Workload> = p.workload.as_ref();
    let pod = w.and_then(|w| match (&w.pod_namespace, &w.pod_name, &w.pod_uid) {
        (Some(ns), Some(n), _) => Some(format!("{ns}/{n}")),
        (_, _, Some(uid)) => Some(format!("pod {uid}")),
        _ => None,
    });
    (process, pod, w.and_then(|w| w.container.clone()))
}

fn findings(report: &NodeHealthReport) -> (Vec<FindingView>, Vec<String>) {
    let Some(s) = report.status.as_ref() else {
        return (Vec::new(), Vec::new());
    };
    let f = &s.findings;
    let mut out = Vec::new();
    for z in &f.zombies {
        let (process, pod, container) = who(&z.parent);
        out.push(FindingView {
            detector: "zombies",
            exceeded: z.exceeded,
            process,
            pod,
            container,
            detail: format!(
                "{} zombies ({} past minAge), oldest {}",
                z.zombies,
                z.zombies_past_min_age,
                render::short(z.oldest_age_seconds as i64)
            ),
        });
    }
    for h in &f.hung_tasks {
        let (process, pod, container) = who(&h.process);
        out.push(FindingView {
            detector: "hungTasks",
            exceeded: h.exceeded,
            process,
            pod,
            container,
            detail: format!(
                "thread {} ({}) in D for {}",
                h.tid,
                h.thread_comm,
                render::short(h.blocked_seconds as i64)
            ),
        });
    }
    for x in &f.fd_leak {
        let (process, pod, container) = who(&x.process);
        out.push(FindingView {
            detector: "fdLeak",
            exceeded: x.exceeded,
            process,
            pod,
            container,
            detail: format!(
                "{} open fds of {}{}",
                x.open_fds,
                x.soft_limit
                    .map(|l| l.to_string())
                    .unwrap_or_else(|| "?".into()),
                x.exhaustion_eta_seconds
                    .map(|e| format!(", exhausted in {}", render::short(e as i64)))
                    .unwrap_or_default()
            ),
        });
    }
    for c in &f.cpu_throttling {
        let w = c.workload.as_ref();
        out.push(FindingView {
            detector: "cpuThrottling",
            exceeded: c.exceeded,
            process: c.cgroup.clone(),
            pod: w.and_then(|w| {
                Some(format!(
                    "{}/{}",
                    w.pod_namespace.as_ref()?,
                    w.pod_name.as_ref()?
                ))
            }),
            container: w.and_then(|w| w.container.clone()),
            detail: format!(
                "throttled {:.0}% of {} periods",
                c.throttled_ratio * 100.0,
                c.periods
            ),
        });
    }
    let waits = s
        .waiting_tasks
        .iter()
        .map(|w| {
            format!(
                "pid {} ({}) thread {} waits on pid {} ({}) for {}: {}{}",
                w.process.host_pid,
                w.process.comm,
                w.tid,
                w.waits_on.host_pid,
                w.waits_on.comm,
                render::short(w.blocked_seconds as i64),
                w.reason.name(),
                if w.waits_on_hung {
                    ", and that child is hung"
                } else {
                    ""
                }
            )
        })
        .collect();
    (out, waits)
}

/// Builds the story of `node`.
pub fn build(
    world: &World,
    node_name: &str,
    operator: Leadership,
    events: Result<Vec<k8s_openapi::api::events::v1::Event>, String>,
    now: Timestamp,
) -> Result<NodeStory, Error> {
    let node: &Node = world
        .nodes
        .iter()
        .find(|n| n.name_any() == node_name)
        .ok_or_else(|| Error::NotFound {
            kind: "Node".into(),
            name: node_name.into(),
            hint: " (kubectl get nodes)".into(),
        })?;
    let report = world.reports.iter().find(|r| r.name_any() == node_name);
    let ledger = world.ledgers.iter().find(|l| l.name_any() == node_name);
    let fresh = report.is_some_and(|r| {
        matches!(
            facts::freshness(r.status.as_ref(), None, now),
            Freshness::Fresh { .. }
        )
    });
    let (found, waits) = report.map(findings).unwrap_or_default();
    let projections = fleet::projections(world, now);
    let labels = node.metadata.labels.clone().unwrap_or_default();
    let node_paused = fleet::node_pause(node);

    let mut policies = Vec::new();
    for p in &world.policies {
        let name = p.name_any();
        let view = PolicyView::from_policy(p);
        let selected = view.as_ref().is_ok_and(|v| v.selects(&labels));
        let mentioned = facts::mentions(&name, report, ledger, Some(node));
        if !selected && !mentioned {
            continue;
        }
        let conditions = report
            .and_then(|r| r.status.as_ref())
            .map(|s| {
                s.conditions
                    .iter()
                    .filter(|c| c.policy == name)
                    .map(|c| {
                        format!(
                            "{:?}={:?} ({:?}) since {}{}{}",
                            c.type_,
                            c.status,
                            c.reason,
                            render::stamp(c.last_transition_time.0),
                            c.scope
                                .map(|s| format!(", scope {}", s.as_str()))
                                .unwrap_or_default(),
                            c.culprit
                                .as_ref()
                                .map(|p| format!(", culprit {p}"))
                                .unwrap_or_default()
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        let episodes = fleet::episodes(ledger, &name)
            .map(|e| EpisodeView {
                detector: e.detector.name().to_owned(),
                since: render::stamp(facts::ladder_start(e)),
                steps: e
                    .steps
                    .iter()
                    .map(|s| {
                        let mut line = format!(
                            "#{} {:?}: {:?} at {}",
                            s.index + 1,
                            s.action,
                            s.phase,
                            render::stamp(s.since.0)
                        );
                        if let Some(t) = &s.started_at {
                            line.push_str(&format!(", started {}", render::stamp(t.0)));
                        }
                        if let Some(r) = &s.reason {
                            line.push_str(&format!(", reason {r}"));
                        }
                        if let Some(t) = &s.target {
                            line.push_str(&format!(", target {t}"));
                        }
                        if let Some(m) = &s.message {
                            line.push_str(&format!(": {m}"));
                        }
                        line
                    })
                    .collect(),
                needs_attention_since: e.needs_attention_since.as_ref().map(|t| render::stamp(t.0)),
            })
            .collect();
        let gates = match &view {
            Ok(v) => gates(world, p, v, node, ledger, node_paused.as_ref(), now),
            Err(e) => vec![Gate {
                gate: "valid",
                open: false,
                detail: format!("the policy cannot be acted on: {e}"),
            }],
        };
        let next: Vec<String> = projections
            .get(&name)
            .and_then(|r| r.as_ref().ok())
            .map(|pr| {
                pr.timeline
                    .iter()
                    .filter(|e| e.node == node_name && e.at >= pr.now && e.what != What::Fires)
                    .take(5)
                    .map(|e| {
                        let what = match &e.what {
                            What::Step(a, o) => format!("{a:?}: {o:?}"),
                            What::Held(a, r) => format!("{a:?}: held ({r})"),
                            What::Fires => String::new(),
                        };
                        format!(
                            "{} ({}) {what}{}",
                            render::until(e.at, now),
                            render::stamp(e.at),
                            if e.message.is_empty() {
                                String::new()
                            } else {
                                format!(" — {}", e.message)
                            }
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        let next = if next.is_empty() {
            fleet::held_now(ledger, &name)
                .into_iter()
                .map(|h| format!("{h}: stays so until the hold lifts"))
                .collect()
        } else {
            next
        };
        let recent_actions = p
            .status
            .as_ref()
            .map(|st| {
                st.recent_actions
                    .iter()
                    .filter(|a| a.node == node_name)
                    .map(|a| {
                        format!(
                            "{} {} {:?}: {:?}{}",
                            render::stamp(a.time.0),
                            a.detector,
                            a.action,
                            a.outcome,
                            a.message
                                .as_deref()
                                .map(|m| format!(" — {m}"))
                                .unwrap_or_default()
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        policies.push(PolicyStory {
            recent_actions,
            policy: name,
            mode: format!("{:?}", p.spec.mode),
            selected,
            conditions,
            episodes,
            gates,
            next,
        });
    }

    let f = facts::NodeFacts::from_node(node);
    let ann = node.annotations();
    let owned_taints: Vec<OwnedTaint> = ann
        .get(TAINTED_BY_ANNOTATION)
        .and_then(|v| serde_json::from_str(v).ok())
        .unwrap_or_default();
    let taints = node
        .spec
        .as_ref()
        .and_then(|s| s.taints.clone())
        .unwrap_or_default()
        .into_iter()
        .map(|t| TaintView {
            owned_by: owned_taints
                .iter()
                .find(|o| o.key == t.key && facts::effect_str(o.effect) == t.effect)
                .map(|o| o.policies.clone())
                .unwrap_or_default(),
            key: t.key,
            effect: t.effect,
        })
        .collect();
    let events = match events {
        Ok(list) => list
            .iter()
            .rev()
            .take(10)
            .rev()
            .map(|e| {
                format!(
                    "{} {} {}: {}",
                    crate::cluster::event_time(e)
                        .map(render::stamp)
                        .unwrap_or_default(),
                    e.type_.as_deref().unwrap_or(""),
                    e.reason.as_deref().unwrap_or(""),
                    e.note.as_deref().unwrap_or("")
                )
            })
            .collect(),
        Err(note) => vec![format!("(Events not readable: {note})")],
    };
    Ok(NodeStory {
        node: node_name.to_owned(),
        generated_at: render::stamp(now),
        operator,
        report: ReportView {
            exists: report.is_some(),
            fresh,
            last_scan: report
                .and_then(|r| r.status.as_ref())
                .and_then(|s| s.last_scan_time.as_ref())
                .map(|t| render::stamp(t.0)),
            agent_version: report
                .and_then(|r| r.status.as_ref())
                .and_then(|s| s.agent_version.clone()),
            problems: report
                .and_then(|r| r.status.as_ref())
                .map(|s| s.problems.clone())
                .filter(|p| !p.is_empty()),
        },
        findings: found,
        waits,
        policies,
        cordon: CordonView {
            unschedulable: node
                .spec
                .as_ref()
                .and_then(|s| s.unschedulable)
                .unwrap_or(false),
            owned_by: f
                .cordoned_by
                .map(|o| o.into_iter().collect())
                .unwrap_or_default(),
        },
        taints,
        paused: node_paused,
        events,
    })
}

/// Every gate a step passes, as it stands now on this node.
fn gates(
    world: &World,
    policy: &nodemedic_crds::NodeHealthPolicy,
    view: &PolicyView,
    node: &Node,
    ledger: Option<&nodemedic_crds::NodeRemediation>,
    node_paused: Option<&PauseView>,
    now: Timestamp,
) -> Vec<Gate> {
    let status = policy.status.clone().unwrap_or_default();
    let mut out = Vec::new();
    out.push(Gate {
        gate: "mode",
        open: view.mode == PolicyMode::Enforce,
        detail: match view.mode {
            PolicyMode::Observe => "Observe: findings only, nothing is planned".into(),
            PolicyMode::DryRun => {
                "DryRun: steps are planned and recorded, none is carried out".into()
            }
            PolicyMode::Enforce => "Enforce: steps are carried out".into(),
        },
    });
    let storm = status
        .conditions
        .iter()
        .find(|c| c.type_ == policy_condition::STORM_ACTIVE);
    out.push(Gate {
        gate: "storm",
        open: storm.is_none_or(|c| c.status != "True"),
        detail: storm
            .map(|c| c.message.clone())
            .unwrap_or_else(|| "no status yet from the operator".into()),
    });
    let busy = fleet::in_progress(world, view);
    let here = busy.iter().any(|n| *n == node.name_any());
    out.push(Gate {
        gate: "concurrency",
        open: here || (busy.len() as u32) < view.safety.max_concurrent_actions,
        detail: format!(
            "{} of maxConcurrentActions {} in progress{}",
            busy.len(),
            view.safety.max_concurrent_actions,
            if busy.is_empty() {
                String::new()
            } else {
                format!(" ({})", busy.join(", "))
            }
        ),
    });
    let history = ledger
        .map(|l| l.spec.history.as_slice())
        .unwrap_or_default();
    let last = history
        .iter()
        .filter(|h| !h.planned && h.action.is_disruptive())
        .map(|h| h.at.0)
        .max();
    let cooldown_end = last.map(|l| plan::plus(l, view.safety.cooldown));
    out.push(Gate {
        gate: "cooldown",
        open: cooldown_end.is_none_or(|e| e <= now),
        detail: match (last, cooldown_end) {
            (Some(l), Some(e)) if e > now => format!(
                "last disruptive action {} ago; cooldown {} ends {}",
                render::age(l, now),
                render::short(view.safety.cooldown.as_secs() as i64),
                render::until(e, now)
            ),
            (Some(l), _) => format!(
                "last disruptive action {} ago, past the cooldown",
                render::age(l, now)
            ),
            _ => "no disruptive action recorded on this node".into(),
        },
    });
    let window = plan::minus(now, SIGNAL_WINDOW);
    let signals = history
        .iter()
        .filter(|h| {
            !h.planned
                && h.action == nodemedic_crds::policy::ActionKind::SignalParent
                && h.at.0 > window
        })
        .count() as u32;
    out.push(Gate {
        gate: "signalBudget",
        open: signals < view.safety.max_signals_per_hour,
        detail: format!(
            "{signals} of maxSignalsPerHour {} in the last hour",
            view.safety.max_signals_per_hour
        ),
    });
    let policy_paused = fleet::policy_pause(policy);
    out.push(Gate {
        gate: "pause",
        open: policy_paused.is_none() && node_paused.is_none(),
        detail: match (&policy_paused, node_paused) {
            (Some(p), _) | (None, Some(p)) => format!(
                "{} {} paused by {} since {}: {}",
                p.kind,
                p.name,
                p.by.as_deref().unwrap_or("?"),
                p.since.as_deref().unwrap_or("?"),
                p.reason
            ),
            (None, None) => "not paused".into(),
        },
    });
    out.push(Gate {
        gate: "exclusions",
        open: true,
        detail: format!(
            "pods in {} and pods annotated {} are never evicted; protected processes: {}",
            view.safety.exclude_namespaces.join(", "),
            view.safety.protect_annotation,
            if view.safety.protected_processes.is_empty() {
                "built-ins only".to_owned()
            } else {
                view.safety.protected_processes.join(", ")
            }
        ),
    });
    out
}

/// The text view.
pub fn render(s: &NodeStory, color: bool) -> String {
    let mut out = String::new();
    let h = |t: &str| render::paint(t, Tone::Plain, color);
    if let Some(problem) = &s.operator.problem {
        out.push_str(&render::paint(
            &format!("WARNING: {problem}\n\n"),
            Tone::Bad,
            color,
        ));
    }
    out.push_str(&format!("Node {}\n", s.node));
    if !s.report.exists {
        out.push_str(&render::paint(
            "  no NodeHealthReport: the agent has not reported from this node (is the DaemonSet's pod running there? kubectl get pods -A -o wide --field-selector spec.nodeName=NODE)\n",
            Tone::Bad,
            color,
        ));
    } else {
        out.push_str(&format!(
            "  report: {}, last scan {}, agent {}\n",
            if s.report.fresh {
                render::paint("fresh", Tone::Good, color)
            } else {
                render::paint("STALE (nothing is planned from it)", Tone::Bad, color)
            },
            s.report.last_scan.as_deref().unwrap_or("never"),
            s.report.agent_version.as_deref().unwrap_or("?")
        ));
    }
    if let Some(p) = &s.paused {
        out.push_str(&render::paint(
            &format!(
                "  PAUSED by {} since {}: {}\n",
                p.by.as_deref().unwrap_or("?"),
                p.since.as_deref().unwrap_or("?"),
                p.reason
            ),
            Tone::Warn,
            color,
        ));
    }
    out.push_str(&h("\nFindings\n"));
    if s.findings.is_empty() {
        out.push_str("  none\n");
    }
    for f in &s.findings {
        out.push_str(&format!(
            "  {} {}: {}{}{}: {}\n",
            if f.exceeded {
                render::paint("EXCEEDED", Tone::Bad, color)
            } else {
                "below   ".into()
            },
            f.detector,
            f.process,
            f.pod
                .as_ref()
                .map(|p| format!(", pod {p}"))
                .unwrap_or_else(|| ", host process".into()),
            f.container
                .as_ref()
                .map(|c| format!(", container {c}"))
                .unwrap_or_default(),
            f.detail
        ));
    }
    if !s.waits.is_empty() {
        out.push_str("  waits that are not hangs:\n");
        for w in &s.waits {
            out.push_str(&format!("    {w}\n"));
        }
    }
    for p in &s.policies {
        out.push_str(&format!(
            "\nPolicy {} ({}{})\n",
            p.policy,
            p.mode,
            if p.selected {
                ""
            } else {
                ", no longer selects the node"
            }
        ));
        for c in &p.conditions {
            out.push_str(&format!("  condition {c}\n"));
        }
        for e in &p.episodes {
            out.push_str(&format!("  episode {} since {}\n", e.detector, e.since));
            for st in &e.steps {
                out.push_str(&format!("    {st}\n"));
            }
            if let Some(t) = &e.needs_attention_since {
                out.push_str(&render::paint(
                    &format!("    ladder exhausted since {t}: nodemedic does nothing more here; a person must look\n"),
                    Tone::Bad,
                    color,
                ));
            }
        }
        out.push_str("  gates now:\n");
        for g in &p.gates {
            out.push_str(&format!(
                "    {:<13} {}  {}\n",
                g.gate,
                if g.open {
                    render::paint("open", Tone::Good, color)
                } else {
                    render::paint("HOLDS", Tone::Warn, color)
                },
                g.detail
            ));
        }
        if !p.recent_actions.is_empty() {
            out.push_str("  recent actions here (newest first):\n");
            for a in &p.recent_actions {
                out.push_str(&format!("    {a}\n"));
            }
        }
        if p.next.is_empty() {
            out.push_str("  next: nothing planned while nothing changes\n");
        } else {
            out.push_str("  next (if nothing changes):\n");
            for n in &p.next {
                out.push_str(&format!("    {n}\n"));
            }
        }
    }
    out.push_str("\nOwnership\n");
    out.push_str(&format!(
        "  cordon: {}\n",
        match (s.cordon.unschedulable, s.cordon.owned_by.is_empty()) {
            (false, _) => "schedulable".to_owned(),
            (true, true) => "cordoned by someone else (nodemedic never uncordons it)".to_owned(),
            (true, false) => format!("cordoned by nodemedic for {}", s.cordon.owned_by.join(", ")),
        }
    ));
    if s.taints.is_empty() {
        out.push_str("  taints: none\n");
    }
    for t in &s.taints {
        out.push_str(&format!(
            "  taint {}:{}: {}\n",
            t.key,
            t.effect,
            if t.owned_by.is_empty() {
                "someone else's".to_owned()
            } else {
                format!("nodemedic's, for {}", t.owned_by.join(", "))
            }
        ));
    }
    if !s.events.is_empty() {
        out.push_str("\nRecent Events\n");
        for e in &s.events {
            out.push_str(&format!("  {e}\n"));
        }
    }
    out
}
