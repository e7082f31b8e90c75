//! What a carried-out effect does to the Node object, as the API would store
//! it: the cordon and taints with nodemedic's ownership annotations. Used by
//! the projection (`kubectl nodemedic simulate`) and by the planner's
//! property test, so that both model the Node the same way the
//! `remediation` module writes it.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Node, NodeSpec, Taint};
use nodemedic_crds::remediation::{CORDONED_BY_ANNOTATION, OwnedTaint, TAINTED_BY_ANNOTATION};

use crate::plan::facts;
use crate::plan::{Effect, EffectOutcome};

/// Applies `effect` to `node` when `outcome` says it was carried out.
pub fn apply_to_node(node: &mut Node, effect: &Effect, outcome: &EffectOutcome) {
    let ok = matches!(
        outcome,
        EffectOutcome::Done(_) | EffectOutcome::Drained { .. }
    );
    if !ok {
        return;
    }
    let ann = node.metadata.annotations.get_or_insert_with(BTreeMap::new);
    match effect {
        Effect::Cordon { owner, .. } | Effect::Drain { owner, .. } => {
            let spec = node.spec.get_or_insert_with(NodeSpec::default);
            let foreign =
                spec.unschedulable == Some(true) && !ann.contains_key(CORDONED_BY_ANNOTATION);
            if foreign {
                return;
            }
            spec.unschedulable = Some(true);
            let mut owners = ann
                .get(CORDONED_BY_ANNOTATION)
                .map(|v| facts::parse_policy_list(v))
                .unwrap_or_default();
            owners.insert(owner.clone());
            ann.insert(
                CORDONED_BY_ANNOTATION.into(),
                facts::format_policy_list(&owners),
            );
        }
        Effect::Uncordon { .. } => {
            ann.remove(CORDONED_BY_ANNOTATION);
            node.spec
                .get_or_insert_with(NodeSpec::default)
                .unschedulable = None;
        }
        Effect::ForgetCordon => {
            ann.remove(CORDONED_BY_ANNOTATION);
        }
        Effect::Taint { owner, taint, .. } => {
            let mut owned = owned_taints(ann);
            match owned
                .iter_mut()
                .find(|o| o.key == taint.key && o.effect == taint.effect)
            {
                Some(o) if !o.policies.contains(owner) => o.policies.push(owner.clone()),
                Some(_) => {}
                None => owned.push(OwnedTaint {
                    key: taint.key.clone(),
                    effect: taint.effect,
                    policies: vec![owner.clone()],
                }),
            }
            store_owned_taints(ann, &owned);
            let taints = node
                .spec
                .get_or_insert_with(NodeSpec::default)
                .taints
                .get_or_insert_with(Vec::new);
            if !taints.iter().any(|t| t.key == taint.key) {
                taints.push(Taint {
                    key: taint.key.clone(),
                    value: taint.value.clone(),
                    effect: facts::effect_str(taint.effect).into(),
                    ..Default::default()
                });
            }
        }
        Effect::Untaint { key, .. } | Effect::ForgetTaint { key, .. } => {
            let mut owned = owned_taints(ann);
            owned.retain(|o| &o.key != key);
            store_owned_taints(ann, &owned);
            if let Some(t) = node.spec.as_mut().and_then(|s| s.taints.as_mut()) {
                t.retain(|t| &t.key != key);
            }
        }
        Effect::Disown { policy } => {
            // As the remediation module does: the name leaves only where
            // another policy still holds the cordon or taint.
            if let Some(v) = ann.get(CORDONED_BY_ANNOTATION) {
                let mut owners = facts::parse_policy_list(v);
                if owners.remove(policy) && !owners.is_empty() {
                    ann.insert(
                        CORDONED_BY_ANNOTATION.into(),
                        facts::format_policy_list(&owners),
                    );
                }
            }
            let mut owned = owned_taints(ann);
            for o in &mut owned {
                if o.policies.len() > 1 {
                    o.policies.retain(|p| p != policy);
                }
            }
            store_owned_taints(ann, &owned);
        }
        Effect::Event { .. } | Effect::NodeConditions { .. } | Effect::Evict { .. } => {}
    }
}

fn owned_taints(ann: &BTreeMap<String, String>) -> Vec<OwnedTaint> {
    ann.get(TAINTED_BY_ANNOTATION)
        .and_then(|v| serde_json::from_str(v).ok())
        .unwrap_or_default()
}

fn store_owned_taints(ann: &mut BTreeMap<String, String>, owned: &[OwnedTaint]) {
    match serde_json::to_string(owned) {
        Ok(v) if !owned.is_empty() => {
            ann.insert(TAINTED_BY_ANNOTATION.into(), v);
        }
        _ => {
            ann.remove(TAINTED_BY_ANNOTATION);
        }
    }
}
