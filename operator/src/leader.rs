//! Leader election on a Lease (kube-lease-manager), plus a fence: this
//! process acts only while it holds the lease *and* its last renewal, as
//! written to the Lease and seen through a watch, is recent enough that no
//! standby can have taken over. A leader cut off from the API server stops
//! acting when its renewal ages out, without waiting to be told.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};
use kube_lease_manager::LeaseManagerBuilder;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

use crate::error::{Error, Result};
use crate::metrics::Metrics;

/// How to elect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaderConfig {
    /// false: this process always acts (a single replica, or development).
    pub enabled: bool,
    pub lease_name: String,
    pub namespace: String,
    pub identity: String,
    /// How long a lease is valid after its last renewal; a standby takes
    /// over within about this long after the leader stops renewing.
    pub duration: Duration,
}

impl LeaderConfig {
    /// The leader renews this long before its lease would expire.
    pub fn grace(&self) -> Duration {
        Duration::from_secs((self.duration.as_secs() / 3).max(1))
    }
}

/// Whether this process may act, checked before every write.
#[derive(Debug, Default)]
pub struct Fence {
    /// kube-lease-manager says we hold the lease.
    holder: AtomicBool,
    /// Unix milliseconds until which our last observed renewal is safe.
    until_ms: AtomicI64,
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

impl Fence {
    /// A fence that always allows acting (leader election disabled).
    pub fn always() -> Self {
        Self {
            holder: AtomicBool::new(true),
            until_ms: AtomicI64::new(i64::MAX),
        }
    }

    /// Whether acting is allowed now.
    pub fn may_act(&self) -> bool {
        self.holder.load(Ordering::Acquire) && now_ms() < self.until_ms.load(Ordering::Acquire)
    }

    /// `Err(NotLeader)` unless acting is allowed.
    pub fn check(&self) -> Result<()> {
        if self.may_act() {
            Ok(())
        } else {
            Err(Error::NotLeader)
        }
    }
}

/// A running election.
#[derive(Debug)]
pub struct Leadership {
    pub fence: Arc<Fence>,
    /// Follows [`Fence::may_act`]; the controller runs while it is true.
    pub acting: watch::Receiver<bool>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<()>>>,
    /// Keeps `acting` open when election is disabled.
    _always: Option<watch::Sender<bool>>,
}

impl Leadership {
    /// Stops acting, releases the lease (so a standby can take over at the
    /// lease's expiry) and waits for the election task.
    pub async fn stop(mut self) -> Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match self.task.take() {
            Some(task) => match tokio::time::timeout(Duration::from_secs(10), task).await {
                Ok(Ok(r)) => r,
                Ok(Err(e)) => Err(Error::Lease(format!("election task: {e}"))),
                Err(_) => Err(Error::Lease("releasing the lease timed out".into())),
            },
            None => Ok(()),
        }
    }

    /// Resolves when the election task ends on its own (an error: this
    /// process can no longer take part and should exit).
    pub async fn failed(&mut self) -> Result<()> {
        match self.task.as_mut() {
            Some(task) => match task.await {
                Ok(r) => {
                    self.task = None;
                    r.and(Err(Error::Lease("election ended".into())))
                }
                Err(e) => {
                    self.task = None;
                    Err(Error::Lease(format!("election task: {e}")))
                }
            },
            None => futures::future::pending().await,
        }
    }
}

/// Starts the election (or a permanent "leader" when disabled).
pub async fn start(
    client: Client,
    config: LeaderConfig,
    metrics: Arc<Metrics>,
) -> Result<Leadership> {
    if !config.enabled {
        let (always, acting) = watch::channel(true);
        metrics.is_leader.set(1);
        return Ok(Leadership {
            fence: Arc::new(Fence::always()),
            acting,
            stop: None,
            task: None,
            _always: Some(always),
        });
    }
    let duration = config.duration.as_secs().max(2);
    let grace = config.grace().as_secs().min(duration - 1);
    let manager = LeaseManagerBuilder::new(client.clone(), &config.lease_name)
        .with_namespace(&config.namespace)
        .with_identity(&config.identity)
        .with_duration(duration)
        .with_grace(grace)
        .build()
        .await
        .map_err(|e| {
            Error::Lease(format!(
                "lease {}/{}: {e}",
                config.namespace, config.lease_name
            ))
        })?;
    let (mut held, manager_task) = manager.watch().await;

    let fence = Arc::new(Fence::default());
    let (acting_tx, acting) = watch::channel(false);
    let (stop_tx, mut stop_rx) = oneshot::channel::<()>();
    let leases: Api<Lease> = Api::namespaced(client, &config.namespace);
    let lease_events = watcher(
        leases,
        watcher::Config::default().fields(&format!("metadata.name={}", config.lease_name)),
    )
    .backoff(crate::watch_backoff::WatchBackoff::default())
    .applied_objects();
    // Stop acting this long before the lease could expire, so that acting
    // never overlaps with a standby that takes over at expiry.
    let margin_ms = i64::try_from(grace * 1000 / 2).unwrap_or(0);
    let identity = config.identity.clone();
    let task_fence = fence.clone();
    let task = tokio::spawn(async move {
        let fence = task_fence;
        let mut lease_events = std::pin::pin!(lease_events);
        let result = loop {
            let may = fence.may_act();
            acting_tx.send_if_modified(|v| {
                let changed = *v != may;
                *v = may;
                changed
            });
            metrics.is_leader.set(i64::from(may));
            let until = fence.until_ms.load(Ordering::Acquire);
            let sleep_ms = if may {
                u64::try_from(until.saturating_sub(now_ms())).unwrap_or(0)
            } else {
                3_600_000
            };
            tokio::select! {
                _ = &mut stop_rx => break Ok(()),
                changed = held.changed() => match changed {
                    Ok(()) => {
                        let is = *held.borrow_and_update();
                        fence.holder.store(is, Ordering::Release);
                        tracing::info!(identity = %identity, leader = is, "lease ownership changed");
                    }
                    Err(_) => {
                        fence.holder.store(false, Ordering::Release);
                        break Err(Error::Lease("the lease manager stopped".into()));
                    }
                },
                event = lease_events.next() => match event {
                    Some(Ok(lease)) => {
                        let spec = lease.spec.unwrap_or_default();
                        let ours = spec.holder_identity.as_deref() == Some(identity.as_str());
                        let until = match (ours, spec.renew_time, spec.lease_duration_seconds) {
                            (true, Some(renew), Some(secs)) => {
                                renew.0.as_millisecond() + i64::from(secs) * 1000 - margin_ms
                            }
                            _ => 0,
                        };
                        fence.until_ms.store(until, Ordering::Release);
                    }
                    Some(Err(e)) => tracing::warn!(error = %e, "watching the lease"),
                    None => break Err(Error::Lease("the lease watch ended".into())),
                },
                _ = tokio::time::sleep(Duration::from_millis(sleep_ms)) => {}
            }
        };
        fence.holder.store(false, Ordering::Release);
        fence.until_ms.store(0, Ordering::Release);
        acting_tx.send_replace(false);
        metrics.is_leader.set(0);
        // Dropping the receiver makes the manager release the lease.
        drop(held);
        match tokio::time::timeout(Duration::from_secs(5), manager_task).await {
            Ok(Ok(Ok(_))) => tracing::info!("lease released"),
            Ok(Ok(Err(e))) => tracing::warn!(error = %e, "releasing the lease"),
            Ok(Err(e)) => tracing::warn!(error = %e, "lease manager task"),
            Err(_) => tracing::warn!("releasing the lease timed out"),
        }
        result
    });
    Ok(Leadership {
        fence,
        acting,
        stop: Some(stop_tx),
        task: Some(task),
        _always: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fence_needs_both_the_lease_and_a_fresh_renewal() {
        let f = Fence::default();
        assert!(!f.may_act());
        f.holder.store(true, Ordering::Release);
        assert!(!f.may_act(), "no renewal seen yet");
        f.until_ms.store(now_ms() + 10_000, Ordering::Release);
        assert!(f.may_act());
        f.until_ms.store(now_ms() - 1, Ordering::Release);
        assert!(f.check().is_err(), "renewal aged out: stop acting");
        assert!(Fence::always().may_act());
    }

    #[test]
    fn grace_is_a_third_of_the_duration() {
        let c = LeaderConfig {
            enabled: true,
            lease_name: "l".into(),
            namespace: "n".into(),
            identity: "i".into(),
            duration: Duration::from_secs(15),
        };
        assert_eq!(c.grace(), Duration::from_secs(5));
    }
}
