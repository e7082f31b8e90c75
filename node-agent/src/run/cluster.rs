//! What the agent watches in the cluster, and nothing wider: every
//! NodeHealthPolicy, its own Node (field selector on the name) and its own
//! NodeHealthReport (for the operator's action requests). Each is a
//! reflector that retries on its own with backoff, so an API server outage
//! only pauses the view.

use futures::StreamExt;
use k8s_openapi::api::core::v1::Node;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};
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

fn spawn_reflector<K>(api: Api<K>, config: watcher::Config, notify: Option<Arc<Notify>>) -> Store<K>
where
    K: kube::Resource
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone,
{
    let (store, writer) = reflector::store();
    let stream = watcher(api, config)
        .default_backoff()
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

impl ClusterView {
    /// Starts the three reflectors for node `node`.
    pub fn start(client: &Client, node: &str) -> Self {
        let by_name = format!("metadata.name={node}");
        let report_changed = Arc::new(Notify::new());
        Self {
            policies: spawn_reflector(Api::all(client.clone()), watcher::Config::default(), None),
            node: spawn_reflector(
                Api::all(client.clone()),
                watcher::Config::default().fields(&by_name),
                None,
            ),
            report: spawn_reflector(
                Api::all(client.clone()),
                watcher::Config::default().fields(&by_name),
                Some(report_changed.clone()),
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
