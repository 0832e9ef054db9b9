//! Properties over random chains: coin conservation, determinism of replay, fee bounds and
//! fork choice as a total order.

use std::cmp::Ordering;

use doin_consensus::{
    ProtocolParams, apply_block, economics,
    fork_choice::{self, ChainTip},
    testkit::{TestNet, domain_id},
};
use doin_primitives::{Amount, BoundedVec, FIXED_ONE, Hash, Roles, Signed, TxKind, tx::ChannelUpdateBody};
use proptest::prelude::*;

#[derive(Clone, Debug)]
enum Op {
    Transfer { from: usize, to: usize, amount: u64 },
    Stake { who: usize, amount: u64, evaluator: bool },
    Unstake { who: usize, amount: u64 },
    Channel { payer: usize, payee: usize, deposit: u64, paid: u64, payee_closes: bool },
    Improve { optimizer: usize, step: u8 },
    Reject { optimizer: usize },
    Heartbeat,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..10usize, 0..10usize, 0..5_000u64).prop_map(|(from, to, amount)| Op::Transfer { from, to, amount }),
        1 => (0..10usize, 0..50u64, any::<bool>()).prop_map(|(who, amount, evaluator)| Op::Stake { who, amount, evaluator }),
        1 => (0..10usize, 0..80u64).prop_map(|(who, amount)| Op::Unstake { who, amount }),
        1 => (0..10usize, 0..10usize, 1..20u64, 0..25u64, any::<bool>())
            .prop_map(|(payer, payee, deposit, paid, payee_closes)| Op::Channel { payer, payee, deposit, paid, payee_closes }),
        2 => (5..7usize, 1..20u8).prop_map(|(optimizer, step)| Op::Improve { optimizer, step }),
        1 => (5..7usize).prop_map(|optimizer| Op::Reject { optimizer }),
        1 => Just(Op::Heartbeat),
    ]
}

/// Runs the ops; invalid ones (insufficient funds, no stake, …) are refused by the transition
/// and skipped, exactly as a block producer would drop them.
fn run(ops: &[Op]) -> TestNet {
    let mut net = TestNet::new(10, 5, 2);
    let mut loss = 90.0f64;
    for op in ops {
        let result = match op {
            Op::Transfer { from, to, amount } => {
                let tx = net.tx(*from, TxKind::Transfer { to: net.addr(*to), amount: Amount::doin(*amount) });
                net.heartbeat(vec![tx])
            }
            Op::Stake { who, amount, evaluator } => {
                let roles = if *evaluator { Roles::EVALUATOR } else { Roles::OPTIMIZER };
                let kind = TxKind::Stake {
                    amount: Amount::doin(*amount),
                    roles,
                    domains: BoundedVec::try_from_vec(vec![domain_id()]).unwrap(),
                    preferences: Default::default(),
                };
                net.heartbeat(vec![net.tx(*who, kind)])
            }
            Op::Unstake { who, amount } => {
                net.heartbeat(vec![net.tx(*who, TxKind::Unstake { amount: Amount::doin(*amount) })])
            }
            Op::Channel { payer, payee, deposit, paid, payee_closes } => {
                let open = net.tx(
                    *payer,
                    TxKind::OpenChannel {
                        payee: net.addr(*payee),
                        deposit: Amount::doin(*deposit),
                        expiry_height: net.state.height() + 5,
                    },
                );
                let id = open.id();
                let opened = net.heartbeat(vec![open]);
                if opened.is_ok() {
                    let update = Signed::sign(
                        ChannelUpdateBody {
                            channel: id,
                            payer: net.addr(*payer),
                            nonce: 1,
                            paid_total: Amount::doin(*paid),
                        },
                        &net.keys[*payer],
                    );
                    let closer = if *payee_closes { *payee } else { *payer };
                    let _ =
                        net.heartbeat(vec![net.tx(closer, TxKind::CloseChannel { final_update: update })]);
                }
                opened
            }
            Op::Improve { optimizer, step } => {
                loss = (loss - *step as f64 * 0.5).max(0.5);
                net.improve(9, *optimizer, loss)
            }
            Op::Reject { optimizer } => {
                let x = (net.state.height() as i64 + 7) * 1_000_003;
                let bad =
                    net.try_certificate(*optimizer, vec![x, 0, 0, 0], doin_primitives::Metric(1), |_| {
                        doin_primitives::Metric(80 * FIXED_ONE)
                    });
                loss = (loss - 0.5).max(0.5);
                let good = net.try_improving_certificate(if *optimizer == 5 { 6 } else { 5 }, loss);
                match (bad, good) {
                    (Ok(bad), Ok(good)) => net.work_block(9, vec![bad, good]),
                    (Err(e), _) | (_, Err(e)) => Err(e),
                }
            }
            Op::Heartbeat => net.heartbeat(vec![]),
        };
        let _ = result;
        let minted = net.state.meta().supply.minted.0;
        assert_eq!(net.state.accounted_supply(), Some(minted), "coins conserved after {op:?}");
    }
    net
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, .. ProptestConfig::default() })]

    #[test]
    fn coins_are_conserved_and_replay_is_deterministic(ops in prop::collection::vec(op(), 1..24)) {
        let net = run(&ops);
        // An independent replay of the same blocks from a freshly built genesis gives the same
        // state root at every height, and the incremental tree equals a rebuild from scratch.
        let (mut replay, genesis) = net.spec.build().unwrap();
        prop_assert_eq!(genesis.hash(), net.genesis.hash());
        for block in &net.blocks {
            let (next, _) = apply_block(&replay, block).unwrap();
            prop_assert_eq!(next.root(), block.header.state_root);
            replay = next;
        }
        prop_assert_eq!(replay.root(), net.state.root());
        prop_assert_eq!(replay.recompute_root().unwrap(), net.state.root());
    }

    #[test]
    fn base_fee_moves_at_most_one_eighth(base in 1u128..1_000_000_000_000, used in 0u64..=16_000_000) {
        let p = ProtocolParams::default();
        let next = economics::next_base_fee(&p, Amount(base), used).0;
        let bound = (base / 8).max(1);
        prop_assert!(next <= base + bound, "{base} → {next}");
        prop_assert!(next + base / 8 >= base, "{base} → {next}");
        prop_assert!(next >= p.min_base_fee.0);
    }

    #[test]
    fn fork_choice_is_a_total_order(
        a in (0u128..4, 0u64..4, 0u8..4), b in (0u128..4, 0u64..4, 0u8..4), c in (0u128..4, 0u64..4, 0u8..4)
    ) {
        let t = |(w, h, x): (u128, u64, u8)| ChainTip { hash: Hash([x; 32]), height: h, cumulative_work: w, justified: 0 };
        let (a, b, c) = (t(a), t(b), t(c));
        prop_assert_eq!(fork_choice::compare(&a, &b), fork_choice::compare(&b, &a).reverse());
        prop_assert_eq!(fork_choice::compare(&a, &b) == Ordering::Equal, a == b);
        if fork_choice::compare(&a, &b) != Ordering::Less && fork_choice::compare(&b, &c) != Ordering::Less {
            prop_assert_ne!(fork_choice::compare(&a, &c), Ordering::Less);
        }
    }
}
