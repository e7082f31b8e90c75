//! The report a node publishes stays small whatever the node looks like:
//! a generated observation of 100,000 processes — every detector drowning in
//! offenders, under several policies — still serializes under 64 KiB, with
//! what was left out counted rather than dropped silently.

use k8s_openapi::jiff::Timestamp;
use nodemedic_agent::detect::Engine;
use nodemedic_agent::report::build::{self, AgentMeta};
use nodemedic_agent::scan::Observation;
use nodemedic_agent::scan::attribution::Attribution;
use nodemedic_agent::scan::cgroup::{CgroupCpuObs, CgroupVersion};
use nodemedic_agent::scan::enrich::Enrichment;
use nodemedic_agent::scan::node::NodeObs;
use nodemedic_agent::scan::parse::{CpuQuota, CpuStat, Limit};
use nodemedic_agent::scan::pids::{NodePidsObs, PidsObs, PodPidsObs};
use nodemedic_agent::scan::procfs::{BlockedThread, ChildObs, ProcSnapshot, ProcessObs, ZombieObs};
use nodemedic_agent::scan::reader::ScanCounters;
use nodemedic_crds::SelectedPolicy;
use nodemedic_crds::policy::{
    CpuThrottlingDetector, Detectors, FdLeakDetector, HungTaskDetector, ZombieDetector,
};
use nodemedic_crds::thresholds::EffectiveThresholds;
use std::time::{Duration, Instant};

const PROCESSES: usize = 100_000;

const PODS: usize = 5_000;

fn pod_uid(i: usize) -> String {
    format!("{i:08x}-aaaa-4bbb-8ccc-dddddddddddd")
}

fn observation(at: Instant, throttled: u64, minute: u64) -> Observation {
    let mut procs = ProcSnapshot::default();
    for i in 0..PROCESSES {
        let pid = i as i32 + 2;
        let zombie = i % 4 == 3;
        procs.processes.push(ProcessObs {
            pid,
            // Every fourth process is a zombie of the one before it.
            ppid: if zombie { pid - 1 } else { 1 },
            state: if zombie { b'Z' } else { b'S' },
            comm: format!("worker-with-a-long-name-{i}"),
            starttime: 1000 + i as u64,
            num_threads: 1,
            kernel_thread: false,
            fd_count: (!zombie).then_some(900 + (i % 100) as u32),
            fd_soft_limit: Some(Limit::Value(1000)),
        });
        if zombie {
            procs.zombies.push(ZombieObs {
                pid,
                ppid: pid - 1,
                comm: format!("worker-with-a-long-name-{i}"),
                starttime: 1000 + i as u64,
                exec_start_ns: Some(0),
                cpu: None,
            });
        } else if i % 10 == 0 {
            procs.blocked.push(BlockedThread {
                tgid: pid,
                tid: pid,
                comm: format!("nfs-writer-{i}"),
                starttime: 1000 + i as u64,
                exec_start_ns: Some(0),
                switches: Some(1),
                wchan: Some("rpc_wait_bit_killable_with_a_long_kernel_symbol".to_owned()),
                cpu: None,
                // Every other one a vfork parent whose child runs on its
                // address space: a wait, listed apart and bounded too.
                children: if i % 20 == 0 {
                    vec![ChildObs {
                        pid: pid + 1_000_000,
                        comm: format!("vfork-child-{i}"),
                        starttime: 2000 + i as u64,
                        state: b'S',
                        fork_no_exec: true,
                        mm: Some((1 << 30, 4096)),
                        parent_mm: Some((1 << 30, 4096)),
                    }]
                } else {
                    Vec::new()
                },
            });
        }
    }
    procs.sched_now_ns = Some(3_600_000_000_000);
    let cgroups = (0..5000)
        .map(|i| CgroupCpuObs {
            version: CgroupVersion::V2,
            path: format!(
                "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{i:08}_aaaa_bbbb_cccc_dddddddddddd.slice/cri-containerd-{:064x}.scope",
                i
            ),
            quota: Some(CpuQuota {
                quota_us: 10_000,
                period_us: 100_000,
            }),
            stat: CpuStat {
                nr_periods: throttled * 2,
                nr_throttled: throttled,
                throttled_ns: throttled * 1_000_000,
            },
            pressure: None,
            attribution: Attribution::default(),
        })
        .collect();
    Observation {
        taken_at: at,
        hostname: Some("big-node".to_owned()),
        clock_ticks: 100,
        procs,
        node: NodeObs {
            file_handles_allocated: Some(950_000),
            file_handles_max: Some(1_000_000),
            ..NodeObs::default()
        },
        cgroups,
        // Every pod filling its pids.max with zombies, a pid a minute.
        pids: PidsObs {
            node: NodePidsObs {
                pid_max: Some(4_194_304),
                threads_max: Some(4_000_000),
                tasks: Some(PROCESSES as u64 + minute),
            },
            pods: (0..PODS)
                .map(|i| PodPidsObs {
                    version: CgroupVersion::V2,
                    path: format!(
                        "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{}.slice",
                        pod_uid(i).replace('-', "_")
                    ),
                    pod_uid: pod_uid(i),
                    current: 100 + i as u64 % 900 + minute,
                    max: Some(1024),
                })
                .collect(),
        },
        counters: ScanCounters {
            processes: PROCESSES as u64,
            threads: PROCESSES as u64,
            ..ScanCounters::default()
        },
        duration: Duration::from_millis(900),
    }
}

fn policy(name: &str, ratio: f64) -> SelectedPolicy {
    let detectors = Detectors {
        zombies: Some(ZombieDetector::default()),
        hung_tasks: Some(HungTaskDetector::default()),
        fd_leak: Some(FdLeakDetector {
            usage_ratio: ratio,
            ..FdLeakDetector::default()
        }),
        cpu_throttling: Some(CpuThrottlingDetector::default()),
    };
    let spec = nodemedic_crds::NodeHealthPolicySpec {
        node_selector: None,
        mode: Default::default(),
        detectors,
        actions: Default::default(),
        safety: Default::default(),
    };
    SelectedPolicy {
        name: name.to_owned(),
        thresholds: EffectiveThresholds::from_spec(&spec).expect("valid"),
        protected_processes: Vec::new(),
    }
}

#[test]
fn a_report_of_100000_processes_stays_under_64_kib() {
    let policies: Vec<SelectedPolicy> = (0..3)
        .map(|i| {
            policy(
                &format!("production-policy-number-{i}"),
                0.5 + 0.1 * f64::from(i),
            )
        })
        .collect();
    let mut engine = Engine::new();
    let t0 = Instant::now();
    // Nine minutes of samples, one a minute: past half the fit window and
    // enough samples (10) for a significant rise, so every growing series
    // has an ETA.
    for minute in 0..9 {
        engine.prime(
            &observation(t0 + Duration::from_secs(60 * minute), 0, minute),
            &policies,
        );
    }
    let obs = observation(t0 + Duration::from_secs(540), 10_000, 9);
    let assessments = engine.assess(&obs, &policies, Timestamp::now());
    let zombies_by_pod = (0..PODS).map(|i| (pod_uid(i), 50)).collect();
    let pids = engine.assess_pids(&obs, &zombies_by_pod);
    let status = build::status(
        &obs,
        &assessments,
        &Enrichment::default(),
        &pids,
        Timestamp::now(),
        AgentMeta {
            scan_interval: Some(Duration::from_secs(10)),
            heartbeat: Some(Duration::from_secs(300)),
        },
    );
    let report = build::report("big-node", status.clone());
    let bytes = serde_json::to_vec(&report).expect("serializes").len();
    assert!(bytes < 64 * 1024, "{bytes} bytes");
    let f = &status.findings;
    // Every detector found far more than it may list; what was cut is counted.
    assert_eq!(f.zombies.len(), 20);
    assert_eq!(f.hung_tasks.len(), 20);
    assert_eq!(f.fd_leak.len(), 20);
    assert_eq!(f.cpu_throttling.len(), 20);
    assert!(f.omitted.zombies >= 24_000, "{:?}", f.omitted);
    assert!(f.omitted.hung_tasks >= 3_000, "{:?}", f.omitted);
    assert_eq!(status.waiting_tasks.len(), 20);
    assert!(
        status.summary.waiting_tasks.is_some_and(|n| n >= 4_000),
        "{:?}",
        status.summary
    );
    assert!(f.omitted.fd_leak >= 70_000, "{:?}", f.omitted);
    assert!(f.omitted.cpu_throttling >= 4_980, "{:?}", f.omitted);
    assert!(f.node_file_handles.as_ref().is_some_and(|n| n.exceeded));
    assert_eq!(status.conditions.len(), 3 * 4);
    // fd ratios of 0.9 and more exceed 0.5, 0.6 and 0.7: all three policies.
    assert!(f.fd_leak.iter().all(|x| x.exceeded_under.len() == 3));
    let p = status.pids.as_ref().expect("pids");
    assert_eq!(p.pods.len(), 20);
    assert_eq!(p.pods_omitted, PODS as u32 - 20);
    assert!(
        p.pods
            .iter()
            .all(|x| x.exhaustion_eta_seconds.is_some() && x.zombie_share.is_some()),
        "{p:?}"
    );
    assert!(
        p.node
            .as_ref()
            .is_some_and(|n| n.exhaustion_eta_seconds.is_some())
    );
    eprintln!("report of {PROCESSES} processes: {bytes} bytes");
}
