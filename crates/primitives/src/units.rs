//! Coin amounts and fixed-point numbers. No floats cross into consensus: amounts are integer base
//! units and metrics are integers in nano-units.

use std::fmt;

use borsh::{BorshDeserialize, BorshSerialize};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Base units per DOIN.
pub const BASE_UNITS_PER_DOIN: u128 = 1_000_000_000;

/// Scale of every fixed-point quantity (metrics, work, reputation, weights): 1.0 = 10^9.
pub const FIXED_ONE: i64 = 1_000_000_000;

/// A coin amount in base units (1 DOIN = 10^9). Arithmetic is checked; JSON carries a decimal
/// string because the values exceed JavaScript's safe integers.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, BorshSerialize, BorshDeserialize)]
pub struct Amount(pub u128);

impl Amount {
    /// Zero.
    pub const ZERO: Self = Self(0);

    /// `n` whole DOIN.
    pub const fn doin(n: u64) -> Self {
        Self(n as u128 * BASE_UNITS_PER_DOIN)
    }

    /// Checked addition.
    pub fn checked_add(self, other: Self) -> Option<Self> {
        self.0.checked_add(other.0).map(Self)
    }

    /// Checked subtraction.
    pub fn checked_sub(self, other: Self) -> Option<Self> {
        self.0.checked_sub(other.0).map(Self)
    }

    /// Checked multiplication by an integer.
    pub fn checked_mul(self, factor: u128) -> Option<Self> {
        self.0.checked_mul(factor).map(Self)
    }

    /// `self × num / den`, rounded down; `None` on overflow or `den == 0`.
    pub fn mul_div(self, num: u128, den: u128) -> Option<Self> {
        if den == 0 {
            return None;
        }
        self.0.checked_mul(num).map(|v| Self(v / den))
    }

    /// Saturating subtraction.
    pub fn saturating_sub(self, other: Self) -> Self {
        Self(self.0.saturating_sub(other.0))
    }
}

impl fmt::Debug for Amount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self}")
    }
}

impl fmt::Display for Amount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let whole = self.0 / BASE_UNITS_PER_DOIN;
        let frac = self.0 % BASE_UNITS_PER_DOIN;
        if frac == 0 {
            write!(f, "{whole} DOIN")
        } else {
            let frac = format!("{frac:09}");
            write!(f, "{whole}.{} DOIN", frac.trim_end_matches('0'))
        }
    }
}

impl Serialize for Amount {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0.to_string())
    }
}

impl<'de> Deserialize<'de> for Amount {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        u128_json::deserialize(deserializer).map(Self)
    }
}

/// A measured or claimed metric in nano-units (`1.5` is `1_500_000_000`).
#[derive(
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Default,
    BorshSerialize,
    BorshDeserialize,
    Serialize,
    Deserialize,
)]
#[serde(transparent)]
pub struct Metric(pub i64);

impl Metric {
    /// Converts a float at the edge (plugin output, config). Non-finite or out-of-range values
    /// are refused rather than saturated, so a broken evaluator cannot produce a huge metric.
    pub fn from_f64(value: f64) -> Option<Self> {
        let scaled = (value * FIXED_ONE as f64).round();
        if !scaled.is_finite() || scaled.abs() >= 9.0e18 {
            return None;
        }
        Some(Self(scaled as i64))
    }

    /// The value as a float, for display only.
    pub fn to_f64(self) -> f64 {
        self.0 as f64 / FIXED_ONE as f64
    }
}

impl fmt::Debug for Metric {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.to_f64())
    }
}

/// Serde helpers for `u128` work and threshold values: JSON carries a decimal string (exact in
/// JavaScript); input may be a string or a number.
pub mod u128_json {
    use serde::{Deserialize, Deserializer, Serializer};

    /// Serializes as a decimal string.
    pub fn serialize<S: Serializer>(value: &u128, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&value.to_string())
    }

    /// Accepts a decimal string or a non-negative integer.
    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u128, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Repr {
            Text(String),
            Number(u64),
        }
        match Repr::deserialize(deserializer)? {
            Repr::Number(n) => Ok(n.into()),
            Repr::Text(t) => t
                .trim()
                .parse()
                .map_err(|_| serde::de::Error::custom(format!("{t:?} is not a whole non-negative number"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amount_display_and_json() {
        assert_eq!(Amount::doin(50).to_string(), "50 DOIN");
        assert_eq!(Amount(1_500_000_000).to_string(), "1.5 DOIN");
        let json = serde_json::to_string(&Amount(u128::MAX)).unwrap();
        assert_eq!(serde_json::from_str::<Amount>(&json).unwrap(), Amount(u128::MAX));
        assert_eq!(serde_json::from_str::<Amount>("7").unwrap(), Amount(7));
        assert!(serde_json::from_str::<Amount>("\"-1\"").is_err());
        assert_eq!(Amount(u128::MAX).checked_add(Amount(1)), None);
        assert_eq!(Amount(10).mul_div(3, 4), Some(Amount(7)));
    }

    #[test]
    fn metric_from_float_refuses_non_finite() {
        assert_eq!(Metric::from_f64(-1.25), Some(Metric(-1_250_000_000)));
        assert_eq!(Metric::from_f64(f64::NAN), None);
        assert_eq!(Metric::from_f64(1e12), None);
    }
}
