//! Drain passes: cordon, then evict the node's evictable pods, a few at a
//! time and within a time budget. Reconciles run one at a time, so a pass
//! must end promptly however many pods the node has and however slow the
//! API server answers; what a pass leaves untried, the next pass (a second
//! later) takes up. The drain step's timeout covers all passes.

use std::time::Duration;

use futures::future::join_all;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};
use nodemedic_crds::remediation::DrainProgress;
use tokio::time::{Instant, timeout};

use super::evict::{Evicted, evict_one, exclusion, failed_or_retry, refusal};
use crate::controller::Context;
use crate::error::Error;
use crate::plan::{DrainPassEnd, EffectOutcome, Exclusions};

/// How long one API call of a pass may take before it counts as failed
/// (the pod stays "remaining" and the next pass tries it again).
pub const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// How much one drain pass may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DrainPassLimits {
    /// No new eviction starts after this much time in the pass.
    pub budget: Duration,
    /// Evictions in flight at once.
    pub parallelism: usize,
}

impl Default for DrainPassLimits {
    fn default() -> Self {
        Self {
            budget: Duration::from_secs(10),
            parallelism: 4,
        }
    }
}

/// One drain pass: cordon (as nodemedic, for `owner`), then evict the
/// evictable pods on the node until none is left untried or the pass's
/// budget is spent.
pub async fn drain(ctx: &Context, node: &str, owner: &str, ex: &Exclusions) -> EffectOutcome {
    let started = Instant::now();
    if let out @ (EffectOutcome::Failed { .. } | EffectOutcome::Retry(_)) =
        super::node::cordon(ctx, node, owner).await
    {
        return out;
    }
    let api: Api<Pod> = Api::all(ctx.client.clone());
    let params = ListParams::default().fields(&format!("spec.nodeName={node}"));
    let pods = match timeout(CALL_TIMEOUT, api.list(&params)).await {
        Ok(Ok(l)) => l.items,
        Ok(Err(e)) => return failed_or_retry(Error::kube(format!("list pods on {node}"), e)),
        Err(_) => {
            return EffectOutcome::Retry(format!(
                "listing the pods on {node} took longer than {}s",
                CALL_TIMEOUT.as_secs()
            ));
        }
    };
    // Like `kubectl drain`: a pod it would refuse fails the whole drain
    // before anything is evicted.
    let refused: Vec<String> = pods
        .iter()
        .filter(|p| exclusion(p, ex).is_none() && p.metadata.deletion_timestamp.is_none())
        .filter_map(|p| refusal(p, ex).map(|(_, m)| m))
        .collect();
    if !refused.is_empty() {
        return EffectOutcome::Failed {
            reason: "DrainRefused".into(),
            message: crate::plan::truncate_note(&format!(
                "not drained, nothing evicted (as kubectl drain refuses without flags): {}",
                refused.join("; ")
            )),
        };
    }

    let mut progress = DrainProgress::default();
    let mut to_evict: Vec<&Pod> = Vec::new();
    for pod in &pods {
        if exclusion(pod, ex).is_some() {
            progress.skipped += 1;
        } else if pod.metadata.deletion_timestamp.is_none() {
            to_evict.push(pod);
        }
    }

    let limits = ctx.drain_limits;
    let mut blocked: Vec<String> = Vec::new();
    let mut untried = 0u32;
    for (i, batch) in to_evict.chunks(limits.parallelism.max(1)).enumerate() {
        // The first batch always runs, so every pass makes progress.
        if i > 0 && started.elapsed() >= limits.budget {
            untried =
                u32::try_from(to_evict.len() - i * limits.parallelism.max(1)).unwrap_or(u32::MAX);
            break;
        }
        if let Err(e) = ctx.fence.check() {
            return EffectOutcome::Failed {
                reason: e.reason().to_owned(),
                message: e.to_string(),
            };
        }
        let results =
            join_all(batch.iter().map(|pod| async move {
                (*pod, timeout(CALL_TIMEOUT, evict_one(ctx, pod)).await)
            }))
            .await;
        for (pod, result) in results {
            let name = format!(
                "{}/{}",
                pod.metadata.namespace.as_deref().unwrap_or_default(),
                pod.metadata.name.as_deref().unwrap_or_default()
            );
            match result {
                Ok(Evicted::Yes) => progress.evicted += 1,
                Ok(Evicted::Gone) => {}
                Ok(Evicted::Refused(m)) => {
                    progress.remaining += 1;
                    blocked.push(format!("{name} ({m})"));
                }
                Ok(Evicted::Error(e)) => {
                    progress.remaining += 1;
                    blocked.push(format!("{name} ({e})"));
                }
                Err(_) => {
                    progress.remaining += 1;
                    blocked.push(format!(
                        "{name} (no answer within {}s)",
                        CALL_TIMEOUT.as_secs()
                    ));
                }
            }
        }
    }
    progress.remaining = progress.remaining.saturating_add(untried);

    let end = if progress.remaining == 0 {
        DrainPassEnd::Complete
    } else if untried > 0 {
        DrainPassEnd::OutOfTime
    } else {
        DrainPassEnd::Blocked
    };
    let mut message = format!(
        "drain pass: {} evicted, {} left alone (DaemonSet, mirror, excluded or protected), {} remaining",
        progress.evicted, progress.skipped, progress.remaining
    );
    if untried > 0 {
        message.push_str(&format!(
            " ({untried} not tried yet: the pass used its {}s budget)",
            limits.budget.as_secs_f32()
        ));
    }
    if !blocked.is_empty() {
        message.push_str(": ");
        message.push_str(&blocked.join("; "));
    }
    EffectOutcome::Drained {
        progress,
        end,
        message: crate::plan::truncate_note(&message),
    }
}
