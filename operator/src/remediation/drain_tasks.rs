//! Drain passes as tracked background work. A reconcile never waits on
//! evictions: it starts a pass for a drain step (or finds one running) and
//! moves on; when the pass ends, its outcome is kept here and the policy is
//! reconciled again, and that reconcile settles the outcome into the ledger.
//! Reconciles of other policies go on meanwhile.
//!
//! Passes are tied to this process's leadership: `abort_all` ends them when
//! it stops leading, and a new leader starts the next pass from the ledger.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use k8s_openapi::jiff::Timestamp;
use nodemedic_crds::conditions::Detector;

use crate::plan::{EffectOutcome, StepRef};

/// A finished pass's outcome not taken up within this long is dropped (its
/// step ended some other way; the next pass would start afresh).
const UNCLAIMED: Duration = Duration::from_secs(600);

/// One drain step of one episode on one node.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DrainKey {
    pub node: String,
    pub policy: String,
    pub detector: Detector,
    pub index: u32,
    pub episode: Timestamp,
}

impl DrainKey {
    pub fn new(node: &str, step: &StepRef, episode: Timestamp) -> Self {
        Self {
            node: node.to_owned(),
            policy: step.policy.clone(),
            detector: step.detector,
            index: step.index,
            episode,
        }
    }
}

enum Pass {
    Running(tokio::task::AbortHandle),
    Finished(EffectOutcome, Instant),
}

/// Called with the policy's name when one of its passes ends.
pub type OnFinished = Arc<dyn Fn(&str) + Send + Sync>;

/// The drain passes of this process.
pub struct DrainTasks {
    passes: Arc<Mutex<HashMap<DrainKey, Pass>>>,
    on_finished: OnFinished,
}

impl std::fmt::Debug for DrainTasks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DrainTasks").finish_non_exhaustive()
    }
}

impl DrainTasks {
    pub fn new(on_finished: OnFinished) -> Self {
        Self {
            passes: Arc::default(),
            on_finished,
        }
    }

    /// The outcome of the step's pass if one has finished; otherwise
    /// `Pending`, starting the pass (with `start`) when none runs. Never
    /// waits.
    pub fn poll(
        &self,
        key: DrainKey,
        start: impl FnOnce() -> BoxFuture<'static, EffectOutcome>,
    ) -> EffectOutcome {
        let Ok(mut passes) = self.passes.lock() else {
            return EffectOutcome::Retry("drain bookkeeping is unavailable".into());
        };
        passes.retain(|_, p| !matches!(p, Pass::Finished(_, at) if at.elapsed() > UNCLAIMED));
        match passes.remove(&key) {
            Some(Pass::Finished(outcome, _)) => return outcome,
            Some(running @ Pass::Running(_)) => {
                passes.insert(key, running);
                return EffectOutcome::Pending;
            }
            None => {}
        }
        let pass = start();
        let registry = Arc::clone(&self.passes);
        let on_finished = Arc::clone(&self.on_finished);
        let task_key = key.clone();
        let handle = tokio::spawn(async move {
            let outcome = pass.await;
            let policy = task_key.policy.clone();
            if let Ok(mut passes) = registry.lock() {
                // Only a pass still registered (not aborted) reports.
                match passes.get_mut(&task_key) {
                    Some(slot) => *slot = Pass::Finished(outcome, Instant::now()),
                    None => return,
                }
            }
            on_finished(&policy);
        });
        passes.insert(key, Pass::Running(handle.abort_handle()));
        EffectOutcome::Pending
    }

    /// Passes running now.
    pub fn running(&self) -> usize {
        self.passes.lock().map_or(0, |p| {
            p.values().filter(|p| matches!(p, Pass::Running(_))).count()
        })
    }

    /// Ends every pass and forgets every outcome (leadership lost).
    pub fn abort_all(&self) {
        if let Ok(mut passes) = self.passes.lock() {
            for (_, pass) in passes.drain() {
                if let Pass::Running(h) = pass {
                    h.abort();
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::sync::atomic::{AtomicUsize, Ordering};

    use futures::FutureExt;
    use nodemedic_crds::policy::ActionKind;
    use tokio::sync::oneshot;

    use super::*;

    fn key(node: &str) -> DrainKey {
        DrainKey::new(
            node,
            &StepRef {
                policy: "p".into(),
                detector: Detector::HungTasks,
                index: 0,
                action: ActionKind::Drain,
            },
            Timestamp::UNIX_EPOCH,
        )
    }

    fn done(m: &str) -> EffectOutcome {
        EffectOutcome::Done(m.into())
    }

    /// A pass that ends when the test says so.
    fn gated() -> (oneshot::Sender<()>, BoxFuture<'static, EffectOutcome>) {
        let (tx, rx) = oneshot::channel::<()>();
        (
            tx,
            async move {
                let _ = rx.await;
                done("drained")
            }
            .boxed(),
        )
    }

    #[tokio::test]
    async fn polling_never_waits_for_a_pass_and_its_outcome_is_taken_up_once() {
        let notified = Arc::new(AtomicUsize::new(0));
        let n = Arc::clone(&notified);
        let tasks = DrainTasks::new(Arc::new(move |p: &str| {
            assert_eq!(p, "p");
            n.fetch_add(1, Ordering::SeqCst);
        }));
        let (finish, pass) = gated();
        let mut started = 0;
        assert_eq!(
            tasks.poll(key("a"), || {
                started += 1;
                pass
            }),
            EffectOutcome::Pending
        );
        // While it runs, polls return at once and start nothing more.
        for _ in 0..3 {
            assert_eq!(
                tasks.poll(key("a"), || unreachable!("a second pass for the same step")),
                EffectOutcome::Pending
            );
        }
        assert_eq!((started, tasks.running()), (1, 1));
        // Another node's drain is independent of this one.
        let (other_finish, other) = gated();
        assert_eq!(tasks.poll(key("b"), || other), EffectOutcome::Pending);
        assert_eq!(tasks.running(), 2);

        finish.send(()).unwrap();
        for _ in 0..100 {
            if notified.load(Ordering::SeqCst) == 1 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(notified.load(Ordering::SeqCst), 1);
        assert_eq!(
            tasks.poll(key("a"), || unreachable!()),
            done("drained"),
            "the finished pass's outcome"
        );
        // Taken up once: the next poll starts the next pass.
        let (_next_finish, next) = gated();
        assert_eq!(tasks.poll(key("a"), || next), EffectOutcome::Pending);
        drop(other_finish);
    }

    #[tokio::test]
    async fn passes_aborted_on_lost_leadership_never_report() {
        let notified = Arc::new(AtomicUsize::new(0));
        let n = Arc::clone(&notified);
        let tasks = DrainTasks::new(Arc::new(move |_: &str| {
            n.fetch_add(1, Ordering::SeqCst);
        }));
        let (finish, pass) = gated();
        tasks.poll(key("a"), || pass);
        tasks.abort_all();
        assert_eq!(tasks.running(), 0);
        let _ = finish.send(());
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(notified.load(Ordering::SeqCst), 0);
        // A new term starts afresh.
        let (_f, pass) = gated();
        assert_eq!(tasks.poll(key("a"), || pass), EffectOutcome::Pending);
    }

    #[tokio::test]
    async fn another_episode_does_not_take_up_an_old_pass() {
        let tasks = DrainTasks::new(Arc::new(|_: &str| {}));
        let (finish, pass) = gated();
        tasks.poll(key("a"), || pass);
        finish.send(()).unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        let mut later = key("a");
        later.episode = Timestamp::UNIX_EPOCH + Duration::from_secs(60);
        let (_f, pass) = gated();
        assert_eq!(tasks.poll(later, || pass), EffectOutcome::Pending);
    }
}
