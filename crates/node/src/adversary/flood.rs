//! Floods from throwaway keys through the gossip checks, and grinding the quorum draw.

#[allow(clippy::wildcard_imports)]
use super::*;

/// Signed bogus commits, reveals and votes from throwaway keys.
pub(super) fn flood(spec: &DomainSpec, n: usize, keys: usize) -> KindReport {
    let net = net(spec, 5);
    let check = GossipCheck::new();
    check.set_state(net.state.clone());
    let topic = Topic::Optimae("quadratic".into());
    let (honest, reveal) = net.commit_reveal(5, params(1), perf(5.0));
    let _ = check.check(&topic, &GossipMessage::Commit(Box::new(honest.clone())));
    let keys: Vec<Keypair> = (0..keys.max(1))
        .map(|i| Keypair::from_seed(*Hash::of(&(i as u64).to_le_bytes()).as_bytes()))
        .collect();
    let tip = net.state.tip().hash;
    let mut admitted = 0;
    for i in 0..n {
        let key = &keys[i % keys.len()];
        let message = match i % 3 {
            0 => GossipMessage::Commit(Box::new(Signed::sign(
                poo::CommitBody {
                    domain: domain_id(),
                    optimizer: key.address(),
                    optimae_hash: Hash::of(&(i as u64).to_le_bytes()),
                    claimed: perf(0.0),
                    reference_block: tip,
                },
                key,
            ))),
            1 => GossipMessage::Reveal(Box::new(Signed::sign(
                poo::RevealBody { optimizer: key.address(), ..reveal.body.clone() },
                key,
            ))),
            _ => GossipMessage::Vote(Box::new(Signed::sign(
                VoteBody {
                    commit: honest.id(),
                    evaluator: key.address(),
                    round: 0,
                    measured: perf(0.0),
                    data_hash: Hash::ZERO,
                    artifact_measured: None,
                },
                key,
            ))),
        };
        if !matches!(check.check(&topic, &message), Err(Refusal::Reject(_))) {
            admitted += 1;
        }
    }
    let honest_ok = check.check(&topic, &GossipMessage::Reveal(Box::new(reveal))).is_ok();
    KindReport {
        kind: "gossip_flood",
        attempts: n as u64,
        accepted_fakes: admitted,
        attacker_richer: false,
        outcome: format!(
            "{} of {n} rejected (forwarding peers charged), pending commits {}, honest reveal admitted after: {honest_ok}",
            n as u64 - admitted,
            check.pending()
        ),
    }
}

/// An optimizer whose colluders hold 20 % of evaluator stake tries `tries` salts and references
/// per commit and commits the one whose quorum it predicts its colluders fill most — the quorum
/// drawn with the newest beacon it knows, the tip's — against committing with its first salt.
/// Both commits are included and sealed on a real chain (seal-leader blocks, VRF beacons) and
/// the quorums they actually drew are counted. The test is one-sided on the colluders' share of
/// seats (normal approximation of two proportions).
pub(super) fn grinding(spec: &DomainSpec, commits: usize, tries: usize) -> (f64, (f64, f64), KindReport) {
    let mut net = net(spec, 20);
    let colluding: Vec<Address> = (0..4).map(|i| net.addr(i)).collect();
    let key = net.keys[20].clone();
    let optimizer = key.address();
    // Some history: references to grind over.
    for _ in 0..4 {
        let _ = net.heartbeat(vec![]);
    }
    let seats = |q: &quorum::Quorums| q.first.iter().filter(|a| colluding.contains(a)).count();
    let (mut plain, mut ground, mut predicted, mut total) = (0usize, 0usize, 0usize, 0usize);
    for c in 0..commits {
        let state = net.state.clone();
        let Some(tip) = state.recent_at(state.height()).cloned() else { break };
        let references: Vec<Hash> =
            (0..4).filter_map(|back| state.recent_hash_at(state.height().checked_sub(back)?)).collect();
        let p: poo::Params = BoundedVec::try_from_vec(params(c)).unwrap_or_default();
        let body = |t: usize| {
            let salt = Hash::of_parts(&[b"grind", &(c as u64).to_le_bytes(), &(t as u64).to_le_bytes()]).0;
            poo::CommitBody {
                domain: domain_id(),
                optimizer,
                optimae_hash: poo::optimae_hash(&p, &salt, &optimizer),
                claimed: perf(1.0),
                reference_block: references[t % references.len()],
            }
        };
        // What the optimizer can compute before committing: the quorum under the tip's beacon.
        let guess = quorum::Sealed { inclusion: &tip, beacon: state.meta().beacon };
        let predict = |b: &poo::CommitBody| {
            seats(&quorum::quorums(&guess, &spec.quorum, &domain_id(), &optimizer, &Hash::of_encoded(b)))
        };
        let best = (1..=tries).map(body).max_by_key(|b| predict(b)).unwrap_or_else(|| body(1));
        predicted += predict(&best);
        let pair = [Signed::sign(body(0), &key), Signed::sign(best, &key)];
        if net.include(pair.to_vec()).is_err() {
            break;
        }
        let (a, b) = (net.quorums(&pair[0]), net.quorums(&pair[1]));
        plain += seats(&a);
        ground += seats(&b);
        total += a.first.len();
    }
    let p1 = plain as f64 / total.max(1) as f64;
    let p2 = ground as f64 / total.max(1) as f64;
    let pooled = (plain + ground) as f64 / (2 * total).max(1) as f64;
    let se = (pooled * (1.0 - pooled) * 2.0 / total.max(1) as f64).sqrt();
    let z = if se > 0.0 { (p2 - p1) / se } else { 0.0 };
    let p = 0.5 * erfc(z / std::f64::consts::SQRT_2);
    let kind = KindReport {
        kind: "quorum_grinding",
        attempts: (commits * tries) as u64,
        accepted_fakes: 0,
        attacker_richer: p < 0.01,
        outcome: format!(
            "colluders' seat share {p1:.3} with one salt, {p2:.3} trying {tries} salts/references per commit \
             (p = {p:.2e}); the grinder predicted {:.3} from the tip's beacon, but the quorum comes from \
             the beacon of the block after the commit's inclusion",
            predicted as f64 / total.max(1) as f64
        ),
    };
    (p, (p1, p2), kind)
}

/// The complementary error function (Numerical Recipes' Chebyshev fit, |error| < 1.2e-7).
pub(super) fn erfc(x: f64) -> f64 {
    let z = x.abs();
    let t = 1.0 / (1.0 + 0.5 * z);
    let r = t
        * (-z * z - 1.265_512_23
            + t * (1.000_023_68
                + t * (0.374_091_96
                    + t * (0.096_784_18
                        + t * (-0.186_288_06
                            + t * (0.278_868_07
                                + t * (-1.135_203_98
                                    + t * (1.488_515_87 + t * (-0.822_152_23 + t * 0.170_872_77)))))))))
            .exp();
    if x >= 0.0 { r } else { 2.0 - r }
}
