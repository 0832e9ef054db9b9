//! The market's side of a capability check: due providers challenged one at a time, the
//! answer timed and sampled, the memory pass recomputed, the book updated.

use super::*;

impl Market {
    /// Checks the providers that are due, one at a time, until the node stops.
    pub async fn run_checks(self) {
        loop {
            tokio::time::sleep(Duration::from_millis(500)).await;
            let due = {
                let mut book = self.book();
                let now = now_ms();
                let due = book
                    .offers
                    .iter()
                    .filter(|(_, e)| {
                        !e.in_flight
                            && (e.status == Status::Unchecked
                                || now.saturating_sub(e.checked_ms) >= RECHECK.as_millis() as u64)
                    })
                    .map(|(a, e)| (*a, e.offer.body.clone()))
                    .next();
                if let Some((a, _)) = &due
                    && let Some(e) = book.offers.get_mut(a)
                {
                    e.in_flight = true;
                }
                due
            };
            let Some((provider, offer)) = due else { continue };
            let staked = self.0.store.lock().tip().stake(&provider).is_some_and(|s| s.amount > Amount::ZERO);
            let result = if staked {
                self.check(&provider, offer.api.as_str(), &offer.domains).await
            } else {
                Err("no longer staked".into())
            };
            self.book().record(&provider, result, now_ms());
        }
    }

    async fn post_challenge(&self, api: &str, c: &Challenge) -> Result<(CapabilityAnswer, Duration), String> {
        let started = Instant::now();
        let body = serde_json::to_string(c).map_err(|e| e.to_string())?;
        let (status, bytes) =
            http::call(api, "POST", "/api/market/challenge", Some(&body), ANSWER_TIMEOUT).await?;
        let wall = started.elapsed();
        if status != 200 {
            return Err(format!(
                "the challenge was answered HTTP {status}: {}",
                String::from_utf8_lossy(&bytes)
            ));
        }
        let answer =
            serde_json::from_slice(&bytes).map_err(|e| format!("the answer is not an answer: {e}"))?;
        Ok((answer, wall))
    }

    /// Challenges `provider` at `api`: cores, memory, the models it holds.
    async fn check(&self, provider: &Address, api: &str, domains: &[DomainId]) -> Result<Probe, String> {
        let fresh = || Hash(rand::rng().random());
        let reference = tokio::task::spawn_blocking({
            let me = self.clone();
            move || me.reference(true)
        })
        .await
        .map_err(|e| e.to_string())?;
        // One core's second of work, in UNITS chains.
        let iterations = ((reference * CHALLENGE_CORE_S) / f64::from(UNITS))
            .clamp(1.0, f64::from(doin_primitives::market::MAX_ITERATIONS)) as u32;
        let work = Challenge { seed: fresh(), units: UNITS, iterations, mem_mb: 0 };
        let (answer, wall) = self.post_challenge(api, &work).await?;
        let samples: Vec<u32> = rand::seq::index::sample(&mut rand::rng(), UNITS as usize, SAMPLES)
            .iter()
            .map(|i| i as u32)
            .collect();
        let (p, c) = (*provider, work.clone());
        tokio::task::spawn_blocking(move || check_answer(&answer, &p, &c, &samples))
            .await
            .map_err(|e| e.to_string())??;
        let hashes_per_s = f64::from(UNITS) * f64::from(iterations) / wall.as_secs_f64().max(1e-6);
        let cores = hashes_per_s / reference;
        let mem = Challenge { seed: fresh(), units: 0, iterations: 0, mem_mb: self.0.check_mem_mb };
        let (answer, _) = self.post_challenge(api, &mem).await?;
        let (p, c) = (*provider, mem.clone());
        tokio::task::spawn_blocking(move || check_answer(&answer, &p, &c, &[]))
            .await
            .map_err(|e| e.to_string())??;
        // The models it holds: each served domain's champion, probed.
        let state = self.0.store.lock().tip().clone();
        let mut cached = BTreeSet::new();
        for d in domains {
            let Some(artifact) = state.domain(d).and_then(|x| x.champion.as_ref()).and_then(|c| c.artifact)
            else {
                continue;
            };
            if let Ok((200, _)) =
                http::call(api, "GET", &format!("/api/model/{artifact}"), None, Duration::from_secs(10)).await
            {
                cached.insert(artifact);
            }
        }
        // The offered domains it optimizes on hire, and at what price per evaluation.
        let mut on_hire = BTreeMap::new();
        if let Ok((200, body)) =
            http::call(api, "GET", "/api/market/hire", None, Duration::from_secs(10)).await
            && let Ok(v) = serde_json::from_slice::<Value>(&body)
        {
            for d in v["domains"].as_array().into_iter().flatten() {
                let (Some(id), Some(price)) = (
                    d["domain_id"].as_str().and_then(|x| DomainId::new(x).ok()),
                    d["price_per_evaluation"].as_str().and_then(|p| p.parse::<u128>().ok()),
                ) else {
                    continue;
                };
                if domains.contains(&id) {
                    on_hire.insert(id, price);
                }
            }
        }
        Ok((
            Measured { cores, mem_mb: self.0.check_mem_mb, hashes_per_s, wall_ms: wall.as_millis() as u64 },
            cached,
            on_hire,
        ))
    }
}
