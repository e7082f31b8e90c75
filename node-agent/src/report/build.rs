//! Building the `NodeHealthReport` status from one scan: pure. Every policy
//! that selects the node contributes its conditions; offenders are merged
//! across policies (each names the policies under which it exceeds) and
//! bounded, with what was cut counted in `findings.omitted`.

use crate::detect::PolicyAssessment;
use crate::detect::finding::{
    FdUser, HungThread, NodeFileHandles, Offenders, ProcessId, Severity, ThrottledCgroup, Verdict,
    ZombieParent,
};
use crate::detect::pids::{PidsAssessment, eta_words};
use crate::scan::enrich::Enrichment;
use crate::scan::{Observation, ProcessDetails};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use nodemedic_crds::Detector;
use nodemedic_crds::bounds::{KERNEL_LONG_MAX, MAX_COUNT, MAX_PATH, MAX_PODS, MAX_TASKS};
use nodemedic_crds::conditions::{ConditionReason, ConditionStatus};
use nodemedic_crds::duration::format_duration;
use nodemedic_crds::report::{
    CpuThrottlingFinding, FdLeakFinding, Findings, HungTaskFinding, LoadSummary,
    MAX_EXCEEDED_UNDER, MAX_FINDINGS_PER_DETECTOR, MAX_MESSAGE_LEN, NodeFileHandlesFinding,
    NodePids, NodeSummary, OmittedFindings, PidsStatus, PodPids, PolicyCondition, Pressure,
    PressureSummary, ProcessRef, ScanErrors, TaskCounts, WaitingTaskFinding, Workload,
    ZombieFinding,
};
use nodemedic_crds::{NodeHealthReport, NodeHealthReportSpec, NodeHealthReportStatus};
use std::collections::HashMap;
use std::hash::Hash;
use std::time::Duration;

/// Facts about the agent that go into every status it writes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AgentMeta {
    /// How often the agent scans (absent for a one-shot scan).
    pub scan_interval: Option<Duration>,
    /// The longest the agent goes without writing its report.
    pub heartbeat: Option<Duration>,
}

fn clamp_u32(v: u64) -> u32 {
    u32::try_from(v).unwrap_or(u32::MAX)
}

fn secs(v: f64) -> u64 {
    // Saturating float-to-int conversion; durations are never negative.
    v.max(0.0) as u64
}

/// Node-wide figures of one observation.
pub fn node_summary(obs: &Observation) -> NodeSummary {
    let n = &obs.node;
    let mut by_state = crate::scan::procfs::TaskStates::default();
    for p in &obs.procs.processes {
        by_state.add(p.state);
    }
    let pressure = |p: Option<crate::scan::parse::Pressure>, with_full: bool| {
        p.map(|p| Pressure {
            some_avg10: p.some_avg10,
            full_avg10: if with_full { p.full_avg10 } else { None },
        })
    };
    let psi = PressureSummary {
        cpu: pressure(n.psi_cpu, false),
        memory: pressure(n.psi_memory, true),
        io: pressure(n.psi_io, true),
    };
    NodeSummary {
        tasks: TaskCounts {
            processes: clamp_u32(obs.counters.processes),
            threads: clamp_u32(obs.counters.threads),
            running: clamp_u32(by_state.running),
            sleeping: clamp_u32(by_state.sleeping),
            uninterruptible: clamp_u32(obs.procs.tasks.disk_sleep),
            zombie: clamp_u32(by_state.zombie),
            stopped: clamp_u32(by_state.stopped),
            idle: clamp_u32(by_state.idle),
        },
        load: LoadSummary {
            one: n.load.map_or(0.0, |l| l.one),
            five: n.load.map_or(0.0, |l| l.five),
            fifteen: n.load.map_or(0.0, |l| l.fifteen),
            runnable: clamp_u32(n.procs_running.unwrap_or(0)),
            blocked: clamp_u32(n.procs_blocked.unwrap_or(0)),
            cpus: n.cpus.unwrap_or(0),
        },
        psi: (psi != PressureSummary::default()).then_some(psi),
        // Kernel longs above the API's bound (file-max is LONG_MAX, "no
        // limit", where systemd raises it) are reported as the bound.
        file_handles_allocated: n.file_handles_allocated.unwrap_or(0).min(KERNEL_LONG_MAX),
        file_handles_max: n.file_handles_max.unwrap_or(0).min(KERNEL_LONG_MAX),
        hung_task_timeout_secs: n.hung_task_timeout_secs.map(|s| s.min(KERNEL_LONG_MAX)),
        hung_task_detect_count: n.hung_task_detect_count.map(|c| c.min(KERNEL_LONG_MAX)),
        // From the assessments: see `hung_task_counts`.
        hung_tasks: None,
        waiting_tasks: None,
    }
}

/// The API's workload from enrichment details; `None` when nothing is known.
pub fn workload(d: Option<&ProcessDetails>) -> Option<Workload> {
    let d = d?;
    let w = Workload {
        pod_uid: d.attribution.pod_uid.clone(),
        pod_namespace: d.pod_namespace.clone(),
        pod_name: d.pod_name.clone(),
        container: d.container_name.clone(),
        container_id: d.attribution.container_id.clone(),
        runtime: d.attribution.runtime.map(|r| r.name().to_owned()),
    };
    (w != Workload::default()).then_some(w)
}

fn process_ref(p: &ProcessId, e: &Enrichment) -> ProcessRef {
    let details = e.process(p.key());
    ProcessRef {
        host_pid: p.pid,
        ns_pid: details.and_then(|d| d.nspid),
        comm: p.comm.clone(),
        start_time: p.start_time,
        workload: workload(details),
    }
}

/// One offender during the merge: its API form, how bad it is, a number to
/// order equally severe ones by, and the policies under which it exceeds.
struct Merged<T> {
    /// Always set once merged; an Option only while building.
    item: Option<T>,
    severity: Severity,
    rank: f64,
    exceeded_under: Vec<String>,
}

/// Merges the offenders of one detector across policies by `key`, keeping
/// the worst reading of each, then bounds the list.
fn merge<O, K: Eq + Hash, T>(
    per_policy: &[(&str, &[O])],
    key: impl Fn(&O) -> K,
    convert: impl Fn(&O) -> (T, Severity, f64, bool),
) -> (Vec<Done<T>>, u32) {
    let mut index: HashMap<K, usize> = HashMap::new();
    let mut merged: Vec<Merged<T>> = Vec::new();
    for (policy, offenders) in per_policy {
        for o in *offenders {
            let (item, severity, rank, exceeds) = convert(o);
            let at = *index.entry(key(o)).or_insert_with(|| {
                merged.push(Merged {
                    item: None,
                    severity,
                    rank,
                    exceeded_under: Vec::new(),
                });
                merged.len() - 1
            });
            let m = &mut merged[at];
            if m.item.is_none() || (severity, rank) > (m.severity, m.rank) {
                m.item = Some(item);
                m.severity = severity;
                m.rank = rank;
            }
            if exceeds {
                m.exceeded_under.push((*policy).to_owned());
            }
        }
    }
    // Stable: equally bad offenders keep the order the policies listed them in.
    merged.sort_by(|a, b| b.severity.cmp(&a.severity).then(b.rank.total_cmp(&a.rank)));
    let cut = merged.len().saturating_sub(MAX_FINDINGS_PER_DETECTOR);
    merged.truncate(MAX_FINDINGS_PER_DETECTOR);
    let done = merged
        .into_iter()
        .filter_map(|m| {
            let (exceeded_under, exceeded_under_omitted) = bound_names(m.exceeded_under);
            Some(Done {
                item: m.item?,
                exceeded_under,
                exceeded_under_omitted,
            })
        })
        .collect();
    (done, clamp_u32(cut as u64))
}

/// A merged offender and the policies under which it exceeds.
struct Done<T> {
    item: T,
    exceeded_under: Vec<String>,
    exceeded_under_omitted: u32,
}

/// Keeps the first `MAX_EXCEEDED_UNDER` policy names (the API's bound on
/// `exceededUnder`: one more and every status write is refused) and counts
/// the others.
fn bound_names(mut names: Vec<String>) -> (Vec<String>, u32) {
    let cut = names.len().saturating_sub(MAX_EXCEEDED_UNDER);
    names.truncate(MAX_EXCEEDED_UNDER);
    (
        names,
        clamp_u32(cut as u64).min(nodemedic_crds::bounds::MAX_POLICIES),
    )
}

/// The verdicts of one detector under every policy that configures it.
fn verdicts_of(assessments: &[PolicyAssessment], detector: Detector) -> Vec<(&str, &Verdict)> {
    assessments
        .iter()
        .flat_map(|a| {
            a.detectors
                .iter()
                .filter(move |d| d.verdict.detector == detector)
                .map(move |d| (a.policy.as_str(), &d.verdict))
        })
        .collect()
}

fn omitted_by_policies(verdicts: &[(&str, &Verdict)]) -> u32 {
    clamp_u32(verdicts.iter().map(|(_, v)| v.omitted).max().unwrap_or(0))
}

/// Top offenders per detector, merged over the policies.
pub fn findings(assessments: &[PolicyAssessment], e: &Enrichment) -> Findings {
    let mut out = Findings::default();
    let mut omitted = OmittedFindings::default();

    let verdicts = verdicts_of(assessments, Detector::Zombies);
    let lists: Vec<(&str, &[ZombieParent])> = verdicts
        .iter()
        .filter_map(|(p, v)| match &v.offenders {
            Offenders::Zombies(z) => Some((*p, z.as_slice())),
            _ => None,
        })
        .collect();
    let (merged, cut) = merge(
        &lists,
        |z: &ZombieParent| z.parent.key(),
        |z| {
            (
                ZombieFinding {
                    parent: process_ref(&z.parent, e),
                    zombies: z.zombies,
                    zombies_past_min_age: z.past_min_age,
                    oldest_age_seconds: secs(z.oldest_age_seconds),
                    exceeded: z.exceeds,
                    exceeded_under: Vec::new(),
                    exceeded_under_omitted: 0,
                },
                z.severity,
                f64::from(z.past_min_age) + f64::from(z.zombies) / 1e6,
                z.exceeds,
            )
        },
    );
    omitted.zombies = omitted_by_policies(&verdicts) + cut;
    out.zombies = merged
        .into_iter()
        .map(|m| ZombieFinding {
            exceeded: !m.exceeded_under.is_empty(),
            exceeded_under: m.exceeded_under,
            exceeded_under_omitted: m.exceeded_under_omitted,
            ..m.item
        })
        .collect();

    let verdicts = verdicts_of(assessments, Detector::HungTasks);
    let lists: Vec<(&str, &[HungThread])> = verdicts
        .iter()
        .filter_map(|(p, v)| match &v.offenders {
            Offenders::HungTasks { threads, .. } => Some((*p, threads.as_slice())),
            _ => None,
        })
        .collect();
    let (merged, cut) = merge(
        &lists,
        |h: &HungThread| (h.tid, h.process.start_time),
        |h| {
            (
                HungTaskFinding {
                    process: process_ref(&h.process, e),
                    tid: h.tid,
                    thread_comm: h.thread_comm.clone(),
                    blocked_seconds: secs(h.blocked_seconds),
                    wchan: h.wchan.clone(),
                    exceeded: h.exceeds,
                    exceeded_under: Vec::new(),
                    exceeded_under_omitted: 0,
                },
                h.severity,
                h.blocked_seconds,
                h.exceeds,
            )
        },
    );
    omitted.hung_tasks = omitted_by_policies(&verdicts) + cut;
    out.hung_tasks = merged
        .into_iter()
        .map(|m| HungTaskFinding {
            exceeded: !m.exceeded_under.is_empty(),
            exceeded_under: m.exceeded_under,
            exceeded_under_omitted: m.exceeded_under_omitted,
            ..m.item
        })
        .collect();

    let verdicts = verdicts_of(assessments, Detector::FdLeak);
    let mut nodes: Vec<(&str, &NodeFileHandles)> = Vec::new();
    let lists: Vec<(&str, &[FdUser])> = verdicts
        .iter()
        .filter_map(|(p, v)| match &v.offenders {
            Offenders::FdLeak { processes, node } => {
                if let Some(n) = node {
                    nodes.push((*p, n));
                }
                Some((*p, processes.as_slice()))
            }
            _ => None,
        })
        .collect();
    let (merged, cut) = merge(
        &lists,
        |f: &FdUser| f.process.key(),
        |f| {
            (
                FdLeakFinding {
                    process: process_ref(&f.process, e),
                    open_fds: f.open_fds,
                    soft_limit: f.soft_limit,
                    usage_ratio: f.usage_ratio,
                    growth_per_minute: f.growth_per_minute,
                    exhaustion_eta_seconds: f.exhaustion_eta_seconds.map(secs),
                    exceeded: f.exceeds,
                    exceeded_under: Vec::new(),
                    exceeded_under_omitted: 0,
                },
                f.severity,
                f.open_fds as f64,
                f.exceeds,
            )
        },
    );
    omitted.fd_leak = omitted_by_policies(&verdicts) + cut;
    out.fd_leak = merged
        .into_iter()
        .map(|m| FdLeakFinding {
            exceeded: !m.exceeded_under.is_empty(),
            exceeded_under: m.exceeded_under,
            exceeded_under_omitted: m.exceeded_under_omitted,
            ..m.item
        })
        .collect();
    out.node_file_handles = nodes.first().map(|(_, n)| {
        let (exceeded_under, exceeded_under_omitted) = bound_names(
            nodes
                .iter()
                .filter(|(_, n)| n.exceeds)
                .map(|(p, _)| (*p).to_owned())
                .collect(),
        );
        NodeFileHandlesFinding {
            allocated: n.allocated.min(KERNEL_LONG_MAX),
            max: n.max.min(KERNEL_LONG_MAX),
            ratio: n.ratio,
            exceeded: !exceeded_under.is_empty(),
            exceeded_under,
            exceeded_under_omitted,
        }
    });

    let verdicts = verdicts_of(assessments, Detector::CpuThrottling);
    let lists: Vec<(&str, &[ThrottledCgroup])> = verdicts
        .iter()
        .filter_map(|(p, v)| match &v.offenders {
            Offenders::CpuThrottling(c) => Some((*p, c.as_slice())),
            _ => None,
        })
        .collect();
    let (merged, cut) = merge(
        &lists,
        |c: &ThrottledCgroup| (c.version, c.cgroup.clone()),
        |c| {
            (
                CpuThrottlingFinding {
                    workload: workload(e.cgroup(&c.cgroup)),
                    cgroup: c.cgroup.clone(),
                    quota_cores: c.quota_cores,
                    periods: c.periods,
                    throttled_periods: c.throttled_periods,
                    throttled_ratio: c.throttled_ratio,
                    throttled_seconds: c.throttled_seconds,
                    pressure_some_avg10: c.pressure_some_avg10,
                    exceeded: c.exceeds,
                    exceeded_under: Vec::new(),
                    exceeded_under_omitted: 0,
                },
                c.severity,
                c.throttled_ratio,
                c.exceeds,
            )
        },
    );
    omitted.cpu_throttling = omitted_by_policies(&verdicts) + cut;
    out.cpu_throttling = merged
        .into_iter()
        .map(|m| CpuThrottlingFinding {
            exceeded: !m.exceeded_under.is_empty(),
            exceeded_under: m.exceeded_under,
            exceeded_under_omitted: m.exceeded_under_omitted,
            ..m.item
        })
        .collect();

    out.omitted = omitted;
    out
}

/// nodemedic's hung-thread count (the largest under the policies that
/// configure hungTasks) and the number of D-state threads that are waits,
/// not hangs; both `None` when no policy configures hungTasks.
pub fn hung_task_counts(assessments: &[PolicyAssessment]) -> (Option<u32>, Option<u32>) {
    let verdicts = verdicts_of(assessments, Detector::HungTasks);
    let hung = verdicts
        .iter()
        .map(|(_, v)| secs(v.value))
        .max()
        .map(clamp_u32);
    let waiting = verdicts
        .iter()
        .filter_map(|(_, v)| match &v.offenders {
            Offenders::HungTasks {
                waits,
                waits_omitted,
                ..
            } => Some(waits.len() as u64 + waits_omitted),
            _ => None,
        })
        .max()
        .map(clamp_u32);
    (hung, waiting)
}

/// The D-state threads that wait on another task (the same under every
/// policy: they come from the observation), bounded like the findings.
pub fn waiting_tasks(assessments: &[PolicyAssessment], e: &Enrichment) -> Vec<WaitingTaskFinding> {
    verdicts_of(assessments, Detector::HungTasks)
        .iter()
        .find_map(|(_, v)| match &v.offenders {
            Offenders::HungTasks { waits, .. } => Some(waits),
            _ => None,
        })
        .map(|waits| {
            waits
                .iter()
                .take(MAX_FINDINGS_PER_DETECTOR)
                .map(|w| WaitingTaskFinding {
                    process: process_ref(&w.process, e),
                    tid: w.tid,
                    thread_comm: w.thread_comm.clone(),
                    blocked_seconds: secs(w.blocked_seconds),
                    reason: w.reason,
                    waits_on: process_ref(&w.waits_on, e),
                    waits_on_hung: w.waits_on_hung,
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Who to name in a message: the worst exceeding offender.
pub fn worst_offender(v: &Verdict, e: &Enrichment) -> Option<String> {
    let pod_or = |key: (i32, u64), comm: &str| {
        e.process(key)
            .and_then(|d| {
                Some(format!(
                    "{}/{}",
                    d.pod_namespace.as_ref()?,
                    d.pod_name.as_ref()?
                ))
            })
            .map_or_else(|| comm.to_owned(), |pod| format!("{comm} in {pod}"))
    };
    match &v.offenders {
        Offenders::Zombies(z) => z
            .iter()
            .find(|z| z.exceeds)
            .map(|z| pod_or(z.parent.key(), &z.parent.comm)),
        Offenders::HungTasks { threads: h, .. } => h
            .iter()
            .find(|h| h.exceeds)
            .map(|h| pod_or(h.process.key(), &h.process.comm)),
        Offenders::FdLeak { processes, node } => processes
            .iter()
            .find(|f| f.exceeds)
            .map(|f| pod_or(f.process.key(), &f.process.comm))
            .or_else(|| {
                node.as_ref()
                    .filter(|n| n.exceeds)
                    .map(|_| "the node's file table".to_owned())
            }),
        Offenders::CpuThrottling(c) => c.iter().find(|c| c.exceeds).map(|c| {
            e.cgroup(&c.cgroup)
                .and_then(|d| {
                    Some(format!(
                        "{}/{}",
                        d.pod_namespace.as_ref()?,
                        d.pod_name.as_ref()?
                    ))
                })
                .unwrap_or_else(|| c.cgroup.clone())
        }),
    }
}

/// The pod of a process, "namespace/name" when known, else its UID.
fn pod_label(d: &ProcessDetails, uid: &str) -> String {
    match (&d.pod_namespace, &d.pod_name) {
        (Some(ns), Some(name)) => format!("{ns}/{name}"),
        _ => format!("uid {uid}"),
    }
}

/// "pod shop/php exhausts its pids in 12 minutes (80% zombies)": for a
/// zombies verdict, the first listed parent whose pod has a pids ETA, else
/// the node's ETA. `None` when nothing is running out.
pub fn pid_exhaustion_words(v: &Verdict, e: &Enrichment, pids: &PidsAssessment) -> Option<String> {
    let Offenders::Zombies(parents) = &v.offenders else {
        return None;
    };
    let share = |s: Option<f64>| {
        s.filter(|&s| s > 0.0)
            .map(|s| format!(" ({:.0}% zombies)", s * 100.0))
            .unwrap_or_default()
    };
    let pod = parents.iter().find_map(|z| {
        let d = e.process(z.parent.key())?;
        let uid = d.attribution.pod_uid.as_deref()?;
        let p = pids.pod(uid)?;
        let eta = p.eta_seconds?;
        Some(format!(
            "pod {} exhausts its pids {}{}",
            e.pod(uid)
                .map_or_else(|| pod_label(d, uid), |pd| pod_label(pd, uid)),
            eta_words(eta),
            share(p.zombie_share())
        ))
    });
    pod.or_else(|| {
        let n = pids.node.as_ref()?;
        Some(format!(
            "the node exhausts its pids {}{}",
            eta_words(n.eta_seconds?),
            share(n.zombie_share())
        ))
    })
}

/// `status.pids` from the assessment; `None` when nothing was readable.
pub fn pids_status(p: &PidsAssessment, e: &Enrichment) -> Option<PidsStatus> {
    if p.node.is_none() && p.pods.is_empty() {
        return None;
    }
    let finite = |v: Option<f64>| v.filter(|v| v.is_finite()).map(|v| v.clamp(-1e12, 1e12));
    Some(PidsStatus {
        node: p.node.as_ref().map(|n| NodePids {
            tasks: clamp_u32(n.tasks).min(MAX_TASKS),
            pid_max: n.pid_max.map(|m| clamp_u32(m).min(MAX_TASKS)),
            threads_max: n.threads_max.map(|m| m.min(MAX_COUNT)),
            limit: n.limit.min(MAX_COUNT),
            headroom: n.headroom.min(MAX_COUNT),
            zombie_share: n.zombie_share(),
            growth_per_minute: finite(n.growth_per_minute),
            exhaustion_eta_seconds: n.eta_seconds.map(|s| secs(s).min(MAX_COUNT)),
        }),
        pods: p
            .pods
            .iter()
            .map(|pod| {
                let named = e.pod(&pod.pod_uid);
                PodPids {
                    workload: Some(Workload {
                        pod_uid: Some(pod.pod_uid.clone()),
                        pod_namespace: named.and_then(|d| d.pod_namespace.clone()),
                        pod_name: named.and_then(|d| d.pod_name.clone()),
                        ..Workload::default()
                    }),
                    cgroup: pod.cgroup.chars().take(MAX_PATH as usize).collect(),
                    current: pod.current.min(MAX_COUNT),
                    limit: pod.limit.min(MAX_COUNT),
                    limit_source: pod.limit_source,
                    headroom: pod.headroom.min(MAX_COUNT),
                    zombies: clamp_u32(pod.zombies).min(MAX_TASKS),
                    zombie_share: pod.zombie_share(),
                    growth_per_minute: finite(pod.growth_per_minute),
                    exhaustion_eta_seconds: pod.eta_seconds.map(|s| secs(s).min(MAX_COUNT)),
                }
            })
            .collect(),
        pods_omitted: clamp_u32(p.pods_omitted).min(MAX_PODS),
    })
}

/// A number as people read it: integers without a fraction.
pub fn trim_num(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{v:.0}")
    } else {
        format!("{v:.2}")
    }
}

/// One condition per (policy, detector).
pub fn conditions(
    assessments: &[PolicyAssessment],
    e: &Enrichment,
    pids: &PidsAssessment,
) -> Vec<PolicyCondition> {
    let mut out = Vec::new();
    for a in assessments {
        for d in &a.detectors {
            let v = &d.verdict;
            let mut message = format!(
                "{} {} (threshold: {})",
                trim_num(v.value),
                v.unit,
                v.threshold_text
            );
            if let Some(who) = worst_offender(v, e) {
                message.push_str(&format!("; worst: {who}"));
            }
            if let Some(words) = pid_exhaustion_words(v, e, pids) {
                message.push_str(&format!("; {words}"));
            }
            if d.hold.exceeded {
                message.push_str(&format!(
                    "; exceeded for {} (for: {})",
                    format_duration(Duration::from_secs(d.hold.exceeded_for.as_secs())),
                    format_duration(d.for_duration)
                ));
            }
            let scope = super::scope::scope_of(v, e);
            if let Some((s, culprit)) = &scope {
                message.push_str(&match culprit {
                    Some(pod) => format!("; scope: {} {pod}", s.as_str()),
                    None => format!("; scope: {}", s.as_str()),
                });
            }
            let mut message: String = message.chars().take(MAX_MESSAGE_LEN).collect();
            message.shrink_to_fit();
            let (scope, culprit) = scope.map_or((None, None), |(s, c)| (Some(s), c));
            out.push(PolicyCondition {
                policy: a.policy.clone(),
                type_: v.detector.condition_type(),
                status: ConditionStatus::from_bool(d.hold.firing),
                reason: ConditionReason::of(d.hold.firing, d.hold.exceeded),
                message,
                last_transition_time: Time(d.hold.last_transition),
                exceeded_since: d.hold.exceeded_since.map(Time),
                scope,
                culprit,
            });
        }
    }
    // The API bounds the list (64): with more (policy, detector) pairs than
    // that, the firing ones are kept, then the pending ones.
    if out.len() > MAX_CONDITIONS {
        out.sort_by_key(|c| match (c.status, c.reason) {
            (ConditionStatus::True, _) => 0,
            (_, ConditionReason::Pending) => 1,
            _ => 2,
        });
        tracing::warn!(
            conditions = out.len(),
            kept = MAX_CONDITIONS,
            "more (policy, detector) pairs select this node than a report can hold"
        );
        out.truncate(MAX_CONDITIONS);
    }
    out
}

/// The API's bound on `status.conditions`.
pub const MAX_CONDITIONS: usize = 64;

/// "zombies(62 at php-fpm in shop/php-7d9f)" per firing detector.
pub fn problems(assessments: &[PolicyAssessment], e: &Enrichment, pids: &PidsAssessment) -> String {
    let mut seen = Vec::new();
    let mut parts = Vec::new();
    for a in assessments {
        for d in a.detectors.iter().filter(|d| d.hold.firing) {
            let v = &d.verdict;
            if seen.contains(&v.detector) {
                continue;
            }
            seen.push(v.detector);
            let eta = pid_exhaustion_words(v, e, pids)
                .map(|w| format!("; {w}"))
                .unwrap_or_default();
            parts.push(match worst_offender(v, e) {
                Some(who) => format!("{}({} at {who}{eta})", v.detector, trim_num(v.value)),
                None => format!("{}({}{eta})", v.detector, trim_num(v.value)),
            });
        }
    }
    parts.join(", ")
}

/// The status the agent publishes for one scan (without action results,
/// which the agent's action executor owns).
pub fn status(
    obs: &Observation,
    assessments: &[PolicyAssessment],
    e: &Enrichment,
    pids: &PidsAssessment,
    now: Timestamp,
    meta: AgentMeta,
) -> NodeHealthReportStatus {
    let c = &obs.counters;
    let mut summary = node_summary(obs);
    (summary.hung_tasks, summary.waiting_tasks) = hung_task_counts(assessments);
    NodeHealthReportStatus {
        last_scan_time: Some(Time(now)),
        scan_duration: Some(format!("{}ms", obs.duration.as_millis())),
        agent_version: Some(env!("CARGO_PKG_VERSION").to_owned()),
        scan_interval: meta.scan_interval.map(format_duration),
        heartbeat_interval: meta.heartbeat.map(format_duration),
        healthy: !assessments.iter().any(PolicyAssessment::firing),
        problems: problems(assessments, e, pids),
        summary,
        findings: findings(assessments, e),
        waiting_tasks: waiting_tasks(assessments, e),
        conditions: conditions(assessments, e, pids),
        action_results: Vec::new(),
        pids: pids_status(pids, e),
        scan_errors: ScanErrors {
            vanished: c.vanished + e.counters.vanished,
            permission_denied: c.permission_denied + e.counters.permission_denied,
            unparsable: c.unparsable + e.counters.unparsable,
            io_errors: c.io_errors + e.counters.io_errors,
            cgroups_truncated: c.cgroups_truncated,
        },
    }
}

/// A whole report object named after the node.
pub fn report(node: &str, status: NodeHealthReportStatus) -> NodeHealthReport {
    let mut r = NodeHealthReport::new(node, NodeHealthReportSpec::default());
    r.status = Some(status);
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exceeded_under_is_bounded_and_counts_what_it_leaves_out() {
        let names: Vec<String> = (0..65).map(|i| format!("p{i:02}")).collect();
        let (kept, omitted) = bound_names(names);
        assert_eq!(kept.len(), MAX_EXCEEDED_UNDER);
        assert_eq!(kept.first().map(String::as_str), Some("p00"));
        assert_eq!(omitted, 1);
        let (kept, omitted) = bound_names(vec!["a".to_owned()]);
        assert_eq!((kept, omitted), (vec!["a".to_owned()], 0));
    }
}
