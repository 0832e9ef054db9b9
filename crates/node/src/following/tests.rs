use doin_consensus::{
    ProtocolParams,
    testkit::{TestNet, domain_id},
};
use doin_primitives::{DomainSpec, FIXED_ONE, Metric};

use super::*;

/// A net whose domain (minimizing, baseline 100) has target 1.5.
fn net_with_target() -> TestNet {
    let mut spec = DomainSpec::example("quad", 4);
    spec.target = Some(Metric(3 * FIXED_ONE / 2));
    let params = TestNet::new(1, 0, 0).spec.params;
    TestNet::with_domain(8, 4, 3, params, spec)
}

/// A tip is news once; a champion is reported when it changes, and the target when the
/// champion starts (or, after a reorg, stops) reaching it; unfollowed domains are not reported.
#[test]
fn champions_and_targets_are_reported_when_they_change() {
    let mut net = net_with_target();
    let d = domain_id();
    let mut f = Following::new([d.clone()]);
    let mut unfollowed = Following::new([]);
    let news = f.on_tip(&net.state, Checkpoint::default()).expect("genesis is news");
    assert_eq!((news.height, news.hash), (0, net.state.tip().hash));
    assert!(news.champions.is_empty() && news.targets.is_empty());
    assert!(f.on_tip(&net.state, Checkpoint::default()).is_none(), "the same tip again is no news");
    net.improve(0, 4, 2.0).expect("an improvement");
    let before_target = net.state.clone();
    let news = f.on_tip(&net.state, Checkpoint::default()).expect("news");
    assert_eq!(news.champions.len(), 1);
    assert_eq!(news.champions[0].1.performance, Metric(2 * FIXED_ONE));
    assert!(news.targets.is_empty(), "2.0 does not reach 1.5");
    assert!(!f.target_reached(&d));
    net.heartbeat(Vec::new()).expect("a heartbeat");
    let news = f.on_tip(&net.state, Checkpoint::default()).expect("a new tip");
    assert!(news.champions.is_empty(), "the same champion is not reported again");
    net.improve(0, 5, 1.0).expect("a better one");
    let news = f.on_tip(&net.state, Checkpoint::default()).expect("news");
    assert_eq!(news.champions.len(), 1);
    assert_eq!(news.targets, vec![(d.clone(), true)]);
    assert!(f.target_reached(&d));
    // A reorg onto the branch before the second improvement: the target is no longer reached.
    let news = f.on_tip(&before_target, Checkpoint::default()).expect("news");
    assert_eq!(news.champions.len(), 1);
    assert_eq!(news.targets, vec![(d.clone(), false)]);
    assert!(!f.target_reached(&d));
    let news = unfollowed.on_tip(&net.state, Checkpoint::default()).expect("news");
    assert!(news.champions.is_empty() && news.targets.is_empty());
}

/// Justified and finalized checkpoints are reported once each time they move; the finalized
/// one is the caller's (the store's), whatever the state says.
#[test]
fn finality_is_reported_when_it_moves() {
    let mut net = TestNet::new(8, 4, 3);
    let mut f = Following::new([]);
    let news = f.on_tip(&net.state, Checkpoint::default()).expect("genesis");
    assert!(news.justified.is_none() && news.finalized.is_none());
    let mut justified = None;
    for _ in 0..40 {
        net.voting_heartbeat(Vec::new()).expect("a voting heartbeat");
        let news = f.on_tip(&net.state, Checkpoint::default()).expect("a new tip");
        assert!(news.finalized.is_none(), "the store's finalized checkpoint did not move");
        if let Some(j) = news.justified {
            assert!(j.height > justified.map_or(0, |c: Checkpoint| c.height));
            assert_eq!(j, net.state.meta().justified);
            justified = Some(j);
        }
    }
    assert!(justified.is_some(), "a chain whose stakers vote justifies a checkpoint");
    net.heartbeat(Vec::new()).expect("a heartbeat");
    let store_final = Checkpoint { height: 6, hash: Hash([6; 32]) };
    let news = f.on_tip(&net.state, store_final).expect("a new tip");
    assert_eq!(news.finalized, Some(store_final));
    assert!(news.justified.is_none(), "justified did not move");
    net.heartbeat(Vec::new()).expect("a heartbeat");
    assert!(f.on_tip(&net.state, store_final).expect("a new tip").finalized.is_none());
}

/// A commit stays while included or while its reference is recent; one whose reference is
/// not on this chain stays for the grace only; one whose reference aged out goes.
#[test]
fn commits_live_while_their_reference_or_inclusion_does() {
    let params = ProtocolParams { max_reference_age: 3, ..TestNet::new(1, 0, 0).spec.params };
    let mut net = TestNet::with_params(8, 4, 3, params);
    let now = Instant::now();
    let grace = Duration::from_secs(30);
    let (commit, _) = net.commit_reveal(4, vec![1, 2, 3, 4], Metric(2 * FIXED_ONE));
    let (included, _) = net.commit_reveal(5, vec![4, 3, 2, 1], Metric(2 * FIXED_ONE));
    let foreign = net.commit_reveal_at(6, vec![9, 9, 9, 9], Metric(2 * FIXED_ONE), Hash([7; 32])).0;
    let alive = |net: &TestNet, c: &Commit, later: Duration| {
        commit_alive(&net.state, &c.id(), c, now, now + later, grace)
    };
    assert!(alive(&net, &commit, Duration::ZERO));
    assert!(alive(&net, &foreign, grace - Duration::from_millis(1)), "its reference may still come");
    assert!(!alive(&net, &foreign, grace), "not after the grace");
    net.include(vec![included.clone()]).expect("included");
    // Height 4: the genesis reference is 4 blocks old (window 3); the inclusion at height 1
    // keeps its window until height 1 + 3.
    for _ in 0..2 {
        net.heartbeat(Vec::new()).expect("a heartbeat");
    }
    assert_eq!(net.state.height(), 4);
    assert!(!alive(&net, &commit, Duration::ZERO), "its reference aged out of the window");
    assert!(alive(&net, &included, Duration::ZERO), "included: its certificate window is open");
}
