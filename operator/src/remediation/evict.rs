//! Evictions through the Eviction API (PodDisruptionBudgets apply), and
//! which pods may be evicted at all (drains use the same rules). Never
//! evicted: pods in an excluded namespace, pods with the protect annotation
//! set to "true", DaemonSet pods, mirror (static) pods.

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, EvictParams, Preconditions};

use crate::controller::Context;
use crate::error::{Error, api_code};
use crate::plan::facts::PodRef;
use crate::plan::{EffectOutcome, Exclusions};

/// Annotation the kubelet puts on mirror pods of static pods.
pub const MIRROR_ANNOTATION: &str = "kubernetes.io/config.mirror";

/// Why a pod is never evicted, if it is not.
pub fn exclusion(pod: &Pod, ex: &Exclusions) -> Option<(&'static str, String)> {
    let name = format!(
        "{}/{}",
        pod.metadata.namespace.as_deref().unwrap_or_default(),
        pod.metadata.name.as_deref().unwrap_or_default()
    );
    if let Some(ns) = pod.metadata.namespace.as_ref()
        && ex.namespaces.contains(ns)
    {
        return Some((
            "ExcludedNamespace",
            format!("pod {name} is in excluded namespace {ns}"),
        ));
    }
    let annotations = pod.metadata.annotations.as_ref();
    if annotations
        .and_then(|a| a.get(&ex.protect_annotation))
        .is_some_and(|v| v == "true")
    {
        return Some((
            "Protected",
            format!("pod {name} carries {}=\"true\"", ex.protect_annotation),
        ));
    }
    if annotations.is_some_and(|a| a.contains_key(MIRROR_ANNOTATION)) {
        return Some(("MirrorPod", format!("pod {name} is a mirror (static) pod")));
    }
    if pod
        .metadata
        .owner_references
        .iter()
        .flatten()
        .any(|o| o.kind == "DaemonSet")
    {
        return Some(("DaemonSetPod", format!("pod {name} belongs to a DaemonSet")));
    }
    None
}

/// Why `kubectl drain` would refuse a pod without flags, unless the step
/// opts in: a pod no controller owns is gone for good once evicted, and an
/// emptyDir volume's data is deleted with its pod.
pub fn refusal(pod: &Pod, ex: &Exclusions) -> Option<(&'static str, String)> {
    let name = format!(
        "{}/{}",
        pod.metadata.namespace.as_deref().unwrap_or_default(),
        pod.metadata.name.as_deref().unwrap_or_default()
    );
    let managed = pod
        .metadata
        .owner_references
        .iter()
        .flatten()
        .any(|o| o.controller == Some(true));
    if !managed && !ex.evict_unmanaged_pods {
        return Some((
            "UnmanagedPod",
            format!(
                "pod {name} has no controller, so nothing would recreate it (set drain.evictUnmanagedPods: true to evict such pods)"
            ),
        ));
    }
    let emptydir = pod
        .spec
        .as_ref()
        .and_then(|s| s.volumes.as_ref())
        .is_some_and(|v| v.iter().any(|v| v.empty_dir.is_some()));
    if emptydir && !ex.delete_emptydir_data {
        return Some((
            "EmptyDirData",
            format!(
                "pod {name} has emptyDir volumes whose data would be deleted (set drain.deleteEmptyDirData: true to evict such pods)"
            ),
        ));
    }
    None
}

pub(super) enum Evicted {
    Yes,
    Gone,
    Refused(String),
    Error(Error),
}

pub(super) async fn evict_one(ctx: &Context, pod: &Pod) -> Evicted {
    let ns = pod.metadata.namespace.clone().unwrap_or_default();
    let name = pod.metadata.name.clone().unwrap_or_default();
    let api: Api<Pod> = Api::namespaced(ctx.eviction_client.clone(), &ns);
    let params = EvictParams {
        delete_options: Some(DeleteParams {
            preconditions: Some(Preconditions {
                uid: pod.metadata.uid.clone(),
                resource_version: None,
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    ctx.metrics.write("pods/eviction", "create");
    match api.evict(&name, &params).await {
        Ok(_) => Evicted::Yes,
        Err(e) => match (api_code(&e), &e) {
            (Some(429), kube::Error::Api(s)) => Evicted::Refused(s.message.clone()),
            (Some(404 | 409), _) => Evicted::Gone,
            _ => Evicted::Error(Error::kube(format!("evict pod {ns}/{name}"), e)),
        },
    }
}

/// Evicts the pod a finding names, once (a PodDisruptionBudget refusal is a
/// Retry; the planner retries with backoff until the eviction timeout).
pub async fn evict(ctx: &Context, node: &str, target: &PodRef, ex: &Exclusions) -> EffectOutcome {
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &target.namespace);
    let pod = match api.get_opt(&target.name).await {
        Ok(Some(p)) => p,
        Ok(None) => return EffectOutcome::Done(format!("pod {target} is already gone")),
        Err(e) => return failed_or_retry(Error::kube(format!("get pod {target}"), e)),
    };
    let Some(uid) = &target.uid else {
        return EffectOutcome::Skipped {
            reason: "NoPodUid".into(),
            message: format!(
                "pod {target} is not named with its uid; an eviction without the uid precondition could hit a replacement"
            ),
        };
    };
    if pod.metadata.uid.as_ref() != Some(uid) {
        return EffectOutcome::Skipped {
            reason: "TargetChanged".into(),
            message: format!("pod {target} was replaced (its uid differs from the finding's)"),
        };
    }
    if let Some((reason, message)) = exclusion(&pod, ex).or_else(|| refusal(&pod, ex)) {
        return EffectOutcome::Skipped {
            reason: reason.into(),
            message,
        };
    }
    if pod.spec.as_ref().and_then(|s| s.node_name.as_deref()) != Some(node) {
        return EffectOutcome::Skipped {
            reason: "NotOnNode".into(),
            message: format!("pod {target} is not on node {node}"),
        };
    }
    if pod.metadata.deletion_timestamp.is_some() {
        return EffectOutcome::Done(format!("pod {target} is already terminating"));
    }
    match evict_one(ctx, &pod).await {
        Evicted::Yes => EffectOutcome::Done(format!("evicted pod {target}")),
        Evicted::Gone => EffectOutcome::Done(format!("pod {target} is already gone")),
        Evicted::Refused(m) => EffectOutcome::Retry(format!("eviction of {target} refused: {m}")),
        Evicted::Error(e) => failed_or_retry(e),
    }
}

/// Whether an API error can pass by itself (the server overloaded or
/// restarting, the network, a conflict): worth retrying until the step's
/// timeout. Anything else (forbidden, not found, invalid) will not change
/// on retry.
pub fn is_transient(e: &Error) -> bool {
    match e {
        Error::Conflict { .. } => true,
        Error::Kube { source, .. } => match api_code(source) {
            Some(code) => matches!(code, 429 | 500 | 502 | 503 | 504),
            None => true,
        },
        _ => false,
    }
}

/// Retry for a transient error, Failed (with the error's reason) otherwise.
pub fn failed_or_retry(e: Error) -> EffectOutcome {
    if is_transient(&e) {
        EffectOutcome::Retry(e.to_string())
    } else {
        EffectOutcome::Failed {
            reason: e.reason().to_owned(),
            message: e.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn ex() -> Exclusions {
        Exclusions {
            namespaces: vec!["kube-system".into()],
            protect_annotation: "nodemedic.io/protect".into(),
            delete_emptydir_data: false,
            evict_unmanaged_pods: false,
        }
    }

    fn pod(json: serde_json::Value) -> Pod {
        serde_json::from_value(json).unwrap()
    }

    fn api_error(code: u16) -> Error {
        Error::kube(
            "list pods on n",
            kube::Error::Api(
                kube::core::Status::failure("refused", "Refused")
                    .with_code(code)
                    .boxed(),
            ),
        )
    }

    #[test]
    fn a_forbidden_pod_list_fails_the_drain_instead_of_retrying_forever() {
        for code in [400, 401, 403, 404, 422] {
            assert!(
                matches!(
                    failed_or_retry(api_error(code)),
                    EffectOutcome::Failed { .. }
                ),
                "{code}"
            );
        }
        for code in [409, 429, 500, 503, 504] {
            assert!(
                matches!(failed_or_retry(api_error(code)), EffectOutcome::Retry(_)),
                "{code}"
            );
        }
    }

    #[test]
    fn bare_pods_and_emptydir_data_are_refused_unless_the_step_opts_in() {
        let owned = serde_json::json!([{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "r", "uid": "u", "controller": true}]);
        let bare = pod(serde_json::json!({"metadata": {"name": "a", "namespace": "web"}}));
        assert_eq!(refusal(&bare, &ex()).unwrap().0, "UnmanagedPod");
        let not_controller = pod(
            serde_json::json!({"metadata": {"name": "a", "namespace": "web", "ownerReferences": [{"apiVersion": "v1", "kind": "ConfigMap", "name": "c", "uid": "u"}]}}),
        );
        assert_eq!(refusal(&not_controller, &ex()).unwrap().0, "UnmanagedPod");
        let managed = pod(
            serde_json::json!({"metadata": {"name": "a", "namespace": "web", "ownerReferences": owned}}),
        );
        assert!(refusal(&managed, &ex()).is_none());
        let scratch = pod(serde_json::json!({
            "metadata": {"name": "a", "namespace": "web", "ownerReferences": owned},
            "spec": {"containers": [], "volumes": [{"name": "tmp", "emptyDir": {}}]},
        }));
        assert_eq!(refusal(&scratch, &ex()).unwrap().0, "EmptyDirData");
        let opted_in = Exclusions {
            delete_emptydir_data: true,
            evict_unmanaged_pods: true,
            ..ex()
        };
        assert!(refusal(&scratch, &opted_in).is_none());
        assert!(refusal(&bare, &opted_in).is_none());
    }

    #[test]
    fn exclusions() {
        let plain = pod(serde_json::json!({"metadata": {"name": "a", "namespace": "web"}}));
        assert!(exclusion(&plain, &ex()).is_none());
        let system =
            pod(serde_json::json!({"metadata": {"name": "a", "namespace": "kube-system"}}));
        assert_eq!(exclusion(&system, &ex()).unwrap().0, "ExcludedNamespace");
        let protected = pod(
            serde_json::json!({"metadata": {"name": "a", "namespace": "web", "annotations": {"nodemedic.io/protect": "true"}}}),
        );
        assert_eq!(exclusion(&protected, &ex()).unwrap().0, "Protected");
        let not_really = pod(
            serde_json::json!({"metadata": {"name": "a", "namespace": "web", "annotations": {"nodemedic.io/protect": "false"}}}),
        );
        assert!(exclusion(&not_really, &ex()).is_none());
        let mirror = pod(
            serde_json::json!({"metadata": {"name": "a", "namespace": "web", "annotations": {"kubernetes.io/config.mirror": "abc"}}}),
        );
        assert_eq!(exclusion(&mirror, &ex()).unwrap().0, "MirrorPod");
        let ds = pod(
            serde_json::json!({"metadata": {"name": "a", "namespace": "web", "ownerReferences": [{"apiVersion": "apps/v1", "kind": "DaemonSet", "name": "d", "uid": "u"}]}}),
        );
        assert_eq!(exclusion(&ds, &ex()).unwrap().0, "DaemonSetPod");
    }
}
