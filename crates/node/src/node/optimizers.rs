//! The optimizer threads a starting node runs, one per domain it optimizes: its place among
//! the domain's staked optimizers (the island it searches), the optimizer built and warm-started
//! from the experiment cube, the wait for peers on the domain's topic, shared trials in and out,
//! and the search loop on a thread of its own at lower priority.

#[allow(clippy::wildcard_imports)]
use super::*;

/// Starts the optimizer loop of every domain `engine` optimizes; each sends what it finds on
/// `found_tx`, its trials to share on `shared_tx` and its rounds (when tracking) on `rounds_tx`,
/// and stops when `stop` is set.
pub(super) fn start(
    engine: &mut Engine,
    config: &NodeConfig,
    store: &SharedStore,
    found_tx: mpsc::Sender<Found>,
    shared_tx: mpsc::Sender<crate::trials::share::Outgoing>,
    rounds_tx: &mpsc::Sender<optimizer::RoundInfo>,
    stop: &Arc<AtomicBool>,
) -> Result<Vec<std::thread::JoinHandle<()>>, NodeError> {
    let (me, key, tracker) = (engine.me, engine.key.clone(), engine.tracker.clone());
    let mut threads = Vec::new();
    for (id, rt) in engine.domains.iter_mut() {
        if !rt.config.optimize {
            continue;
        }
        let seed =
            u64::from_le_bytes(Hash::of_encoded(&(me, id.as_str())).0[..8].try_into().unwrap_or_default());
        let domain_id = doin_primitives::DomainId::new(id.as_str()).unwrap_or_default();
        let (limits, optimizers, other_evaluators) = {
            let s = store.lock();
            let tip = s.tip();
            // Accounts staked to optimize this domain, in address order: the network's
            // population is split among them (this node counts as one, staked or not).
            let mut optimizers: Vec<doin_primitives::Address> =
                tip.stakes().filter(|(_, st)| st.optimizes(&domain_id)).map(|(a, _)| *a).collect();
            if !optimizers.contains(&me) {
                optimizers.push(me);
            }
            optimizers.sort();
            let others = tip.stakes().filter(|(a, st)| **a != me && st.evaluates(&domain_id)).count();
            (tip.domain(&domain_id).map(|d| d.spec.limits).unwrap_or_default(), optimizers, others)
        };
        let place = optimizer::Place::new(
            optimizers.len(),
            optimizers.iter().position(|a| *a == me).unwrap_or_default(),
        );
        // The optimizer searches the domain within its `param_bounds`.
        let search = domains::search_domain(rt.domain.clone(), &rt.config)
            .map_err(|e| other(format!("domain {id}: {e}")))?;
        let mut opt = optimizer::build_optimizer(search.as_ref(), &rt.config, seed, place)
            .map_err(|e| other(format!("domain {id}: {e}")))?;
        // L3 warm start: the domain's rounds this node recorded before and the chain's verified
        // optimae of every participant (its experiment cube); the cube records what seeded it.
        // Domains declared similar (`warm_start_from`) seed it too.
        if !rt.config.warm_start_from.is_empty() && tracker.as_ref().and_then(|t| t.olap_path()).is_none() {
            return Err(other(format!(
                "domain {id}: warm_start_from reads the experiment cube: set olap_db_path (or --olap-db)"
            )));
        }
        if let Some((t, cube)) =
            tracker.as_ref().and_then(|t| Some((t, t.olap_path()?))).filter(|(_, p)| p.exists())
        {
            let rows = std::iter::once(id)
                .chain(&rt.config.warm_start_from)
                .map(|d| doin_tracking::olap::Olap::prior_trials(cube, d, optimizer::WARM_START_TRIALS))
                .collect::<Result<Vec<_>, _>>()
                .map(|rows| rows.concat());
            match rows {
                Ok(rows) if !rows.is_empty() => {
                    let seeds = optimizer::warm_start(opt.as_mut(), search.as_ref(), &rows);
                    let of = |s: doin_tracking::PriorSource| {
                        seeds.iter().filter(|w| w.source == s).map(|w| w.trials).sum::<u64>()
                    };
                    let (rounds, chain) =
                        (of(doin_tracking::PriorSource::Round), of(doin_tracking::PriorSource::Chain));
                    let similar = if rt.config.warm_start_from.is_empty() {
                        String::new()
                    } else {
                        format!(", with {}", rt.config.warm_start_from.join(", "))
                    };
                    tracing::info!(domain = %id, rows = rows.len(), rounds, chain, "warm start from the experiment cube");
                    println!(
                        "warm start {id}: {} prior trials ({rounds} recorded rounds, {chain} chain optimae{similar})",
                        rounds + chain
                    );
                    t.warm_start(rt.experiment.0.clone(), seeds);
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(domain = %id, error = %e, "no warm start: the experiment cube is unreadable")
                }
            }
        }
        let (ctl_tx, ctl_rx) = std::sync::mpsc::sync_channel(8);
        // Claims need their quorum to hear them: with other evaluators on chain, or peers to
        // join, the loop starts once enough peers listen on the domain's topic (or after
        // PEER_WAIT, alone). A lone node with no bootstrap peers optimizes at once.
        if other_evaluators > 0 || !engine.bootstrap.is_empty() {
            rt.waiting_for_peers = Some(Instant::now() + PEER_WAIT);
            rt.peers_needed = other_evaluators.clamp(1, PEERS_ENOUGH);
            rt.sync_pause();
            tracing::info!(
                domain = %id,
                other_evaluators,
                peers_needed = rt.peers_needed,
                "optimizer waits for a peer on the domain's topic"
            );
        }
        rt.control = Some(ctl_tx);
        let run = RunConfig {
            batch: config.workers.max(1) * 4,
            workers: config.workers,
            max_wall: Duration::from_millis(limits.max_wall_ms),
            max_epochs: limits.max_epochs,
            max_memory_bytes: u64::from(limits.max_memory_mb) << 20,
            ..RunConfig::default()
        };
        // Shared trials: other nodes' batches in (bounded: a busy loop drops them), this node's
        // out to be signed and published. The book's checks compare like the domain's quorums.
        let sharing = if rt.config.share_trials {
            let tol = domains::tolerance_of(&rt.config, config).map_err(other)?;
            let (tx, rx) = std::sync::mpsc::sync_channel(64);
            rt.trials_in = Some(tx);
            let book = crate::trials::TrialBook::new(
                crate::trials::Agreement { absolute: tol.absolute, relative: tol.relative },
                super::share::check_seed(&key, id),
            );
            let sharing = crate::trials::share::Sharing::new(
                book,
                rx,
                shared_tx.clone(),
                id.clone(),
                rt.domain.space().clone(),
                rt.sharing.clone(),
            );
            // A split population takes trials from its own island's optimizers only.
            Some(match optimizer::network_population(search.as_ref(), &rt.config) {
                Some(population) if place.optimizers > 1 => sharing.only_from(
                    (0..optimizers.len())
                        .filter(|r| place.same_island(population, *r))
                        .map(|r| optimizers[r])
                        .collect(),
                ),
                _ => sharing,
            })
        } else {
            None
        };
        let hired = rt.hired.clone();
        let (domain, found, stop, spent, paused, health, running) = (
            search.clone(),
            found_tx.clone(),
            stop.clone(),
            rt.evaluations.clone(),
            rt.paused.clone(),
            rt.health.clone(),
            rt.running.clone(),
        );
        // A plugin domain's process serves verification too, and a process inherits the
        // niceness of the thread that starts it: its optimizer thread keeps the node's.
        let shares_process = rt.config.domain_plugin.is_some();
        let rounds = tracker.is_some().then(|| rounds_tx.clone());
        let round_size = optimizer::population_of(search.as_ref(), &rt.config, run.batch, place);
        tracing::info!(
            domain = %id,
            optimizers = place.optimizers,
            rank = place.rank,
            population = round_size,
            "optimizer island"
        );
        threads.push(
            std::thread::Builder::new()
                .name(format!("optimize-{id}"))
                .spawn(move || {
                    if !shares_process {
                        optimizer::lower_priority();
                    }
                    let io = optimizer::LoopIo {
                        control: ctl_rx,
                        paused,
                        found,
                        rounds,
                        round_size,
                        stop,
                        spent,
                        health,
                        sharing,
                        running,
                        hired,
                    };
                    optimizer::run_loop(domain, opt, run, io)
                })
                .map_err(other)?,
        );
    }
    Ok(threads)
}
