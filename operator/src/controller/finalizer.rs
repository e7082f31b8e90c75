//! The policy finalizer: a deleted policy releases its cordons and taints
//! (and drops its episodes and requests) before it goes, instead of leaving
//! them until some other reconcile happens to touch the node.

use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams};
use nodemedic_crds::NodeHealthPolicy;
use nodemedic_crds::conditions::field_manager;
use nodemedic_crds::policy::RELEASE_FINALIZER;
use serde_json::json;

use super::Context;
use crate::error::{Error, Result};
use crate::plan::facts::NodeFacts;

/// Whether the policy carries the finalizer.
pub fn held(policy: &NodeHealthPolicy) -> bool {
    policy.finalizers().iter().any(|f| f == RELEASE_FINALIZER)
}

/// Adds the finalizer to a live policy that lacks it.
pub async fn ensure(ctx: &Context, policy: &NodeHealthPolicy) -> Result<()> {
    if held(policy) || policy.metadata.deletion_timestamp.is_some() {
        return Ok(());
    }
    let mut finalizers = policy.finalizers().to_vec();
    finalizers.push(RELEASE_FINALIZER.to_owned());
    write(ctx, policy, finalizers).await
}

/// Removes the finalizer: the policy may go.
pub async fn remove(ctx: &Context, policy: &NodeHealthPolicy) -> Result<()> {
    let finalizers: Vec<String> = policy
        .finalizers()
        .iter()
        .filter(|f| *f != RELEASE_FINALIZER)
        .cloned()
        .collect();
    write(ctx, policy, finalizers).await
}

/// Nodes on which `policy` still holds something: an episode, a request,
/// or a place among the owners of nodemedic's cordon or taints. (Its
/// history stays: the node's cooldown is computed from it.)
pub fn still_held(ctx: &Context, policy: &str) -> Vec<String> {
    let mut nodes = Vec::new();
    for n in ctx.nodes.state() {
        let name = n.name_any();
        let in_ledger = ctx
            .ledger(&name)
            .is_some_and(|l| l.spec.episodes.iter().any(|e| e.policy == policy));
        let in_report = ctx.report(&name).is_some_and(|r| {
            r.spec.action_requests.iter().any(|a| a.policy == policy)
                || r.spec
                    .remediation
                    .episodes
                    .iter()
                    .any(|e| e.policy == policy)
        });
        let node = ctx.node(&name).unwrap_or(n);
        let f = NodeFacts::from_node(&node);
        let on_node = f.cordoned_by.is_some_and(|o| o.contains(policy))
            || f.owned_taints
                .iter()
                .any(|t| t.policies.iter().any(|p| p == policy));
        if in_ledger || in_report || on_node {
            nodes.push(name);
        }
    }
    nodes
}

async fn write(ctx: &Context, policy: &NodeHealthPolicy, finalizers: Vec<String>) -> Result<()> {
    ctx.fence.check()?;
    let name = policy.name_any();
    let api: Api<NodeHealthPolicy> = Api::all(ctx.client.clone());
    // The list is replaced whole: the resourceVersion precondition keeps
    // another controller's finalizer from being dropped by a race.
    let patch = json!({
        "metadata": {
            "finalizers": finalizers,
            "resourceVersion": policy.resource_version(),
        }
    });
    ctx.metrics.write("nodehealthpolicies", "patch");
    let params = PatchParams {
        field_manager: Some(field_manager::OPERATOR.to_owned()),
        ..Default::default()
    };
    api.patch(&name, &params, &Patch::Merge(&patch))
        .await
        .map_err(|e| Error::kube(format!("finalizer of policy {name}"), e))?;
    Ok(())
}
