//! The QuackMesh-shaped job API (`/api/job*`, `/api/cluster`) over [`Jobs`], and contributors'
//! liveness.

use super::*;

impl Jobs {
    /// Marks `who` heard from now; `node:joined` when it was not online.
    fn seen(&self, job: &str, rt: &mut Runtime, who: doin_primitives::Address, sent_ms: Option<u64>) {
        let now = self.now_ms();
        let entry = rt.seen.entry(who).or_default();
        entry.at_ms = now;
        if let Some(t) = sent_ms {
            entry.last_sent_ms = t;
        }
        if !entry.online {
            entry.online = true;
            let capabilities = self
                .store
                .lock()
                .tip()
                .stake(&who)
                .map(|s| (s.capabilities.cpu_cores, s.capabilities.bandwidth_mbps));
            self.events.emit(
                "node:joined",
                Some(job),
                json!({
                    "contributor": who.to_string(),
                    "cpu_cores": capabilities.map(|c| c.0),
                    "bandwidth_mbps": capabilities.map(|c| c.1),
                }),
            );
        }
    }

    /// Jobs created over HTTP whose domain and supervisor stake are to be submitted.
    pub fn take_creations(&self) -> Vec<FederatedJobConfig> {
        std::mem::take(&mut *lock(&self.creations))
    }

    /// A created job whose registration could not be submitted: said in `/api/jobs`.
    pub fn creation_failed(&self, job: &str, why: String) {
        tracing::warn!(job, error = %why, "cannot register a job created over HTTP");
        if let Some(rt) = lock(&self.jobs).get_mut(job) {
            rt.problem = Some(why);
        }
    }
}

impl JobApi for Jobs {
    fn heartbeat(&self, job: &str, beat: doin_primitives::SignedHeartbeat) -> Result<Value, JobError> {
        let mut jobs = lock(&self.jobs);
        let rt = jobs.get_mut(job).ok_or_else(|| JobError::NotFound(job.into()))?;
        let refuse = |why: &str| Err(JobError::Refused(why.to_owned()));
        if !beat.verify() {
            return refuse("the heartbeat's signature does not verify");
        }
        if beat.domain != rt.domain {
            return Err(JobError::Refused(format!(
                "a heartbeat for {:?}, this job is {job:?}",
                beat.domain.as_str()
            )));
        }
        // Only registered contributors are tracked: strangers cannot fill the map.
        if !self.registered(&rt.domain, &beat.contributor) {
            return refuse(
                "the sender is not registered as a contributor of this job (a stake with the role)",
            );
        }
        let wall = doin_api::now_ms();
        if beat.sent_ms.abs_diff(wall) > HEARTBEAT_SKEW_MS {
            return Err(JobError::Refused(format!(
                "sent_ms {} is more than {} s from this node's clock ({wall})",
                beat.sent_ms,
                HEARTBEAT_SKEW_MS / 1000
            )));
        }
        if rt.seen.get(&beat.contributor).is_some_and(|s| beat.sent_ms <= s.last_sent_ms) {
            return refuse("not newer than the contributor's last heartbeat (a replay)");
        }
        self.seen(job, rt, beat.contributor, Some(beat.sent_ms));
        let online = rt.seen.values().filter(|s| s.online).count();
        Ok(json!({ "job": job, "round": rt.job.model().0, "online": online }))
    }

    fn create(&self, owner: &str, config: Value) -> Result<Value, JobError> {
        let c: FederatedJobConfig =
            serde_json::from_value(config).map_err(|e| JobError::Invalid(format!("the job: {e}")))?;
        crate::config::check_job_request(&c).map_err(JobError::Invalid)?;
        let domain =
            DomainId::new(c.job_id.clone()).map_err(|e| JobError::Invalid(format!("job_id: {e}")))?;
        let mut jobs = lock(&self.jobs);
        if jobs.contains_key(&c.job_id) {
            return Err(JobError::Refused(format!("job {:?} already runs on this node", c.job_id)));
        }
        let mut created = lock(&self.created);
        if created.len() >= MAX_CREATED {
            return Err(JobError::Refused(format!(
                "this node already runs {MAX_CREATED} jobs created over HTTP"
            )));
        }
        if self.store.lock().tip().domain(&domain).is_some() {
            return Err(JobError::Refused(format!(
                "a domain {:?} is already registered on the chain",
                c.job_id
            )));
        }
        let rt = runtime(&c, Some(owner.to_owned()), &self.data, &self.dir, &self.store, self.now_ms())
            .map_err(JobError::Invalid)?;
        created.push((c.clone(), owner.to_owned()));
        let text = serde_json::to_vec_pretty(&*created).unwrap_or_default();
        if let Err(e) = write_durably(&created_path(&self.dir), &text) {
            created.pop();
            return Err(JobError::Refused(format!("cannot save the job: {e}")));
        }
        jobs.insert(c.job_id.clone(), rt);
        lock(&self.creations).push(c.clone());
        self.events.emit("job:created", Some(&c.job_id), json!({ "owner": owner, "bounty": c.bounty }));
        tracing::info!(job = %c.job_id, owner, bounty = c.bounty, "federated job created over HTTP");
        Ok(json!({ "job": c.job_id, "owner": owner, "status": "registering" }))
    }

    fn offer_model(&self, job: &str, weights: Vec<u8>) -> Result<Value, JobError> {
        let behind = lock(&self.jobs).get(job).ok_or_else(|| JobError::NotFound(job.into()))?.behind;
        let Some(model) = behind else {
            return Err(JobError::Refused("this node lacks no recorded model of the job".into()));
        };
        self.install(job, &model, &weights)
            .map_err(|e| JobError::Refused(format!("not model {model}: {e}")))?;
        tracing::info!(job, %model, "installed a recorded model a holder offered");
        Ok(json!({ "job": job, "installed": model.to_string() }))
    }

    fn exists(&self, job: &str) -> bool {
        lock(&self.jobs).contains_key(job)
    }

    fn list(&self) -> Value {
        let jobs = lock(&self.jobs);
        let store = self.store.lock();
        let tip = store.tip();
        json!({
            "jobs": jobs.iter().map(|(id, rt)| {
                let (round, _, hash) = rt.job.model();
                // Who records the job's rounds now (the chain's last recorder), and until which
                // height no other supervisor may.
                let lease = tip.domain(&rt.domain).and_then(|d| {
                    doin_consensus::federated::lease(&d.spec, &d.federated.clone().unwrap_or_default())
                });
                json!({
                    "job": id,
                    "round": round,
                    "model_hash": hash.to_string(),
                    "admitted": rt.job.admitted(),
                    "closed": rt.job.closed().is_some(),
                    // When the open round opened (node clock): a round reopened over the same
                    // model — its record not taken, or rejected by its audit — is new to
                    // contributors that sent for it before.
                    "opened_ms": rt.job.opened_ms(),
                    "accuracy": rt.job.accuracy(),
                    "rule": rt.job.spec().rule.name(),
                    "behind": rt.behind.map(|h| h.to_string()),
                    // This node records the job's rounds now (a standby does not).
                    "supervising": rt.supervising,
                    "supervisor": lease.map(|l| l.0.to_string()),
                    "takeover_height": lease.map(|l| l.1),
                    "owner": rt.owner,
                    // Not on chain yet (a job created over HTTP), or why it could not be.
                    "registered": tip.domain(&rt.domain).is_some(),
                    "problem": rt.problem,
                    // How the chain settled the job's rounds (docs/design.md §21c).
                    "audit": tip.domain(&rt.domain).and_then(|d| d.federated.as_ref()).map(|f| json!({
                        "audited": f.audited,
                        "unaudited": f.unaudited,
                        "unpaid": f.unpaid,
                        "rejected": f.rejected,
                        "pending": f.pending.as_ref().map(|p| json!({
                            "round": p.record.round,
                            "height": p.height,
                            "votes": p.votes.len(),
                        })),
                    })),
                    // The model served for inference: the newest audited round's (§22g).
                    "verified": tip.domain(&rt.domain).and_then(|d| d.federated.as_ref()).and_then(|f| f.verified.as_ref()).map(|v| json!({
                        "model_hash": v.model.to_string(),
                        "round": v.round,
                        "quality": v.quality_micro as f64 / 1e6,
                        "height": v.height,
                    })),
                    "serve_inference": rt.served.is_some(),
                    "inference_price": rt.served.as_ref().map(|s| s.price.0.to_string()),
                })
            }).collect::<Vec<_>>(),
        })
    }

    fn model(&self, job: &str) -> Result<Value, JobError> {
        let jobs = lock(&self.jobs);
        let rt = jobs.get(job).ok_or_else(|| JobError::NotFound(job.into()))?;
        let (round, weights, hash) = rt.job.model();
        let spec = rt.job.spec();
        Ok(json!({
            "job": job,
            "round": round,
            "model_hash": hash.to_string(),
            "sizes": spec.sizes,
            "lr": spec.lr,
            "batch": spec.batch,
            "closed": rt.job.closed().is_some(),
            "weights": hex::encode(to_bytes(weights)),
        }))
    }

    fn submit(&self, job: &str, update: SignedUpdate, weights: Vec<u8>) -> Result<Value, JobError> {
        let now = self.now_ms();
        let mut jobs = lock(&self.jobs);
        let rt = jobs.get_mut(job).ok_or_else(|| JobError::NotFound(job.into()))?;
        let who = update.contributor;
        let round = update.round;
        let registered = self.registered(&rt.domain, &who);
        match rt.job.submit(update, &weights, registered, now) {
            Ok(admitted) => {
                self.seen(job, rt, who, None);
                self.keep_update(job, round, &weights);
                self.events.emit(
                    "gradient:received",
                    Some(job),
                    json!({ "contributor": who.to_string(), "round": round, "bytes": weights.len(), "admitted": admitted }),
                );
                Ok(json!({ "job": job, "round": round, "admitted": admitted }))
            }
            Err(e) => {
                tracing::info!(job, contributor = %who, error = %e, "federated update refused");
                self.events.emit(
                    "gradient:refused",
                    Some(job),
                    json!({ "contributor": who.to_string(), "round": round, "reason": e.to_string() }),
                );
                Err(JobError::Refused(e.to_string()))
            }
        }
    }

    fn cluster(&self, job: &str) -> Result<Value, JobError> {
        let jobs = lock(&self.jobs);
        let rt = jobs.get(job).ok_or_else(|| JobError::NotFound(job.into()))?;
        let (round, _, hash) = rt.job.model();
        let now = self.now_ms();
        let store = self.store.lock();
        let stakes = store.tip();
        let contributors: Vec<Value> = rt
            .job
            .standings()
            .map(|(a, s, reputation, quarantined)| {
                let capabilities = stakes.stake(a).map(|st| &st.capabilities);
                json!({
                    "contributor": a.to_string(),
                    "rounds": s.rounds,
                    "kept": s.kept,
                    "strikes": s.strikes,
                    "last_quality": s.last_quality_micro as f64 / 1e6,
                    "reputation": reputation,
                    "quarantined": quarantined,
                    "quarantines": rt.job.quarantines(a),
                    "earned": rt.earned.get(&a.to_string()).map_or(0.0, |x| x.0 as f64 / 1e9),
                    "online": rt.seen.get(a).is_some_and(|s| s.online),
                    "last_seen_s": rt.seen.get(a).map(|s| now.saturating_sub(s.at_ms) as f64 / 1000.0),
                    "cpu_cores": capabilities.map(|c| c.cpu_cores),
                    "bandwidth_mbps": capabilities.map(|c| c.bandwidth_mbps),
                })
            })
            .collect();
        Ok(json!({
            "job": job,
            "round": round,
            "model_hash": hash.to_string(),
            "admitted": rt.job.admitted(),
            "deadline_in_s": (rt.job.deadline_ms() as f64 - now as f64) / 1000.0,
            "accuracy": rt.job.accuracy(),
            "history": rt.history.iter().map(|(r, a)| json!({ "round": r, "accuracy": a })).collect::<Vec<_>>(),
            "last_payouts": rt.last_payouts.iter().map(|(a, x)| json!({ "contributor": a, "amount": x.0 as f64 / 1e9 })).collect::<Vec<_>>(),
            "behind": rt.behind.map(|h| h.to_string()),
            "contributors": contributors,
        }))
    }
}
