//! Detector thresholds come from the API crate, so that the agent and the
//! operator read a policy the same way.

pub use nodemedic_crds::thresholds::{
    CpuThrottlingThresholds, EffectiveThresholds, FdGrowthThresholds, FdLeakThresholds,
    HungTaskThresholds, ThresholdError, ZombieThresholds,
};
