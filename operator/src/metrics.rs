//! Prometheus metrics (OpenMetrics text on `/metrics`). Every family is
//! documented in `docs/operator.md`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// `{policy, action, outcome}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ActionLabels {
    pub policy: String,
    pub action: String,
    pub outcome: String,
}

/// `{policy}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PolicyLabels {
    pub policy: String,
}

/// `{reason}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: String,
}

/// `{resource, verb}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WriteLabels {
    pub resource: String,
    pub verb: String,
}

/// `{kind}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    pub kind: String,
}

/// The operator's metrics.
#[derive(Debug)]
pub struct Metrics {
    pub registry: Registry,
    pub actions: Family<ActionLabels, Counter>,
    pub unhealthy_nodes: Family<PolicyLabels, Gauge>,
    pub stale_reports: Family<PolicyLabels, Gauge>,
    pub storm_active: Family<PolicyLabels, Gauge>,
    pub reconcile_duration: Histogram,
    pub reconcile_errors: Family<ReasonLabels, Counter>,
    pub is_leader: Gauge,
    pub api_writes: Family<WriteLabels, Counter>,
    pub undecodable: Family<KindLabels, Gauge>,
    pub drain_passes_running: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Creates and registers every family.
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let actions = Family::<ActionLabels, Counter>::default();
        registry.register(
            "nodemedic_operator_actions",
            "Remediation actions decided, by policy, action and outcome (Planned, Executed, Failed, Skipped)",
            actions.clone(),
        );
        let unhealthy_nodes = Family::<PolicyLabels, Gauge>::default();
        registry.register(
            "nodemedic_operator_unhealthy_nodes",
            "Selected nodes with a fresh report in which a detector of the policy fires",
            unhealthy_nodes.clone(),
        );
        let stale_reports = Family::<PolicyLabels, Gauge>::default();
        registry.register(
            "nodemedic_operator_stale_reports",
            "Selected nodes whose report is older than three heartbeats",
            stale_reports.clone(),
        );
        let storm_active = Family::<PolicyLabels, Gauge>::default();
        registry.register(
            "nodemedic_operator_storm_active",
            "1 while more selected nodes than safety.maxUnhealthy are unhealthy or unknown",
            storm_active.clone(),
        );
        let reconcile_duration = Histogram::new(exponential_buckets(0.001, 2.0, 16));
        registry.register(
            "nodemedic_operator_reconcile_duration_seconds",
            "Duration of one policy reconcile (plan, act, write)",
            reconcile_duration.clone(),
        );
        let reconcile_errors = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "nodemedic_operator_reconcile_errors",
            "Failed reconciles by error reason",
            reconcile_errors.clone(),
        );
        let is_leader = Gauge::default();
        registry.register(
            "nodemedic_operator_is_leader",
            "1 while this process holds the lease and may act",
            is_leader.clone(),
        );
        let api_writes = Family::<WriteLabels, Counter>::default();
        registry.register(
            "nodemedic_operator_api_writes",
            "Write requests sent to the API server, by resource and verb",
            api_writes.clone(),
        );
        let undecodable = Family::<KindLabels, Gauge>::default();
        registry.register(
            "nodemedic_operator_undecodable_objects",
            "Watched objects left out of the caches because they do not decode, by kind",
            undecodable.clone(),
        );
        let drain_passes_running = Gauge::default();
        registry.register(
            "nodemedic_operator_drain_passes_running",
            "Drain passes running in the background now (at most one per draining node)",
            drain_passes_running.clone(),
        );
        Self {
            registry,
            undecodable,
            drain_passes_running,
            actions,
            unhealthy_nodes,
            stale_reports,
            storm_active,
            reconcile_duration,
            reconcile_errors,
            is_leader,
            api_writes,
        }
    }

    /// Sets how many objects of `kind` do not decode.
    pub fn undecodable(&self, kind: &str, count: usize) {
        self.undecodable
            .get_or_create(&KindLabels {
                kind: kind.to_owned(),
            })
            .set(i64::try_from(count).unwrap_or(i64::MAX));
    }

    /// Counts one write request.
    pub fn write(&self, resource: &str, verb: &str) {
        self.api_writes
            .get_or_create(&WriteLabels {
                resource: resource.to_owned(),
                verb: verb.to_owned(),
            })
            .inc();
    }

    /// Sets the per-policy gauges.
    pub fn policy_gauges(&self, policy: &str, unhealthy: u32, stale: usize, storm: bool) {
        let l = PolicyLabels {
            policy: policy.to_owned(),
        };
        self.unhealthy_nodes
            .get_or_create(&l)
            .set(i64::from(unhealthy));
        self.stale_reports
            .get_or_create(&l)
            .set(i64::try_from(stale).unwrap_or(i64::MAX));
        self.storm_active.get_or_create(&l).set(i64::from(storm));
    }

    /// Drops the per-policy gauges of a deleted policy.
    pub fn forget_policy(&self, policy: &str) {
        let l = PolicyLabels {
            policy: policy.to_owned(),
        };
        self.unhealthy_nodes.remove(&l);
        self.stale_reports.remove(&l);
        self.storm_active.remove(&l);
    }

    /// The OpenMetrics text.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_documented_family_is_exposed() {
        let m = Metrics::new();
        m.actions
            .get_or_create(&ActionLabels {
                policy: "p".into(),
                action: "Cordon".into(),
                outcome: "Executed".into(),
            })
            .inc();
        m.policy_gauges("p", 3, 1, true);
        m.reconcile_errors
            .get_or_create(&ReasonLabels {
                reason: "Conflict".into(),
            })
            .inc();
        m.reconcile_duration.observe(0.01);
        m.is_leader.set(1);
        let text = m.encode();
        for needle in [
            "nodemedic_operator_actions_total{policy=\"p\",action=\"Cordon\",outcome=\"Executed\"} 1",
            "nodemedic_operator_unhealthy_nodes{policy=\"p\"} 3",
            "nodemedic_operator_stale_reports{policy=\"p\"} 1",
            "nodemedic_operator_storm_active{policy=\"p\"} 1",
            "nodemedic_operator_reconcile_duration_seconds_bucket",
            "nodemedic_operator_reconcile_errors_total{reason=\"Conflict\"} 1",
            "nodemedic_operator_is_leader 1",
        ] {
            assert!(text.contains(needle), "missing {needle} in\n{text}");
        }
    }
}
