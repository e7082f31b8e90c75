//! Carrying out a plan for one node: write ahead, act, settle, write the
//! outcome, publish Events. Every write checks the leader fence first.

pub mod drain;
pub mod drain_tasks;
pub mod events;
pub mod evict;
pub mod ledger;
pub mod node;
pub mod report;
pub mod state;

use std::sync::Arc;

use k8s_openapi::jiff::Timestamp;
use nodemedic_crds::policy::ActionRecord;

use crate::controller::Context;
use crate::error::Result;
use crate::metrics::ActionLabels;
use crate::plan::policy::PolicyView;
use crate::plan::{self, Effect, EffectOutcome, NodeWork};

/// What executing a node's work produced.
#[derive(Debug, Default)]
pub struct Executed {
    /// Records for the policy status (only once the state they describe is
    /// written).
    pub records: Vec<ActionRecord>,
    /// When a refused eviction or an unfinished drain is to be tried again.
    pub retry_at: Option<Timestamp>,
    /// A step of the policy on this node ended Failed (Degraded).
    pub failing: bool,
}

/// Executes one node's work.
pub async fn execute(
    ctx: &Arc<Context>,
    policy: &PolicyView,
    work: &NodeWork,
    now: Timestamp,
) -> Result<Executed> {
    tracing::trace!(node = %work.node, write_ahead = work.write_ahead, effects = work.effects.len(), "execute");
    let mut versions = work.versions.clone();
    let mut written = &work.before;
    if work.write_ahead && work.ahead != work.before {
        state::write(
            ctx,
            &work.node,
            &mut versions,
            &work.before,
            &work.ahead,
            false,
        )
        .await?;
        written = &work.ahead;
    }

    let mut outcomes = Vec::with_capacity(work.effects.len());
    for effect in &work.effects {
        ctx.fence.check()?;
        tracing::trace!(node = %work.node, ?effect, "effect");
        let outcome = match effect {
            Effect::Event { notice, .. } => match events::publish(ctx, policy, notice).await {
                Ok(()) => EffectOutcome::Done(notice.note.clone()),
                Err(e) => EffectOutcome::Failed {
                    reason: e.reason().to_owned(),
                    message: e.to_string(),
                },
            },
            Effect::NodeConditions { desired, .. } => {
                node::apply_conditions(ctx, &work.node, desired, now).await
            }
            Effect::Cordon { owner, .. } => node::cordon(ctx, &work.node, owner).await,
            Effect::Taint { owner, taint, .. } => node::taint(ctx, &work.node, owner, taint).await,
            Effect::Uncordon { message } => node::uncordon(ctx, &work.node, message).await,
            Effect::Untaint {
                key,
                effect,
                message,
            } => node::untaint(ctx, &work.node, key, *effect, message).await,
            Effect::ForgetCordon => node::forget_cordon(ctx, &work.node).await,
            Effect::Disown { policy } => node::disown(ctx, &work.node, policy).await,
            Effect::ForgetTaint { key, effect } => {
                node::forget_taint(ctx, &work.node, key, *effect).await
            }
            Effect::Evict {
                pod, exclusions, ..
            } => evict::evict(ctx, &work.node, pod, exclusions).await,
            Effect::Drain {
                step,
                episode,
                owner,
                exclusions,
            } => {
                let key = drain_tasks::DrainKey::new(&work.node, step, *episode);
                ctx.drains.poll(key, || {
                    let (ctx, node, owner, exclusions) = (
                        Arc::clone(ctx),
                        work.node.clone(),
                        owner.clone(),
                        exclusions.clone(),
                    );
                    Box::pin(async move { drain::drain(&ctx, &node, &owner, &exclusions).await })
                })
            }
        };
        if let EffectOutcome::Failed { reason, message } = &outcome {
            tracing::warn!(node = %work.node, policy = %policy.name, reason, message, "effect failed");
        }
        outcomes.push(outcome);
    }

    tracing::trace!(node = %work.node, ?outcomes, "outcomes");
    ctx.metrics
        .drain_passes_running
        .set(i64::try_from(ctx.drains.running()).unwrap_or(i64::MAX));
    // A pass running in the background asks for a reconcile when it ends;
    // this wake is the fallback should that request be lost.
    let pass_fallback = outcomes
        .contains(&EffectOutcome::Pending)
        .then(|| plan::plus(now, ctx.drain_limits.budget + drain::CALL_TIMEOUT * 2));
    let (state, settled, notices) = plan::settle(work, &outcomes, policy, &ctx.settings, now);
    if state != *written || versions.legacy_in_report {
        state::write(ctx, &work.node, &mut versions, written, &state, true).await?;
    }

    let mut records = work.records.clone();
    records.extend(settled);
    for notice in work.notices.iter().chain(&notices) {
        if let Err(e) = events::publish(ctx, policy, notice).await {
            tracing::warn!(node = %work.node, reason = %notice.reason, error = %e, "publishing an Event");
        }
    }
    for r in &records {
        ctx.metrics
            .actions
            .get_or_create(&ActionLabels {
                policy: policy.name.clone(),
                action: r.action.as_str().to_owned(),
                outcome: format!("{:?}", r.outcome),
            })
            .inc();
        tracing::info!(
            node = %r.node,
            policy = %policy.name,
            action = r.action.as_str(),
            outcome = ?r.outcome,
            message = r.message.as_deref().unwrap_or_default(),
            "action"
        );
    }
    let failing = state
        .remediation
        .episodes
        .iter()
        .filter(|e| e.policy == policy.name)
        .flat_map(|e| e.steps.iter())
        .any(|s| s.phase == nodemedic_crds::remediation::StepPhase::Failed);
    let retry_at = match (
        plan::next_retry(&state, &policy.name, &ctx.settings),
        pass_fallback,
    ) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    };
    Ok(Executed {
        records,
        retry_at,
        failing,
    })
}
