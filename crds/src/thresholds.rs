//! Plain-Rust view of a policy's detector thresholds, with durations parsed.
//! The agent evaluates findings against this; it holds no Kubernetes types.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::duration::{DurationError, parse_duration};
use crate::policy::{
    CpuThrottlingDetector, FdLeakDetector, HungTaskDetector, NodeHealthPolicy,
    NodeHealthPolicySpec, ZombieDetector,
};
use crate::selector::{SelectorError, selects};

/// A policy value that cannot be turned into thresholds.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ThresholdError {
    #[error("{field}: {source}")]
    Duration {
        field: &'static str,
        #[source]
        source: DurationError,
    },
    #[error("{field}: {value} is outside {range}")]
    OutOfRange {
        field: &'static str,
        value: String,
        range: &'static str,
    },
    #[error("policy {policy}: nodeSelector: {source}")]
    Selector {
        policy: String,
        #[source]
        source: SelectorError,
    },
}

/// Thresholds of every enabled detector. `None` = detector off.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct EffectiveThresholds {
    pub zombies: Option<ZombieThresholds>,
    pub hung_tasks: Option<HungTaskThresholds>,
    pub fd_leak: Option<FdLeakThresholds>,
    pub cpu_throttling: Option<CpuThrottlingThresholds>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ZombieThresholds {
    /// Zombies per node.
    pub threshold: u32,
    pub per_parent_threshold: u32,
    pub min_age: Duration,
    pub for_duration: Duration,
}

#[derive(Debug, Clone, PartialEq)]
pub struct HungTaskThresholds {
    pub min_duration: Duration,
    /// Hung threads per node.
    pub threshold: u32,
    pub for_duration: Duration,
}

#[derive(Debug, Clone, PartialEq)]
pub struct FdLeakThresholds {
    /// Fraction of the soft RLIMIT_NOFILE, in (0, 1].
    pub usage_ratio: f64,
    pub min_open_fds: u64,
    pub growth: Option<FdGrowthThresholds>,
    /// file-nr / file-max, in (0, 1].
    pub node_file_ratio: f64,
    pub for_duration: Duration,
}

#[derive(Debug, Clone, PartialEq)]
pub struct FdGrowthThresholds {
    pub min_fds_per_minute: f64,
    pub window: Duration,
}

#[derive(Debug, Clone, PartialEq)]
pub struct CpuThrottlingThresholds {
    /// nr_throttled / nr_periods over the window, in (0, 1].
    pub throttled_ratio: f64,
    pub min_periods: u64,
    pub window: Duration,
    pub for_duration: Duration,
}

fn duration(field: &'static str, text: &str) -> Result<Duration, ThresholdError> {
    parse_duration(text).map_err(|source| ThresholdError::Duration { field, source })
}

fn unit_ratio(field: &'static str, value: f64) -> Result<f64, ThresholdError> {
    if value > 0.0 && value <= 1.0 {
        Ok(value)
    } else {
        Err(ThresholdError::OutOfRange {
            field,
            value: value.to_string(),
            range: "(0, 1]",
        })
    }
}

impl ZombieThresholds {
    fn from_detector(d: &ZombieDetector) -> Result<Self, ThresholdError> {
        Ok(Self {
            threshold: d.threshold,
            per_parent_threshold: d.per_parent_threshold,
            min_age: duration("zombies.minAge", d.min_age.as_str())?,
            for_duration: duration("zombies.for", d.for_duration.as_str())?,
        })
    }

    fn strictest(self, other: Self) -> Self {
        Self {
            threshold: self.threshold.min(other.threshold),
            per_parent_threshold: self.per_parent_threshold.min(other.per_parent_threshold),
            min_age: self.min_age.min(other.min_age),
            for_duration: self.for_duration.min(other.for_duration),
        }
    }
}

impl HungTaskThresholds {
    fn from_detector(d: &HungTaskDetector) -> Result<Self, ThresholdError> {
        Ok(Self {
            min_duration: duration("hungTasks.minDuration", d.min_duration.as_str())?,
            threshold: d.threshold,
            for_duration: duration("hungTasks.for", d.for_duration.as_str())?,
        })
    }

    fn strictest(self, other: Self) -> Self {
        Self {
            min_duration: self.min_duration.min(other.min_duration),
            threshold: self.threshold.min(other.threshold),
            for_duration: self.for_duration.min(other.for_duration),
        }
    }
}

impl FdLeakThresholds {
    fn from_detector(d: &FdLeakDetector) -> Result<Self, ThresholdError> {
        let growth = match &d.growth {
            Some(g) => Some(FdGrowthThresholds {
                min_fds_per_minute: if g.min_fds_per_minute > 0.0 {
                    g.min_fds_per_minute
                } else {
                    return Err(ThresholdError::OutOfRange {
                        field: "fdLeak.growth.minFdsPerMinute",
                        value: g.min_fds_per_minute.to_string(),
                        range: "(0, inf)",
                    });
                },
                window: duration("fdLeak.growth.window", g.window.as_str())?,
            }),
            None => None,
        };
        Ok(Self {
            usage_ratio: unit_ratio("fdLeak.usageRatio", d.usage_ratio)?,
            min_open_fds: d.min_open_fds,
            growth,
            node_file_ratio: unit_ratio("fdLeak.nodeFileRatio", d.node_file_ratio)?,
            for_duration: duration("fdLeak.for", d.for_duration.as_str())?,
        })
    }

    fn strictest(self, other: Self) -> Self {
        let growth = match (self.growth, other.growth) {
            (Some(a), Some(b)) => Some(FdGrowthThresholds {
                min_fds_per_minute: a.min_fds_per_minute.min(b.min_fds_per_minute),
                window: a.window.min(b.window),
            }),
            (a, b) => a.or(b),
        };
        Self {
            usage_ratio: self.usage_ratio.min(other.usage_ratio),
            min_open_fds: self.min_open_fds.min(other.min_open_fds),
            growth,
            node_file_ratio: self.node_file_ratio.min(other.node_file_ratio),
            for_duration: self.for_duration.min(other.for_duration),
        }
    }
}

impl CpuThrottlingThresholds {
    fn from_detector(d: &CpuThrottlingDetector) -> Result<Self, ThresholdError> {
        Ok(Self {
            throttled_ratio: unit_ratio("cpuThrottling.throttledRatio", d.throttled_ratio)?,
            min_periods: d.min_periods,
            window: duration("cpuThrottling.window", d.window.as_str())?,
            for_duration: duration("cpuThrottling.for", d.for_duration.as_str())?,
        })
    }

    fn strictest(self, other: Self) -> Self {
        Self {
            throttled_ratio: self.throttled_ratio.min(other.throttled_ratio),
            min_periods: self.min_periods.min(other.min_periods),
            window: self.window.min(other.window),
            for_duration: self.for_duration.min(other.for_duration),
        }
    }
}

fn merge<T>(a: Option<T>, b: Option<T>, strictest: fn(T, T) -> T) -> Option<T> {
    match (a, b) {
        (Some(a), Some(b)) => Some(strictest(a, b)),
        (a, b) => a.or(b),
    }
}

impl EffectiveThresholds {
    /// What `nodemedic-agent scan` uses without `--policy`: every detector on,
    /// with the API defaults.
    pub fn builtin_defaults() -> Self {
        let d = crate::policy::Detectors {
            zombies: Some(ZombieDetector::default()),
            hung_tasks: Some(HungTaskDetector::default()),
            fd_leak: Some(FdLeakDetector::default()),
            cpu_throttling: Some(CpuThrottlingDetector::default()),
        };
        // The defaults are literals of this crate, covered by a unit test.
        Self::from_detectors(&d).unwrap_or_default()
    }

    /// Thresholds of one policy.
    pub fn from_spec(spec: &NodeHealthPolicySpec) -> Result<Self, ThresholdError> {
        Self::from_detectors(&spec.detectors)
    }

    fn from_detectors(d: &crate::policy::Detectors) -> Result<Self, ThresholdError> {
        Ok(Self {
            zombies: d
                .zombies
                .as_ref()
                .map(ZombieThresholds::from_detector)
                .transpose()?,
            hung_tasks: d
                .hung_tasks
                .as_ref()
                .map(HungTaskThresholds::from_detector)
                .transpose()?,
            fd_leak: d
                .fd_leak
                .as_ref()
                .map(FdLeakThresholds::from_detector)
                .transpose()?,
            cpu_throttling: d
                .cpu_throttling
                .as_ref()
                .map(CpuThrottlingThresholds::from_detector)
                .transpose()?,
        })
    }

    /// Combines two threshold sets so that whatever either would report is
    /// reported: a detector is on if either has it, with the lower bar.
    pub fn strictest(self, other: Self) -> Self {
        Self {
            zombies: merge(self.zombies, other.zombies, ZombieThresholds::strictest),
            hung_tasks: merge(
                self.hung_tasks,
                other.hung_tasks,
                HungTaskThresholds::strictest,
            ),
            fd_leak: merge(self.fd_leak, other.fd_leak, FdLeakThresholds::strictest),
            cpu_throttling: merge(
                self.cpu_throttling,
                other.cpu_throttling,
                CpuThrottlingThresholds::strictest,
            ),
        }
    }

    /// The thresholds that apply to a node with `labels`: the strictest
    /// combination over every policy selecting it. `None` when no policy
    /// selects the node.
    pub fn for_node<'a>(
        policies: impl IntoIterator<Item = &'a NodeHealthPolicy>,
        labels: &BTreeMap<String, String>,
    ) -> Result<Option<Self>, ThresholdError> {
        let mut combined: Option<Self> = None;
        for policy in policies {
            let selected =
                selects(policy.spec.node_selector.as_ref(), labels).map_err(|source| {
                    ThresholdError::Selector {
                        policy: policy.metadata.name.clone().unwrap_or_default(),
                        source,
                    }
                })?;
            if !selected {
                continue;
            }
            let these = Self::from_spec(&policy.spec)?;
            combined = Some(match combined {
                Some(existing) => existing.strictest(these),
                None => these,
            });
        }
        Ok(combined)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::duration::KubeDuration;
    use crate::policy::{Detectors, FdGrowth};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

    fn spec(detectors: Detectors, selector: Option<LabelSelector>) -> NodeHealthPolicySpec {
        NodeHealthPolicySpec {
            node_selector: selector,
            mode: Default::default(),
            detectors,
            actions: Default::default(),
            safety: Default::default(),
        }
    }

    #[test]
    fn builtin_defaults_enable_everything_with_api_defaults() {
        let t = EffectiveThresholds::builtin_defaults();
        let z = t.zombies.expect("zombies on");
        assert_eq!((z.threshold, z.per_parent_threshold), (50, 20));
        assert_eq!(z.min_age, Duration::from_secs(60));
        let h = t.hung_tasks.expect("hung tasks on");
        assert_eq!(h.min_duration, Duration::from_secs(120));
        let f = t.fd_leak.expect("fd leak on");
        assert_eq!(f.usage_ratio, 0.8);
        let c = t.cpu_throttling.expect("throttling on");
        assert_eq!(c.window, Duration::from_secs(300));
    }

    #[test]
    fn omitted_detectors_are_off() {
        let d = Detectors {
            zombies: Some(ZombieDetector::default()),
            ..Default::default()
        };
        let t = EffectiveThresholds::from_spec(&spec(d, None)).expect("valid");
        assert!(t.zombies.is_some());
        assert!(t.hung_tasks.is_none() && t.fd_leak.is_none() && t.cpu_throttling.is_none());
    }

    #[test]
    fn bad_values_name_the_field() {
        let d = Detectors {
            hung_tasks: Some(HungTaskDetector {
                min_duration: KubeDuration::from_static("2 minutes"),
                ..Default::default()
            }),
            ..Default::default()
        };
        let err = EffectiveThresholds::from_spec(&spec(d, None)).expect_err("invalid duration");
        assert!(
            err.to_string().starts_with("hungTasks.minDuration:"),
            "{err}"
        );

        let d = Detectors {
            fd_leak: Some(FdLeakDetector {
                usage_ratio: 1.5,
                ..Default::default()
            }),
            ..Default::default()
        };
        let err = EffectiveThresholds::from_spec(&spec(d, None)).expect_err("ratio > 1");
        assert_eq!(err.to_string(), "fdLeak.usageRatio: 1.5 is outside (0, 1]");
    }

    fn policy(name: &str, detectors: Detectors, pool: Option<&str>) -> NodeHealthPolicy {
        let selector = pool.map(|p| LabelSelector {
            match_labels: Some([("pool".to_owned(), p.to_owned())].into()),
            match_expressions: None,
        });
        NodeHealthPolicy::new(name, spec(detectors, selector))
    }

    #[test]
    fn for_node_takes_the_strictest_of_matching_policies() {
        let lenient = policy(
            "lenient",
            Detectors {
                zombies: Some(ZombieDetector {
                    threshold: 100,
                    ..Default::default()
                }),
                fd_leak: Some(FdLeakDetector {
                    usage_ratio: 0.9,
                    growth: Some(FdGrowth {
                        min_fds_per_minute: 10.0,
                        window: KubeDuration::from_static("10m"),
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            },
            None,
        );
        let strict_batch = policy(
            "strict-batch",
            Detectors {
                zombies: Some(ZombieDetector {
                    threshold: 10,
                    min_age: KubeDuration::from_static("30s"),
                    ..Default::default()
                }),
                fd_leak: Some(FdLeakDetector {
                    usage_ratio: 0.5,
                    ..Default::default()
                }),
                ..Default::default()
            },
            Some("batch"),
        );
        let policies = [lenient, strict_batch];
        let web: BTreeMap<String, String> = [("pool".to_owned(), "web".to_owned())].into();
        let batch: BTreeMap<String, String> = [("pool".to_owned(), "batch".to_owned())].into();

        let on_web = EffectiveThresholds::for_node(&policies, &web)
            .expect("valid")
            .expect("lenient selects all");
        assert_eq!(on_web.zombies.as_ref().map(|z| z.threshold), Some(100));

        let on_batch = EffectiveThresholds::for_node(&policies, &batch)
            .expect("valid")
            .expect("both select batch");
        let z = on_batch.zombies.expect("zombies on");
        assert_eq!(z.threshold, 10);
        assert_eq!(z.min_age, Duration::from_secs(30));
        let f = on_batch.fd_leak.expect("fd on");
        assert_eq!(f.usage_ratio, 0.5);
        // Growth rule kept from the only policy that has one.
        assert_eq!(f.growth.map(|g| g.min_fds_per_minute), Some(10.0));
        assert!(on_batch.hung_tasks.is_none());
    }

    #[test]
    fn for_node_none_when_nothing_selects() {
        let only_batch = policy("batch", Detectors::default(), Some("batch"));
        let web: BTreeMap<String, String> = [("pool".to_owned(), "web".to_owned())].into();
        assert_eq!(EffectiveThresholds::for_node([&only_batch], &web), Ok(None));
    }
}
