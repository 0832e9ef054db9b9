//! Fake and abusive claims: inflated, lying by a factor, colluding quorums, replays, copies,
//! out-of-bounds, stale, forged, from the wrong role, and bonds run from.

#[allow(clippy::wildcard_imports)]
use super::*;

/// Claims that over-state the quorum's median by 30 – 100 % at losses from 50 to 1e-6.
pub(super) fn over_claims(spec: &DomainSpec, n: usize) -> KindReport {
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let (mut accepted, mut made) = (0, 0);
    for i in 0..n {
        let mut net = net(spec, 5);
        let loss = 50.0 * 10f64.powf(-(i as f64 % 8.0));
        let claimed = perf(loss * (1.0 - rng.random_range(0.3..1.0)));
        if let Some(a) = claim_accepted(&mut net, spec, 5, i, claimed, |j, _| noisy(loss, j)) {
            made += 1;
            accepted += u64::from(a);
        }
    }
    defended(
        "over_claim",
        made,
        accepted,
        format!("{} of {made} rejected with their bond burned", made as u64 - accepted),
    )
}

/// An optimizer reporting every loss `factor`× better than measured, through a whole
/// convergence (loss 50 → 1.5e-6), against an honest optimizer making the same progress.
pub(super) fn factor_liar(spec: &DomainSpec, factor: f64) -> KindReport {
    let run = |lie: bool| {
        let mut net = net(spec, 5);
        let me = net.addr(5);
        let mut accepted = 0u64;
        for r in 0..25 {
            let loss = 50.0 * 0.5f64.powi(r);
            let claimed = if lie { perf(loss / factor) } else { perf(loss * 0.99) };
            let landed = certificate(&mut net, spec, 5, r as usize, claimed, |j, _| noisy(loss, j))
                .and_then(|cert| land(&mut net, vec![cert]));
            if let Ok(outcomes) = landed {
                accepted += outcomes.iter().filter(|(o, _)| *o == Outcome::Accept).count() as u64;
            }
        }
        (wealth(&net.state, &me), accepted)
    };
    let (honest, honest_accepted) = run(false);
    let (liar, liar_accepted) = run(true);
    KindReport {
        kind: if factor < 5.0 { "liar_2x" } else { "liar_10x" },
        attempts: 25,
        accepted_fakes: liar_accepted,
        attacker_richer: liar > honest,
        outcome: format!(
            "liar accepted {liar_accepted} of 25 (honest {honest_accepted}); wealth liar {:.3} vs honest {:.3} DOIN",
            liar as f64 / 1e9,
            honest as f64 / 1e9
        ),
    }
}

/// Two of nine evaluators (22 % of evaluator stake) vote a liar's 10× claim as measured.
pub(super) fn colluders(spec: &DomainSpec, n: usize) -> KindReport {
    let (mut accepted, mut escalated, mut made) = (0, 0, 0);
    for i in 0..n {
        // Evaluators 0-8, optimizers 9 and 10.
        let mut net = net(spec, 9);
        let colluding = [net.addr(0), net.addr(1)];
        let loss = 10.0 * 0.5f64.powi((i % 20) as i32);
        let claimed = perf(loss / 10.0);
        let Ok(cert) = certificate(&mut net, spec, 9, i, claimed, |j, a| {
            if colluding.contains(a) { claimed } else { noisy(loss, j) }
        }) else {
            continue;
        };
        made += 1;
        escalated += u64::from(cert.escalated());
        accepted += u64::from(lands_accepted(&mut net, cert));
    }
    // Only claims whose commits were included count as attempts (a fixture error shows as 0).
    defended(
        "colluding_evaluators_below_third",
        made,
        accepted,
        format!("{escalated} of {made} escalated on the colluders' votes; {accepted} accepted"),
    )
}

/// Runs `attempts` invalid certificates built by `make` and counts those a block accepted (an
/// `Err` from `make`: the rules refused to include its commit).
pub(super) fn refused(
    kind: &'static str,
    spec: &DomainSpec,
    attempts: usize,
    make: impl Fn(&mut TestNet, usize) -> Result<Certificate, String>,
) -> KindReport {
    let mut accepted = 0;
    let mut reasons = std::collections::BTreeSet::new();
    for i in 0..attempts {
        let mut net = net(spec, 5);
        match make(&mut net, i).and_then(|cert| land(&mut net, vec![cert])) {
            Ok(_) => accepted += 1,
            Err(text) => {
                reasons.insert(
                    text.split(':').next_back().unwrap_or(&text).trim().chars().take(60).collect::<String>(),
                );
            }
        }
    }
    KindReport {
        kind,
        attempts: attempts as u64,
        accepted_fakes: accepted,
        attacker_richer: false,
        outcome: format!(
            "{} refused ({})",
            attempts as u64 - accepted,
            reasons.into_iter().take(2).collect::<Vec<_>>().join("; ")
        ),
    }
}

pub(super) fn replays(spec: &DomainSpec, n: usize) -> KindReport {
    refused("replayed_certificate", spec, n, |net, i| {
        let cert = certificate(net, spec, 5, i, perf(9.9), |j, _| noisy(10.0, j))?;
        let _ = land(net, vec![cert.clone()]);
        Ok(cert)
    })
}

pub(super) fn copies(spec: &DomainSpec, n: usize) -> KindReport {
    refused("copied_parameters", spec, n, |net, i| {
        let cert = certificate(net, spec, 5, i, perf(9.9), |j, _| noisy(10.0, j))?;
        let _ = land(net, vec![cert]);
        // Optimizer 6 re-commits the revealed parameters under its own name.
        certificate(net, spec, 6, i, perf(9.0), |j, _| noisy(9.0, j))
    })
}

/// A first-round certificate of optimizer 5's claim `claimed` against `reference`, every member
/// measuring the claim and the outcome declared Accept: only what the block rules check of the
/// commit itself can refuse it.
pub(super) fn unanimous(
    net: &mut TestNet,
    p: Vec<i64>,
    claimed: Metric,
    reference: Hash,
) -> Result<Certificate, String> {
    let (commit, reveal) = net.commit_reveal_at(5, p, claimed, reference);
    include(net, &commit)?;
    let q = net.quorums(&commit);
    let votes: Vec<_> = q.first.iter().map(|a| net.vote(a, commit.id(), 0, claimed)).collect();
    Ok(Certificate {
        commit,
        reveal,
        votes: BoundedVec::try_from_vec(votes).unwrap_or_default(),
        escalation: BoundedVec::new(),
        outcome: Outcome::Accept,
    })
}

pub(super) fn out_of_bounds(spec: &DomainSpec, n: usize) -> KindReport {
    refused("out_of_bounds_parameters", spec, n, |net, i| {
        let mut p = params(i);
        p[i % 10] = 21 * FIXED_ONE + i as i64;
        let tip = net.state.tip().hash;
        unanimous(net, p, perf(1.0), tip)
    })
}

pub(super) fn stale_references(spec: &DomainSpec, n: usize) -> KindReport {
    refused("stale_reference", spec, n, |net, i| {
        // Half the attempts: a commit whose reference aged out before its inclusion; the other
        // half: a certificate whose commit's window closed before it landed.
        let tip = net.state.tip().hash;
        if i % 2 == 0 {
            for _ in 0..=net.spec.params.max_reference_age {
                let _ = net.heartbeat(vec![]);
            }
            return unanimous(net, params(i), perf(5.0), tip);
        }
        let cert = unanimous(net, params(i), perf(5.0), tip)?;
        for _ in 0..=net.spec.params.max_reference_age {
            let _ = net.heartbeat(vec![]);
        }
        Ok(cert)
    })
}

pub(super) fn forged_signatures(spec: &DomainSpec, n: usize) -> KindReport {
    refused("forged_signature", spec, n, |net, i| {
        let mut cert = certificate(net, spec, 5, i, perf(5.0), |j, _| noisy(5.0, j))?;
        match i % 3 {
            // A vote's figure changed after signing.
            0 => {
                let mut votes = cert.votes.clone().into_inner();
                votes[0].body.measured = perf(0.001);
                cert.votes = BoundedVec::try_from_vec(votes).unwrap_or_default();
            }
            // The claim changed after signing.
            1 => cert.commit.body.claimed = perf(0.001),
            // Signed by another key.
            _ => cert.reveal = Signed::sign(cert.reveal.body.clone(), &net.keys[6]),
        }
        Ok(cert)
    })
}

pub(super) fn wrong_role(spec: &DomainSpec, n: usize) -> KindReport {
    refused("wrong_role", spec, n, |net, i| {
        // Account 0 is staked as an evaluator only.
        certificate(net, spec, 0, i, perf(9.9), |j, _| noisy(10.0, j))
    })
}

/// A liar unstakes everything before its reject lands.
pub(super) fn unbond_escape(spec: &DomainSpec) -> KindReport {
    let mut net = net(spec, 5);
    let liar = net.addr(5);
    let before = wealth(&net.state, &liar);
    let cert = certificate(&mut net, spec, 5, 1, perf(0.1), |j, _| noisy(10.0, j));
    let _ = net.heartbeat(vec![net.tx(5, TxKind::Unstake { amount: Amount::doin(100) })]);
    let landed = cert.and_then(|cert| land(&mut net, vec![cert]));
    let burned = before.saturating_sub(wealth(&net.state, &liar));
    let accepted = matches!(landed.as_deref(), Ok([(Outcome::Accept, _)]));
    KindReport {
        kind: "unstake_before_reject",
        attempts: 1,
        accepted_fakes: u64::from(accepted),
        attacker_richer: burned < Amount::doin(1).0 / 2,
        outcome: format!("bond burned from unbonding stake: {:.3} DOIN", burned as f64 / 1e9),
    }
}
