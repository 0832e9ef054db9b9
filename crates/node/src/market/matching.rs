//! Matching a submitted task to the eligible provider with the highest score ([`super::score`]).

use super::*;

/// The task a client submits.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct TaskRequest {
    kind: String,
    domain_id: String,
    #[serde(default)]
    min_cores: f64,
    #[serde(default)]
    min_mem_mb: u32,
    /// Evaluations bought (kind `optimize`).
    #[serde(default)]
    evaluations: u64,
    /// DOIN.
    fee: Value,
}

pub(super) fn fee_units(v: &Value) -> Result<u128, MarketError> {
    let f = v.as_f64().ok_or_else(|| bad("bad_fee", "fee is DOIN, a number"))?;
    if !(f.is_finite() && (0.0..=1e12).contains(&f)) {
        return Err(bad("bad_fee", format!("fee {f} is not in [0, 1e12] DOIN")));
    }
    Ok((f * 1e9).round() as u128)
}

impl Market {
    pub(super) fn match_task(&self, body: Value) -> Result<Value, MarketError> {
        let req: TaskRequest =
            serde_json::from_value(body).map_err(|e| bad("bad_task", format!("not a task: {e}")))?;
        // Units the provider's price is multiplied by: requests, or evaluations bought.
        let units = match req.kind.as_str() {
            "inference" => 1,
            "optimize" if (1..=hire::MAX_EVALUATIONS).contains(&req.evaluations) => req.evaluations,
            "optimize" => {
                return Err((
                    422,
                    "bad_evaluations",
                    format!("an optimize task buys 1..={} evaluations", hire::MAX_EVALUATIONS),
                ));
            }
            _ => {
                return Err((
                    422,
                    "unsupported_kind",
                    format!(
                        "kind {:?}: this market matches inference and optimize jobs (quorum evaluations and federated audits are drawn by the chain)",
                        req.kind
                    ),
                ));
            }
        };
        let optimize = req.kind == "optimize";
        if !(req.min_cores.is_finite() && (0.0..=1024.0).contains(&req.min_cores)) {
            return Err(bad("bad_task", "min_cores must be in [0, 1024]"));
        }
        let fee = fee_units(&req.fee)?;
        let domain = DomainId::new(req.domain_id.as_str()).map_err(|e| bad("bad_task", e.to_string()))?;
        let state = self.0.store.lock().tip().clone();
        let champion_model = state
            .domain(&domain)
            .ok_or((404, "unknown_domain", format!("no domain {domain} on chain")))?
            .champion
            .as_ref()
            .and_then(|c| c.artifact);
        let need = score::Need { min_cores: req.min_cores, min_mem_mb: req.min_mem_mb, fee };
        let now = now_ms();
        let mut book = self.book();
        let mut scored = Vec::new();
        let mut refused = Vec::new();
        for (a, e) in &book.offers {
            let why = match (&e.status, &e.measured) {
                _ if !e.offer.body.domains.contains(&domain) => Some(format!("does not serve {domain}")),
                _ if optimize && !e.on_hire.contains_key(&domain) => {
                    Some(format!("does not optimize {domain} on hire"))
                }
                (Status::Failed(why), _) => Some(format!("failed its challenge: {why}")),
                (_, None) => Some("not measured yet".into()),
                _ if now.saturating_sub(e.checked_ms) > FRESH.as_millis() as u64 => {
                    Some("its measurement is stale".into())
                }
                _ if state.stake(a).is_none_or(|s| s.amount == Amount::ZERO) => {
                    Some("no longer staked".into())
                }
                _ => None,
            };
            if let Some(why) = why {
                refused.push(json!({ "provider": a.to_string(), "why": why }));
                continue;
            }
            let Some(m) = &e.measured else { continue };
            // For a hire, the price its node charges per evaluation (probed, not declared).
            let unit_price = if optimize { e.on_hire[&domain] } else { e.offer.body.price.0 };
            let p = score::Provider {
                cores: m.cores,
                mem_mb: m.mem_mb,
                price: unit_price.saturating_mul(u128::from(units)),
                reputation: state.reputation(a, &domain) as f64 / doin_primitives::FIXED_ONE as f64,
                recent_jobs: e.recent_jobs(now) as u32,
                cached: champion_model.is_some_and(|m| e.cached.contains(&m)),
            };
            match score::score(&need, &p) {
                Ok(s) => scored.push((s, *a)),
                Err(why) => refused.push(json!({ "provider": a.to_string(), "why": why })),
            }
        }
        scored.sort_by(|(x, a), (y, b)| y.total.total_cmp(&x.total).then(a.cmp(b)));
        let Some((best, provider)) = scored.first().copied() else {
            let why: Vec<String> = refused
                .iter()
                .map(|r| {
                    format!(
                        "{}: {}",
                        r["provider"].as_str().unwrap_or_default(),
                        r["why"].as_str().unwrap_or_default()
                    )
                })
                .collect();
            let why =
                if why.is_empty() { "no provider has offered itself".to_owned() } else { why.join("; ") };
            return Err((409, "no_provider", format!("no provider fits the task: {why}")));
        };
        let id = book.next_task;
        book.next_task += 1;
        let e = book.offers.get_mut(&provider).ok_or((500, "internal", "provider vanished".to_string()))?;
        e.matched_ms.push_back(now);
        while e.matched_ms.front().is_some_and(|t| now.saturating_sub(*t) >= LOAD_WINDOW_MS) {
            e.matched_ms.pop_front();
        }
        let task = json!({
            "task_id": id,
            "kind": req.kind,
            "domain_id": domain.to_string(),
            "fee": fee.to_string(),
            "min_cores": req.min_cores,
            "min_mem_mb": req.min_mem_mb,
            "evaluations": optimize.then_some(req.evaluations),
            "provider": provider.to_string(),
            "api": e.offer.body.api.as_str(),
            "price": if optimize { e.on_hire.get(&domain).copied().unwrap_or_default().saturating_mul(u128::from(units)) } else { e.offer.body.price.0 }.to_string(),
            "score": best,
            "candidates": scored.iter().take(5).map(|(s, a)| json!({ "provider": a.to_string(), "score": s })).collect::<Vec<_>>(),
            "refused": refused,
            "matched_ms": now,
        });
        book.tasks.push_back(task.clone());
        while book.tasks.len() > MAX_TASKS {
            book.tasks.pop_front();
        }
        Ok(task)
    }
}
