//! The controller: watch caches for policies, reports and Nodes (kept warm
//! on leader and standby alike), a reconcile per policy (serialized, so that
//! budgets shared between policies are decided one at a time), started when
//! this process becomes the leader and dropped — with whatever it was
//! doing — the moment it stops being one.
//!
//! Reconcile = read (caches + own last writes) → validate → plan (pure) →
//! write ahead → act → settle (pure) → write outcome → status.

pub mod finalizer;
pub mod index;
pub mod undecodable;

use std::collections::{BTreeSet, HashMap};
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use futures::channel::mpsc;
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::{self, Action, applier};
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource, ResourceExt};
use nodemedic_crds::conditions::field_manager;
use nodemedic_crds::lenient::{DescribeUndecodable, Lenient, Sieve};
use nodemedic_crds::pause::{PauseKind, pause_from_annotations};
use nodemedic_crds::policy::{ActionRecord, NodeHealthPolicyStatus};
use nodemedic_crds::selector::selects;
use nodemedic_crds::{NodeHealthPolicy, NodeHealthReport, NodeRemediation};
use serde_json::json;
use tokio::sync::watch;

use self::index::{Affected, Index, Overlay};
use crate::admin::{self, AdminState};
use crate::error::{Error, Result};
use crate::leader::{self, Fence, LeaderConfig};
use crate::metrics::{Metrics, ReasonLabels};
use crate::plan::policy::PolicyView;
use crate::plan::{self, NodeInput, OtherPolicy, PlanInput, Settings, facts, status};
use crate::remediation;
use crate::remediation::drain::DrainPassLimits;
use crate::remediation::drain_tasks::DrainTasks;

/// Everything `run` needs.
#[derive(Debug, Clone)]
pub struct RunConfig {
    pub admin_addr: String,
    pub leader: LeaderConfig,
    /// Manage only policies matching this label selector.
    pub policy_selector: Option<String>,
    pub settings: Settings,
    pub drain_limits: DrainPassLimits,
}

/// Shared by every reconcile.
pub struct Context {
    pub client: Client,
    /// A client without kube's automatic retry of 429 responses: the
    /// Eviction API answers 429 when a PodDisruptionBudget refuses, and the
    /// planner, not the HTTP layer, decides when to try again.
    pub eviction_client: Client,
    pub policies: Store<NodeHealthPolicy>,
    pub reports: Store<NodeHealthReport>,
    pub nodes: Store<Node>,
    /// The remediation ledgers (written by this operator only).
    pub ledgers: Store<NodeRemediation>,
    pub reports_overlay: Overlay<NodeHealthReport>,
    pub nodes_overlay: Overlay<Node>,
    pub ledgers_overlay: Overlay<NodeRemediation>,
    /// Fingerprints, and when each report's scan was first seen.
    pub index: Arc<Mutex<Index>>,
    pub recorder: Recorder,
    pub metrics: Arc<Metrics>,
    pub settings: Settings,
    /// How much one drain pass may do.
    pub drain_limits: DrainPassLimits,
    /// Drain passes running in the background.
    pub drains: DrainTasks,
    pub fence: Arc<Fence>,
    /// Last status written per policy (the cache may lag behind it).
    /// Keyed by uid: a policy deleted and created again under the same
    /// name is another object, whose status is not yet written.
    written_status: Mutex<HashMap<String, NodeHealthPolicyStatus>>,
    /// Action records whose status write failed, per policy uid: the next
    /// status carries them, so a failed write never hides an action whose
    /// ledger entry was written (and is therefore not recorded again).
    unwritten_records: Mutex<HashMap<String, Vec<ActionRecord>>>,
    /// Consecutive failures per policy, for the error backoff.
    failures: Mutex<HashMap<String, u32>>,
    /// Policies that exist but do not decode: left out of the cache, yet
    /// not deleted — what they placed stays (see `PlanInput::invalid`).
    undecodable_policies: tokio::sync::watch::Receiver<
        std::collections::BTreeMap<String, nodemedic_crds::lenient::Undecodable>,
    >,
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context").finish_non_exhaustive()
    }
}

impl Context {
    /// The Node as the operator last knew it (cache or own write).
    pub fn node(&self, name: &str) -> Option<Arc<Node>> {
        self.nodes_overlay
            .resolve(name, self.nodes.get(&ObjectRef::new(name)))
    }

    /// The report as the operator last knew it (cache or own write).
    pub fn report(&self, name: &str) -> Option<Arc<NodeHealthReport>> {
        self.reports_overlay
            .resolve(name, self.reports.get(&ObjectRef::new(name)))
    }

    /// The node's ledger as the operator last knew it (cache or own write).
    pub fn ledger(&self, name: &str) -> Option<Arc<NodeRemediation>> {
        self.ledgers_overlay
            .resolve(name, self.ledgers.get(&ObjectRef::new(name)))
    }
}

/// Where reconcile requests go while this process leads.
#[derive(Default)]
struct Triggers {
    tx: Mutex<Option<mpsc::UnboundedSender<ObjectRef<NodeHealthPolicy>>>>,
}

impl Triggers {
    fn set(&self, tx: Option<mpsc::UnboundedSender<ObjectRef<NodeHealthPolicy>>>) {
        if let Ok(mut g) = self.tx.lock() {
            *g = tx;
        }
    }

    fn active(&self) -> bool {
        self.tx.lock().is_ok_and(|g| g.is_some())
    }

    fn send(&self, policy: &str) {
        if let Ok(g) = self.tx.lock()
            && let Some(tx) = g.as_ref()
        {
            let _ = tx.unbounded_send(ObjectRef::new(policy));
        }
    }
}

/// Maps changes to the policies they concern.
struct Resolver {
    policies: Store<NodeHealthPolicy>,
    reports: Store<NodeHealthReport>,
    nodes: Store<Node>,
    ledgers: Store<NodeRemediation>,
    triggers: Arc<Triggers>,
}

impl Resolver {
    fn all(&self) -> BTreeSet<String> {
        self.policies.state().iter().map(|p| p.name_any()).collect()
    }

    /// Policies selecting the node or mentioned in its state.
    fn for_node(&self, node: &str) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        let n = self.nodes.get(&ObjectRef::new(node));
        let labels = n
            .as_ref()
            .and_then(|n| n.metadata.labels.clone())
            .unwrap_or_default();
        for p in self.policies.state() {
            if selects(p.spec.node_selector.as_ref(), &labels).unwrap_or(false) {
                out.insert(p.name_any());
            }
        }
        if let Some(r) = self.reports.get(&ObjectRef::new(node)) {
            out.extend(r.spec.remediation.episodes.iter().map(|e| e.policy.clone()));
            out.extend(r.spec.action_requests.iter().map(|a| a.policy.clone()));
        }
        if let Some(l) = self.ledgers.get(&ObjectRef::new(node)) {
            out.extend(l.spec.episodes.iter().map(|e| e.policy.clone()));
        }
        if let Some(n) = n {
            let f = facts::NodeFacts::from_node(&n);
            out.extend(f.cordoned_by.into_iter().flatten());
            out.extend(f.owned_taints.into_iter().flat_map(|t| t.policies));
        }
        out
    }

    fn fire(&self, affected: Affected) {
        if !self.triggers.active() {
            return;
        }
        tracing::trace!(?affected, "change");
        let names = match affected {
            Affected::Nothing => return,
            Affected::All => self.all(),
            Affected::Node(n) => self.for_node(&n),
            Affected::Policies(p) => p,
        };
        let known = self.all();
        for n in names.intersection(&known) {
            tracing::debug!(policy = %n, "reconcile requested");
            self.triggers.send(n);
        }
    }
}

/// A watch cache of `K`. Objects that do not decode are left out of it
/// (see [`undecodable`]) and handed to `on_undecodable` with the current
/// set of them; everything else goes on.
fn spawn_reflector<K, F>(
    client: &Client,
    config: watcher::Config,
    trim: fn(&mut K),
    mut on_event: F,
    on_undecodable: undecodable::Sink,
) -> Store<K>
where
    K: Resource<DynamicType = ()>
        + DescribeUndecodable
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static,
    F: FnMut(&watcher::Event<K>) + Send + 'static,
{
    let (reader, writer) = reflector::store();
    let cached: Store<K> = writer.as_reader();
    let mut sieve = Sieve::default();
    let api: Api<Lenient<K>> = Api::all(client.clone());
    let stream = watcher(api, config)
        .backoff(crate::watch_backoff::WatchBackoff::default())
        .filter_map(move |event| {
            let event = match event {
                Ok(event) => {
                    let (event, notices) = sieve.sift(event, |name| {
                        cached.get(&ObjectRef::new(name)).map(|k| (*k).clone())
                    });
                    if !notices.is_empty() {
                        on_undecodable.notify(K::kind(&()).as_ref(), &notices, &sieve);
                    }
                    event.map(Ok)
                }
                Err(e) => Some(Err(e)),
            };
            std::future::ready(event)
        })
        .modify(trim)
        .reflect(writer);
    tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        while let Some(event) = stream.next().await {
            match event {
                Ok(ev) => on_event(&ev),
                Err(e) => {
                    tracing::warn!(kind = K::kind(&()).as_ref(), error = %e, "watch error (retrying)")
                }
            }
        }
    });
    reader
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        if let Ok(mut term) =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        {
            tokio::select! {
                _ = ctrl_c => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = ctrl_c.await;
}

/// Runs the operator until SIGTERM/SIGINT. `eviction_client` must not
/// retry 429 responses (see [`Context::eviction_client`]).
pub async fn run(client: Client, eviction_client: Client, config: RunConfig) -> Result<()> {
    let metrics = Arc::new(Metrics::new());
    let state = Arc::new(AdminState {
        metrics: metrics.clone(),
        ready: Default::default(),
    });
    let (listener, addr) = admin::bind(&config.admin_addr).await?;
    tracing::info!(%addr, "admin endpoint listening (/metrics, /livez, /readyz)");
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut admin_stop = stop_rx.clone();
    let admin_task = tokio::spawn(admin::serve(listener, state.clone(), async move {
        let _ = admin_stop.wait_for(|s| *s).await;
    }));

    let triggers = Arc::new(Triggers::default());
    let Caches {
        policies,
        reports,
        nodes,
        ledgers,
        index,
        undecodable_policies: undecodable_rx,
    } = watch_caches(&client, &config, &metrics, &triggers);

    let mut leadership =
        leader::start(client.clone(), config.leader.clone(), metrics.clone()).await?;
    let ctx = Arc::new(Context {
        client: client.clone(),
        eviction_client,
        policies: policies.clone(),
        reports: reports.clone(),
        nodes: nodes.clone(),
        ledgers: ledgers.clone(),
        reports_overlay: Overlay::default(),
        nodes_overlay: Overlay::default(),
        ledgers_overlay: Overlay::default(),
        index: index.clone(),
        recorder: Recorder::new(
            client.clone(),
            Reporter {
                controller: "nodemedic-operator".into(),
                instance: Some(config.leader.identity.clone()),
            },
        ),
        metrics: metrics.clone(),
        settings: config.settings.clone(),
        drain_limits: config.drain_limits,
        drains: DrainTasks::new({
            let triggers = triggers.clone();
            Arc::new(move |policy: &str| triggers.send(policy))
        }),
        fence: leadership.fence.clone(),
        written_status: Mutex::new(HashMap::new()),
        unwritten_records: Mutex::new(HashMap::new()),
        failures: Mutex::new(HashMap::new()),
        undecodable_policies: undecodable_rx.clone(),
    });

    tokio::spawn(undecodable::report_policies(
        client.clone(),
        ctx.recorder.clone(),
        metrics.clone(),
        leadership.acting.clone(),
        undecodable_rx,
    ));

    let shutdown = shutdown_signal();
    let mut shutdown = std::pin::pin!(shutdown);
    let synced = async {
        policies.wait_until_ready().await.ok();
        reports.wait_until_ready().await.ok();
        nodes.wait_until_ready().await.ok();
        ledgers.wait_until_ready().await.ok();
    };
    tokio::select! {
        _ = synced => {}
        _ = &mut shutdown => {
            let _ = stop_tx.send(true);
            return leadership.stop().await;
        }
    }
    state
        .ready
        .store(true, std::sync::atomic::Ordering::Relaxed);
    tracing::info!(
        policies = policies.len(),
        reports = reports.len(),
        nodes = nodes.len(),
        identity = %config.leader.identity,
        "caches synced"
    );

    let result = act_while_leading(
        &ctx,
        &policies,
        &mut leadership,
        &triggers,
        &config.leader.identity,
        shutdown.as_mut(),
    )
    .await;
    triggers.set(None);
    ctx.drains.abort_all();
    let released = leadership.stop().await;
    let _ = stop_tx.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(2), admin_task).await;
    result.and(released)
}

/// The watch caches, and the index that maps their changes to the
/// policies to reconcile.
struct Caches {
    policies: Store<NodeHealthPolicy>,
    reports: Store<NodeHealthReport>,
    nodes: Store<Node>,
    ledgers: Store<NodeRemediation>,
    index: Arc<Mutex<Index>>,
    undecodable_policies: tokio::sync::watch::Receiver<
        std::collections::BTreeMap<String, nodemedic_crds::lenient::Undecodable>,
    >,
}

/// Keeps the pause metrics of one kind of object (policies or Nodes) in
/// step with its watch: every replica exports them, leader or not.
struct PauseTracker {
    kind: PauseKind,
    index: Arc<Mutex<Index>>,
    metrics: Arc<Metrics>,
    /// Names seen since a relist began.
    relisted: BTreeSet<String>,
}

impl PauseTracker {
    fn new(kind: PauseKind, index: Arc<Mutex<Index>>, metrics: Arc<Metrics>) -> Self {
        Self {
            kind,
            index,
            metrics,
            relisted: BTreeSet::new(),
        }
    }

    /// `recorded`: the start a policy's status recorded for its pause.
    fn observe<K: Resource>(
        &mut self,
        event: &watcher::Event<K>,
        recorded: impl Fn(&K) -> Option<Timestamp>,
    ) {
        let now = Timestamp::now();
        let (obj, deleted) = match event {
            watcher::Event::Init => {
                self.relisted.clear();
                return;
            }
            watcher::Event::InitDone => {
                self.metrics.retain_pauses(self.kind, &self.relisted);
                return;
            }
            watcher::Event::InitApply(o) => {
                self.relisted
                    .insert(o.meta().name.clone().unwrap_or_default());
                (o, false)
            }
            watcher::Event::Apply(o) => (o, false),
            watcher::Event::Delete(o) => (o, true),
        };
        let name = obj.meta().name.clone().unwrap_or_default();
        let annotations = obj.meta().annotations.as_ref().filter(|_| !deleted);
        let start = self
            .index
            .lock()
            .ok()
            .and_then(|mut i| i.pause_start(self.kind, &name, annotations, recorded(obj), now));
        self.metrics
            .set_pause(self.kind, &name, start.map(|t| t.as_second()));
    }
}

/// Starts the reflectors; each change asks for the reconciles it concerns.
fn watch_caches(
    client: &Client,
    config: &RunConfig,
    metrics: &Arc<Metrics>,
    triggers: &Arc<Triggers>,
) -> Caches {
    let client = client.clone();
    let index = Arc::new(Mutex::new(Index::default()));
    let resolver: Arc<Mutex<Option<Arc<Resolver>>>> = Arc::new(Mutex::new(None));

    let mut policy_config = watcher::Config::default().any_semantic();
    if let Some(sel) = &config.policy_selector {
        policy_config = policy_config.labels(sel);
    }
    let fire = {
        let resolver = resolver.clone();
        move |a: Affected| {
            let r = resolver.lock().ok().and_then(|g| g.clone());
            if let Some(r) = r {
                r.fire(a);
            }
        }
    };
    let (undecodable_policies, undecodable_rx) = undecodable::Sink::reporting(metrics.clone());
    let policies = {
        let index = index.clone();
        let fire = fire.clone();
        let metrics = metrics.clone();
        let mut pauses = PauseTracker::new(PauseKind::Policy, index.clone(), metrics.clone());
        spawn_reflector(
            &client,
            policy_config,
            index::trim_policy,
            move |ev| {
                pauses.observe(ev, |p: &NodeHealthPolicy| {
                    p.status
                        .as_ref()
                        .and_then(|s| s.paused.as_ref())
                        .map(|p| p.since.0)
                });
                let affected = match ev {
                    watcher::Event::Apply(p) | watcher::Event::InitApply(p) => index
                        .lock()
                        .map(|mut i| i.policy(p, false))
                        .unwrap_or(Affected::All),
                    watcher::Event::Delete(p) => {
                        metrics.forget_policy(&p.name_any());
                        index
                            .lock()
                            .map(|mut i| i.policy(p, true))
                            .unwrap_or(Affected::All)
                    }
                    _ => return,
                };
                fire(affected);
            },
            undecodable_policies,
        )
    };
    let reports = {
        let index = index.clone();
        let fire = fire.clone();
        spawn_reflector::<NodeHealthReport, _>(
            &client,
            watcher::Config::default().any_semantic(),
            index::trim_report,
            move |ev| {
                let now = Timestamp::now();
                let affected = match ev {
                    watcher::Event::Apply(r) | watcher::Event::InitApply(r) => index
                        .lock()
                        .map(|mut i| i.report(r, false, now))
                        .unwrap_or(Affected::All),
                    watcher::Event::Delete(r) => index
                        .lock()
                        .map(|mut i| i.report(r, true, now))
                        .unwrap_or(Affected::All),
                    _ => return,
                };
                fire(affected);
            },
            undecodable::Sink::counting(metrics.clone()),
        )
    };
    let nodes = {
        let index = index.clone();
        let fire = fire.clone();
        let mut pauses = PauseTracker::new(PauseKind::Node, index.clone(), metrics.clone());
        spawn_reflector::<Node, _>(
            &client,
            watcher::Config::default().any_semantic(),
            index::trim_node,
            move |ev| {
                pauses.observe(ev, |_: &Node| None);
                let affected = match ev {
                    watcher::Event::Apply(n) | watcher::Event::InitApply(n) => index
                        .lock()
                        .map(|mut i| i.node(n, false))
                        .unwrap_or(Affected::All),
                    watcher::Event::Delete(n) => index
                        .lock()
                        .map(|mut i| i.node(n, true))
                        .unwrap_or(Affected::All),
                    _ => return,
                };
                fire(affected);
            },
            undecodable::Sink::counting(metrics.clone()),
        )
    };
    // The ledgers are this operator's own writes, read through the overlay:
    // a change to one asks for no reconcile.
    let ledgers = spawn_reflector::<NodeRemediation, _>(
        &client,
        watcher::Config::default().any_semantic(),
        index::trim_ledger,
        |_| {},
        undecodable::Sink::counting(metrics.clone()),
    );
    if let Ok(mut r) = resolver.lock() {
        *r = Some(Arc::new(Resolver {
            policies: policies.clone(),
            reports: reports.clone(),
            nodes: nodes.clone(),
            ledgers: ledgers.clone(),
            triggers: triggers.clone(),
        }));
    }
    Caches {
        policies,
        reports,
        nodes,
        ledgers,
        index,
        undecodable_policies: undecodable_rx,
    }
}

/// Plans and acts while this process leads; returns on shutdown or when
/// the Lease can no longer be held.
async fn act_while_leading(
    ctx: &Arc<Context>,
    policies: &Store<NodeHealthPolicy>,
    leadership: &mut leader::Leadership,
    triggers: &Triggers,
    identity: &str,
    mut shutdown: std::pin::Pin<&mut impl std::future::Future<Output = ()>>,
) -> Result<()> {
    let mut acting = leadership.acting.clone();
    loop {
        tokio::select! {
            _ = shutdown.as_mut() => break Ok(()),
            r = leadership.failed() => break r,
            r = acting.wait_for(|a| *a) => if r.is_err() { break Err(Error::Lease("leadership channel closed".into())) },
        }
        tracing::info!(identity = %identity, "leading: planning and acting");
        if let Ok(mut m) = ctx.written_status.lock() {
            // Another leader may have written since this process last did.
            m.clear();
        }
        if let Ok(mut f) = ctx.failures.lock() {
            // Failures of an earlier term (an API server that was away) say
            // nothing about this one: no inherited back-off.
            f.clear();
        }
        let (tx, rx) = mpsc::unbounded();
        triggers.set(Some(tx));
        for p in policies.state() {
            triggers.send(&p.name_any());
        }
        let queue = rx.map(Ok::<_, Infallible>);
        let stream = applier(
            |policy, ctx| Box::pin(reconcile(policy, ctx)),
            error_policy,
            ctx.clone(),
            policies.clone(),
            queue,
            controller::Config::default().concurrency(1),
        )
        .for_each(|result| async move {
            match result {
                Ok((obj, action)) => tracing::debug!(policy = %obj.name, ?action, "reconciled"),
                Err(controller::Error::ReconcilerFailed(e, obj)) => {
                    tracing::warn!(policy = %obj.name, reason = e.reason(), error = %e, "reconcile failed")
                }
                Err(e) => tracing::debug!(error = %e, "controller"),
            }
        });
        let outcome = tokio::select! {
            _ = stream => None,
            _ = acting.wait_for(|a| !*a) => None,
            _ = shutdown.as_mut() => Some(Ok(())),
            r = leadership.failed() => Some(r),
        };
        // Dropping the applier drops every reconcile in flight, and the
        // drain passes end with them: acting stops here.
        triggers.set(None);
        ctx.drains.abort_all();
        tracing::info!(identity = %identity, "not leading: acting stopped");
        if let Some(r) = outcome {
            break r;
        }
    }
}

fn error_policy(policy: Arc<NodeHealthPolicy>, error: &Error, ctx: Arc<Context>) -> Action {
    let name = policy.name_any();
    let n = ctx
        .failures
        .lock()
        .map(|mut f| {
            let n = f.entry(name).or_insert(0);
            *n = n.saturating_add(1);
            *n
        })
        .unwrap_or(1);
    let base = match error {
        Error::Conflict { .. } => Duration::from_millis(100),
        Error::NotLeader => Duration::from_secs(2),
        _ => Duration::from_millis(500),
    };
    let factor = 1u32
        .checked_shl(n.saturating_sub(1).min(12))
        .unwrap_or(u32::MAX);
    Action::requeue(base.saturating_mul(factor).min(Duration::from_secs(300)))
}

async fn reconcile(policy: Arc<NodeHealthPolicy>, ctx: Arc<Context>) -> Result<Action> {
    let started = Instant::now();
    let result = reconcile_policy(&policy, &ctx).await;
    ctx.metrics
        .reconcile_duration
        .observe(started.elapsed().as_secs_f64());
    match &result {
        Ok(_) => {
            if let Ok(mut f) = ctx.failures.lock() {
                f.remove(&policy.name_any());
            }
        }
        Err(e) => {
            ctx.metrics
                .reconcile_errors
                .get_or_create(&ReasonLabels {
                    reason: e.reason().to_owned(),
                })
                .inc();
        }
    }
    result
}

/// A node in a reconcile: name, selected, Node, report, ledger.
type Row = (
    String,
    bool,
    Option<Arc<Node>>,
    Option<Arc<NodeHealthReport>>,
    Option<Arc<NodeRemediation>>,
);

/// What the operator itself saw of a node's report, on its own clock:
/// when the current scan was first seen, and per policy when its
/// conditions were first seen all clear.
type Observed = (Option<Timestamp>, Vec<(String, Timestamp)>);

async fn reconcile_policy(policy: &NodeHealthPolicy, ctx: &Arc<Context>) -> Result<Action> {
    ctx.fence.check()?;
    let name = policy.name_any();
    tracing::trace!(policy = %name, "reconcile");
    let now = plan::truncate(Timestamp::now());
    let uid = policy.metadata.uid.clone().unwrap_or_default();
    let previous = ctx
        .written_status
        .lock()
        .ok()
        .and_then(|m| m.get(&uid).cloned())
        .or_else(|| policy.status.clone());

    let deleting = policy.metadata.deletion_timestamp.is_some();
    if deleting && !finalizer::held(policy) {
        // Released already (or never managed): nothing to do.
        return Ok(Action::await_change());
    }
    finalizer::ensure(ctx, policy).await?;

    let view = match PolicyView::from_policy(policy) {
        Ok(v) => v,
        Err(e) if deleting => {
            // What an invalid policy holds cannot be planned; it is left to
            // the other policies, which release a deleted policy's cordons
            // and taints when they reconcile the node.
            tracing::warn!(policy = %name, error = %e, "deleted policy is invalid; removing its finalizer without releasing");
            finalizer::remove(ctx, policy).await?;
            return Ok(Action::await_change());
        }
        Err(e) => {
            tracing::warn!(policy = %name, error = %e, "policy cannot be acted on");
            let pause = policy
                .metadata
                .annotations
                .as_ref()
                .and_then(pause_from_annotations);
            let status = status::invalid(
                policy.metadata.generation,
                &e,
                pause.as_ref(),
                previous.as_ref(),
                now,
            );
            write_status(ctx, policy, &status, previous.as_ref()).await?;
            announce_pause(ctx, policy, previous.as_ref(), &status).await;
            ctx.metrics.policy_gauges(&name, 0, 0, false);
            return Ok(Action::requeue(ctx.settings.resync));
        }
    };

    let mut others: Vec<OtherPolicy> = Vec::new();
    let mut invalid: Vec<String> = Vec::new();
    for other in ctx.policies.state().iter().filter(|p| p.name_any() != name) {
        match PolicyView::from_policy(other) {
            Ok(v) => others.push(OtherPolicy {
                view: Arc::new(v),
                storm_active: index::storm_active(other),
            }),
            Err(_) => invalid.push(other.name_any()),
        }
    }
    invalid.extend(
        ctx.undecodable_policies
            .borrow()
            .keys()
            .filter(|n| **n != name)
            .cloned(),
    );

    let mut rows: Vec<Row> = Vec::new();
    let no_labels = std::collections::BTreeMap::new();
    let planning = Instant::now();
    for n in ctx.nodes.state() {
        let node_name = n.name_any();
        let node = ctx.node(&node_name).unwrap_or(n);
        let selected = view.selects(node.metadata.labels.as_ref().unwrap_or(&no_labels));
        let report = ctx.report(&node_name);
        let ledger = ctx.ledger(&node_name);
        if selected || facts::mentions(&name, report.as_deref(), ledger.as_deref(), Some(&node)) {
            rows.push((node_name, selected, Some(node), report, ledger));
        }
    }
    rows.sort_by(|a, b| a.0.cmp(&b.0));
    let observed: Vec<Observed> = {
        let index = ctx.index.lock().ok();
        rows.iter()
            .map(|(n, ..)| {
                index
                    .as_ref()
                    .map(|i| (i.observed_scan(n), i.observed_clears(n)))
                    .unwrap_or_default()
            })
            .collect()
    };
    let inputs: Vec<NodeInput<'_>> = rows
        .iter()
        .zip(&observed)
        .map(
            |((n, selected, node, report, ledger), (scan, clears))| NodeInput {
                name: n,
                selected: *selected,
                node: node.as_deref(),
                report: report.as_deref(),
                ledger: ledger.as_deref(),
                observed_scan: *scan,
                observed_clear: clears,
            },
        )
        .collect();
    let plan = plan::plan(&PlanInput {
        policy: &view,
        others: &others,
        invalid: &invalid,
        deleting,
        nodes: &inputs,
        settings: &ctx.settings,
        now,
    });

    tracing::debug!(
        policy = %name,
        nodes = rows.len(),
        work = plan.work.len(),
        plan_ms = planning.elapsed().as_secs_f64() * 1e3,
        "planned"
    );
    let mut records = Vec::new();
    let mut first_error: Option<Error> = None;
    let mut wake_at = plan.wake_at;
    let mut summary = plan.summary.clone();
    for work in &plan.work {
        match remediation::execute(ctx, &view, work, now).await {
            Ok(done) => {
                records.extend(done.records);
                if done.failing && !summary.failing.contains(&work.node) {
                    summary.failing.push(work.node.clone());
                    summary.failing.sort();
                }
                if let Some(t) = done.retry_at {
                    wake_at = wake_at.min(t);
                }
            }
            Err(Error::NotLeader) => return Err(Error::NotLeader),
            Err(e) => {
                tracing::warn!(policy = %name, node = %work.node, reason = e.reason(), error = %e, "node work failed");
                first_error.get_or_insert(e);
            }
        }
    }

    if deleting {
        if let Some(e) = first_error {
            return Err(e);
        }
        let held = finalizer::still_held(ctx, &name);
        if !held.is_empty() {
            tracing::info!(policy = %name, nodes = ?held, "deleted policy still holds state; releasing");
            return Ok(Action::requeue(Duration::from_secs(2)));
        }
        tracing::info!(policy = %name, "deleted policy released everything it held");
        finalizer::remove(ctx, policy).await?;
        return Ok(Action::await_change());
    }

    if let Some(mut earlier) = ctx
        .unwritten_records
        .lock()
        .ok()
        .and_then(|mut m| m.remove(&uid))
    {
        earlier.append(&mut records);
        records = earlier;
    }
    let status = status::build(&view, previous.as_ref(), &summary, &records, now);
    if let Err(e) = write_status(ctx, policy, &status, previous.as_ref()).await {
        if let Ok(mut m) = ctx.unwritten_records.lock() {
            let keep = records.len().saturating_sub(status::MAX_RECENT_ACTIONS);
            m.insert(uid, records.split_off(keep));
        }
        return Err(e);
    }
    announce_pause(ctx, policy, previous.as_ref(), &status).await;
    ctx.metrics
        .policy_gauges(&name, summary.unhealthy, summary.stale.len(), summary.storm);
    if let Some(e) = first_error {
        return Err(e);
    }
    let wait = plan::elapsed(Timestamp::now(), wake_at).max(Duration::from_millis(500));
    Ok(Action::requeue(wait))
}

/// The Event and log line of a pause or resume, once per transition: the
/// status written before (also by an earlier leader) records the pause.
async fn announce_pause(
    ctx: &Context,
    policy: &NodeHealthPolicy,
    previous: Option<&NodeHealthPolicyStatus>,
    current: &NodeHealthPolicyStatus,
) {
    let name = policy.name_any();
    let (reason, action, note) = match status::pause_transition(previous, current) {
        None => return,
        Some(status::PauseTransition::Paused(pause)) => {
            tracing::info!(
                policy = %name,
                by = pause.by.as_deref().unwrap_or_default(),
                since = %pause.since.0,
                reason = %pause.reason,
                problem = pause.problem.as_deref().unwrap_or_default(),
                "policy paused: no new ladder step starts"
            );
            (
                plan::EventReason::Paused,
                "Pause",
                format!(
                    "remediation paused {}; no new ladder step starts until the nodemedic.io/paused annotation is removed",
                    status::describe_pause(&pause)
                ),
            )
        }
        Some(status::PauseTransition::Resumed { paused_since }) => {
            tracing::info!(policy = %name, paused_since = %paused_since.0, "policy resumed: the ladders continue");
            (
                plan::EventReason::Resumed,
                "Resume",
                format!(
                    "remediation resumed (paused since {}); steps that came due meanwhile run in ladder order, within the budgets",
                    paused_since.0
                ),
            )
        }
    };
    let reference = policy.object_ref(&());
    ctx.metrics.write("events", "create");
    let event = kube::runtime::events::Event {
        type_: kube::runtime::events::EventType::Normal,
        reason: reason.as_str().to_owned(),
        note: Some(plan::truncate_note(&note)),
        action: action.to_owned(),
        secondary: None,
    };
    if let Err(e) = ctx.recorder.publish(&event, &reference).await {
        tracing::warn!(policy = %name, reason = %reason, error = %e, "publishing an Event");
    }
}

async fn write_status(
    ctx: &Context,
    policy: &NodeHealthPolicy,
    status: &NodeHealthPolicyStatus,
    previous: Option<&NodeHealthPolicyStatus>,
) -> Result<()> {
    let name = policy.name_any();
    if previous == Some(status) {
        return Ok(());
    }
    ctx.fence.check()?;
    let api: Api<NodeHealthPolicy> = Api::all(ctx.client.clone());
    let body = json!({
        "apiVersion": "nodemedic.io/v1alpha1",
        "kind": "NodeHealthPolicy",
        "metadata": {"name": name},
        "status": status,
    });
    ctx.metrics.write("nodehealthpolicies/status", "apply");
    api.patch_status(
        &name,
        &PatchParams::apply(field_manager::OPERATOR).force(),
        &Patch::Apply(&body),
    )
    .await
    .map_err(|e| Error::kube(format!("write status of policy {name}"), e))?;
    if let Ok(mut m) = ctx.written_status.lock() {
        m.insert(
            policy.metadata.uid.clone().unwrap_or_default(),
            status.clone(),
        );
    }
    Ok(())
}
