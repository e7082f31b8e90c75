//! Cordon and Taint: node-level effects nodemedic owns through annotations.
//! Joining nodemedic's own cordon or taint, or finding one someone else
//! placed, disrupts nothing and uses no budget; someone else's is never
//! removed (undoing is in `node_level`, once every owner let go).

use nodemedic_crds::PolicyMode;
use nodemedic_crds::policy::ActionOutcome;

use super::hold::node_missing;
use super::steps::Resolved;
use super::*;

/// Whether a Cordon step has anything to do, and if the node is already
/// cordoned, by whom.
pub(super) fn resolve_cordon(cx: &NodeCtx<'_>) -> Resolved {
    let Some(f) = &cx.facts else {
        return Resolved::held(node_missing());
    };
    let in_effect = f.unschedulable.then(|| match &f.cordoned_by {
        Some(owners) => format!(
            "node already cordoned by nodemedic (for {}); joined",
            facts::format_policy_list(owners)
        ),
        None => "node already cordoned by someone else; nodemedic does not own this cordon and will never uncordon it".into(),
    });
    Resolved {
        in_effect,
        ..Resolved::default()
    }
}

/// Whether a Taint step has anything to do, and if the taint is already
/// there, whose it is.
pub(super) fn resolve_taint(cx: &NodeCtx<'_>, step: &Step) -> Resolved {
    let Some(f) = &cx.facts else {
        return Resolved::held(node_missing());
    };
    let target = step
        .taint
        .as_ref()
        .map(|t| format!("{}:{}", t.key, facts::effect_str(t.effect)));
    let in_effect = step.taint.as_ref().and_then(|t| {
        if !f.has_taint(&t.key, t.effect) {
            return None;
        }
        let what = format!("taint {}:{}", t.key, facts::effect_str(t.effect));
        Some(if owned_taint(f, t) {
            format!("{what} already placed by nodemedic; joined")
        } else {
            format!("{what} already present, placed by someone else; nodemedic will not remove it")
        })
    });
    Resolved {
        target,
        in_effect,
        ..Resolved::default()
    }
}

fn owned_taint(f: &NodeFacts, t: &nodemedic_crds::policy::TaintTemplate) -> bool {
    f.owned_taints
        .iter()
        .any(|o| o.key == t.key && o.effect == t.effect)
}

impl NodePlanner<'_, '_> {
    /// Cordons the node (as an owner), or records a cordon someone else
    /// placed as done: nodemedic never owns it.
    pub(super) fn start_cordon(
        &mut self,
        cx: &mut NodeCtx<'_>,
        sref: StepRef,
        in_effect: Option<&str>,
        rec: &mut StepRecord,
    ) {
        if let Some(msg) = in_effect {
            rec.message = Some(msg.to_owned());
        }
        let owned_elsewhere = cx
            .facts
            .as_ref()
            .is_some_and(|f| f.unschedulable && f.cordoned_by.is_none());
        if owned_elsewhere {
            rec.phase = StepPhase::Done;
            self.record(
                cx,
                &sref,
                Some(ActionOutcome::Executed),
                in_effect.unwrap_or_default(),
                None,
                false,
                EventReason::NodeCordoned,
            );
        } else {
            let owner = self.policy().name.clone();
            cx.effects.push(Effect::Cordon { step: sref, owner });
        }
    }

    /// Taints the node (as an owner), or records a taint someone else
    /// placed (or a step without a taint) as done.
    pub(super) fn start_taint(
        &mut self,
        cx: &mut NodeCtx<'_>,
        step: &Step,
        sref: StepRef,
        in_effect: Option<&str>,
        rec: &mut StepRecord,
    ) {
        let foreign = match (&cx.facts, &step.taint) {
            (Some(f), Some(t)) => f.has_taint(&t.key, t.effect) && !owned_taint(f, t),
            _ => false,
        };
        if let Some(msg) = in_effect {
            rec.message = Some(msg.to_owned());
        }
        match (&step.taint, foreign) {
            (Some(_), true) | (None, _) => {
                rec.phase = StepPhase::Done;
                self.record(
                    cx,
                    &sref,
                    Some(ActionOutcome::Executed),
                    in_effect.unwrap_or("no taint configured"),
                    None,
                    false,
                    EventReason::NodeTainted,
                );
            }
            (Some(t), false) => cx.effects.push(Effect::Taint {
                step: sref,
                owner: self.policy().name.clone(),
                taint: t.clone(),
            }),
        }
    }

    /// A Started cordon or taint (its write was interrupted): apply again;
    /// it is idempotent.
    pub(super) fn resume_node_effect(
        &mut self,
        cx: &mut NodeCtx<'_>,
        episode: &Episode,
        step: &Step,
    ) {
        let p = self.policy();
        if p.mode != PolicyMode::Enforce {
            return;
        }
        let sref = StepRef::of(&p.name, episode.detector, step);
        match (step.action, &step.taint) {
            (ActionKind::Cordon, _) => cx.effects.push(Effect::Cordon {
                step: sref,
                owner: p.name.clone(),
            }),
            (ActionKind::Taint, Some(t)) => cx.effects.push(Effect::Taint {
                step: sref,
                owner: p.name.clone(),
                taint: t.clone(),
            }),
            _ => {}
        }
    }
}
