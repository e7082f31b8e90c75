//! The agent's admin endpoint: Prometheus metrics (`/metrics`), liveness
//! (`/livez`: a scan finished within three intervals) and readiness
//! (`/readyz`: the first scan is done and the first report written).

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use nodemedic_crds::Detector;
use nodemedic_crds::report::{ActionRefusal, ActionResultOutcome, NodeAction};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabel {
    pub state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PolicyDetector {
    pub policy: String,
    pub detector: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    pub kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WriteLabels {
    /// `ok` or the error's reason (`unavailable`, `conflict`, `forbidden`, ...).
    pub result: &'static str,
    /// Why the write happened: `create`, `change`, `heartbeat`, `action`.
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ActionLabels {
    pub action: &'static str,
    pub outcome: &'static str,
    /// Why it was not carried out (`ActionRefusal`), `none` when it was.
    pub reason: &'static str,
}

/// One process near its fd limit. `pod_namespace`/`pod_name` (not
/// `namespace`/`pod`, which the scrape sets to the agent's own pod).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProcessLabels {
    pub pod_namespace: String,
    pub pod_name: String,
    pub comm: String,
    pub pid: String,
}

/// One pod's pids cgroup; `pod_name` is the pod UID when the name is unknown.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PodLabels {
    pub pod_namespace: String,
    pub pod_name: String,
}

/// Processes and pods exported per scan in the exhaustion metrics, soonest
/// exhaustion first (bounds their cardinality).
pub const EXHAUSTION_SERIES: usize = 5;

/// Every metric the agent exports (names documented in docs/agent.md).
#[derive(Debug)]
pub struct Metrics {
    pub scan_duration: Histogram,
    pub scans: Counter,
    pub tasks: Family<StateLabel, Gauge>,
    pub findings: Family<PolicyDetector, Gauge>,
    pub firing: Family<PolicyDetector, Gauge>,
    pub policies: Gauge,
    pub policies_rejected: Gauge,
    pub scan_errors: Family<KindLabel, Counter>,
    pub report_writes: Family<WriteLabels, Counter>,
    pub actions: Family<ActionLabels, Counter>,
    pub last_report: Gauge<f64, std::sync::atomic::AtomicU64>,
    pub undecodable: Family<KindLabel, Gauge>,
    pub node_lease_held: Gauge,
    pub node_lease_writes: Counter,
    pub fd_eta: Family<ProcessLabels, Gauge<f64, AtomicU64>>,
    pub node_pids_limit: Gauge,
    pub node_pids_headroom: Gauge,
    pub node_pids_eta: Family<NoLabels, Gauge<f64, AtomicU64>>,
    pub pod_pids_headroom: Family<PodLabels, Gauge>,
    pub pod_pids_eta: Family<PodLabels, Gauge<f64, AtomicU64>>,
    pub pod_pids_zombie_ratio: Family<PodLabels, Gauge<f64, AtomicU64>>,
}

/// A family with no labels: its one series exists only while it has a value.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct NoLabels {}

impl Metrics {
    /// Creates the metrics and registers them in `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self {
            // 1 ms .. ~4 s
            scan_duration: Histogram::new(exponential_buckets(0.001, 2.0, 13)),
            scans: Counter::default(),
            tasks: Family::default(),
            findings: Family::default(),
            firing: Family::default(),
            policies: Gauge::default(),
            policies_rejected: Gauge::default(),
            scan_errors: Family::default(),
            report_writes: Family::default(),
            actions: Family::default(),
            last_report: Gauge::default(),
            undecodable: Family::default(),
            node_lease_held: Gauge::default(),
            node_lease_writes: Counter::default(),
            fd_eta: Family::default(),
            node_pids_limit: Gauge::default(),
            node_pids_headroom: Gauge::default(),
            node_pids_eta: Family::default(),
            pod_pids_headroom: Family::default(),
            pod_pids_eta: Family::default(),
            pod_pids_zombie_ratio: Family::default(),
        };
        let r = registry.sub_registry_with_prefix("nodemedic_agent");
        r.register(
            "scan_duration_seconds",
            "Wall time of one scan of /proc and cgroupfs",
            m.scan_duration.clone(),
        );
        r.register("scans", "Scans completed", m.scans.clone());
        r.register(
            "tasks",
            "Tasks on the node by state (processes; D counts threads)",
            m.tasks.clone(),
        );
        r.register(
            "findings",
            "Offenders exceeding a threshold, per policy and detector",
            m.findings.clone(),
        );
        r.register(
            "detector_firing",
            "1 while a detector fires (exceeded for its `for`) under a policy",
            m.firing.clone(),
        );
        r.register(
            "policies",
            "NodeHealthPolicies that select this node",
            m.policies.clone(),
        );
        r.register(
            "policies_rejected",
            "Policies that select this node but cannot be evaluated (bad selector or threshold)",
            m.policies_rejected.clone(),
        );
        r.register(
            "scan_errors",
            "Files the scan could not use, by kind (vanished, permission_denied, unparsable, io, cgroups_truncated)",
            m.scan_errors.clone(),
        );
        r.register(
            "report_writes",
            "Writes of this node's NodeHealthReport by result and reason",
            m.report_writes.clone(),
        );
        r.register(
            "actions",
            "Action requests handled, by action, outcome and refusal reason",
            m.actions.clone(),
        );
        r.register(
            "last_report_timestamp_seconds",
            "Unix time of the last successful report write",
            m.last_report.clone(),
        );
        r.register(
            "undecodable_objects",
            "Watched objects left out of the agent's caches because they do not decode, by kind",
            m.undecodable.clone(),
        );
        r.register(
            "node_lease_held",
            "1 while this agent is its node Lease's holder: it alone acts (executes requests, writes the report), renewing the Lease just before; 0 while another agent on the node holds it or the Lease cannot be written",
            m.node_lease_held.clone(),
        );
        r.register(
            "node_lease_writes",
            "Successful writes of this node's Lease (create, renewal, take-over); a holder renews only before it acts, so an idle node costs none",
            m.node_lease_writes.clone(),
        );
        r.register(
            "fd_exhaustion_eta_seconds",
            "Seconds until a process's open fds reach its soft RLIMIT_NOFILE at the fitted growth rate; only the 5 soonest, only while rising",
            m.fd_eta.clone(),
        );
        r.register(
            "node_pids_limit",
            "The node's task limit: min(kernel.pid_max, kernel.threads-max)",
            m.node_pids_limit.clone(),
        );
        r.register(
            "node_pids_headroom",
            "Tasks the node can still start before reaching its pid limit",
            m.node_pids_headroom.clone(),
        );
        r.register(
            "node_pids_exhaustion_eta_seconds",
            "Seconds until the node's task count reaches its pid limit at the fitted growth rate; absent while not rising",
            m.node_pids_eta.clone(),
        );
        r.register(
            "pod_pids_headroom",
            "Pids a pod can still use before its pids.max (or the node's limit); the 5 soonest exhausted or fullest pods",
            m.pod_pids_headroom.clone(),
        );
        r.register(
            "pod_pids_exhaustion_eta_seconds",
            "Seconds until a pod's pids.current reaches its limit at the fitted growth rate; only while rising",
            m.pod_pids_eta.clone(),
        );
        r.register(
            "pod_pids_zombie_ratio",
            "Share of a pod's pids held by zombies (zombies whose parent runs in the pod / pids.current)",
            m.pod_pids_zombie_ratio.clone(),
        );
        m
    }

    /// The exhaustion gauges from one status: fd ETAs of the processes and
    /// pids of the node and the pods, the soonest first and bounded.
    pub fn record_exhaustion(&self, status: &nodemedic_crds::NodeHealthReportStatus) {
        let pod_of = |w: Option<&nodemedic_crds::report::Workload>| {
            let ns = w.and_then(|w| w.pod_namespace.clone()).unwrap_or_default();
            let name = w
                .and_then(|w| w.pod_name.clone().or_else(|| w.pod_uid.clone()))
                .unwrap_or_default();
            (ns, name)
        };
        self.fd_eta.clear();
        let mut fds: Vec<_> = status
            .findings
            .fd_leak
            .iter()
            .filter_map(|f| Some((f.exhaustion_eta_seconds?, f)))
            .collect();
        fds.sort_by_key(|(eta, f)| (*eta, f.process.host_pid));
        for (eta, f) in fds.into_iter().take(EXHAUSTION_SERIES) {
            let (pod_namespace, pod_name) = pod_of(f.process.workload.as_ref());
            self.fd_eta
                .get_or_create(&ProcessLabels {
                    pod_namespace,
                    pod_name,
                    comm: f.process.comm.clone(),
                    pid: f.process.host_pid.to_string(),
                })
                .set(eta as f64);
        }
        self.node_pids_eta.clear();
        self.pod_pids_headroom.clear();
        self.pod_pids_eta.clear();
        self.pod_pids_zombie_ratio.clear();
        let Some(pids) = &status.pids else {
            return;
        };
        if let Some(n) = &pids.node {
            self.node_pids_limit
                .set(i64::try_from(n.limit).unwrap_or(i64::MAX));
            self.node_pids_headroom
                .set(i64::try_from(n.headroom).unwrap_or(i64::MAX));
            if let Some(eta) = n.exhaustion_eta_seconds {
                self.node_pids_eta
                    .get_or_create(&NoLabels {})
                    .set(eta as f64);
            }
        }
        // status.pids.pods is sorted soonest exhaustion first, then fullest.
        for p in pids.pods.iter().take(EXHAUSTION_SERIES) {
            let (pod_namespace, pod_name) = pod_of(p.workload.as_ref());
            let key = PodLabels {
                pod_namespace,
                pod_name,
            };
            self.pod_pids_headroom
                .get_or_create(&key)
                .set(i64::try_from(p.headroom).unwrap_or(i64::MAX));
            if let Some(eta) = p.exhaustion_eta_seconds {
                self.pod_pids_eta.get_or_create(&key).set(eta as f64);
            }
            if let Some(share) = p.zombie_share {
                self.pod_pids_zombie_ratio.get_or_create(&key).set(share);
            }
        }
    }

    pub fn record_tasks(&self, t: &nodemedic_crds::report::TaskCounts) {
        for (state, v) in [
            ("running", t.running),
            ("sleeping", t.sleeping),
            ("uninterruptible", t.uninterruptible),
            ("zombie", t.zombie),
            ("stopped", t.stopped),
            ("idle", t.idle),
        ] {
            self.tasks
                .get_or_create(&StateLabel { state })
                .set(i64::from(v));
        }
    }

    pub fn record_scan_errors(&self, e: &nodemedic_crds::report::ScanErrors) {
        for (kind, v) in [
            ("vanished", e.vanished),
            ("permission_denied", e.permission_denied),
            ("unparsable", e.unparsable),
            ("io", e.io_errors),
            ("cgroups_truncated", e.cgroups_truncated),
        ] {
            // Every kind from the first scan on, at 0 when none: a rate of 0
            // reads "no errors" where a missing series reads "no data".
            self.scan_errors
                .get_or_create(&KindLabel { kind })
                .inc_by(v);
        }
    }

    pub fn record_detector(&self, policy: &str, detector: Detector, offenders: i64, firing: bool) {
        let key = PolicyDetector {
            policy: policy.to_owned(),
            detector: detector.name(),
        };
        self.findings.get_or_create(&key).set(offenders);
        self.firing.get_or_create(&key).set(i64::from(firing));
    }

    pub fn record_write(&self, result: &'static str, reason: &'static str) {
        self.report_writes
            .get_or_create(&WriteLabels { result, reason })
            .inc();
        if result == "ok" {
            self.last_report.set(now_unix());
        }
    }

    pub fn record_action(
        &self,
        action: NodeAction,
        outcome: ActionResultOutcome,
        reason: Option<ActionRefusal>,
    ) {
        self.actions
            .get_or_create(&ActionLabels {
                action: match action {
                    NodeAction::SignalParent => "SignalParent",
                    NodeAction::RequestReboot => "RequestReboot",
                },
                outcome: outcome_name(outcome),
                reason: reason.map_or("none", ActionRefusal::name),
            })
            .inc();
    }
}

fn outcome_name(o: ActionResultOutcome) -> &'static str {
    match o {
        ActionResultOutcome::InProgress => "InProgress",
        ActionResultOutcome::Signalled => "Signalled",
        ActionResultOutcome::Completed => "Completed",
        ActionResultOutcome::TargetGone => "TargetGone",
        ActionResultOutcome::TargetChanged => "TargetChanged",
        ActionResultOutcome::Refused => "Refused",
        ActionResultOutcome::Failed => "Failed",
    }
}

fn now_unix() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// What the health endpoints answer from.
#[derive(Debug)]
pub struct Health {
    interval: Duration,
    /// Unix seconds of the last finished scan (0: none yet).
    last_scan: AtomicU64,
    first_report: AtomicBool,
}

impl Health {
    pub fn new(interval: Duration) -> Self {
        Self {
            interval,
            last_scan: AtomicU64::new(0),
            first_report: AtomicBool::new(false),
        }
    }

    pub fn scan_finished(&self) {
        self.last_scan.store(now_unix() as u64, Ordering::Relaxed);
    }

    /// Ready without writing: another agent on the node holds the Lease
    /// (a passive agent must not hold up a rollout).
    pub fn passive(&self) {
        self.first_report.store(true, Ordering::Relaxed);
    }

    pub fn report_written(&self) {
        self.first_report.store(true, Ordering::Relaxed);
    }

    /// A scan finished within three intervals.
    pub fn live(&self) -> bool {
        let last = self.last_scan.load(Ordering::Relaxed);
        // Before the first scan: live for three intervals after start-up is
        // the kubelet's initialDelay's business; report not-yet-live.
        last > 0 && (now_unix() as u64).saturating_sub(last) <= 3 * self.interval.as_secs().max(1)
    }

    /// The first scan is done and the first report written.
    pub fn ready(&self) -> bool {
        self.last_scan.load(Ordering::Relaxed) > 0 && self.first_report.load(Ordering::Relaxed)
    }
}

#[derive(Clone)]
struct AdminState {
    registry: Arc<Registry>,
    health: Arc<Health>,
}

async fn metrics(State(s): State<AdminState>) -> impl IntoResponse {
    let mut body = String::new();
    match prometheus_client::encoding::text::encode(&mut body, &s.registry) {
        Ok(()) => (
            StatusCode::OK,
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            body,
        ),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            e.to_string(),
        ),
    }
}

async fn livez(State(s): State<AdminState>) -> impl IntoResponse {
    if s.health.live() {
        (StatusCode::OK, "ok\n")
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "no scan finished within three intervals\n",
        )
    }
}

async fn readyz(State(s): State<AdminState>) -> impl IntoResponse {
    if s.health.ready() {
        (StatusCode::OK, "ok\n")
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "waiting for the first scan and the first report write\n",
        )
    }
}

/// Binds `addr` (errors here are start-up errors) and returns the server
/// future, which runs until `shutdown` completes.
pub async fn serve(
    addr: SocketAddr,
    registry: Arc<Registry>,
    health: Arc<Health>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<impl std::future::Future<Output = std::io::Result<()>>> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/livez", get(livez))
        .route("/readyz", get(readyz))
        .with_state(AdminState { registry, health });
    Ok(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(shutdown)
            .await
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode(registry: &Registry) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, registry).expect("encode");
        text
    }

    #[test]
    fn every_scan_error_kind_is_exposed_from_the_first_scan_at_zero_when_none() {
        let mut registry = Registry::default();
        let m = Metrics::register(&mut registry);
        m.record_scan_errors(&nodemedic_crds::report::ScanErrors::default());
        let text = encode(&registry);
        for kind in [
            "vanished",
            "permission_denied",
            "unparsable",
            "io",
            "cgroups_truncated",
        ] {
            let line = format!("scan_errors_total{{kind=\"{kind}\"}} 0");
            assert!(text.contains(&line), "missing {line} in\n{text}");
        }
        m.record_scan_errors(&nodemedic_crds::report::ScanErrors {
            vanished: 3,
            ..Default::default()
        });
        let text = encode(&registry);
        assert!(
            text.contains("scan_errors_total{kind=\"vanished\"} 3"),
            "{text}"
        );
        assert!(text.contains("scan_errors_total{kind=\"io\"} 0"), "{text}");
    }
}
