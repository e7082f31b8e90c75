//! The scan thread: scans the node every interval on its own clock and
//! hands each scan's results to the async side.
//!
//! Why a thread of its own with its own clock: on a quiet node the agent's
//! cost beyond the scan is mostly wake-ups (about 0.1 ms each on a small
//! VM). A tokio interval costs the async thread several per tick (its timer
//! wheel wakes at each level on the way to a 10 s deadline), and handing the
//! scan to a blocking-pool thread and back costs two more, plus a new thread
//! whenever the pool's 10 s keep-alive runs out between scans. Here the scan
//! thread sleeps once per interval (one precise timed wait) and wakes the
//! async side once, with the results. A scan that blocks (a `/proc` read
//! behind a stuck task) blocks only this thread: the async side goes on
//! serving health, requests and the Lease.

use super::RunError;
use super::cluster::ClusterView;
use crate::act::verify::{Placement, ZombieFacts};
use crate::admin::Metrics;
use crate::detect::hysteresis::Published;
use crate::detect::pids::PidsAssessment;
use crate::detect::{Engine, PolicyAssessment};
use crate::scan::enrich::{Enrichment, enrich, enrich_pids};
use crate::scan::{Observation, ScanPlan, Scanner};
use k8s_openapi::jiff::Timestamp;
use nodemedic_crds::conditions::ConditionStatus;
use nodemedic_crds::report::PolicyCondition;
use nodemedic_crds::thresholds::{NodePolicies, SelectedPolicy};
use std::sync::Arc;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::{Duration, Instant};

/// A tick this late counts as missed: the next one is a full interval after
/// it, not at once (as tokio's `MissedTickBehavior::Delay`), so a node whose
/// scan takes longer than the interval is not scanned back to back.
const LATE: Duration = Duration::from_millis(5);

/// The scanner and the detection engine: what the scan thread owns.
pub(super) struct ScanWorker {
    pub scanner: Scanner,
    pub engine: Engine,
}

/// One scan's results.
pub(super) struct ScanOutput {
    pub observation: Observation,
    pub assessments: Vec<PolicyAssessment>,
    pub enrichment: Enrichment,
    /// Pid headroom of the node and its pods.
    pub pids: PidsAssessment,
    /// The zombie parents, for re-verifying SignalParent requests.
    pub zombie_facts: ZombieFacts,
    /// The latest adoption ([`ScanLoop::adopt`]) applied before this scan.
    pub adopted: u64,
}

impl ScanWorker {
    fn scan(&mut self, policies: &[SelectedPolicy], adopted: u64) -> ScanOutput {
        let observation = self.scanner.observe(&ScanPlan::for_policies(policies));
        let assessments = self.engine.assess(&observation, policies, Timestamp::now());
        let mut enrichment = enrich(&mut self.scanner, &assessments);
        enrich_pids(&mut self.scanner, &observation, &mut enrichment);
        let pids = self
            .engine
            .assess_pids(&observation, &enrichment.zombies_by_pod);
        let zombie_facts = self.zombie_facts(&observation, policies);
        ScanOutput {
            observation,
            assessments,
            enrichment,
            pids,
            zombie_facts,
            adopted,
        }
    }

    /// Every zombie parent with its zombies' ages (measured as the zombies
    /// detector measures them) and, for those big enough for some selecting
    /// policy's perParentThreshold, the pod namespace.
    fn zombie_facts(&mut self, obs: &Observation, policies: &[SelectedPolicy]) -> ZombieFacts {
        let lookup_from = policies
            .iter()
            .filter_map(|p| p.thresholds.zombies.as_ref())
            .map(|z| z.per_parent_threshold.max(1) as usize)
            .min();
        let history = self.engine.history();
        let scanner = &mut self.scanner;
        let mut counters = crate::scan::reader::ScanCounters::default();
        ZombieFacts::collect(
            obs,
            |z| {
                crate::detect::zombies::zombie_age(
                    obs,
                    history,
                    z.pid,
                    z.starttime,
                    z.exec_start_ns,
                    z.cpu,
                    obs.clock_ticks,
                )
                .0
            },
            lookup_from,
            |pid, start| {
                let d = scanner.details(pid, start, &mut counters);
                match d.attribution.pod_uid {
                    None => Placement::Host,
                    Some(_) => Placement::Pod {
                        namespace: d.pod_namespace,
                    },
                }
            },
        )
    }
}

/// Seeds the engine's hysteresis with published conditions, so firing
/// conditions keep their transition times across agents.
pub(super) fn adopt_conditions(
    engine: &mut Engine,
    conditions: &[PolicyCondition],
    now: Timestamp,
) {
    let mono = Instant::now();
    for c in conditions {
        engine.hysteresis_mut().adopt(
            &c.policy,
            c.type_.detector(),
            Published {
                firing: c.status == ConditionStatus::True,
                last_transition: c.last_transition_time.0,
                exceeded_since: c.exceeded_since.as_ref().map(|t| t.0),
            },
            mono,
            now,
        );
    }
}

/// The policies that select this node, read from the watch caches before
/// each scan; changes are logged once and counted.
pub(super) struct PolicySelection {
    view: ClusterView,
    metrics: Arc<Metrics>,
    /// For logging changes only.
    selected_names: Vec<String>,
    rejected_lines: Vec<String>,
}

impl PolicySelection {
    pub fn new(view: ClusterView, metrics: Arc<Metrics>) -> Self {
        Self {
            view,
            metrics,
            selected_names: Vec::new(),
            rejected_lines: Vec::new(),
        }
    }

    fn current(&mut self) -> Vec<SelectedPolicy> {
        let policies = self.view.policies();
        let np =
            NodePolicies::for_node(policies.iter().map(AsRef::as_ref), &self.view.node_labels());
        let names: Vec<String> = np.selected.iter().map(|p| p.name.clone()).collect();
        if names != self.selected_names {
            tracing::info!(policies = ?names, "policies selecting this node changed");
            self.selected_names = names;
        }
        let rejected: Vec<String> = np.rejected.iter().map(ToString::to_string).collect();
        if rejected != self.rejected_lines {
            for line in rejected.iter().filter(|l| !self.rejected_lines.contains(l)) {
                tracing::warn!(problem = %line, "a policy cannot be evaluated on this node; the others are");
            }
            self.rejected_lines = rejected;
        }
        self.metrics.policies.set(np.selected.len() as i64);
        self.metrics.policies_rejected.set(np.rejected.len() as i64);
        np.selected
    }
}

/// What the async side may tell the scan thread.
struct Adoption {
    seq: u64,
    conditions: Vec<PolicyCondition>,
}

/// The async side's handle on the scan thread. Dropping it stops the thread
/// at its next wait (a scan in progress finishes first; nothing joins it,
/// so a scan stuck in the kernel cannot hold up shutdown).
pub(super) struct ScanLoop {
    adoptions: mpsc::Sender<Adoption>,
    outputs: tokio::sync::mpsc::Receiver<ScanOutput>,
    last_adoption: u64,
}

impl ScanLoop {
    /// Starts the thread; its first scan begins at once.
    pub fn start(
        worker: ScanWorker,
        policies: PolicySelection,
        interval: Duration,
    ) -> Result<Self, RunError> {
        let (adoptions, adoption_rx) = mpsc::channel();
        // One in flight: a scan waits for the async side to take the last.
        let (tx, outputs) = tokio::sync::mpsc::channel(1);
        std::thread::Builder::new()
            .name("scan".into())
            .spawn(move || scan_thread(worker, policies, interval, &adoption_rx, &tx))
            .map_err(RunError::ScanThreadStart)?;
        Ok(Self {
            adoptions,
            outputs,
            last_adoption: 0,
        })
    }

    /// The next scan's results; `None` once the thread has ended (it ends
    /// only by panicking while this handle lives).
    pub async fn next(&mut self) -> Option<ScanOutput> {
        self.outputs.recv().await
    }

    /// Has the engine adopt `conditions` before its next scan. Returns the
    /// adoption's number: a [`ScanOutput::adopted`] at least this large was
    /// scanned after it.
    pub fn adopt(&mut self, conditions: Vec<PolicyCondition>) -> u64 {
        self.last_adoption += 1;
        // A send fails only when the thread has ended; `next` says so.
        let _ = self.adoptions.send(Adoption {
            seq: self.last_adoption,
            conditions,
        });
        self.last_adoption
    }
}

fn scan_thread(
    mut worker: ScanWorker,
    mut policies: PolicySelection,
    interval: Duration,
    adoptions: &mpsc::Receiver<Adoption>,
    outputs: &tokio::sync::mpsc::Sender<ScanOutput>,
) {
    let mut adopted = 0;
    let mut due = Instant::now();
    loop {
        // Wait for the tick, taking adoptions as they come; a dropped handle
        // ends the thread.
        loop {
            let wait = due.saturating_duration_since(Instant::now());
            let message = if wait.is_zero() {
                adoptions.try_recv().map_err(|e| match e {
                    mpsc::TryRecvError::Empty => RecvTimeoutError::Timeout,
                    mpsc::TryRecvError::Disconnected => RecvTimeoutError::Disconnected,
                })
            } else {
                adoptions.recv_timeout(wait)
            };
            match message {
                Ok(a) => {
                    // Logged by the async side once a scan shows it applied.
                    adopt_conditions(&mut worker.engine, &a.conditions, Timestamp::now());
                    adopted = a.seq;
                }
                Err(RecvTimeoutError::Timeout) => break,
                Err(RecvTimeoutError::Disconnected) => return,
            }
        }
        let started = Instant::now();
        due = if started > due + LATE {
            started + interval
        } else {
            due + interval
        };
        let selected = policies.current();
        let out = worker.scan(&selected, adopted);
        if outputs.blocking_send(out).is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scan::procfs::FdRecount;
    use kube::runtime::reflector;

    fn view() -> ClusterView {
        let (policies, _) = reflector::store();
        let (node, _) = reflector::store();
        let (report, _) = reflector::store();
        ClusterView {
            policies,
            node,
            report,
            report_changed: Arc::default(),
        }
    }

    /// A scan loop over this machine's real `/proc`, and the metrics it
    /// holds (their count of owners tells whether its thread still runs).
    fn start(interval: Duration) -> (ScanLoop, Arc<Metrics>) {
        start_on(std::path::Path::new("/"), interval)
    }

    fn start_on(host_root: &std::path::Path, interval: Duration) -> (ScanLoop, Arc<Metrics>) {
        let mut registry = prometheus_client::registry::Registry::default();
        let metrics = Arc::new(Metrics::register(&mut registry));
        let mut scanner = Scanner::new(host_root).expect("scanner on the host root's proc");
        scanner.set_fd_recount(FdRecount::default());
        let worker = ScanWorker {
            scanner,
            engine: Engine::with_pids_window(Duration::from_secs(60)),
        };
        let scans = ScanLoop::start(
            worker,
            PolicySelection::new(view(), metrics.clone()),
            interval,
        )
        .expect("start the scan thread");
        (scans, metrics)
    }

    #[tokio::test]
    async fn scans_at_once_then_every_interval_and_applies_adoptions_before_the_next_scan() {
        let interval = Duration::from_millis(300);
        let t0 = Instant::now();
        let (mut scans, _) = start(interval);
        let first = scans.next().await.expect("first scan");
        assert_eq!(first.adopted, 0);
        assert!(
            !first.observation.procs.processes.is_empty(),
            "a real /proc scan"
        );
        assert_eq!(scans.adopt(Vec::new()), 1);
        let second = scans.next().await.expect("second scan");
        assert!(
            t0.elapsed() >= interval,
            "the second scan waited for its tick: {:?}",
            t0.elapsed()
        );
        // The second scan may have started before the adoption was sent;
        // the one after it certainly did not.
        assert!(second.adopted <= 1);
        let third = scans.next().await.expect("third scan");
        assert_eq!(third.adopted, 1);
        assert!(t0.elapsed() >= interval * 2);
    }

    #[tokio::test]
    async fn dropping_the_handle_ends_the_thread_during_its_wait() {
        // An hour's interval: only the dropped handle can end the wait.
        let (mut scans, metrics) = start(Duration::from_secs(3600));
        scans.next().await.expect("first scan");
        assert_eq!(
            Arc::strong_count(&metrics),
            2,
            "the thread holds the metrics"
        );
        drop(scans);
        let deadline = Instant::now() + Duration::from_secs(30);
        while Arc::strong_count(&metrics) > 1 {
            assert!(
                Instant::now() < deadline,
                "the scan thread still waits an hour after its handle was dropped"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// A scan stuck in the kernel (here opening a FIFO nobody writes, as a
    /// `/proc` read behind a hung task stalls) holds up only the scan
    /// thread: the async side's timers run and adoptions are taken at once.
    #[tokio::test]
    async fn a_scan_stuck_in_the_kernel_holds_up_only_its_own_thread() {
        use rustix::fs::{FileType, Mode, OFlags};
        let root = tempfile::tempdir().expect("temp dir");
        let proc = root.path().join("proc");
        std::fs::create_dir(&proc).expect("proc dir");
        let loadavg = proc.join("loadavg");
        rustix::fs::mknodat(
            rustix::fs::CWD,
            &loadavg,
            FileType::Fifo,
            Mode::from_raw_mode(0o600),
            0,
        )
        .expect("mkfifo proc/loadavg");
        // The writer that ends the stall: at the test's word, or after 30 s
        // so that a stall of the async side fails the test instead of
        // hanging it.
        let (release, released) = mpsc::channel::<()>();
        let writer = std::thread::spawn(move || {
            let _ = released.recv_timeout(Duration::from_secs(30));
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                // ENXIO until the scan thread has the FIFO open for reading.
                match rustix::fs::open(
                    &loadavg,
                    OFlags::WRONLY | OFlags::NONBLOCK | OFlags::CLOEXEC,
                    Mode::empty(),
                ) {
                    Ok(fd) => {
                        rustix::io::write(&fd, b"0.50 0.40 0.30 2/345 6789\n")
                            .expect("write loadavg");
                        return true;
                    }
                    Err(_) if Instant::now() < deadline => {
                        std::thread::sleep(Duration::from_millis(10));
                    }
                    Err(_) => return false,
                }
            }
        });
        let (mut scans, _) = start_on(root.path(), Duration::from_secs(3600));
        // Without the test's word the writer waits 30 s: a timeout here means
        // the async side ran its timer while the scan was stuck.
        let stalled = tokio::time::timeout(Duration::from_millis(500), scans.next()).await;
        assert!(
            stalled.is_err(),
            "the scan finished while its FIFO had no writer, or the async side stalled with it"
        );
        assert_eq!(
            scans.adopt(Vec::new()),
            1,
            "an adoption is handed over during the stall"
        );
        release.send(()).expect("release the writer");
        assert!(
            writer.join().expect("writer thread"),
            "the scan thread never opened proc/loadavg"
        );
        let out = tokio::time::timeout(Duration::from_secs(30), scans.next())
            .await
            .expect("the scan ends once its read is answered")
            .expect("scan output");
        let load = out
            .observation
            .node
            .load
            .expect("loadavg read from the FIFO");
        assert_eq!(load.total_tasks, 345);
        assert_eq!(
            out.adopted, 0,
            "the adoption came during this scan; the next one applies it"
        );
    }
}
