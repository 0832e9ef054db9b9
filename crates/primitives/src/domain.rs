//! Domain specifications: what an optimization target is, as registered on chain.

use borsh::{BorshDeserialize, BorshSerialize};
use serde::{Deserialize, Serialize};

use crate::{
    codec::{BoundedString, BoundedVec},
    units::{Amount, FIXED_ONE, Metric},
};

/// Maximum parameters in one domain's space (and in one optimae).
pub const MAX_PARAMS: usize = 256;
/// Largest first-round quorum a domain may ask for; escalation quorums hold `2k + 1`.
pub const MAX_QUORUM: u16 = 64;

/// One million: relative tolerances are in parts per million.
pub const PPM: u32 = 1_000_000;

/// A domain's name, as in the Python system's `domain_id` (`"quadratic"`, `"mlp_iris"`).
pub type DomainId = BoundedString<64>;

/// Which way is better.
#[derive(Clone, Copy, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// Higher metric is better (`higher_is_better: true`).
    Maximize,
    /// Lower metric is better (losses, errors).
    Minimize,
}

impl Direction {
    /// How much `a` is better than `b` (negative when worse), checked.
    pub fn gain(self, a: Metric, b: Metric) -> Option<i64> {
        match self {
            Self::Maximize => a.0.checked_sub(b.0),
            Self::Minimize => b.0.checked_sub(a.0),
        }
    }
}

/// The range of one parameter. Values travel as `i64`: nano-units for continuous parameters,
/// plain integers for integer parameters, and the index for categorical ones.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ParamKind {
    /// A real number in `[min, max]` (nano-units).
    Continuous {
        /// Lower bound.
        min: Metric,
        /// Upper bound.
        max: Metric,
    },
    /// A real number in `[min, max]`, searched on a log scale (both > 0).
    LogContinuous {
        /// Lower bound.
        min: Metric,
        /// Upper bound.
        max: Metric,
    },
    /// An integer in `[min, max]`.
    Integer {
        /// Lower bound.
        min: i64,
        /// Upper bound.
        max: i64,
    },
    /// One of the named choices, by index.
    Categorical {
        /// The choices.
        choices: BoundedVec<BoundedString<64>, 64>,
    },
}

impl ParamKind {
    /// The inclusive integer range a value must fall in.
    pub fn range(&self) -> (i64, i64) {
        match self {
            Self::Continuous { min, max } | Self::LogContinuous { min, max } => (min.0, max.0),
            Self::Integer { min, max } => (*min, *max),
            Self::Categorical { choices } => (0, choices.len() as i64 - 1),
        }
    }
}

/// One named parameter.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize)]
pub struct ParamSpec {
    /// Name (as in `param_bounds`).
    pub name: BoundedString<64>,
    /// Range.
    #[serde(flatten)]
    pub kind: ParamKind,
}

/// How evaluators build their data.
#[derive(Clone, Copy, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DataSource {
    /// Fresh synthetic data from the evaluator's seed: fully verifiable, weight 1.
    Synthetic,
    /// A seed-chosen held-out split of a fixed data set.
    HeldOut,
    /// No verification (`synthetic_data_validation: false`, the Python system's auto-accept for
    /// private clusters): a certificate carries no votes, the claim becomes the champion as
    /// reported, and it weighs 0, so it earns no work, reward, bounty or reputation.
    Trusted,
}

/// How a domain is evaluated.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize)]
pub struct EvaluationSpec {
    /// Where evaluation data comes from.
    pub data: DataSource,
    /// The evaluation recipe: a built-in domain name or a plugin id with its version.
    pub recipe: BoundedString<256>,
    /// Whether evaluators re-train from the parameters (otherwise they run inference on the
    /// attached artifact).
    pub retrain: bool,
}

/// The quorum rule of a domain.
#[derive(Clone, Copy, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize)]
pub struct QuorumRule {
    /// `quorum_min`: the smallest first-round quorum (capped by the eligible count).
    pub min: u16,
    /// `quorum_max`: the largest first-round quorum.
    pub max: u16,
    /// `quorum_fraction` numerator for escalations (default 2/3).
    pub fraction_num: u16,
    /// `quorum_fraction` denominator.
    pub fraction_den: u16,
}

impl Default for QuorumRule {
    fn default() -> Self {
        Self { min: 3, max: 7, fraction_num: 2, fraction_den: 3 }
    }
}

/// Resource limits every evaluation of the domain runs under.
#[derive(Clone, Copy, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize)]
pub struct ResourceLimits {
    /// Wall-clock limit per evaluation, in milliseconds.
    pub max_wall_ms: u64,
    /// Training epochs at most (0 = not a training domain).
    pub max_epochs: u32,
    /// Memory estimate limit in MiB.
    pub max_memory_mb: u32,
}

impl Default for ResourceLimits {
    fn default() -> Self {
        Self { max_wall_ms: 60_000, max_epochs: 100, max_memory_mb: 2048 }
    }
}

/// Federated aggregation rules (DESIGN §6).
#[derive(Clone, Copy, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Aggregation {
    /// Sample-weighted federated averaging.
    FedAvg,
    /// Coordinate-wise trimmed mean.
    TrimmedMean,
    /// Coordinate-wise median.
    CoordinateMedian,
    /// Krum.
    Krum,
    /// MultiKrum: the mean of the updates with the best Krum scores.
    MultiKrum,
    /// Leave-one-out loss scoring with outlier rejection, weights coupled to contributor
    /// reputation (the default; `doin_federated::aggregate`).
    LossScored,
}

/// What kind of work a domain asks for.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum DomainKind {
    /// Parameter optimization verified by evaluator quorums.
    Optimization,
    /// Federated training rounds aggregated by a supervisor.
    Federated {
        /// Aggregation rule.
        aggregation: Aggregation,
        /// Blocks per round at most.
        round_blocks: u32,
        /// Hash of the job's initial model (`weights_hash` of round 0's base): the first round
        /// must start from it, so no supervisor chooses the starting point.
        initial_model: crate::Hash,
    },
}

/// A registered optimization target.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize)]
pub struct DomainSpec {
    /// `domain_id`.
    pub id: DomainId,
    /// `performance_metric` name.
    pub metric: BoundedString<64>,
    /// Better direction (`higher_is_better`).
    pub direction: Direction,
    /// The parameter space.
    pub params: BoundedVec<ParamSpec, MAX_PARAMS>,
    /// Evaluation recipe.
    pub evaluation: EvaluationSpec,
    /// The absolute part of the tolerance: votes agree when within
    /// `tolerance + |median| × relative_tolerance` of their median, and a claim may over-state
    /// the median by at most as much.
    pub tolerance: Metric,
    /// The verified median must beat the champion by more than
    /// `acceptance_tolerance + |champion| × relative_acceptance` (and by more than the quorum's
    /// own spread) to count as improvement.
    pub acceptance_tolerance: Metric,
    /// The relative part of the tolerance, in parts per million of `|median|` (at most 10^6):
    /// a claim off by a constant factor is refused at any scale.
    #[serde(default)]
    pub relative_tolerance_ppm: u32,
    /// The relative part of the acceptance margin, in parts per million of `|champion|` (at
    /// most 10^6): gains smaller than the evaluators' relative noise earn nothing.
    #[serde(default)]
    pub relative_acceptance_ppm: u32,
    /// Denominator floor of the relative improvement (`scale_d`), > 0.
    pub scale: Metric,
    /// The performance a trivial solution has; the first champion is measured against it.
    pub baseline: Metric,
    /// Domain weight in fixed point (≤ 1.0; synthetic-data domains always weigh 1.0).
    pub weight: u64,
    /// Quorum rule.
    pub quorum: QuorumRule,
    /// `target_performance`: optimization of the domain stops once the champion reaches it.
    pub target: Option<Metric>,
    /// `resource_limits`.
    pub limits: ResourceLimits,
    /// Bounty paid from the domain's escrow to each accepted improvement (capped by what is
    /// left).
    pub bounty_per_accept: Amount,
    /// Optimization or federated training.
    pub kind: DomainKind,
    /// How far two evaluations of the same parameters on the same seed may differ (`None`:
    /// evaluations are not reproducible). Quorum members are drawn in groups of two (three for
    /// an odd last one) that share a data seed; with `Some(t)` a group's votes must agree within
    /// `t`, so a member that votes without evaluating (copying the claim) is caught by its
    /// partner's figure and earns nothing.
    #[serde(default)]
    pub reproducibility: Option<Metric>,
}

/// `|m| × ppm / 10^6`, integer (floor), at most `i64::MAX`.
fn ppm_of(m: Metric, ppm: u32) -> i64 {
    let v = (m.0 as i128).unsigned_abs() * ppm as u128 / PPM as u128;
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// Why a domain spec is not acceptable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DomainSpecError {
    /// Bad domain id characters or length.
    #[error("domain id {0:?} must be 1-64 characters of [a-z0-9_.-]")]
    BadId(String),
    /// The parameter space is empty.
    #[error("domain {0} has no parameters")]
    NoParams(String),
    /// A parameter's range is empty or invalid.
    #[error("parameter {param:?} of domain {domain} has an empty or invalid range")]
    BadRange {
        /// Domain id.
        domain: String,
        /// Parameter name.
        param: String,
    },
    /// A numeric field is out of its range.
    #[error("{field} of domain {domain} is out of range: {detail}")]
    OutOfRange {
        /// Domain id.
        domain: String,
        /// Field name.
        field: &'static str,
        /// What is allowed.
        detail: String,
    },
}

impl DomainSpec {
    /// Checks the spec's internal consistency (independent of chain state).
    pub fn validate(&self) -> Result<(), DomainSpecError> {
        let id = self.id.as_str();
        let id_ok = !id.is_empty()
            && id.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"_.-".contains(&b));
        if !id_ok {
            return Err(DomainSpecError::BadId(id.to_owned()));
        }
        if self.params.is_empty() {
            return Err(DomainSpecError::NoParams(id.to_owned()));
        }
        for p in &self.params {
            let (lo, hi) = p.kind.range();
            let log_ok = !matches!(p.kind, ParamKind::LogContinuous { min, .. } if min.0 <= 0);
            if lo > hi || !log_ok {
                return Err(DomainSpecError::BadRange { domain: id.to_owned(), param: p.name.to_string() });
            }
        }
        let range = |field: &'static str, ok: bool, detail: &str| {
            if ok {
                Ok(())
            } else {
                Err(DomainSpecError::OutOfRange { domain: id.to_owned(), field, detail: detail.to_owned() })
            }
        };
        range("tolerance", self.tolerance.0 >= 0, "must be >= 0")?;
        range("acceptance_tolerance", self.acceptance_tolerance.0 >= 0, "must be >= 0")?;
        range("relative_tolerance", self.relative_tolerance_ppm <= PPM, "must be in [0, 1]")?;
        range("relative_acceptance", self.relative_acceptance_ppm <= PPM, "must be in [0, 1]")?;
        range("scale", self.scale.0 > 0, "must be > 0")?;
        range("weight", self.weight > 0 && self.weight <= FIXED_ONE as u64, "must be in (0, 1e9]")?;
        let q = self.quorum;
        range("quorum_min", q.min >= 1 && q.min <= q.max, "must be in 1..=quorum_max")?;
        range("quorum_max", q.max <= MAX_QUORUM, "must be at most 64")?;
        range(
            "quorum_fraction",
            q.fraction_den > 0 && q.fraction_num > 0 && q.fraction_num <= q.fraction_den,
            "must be in (0, 1]",
        )?;
        range("reproducibility", self.reproducibility.is_none_or(|t| t.0 >= 0), "must be >= 0")?;
        if let DomainKind::Federated { round_blocks, initial_model, .. } = self.kind {
            range("round_blocks", round_blocks >= 1, "must be >= 1")?;
            range("initial_model", initial_model != crate::Hash::ZERO, "must name the job's initial model")?;
        }
        Ok(())
    }

    /// The tolerance around a median `m`: `tolerance + |m| × relative_tolerance`, saturating.
    pub fn tolerance_at(&self, m: Metric) -> i64 {
        self.tolerance.0.saturating_add(ppm_of(m, self.relative_tolerance_ppm))
    }

    /// The gain over `old` a verified median needs before evaluators' noise is taken into
    /// account: `acceptance_tolerance + |old| × relative_acceptance`, saturating.
    pub fn acceptance_margin(&self, old: Metric) -> i64 {
        self.acceptance_tolerance.0.saturating_add(ppm_of(old, self.relative_acceptance_ppm))
    }

    /// The weight used for work: synthetic-data domains weigh 1.0.
    pub fn effective_weight(&self) -> u64 {
        match self.evaluation.data {
            DataSource::Synthetic => FIXED_ONE as u64,
            DataSource::HeldOut => self.weight,
            DataSource::Trusted => 0,
        }
    }

    /// Whether claims are accepted without evaluator quorums.
    pub fn trusted(&self) -> bool {
        self.evaluation.data == DataSource::Trusted
    }

    /// A spec for a quadratic-style test domain with `n` continuous parameters in `[-10, 10]`,
    /// minimizing loss. Used by devnets, tests and benchmarks.
    pub fn example(id: &str, n: usize) -> Self {
        let params = (0..n.min(MAX_PARAMS))
            .map(|i| ParamSpec {
                name: BoundedString::new(format!("x{i}")).unwrap_or_default(),
                kind: ParamKind::Continuous { min: Metric(-10 * FIXED_ONE), max: Metric(10 * FIXED_ONE) },
            })
            .collect::<Vec<_>>();
        Self {
            id: BoundedString::new(id).unwrap_or_default(),
            metric: BoundedString::new("loss").unwrap_or_default(),
            direction: Direction::Minimize,
            params: BoundedVec::try_from_vec(params).unwrap_or_default(),
            evaluation: EvaluationSpec {
                data: DataSource::Synthetic,
                recipe: BoundedString::new(id).unwrap_or_default(),
                retrain: false,
            },
            tolerance: Metric(FIXED_ONE / 10),
            acceptance_tolerance: Metric(0),
            relative_tolerance_ppm: 0,
            relative_acceptance_ppm: 0,
            scale: Metric(FIXED_ONE),
            baseline: Metric(100 * FIXED_ONE),
            weight: FIXED_ONE as u64,
            quorum: QuorumRule::default(),
            target: None,
            limits: ResourceLimits::default(),
            bounty_per_accept: Amount::ZERO,
            kind: DomainKind::Optimization,
            reproducibility: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn example_is_valid_and_bad_fields_are_named() {
        let spec = DomainSpec::example("quadratic", 4);
        spec.validate().unwrap();
        let mut bad = spec.clone();
        bad.scale = Metric(0);
        assert!(bad.validate().unwrap_err().to_string().contains("scale"));
        let mut bad = spec.clone();
        bad.quorum.max = 100;
        assert!(bad.validate().unwrap_err().to_string().contains("quorum_max"));
        let mut bad = spec.clone();
        bad.id = BoundedString::new("Bad Id").unwrap();
        assert!(matches!(bad.validate(), Err(DomainSpecError::BadId(_))));
        // A federated job names its initial model.
        let mut fed = spec;
        fed.kind = DomainKind::Federated {
            aggregation: Aggregation::FedAvg,
            round_blocks: 3,
            initial_model: crate::Hash::of(b"initial"),
        };
        fed.validate().unwrap();
        fed.kind = DomainKind::Federated {
            aggregation: Aggregation::FedAvg,
            round_blocks: 3,
            initial_model: crate::Hash::ZERO,
        };
        assert!(fed.validate().unwrap_err().to_string().contains("initial_model"));
    }

    #[test]
    fn gain_respects_direction() {
        assert_eq!(Direction::Minimize.gain(Metric(1), Metric(3)), Some(2));
        assert_eq!(Direction::Maximize.gain(Metric(1), Metric(3)), Some(-2));
        assert_eq!(Direction::Maximize.gain(Metric(i64::MIN), Metric(1)), None);
    }
}
