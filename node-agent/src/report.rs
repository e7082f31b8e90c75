//! Maps an assessment onto the API's `NodeHealthReport`, the one schema the
//! agent publishes and `scan --output json|yaml` prints.

use crate::detect::Assessment;
use crate::detect::finding::{DetectorKind, DetectorReport, Finding};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use nodemedic_crds::report::{
    CpuThrottlingFinding, FdLeakFinding, Findings, HungTaskFinding, LoadSummary,
    MAX_FINDINGS_PER_DETECTOR, NodeSummary, PolicyCondition, Pressure, PressureSummary, ProcessRef,
    ScanErrors, TaskCounts, Workload, ZombieFinding,
};
use nodemedic_crds::{NodeHealthReport, NodeHealthReportSpec, NodeHealthReportStatus};

fn clamp_u32(v: u64) -> u32 {
    u32::try_from(v).unwrap_or(u32::MAX)
}

fn workload(f: &Finding) -> Option<Workload> {
    let w = Workload {
        pod_uid: f.pod_uid.clone(),
        pod_namespace: f.pod_namespace.clone(),
        pod_name: f.pod_name.clone(),
        container: f.container.clone(),
        container_id: f.container_id.clone(),
        runtime: f.runtime.clone(),
    };
    (w != Workload::default()).then_some(w)
}

fn process(f: &Finding) -> Option<ProcessRef> {
    Some(ProcessRef {
        host_pid: f.host_pid?,
        ns_pid: f.ns_pid,
        comm: f.comm.clone().unwrap_or_default(),
        start_time: f.start_time.unwrap_or(0),
        workload: workload(f),
    })
}

fn secs(v: Option<f64>) -> u64 {
    // Saturating float-to-int conversion; durations are never negative.
    v.unwrap_or(0.0).max(0.0) as u64
}

fn condition_type(kind: DetectorKind) -> &'static str {
    match kind {
        DetectorKind::Zombies => "ZombiesDetected",
        DetectorKind::HungTasks => "HungTasksDetected",
        DetectorKind::FdLeak => "FdLeakDetected",
        DetectorKind::CpuThrottling => "CpuThrottlingDetected",
    }
}

/// "zombies(212 under php-fpm)"-style text for the worst offender.
fn problem_text(r: &DetectorReport) -> String {
    let worst = r.findings.iter().find(|f| f.exceeds);
    let who = worst.and_then(|f| {
        f.pod_name
            .clone()
            .or_else(|| f.comm.clone())
            .or_else(|| f.cgroup.clone())
    });
    match who {
        Some(who) => format!("{}({} at {})", r.detector.name(), r.value, who),
        None => format!("{}({})", r.detector.name(), r.value),
    }
}

fn pressure(p: Option<f64>, full: Option<f64>) -> Option<Pressure> {
    p.map(|some_avg10| Pressure {
        some_avg10,
        full_avg10: full,
    })
}

/// Builds the report object for `node` from one assessment. `policy` names
/// the policy whose thresholds were used (conditions are per policy).
pub fn to_report(a: &Assessment, node: &str, policy: &str, now: Time) -> NodeHealthReport {
    let s = &a.summary;
    let summary = NodeSummary {
        tasks: TaskCounts {
            processes: clamp_u32(s.processes),
            threads: clamp_u32(s.threads),
            running: clamp_u32(s.process_states.running),
            sleeping: clamp_u32(s.process_states.sleeping),
            uninterruptible: clamp_u32(s.tasks.disk_sleep),
            zombie: clamp_u32(s.process_states.zombie),
            stopped: clamp_u32(s.process_states.stopped),
            idle: clamp_u32(s.process_states.idle),
        },
        load: LoadSummary {
            one: s.load1.unwrap_or(0.0),
            five: s.load5.unwrap_or(0.0),
            fifteen: s.load15.unwrap_or(0.0),
            runnable: clamp_u32(s.runnable.unwrap_or(0)),
            blocked: clamp_u32(s.blocked.unwrap_or(0)),
            cpus: s.cpus.unwrap_or(0),
        },
        psi: {
            let p = PressureSummary {
                cpu: pressure(s.psi_cpu_some_avg10, None),
                memory: pressure(s.psi_memory_some_avg10, s.psi_memory_full_avg10),
                io: pressure(s.psi_io_some_avg10, s.psi_io_full_avg10),
            };
            (p != PressureSummary::default()).then_some(p)
        },
        file_handles_allocated: s.file_handles_allocated.unwrap_or(0),
        file_handles_max: s.file_handles_max.unwrap_or(0),
        hung_task_timeout_secs: s.hung_task_timeout_secs,
    };

    let mut findings = Findings::default();
    let mut conditions = Vec::new();
    let mut problems = Vec::new();
    for r in &a.detectors {
        if !r.enabled {
            continue;
        }
        let top = r.findings.iter().take(MAX_FINDINGS_PER_DETECTOR);
        match r.detector {
            DetectorKind::Zombies => {
                findings.zombies = top
                    .filter_map(|f| {
                        Some(ZombieFinding {
                            parent: process(f)?,
                            zombies: clamp_u32(f.zombies.unwrap_or(0)),
                            zombies_past_min_age: clamp_u32(f.zombies_past_min_age.unwrap_or(0)),
                            oldest_age_seconds: secs(f.oldest_zombie_age_seconds),
                            exceeded: f.exceeds,
                        })
                    })
                    .collect()
            }
            DetectorKind::HungTasks => {
                findings.hung_tasks = top
                    .filter_map(|f| {
                        Some(HungTaskFinding {
                            process: process(f)?,
                            tid: f.tid?,
                            thread_comm: f.thread_comm.clone().unwrap_or_default(),
                            blocked_seconds: secs(f.blocked_seconds),
                            wchan: f.wchan.clone(),
                            exceeded: f.exceeds,
                        })
                    })
                    .collect()
            }
            DetectorKind::FdLeak => {
                findings.fd_leak = top
                    .filter_map(|f| {
                        Some(FdLeakFinding {
                            process: process(f)?,
                            open_fds: f.open_fds.unwrap_or(0),
                            soft_limit: f.fd_soft_limit,
                            usage_ratio: f.fd_usage_ratio,
                            growth_per_minute: f.fd_growth_per_minute,
                            exceeded: f.exceeds,
                        })
                    })
                    .collect()
            }
            DetectorKind::CpuThrottling => {
                findings.cpu_throttling = top
                    .map(|f| CpuThrottlingFinding {
                        workload: workload(f),
                        cgroup: f.cgroup.clone().unwrap_or_default(),
                        quota_cores: f.quota_cores,
                        periods: f.periods.unwrap_or(0),
                        throttled_periods: f.throttled_periods.unwrap_or(0),
                        throttled_ratio: f.throttled_ratio.unwrap_or(0.0),
                        throttled_seconds: f.throttled_seconds.unwrap_or(0.0),
                        pressure_some_avg10: f.cpu_pressure_some_avg10,
                        exceeded: f.exceeds,
                    })
                    .collect()
            }
        }
        if r.firing {
            problems.push(problem_text(r));
        }
        conditions.push(PolicyCondition {
            policy: policy.to_owned(),
            type_: condition_type(r.detector).to_owned(),
            status: if r.firing { "True" } else { "False" }.to_owned(),
            reason: if r.firing {
                "ThresholdExceeded"
            } else if r.exceeded {
                "Pending"
            } else {
                "BelowThreshold"
            }
            .to_owned(),
            message: format!(
                "{} {} (threshold: {}); exceeded for {:.0}s",
                r.value, r.unit, r.threshold_text, r.exceeded_for_seconds
            ),
            last_transition_time: now.clone(),
        });
    }

    let status = NodeHealthReportStatus {
        last_scan_time: Some(now),
        scan_duration: Some(format!("{:.0}ms", a.scan_duration_seconds * 1000.0)),
        agent_version: Some(env!("CARGO_PKG_VERSION").to_owned()),
        healthy: !a.firing,
        problems: problems.join(", "),
        summary,
        findings,
        conditions,
        action_results: Vec::new(),
        scan_errors: ScanErrors {
            vanished: a.skipped.vanished,
            permission_denied: a.skipped.permission_denied,
            unparsable: a.skipped.unparsable,
            io_errors: a.skipped.io_errors,
            cgroups_truncated: a.skipped.cgroups_truncated,
        },
    };
    let mut report = NodeHealthReport::new(node, NodeHealthReportSpec::default());
    report.status = Some(status);
    report
}
