//! Publishing the node's report: creating it (owned by its Node) and
//! writing its status by server-side apply — and deciding when to write:
//! when something significant changed, at the heartbeat, and after a failure
//! with jittered exponential backoff.

use super::significance::Significant;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{Api, ObjectMeta, Patch, PatchParams, PostParams};
use nodemedic_crds::conditions::field_manager;
use nodemedic_crds::{NodeHealthReport, NodeHealthReportSpec, NodeHealthReportStatus};
use std::time::{Duration, Instant};

/// Why a write is due.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteReason {
    /// Something significant changed (or nothing was written yet).
    Change,
    /// Nothing changed for a heartbeat.
    Heartbeat,
    /// An action request was accepted or finished.
    Action,
}

impl WriteReason {
    pub fn label(self) -> &'static str {
        match self {
            WriteReason::Change => "change",
            WriteReason::Heartbeat => "heartbeat",
            WriteReason::Action => "action",
        }
    }
}

/// When to write: pure bookkeeping, no I/O.
#[derive(Debug)]
pub struct WriteGate {
    heartbeat: Duration,
    last_ok: Option<Instant>,
    last_written: Option<Significant>,
    failures: u32,
    retry_at: Option<Instant>,
    seed: u64,
}

/// Backoff after failed writes: 1 s doubling up to 30 s, ±20% jitter so
/// that a fleet of agents does not hit a recovering API server in step.
pub const BACKOFF_BASE: Duration = Duration::from_secs(1);
pub const BACKOFF_MAX: Duration = Duration::from_secs(30);

impl WriteGate {
    pub fn new(heartbeat: Duration) -> Self {
        // Different agents, different jitter.
        let seed = u64::from(std::process::id())
            ^ std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.subsec_nanos().into());
        Self {
            heartbeat,
            last_ok: None,
            last_written: None,
            failures: 0,
            retry_at: None,
            seed,
        }
    }

    /// Whether a status with this significant part should be written now.
    pub fn due(&self, significant: &Significant, now: Instant) -> Option<WriteReason> {
        if self.retry_at.is_some_and(|t| now < t) {
            return None;
        }
        if self.last_written.as_ref() != Some(significant) {
            return Some(WriteReason::Change);
        }
        match self.last_ok {
            Some(t) if now.saturating_duration_since(t) < self.heartbeat => None,
            _ => Some(WriteReason::Heartbeat),
        }
    }

    /// What was last written successfully.
    pub fn last_written(&self) -> Option<&Significant> {
        self.last_written.as_ref()
    }

    /// When the next retry may happen, while writes are failing.
    pub fn retry_at(&self) -> Option<Instant> {
        self.retry_at
    }

    pub fn written(&mut self, significant: Significant, now: Instant) {
        self.last_ok = Some(now);
        self.last_written = Some(significant);
        self.failures = 0;
        self.retry_at = None;
    }

    /// Records a failed write; returns the delay before the next attempt.
    pub fn failed(&mut self, now: Instant) -> Duration {
        self.failures = self.failures.saturating_add(1);
        let exp = BACKOFF_BASE
            .saturating_mul(1u32 << self.failures.saturating_sub(1).min(16))
            .min(BACKOFF_MAX);
        // xorshift: a cheap, deterministic-per-agent jitter in [-20%, +20%].
        self.seed ^= self.seed << 13;
        self.seed ^= self.seed >> 7;
        self.seed ^= self.seed << 17;
        let permille = (self.seed % 401) as i64 - 200; // -200..=200
        let ms = exp.as_millis() as i64;
        let delay = Duration::from_millis((ms + ms * permille / 1000).max(1) as u64);
        self.retry_at = Some(now + delay);
        delay
    }

    /// Consecutive failed writes.
    pub fn failures(&self) -> u32 {
        self.failures
    }
}

/// Writes one node's report to the API server.
#[derive(Debug, Clone)]
pub struct Publisher {
    api: Api<NodeHealthReport>,
    node: String,
    owner: OwnerReference,
}

impl Publisher {
    /// `node_uid` makes the report owned by (and garbage-collected with) its Node.
    pub fn new(api: Api<NodeHealthReport>, node: &str, node_uid: &str) -> Self {
        Self {
            api,
            node: node.to_owned(),
            owner: OwnerReference {
                api_version: "v1".to_owned(),
                kind: "Node".to_owned(),
                name: node.to_owned(),
                uid: node_uid.to_owned(),
                block_owner_deletion: None,
                controller: None,
            },
        }
    }

    /// Creates the report (empty spec: the spec is the operator's) unless
    /// it exists.
    pub async fn ensure_exists(&self) -> Result<bool, kube::Error> {
        let report = NodeHealthReport {
            metadata: ObjectMeta {
                name: Some(self.node.clone()),
                owner_references: Some(vec![self.owner.clone()]),
                ..ObjectMeta::default()
            },
            spec: NodeHealthReportSpec::default(),
            status: None,
        };
        let pp = PostParams {
            field_manager: Some(field_manager::AGENT.to_owned()),
            ..PostParams::default()
        };
        match self.api.create(&pp, &report).await {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Applies `status` as the agent's whole status (server-side apply,
    /// field manager `nodemedic-agent`), creating the report if it is gone.
    pub async fn apply_status(&self, status: &NodeHealthReportStatus) -> Result<(), kube::Error> {
        let body = serde_json::json!({
            "apiVersion": "nodemedic.io/v1alpha1",
            "kind": "NodeHealthReport",
            "metadata": { "name": self.node },
            "status": status,
        });
        let pp = PatchParams::apply(field_manager::AGENT).force();
        match self
            .api
            .patch_status(&self.node, &pp, &Patch::Apply(&body))
            .await
        {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(s)) if s.code == 404 => {
                self.ensure_exists().await?;
                self.api
                    .patch_status(&self.node, &pp, &Patch::Apply(&body))
                    .await
                    .map(|_| ())
            }
            Err(e) => Err(e),
        }
    }
}

/// A short, stable label for a failed write (metrics and logs).
pub fn error_reason(e: &kube::Error) -> &'static str {
    match e {
        kube::Error::Api(s) => match s.code {
            403 => "forbidden",
            404 => "not_found",
            409 => "conflict",
            422 => "invalid",
            429 => "throttled",
            500..=599 => "server_error",
            _ => "rejected",
        },
        _ => "unavailable",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::significance::significant;
    use nodemedic_crds::NodeHealthReportStatus;

    #[test]
    fn writes_on_change_and_heartbeat_only() {
        let t0 = Instant::now();
        let mut gate = WriteGate::new(Duration::from_secs(300));
        let quiet = significant(&NodeHealthReportStatus {
            healthy: true,
            ..NodeHealthReportStatus::default()
        });
        assert_eq!(
            gate.due(&quiet, t0),
            Some(WriteReason::Change),
            "first write"
        );
        gate.written(quiet.clone(), t0);
        assert_eq!(gate.due(&quiet, t0 + Duration::from_secs(299)), None);
        assert_eq!(
            gate.due(&quiet, t0 + Duration::from_secs(300)),
            Some(WriteReason::Heartbeat)
        );
        let firing = significant(&NodeHealthReportStatus {
            healthy: false,
            ..NodeHealthReportStatus::default()
        });
        assert_eq!(
            gate.due(&firing, t0 + Duration::from_secs(1)),
            Some(WriteReason::Change)
        );
    }

    #[test]
    fn failures_back_off_with_jitter_up_to_a_cap() {
        let t0 = Instant::now();
        let mut gate = WriteGate::new(Duration::from_secs(300));
        let s = significant(&NodeHealthReportStatus::default());
        let mut delays = Vec::new();
        for _ in 0..10 {
            delays.push(gate.failed(t0));
        }
        assert!(
            delays[0] >= Duration::from_millis(800) && delays[0] <= Duration::from_millis(1200)
        );
        assert!(
            delays[1] >= Duration::from_millis(1600) && delays[1] <= Duration::from_millis(2400)
        );
        assert!(delays.iter().all(|d| *d <= BACKOFF_MAX + BACKOFF_MAX / 5));
        assert!(delays[9] >= BACKOFF_MAX - BACKOFF_MAX / 5);
        // Not before the retry time, even when something changed.
        assert_eq!(gate.due(&s, t0), None);
        assert!(gate.due(&s, t0 + BACKOFF_MAX * 2).is_some());
        gate.written(s, t0 + BACKOFF_MAX * 2);
        assert_eq!(gate.failures(), 0);
        assert_eq!(gate.retry_at(), None);
    }
}
