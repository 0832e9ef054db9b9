//! Federated rounds: the shell of [`crate::federated`]. Each tick the supervisor's jobs adopt
//! what the chain recorded and close due rounds; each closed round's record goes out as a
//! signed `FederatedRound` transaction through our own mempool and the transactions topic.
//! Recorded models are announced as artifacts; a model the chain recorded and this node lacks
//! is fetched from its holders (the job's supervisor first) and installed as a checkpoint.

#[allow(clippy::wildcard_imports)]
use super::*;
use doin_primitives::DomainId;

/// Wait before a failed model download is tried again.
const FETCH_RETRY: Duration = Duration::from_secs(1);

impl Engine {
    pub(super) async fn rounds_step(&mut self, state: &State) {
        let Some(jobs) = self.jobs.clone() else { return };
        let stake = state.stake(&self.me).cloned();
        // This node closes a round only when consensus would take its record at the next
        // height: staked as a supervisor of the job, and holding the job (its last round was
        // ours) or the job's supervisor has stalled past the takeover height, and its last
        // round's audit decided.
        let (me, next) = (self.me, state.height() + 1);
        let may_record = |d: &DomainId| {
            stake.as_ref().is_some_and(|s| s.supervises(d))
                && state.domain(d).is_some_and(|dom| {
                    let fed = dom.federated.clone().unwrap_or_default();
                    // The last round's audit is decided, or past its deadline.
                    doin_consensus::federated::audit::after_expiry(&dom.spec, &fed, next).is_ok()
                        && doin_consensus::federated::lease(&dom.spec, &fed)
                            .is_none_or(|(holder, until)| holder == me || next >= until)
                })
        };
        self.register_created_jobs(&jobs, state).await;
        let records = jobs.step(state, me, may_record);
        for record in records {
            #[cfg(feature = "adversary")]
            let record = if self.adversary == Some(Adversary::TamperRoundModel) {
                doin_primitives::FederatedRound {
                    model: Hash::of_parts(&[b"tampered", &record.model.0]),
                    ..record
                }
            } else {
                record
            };
            let (domain, round) = (record.domain.to_string(), record.round);
            let contributions = record.contributions.len();
            let tx = self.own_tx(state, doin_primitives::TxKind::FederatedRound { round: Box::new(record) });
            let id = tx.id();
            if let Err(e) = self.mempool.insert(tx.clone(), state) {
                tracing::warn!(job = domain, round, error = %e, "federated round refused by our own mempool");
                continue;
            }
            tracing::info!(job = domain, round, contributions, tx = %id, "federated round closed");
            self.publish(Topic::Txs, GossipMessage::Transaction(Box::new(tx))).await;
        }
        for model in jobs.take_announcements() {
            if let Err(e) = self.net.provide(model).await {
                tracing::warn!(%model, error = %e, "cannot announce a federated model");
            }
        }
        self.fetch_models(&jobs, state);
        self.audit_rounds(&jobs, state).await;
    }

    /// Submits the votes of finished audits, and starts the audit of every pending round whose
    /// quorum drew this node: the updates (and a base model not held here) are fetched from
    /// the round's supervisor and the DHT's providers, then re-measured off the engine's task.
    async fn audit_rounds(&mut self, jobs: &Arc<crate::federated::Jobs>, state: &State) {
        for vote in jobs.take_votes() {
            let (job, round, ok) = (vote.domain.to_string(), vote.round, vote.aggregate_ok);
            let tx = self.own_tx(state, doin_primitives::TxKind::FederatedVote { vote: Box::new(vote) });
            if let Err(e) = self.mempool.insert(tx.clone(), state) {
                tracing::warn!(job, round, error = %e, "audit vote refused by our own mempool");
                continue;
            }
            tracing::info!(job, round, aggregate_ok = ok, tx = %tx.id(), "federated round audited");
            self.publish(Topic::Txs, GossipMessage::Transaction(Box::new(tx))).await;
        }
        for task in jobs.audits_due(state, &self.me) {
            let (net, jobs) = (self.net.clone(), jobs.clone());
            tokio::spawn(async move {
                let holder = doin_net::PeerId::from_bytes(&task.supervisor.peer_id_bytes()).ok();
                let extra: Vec<doin_net::PeerId> = holder.into_iter().collect();
                let dir = jobs.download_dir();
                let fetch = |hash: Hash| {
                    let (net, dir, extra) = (net.clone(), dir.clone(), extra.clone());
                    async move {
                        fetch_bytes(&net, hash, &dir, &extra, doin_net::artifact::MAX_ARTIFACT_BYTES)
                            .await
                            .map(|(bytes, _)| bytes)
                    }
                };
                let result = async {
                    let base = match &task.base {
                        Some(b) => b.clone(),
                        None => doin_federated::supervisor::from_bytes(&fetch(task.record.base).await?)
                            .ok_or("the base model is not whole f32s")?,
                    };
                    let mut updates = Vec::with_capacity(task.record.contributions.len());
                    for c in task.record.contributions.iter() {
                        updates.push(fetch(c.update.body.weights).await?);
                    }
                    jobs.audit(&task, &base, &updates)
                }
                .await;
                match result {
                    Ok(v) => {
                        tracing::info!(
                            job = task.job,
                            round = task.record.round,
                            aggregate_ok = v.aggregate_ok,
                            "audited a federated round"
                        )
                    }
                    Err(e) => {
                        tracing::warn!(job = task.job, round = task.record.round, error = %e, "cannot audit a federated round yet")
                    }
                }
            });
        }
    }

    /// Submits the domain (with its escrow, from this node's balance) and this node's
    /// supervisor stake of every job created over HTTP since the last step; both go in one
    /// block in nonce order, the registration first.
    async fn register_created_jobs(&mut self, jobs: &Arc<crate::federated::Jobs>, state: &State) {
        use doin_primitives::{Amount, BoundedVec, Roles, TxKind};
        for c in jobs.take_creations() {
            let block_s = state.params().target_block_time_ms as f64 / 1000.0;
            let spec = match crate::federated::spec_of(&c, block_s) {
                Ok(s) => s,
                Err(e) => {
                    jobs.creation_failed(&c.job_id, e);
                    continue;
                }
            };
            let id = spec.id.clone();
            let register = self.own_tx(
                state,
                TxKind::RegisterDomain { spec: Box::new(spec), bounty: crate::federated::bounty_of(&c) },
            );
            if let Err(e) = self.mempool.insert(register.clone(), state) {
                jobs.creation_failed(&c.job_id, format!("registering the domain: {e}"));
                continue;
            }
            let mine = state.stake(&self.me).cloned();
            let mut domains: Vec<DomainId> = mine.as_ref().map(|s| s.domains.to_vec()).unwrap_or_default();
            domains.push(id);
            let Ok(domains) = BoundedVec::try_from_vec(domains) else {
                jobs.creation_failed(
                    &c.job_id,
                    "this node's stake lists the most domains a stake may".into(),
                );
                self.mempool.remove(&register.id());
                continue;
            };
            let stake = self.own_tx(
                state,
                TxKind::Stake {
                    // A first stake bonds 1 DOIN; an existing one gains the role and the domain.
                    amount: if mine.is_some() { Amount::ZERO } else { Amount::doin(1) },
                    roles: mine.as_ref().map_or(Roles::SUPERVISOR, |s| s.roles.with(Roles::SUPERVISOR)),
                    domains,
                    preferences: mine.map(|s| s.capabilities).unwrap_or_default(),
                },
            );
            if let Err(e) = self.mempool.insert(stake.clone(), state) {
                jobs.creation_failed(&c.job_id, format!("staking as its supervisor: {e}"));
                self.mempool.remove(&register.id());
                continue;
            }
            tracing::info!(job = %c.job_id, register = %register.id(), stake = %stake.id(), "submitted a created job's domain and supervisor stake");
            self.publish(Topic::Txs, GossipMessage::Transaction(Box::new(register))).await;
            self.publish(Topic::Txs, GossipMessage::Transaction(Box::new(stake))).await;
        }
    }

    /// Starts a download of every model a job lacks (not already under way): those the chain
    /// recorded, and those of round records still waiting in the mempool (fetched while their
    /// supervisor is surely up, so a standby has the model when it must take over).
    fn fetch_models(&self, jobs: &Arc<crate::federated::Jobs>, state: &State) {
        if jobs.is_empty() {
            // No job: no model to fetch, and no reason to scan the mempool every tick.
            return;
        }
        let mut wanted: Vec<(String, Hash, Option<doin_primitives::Address>)> = jobs
            .behind()
            .into_iter()
            .map(|(job, model)| {
                let supervisor = DomainId::new(job.clone())
                    .ok()
                    .and_then(|d| state.domain(&d).and_then(|d| d.federated.clone()))
                    .map(|f| f.supervisor);
                (job, model, supervisor)
            })
            .collect();
        for tx in self.mempool.iter() {
            if let doin_primitives::TxKind::FederatedRound { round } = &tx.body.kind
                && jobs.holds(round.domain.as_str(), &round.model) == Some(false)
                && tx.body.sender != self.me
            {
                wanted.push((round.domain.to_string(), round.model, Some(tx.body.sender)));
            }
        }
        self.fetch_standings(jobs, state);
        for (job, model, supervisor) in wanted {
            {
                let mut fetches = self.fl_fetches.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                fetches.retain(|_, at| at.elapsed() < FETCH_RETRY * 12);
                if fetches.get(&model).is_some_and(|at| at.elapsed() < FETCH_RETRY) {
                    continue;
                }
                fetches.insert(model, std::time::Instant::now());
            }
            // The job's supervisor holds it; the DHT names any other holder.
            let holder = supervisor.and_then(|a| doin_net::PeerId::from_bytes(&a.peer_id_bytes()).ok());
            let (net, jobs, fetches) = (self.net.clone(), jobs.clone(), self.fl_fetches.clone());
            tokio::spawn(async move {
                let dir = jobs.download_dir();
                let extra: Vec<doin_net::PeerId> = holder.into_iter().collect();
                let installed = match fetch_bytes(
                    &net,
                    model,
                    &dir,
                    &extra,
                    doin_net::artifact::MAX_ARTIFACT_BYTES,
                )
                .await
                {
                    Ok((bytes, providers)) => jobs.install(&job, &model, &bytes).map(|()| providers),
                    Err(e) => Err(e),
                };
                match installed {
                    Ok(providers) => {
                        tracing::info!(job, %model, providers, "fetched a recorded federated model");
                        fetches.lock().unwrap_or_else(std::sync::PoisonError::into_inner).remove(&model);
                    }
                    Err(e) => {
                        tracing::warn!(job, %model, error = %e, "cannot fetch a recorded federated model yet")
                    }
                }
            });
        }
    }
}

impl Engine {
    /// Starts a download of every recorded standings artifact a followed job has not restored
    /// (from the job's supervisor first, then any DHT provider; bounded in size).
    fn fetch_standings(&self, jobs: &Arc<crate::federated::Jobs>, state: &State) {
        for (job, hash) in jobs.standings_behind() {
            {
                let mut fetches = self.fl_fetches.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                if fetches.get(&hash).is_some_and(|at| at.elapsed() < FETCH_RETRY) {
                    continue;
                }
                fetches.insert(hash, std::time::Instant::now());
            }
            let holder = DomainId::new(job.clone())
                .ok()
                .and_then(|d| state.domain(&d).and_then(|d| d.federated.clone()))
                .and_then(|f| doin_net::PeerId::from_bytes(&f.supervisor.peer_id_bytes()).ok());
            let (net, jobs, fetches) = (self.net.clone(), jobs.clone(), self.fl_fetches.clone());
            tokio::spawn(async move {
                let dir = jobs.download_dir();
                let extra: Vec<doin_net::PeerId> = holder.into_iter().collect();
                let max = crate::federated::MAX_STANDING_BYTES as u64;
                let installed = fetch_bytes(&net, hash, &dir, &extra, max)
                    .await
                    .and_then(|(bytes, _)| jobs.install_standing(&job, &hash, &bytes));
                match installed {
                    Ok(n) => {
                        tracing::info!(job, standing = %hash, contributors = n, "restored the supervisor's contributor standings");
                        fetches.lock().unwrap_or_else(std::sync::PoisonError::into_inner).remove(&hash);
                    }
                    Err(e) => {
                        tracing::warn!(job, standing = %hash, error = %e, "cannot restore recorded standings yet")
                    }
                }
            });
        }
    }
}

/// Fetches the artifact `hash` (at most `max_bytes`) from its DHT providers plus `extra`, into
/// `dir`, and returns its bytes and how many providers served it; the download's files are
/// removed.
async fn fetch_bytes(
    net: &doin_net::NetworkHandle,
    hash: Hash,
    dir: &std::path::Path,
    extra: &[doin_net::PeerId],
    max_bytes: u64,
) -> Result<(Vec<u8>, usize), String> {
    let d = doin_net::artifact::fetch_bounded(net, hash, dir, extra, max_bytes)
        .await
        .map_err(|e| e.to_string())?;
    let bytes = tokio::fs::read(&d.path).await.map_err(|e| format!("reading the download: {e}"));
    let _ = tokio::fs::remove_file(&d.path).await;
    let _ = tokio::fs::remove_dir_all(dir.join(format!("{hash}.parts"))).await;
    Ok((bytes?, d.providers))
}
