use doin_primitives::Metric;

use super::*;

/// A report is committed unless an accepted median already matches it (it would land late)
/// or another optimizer's better claim is in verification (held until that settles).
#[test]
fn a_claim_waits_only_behind_better_claims() {
    use doin_primitives::domain::Direction::{Maximize, Minimize};
    let m = |x: i64| Metric(x);
    assert_eq!(standing(Maximize, m(90), [], []), Standing::Clear);
    assert_eq!(standing(Maximize, m(90), [m(80)], [m(85), m(90)]), Standing::Clear);
    assert_eq!(standing(Maximize, m(90), [m(80)], [m(91)]), Standing::Behind);
    assert_eq!(standing(Maximize, m(90), [m(90)], [m(95)]), Standing::Beaten);
    assert_eq!(standing(Minimize, m(90), [], [m(91), m(95)]), Standing::Clear);
    assert_eq!(standing(Minimize, m(90), [m(95)], [m(89)]), Standing::Behind);
    assert_eq!(standing(Minimize, m(90), [m(89)], []), Standing::Beaten);
}
