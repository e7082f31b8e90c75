//! Holding the node's Lease: reads it, decides ([`super::node_lease`]) and
//! writes with a resourceVersion precondition (an update with the version
//! read; a create that fails if another agent created it first), so of two
//! agents deciding at once only one write succeeds. The holder acts only
//! within [`acting_window`] of its last successful write, on its monotonic
//! clock; a Lease it cannot renew makes it stop acting. It renews only when
//! it is about to act ([`renew_before_acting`]): an idle holder writes
//! nothing and its Lease lapses, which [`super::neglect`] keeps other agents
//! from mistaking for a dead holder.

use super::node_lease::{
    Decision, LEASE_NAMESPACE, LeaseView, acting_window, decide, lease_name, renew_before_acting,
};
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::PostParams;
use kube::{Api, Client};
use std::time::{Duration, Instant};

/// What this agent knows about its node's Lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Standing {
    /// It holds the Lease and may act.
    Holder,
    /// Another agent holds it.
    Passive { holder: String },
    /// The Lease could not be read or written.
    Unknown { error: String },
}

#[derive(Debug)]
pub struct NodeLease {
    api: Api<Lease>,
    name: String,
    identity: String,
    duration: Duration,
    /// Until when this agent may act (monotonic).
    acting_until: Option<Instant>,
    /// The resourceVersion of the Lease as this agent last wrote it.
    written_rv: Option<String>,
    /// The Lease as this agent last wrote it, while it holds it: the next
    /// renewal writes it with that resourceVersion as the precondition and
    /// skips the read (an API server round trip per renewal, the largest
    /// part of the agent's cost beyond the scan); a 409 means someone else
    /// wrote since, and the renewal falls back to read-and-decide.
    written: Option<Lease>,
    /// Transitions the Lease had when last read.
    transitions: i32,
    /// Successful writes (create, renewal, take-over).
    writes: u64,
    /// A create or take-over succeeded since [`Self::take_acquired`] was
    /// last called: another agent may have acted since this one last did.
    acquired: bool,
}

impl NodeLease {
    pub fn new(client: &Client, node: &str, identity: String, duration: Duration) -> Self {
        Self {
            api: Api::namespaced(client.clone(), LEASE_NAMESPACE),
            name: lease_name(node),
            identity,
            duration,
            acting_until: None,
            written_rv: None,
            written: None,
            transitions: 0,
            writes: 0,
            acquired: false,
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn identity(&self) -> &str {
        &self.identity
    }

    /// Whether the Lease was created or taken over (not renewed) since the
    /// last call.
    pub fn take_acquired(&mut self) -> bool {
        std::mem::take(&mut self.acquired)
    }

    /// Successful Lease writes so far.
    pub fn writes(&self) -> u64 {
        self.writes
    }

    /// Whether this agent may act now.
    pub fn holds(&self) -> bool {
        self.acting_until.is_some_and(|u| Instant::now() < u)
    }

    /// Whether this agent should renew before it acts: it does not hold the
    /// Lease, or less than half its acting window is left.
    pub fn renew_due(&self) -> bool {
        let left = self.acting_until.map_or(Duration::ZERO, |u| {
            u.saturating_duration_since(Instant::now())
        });
        renew_before_acting(left, self.duration)
    }

    /// Creates, renews or takes over the Lease as decided from what it
    /// reads (renewing as last written skips the read). A Lease another
    /// agent let lapse is taken over only when `take_lapsed` (the node
    /// lacks an actor, see [`super::neglect`]). Every call is bounded by
    /// `budget`; on any error this agent stops acting (the safe direction).
    pub async fn tick(&mut self, budget: Duration, take_lapsed: bool) -> Standing {
        match tokio::time::timeout(budget, self.try_tick(take_lapsed)).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                self.acting_until = None;
                Standing::Unknown {
                    error: e.to_string(),
                }
            }
            Err(_) => {
                self.acting_until = None;
                Standing::Unknown {
                    error: "timeout: the API server did not answer in time".to_owned(),
                }
            }
        }
    }

    async fn try_tick(&mut self, take_lapsed: bool) -> Result<Standing, kube::Error> {
        if let Some(standing) = self.try_renew_as_written().await? {
            return Ok(standing);
        }
        let current = self.api.get_opt(&self.name).await?;
        let view = current.as_ref().map(LeaseView::of);
        if let Some(l) = &current {
            self.transitions = l
                .spec
                .as_ref()
                .and_then(|s| s.lease_transitions)
                .unwrap_or(0);
        }
        let decision = decide(
            view.as_ref(),
            &self.identity,
            Timestamp::now(),
            self.duration,
        );
        let sent = Instant::now();
        let now = MicroTime(Timestamp::now());
        let secs = self.duration_seconds();
        let acquiring = matches!(
            decision,
            Decision::Create | Decision::TakeOver | Decision::Lapsed { .. }
        );
        let written = match decision {
            Decision::HeldElsewhere { holder, .. } => {
                self.acting_until = None;
                self.written_rv = None;
                self.written = None;
                return Ok(Standing::Passive { holder });
            }
            // Its holder may only be idle: leave it unless the node lacks
            // an actor.
            Decision::Lapsed { holder } if !take_lapsed => {
                self.acting_until = None;
                self.written_rv = None;
                self.written = None;
                return Ok(Standing::Passive { holder });
            }
            Decision::Create => {
                let lease = Lease {
                    metadata: ObjectMeta {
                        name: Some(self.name.clone()),
                        namespace: Some(LEASE_NAMESPACE.to_owned()),
                        ..ObjectMeta::default()
                    },
                    spec: Some(LeaseSpec {
                        holder_identity: Some(self.identity.clone()),
                        lease_duration_seconds: Some(secs),
                        acquire_time: Some(now.clone()),
                        renew_time: Some(now),
                        lease_transitions: Some(0),
                        ..LeaseSpec::default()
                    }),
                };
                self.api.create(&PostParams::default(), &lease).await
            }
            Decision::Renew | Decision::TakeOver | Decision::Lapsed { .. } => {
                // `current` is Some here; its resourceVersion is the
                // precondition of the update.
                let Some(lease) = current else {
                    return Ok(Standing::Unknown {
                        error: "the Lease vanished".to_owned(),
                    });
                };
                let lease = self.claimed(lease, now, acquiring);
                self.api
                    .replace(&self.name, &PostParams::default(), &lease)
                    .await
            }
        };
        match written {
            Ok(l) => {
                self.writes += 1;
                self.acquired |= acquiring;
                self.acting_until = Some(sent + acting_window(self.duration));
                self.written_rv = l.metadata.resource_version.clone();
                self.written = Some(l);
                Ok(Standing::Holder)
            }
            // Another agent wrote first (409 on create or on the rv).
            Err(kube::Error::Api(s)) if s.code == 409 => {
                self.acting_until = None;
                self.written_rv = None;
                self.written = None;
                Ok(Standing::Unknown {
                    error: "another agent wrote the Lease first".to_owned(),
                })
            }
            Err(e) => Err(e),
        }
    }

    /// `lease` renewed in this agent's name at `now` (and, taking it over,
    /// acquired now: one more transition).
    fn claimed(&self, mut lease: Lease, now: MicroTime, take_over: bool) -> Lease {
        let mut spec = lease.spec.take().unwrap_or_default();
        if take_over {
            spec.acquire_time = Some(now.clone());
            spec.lease_transitions = Some(self.transitions.saturating_add(1));
        }
        spec.holder_identity = Some(self.identity.clone());
        spec.lease_duration_seconds = Some(self.duration_seconds());
        spec.renew_time = Some(now);
        lease.spec = Some(spec);
        lease
    }

    /// The lease duration as the Lease records it (whole seconds, at least 1).
    fn duration_seconds(&self) -> i32 {
        i32::try_from(self.duration.as_secs().max(1)).unwrap_or(i32::MAX)
    }

    /// Renews the Lease as this agent last wrote it, with that
    /// resourceVersion as the precondition, whether or not its acting
    /// window has ended: the write succeeds only if nobody has written the
    /// Lease since, so nobody else can have taken it (and acted) meanwhile.
    /// `None` when it has not written it, or when another writer came first
    /// (409): then the caller reads and decides.
    async fn try_renew_as_written(&mut self) -> Result<Option<Standing>, kube::Error> {
        let Some(lease) = self.written.take() else {
            return Ok(None);
        };
        let sent = Instant::now();
        let lease = self.claimed(lease, MicroTime(Timestamp::now()), false);
        match self
            .api
            .replace(&self.name, &PostParams::default(), &lease)
            .await
        {
            Ok(l) => {
                self.writes += 1;
                self.acting_until = Some(sent + acting_window(self.duration));
                self.written_rv = l.metadata.resource_version.clone();
                self.written = Some(l);
                Ok(Some(Standing::Holder))
            }
            Err(kube::Error::Api(s)) if s.code == 409 || s.code == 404 => Ok(None),
            Err(e) => {
                self.acting_until = None;
                Err(e)
            }
        }
    }

    /// Stops acting and clears the holder (if the Lease is still as this
    /// agent last wrote it, even lapsed), so another agent takes over at
    /// once.
    pub async fn release(&mut self, budget: Duration) -> Result<bool, String> {
        self.acting_until = None;
        self.written = None;
        let Some(rv) = self.written_rv.take() else {
            return Ok(false);
        };
        let release = async {
            let Some(mut lease) = self.api.get_opt(&self.name).await? else {
                return Ok(false);
            };
            if lease.metadata.resource_version.as_deref() != Some(rv.as_str()) {
                return Ok(false);
            }
            if let Some(spec) = lease.spec.as_mut() {
                spec.holder_identity = None;
            }
            self.api
                .replace(&self.name, &PostParams::default(), &lease)
                .await
                .map(|_| true)
        };
        match tokio::time::timeout(budget, release).await {
            Ok(Ok(done)) => Ok(done),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err("timeout".to_owned()),
        }
    }
}

/// This agent's identity: the Pod's name and UID (downward API), or the
/// host's name and the process id outside a Pod.
pub fn identity(pod_name: Option<&str>, pod_uid: Option<&str>) -> String {
    match (
        pod_name.filter(|s| !s.is_empty()),
        pod_uid.filter(|s| !s.is_empty()),
    ) {
        (Some(name), Some(uid)) => format!("{name}_{uid}"),
        (Some(name), None) => format!("{name}_{}", std::process::id()),
        _ => {
            let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|h| h.trim().to_owned())
                .ok()
                .filter(|h| !h.is_empty())
                .unwrap_or_else(|| "unknown-host".to_owned());
            format!("{host}_{}", std::process::id())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::identity;

    #[test]
    fn identities() {
        assert_eq!(identity(Some("a-x"), Some("u1")), "a-x_u1");
        let own = identity(None, None);
        assert!(own.ends_with(&format!("_{}", std::process::id())), "{own}");
        assert_eq!(identity(Some(""), Some("")), own);
    }
}
