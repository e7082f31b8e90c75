//! What the agent watches in the cluster, and nothing wider: every
//! NodeHealthPolicy, its own Node (field selector on the name) and its own
//! NodeHealthReport (for the operator's action requests). Each is a
//! reflector that retries on its own with backoff, so an API server outage
//! only pauses the view. An object that does not decode (stored before a
//! schema change, or written around validation) is left out of the view,
//! named in a log line and counted in `nodemedic_agent_undecodable_objects`;
//! it never keeps the view from loading.

use crate::admin::{KindLabel, Metrics};
use futures::StreamExt;
use k8s_openapi::api::core::v1::Node;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};
use nodemedic_crds::lenient::{DescribeUndecodable, Lenient, Notice, Sieve};
use nodemedic_crds::{NodeHealthPolicy, NodeHealthReport};
use std::collections::BTreeMap;
use std::sync::Arc;
use tokio::sync::Notify;

/// Read-only views of the agent's slice of the cluster.
#[derive(Clone)]
pub struct ClusterView {
    pub policies: Store<NodeHealthPolicy>,
    pub node: Store<Node>,
    pub report: Store<NodeHealthReport>,
    /// Notified whenever the agent's own report changes (new action requests).
    pub report_changed: Arc<Notify>,
}

impl std::fmt::Debug for ClusterView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterView").finish_non_exhaustive()
    }
}

fn spawn_reflector<K>(
    client: &Client,
    config: watcher::Config,
    notify: Option<Arc<Notify>>,
    metrics: Arc<Metrics>,
) -> Store<K>
where
    K: kube::Resource<DynamicType = ()>
        + DescribeUndecodable
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static,
{
    let (store, writer) = reflector::store();
    let cached: Store<K> = writer.as_reader();
    let mut sieve = Sieve::default();
    let kind = kind_label::<K>();
    let api: Api<Lenient<K>> = Api::all(client.clone());
    let stream = watcher(api, config)
        .default_backoff()
        .filter_map(move |event| {
            let event = match event {
                Ok(event) => {
                    let (event, notices) = sieve.sift(event, |name| {
                        cached.get(&ObjectRef::new(name)).map(|k| (*k).clone())
                    });
                    for notice in notices {
                        match notice {
                            Notice::Undecodable(u) => tracing::warn!(
                                kind = %u.kind,
                                name = %u.name,
                                error = %u.error,
                                "object does not decode; left out of the agent's view until it is fixed or deleted"
                            ),
                            Notice::Resolved { name } => {
                                tracing::info!(kind, %name, "object no longer undecodable")
                            }
                        }
                    }
                    metrics
                        .undecodable
                        .get_or_create(&KindLabel { kind })
                        .set(sieve.undecodable().len() as i64);
                    event.map(Ok)
                }
                Err(e) => Some(Err(e)),
            };
            std::future::ready(event)
        })
        .reflect(writer)
        .touched_objects();
    tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        while let Some(event) = stream.next().await {
            match event {
                Ok(_) => {
                    if let Some(n) = &notify {
                        n.notify_one();
                    }
                }
                // The watcher backs off and retries by itself; the errors
                // are visible at debug level (the write path reports outages).
                Err(e) => tracing::debug!(error = %e, "watch error"),
            }
        }
    });
    store
}

/// The metric label of a watched kind.
fn kind_label<K: kube::Resource<DynamicType = ()>>() -> &'static str {
    match K::kind(&()).as_ref() {
        "NodeHealthPolicy" => "NodeHealthPolicy",
        "NodeHealthReport" => "NodeHealthReport",
        "Node" => "Node",
        _ => "other",
    }
}

impl ClusterView {
    /// Starts the three reflectors for node `node`.
    pub fn start(client: &Client, node: &str, metrics: Arc<Metrics>) -> Self {
        let by_name = format!("metadata.name={node}");
        let report_changed = Arc::new(Notify::new());
        Self {
            policies: spawn_reflector(client, watcher::Config::default(), None, metrics.clone()),
            node: spawn_reflector(
                client,
                watcher::Config::default().fields(&by_name),
                None,
                metrics.clone(),
            ),
            report: spawn_reflector(
                client,
                watcher::Config::default().fields(&by_name),
                Some(report_changed.clone()),
                metrics,
            ),
            report_changed,
        }
    }

    /// Waits until every reflector has listed once.
    pub async fn synced(&self) {
        let _ = tokio::join!(
            self.policies.wait_until_ready(),
            self.node.wait_until_ready(),
            self.report.wait_until_ready()
        );
    }

    /// The node's labels (empty until it is seen).
    pub fn node_labels(&self) -> BTreeMap<String, String> {
        self.node
            .state()
            .first()
            .and_then(|n| n.metadata.labels.clone())
            .unwrap_or_default()
    }

    /// The agent's own report, when it exists.
    pub fn own_report(&self) -> Option<Arc<NodeHealthReport>> {
        self.report.state().into_iter().next()
    }

    /// Every policy, by name.
    pub fn policies(&self) -> Vec<Arc<NodeHealthPolicy>> {
        self.policies.state()
    }
}
