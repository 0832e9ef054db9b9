//! Integer fixed-point math used by consensus (scale [`FIXED_ONE`] = 10^9): logarithms for the
//! reputation factor, exponential decay for reputation half-lives, integer square roots for
//! quorum sizes. Everything is exact integer arithmetic, so every node computes identical bits.

use doin_primitives::FIXED_ONE;

const ONE: u128 = FIXED_ONE as u128;

/// `log2(x / ONE) × ONE` for `x ≥ ONE`, to about 1e-9 (30 fractional bits by repeated squaring).
pub fn log2_fixed(x: u128) -> u128 {
    if x < ONE {
        return 0;
    }
    let mut int_part = 0u128;
    let mut y = x;
    while y >= 2 * ONE {
        y >>= 1;
        int_part += 1;
    }
    // y in [ONE, 2·ONE): extract fractional bits.
    let mut frac = 0u128;
    let mut bit = 1u128 << 62;
    for _ in 0..30 {
        y = y * y / ONE;
        if y >= 2 * ONE {
            y >>= 1;
            frac |= bit;
        }
        bit >>= 1;
    }
    // frac holds bits with weight 2^-1 at position 62: rescale to ONE.
    int_part * ONE + ((frac * ONE) >> 63)
}

/// `min(1, ln(1 + r) / ln(11))`, floored at `floor`, for reputation `r` (all fixed point).
/// `ln(1+r)/ln(11) = log2(1+r)/log2(11)`, so only base-2 logarithms are needed.
pub fn rep_factor(reputation: u64, floor: u64) -> u64 {
    let numerator = log2_fixed(ONE + reputation as u128);
    let denominator = log2_fixed(11 * ONE);
    let factor = (numerator * ONE / denominator).min(ONE) as u64;
    factor.max(floor)
}

/// Integer square root (floor).
pub fn isqrt(n: u128) -> u128 {
    if n < 2 {
        return n;
    }
    let mut x = 1u128 << (n.ilog2() / 2 + 1);
    loop {
        let y = (x + n / x) / 2;
        if y >= x {
            return x;
        }
        x = y;
    }
}

/// Ceiling of the square root.
pub fn ceil_sqrt(n: u64) -> u64 {
    let r = isqrt(n as u128) as u64;
    if r * r == n { r } else { r + 1 }
}

/// `value × 2^(−elapsed / half_life)`: whole half-lives shift, the remainder multiplies by
/// `2^(−f)` built from the binary digits of `f` with factors `2^(−1/2^j)` obtained by repeated
/// integer square roots.
pub fn decay(value: u64, elapsed: u64, half_life: u64) -> u64 {
    if value == 0 || half_life == 0 {
        return value;
    }
    let halvings = elapsed / half_life;
    if halvings >= 64 {
        return 0;
    }
    let mut v = (value >> halvings) as u128;
    let rem = (elapsed % half_life) as u128;
    // f = rem / half_life in [0, 1), processed bit by bit.
    let mut num = rem;
    let den = half_life as u128;
    let mut factor = isqrt(ONE * ONE / 2); // 2^(-1/2) in fixed point
    for _ in 0..30 {
        if num == 0 {
            break;
        }
        num *= 2;
        if num >= den {
            num -= den;
            v = v * factor / ONE;
        }
        factor = isqrt(factor * ONE);
    }
    v as u64
}

/// `numerator × ppm / 1 000 000` for amounts.
pub fn ppm(value: u128, parts: u32) -> u128 {
    value.saturating_mul(parts as u128) / 1_000_000
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: u128, b: f64, tol: f64) -> bool {
        ((a as f64) / ONE as f64 - b).abs() < tol
    }

    #[test]
    fn log2_matches_float() {
        for x in [1.0f64, 1.5, 2.0, 3.0, 11.0, 1000.0, 1e6] {
            let fixed = log2_fixed((x * ONE as f64) as u128);
            assert!(close(fixed, x.log2(), 1e-8), "log2({x}) = {fixed}");
        }
    }

    #[test]
    fn rep_factor_bounds() {
        let floor = (ONE / 10) as u64;
        assert_eq!(rep_factor(0, floor), floor, "newcomers get the floor");
        assert_eq!(rep_factor(10 * ONE as u64, floor), ONE as u64, "ln(11)/ln(11) = 1");
        assert_eq!(rep_factor(1000 * ONE as u64, floor), ONE as u64, "capped at 1");
        let mid = rep_factor(ONE as u64, floor);
        assert!(close(mid as u128, 2f64.ln() / 11f64.ln(), 1e-8), "{mid}");
    }

    #[test]
    fn decay_half_lives() {
        assert_eq!(decay(1_000_000_000, 100, 100), 500_000_000);
        assert_eq!(decay(1_000_000_000, 0, 100), 1_000_000_000);
        let quarter = decay(1_000_000_000, 50, 100);
        assert!((quarter as f64 - 1e9 / 2f64.sqrt()).abs() < 10.0, "{quarter}");
        assert_eq!(decay(u64::MAX, 64 * 100, 100), 0);
        // Monotone in elapsed time.
        let mut last = u64::MAX;
        for t in 0..300 {
            let d = decay(1_000_000_000, t, 37);
            assert!(d <= last);
            last = d;
        }
    }

    #[test]
    fn sqrt() {
        for n in 0..2000u64 {
            let c = ceil_sqrt(n);
            assert!(c * c >= n && (c == 0 || (c - 1) * (c - 1) < n), "{n}");
        }
        assert_eq!(isqrt(u64::MAX as u128 * u64::MAX as u128), u64::MAX as u128);
    }
}
