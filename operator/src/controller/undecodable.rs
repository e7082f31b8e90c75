//! Objects that do not decode (stored before a schema change, or written
//! around validation) are left out of the operator's caches; this module
//! names them: a log line per object, the gauge
//! `nodemedic_operator_undecodable_objects{kind}`, and — for a policy, while
//! this process leads — a `Ready=False` condition with reason `Undecodable`
//! on the policy itself (a JSON merge patch of its status through a dynamic
//! API, which needs no typed decoding) and a Warning Event.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::jiff::Timestamp;
use kube::Client;
use kube::api::{Api, ApiResource, DynamicObject, Patch, PatchParams};
use kube::runtime::events::{Event, EventType, Recorder};
use nodemedic_crds::NodeHealthPolicy;
use nodemedic_crds::lenient::{Notice, Sieve, Undecodable};
use serde_json::json;
use tokio::sync::watch;

use crate::metrics::Metrics;

/// Condition reason on a policy that does not decode.
pub const REASON: &str = "Undecodable";

/// Where a reflector sends what it learns about undecodable objects.
#[derive(Debug)]
pub struct Sink {
    metrics: Arc<Metrics>,
    report: Option<watch::Sender<BTreeMap<String, Undecodable>>>,
}

impl Sink {
    /// Logs and counts.
    pub fn counting(metrics: Arc<Metrics>) -> Self {
        Self {
            metrics,
            report: None,
        }
    }

    /// Logs, counts and hands the current set to [`report_policies`].
    pub fn reporting(
        metrics: Arc<Metrics>,
    ) -> (Self, watch::Receiver<BTreeMap<String, Undecodable>>) {
        let (tx, rx) = watch::channel(BTreeMap::new());
        (
            Self {
                metrics,
                report: Some(tx),
            },
            rx,
        )
    }

    /// Called by the reflector of `kind` with what changed.
    pub fn notify(&self, kind: &str, notices: &[Notice], sieve: &Sieve) {
        for notice in notices {
            match notice {
                Notice::Undecodable(u) => tracing::warn!(
                    kind = %u.kind,
                    name = %u.name,
                    error = %u.error,
                    "object does not decode; left out of the operator's cache until it is fixed or deleted"
                ),
                Notice::Resolved { name } => {
                    tracing::info!(kind, %name, "object no longer undecodable")
                }
            }
        }
        self.metrics.undecodable(kind, sieve.undecodable().len());
        if let Some(tx) = &self.report {
            tx.send_replace(sieve.undecodable().clone());
        }
    }
}

/// While `acting`, puts `Ready=False` (reason `Undecodable`, the decoding
/// error as message) and a Warning Event on every policy that does not
/// decode, once per resourceVersion; retries failed writes every 30 s.
pub async fn report_policies(
    client: Client,
    recorder: Recorder,
    metrics: Arc<Metrics>,
    mut acting: watch::Receiver<bool>,
    mut undecodable: watch::Receiver<BTreeMap<String, Undecodable>>,
) {
    let api: Api<DynamicObject> =
        Api::all_with(client, &ApiResource::erase::<NodeHealthPolicy>(&()));
    // name → resourceVersion reported in this term of leadership.
    let mut reported: BTreeMap<String, Option<String>> = BTreeMap::new();
    loop {
        let mut pending = false;
        if *acting.borrow() {
            let current = undecodable.borrow().clone();
            reported.retain(|name, _| current.contains_key(name));
            for (name, u) in &current {
                if reported.get(name) == Some(&u.resource_version) {
                    continue;
                }
                match report(&api, &recorder, &metrics, u).await {
                    Ok(()) => {
                        tracing::info!(policy = %name, "marked the undecodable policy Ready=False (Undecodable)");
                        reported.insert(name.clone(), u.resource_version.clone());
                    }
                    Err(e) => {
                        pending = true;
                        tracing::warn!(policy = %name, error = %e, "cannot mark an undecodable policy; retrying");
                    }
                }
            }
        } else {
            reported.clear();
        }
        let retry = async {
            if pending {
                tokio::time::sleep(Duration::from_secs(30)).await
            } else {
                std::future::pending::<()>().await
            }
        };
        tokio::select! {
            r = undecodable.changed() => if r.is_err() { return },
            r = acting.changed() => if r.is_err() { return },
            _ = retry => {}
        }
    }
}

async fn report(
    api: &Api<DynamicObject>,
    recorder: &Recorder,
    metrics: &Metrics,
    u: &Undecodable,
) -> Result<(), kube::Error> {
    let message = format!(
        "this policy does not decode and is not enforced: {}",
        u.error
    );
    let message: String = message.chars().take(4096).collect();
    let mut condition = json!({
        "type": "Ready",
        "status": "False",
        "reason": REASON,
        "message": message,
        "lastTransitionTime": crate::plan::truncate(Timestamp::now()).to_string(),
    });
    if let Some(g) = u.generation {
        condition["observedGeneration"] = json!(g);
    }
    metrics.write("nodehealthpolicies/status", "patch");
    let status = api
        .patch_status(
            &u.name,
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"conditions": [condition]}})),
        )
        .await;
    // The Event goes out even when the status cannot be written.
    let reference = ObjectReference {
        api_version: Some("nodemedic.io/v1alpha1".into()),
        kind: Some("NodeHealthPolicy".into()),
        name: Some(u.name.clone()),
        uid: u.uid.clone(),
        ..Default::default()
    };
    metrics.write("events", "create");
    let event = recorder
        .publish(
            &Event {
                type_: EventType::Warning,
                reason: REASON.into(),
                note: Some(message.chars().take(1024).collect()),
                action: "Decode".into(),
                secondary: None,
            },
            &reference,
        )
        .await;
    status.map(|_| ()).and(event)
}
