//! Plain-Rust view of a policy's detector thresholds, with durations parsed.
//! The agent evaluates findings against this; it holds no Kubernetes types.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::conditions::Detector;
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
    #[error("policy {policy}: {source}")]
    Policy {
        policy: String,
        #[source]
        source: Box<ThresholdError>,
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
    /// Fire for a process whose fds reach its soft limit within this long
    /// at the fitted growth rate.
    pub exhaustion_within: Option<Duration>,
    /// file-nr / file-max, in (0, 1].
    pub node_file_ratio: f64,
    pub for_duration: Duration,
}

/// The window fd growth is fitted over when `growth` is omitted (the
/// default of `growth.window`).
pub const DEFAULT_FD_FIT_WINDOW: Duration = Duration::from_secs(600);

/// Longest `exhaustionWithin` the schema accepts (also checked here for
/// policies read from files).
pub const MAX_EXHAUSTION_WITHIN: Duration = Duration::from_secs(168 * 3600);

impl FdLeakThresholds {
    /// The window over which fd growth (and so the ETA) is fitted.
    pub fn fit_window(&self) -> Duration {
        self.growth
            .as_ref()
            .map_or(DEFAULT_FD_FIT_WINDOW, |g| g.window)
    }
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
}

impl HungTaskThresholds {
    fn from_detector(d: &HungTaskDetector) -> Result<Self, ThresholdError> {
        Ok(Self {
            min_duration: duration("hungTasks.minDuration", d.min_duration.as_str())?,
            threshold: d.threshold,
            for_duration: duration("hungTasks.for", d.for_duration.as_str())?,
        })
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
        let exhaustion_within = match &d.exhaustion_within {
            Some(w) => {
                let w = duration("fdLeak.exhaustionWithin", w.as_str())?;
                if w < Duration::from_secs(60) || w > MAX_EXHAUSTION_WITHIN {
                    return Err(ThresholdError::OutOfRange {
                        field: "fdLeak.exhaustionWithin",
                        value: crate::duration::format_duration(w),
                        range: "[1m, 168h]",
                    });
                }
                Some(w)
            }
            None => None,
        };
        Ok(Self {
            usage_ratio: unit_ratio("fdLeak.usageRatio", d.usage_ratio)?,
            min_open_fds: d.min_open_fds,
            growth,
            exhaustion_within,
            node_file_ratio: unit_ratio("fdLeak.nodeFileRatio", d.node_file_ratio)?,
            for_duration: duration("fdLeak.for", d.for_duration.as_str())?,
        })
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

    /// Whether `detector` is configured.
    pub fn enabled(&self, detector: Detector) -> bool {
        match detector {
            Detector::Zombies => self.zombies.is_some(),
            Detector::HungTasks => self.hung_tasks.is_some(),
            Detector::FdLeak => self.fd_leak.is_some(),
            Detector::CpuThrottling => self.cpu_throttling.is_some(),
        }
    }

    /// The detector's `for` (hysteresis) duration, when it is configured.
    pub fn for_duration(&self, detector: Detector) -> Option<Duration> {
        match detector {
            Detector::Zombies => self.zombies.as_ref().map(|t| t.for_duration),
            Detector::HungTasks => self.hung_tasks.as_ref().map(|t| t.for_duration),
            Detector::FdLeak => self.fd_leak.as_ref().map(|t| t.for_duration),
            Detector::CpuThrottling => self.cpu_throttling.as_ref().map(|t| t.for_duration),
        }
    }
}

/// One policy as it applies to a node: its name, thresholds and the
/// processes it protects.
#[derive(Debug, Clone, PartialEq)]
pub struct SelectedPolicy {
    pub name: String,
    pub thresholds: EffectiveThresholds,
    /// `safety.protectedProcesses` (added to the agent's built-ins).
    pub protected_processes: Vec<String>,
}

impl SelectedPolicy {
    /// Reads one policy's thresholds.
    pub fn from_policy(policy: &NodeHealthPolicy) -> Result<Self, ThresholdError> {
        let name = policy.metadata.name.clone().unwrap_or_default();
        let thresholds =
            EffectiveThresholds::from_spec(&policy.spec).map_err(|e| ThresholdError::Policy {
                policy: name.clone(),
                source: Box::new(e),
            })?;
        Ok(Self {
            name,
            thresholds,
            protected_processes: policy.spec.safety.protected_processes.clone(),
        })
    }
}

/// The policies that apply to a node, each evaluated on its own, and the
/// ones that could not be read (a bad selector or threshold in one policy
/// never stops the others).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NodePolicies {
    /// Policies selecting the node, sorted by name.
    pub selected: Vec<SelectedPolicy>,
    /// Policies that could not be evaluated, with the reason.
    pub rejected: Vec<ThresholdError>,
}

impl NodePolicies {
    /// Every policy whose nodeSelector selects a node with `labels`.
    pub fn for_node<'a>(
        policies: impl IntoIterator<Item = &'a NodeHealthPolicy>,
        labels: &BTreeMap<String, String>,
    ) -> Self {
        let mut out = Self::default();
        for policy in policies {
            let name = policy.metadata.name.clone().unwrap_or_default();
            match selects(policy.spec.node_selector.as_ref(), labels) {
                Ok(false) => {}
                Ok(true) => match SelectedPolicy::from_policy(policy) {
                    Ok(p) => out.selected.push(p),
                    Err(e) => out.rejected.push(e),
                },
                Err(source) => out.rejected.push(ThresholdError::Selector {
                    policy: name,
                    source,
                }),
            }
        }
        out.selected.sort_by(|a, b| a.name.cmp(&b.name));
        out
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

    #[test]
    fn exhaustion_within_is_parsed_bounded_and_fits_over_the_growth_window() {
        let with = |within: &'static str, growth: Option<FdGrowth>| Detectors {
            fd_leak: Some(FdLeakDetector {
                exhaustion_within: Some(KubeDuration::from_static(within)),
                growth,
                ..Default::default()
            }),
            ..Default::default()
        };
        let t = EffectiveThresholds::from_spec(&spec(with("1h", None), None)).expect("valid");
        let f = t.fd_leak.expect("fd leak on");
        assert_eq!(f.exhaustion_within, Some(Duration::from_secs(3600)));
        assert_eq!(f.fit_window(), DEFAULT_FD_FIT_WINDOW);
        let growth = FdGrowth {
            min_fds_per_minute: 5.0,
            window: KubeDuration::from_static("30m"),
        };
        let t =
            EffectiveThresholds::from_spec(&spec(with("2h", Some(growth)), None)).expect("valid");
        assert_eq!(
            t.fd_leak.map(|f| f.fit_window()),
            Some(Duration::from_secs(1800))
        );
        for bad in ["30s", "169h"] {
            let err = EffectiveThresholds::from_spec(&spec(with(bad, None), None))
                .expect_err("out of range");
            assert!(
                err.to_string().starts_with("fdLeak.exhaustionWithin: ")
                    && err.to_string().ends_with("is outside [1m, 168h]"),
                "{err}"
            );
        }
        let err = EffectiveThresholds::from_spec(&spec(with("soon", None), None))
            .expect_err("not a duration");
        assert!(
            err.to_string().starts_with("fdLeak.exhaustionWithin:"),
            "{err}"
        );
    }

    fn policy(name: &str, detectors: Detectors, pool: Option<&str>) -> NodeHealthPolicy {
        let selector = pool.map(|p| LabelSelector {
            match_labels: Some([("pool".to_owned(), p.to_owned())].into()),
            match_expressions: None,
        });
        NodeHealthPolicy::new(name, spec(detectors, selector))
    }

    #[test]
    fn each_selecting_policy_keeps_its_own_thresholds() {
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
                ..Default::default()
            },
            Some("batch"),
        );
        let policies = [strict_batch, lenient];
        let web: BTreeMap<String, String> = [("pool".to_owned(), "web".to_owned())].into();
        let batch: BTreeMap<String, String> = [("pool".to_owned(), "batch".to_owned())].into();

        let on_web = NodePolicies::for_node(&policies, &web);
        assert!(on_web.rejected.is_empty());
        let names: Vec<&str> = on_web.selected.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["lenient"]);

        let on_batch = NodePolicies::for_node(&policies, &batch);
        let names: Vec<&str> = on_batch.selected.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["lenient", "strict-batch"], "sorted by name");
        let lenient = &on_batch.selected[0].thresholds;
        let strict = &on_batch.selected[1].thresholds;
        assert_eq!(lenient.zombies.as_ref().map(|z| z.threshold), Some(100));
        assert_eq!(strict.zombies.as_ref().map(|z| z.threshold), Some(10));
        assert_eq!(
            strict.zombies.as_ref().map(|z| z.min_age),
            Some(Duration::from_secs(30))
        );
        assert!(lenient.enabled(Detector::FdLeak) && !strict.enabled(Detector::FdLeak));
        assert_eq!(
            strict.for_duration(Detector::Zombies),
            Some(Duration::from_secs(120))
        );
    }

    #[test]
    fn a_broken_policy_does_not_stop_the_others() {
        let mut broken = policy(
            "broken",
            Detectors {
                zombies: Some(ZombieDetector::default()),
                ..Default::default()
            },
            None,
        );
        broken.spec.node_selector = Some(LabelSelector {
            match_labels: None,
            match_expressions: Some(vec![
                k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement {
                    key: "pool".to_owned(),
                    operator: "Near".to_owned(),
                    values: None,
                },
            ]),
        });
        let mut bad_duration = policy(
            "bad-duration",
            Detectors {
                hung_tasks: Some(HungTaskDetector::default()),
                ..Default::default()
            },
            None,
        );
        if let Some(h) = bad_duration.spec.detectors.hung_tasks.as_mut() {
            h.min_duration = KubeDuration::from_static("soon");
        }
        let fine = policy(
            "fine",
            Detectors {
                zombies: Some(ZombieDetector::default()),
                ..Default::default()
            },
            None,
        );
        let labels: BTreeMap<String, String> = [("pool".to_owned(), "web".to_owned())].into();
        let got = NodePolicies::for_node([&broken, &bad_duration, &fine], &labels);
        let names: Vec<&str> = got.selected.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["fine"]);
        let errors: Vec<String> = got.rejected.iter().map(ToString::to_string).collect();
        assert_eq!(errors.len(), 2, "{errors:?}");
        assert!(
            errors[0].starts_with("policy broken: nodeSelector:"),
            "{errors:?}"
        );
        assert!(
            errors[1].starts_with("policy bad-duration: hungTasks.minDuration:"),
            "{errors:?}"
        );
    }

    #[test]
    fn nothing_selected_when_no_selector_matches() {
        let only_batch = policy("batch", Detectors::default(), Some("batch"));
        let web: BTreeMap<String, String> = [("pool".to_owned(), "web".to_owned())].into();
        assert_eq!(
            NodePolicies::for_node([&only_batch], &web),
            NodePolicies::default()
        );
    }
}
