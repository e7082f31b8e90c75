//! `kubectl nodemedic pause|resume`: the pause annotations on a policy, a
//! node or every policy, written in the requester's own name (the chart's
//! admission policy refuses a pause recorded in someone else's).

use k8s_openapi::api::authentication::v1::SelfSubjectReview;
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use nodemedic_crds::NodeHealthPolicy;
use nodemedic_crds::pause::{PAUSE_ANNOTATIONS, pause_annotations, pause_from_annotations};
use serde_json::{Value, json};

use crate::error::Error;

/// What to pause or resume.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Policy(String),
    Node(String),
    AllPolicies,
}

/// The requester's username, as the API server authenticates it.
pub async fn whoami(client: &Client) -> Result<String, Error> {
    let api: Api<SelfSubjectReview> = Api::all(client.clone());
    let review = api
        .create(&PostParams::default(), &SelfSubjectReview::default())
        .await
        .map_err(|e| {
            Error::from_kube(
                e,
                "create",
                "authentication.k8s.io",
                "selfsubjectreviews",
                None,
            )
        })?;
    review
        .status
        .and_then(|s| s.user_info)
        .and_then(|u| u.username)
        .filter(|u| !u.is_empty())
        .ok_or_else(|| {
            Error::Api(
                "the API server did not say who you are (SelfSubjectReview without a username)"
                    .into(),
            )
        })
}

fn annotations_patch(pause: Option<(&str, &str, Timestamp)>) -> Value {
    let mut ann = serde_json::Map::new();
    match pause {
        Some((reason, by, at)) => {
            for (k, v) in pause_annotations(reason, by, at) {
                ann.insert(k, Value::String(v));
            }
        }
        None => {
            for k in PAUSE_ANNOTATIONS {
                ann.insert(k.to_owned(), Value::Null);
            }
        }
    }
    json!({"metadata": {"annotations": ann}})
}

/// Pauses (`Some(reason)`) or resumes (`None`) `target`; returns one line
/// per object changed.
pub async fn apply(
    client: &Client,
    target: &Target,
    reason: Option<&str>,
    now: Timestamp,
) -> Result<Vec<String>, Error> {
    let by = match reason {
        Some(_) => Some(whoami(client).await?),
        None => None,
    };
    let patch = annotations_patch(reason.zip(by.as_deref()).map(|(r, b)| (r, b, now)));
    let params = PatchParams::default();
    let mut done = Vec::new();
    let verb = if reason.is_some() {
        "paused"
    } else {
        "resumed"
    };
    let by_text = by
        .as_deref()
        .map(|b| format!(" by {b}"))
        .unwrap_or_default();
    match target {
        Target::Node(name) => {
            let api: Api<Node> = Api::all(client.clone());
            api.patch(name, &params, &Patch::Merge(&patch))
                .await
                .map_err(|e| Error::from_kube(e, "patch", "", "nodes", Some(name)))?;
            done.push(format!("node/{name} {verb}{by_text}"));
        }
        Target::Policy(name) => {
            let api: Api<NodeHealthPolicy> = Api::all(client.clone());
            api.patch(name, &params, &Patch::Merge(&patch))
                .await
                .map_err(|e| {
                    Error::from_kube(e, "patch", "nodemedic.io", "nodehealthpolicies", Some(name))
                })?;
            done.push(format!("nodehealthpolicy/{name} {verb}{by_text}"));
        }
        Target::AllPolicies => {
            let policies = crate::cluster::list_all::<NodeHealthPolicy>(client).await?;
            if policies.is_empty() {
                return Err(Error::Usage(
                    "there is no NodeHealthPolicy to pause or resume".into(),
                ));
            }
            let api: Api<NodeHealthPolicy> = Api::all(client.clone());
            for p in policies {
                let name = p.name_any();
                let paused = pause_from_annotations(p.annotations()).is_some();
                // Resume --all touches only paused policies; pause --all
                // re-records every pause in this requester's name.
                if reason.is_none() && !paused {
                    continue;
                }
                api.patch(&name, &params, &Patch::Merge(&patch))
                    .await
                    .map_err(|e| {
                        Error::from_kube(
                            e,
                            "patch",
                            "nodemedic.io",
                            "nodehealthpolicies",
                            Some(&name),
                        )
                    })?;
                done.push(format!("nodehealthpolicy/{name} {verb}{by_text}"));
            }
        }
    }
    Ok(done)
}
