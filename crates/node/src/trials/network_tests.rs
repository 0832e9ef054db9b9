//! Several optimizers sharing trials through their books, in lockstep and in memory: sharing
//! speeds the search up, and a staked liar (every trial it publishes claims a perfect loss)
//! costs the honest nodes almost nothing — its first claim is checked, it is caught, and what
//! it sent is forgotten.

use doin_optimize::{Evaluated, Optimizer, Tpe};

use super::{Agreement, Incoming, TrialBook, share::apply};
use doin_primitives::Address;

const DIM: usize = 4;
const TARGET: f64 = 0.004;
const BUDGET: usize = 600;

/// The landscape (the same for everyone) and each node's own data: a few percent of noise,
/// fixed per node and point.
fn loss(x: &[f64], node: usize) -> f64 {
    let f: f64 = x.iter().map(|v| (v - 0.3).powi(2)).sum();
    let h = x.iter().fold(node as u64 + 1, |h, v| h.wrapping_mul(31).wrapping_add(v.to_bits()));
    let wobble = ((h % 1000) as f64 / 1000.0 - 0.5) * 0.04;
    f * (1.0 + wobble)
}

/// Who lies among the nodes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Liar {
    /// Nobody.
    None,
    /// A staked node whose every trial claims a perfect loss.
    Blatant,
    /// The same after two honest batches.
    Patient,
    /// After two honest batches, republishes the honest nodes' trials with a bad loss: the
    /// region they found good is claimed bad (a pessimistic lie steers a model-based optimizer
    /// away from it).
    Echo,
}

struct Node {
    opt: Tpe,
    book: TrialBook,
    outbox: Vec<Evaluated>,
    seq: u64,
    evaluations: usize,
}

/// Evaluations per honest node until one of them measures the target (the network's time to
/// target), with `honest` nodes that share (or not) and optionally a liar.
fn run(seed: u64, honest: usize, share: bool, liar: Liar) -> usize {
    let agreement = Agreement { absolute: 0.0, relative: 0.1 };
    let mut nodes: Vec<Node> = (0..honest)
        .map(|i| Node {
            opt: Tpe::new(DIM, Tpe::default_startup(DIM), seed * 31 + i as u64),
            book: TrialBook::new(agreement, seed ^ ((i as u64 + 1) * 0x9e37)),
            outbox: Vec::new(),
            seq: 0,
            evaluations: 0,
        })
        .collect();
    let addr = |i: usize| Address([i as u8 + 1; 32]);
    let mut lies = 0u64;
    for step in 0..BUDGET {
        for (i, n) in nodes.iter_mut().enumerate() {
            let x = n.opt.ask(1).remove(0);
            let l = loss(&x, i);
            n.evaluations += 1;
            if l <= TARGET {
                return n.evaluations;
            }
            n.opt.tell(&[Evaluated { x: x.clone(), loss: l }]);
            n.book.measured(l);
            n.outbox.push(Evaluated { x, loss: l });
            // The book's check rides with the next evaluation.
            if let Some(c) = n.book.next_check() {
                let measured = loss(&c.x, i);
                n.evaluations += 1;
                let effects = n.book.on_checked(&c, Some(measured));
                apply(&mut n.opt, effects);
            }
        }
        if !share || step % 2 != 1 {
            continue;
        }
        // Every 4 steps each node publishes what it measured; the liar its inventions.
        let mut batches: Vec<Incoming> = Vec::new();
        for (i, n) in nodes.iter_mut().enumerate() {
            n.seq += 1;
            batches.push(Incoming {
                sender: addr(i),
                standing: 1.0,
                seq: n.seq,
                trials: std::mem::take(&mut n.outbox),
                pending: n.opt.in_flight(),
            });
        }
        if liar != Liar::None {
            lies += 1;
            let mut rng = seed.wrapping_mul(6364136223846793005).wrapping_add(lies);
            let mut r = || {
                rng = rng.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                (rng >> 11) as f64 / (1u64 << 53) as f64
            };
            let echoed: Vec<Evaluated> = batches.iter().flat_map(|b| b.trials.clone()).take(32).collect();
            batches.push(Incoming {
                sender: addr(99),
                standing: 1.0,
                seq: lies,
                // The patient liars are honest in their first two batches (they pass the
                // quarantine).
                trials: if liar == Liar::Echo && lies > 2 {
                    echoed.into_iter().map(|t| Evaluated { loss: 1.0 + t.loss, x: t.x }).collect()
                } else {
                    (0..8)
                        .map(|_| {
                            let x: Vec<f64> = (0..DIM).map(|_| r()).collect();
                            let honest = liar != Liar::Blatant && lies <= 2;
                            Evaluated { loss: if honest { loss(&x, 99) } else { 0.0 }, x }
                        })
                        .collect()
                },
                pending: Vec::new(),
            });
        }
        for (i, n) in nodes.iter_mut().enumerate() {
            for b in batches.iter().filter(|b| b.sender != addr(i)) {
                let effects = n.book.on_batch(b.clone());
                apply(&mut n.opt, effects);
            }
        }
    }
    BUDGET
}

/// One optimizer asking `k` points a step (perfect sharing): evaluations per point-stream.
fn ideal(seed: u64, k: usize) -> usize {
    let mut opt = Tpe::new(DIM, Tpe::default_startup(DIM), seed * 31);
    let mut n = 0;
    while n < BUDGET * k {
        let xs = opt.ask(k);
        let mut told = Vec::new();
        for (j, x) in xs.into_iter().enumerate() {
            n += 1;
            let l = loss(&x, j);
            if l <= TARGET {
                return n.div_ceil(k);
            }
            told.push(Evaluated { x, loss: l });
        }
        opt.tell(&told);
    }
    BUDGET
}

#[test]
fn sharing_speeds_the_search_and_a_liar_barely_slows_it() {
    let seeds = 0..120u64;
    let total = |share: bool, liar: Liar| seeds.clone().map(|s| run(s, 3, share, liar)).sum::<usize>();
    let (alone, shared) = (total(false, Liar::None), total(true, Liar::None));
    let (lied, patient) = (total(true, Liar::Blatant), total(true, Liar::Patient));
    let echo = total(true, Liar::Echo);
    let single = seeds.clone().map(|s| run(s, 1, false, Liar::None)).sum::<usize>();
    let perfect = seeds.clone().map(|s| ideal(s, 3)).sum::<usize>();
    eprintln!(
        "evaluations per node, {} seeds: one node {single}; three: alone {alone}, sharing {shared} \
         (one optimizer asking three at once: {perfect}), with a liar {lied}, a patient liar {patient}, \
         a liar calling the honest nodes' points bad {echo}",
        seeds.end
    );
    assert!(shared * 5 < alone * 4, "sharing saves a fifth: {shared} vs {alone} evaluations per node");
    assert!(lied * 10 <= shared * 11, "a liar costs at most 10 %: {lied} vs {shared}");
    assert!(patient * 10 <= shared * 11, "a patient liar costs at most 10 %: {patient} vs {shared}");
    assert!(echo * 10 <= shared * 11, "a pessimistic liar costs at most 10 %: {echo} vs {shared}");
}
