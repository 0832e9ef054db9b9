use doin_consensus::{certs, testkit::TestNet};
use doin_primitives::{BlockBody, BoundedVec, FIXED_ONE, Metric};

use super::*;

fn ready(cert: Certificate) -> ReadyCert {
    let median = certs::median(&cert.votes.iter().map(|v| v.measured).collect::<Vec<_>>());
    ReadyCert { cert, ready_at: Instant::now(), median }
}

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

/// The node's heartbeat filter agrees with consensus: a late accept and a reject ride a
/// heartbeat, an improvement needs a work block.
#[test]
fn late_accepts_and_rejects_ride_heartbeats_improvements_do_not() {
    let mut net = TestNet::new(8, 4, 3);
    let first = net.improving_certificate(4, 2.0);
    net.work_block(4, vec![first]).expect("the first improvement lands");
    let m = |x: f64| Metric((x * FIXED_ONE as f64) as i64);
    // Honest (measured as claimed) but worse than the champion: late.
    let late = ready(net.certificate(5, vec![7, 7, 7, 7], m(3.0), |_| m(3.0)));
    assert_eq!(late.cert.outcome, Outcome::Accept);
    // Claims 1.0, measured 5.0: rejected.
    let reject = ready(net.certificate(6, vec![9, 9, 9, 9], m(1.0), |_| m(5.0)));
    assert_eq!(reject.cert.outcome, Outcome::Reject);
    let better = ready(net.improving_certificate(5, 1.0));
    assert!(adds_no_work(&net.state, &late));
    assert!(adds_no_work(&net.state, &reject));
    assert!(!adds_no_work(&net.state, &better));
    let body = |c: Vec<Certificate>| BlockBody {
        certificates: BoundedVec::try_from_vec(c).expect("few certificates"),
        ..Default::default()
    };
    let before = net.state.clone();
    net.heartbeat_with(body(vec![better.cert.clone()])).expect_err("an improvement is work");
    net.state = before;
    let receipt = net.heartbeat_with(body(vec![late.cert, reject.cert])).expect("zero-work certificates");
    assert_eq!(receipt.certificates.len(), 2);
    assert!(receipt.certificates.iter().all(|r| r.increment == 0));
}
