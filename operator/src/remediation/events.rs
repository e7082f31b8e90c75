//! Kubernetes Events (events.k8s.io/v1) through kube's Recorder: on the Node,
//! and also on the pod a finding attributes the problem to. The policy is
//! the Event's related object.

use k8s_openapi::api::core::v1::ObjectReference;
use kube::runtime::events::{Event, EventType};

use crate::controller::Context;
use crate::error::{Error, Result};
use crate::plan::Notice;
use crate::plan::policy::PolicyView;

/// Publishes one notice.
pub async fn publish(ctx: &Context, policy: &PolicyView, notice: &Notice) -> Result<()> {
    let node_uid = ctx.node(&notice.node).and_then(|n| n.metadata.uid.clone());
    let node_ref = ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("Node".into()),
        name: Some(notice.node.clone()),
        uid: node_uid,
        ..Default::default()
    };
    let policy_ref = ObjectReference {
        api_version: Some("nodemedic.io/v1alpha1".into()),
        kind: Some("NodeHealthPolicy".into()),
        name: Some(policy.name.clone()),
        uid: policy.uid.clone(),
        ..Default::default()
    };
    let event = Event {
        type_: if notice.warning {
            EventType::Warning
        } else {
            EventType::Normal
        },
        reason: notice.reason.as_str().to_owned(),
        note: Some(notice.note.clone()),
        action: notice.action.as_str().to_owned(),
        secondary: Some(policy_ref),
    };
    ctx.metrics.write("events", "create");
    ctx.recorder
        .publish(&event, &node_ref)
        .await
        .map_err(|e| Error::kube(format!("Event on node {}", notice.node), e))?;
    if let Some(pod) = &notice.pod {
        let pod_ref = ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Pod".into()),
            namespace: Some(pod.namespace.clone()),
            name: Some(pod.name.clone()),
            uid: pod.uid.clone(),
            ..Default::default()
        };
        ctx.metrics.write("events", "create");
        ctx.recorder
            .publish(&event, &pod_ref)
            .await
            .map_err(|e| Error::kube(format!("Event on pod {pod}"), e))?;
    }
    Ok(())
}
