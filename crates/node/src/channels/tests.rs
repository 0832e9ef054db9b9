use doin_consensus::testkit::TestNet;
use doin_primitives::{ChannelUpdateBody, Signed};
use proptest::prelude::*;

use super::*;

const PRICE: Amount = Amount(1_000);
const DEPOSIT: Amount = Amount(1_000_000);

/// A chain where account 1 opened a channel of [`DEPOSIT`] to account 2 (the payee, "this
/// node"); returns it with the channel id.
fn opened() -> (TestNet, Hash) {
    let mut net = TestNet::new(4, 1, 0);
    let tx = net.tx(1, TxKind::OpenChannel { payee: net.addr(2), deposit: DEPOSIT, expiry_height: 1_000 });
    let id = tx.id();
    net.heartbeat(vec![tx]).unwrap();
    assert!(net.state.channel(&id).is_some());
    (net, id)
}

fn update(net: &TestNet, signer: usize, channel: Hash, nonce: u64, paid: u128) -> ChannelUpdate {
    Signed::sign(
        ChannelUpdateBody { channel, payer: net.addr(signer), nonce, paid_total: Amount(paid) },
        &net.keys[signer],
    )
}

fn pay(book: &mut ChannelBook, net: &TestNet, u: ChannelUpdate) -> Result<Amount, PayError> {
    let checked = book.check(&net.state, u, PRICE)?;
    book.take(&checked)?;
    Ok(checked.adds)
}

#[test]
fn payments_are_taken_once_in_order_and_only_through_this_nodes_channels() {
    let (net, id) = opened();
    let mut book = ChannelBook::new(net.addr(2));
    // Wrong channel: unknown, paying someone else, signed by someone other than its payer.
    let err = pay(&mut book, &net, update(&net, 1, Hash::of(b"nope"), 1, 1_000)).unwrap_err();
    assert!(matches!(err, PayError::WrongChannel(ref w) if w.contains("no open channel")), "{err}");
    let mut other = ChannelBook::new(net.addr(3));
    let err = pay(&mut other, &net, update(&net, 1, id, 1, 1_000)).unwrap_err();
    assert!(matches!(err, PayError::WrongChannel(ref w) if w.contains("not this node")), "{err}");
    let err = pay(&mut book, &net, update(&net, 3, id, 1, 1_000)).unwrap_err();
    assert!(matches!(err, PayError::WrongChannel(ref w) if w.contains("payer")), "{err}");
    // Underpaid, and over the deposit.
    let err = pay(&mut book, &net, update(&net, 1, id, 1, 999)).unwrap_err();
    assert_eq!(err.name(), "underpaid");
    let err = pay(&mut book, &net, update(&net, 1, id, 1, DEPOSIT.0 + 1)).unwrap_err();
    assert!(matches!(err, PayError::Underpaid(ref w) if w.contains("deposit")), "{err}");
    // Paid: taken; the same update again (a replay) and an older one are stale.
    assert_eq!(pay(&mut book, &net, update(&net, 1, id, 1, 1_000)), Ok(PRICE));
    assert_eq!(
        pay(&mut book, &net, update(&net, 1, id, 1, 1_000)),
        Err(PayError::Stale { nonce: 1, best: 1 })
    );
    assert_eq!(pay(&mut book, &net, update(&net, 1, id, 2, 1_500)).unwrap_err().name(), "underpaid");
    assert_eq!(pay(&mut book, &net, update(&net, 1, id, 5, 3_000)), Ok(Amount(2_000)));
    assert_eq!(
        pay(&mut book, &net, update(&net, 1, id, 4, 9_000)),
        Err(PayError::Stale { nonce: 4, best: 5 })
    );
    // Two requests checked against the same best: the first taken wins, the second is stale.
    let a = book.check(&net.state, update(&net, 1, id, 6, 4_000), PRICE).unwrap();
    let b = book.check(&net.state, update(&net, 1, id, 6, 4_000), PRICE).unwrap();
    book.take(&a).unwrap();
    assert!(matches!(book.take(&b), Err(PayError::Stale { .. })));
    assert_eq!(book.best(&id).unwrap().body.paid_total, Amount(4_000));
    assert_eq!(book.earnings(), (Amount(4_000), Amount::ZERO, 1));
    // Malformed bytes and a forged signature.
    assert_eq!(ChannelBook::decode(b"junk").unwrap_err().name(), "bad_payment");
    let mut forged = update(&net, 1, id, 7, 10_000);
    forged.body.paid_total = Amount(20_000);
    let err = ChannelBook::decode(&doin_primitives::encode(&forged)).unwrap_err();
    assert!(matches!(err, PayError::Malformed(ref w) if w.contains("signature")), "{err}");
}

#[test]
fn a_payers_close_with_an_old_update_is_challenged_with_the_best_and_the_payee_is_paid_it() {
    let (mut net, id) = opened();
    let mut book = ChannelBook::new(net.addr(2));
    for n in 1..=3 {
        pay(&mut book, &net, update(&net, 1, id, n, u128::from(n) * 1_000)).unwrap();
    }
    // The payer closes with its first update (paying 1 000, not 3 000).
    let close = net.tx(1, TxKind::CloseChannel { final_update: update(&net, 1, id, 1, 1_000) });
    net.heartbeat(vec![close]).unwrap();
    assert!(net.state.channel(&id).unwrap().closing.is_some());
    // Paying through a closing channel is refused.
    assert_eq!(pay(&mut book, &net, update(&net, 1, id, 4, 4_000)).unwrap_err().name(), "wrong_channel");
    let height = net.state.tip().height;
    let (due, gone) = book.due(&net.state, height);
    assert!(gone.is_empty());
    let [Due { channel, kind: TxKind::ChallengeChannel { newer_update } }] = due.as_slice() else {
        panic!("one challenge: {due:?}")
    };
    assert_eq!((*channel, newer_update.body.nonce), (id, 3));
    // Not sent again at once.
    assert!(book.due(&net.state, height + 1).0.is_empty());
    let payer_before = net.state.account(&net.addr(1)).balance;
    let challenge = net.tx(2, TxKind::ChallengeChannel { newer_update: newer_update.clone() });
    net.heartbeat(vec![challenge]).unwrap();
    assert!(net.state.channel(&id).is_none(), "settled by the challenge");
    // The payee was paid 3 000: the payer got the rest of the deposit back.
    assert_eq!(net.state.account(&net.addr(1)).balance.0, payer_before.0 + DEPOSIT.0 - 3_000);
    assert_eq!(net.state.accounted_supply(), Some(net.state.meta().supply.minted.0));
    // The book sees the channel gone: settled at the best update.
    let (due, gone) = book.due(&net.state, height + 20);
    assert!(due.is_empty());
    assert_eq!(gone, vec![(id, Amount(3_000))]);
    assert_eq!(book.earnings(), (Amount::ZERO, Amount(3_000), 0));
}

#[test]
fn the_payees_close_is_sent_when_asked_and_settles_at_once() {
    let (mut net, id) = opened();
    let mut book = ChannelBook::new(net.addr(2));
    pay(&mut book, &net, update(&net, 1, id, 1, 5_000)).unwrap();
    assert!(book.due(&net.state, 1).0.is_empty(), "nothing to do while open");
    assert!(!book.request_close(&Hash::of(b"other")));
    assert!(book.request_close(&id));
    let (due, _) = book.due(&net.state, 1);
    let [Due { kind: TxKind::CloseChannel { final_update }, .. }] = due.as_slice() else { panic!("{due:?}") };
    let payer_before = net.state.account(&net.addr(1)).balance;
    net.heartbeat(vec![net.tx(2, TxKind::CloseChannel { final_update: final_update.clone() })]).unwrap();
    assert!(net.state.channel(&id).is_none());
    assert_eq!(net.state.account(&net.addr(1)).balance.0, payer_before.0 + DEPOSIT.0 - 5_000);
}

#[test]
fn the_log_brings_the_best_updates_back_after_a_restart() {
    let (net, id) = opened();
    let dir = tempfile::tempdir().unwrap();
    let mut book = ChannelBook::new(net.addr(2));
    let (mut log, skipped) = log::Log::open(dir.path(), &mut book).unwrap();
    assert_eq!(skipped, 0);
    for n in 1..=200u64 {
        let checked = book.check(&net.state, update(&net, 1, id, n, u128::from(n) * 1_000), PRICE).unwrap();
        book.take(&checked).unwrap();
        log.taken(&checked.update).unwrap();
    }
    log.settled(&Hash::of(b"old"), Amount(7)).unwrap();
    drop(log);
    // A torn last line (a crash mid-write) is skipped, the rest kept.
    std::fs::OpenOptions::new()
        .append(true)
        .open(dir.path().join("channels.log"))
        .and_then(|mut f| std::io::Write::write_all(&mut f, b"u 00ff"))
        .unwrap();
    let mut again = ChannelBook::new(net.addr(2));
    let (_log, skipped) = log::Log::open(dir.path(), &mut again).unwrap();
    assert_eq!(skipped, 1);
    assert_eq!(again.best(&id).unwrap().body.nonce, 200);
    assert_eq!(again.earnings(), (Amount(200_000), Amount(7), 1));
    // 202 lines for 2 entries: compacted on open.
    let lines = std::fs::read_to_string(dir.path().join("channels.log")).unwrap().lines().count();
    assert_eq!(lines, 2);
    // A replay of an old update after the restart is still stale.
    assert!(matches!(
        again.check(&net.state, update(&net, 1, id, 200, 200_000), PRICE),
        Err(PayError::Stale { nonce: 200, best: 200 })
    ));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]
    /// Whatever the payer sends and whichever of its updates it closes with, the payee ends
    /// with the most any taken update paid, the payer with the rest of the deposit, and no coin
    /// is made or lost.
    #[test]
    fn funds_conserve_and_the_payee_gets_its_best(
        steps in proptest::collection::vec((0u64..4, 0u128..3_000), 1..24),
        close_at in any::<prop::sample::Index>(),
    ) {
        let (mut net, id) = opened();
        let mut book = ChannelBook::new(net.addr(2));
        let (mut nonce, mut paid, mut sent) = (0u64, 0u128, Vec::new());
        for (skip, add) in steps {
            nonce += skip;
            paid = (paid + add).min(DEPOSIT.0);
            let u = update(&net, 1, id, nonce, paid);
            sent.push(u.clone());
            let _ = pay(&mut book, &net, u);
        }
        let best = book.best(&id).map_or(0, |u| u.body.paid_total.0);
        // The most any update taken paid: every accepted one increased the total.
        prop_assert!(best <= paid);
        let close = sent[close_at.index(sent.len())].clone();
        let closes_higher = book.best(&id).is_none_or(|b| close.body.nonce >= b.body.nonce);
        net.heartbeat(vec![net.tx(1, TxKind::CloseChannel { final_update: close.clone() })]).unwrap();
        // (Account 1 pays no fee from here on and never generates a block: its balance moves
        // only by the channel's refund.)
        let payer_before = net.state.account(&net.addr(1)).balance.0;
        let height = net.state.tip().height;
        let (due, _) = book.due(&net.state, height);
        if let Some(d) = due.first() {
            net.heartbeat(vec![net.tx(2, d.kind.clone())]).unwrap();
        } else {
            // Nothing better held: the payer's close stands until its window ends.
            for _ in 0..=net.state.params().challenge_window_blocks {
                net.heartbeat(Vec::new()).unwrap();
            }
        }
        prop_assert!(net.state.channel(&id).is_none());
        let expected = if closes_higher { close.body.paid_total.0 } else { best };
        let refund = net.state.account(&net.addr(1)).balance.0 - payer_before;
        prop_assert_eq!(refund, DEPOSIT.0 - expected, "the payee was paid {} of {}", DEPOSIT.0 - refund, expected);
        prop_assert_eq!(net.state.accounted_supply(), Some(net.state.meta().supply.minted.0));
    }
}
