//! Reading the cluster through the user's kubeconfig: policies, reports,
//! ledgers, Nodes, the operator's Lease and Events. Every API error becomes
//! an [`Error`] a person can act on.

use std::path::Path;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ListParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config, Resource};
use nodemedic_crds::{NodeHealthPolicy, NodeHealthReport, NodeRemediation};
use nodemedic_operator::simulate::World;

use crate::cli::Global;
use crate::error::Error;

/// A client for the user's kubeconfig and context.
pub async fn client(global: &Global) -> Result<Client, Error> {
    let options = KubeConfigOptions {
        context: global.context.clone(),
        ..Default::default()
    };
    let config = match &global.kubeconfig {
        Some(path) => {
            let kc = Kubeconfig::read_from(path).map_err(|e| Error::Read {
                path: path.clone(),
                reason: e.to_string(),
            })?;
            Config::from_custom_kubeconfig(kc, &options)
                .await
                .map_err(|e| Error::Connect(e.to_string()))?
        }
        None if global.context.is_some() => Config::from_kubeconfig(&options)
            .await
            .map_err(|e| Error::Connect(e.to_string()))?,
        None => Config::infer()
            .await
            .map_err(|e| Error::Connect(e.to_string()))?,
    };
    Client::try_from(config).map_err(|e| Error::Connect(e.to_string()))
}

/// Lists every object of kind `K` (cluster-scoped), mapping errors.
pub async fn list_all<K>(client: &Client) -> Result<Vec<K>, Error>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::ClusterResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    let api: Api<K> = Api::all(client.clone());
    let group = K::group(&()).to_string();
    let plural = K::plural(&()).to_string();
    api.list(&ListParams::default())
        .await
        .map(|l| l.items)
        .map_err(|e| Error::from_kube(e, "list", &group, &plural, None))
}

/// Everything the planner reads.
pub async fn world(client: &Client) -> Result<World, Error> {
    // The policies first: a missing CRD is named before anything else.
    let policies = list_all::<NodeHealthPolicy>(client).await?;
    let (nodes, reports, ledgers) = tokio::try_join!(
        list_all::<Node>(client),
        list_all::<NodeHealthReport>(client),
        list_all::<NodeRemediation>(client),
    )?;
    Ok(World {
        policies,
        nodes,
        reports,
        ledgers,
    })
}

/// Who leads the operator, as its Lease says.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Leadership {
    pub lease: Option<String>,
    pub holder: Option<String>,
    /// The holder renewed within its lease duration.
    pub current: bool,
    /// Why the leader is unknown (no Lease, expired, or not readable).
    pub problem: Option<String>,
}

/// Reads the operator's Lease (by name, in `namespace` or any namespace).
pub async fn leadership(
    client: &Client,
    name: &str,
    namespace: Option<&str>,
    now: Timestamp,
) -> Leadership {
    let found = match namespace {
        Some(ns) => {
            let api: Api<Lease> = Api::namespaced(client.clone(), ns);
            api.get_opt(name)
                .await
                .map(|l| l.into_iter().collect::<Vec<_>>())
        }
        None => {
            let api: Api<Lease> = Api::all(client.clone());
            api.list(&ListParams::default().fields(&format!("metadata.name={name}")))
                .await
                .map(|l| l.items)
        }
    };
    let leases = match found {
        Ok(l) => l,
        Err(e) => {
            return Leadership {
                lease: None,
                holder: None,
                current: false,
                problem: Some(format!(
                    "cannot read the operator's Lease {name:?} ({}); is nodemedic's operator running?",
                    Error::from_kube(e, "list", "coordination.k8s.io", "leases", None)
                        .to_string()
                        .lines()
                        .next()
                        .unwrap_or_default()
                )),
            };
        }
    };
    let Some(lease) = leases.into_iter().next() else {
        return Leadership {
            lease: None,
            holder: None,
            current: false,
            problem: Some(format!(
                "no operator is running: no Lease {name:?}{} (nothing will be remediated; is the chart installed? kubectl get pods -l app.kubernetes.io/component=operator -A)",
                namespace.map(|n| format!(" in {n}")).unwrap_or_default()
            )),
        };
    };
    let where_ = format!(
        "{}/{}",
        lease.metadata.namespace.clone().unwrap_or_default(),
        lease.metadata.name.clone().unwrap_or_default()
    );
    let spec = lease.spec.unwrap_or_default();
    let holder = spec.holder_identity.filter(|h| !h.is_empty());
    let renewed = spec.renew_time.map(|t| t.0);
    let duration = i64::from(spec.lease_duration_seconds.unwrap_or(15));
    let current = match (&holder, renewed) {
        (Some(_), Some(r)) => now.as_second() - r.as_second() <= duration,
        _ => false,
    };
    let problem = match (&holder, current) {
        (None, _) => Some(format!(
            "no operator is leading: Lease {where_} has no holder (nothing will be remediated until one takes it)"
        )),
        (Some(h), false) => Some(format!(
            "no operator is leading: {h} last renewed Lease {where_} {} ago, longer than its {duration}s (is the operator running?)",
            crate::render::age(renewed.unwrap_or(now), now)
        )),
        _ => None,
    };
    Leadership {
        lease: Some(where_),
        holder,
        current,
        problem,
    }
}

/// Events about an object of `kind` named `name`, oldest first. An error
/// (RBAC) is returned as a note rather than failing the command.
pub async fn events_about(client: &Client, kind: &str, name: &str) -> Result<Vec<Event>, String> {
    let api: Api<Event> = Api::all(client.clone());
    let lp = ListParams::default().fields(&format!("regarding.kind={kind},regarding.name={name}"));
    match api.list(&lp).await {
        Ok(l) => {
            let mut items = l.items;
            items.sort_by_key(event_time);
            Ok(items)
        }
        Err(e) => Err(Error::from_kube(e, "list", "events.k8s.io", "events", None)
            .to_string()
            .lines()
            .next()
            .unwrap_or_default()
            .to_owned()),
    }
}

/// An Event's time: eventTime, else the deprecated series or creation time.
pub fn event_time(e: &Event) -> Option<Timestamp> {
    e.event_time
        .as_ref()
        .map(|t| t.0)
        .or_else(|| e.series.as_ref().map(|s| s.last_observed_time.0))
        .or_else(|| e.deprecated_last_timestamp.as_ref().map(|t| t.0))
        .or_else(|| e.metadata.creation_timestamp.as_ref().map(|t| t.0))
}

/// Reads a policy file (`-` for standard input).
pub fn read_policy(path: &Path) -> Result<NodeHealthPolicy, Error> {
    let text = if path == Path::new("-") {
        std::io::read_to_string(std::io::stdin()).map_err(|e| Error::Read {
            path: path.to_owned(),
            reason: e.to_string(),
        })?
    } else {
        std::fs::read_to_string(path).map_err(|e| Error::Read {
            path: path.to_owned(),
            reason: e.to_string(),
        })?
    };
    let value: serde_yaml::Value = serde_yaml::from_str(&text).map_err(|e| Error::NotAPolicy {
        path: path.to_owned(),
        reason: e.to_string(),
    })?;
    let kind = value
        .get("kind")
        .and_then(|k| k.as_str())
        .unwrap_or_default();
    if kind != "NodeHealthPolicy" {
        return Err(Error::NotAPolicy {
            path: path.to_owned(),
            reason: format!("kind is {kind:?}; one NodeHealthPolicy document is expected"),
        });
    }
    let policy: NodeHealthPolicy =
        serde_yaml::from_value(value).map_err(|e| Error::NotAPolicy {
            path: path.to_owned(),
            reason: e.to_string(),
        })?;
    if policy.metadata.name.as_deref().is_none_or(str::is_empty) {
        return Err(Error::NotAPolicy {
            path: path.to_owned(),
            reason: "metadata.name is missing".into(),
        });
    }
    Ok(policy)
}
