//! `nodemedic-agent run`: the DaemonSet process. Scans its node every
//! interval, evaluates every policy that selects the node, publishes the
//! node's NodeHealthReport (on change and at the heartbeat), executes the
//! operator's action requests, and serves metrics and health. It never
//! decides to act on its own, and writes nothing but its own report (and
//! its node's Lease: only the agent holding it acts, see [`node_lease`]).

pub mod actions;
pub mod cluster;
pub mod lease;
pub mod neglect;
pub mod node_lease;
pub mod scan_loop;

use crate::act::Signaller;
use crate::act::request::{RequestContext, execute};
use crate::act::verify::{AgentView, ZombieFacts, verify};
use crate::admin::{self, Health, Metrics};
use crate::cli::RunArgs;
use crate::detect::Engine;
use crate::report::build::{self, AgentMeta};
use crate::report::publish::{Publisher, WriteGate, WriteReason, error_reason};
use crate::report::significance::significant;
use crate::scan::procfs::FdRecount;
use crate::scan::{Observation, ScanError, Scanner};
use actions::ActionBook;
use cluster::ClusterView;
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::{Api, Client};
use lease::{NodeLease, Standing};
use neglect::{Look, Vigil};
use nodemedic_crds::report::{ActionRequest, ActionResult, PolicyCondition};
use nodemedic_crds::{NodeHealthReport, NodeHealthReportStatus};
use prometheus_client::registry::Registry;
use scan_loop::{PolicySelection, ScanLoop, ScanOutput, ScanWorker, adopt_conditions};
use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum RunError {
    #[error("no Kubernetes API configuration (in-cluster service account or KUBECONFIG)")]
    Config(#[source] kube::Error),
    #[error(
        "Node {0:?} does not exist: --node-name (NODE_NAME) must be the name of the node this agent runs on (in a DaemonSet: the downward API's spec.nodeName)"
    )]
    NodeMissing(String),
    #[error("reading Node {node:?}")]
    NodeRead {
        node: String,
        #[source]
        source: kube::Error,
    },
    #[error(transparent)]
    Scan(#[from] ScanError),
    #[error("opening {path} for signalling")]
    Signaller { path: PathBuf },
    #[error("serving the admin endpoint on {addr}")]
    Admin {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("the scan thread panicked")]
    ScanThread,
    #[error("starting the scan thread")]
    ScanThreadStart(#[source] std::io::Error),
}

/// Looks the Node up, retrying while the API server cannot answer; a Node
/// that does not exist is a configuration error.
async fn await_node(api: &Api<Node>, node: &str) -> Result<Node, RunError> {
    let mut delay = Duration::from_millis(500);
    let mut warned = false;
    loop {
        match api.get_opt(node).await {
            Ok(Some(n)) => return Ok(n),
            Ok(None) => return Err(RunError::NodeMissing(node.to_owned())),
            Err(kube::Error::Api(s)) if s.code == 403 || s.code == 401 => {
                return Err(RunError::NodeRead {
                    node: node.to_owned(),
                    source: kube::Error::Api(s),
                });
            }
            Err(e) => {
                if !warned {
                    tracing::warn!(error = %e, "cannot reach the API server yet; retrying");
                    warned = true;
                }
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(10));
            }
        }
    }
}

/// Resolves on SIGTERM or SIGINT.
async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = term => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

/// The agent's loop state.
struct Agent {
    args: RunArgs,
    view: ClusterView,
    publisher: Publisher,
    gate: WriteGate,
    book: ActionBook,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    signaller: Arc<Signaller>,
    reboot_sentinel: Option<PathBuf>,
    /// The status of the latest scan, without action results.
    last_status: Option<NodeHealthReportStatus>,
    last_observation: Option<Arc<Observation>>,
    /// The zombie parents of the latest scan.
    last_zombie_facts: ZombieFacts,
    /// The scan thread: every interval's results arrive from it.
    scans: ScanLoop,
    /// When a shutdown began: writes then get what is left of 4.5 s.
    stopping_since: Option<Instant>,
    /// The node's Lease: only its holder executes requests and writes the
    /// report.
    lease: NodeLease,
    /// The last standing logged (logs only on change).
    standing: Option<Standing>,
    /// Set when this agent created or took over the Lease (not when it
    /// renewed it: then no other agent acted since it last did): before it
    /// acts it re-reads the report and adopts the results (and, unless the
    /// start-up adoption is current, the conditions) written by whoever
    /// held it meanwhile.
    adopt_pending: bool,
    /// Whether the conditions adopted at start-up may be out of date: this
    /// agent has acted since, or seen another agent hold the Lease.
    startup_stale: bool,
    /// Untyped: a report that does not decode must not keep the agent from
    /// acting (its decodable results are adopted).
    reports: Api<kube::api::DynamicObject>,
    /// Conditions read on taking over the Lease are adopted by the scan
    /// thread before its next scan (which then publishes them with the
    /// previous holder's transition times); no acting until a scan made
    /// after this adoption (its number, and how many conditions) arrives.
    awaiting_adoption: Option<(u64, usize)>,
    /// Whether the node lacks an actor: what lets this agent take over a
    /// Lease another agent let lapse.
    vigil: Vigil,
}

/// Runs the agent until SIGTERM/SIGINT.
pub async fn run(args: RunArgs) -> Result<(), RunError> {
    let client = Client::try_default().await.map_err(RunError::Config)?;
    let node = await_node(&Api::all(client.clone()), &args.node_name).await?;
    let node_uid = node.metadata.uid.clone().unwrap_or_default();

    let mut registry = Registry::default();
    let metrics = Arc::new(Metrics::register(&mut registry));
    let health = Arc::new(Health::new(args.interval));
    let (stop_admin, admin_stopped) = tokio::sync::oneshot::channel::<()>();
    let server = admin::serve(args.admin_addr, Arc::new(registry), health.clone(), async {
        let _ = admin_stopped.await;
    })
    .await
    .map_err(|source| RunError::Admin {
        addr: args.admin_addr,
        source,
    })?;
    let admin_task = tokio::spawn(server);

    let mut scanner = Scanner::new(&args.host_root)?;
    scanner.set_fd_recount(FdRecount {
        every: args.fd_recount_every,
        ..FdRecount::default()
    });
    let proc_root = args.host_root.join("proc");
    let signaller = Signaller::new(&proc_root)
        .map(Arc::new)
        .map_err(|_| RunError::Signaller { path: proc_root })?;

    let view = ClusterView::start(&client, &args.node_name, metrics.clone());
    view.synced().await;

    // Adopt what the previous agent on this node published: firing
    // conditions keep their transition times, handled requests stay handled.
    let mut engine = Engine::with_pids_window(args.pids_trend_window);
    let now = Timestamp::now();
    let adopted = view.own_report().and_then(|r| r.status.clone());
    if let Some(status) = &adopted {
        adopt_conditions(&mut engine, &status.conditions, now);
        tracing::info!(
            conditions = status.conditions.len(),
            results = status.action_results.len(),
            "adopted the conditions and action results of the existing report"
        );
    }
    let book = ActionBook::adopt(
        adopted
            .as_ref()
            .map_or(&[][..], |s| s.action_results.as_slice()),
        now,
    );

    let publisher = Publisher::new(Api::all(client.clone()), &args.node_name, &node_uid);
    let reboot_sentinel = args.reboot_sentinel.as_ref().map(|p| {
        args.host_root
            .join(p.strip_prefix("/").unwrap_or(p.as_path()))
    });
    tracing::info!(
        node = %args.node_name,
        interval = %nodemedic_crds::duration::format_duration(args.interval),
        heartbeat = %nodemedic_crds::duration::format_duration(args.heartbeat),
        admin = %args.admin_addr,
        "agent running"
    );
    let identity = lease::identity(args.pod_name.as_deref(), args.pod_uid.as_deref());
    let node_lease = NodeLease::new(&client, &args.node_name, identity, args.lease_duration);
    tracing::info!(
        lease = %format!("{}/{}", node_lease::LEASE_NAMESPACE, node_lease.name()),
        identity = %node_lease.identity(),
        duration = %nodemedic_crds::duration::format_duration(args.lease_duration),
        "only the holder of the node lease acts on this node"
    );
    let scans = ScanLoop::start(
        ScanWorker { scanner, engine },
        PolicySelection::new(view.clone(), metrics.clone()),
        args.interval,
    )?;
    let mut agent = Agent {
        scans,
        lease: node_lease,
        standing: None,
        adopt_pending: true,
        startup_stale: false,
        awaiting_adoption: None,
        vigil: Vigil::new(Instant::now()),
        reports: Api::all_with(
            client.clone(),
            &kube::api::ApiResource::erase::<NodeHealthReport>(&()),
        ),
        gate: WriteGate::new(args.heartbeat),
        args,
        view,
        publisher,
        book,
        metrics,
        health,
        signaller,
        reboot_sentinel,
        last_status: None,
        last_observation: None,
        last_zombie_facts: ZombieFacts::default(),
        stopping_since: None,
    };
    let result = agent.run_loop().await;
    let _ = stop_admin.send(());
    let _ = tokio::time::timeout(Duration::from_millis(500), admin_task).await;
    result
}

impl Agent {
    async fn run_loop(&mut self) -> Result<(), RunError> {
        let shutdown = shutdown_signal();
        tokio::pin!(shutdown);
        // No timer for the Lease: it is renewed only before acting (a scan
        // whose report is due, a new request, a retried write).
        loop {
            let retry = self.gate.retry_at();
            let retry_sleep = async move {
                match retry {
                    Some(at) => tokio::time::sleep_until(at.into()).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                biased;
                () = &mut shutdown => break,
                out = self.scans.next() => {
                    let out = out.ok_or(RunError::ScanThread)?;
                    self.after_scan(out).await;
                    self.handle_actions().await;
                }
                () = self.view.report_changed.notified() => {
                    self.look_at_report();
                    self.handle_actions().await;
                }
                () = retry_sleep => {
                    self.write_if_due(None).await;
                }
            }
        }
        // Finish what is in flight: one last attempt at an unwritten change.
        self.stopping_since = Some(Instant::now());
        tracing::info!("stopping");
        if self.gate.retry_at().is_some() {
            self.write_if_due(None).await;
        }
        match self.lease.release(self.write_budget()).await {
            Ok(true) => tracing::info!("released the node lease"),
            Ok(false) => {}
            Err(e) => {
                tracing::warn!(error = %e, "could not release the node lease; another agent takes over when it expires");
            }
        }
        self.metrics.node_lease_held.set(0);
        Ok(())
    }

    /// Records what the report shows against this agent's latest view.
    fn look_at_report(&mut self) {
        let report = self.view.own_report();
        let look = Look::of(report.as_deref(), self.last_status.as_ref());
        self.vigil.observe(look, Instant::now());
    }

    /// Renews (or tries to take) the node's Lease; logs changes of standing.
    async fn lease_tick(&mut self) {
        let neglect = self.vigil.neglected(
            Instant::now(),
            self.args.lease_duration,
            self.args.heartbeat,
        );
        let writes = self.lease.writes();
        let standing = self
            .lease
            .tick(self.write_budget(), neglect.is_some())
            .await;
        self.metrics
            .node_lease_writes
            .inc_by(self.lease.writes().saturating_sub(writes));
        self.metrics
            .node_lease_held
            .set(i64::from(standing == Standing::Holder));
        if self.lease.take_acquired() {
            self.adopt_pending = true;
            if let Some(why) = &neglect {
                tracing::warn!(lease = %self.lease.name(), reason = %why, "took over a node lease its holder let lapse: {why}");
            }
        }
        let changed = match (&self.standing, &standing) {
            (Some(Standing::Unknown { .. }), Standing::Unknown { .. }) => false,
            (Some(before), now) => before != now,
            (None, _) => true,
        };
        if changed {
            match &standing {
                Standing::Holder => {
                    tracing::info!(lease = %self.lease.name(), "holding the node lease; acting on this node")
                }
                Standing::Passive { holder } => {
                    tracing::warn!(lease = %self.lease.name(), %holder, "node lease held by {holder}; not acting (scanning goes on; this agent takes over when the lease is released, or has lapsed while the node lacks an actor: a request without a result, a silent report, a firing condition not published)");
                }
                Standing::Unknown { error } => {
                    tracing::warn!(lease = %self.lease.name(), %error, "cannot hold the node lease; not acting until it can");
                }
            }
        }
        if matches!(standing, Standing::Passive { .. }) {
            self.health.passive();
            self.startup_stale = true;
        }
        self.standing = Some(standing);
    }

    /// Whether this agent may execute requests and write the report now:
    /// it holds the Lease and knows the results of whoever held it before.
    async fn may_act(&mut self) -> bool {
        if self.lease.renew_due() {
            self.lease_tick().await;
        }
        if !self.lease.holds() {
            return false;
        }
        if self.adopt_pending {
            let read = self.reports.get_opt(&self.args.node_name);
            match tokio::time::timeout(self.write_budget(), read).await {
                Ok(Ok(report)) => {
                    let results = report
                        .as_ref()
                        .map(|r| decodable_results(&r.data))
                        .unwrap_or_default();
                    self.book = ActionBook::adopt(&results, Timestamp::now());
                    if self.startup_stale {
                        let conditions = report
                            .as_ref()
                            .map(|r| decodable_conditions(&r.data))
                            .unwrap_or_default();
                        let count = conditions.len();
                        self.awaiting_adoption = Some((self.scans.adopt(conditions), count));
                    }
                    self.adopt_pending = false;
                }
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "cannot read the report before acting; retrying");
                    return false;
                }
                Err(_) => return false,
            }
        }
        // The next scan adopts the conditions first.
        if self.awaiting_adoption.is_some() {
            return false;
        }
        self.startup_stale = true;
        true
    }

    /// Takes in a scan's results: the status to publish, metrics, follow-ups
    /// of executed actions; writes the report if that is due.
    async fn after_scan(&mut self, out: ScanOutput) {
        if let Some((seq, conditions)) = self.awaiting_adoption
            && out.adopted >= seq
        {
            self.awaiting_adoption = None;
            tracing::info!(
                conditions,
                results = self.book.results().len(),
                "took over the node lease: adopted the conditions and action results of the report"
            );
        }
        let now = Timestamp::now();
        let status = build::status(
            &out.observation,
            &out.assessments,
            &out.enrichment,
            &out.pids,
            now,
            AgentMeta {
                scan_interval: Some(self.args.interval),
                heartbeat: Some(self.args.heartbeat),
            },
        );
        self.record_scan(&out, &status);
        self.book.follow_up(&out.observation, now);
        self.last_status = Some(status);
        self.last_observation = Some(Arc::new(out.observation));
        self.last_zombie_facts = out.zombie_facts;
        self.health.scan_finished();
        self.look_at_report();
        self.write_if_due(None).await;
    }

    fn record_scan(&self, out: &ScanOutput, status: &NodeHealthReportStatus) {
        let m = &self.metrics;
        m.scans.inc();
        m.scan_duration
            .observe(out.observation.duration.as_secs_f64());
        m.record_tasks(&status.summary.tasks);
        m.record_exhaustion(status);
        m.record_scan_errors(&status.scan_errors);
        m.findings.clear();
        m.firing.clear();
        for a in &out.assessments {
            for d in &a.detectors {
                let exceeding = exceeding_offenders(&d.verdict);
                m.record_detector(&a.policy, d.verdict.detector, exceeding, d.hold.firing);
                if d.hold.transitioned {
                    let condition = status.conditions.iter().find(|c| {
                        c.policy == a.policy && c.type_ == d.verdict.detector.condition_type()
                    });
                    let message = condition.map(|c| c.message.as_str()).unwrap_or_default();
                    if d.hold.firing {
                        tracing::warn!(policy = %a.policy, detector = %d.verdict.detector, %message, "detector started firing");
                    } else {
                        tracing::info!(policy = %a.policy, detector = %d.verdict.detector, %message, "detector stopped firing");
                    }
                }
            }
        }
    }

    /// The status to write now: the latest scan's, with the action results.
    fn current_status(&self) -> Option<NodeHealthReportStatus> {
        let mut s = self.last_status.clone()?;
        s.action_results = self.book.results().to_vec();
        Some(s)
    }

    /// How long a write may take: 10 s normally, what is left of 4.5 s
    /// after a shutdown began (the pod gets SIGKILL 30 s after SIGTERM, but
    /// the agent promises to exit within 5 s).
    fn write_budget(&self) -> Duration {
        match self.stopping_since {
            Some(t) => Duration::from_millis(4500).saturating_sub(t.elapsed()),
            None => Duration::from_secs(10),
        }
    }

    /// Writes the current status if it is due (or `forced` for actions).
    /// Returns whether a write succeeded.
    async fn write_if_due(&mut self, forced: Option<WriteReason>) -> bool {
        // Whether a write is due first: only then is the Lease renewed.
        let due = |agent: &Self| {
            let status = agent.current_status()?;
            let sig = significant(&status);
            let reason = match forced {
                Some(r) => r,
                None => agent.gate.due(&sig, Instant::now())?,
            };
            Some((status, sig, reason))
        };
        if due(self).is_none() || !self.may_act().await {
            return false;
        }
        // Acquiring the Lease may have adopted another holder's results.
        let Some((status, sig, reason)) = due(self) else {
            return false;
        };
        if reason == WriteReason::Change
            && let Some(before) = self.gate.last_written()
        {
            tracing::debug!(changed = ?sig.changes_from(before), "report changed");
        }
        let write = self.publisher.apply_status(&status);
        let result = match tokio::time::timeout(self.write_budget(), write).await {
            Ok(r) => r.map_err(|e| error_reason(&e).to_owned() + ": " + &e.to_string()),
            Err(_) => Err("timeout: the API server did not answer in time".to_owned()),
        };
        match result {
            Ok(()) => {
                if self.gate.failures() > 0 {
                    tracing::info!(
                        failed_attempts = self.gate.failures(),
                        "report writes recovered"
                    );
                }
                self.gate.written(sig, Instant::now());
                self.metrics.record_write("ok", reason.label());
                self.health.report_written();
                true
            }
            Err(e) => {
                let first = self.gate.failures() == 0;
                let delay = self.gate.failed(Instant::now());
                let label = e.split(':').next().unwrap_or("unavailable");
                self.metrics
                    .record_write(static_label(label), reason.label());
                if first {
                    tracing::warn!(error = %e, retry_in = ?delay, "writing the report failed; scanning goes on, the newest report is written when the API server answers");
                }
                false
            }
        }
    }

    fn requests(&self) -> Vec<ActionRequest> {
        self.view
            .own_report()
            .map(|r| r.spec.action_requests.clone())
            .unwrap_or_default()
    }

    /// Executes new action requests, at most once each: marked InProgress
    /// in the report first (so a restart cannot repeat them), then carried
    /// out, then the results written.
    async fn handle_actions(&mut self) {
        if self.last_status.is_none() {
            return;
        }
        // Only a request this agent has not handled is worth the Lease.
        if !self.book.has_unhandled(&self.requests()) || !self.may_act().await {
            return;
        }
        let requests = self.requests();
        let requested: HashSet<String> = requests.iter().map(|r| r.id.clone()).collect();
        let before = self.book.results().len();
        let to_run = self.book.accept(
            &requests,
            Instant::now(),
            Timestamp::now(),
            self.args.action_ttl,
        );
        if self.book.results().len() == before {
            self.book.prune(&requested);
            return;
        }
        for r in self.book.results().iter().skip(before) {
            if r.outcome == nodemedic_crds::report::ActionResultOutcome::Refused {
                if let Some(req) = requests.iter().find(|q| q.id == r.id) {
                    self.metrics.record_action(req.action, r.outcome, r.reason);
                }
                tracing::warn!(id = %r.id, reason = ?r.reason, message = %r.message, "action request refused");
            }
        }
        if !self.write_if_due(Some(WriteReason::Action)).await {
            let ids: Vec<String> = to_run.iter().map(|r| r.id.clone()).collect();
            self.book.revert(&ids);
            return;
        }
        let policies = self.view.policies();
        let labels = self.view.node_labels();
        for req in to_run {
            if !self.lease.holds() {
                // Marked InProgress in the report: a next holder reports it
                // as not known to have run, and never runs it; this agent
                // says so too if it renews its own Lease and writes again.
                tracing::warn!(id = %req.id, "lost the node lease; request not executed");
                let result = ActionResult {
                    id: req.id.clone(),
                    outcome: nodemedic_crds::report::ActionResultOutcome::Failed,
                    reason: None,
                    message: "not executed: the agent lost its node lease before running it"
                        .to_owned(),
                    completed_at: Time(Timestamp::now()),
                    follow_up: None,
                };
                self.book.complete(&req, result, None);
                continue;
            }
            let view = AgentView {
                node_labels: &labels,
                zombie_facts: &self.last_zombie_facts,
                conditions: self
                    .last_status
                    .as_ref()
                    .map_or(&[], |s| s.conditions.as_slice()),
                now: Timestamp::now(),
            };
            let verified = verify(
                &req,
                policies.iter().map(AsRef::as_ref),
                &view,
                builtin_or_policy_protected,
            );
            let result = match verified {
                Ok(policy) => {
                    let protected = policy.spec.safety.protected_processes.clone();
                    self.execute(req.clone(), protected).await
                }
                Err(refusal) => ActionResult {
                    id: req.id.clone(),
                    outcome: refusal.reason.outcome(),
                    reason: Some(refusal.reason),
                    message: format!("refused: {}", refusal.message),
                    completed_at: Time(Timestamp::now()),
                    follow_up: None,
                },
            };
            self.metrics
                .record_action(req.action, result.outcome, result.reason);
            if result.reason.is_some() {
                tracing::warn!(id = %req.id, policy = %req.policy, action = ?req.action, outcome = ?result.outcome, reason = ?result.reason, message = %result.message, "action request not carried out");
            } else {
                tracing::info!(id = %req.id, policy = %req.policy, action = ?req.action, outcome = ?result.outcome, message = %result.message, "action request handled");
            }
            let obs = self.last_observation.clone();
            self.book.complete(&req, result, obs.as_deref());
        }
        self.book.prune(&requested);
        self.write_if_due(Some(WriteReason::Action)).await;
    }

    async fn execute(&self, req: ActionRequest, protected: Vec<String>) -> ActionResult {
        let signaller = self.signaller.clone();
        let sentinel = self.reboot_sentinel.clone();
        let id = req.id.clone();
        tokio::task::spawn_blocking(move || {
            execute(
                &signaller,
                &req,
                RequestContext {
                    now: Timestamp::now(),
                    protected: &protected,
                    reboot_sentinel: sentinel.as_deref(),
                },
            )
        })
        .await
        .unwrap_or_else(|_| ActionResult {
            id,
            outcome: nodemedic_crds::report::ActionResultOutcome::Failed,
            reason: None,
            message: "the action thread panicked".to_owned(),
            completed_at: Time(Timestamp::now()),
            follow_up: None,
        })
    }
}

/// The conditions of a report read as JSON, each one that decodes.
fn decodable_conditions(report: &serde_json::Value) -> Vec<PolicyCondition> {
    report
        .get("status")
        .and_then(|s| s.get("conditions"))
        .and_then(serde_json::Value::as_array)
        .map(|cs| {
            cs.iter()
                .filter_map(|c| serde_json::from_value(c.clone()).ok())
                .collect()
        })
        .unwrap_or_default()
}

/// The action results of a report read as JSON, each one that decodes (a
/// report written before a schema change does not keep them all out).
fn decodable_results(report: &serde_json::Value) -> Vec<ActionResult> {
    report
        .get("status")
        .and_then(|s| s.get("actionResults"))
        .and_then(serde_json::Value::as_array)
        .map(|rs| {
            rs.iter()
                .filter_map(|r| serde_json::from_value(r.clone()).ok())
                .collect()
        })
        .unwrap_or_default()
}

/// The protected-process matcher verification uses: the built-ins plus the
/// policy's own entries; the matching pattern.
fn builtin_or_policy_protected(comm: &str, extra: &[String]) -> Option<String> {
    nodemedic_crds::protected::protecting(comm, extra).map(str::to_owned)
}

/// Offenders of a verdict that exceed its thresholds.
fn exceeding_offenders(v: &crate::detect::finding::Verdict) -> i64 {
    use crate::detect::finding::Offenders;
    let n = match &v.offenders {
        Offenders::Zombies(z) => z.iter().filter(|x| x.exceeds).count(),
        Offenders::HungTasks { threads, .. } => threads.iter().filter(|x| x.exceeds).count(),
        Offenders::FdLeak { processes, node } => {
            processes.iter().filter(|x| x.exceeds).count()
                + usize::from(node.as_ref().is_some_and(|n| n.exceeds))
        }
        Offenders::CpuThrottling(c) => c.iter().filter(|x| x.exceeds).count(),
    };
    n as i64
}

/// Metric labels must be static: map the reason words back.
fn static_label(label: &str) -> &'static str {
    match label {
        "forbidden" => "forbidden",
        "not_found" => "not_found",
        "conflict" => "conflict",
        "invalid" => "invalid",
        "throttled" => "throttled",
        "server_error" => "server_error",
        "rejected" => "rejected",
        "timeout" => "timeout",
        _ => "unavailable",
    }
}

#[cfg(test)]
mod tests {
    use super::decodable_results;

    #[test]
    fn results_that_decode_are_adopted_one_by_one() {
        let report = serde_json::json!({"status": {"actionResults": [
            {"id": "good", "outcome": "Completed", "message": "m", "completedAt": "2026-01-01T00:00:00Z"},
            {"id": "bad", "outcome": "NoSuchOutcome", "message": "m", "completedAt": "2026-01-01T00:00:00Z"},
        ]}});
        let ids: Vec<String> = decodable_results(&report)
            .into_iter()
            .map(|r| r.id)
            .collect();
        assert_eq!(ids, ["good"]);
        assert!(decodable_results(&serde_json::json!({"status": 3})).is_empty());
        assert!(decodable_results(&serde_json::json!({})).is_empty());
    }
}
