//! Node mutations: cordon and taint (recording nodemedic's ownership in an
//! annotation in the same write), their removal, and nodemedic's Node
//! conditions (server-side apply on `nodes/status` with their own field
//! manager, touching no other condition).
//!
//! Spec and annotation changes are JSON merge patches with the
//! resourceVersion they were computed from as a precondition; on a conflict
//! the Node is read again and the change recomputed.

use std::collections::BTreeSet;

use k8s_openapi::api::core::v1::{Node, Taint};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams};
use nodemedic_crds::conditions::field_manager;
use nodemedic_crds::policy::{TaintEffect, TaintTemplate};
use nodemedic_crds::remediation::{CORDONED_BY_ANNOTATION, OwnedTaint, TAINTED_BY_ANNOTATION};
use serde_json::{Value, json};

use crate::controller::Context;
use crate::controller::index::trim_node;
use crate::error::{Error, api_code};
use crate::plan::facts::{self, NodeFacts};
use crate::plan::{DesiredCondition, EffectOutcome};

/// What a node change decided.
enum Change {
    /// Nothing to write; the message says why.
    None(EffectOutcome),
    /// Write this merge patch; on success report the outcome.
    Patch(Value, EffectOutcome),
}

/// Reads the node (cache first), computes the change, writes it with a
/// resourceVersion precondition, retries on conflicts with a fresh read.
async fn mutate(ctx: &Context, name: &str, decide: impl Fn(&Node) -> Change) -> EffectOutcome {
    let api: Api<Node> = Api::all(ctx.client.clone());
    let mut node = match ctx.node(name) {
        Some(n) => (*n).clone(),
        None => match api.get(name).await {
            Ok(n) => n,
            Err(e) => return failed(&Error::kube(format!("get node {name}"), e)),
        },
    };
    for _ in 0..4 {
        let (mut patch, outcome) = match decide(&node) {
            Change::None(outcome) => return outcome,
            Change::Patch(p, o) => (p, o),
        };
        if let Err(e) = ctx.fence.check() {
            return failed(&e);
        }
        patch["metadata"]["resourceVersion"] = json!(node.metadata.resource_version);
        ctx.metrics.write("nodes", "patch");
        match api
            .patch(
                name,
                &PatchParams {
                    field_manager: Some(field_manager::OPERATOR.to_owned()),
                    ..Default::default()
                },
                &Patch::Merge(&patch),
            )
            .await
        {
            Ok(mut written) => {
                trim_node(&mut written);
                ctx.nodes_overlay
                    .put(written, node.metadata.resource_version.clone());
                return outcome;
            }
            Err(e) if api_code(&e) == Some(409) => match api.get(name).await {
                Ok(fresh) => node = fresh,
                Err(e) => return failed(&Error::kube(format!("get node {name}"), e)),
            },
            Err(e) => return failed(&Error::kube(format!("patch node {name}"), e)),
        }
    }
    EffectOutcome::Retry(format!("node {name} kept changing under concurrent writes"))
}

fn failed(e: &Error) -> EffectOutcome {
    EffectOutcome::Failed {
        reason: e.reason().to_owned(),
        message: e.to_string(),
    }
}

fn owners_value(owners: &BTreeSet<String>) -> Value {
    if owners.is_empty() {
        Value::Null
    } else {
        json!(facts::format_policy_list(owners))
    }
}

/// Cordons the node for `owner`, or joins nodemedic's cordon. A node
/// cordoned by someone else is left alone and not claimed.
pub async fn cordon(ctx: &Context, name: &str, owner: &str) -> EffectOutcome {
    mutate(ctx, name, |node| {
        let f = NodeFacts::from_node(node);
        match (&f.cordoned_by, f.unschedulable) {
            (None, true) => Change::None(EffectOutcome::Done(
                "node already cordoned by someone else; nodemedic does not own this cordon and will never uncordon it".into(),
            )),
            (Some(owners), true) if owners.contains(owner) => Change::None(EffectOutcome::Done(format!(
                "node already cordoned by nodemedic for {}",
                facts::format_policy_list(owners)
            ))),
            (owners, _) => {
                // A stale annotation on a schedulable node is replaced.
                let mut set = if f.unschedulable {
                    owners.clone().unwrap_or_default()
                } else {
                    BTreeSet::new()
                };
                set.insert(owner.to_owned());
                let joined = f.unschedulable;
                Change::Patch(
                    json!({
                        "metadata": {"annotations": {CORDONED_BY_ANNOTATION: owners_value(&set)}},
                        "spec": {"unschedulable": true},
                    }),
                    EffectOutcome::Done(if joined {
                        format!("joined nodemedic's cordon (for {})", facts::format_policy_list(&set))
                    } else {
                        format!("cordoned the node (nodemedic, for {})", facts::format_policy_list(&set))
                    }),
                )
            }
        }
    })
    .await
}

/// Removes nodemedic's cordon.
pub async fn uncordon(ctx: &Context, name: &str, message: &str) -> EffectOutcome {
    mutate(ctx, name, |node| {
        let f = NodeFacts::from_node(node);
        match f.cordoned_by {
            None => Change::None(EffectOutcome::Skipped {
                reason: "NotOwned".into(),
                message:
                    "nodemedic's cordon annotation is gone; the cordon is not nodemedic's to remove"
                        .into(),
            }),
            Some(_) if !f.unschedulable => Change::Patch(
                json!({"metadata": {"annotations": {CORDONED_BY_ANNOTATION: null}}}),
                EffectOutcome::Skipped {
                    reason: "AlreadyUncordoned".into(),
                    message: "someone else uncordoned the node".into(),
                },
            ),
            Some(_) => Change::Patch(
                json!({
                    "metadata": {"annotations": {CORDONED_BY_ANNOTATION: null}},
                    "spec": {"unschedulable": null},
                }),
                EffectOutcome::Done(format!("uncordoned the node: {message}")),
            ),
        }
    })
    .await
}

/// Drops nodemedic's cordon annotation from a node someone else uncordoned.
pub async fn forget_cordon(ctx: &Context, name: &str) -> EffectOutcome {
    mutate(ctx, name, |node| {
        let f = NodeFacts::from_node(node);
        if f.cordoned_by.is_some() && !f.unschedulable {
            Change::Patch(
                json!({"metadata": {"annotations": {CORDONED_BY_ANNOTATION: null}}}),
                EffectOutcome::Done("forgot a cordon someone else removed".into()),
            )
        } else {
            Change::None(EffectOutcome::Done("nothing to forget".into()))
        }
    })
    .await
}

/// Removes `policy` from the owners of nodemedic's cordon and taints where
/// other policies still own them (it is being deleted); the cordon and the
/// taints stay for the others.
pub async fn disown(ctx: &Context, name: &str, policy: &str) -> EffectOutcome {
    mutate(ctx, name, |node| {
        let f = NodeFacts::from_node(node);
        let mut patch = json!({});
        if let Some(owners) = f.cordoned_by.as_ref().filter(|o| o.contains(policy)) {
            let mut rest = owners.clone();
            rest.remove(policy);
            if !rest.is_empty() {
                patch["metadata"]["annotations"][CORDONED_BY_ANNOTATION] = owners_value(&rest);
            }
        }
        let mut owned = f.owned_taints.clone();
        let mut changed = false;
        for o in owned.iter_mut() {
            if o.policies.len() > 1 && o.policies.iter().any(|p| p == policy) {
                o.policies.retain(|p| p != policy);
                changed = true;
            }
        }
        if changed {
            patch["metadata"]["annotations"][TAINTED_BY_ANNOTATION] = owned_value(&owned);
        }
        if patch == json!({}) {
            return Change::None(EffectOutcome::Done("nothing to disown".into()));
        }
        Change::Patch(
            patch,
            EffectOutcome::Done(format!(
                "policy {policy} deleted: no longer an owner of nodemedic's cordon or taints, which other policies still hold"
            )),
        )
    })
    .await
}

fn owned_value(owned: &[OwnedTaint]) -> Value {
    if owned.is_empty() {
        Value::Null
    } else {
        json!(serde_json::to_string(owned).unwrap_or_default())
    }
}

fn taints_value(taints: &[Taint]) -> Value {
    if taints.is_empty() {
        Value::Null
    } else {
        json!(taints)
    }
}

/// Taints the node for `owner` (or joins nodemedic's taint). A taint with
/// the same key and effect placed by someone else is left alone.
pub async fn taint(
    ctx: &Context,
    name: &str,
    owner: &str,
    template: &TaintTemplate,
) -> EffectOutcome {
    let effect = facts::effect_str(template.effect);
    mutate(ctx, name, |node| {
        let f = NodeFacts::from_node(node);
        let present = f.has_taint(&template.key, template.effect);
        let mut owned = f.owned_taints.clone();
        let entry = owned
            .iter_mut()
            .find(|o| o.key == template.key && o.effect == template.effect);
        match (present, entry) {
            (true, None) => Change::None(EffectOutcome::Done(format!(
                "taint {}:{effect} already present, placed by someone else; nodemedic will not remove it",
                template.key
            ))),
            (true, Some(e)) if e.policies.iter().any(|p| p == owner) => Change::None(EffectOutcome::Done(
                format!("taint {}:{effect} already placed by nodemedic", template.key),
            )),
            (true, Some(e)) => {
                e.policies.push(owner.to_owned());
                e.policies.sort();
                Change::Patch(
                    json!({"metadata": {"annotations": {TAINTED_BY_ANNOTATION: owned_value(&owned)}}}),
                    EffectOutcome::Done(format!("joined nodemedic's taint {}:{effect}", template.key)),
                )
            }
            (false, _) => {
                owned.retain(|o| !(o.key == template.key && o.effect == template.effect));
                owned.push(OwnedTaint {
                    key: template.key.clone(),
                    effect: template.effect,
                    policies: vec![owner.to_owned()],
                });
                let mut taints = f.taints.clone();
                taints.push(Taint {
                    key: template.key.clone(),
                    value: template.value.clone(),
                    effect: effect.to_owned(),
                    time_added: (template.effect == TaintEffect::NoExecute)
                        .then(|| Time(Timestamp::now())),
                });
                Change::Patch(
                    json!({
                        "metadata": {"annotations": {TAINTED_BY_ANNOTATION: owned_value(&owned)}},
                        "spec": {"taints": taints_value(&taints)},
                    }),
                    EffectOutcome::Done(format!("tainted the node {}:{effect}", template.key)),
                )
            }
        }
    })
    .await
}

/// Removes nodemedic's taint.
pub async fn untaint(
    ctx: &Context,
    name: &str,
    key: &str,
    effect: TaintEffect,
    message: &str,
) -> EffectOutcome {
    let effect_s = facts::effect_str(effect);
    mutate(ctx, name, |node| {
        let f = NodeFacts::from_node(node);
        let mut owned = f.owned_taints.clone();
        let before = owned.len();
        owned.retain(|o| !(o.key == key && o.effect == effect));
        if owned.len() == before {
            return Change::None(EffectOutcome::Skipped {
                reason: "NotOwned".into(),
                message: format!("taint {key}:{effect_s} is not recorded as nodemedic's"),
            });
        }
        let mut taints = f.taints.clone();
        taints.retain(|t| !(t.key == key && t.effect == effect_s));
        Change::Patch(
            json!({
                "metadata": {"annotations": {TAINTED_BY_ANNOTATION: owned_value(&owned)}},
                "spec": {"taints": taints_value(&taints)},
            }),
            EffectOutcome::Done(format!("removed the taint {key}:{effect_s}: {message}")),
        )
    })
    .await
}

/// Drops a taint someone else removed from nodemedic's annotation.
pub async fn forget_taint(
    ctx: &Context,
    name: &str,
    key: &str,
    effect: TaintEffect,
) -> EffectOutcome {
    mutate(ctx, name, |node| {
        let f = NodeFacts::from_node(node);
        let mut owned = f.owned_taints.clone();
        let before = owned.len();
        owned.retain(|o| !(o.key == key && o.effect == effect));
        if owned.len() == before || f.has_taint(key, effect) {
            return Change::None(EffectOutcome::Done("nothing to forget".into()));
        }
        Change::Patch(
            json!({"metadata": {"annotations": {TAINTED_BY_ANNOTATION: owned_value(&owned)}}}),
            EffectOutcome::Done("forgot a taint someone else removed".into()),
        )
    })
    .await
}

/// Applies nodemedic's Node conditions (and only them).
pub async fn apply_conditions(
    ctx: &Context,
    name: &str,
    desired: &[DesiredCondition],
    now: Timestamp,
) -> EffectOutcome {
    let current = ctx
        .node(name)
        .map(|n| NodeFacts::from_node(&n).conditions)
        .unwrap_or_default();
    let conditions: Vec<Value> = desired
        .iter()
        .map(|d| {
            let kept = current
                .iter()
                .find(|(det, status, _)| *det == d.detector && *status == d.status)
                .and_then(|(_, _, t)| *t);
            json!({
                "type": d.detector.node_condition_type(),
                "status": if d.status { "True" } else { "False" },
                "reason": d.reason,
                "message": d.message,
                "lastTransitionTime": Time(kept.unwrap_or(now)),
                "lastHeartbeatTime": Time(now),
            })
        })
        .collect();
    let body = json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name},
        "status": {"conditions": conditions},
    });
    let api: Api<Node> = Api::all(ctx.client.clone());
    let base = ctx
        .node(name)
        .and_then(|n| n.metadata.resource_version.clone());
    ctx.metrics.write("nodes/status", "apply");
    match api
        .patch_status(
            name,
            &PatchParams::apply(field_manager::NODE_CONDITIONS).force(),
            &Patch::Apply(&body),
        )
        .await
    {
        Ok(mut written) => {
            trim_node(&mut written);
            ctx.nodes_overlay.put(written, base);
            let summary: Vec<String> = desired
                .iter()
                .map(|d| {
                    format!(
                        "{}={}",
                        d.detector.node_condition_type(),
                        if d.status { "True" } else { "False" }
                    )
                })
                .collect();
            EffectOutcome::Done(format!("node conditions {}", summary.join(", ")))
        }
        Err(e) => failed(&Error::kube(format!("apply node conditions on {name}"), e)),
    }
}
