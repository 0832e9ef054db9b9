//! `GET /metrics`: Prometheus text exposition (version 0.0.4) of the chain, mempool, evaluation
//! queue, optimizer, plugin, event and HTTP figures, followed by the network's own registry
//! (libp2p and gossipsub).

use std::{
    fmt::Write,
    sync::atomic::{AtomicU64, AtomicUsize, Ordering},
};

use axum::{
    extract::State,
    http::header,
    response::{IntoResponse, Response},
};

use crate::{ApiState, fixed, live, store};

/// Label values: backslash, quote and newline escaped.
fn label(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

struct Out(String);

impl Out {
    fn metric(&mut self, name: &str, kind: &str, help: &str, samples: &[(String, f64)]) {
        let _ = writeln!(self.0, "# HELP {name} {help}");
        let _ = writeln!(self.0, "# TYPE {name} {kind}");
        for (labels, v) in samples {
            let _ = writeln!(self.0, "{name}{labels} {v}");
        }
    }

    fn one(&mut self, name: &str, kind: &str, help: &str, v: f64) {
        self.metric(name, kind, help, &[(String::new(), v)]);
    }
}

/// The exposition text.
pub fn text(s: &ApiState) -> String {
    let l = live(s);
    let mut o = Out(String::with_capacity(8192));
    {
        let st = store(s);
        let state = st.tip();
        let meta = state.meta();
        o.one("doin_chain_height", "gauge", "Height of the canonical tip.", state.height() as f64);
        o.one(
            "doin_chain_finalized_height",
            "gauge",
            "Height of the finalized checkpoint (source of a 2/3-stake link to the next).",
            meta.finalized.height as f64,
        );
        o.one(
            "doin_chain_justified_height",
            "gauge",
            "Height of the justified checkpoint (target of a 2/3-stake link).",
            meta.justified.height as f64,
        );
        o.one(
            "doin_chain_cumulative_work",
            "gauge",
            "Cumulative work of the canonical chain.",
            fixed(meta.cumulative_work),
        );
        o.one("doin_chain_threshold", "gauge", "Work a work block needs.", fixed(meta.difficulty.threshold));
        o.one(
            "doin_chain_work_blocks",
            "counter",
            "Work blocks on the canonical chain.",
            meta.difficulty.work_blocks as f64,
        );
        o.one(
            "doin_chain_base_fee",
            "gauge",
            "Base fee per weight unit, base units.",
            meta.base_fee.0 as f64,
        );
        o.one("doin_supply_minted_doin", "counter", "Coins minted.", meta.supply.minted.0 as f64 / 1e9);
        o.one("doin_supply_burned_doin", "counter", "Coins burned.", meta.supply.burned.0 as f64 / 1e9);
        let mut champions = Vec::new();
        let mut improvements = Vec::new();
        let mut rejected = Vec::new();
        for (id, d) in state.domains() {
            let l = format!("{{domain=\"{}\"}}", label(id.as_str()));
            if let Some(c) = &d.champion {
                champions.push((l.clone(), c.performance.to_f64()));
            }
            improvements.push((l.clone(), d.stats.improvements as f64));
            rejected.push((l, d.stats.rejected as f64));
        }
        o.metric("doin_domain_champion_performance", "gauge", "Verified champion performance.", &champions);
        o.metric("doin_domain_improvements", "counter", "Accepted improvements on chain.", &improvements);
        o.metric("doin_domain_rejected", "counter", "Rejected optimae on chain.", &rejected);
        let mut disputes = std::collections::BTreeMap::from([
            ("pending", 0.0),
            ("upheld", 0.0),
            ("refused", 0.0),
            ("undecided", 0.0),
        ]);
        for (_, d) in state.disputes() {
            let key = match d.outcome {
                None => "pending",
                Some(doin_consensus::disputes::DisputeOutcome::Upheld { .. }) => "upheld",
                Some(doin_consensus::disputes::DisputeOutcome::Refused) => "refused",
                Some(doin_consensus::disputes::DisputeOutcome::Undecided) => "undecided",
            };
            *disputes.entry(key).or_default() += 1.0;
        }
        o.metric(
            "doin_inference_disputes",
            "gauge",
            "Disputes of inference receipts on chain, by outcome.",
            &labelled("outcome", disputes),
        );
    }
    if let Some(i) = &s.inference {
        let q = i.queue();
        for (key, kind, help) in [
            ("waiting", "gauge", "Inference requests waiting for the slot."),
            ("batches", "counter", "Forward passes the inference slot ran."),
            ("requests", "counter", "Inference requests those passes answered."),
            ("expired", "counter", "Inference requests that waited past their expiry."),
            ("refused", "counter", "Inference requests refused: queue full."),
            ("jobs_pending", "gauge", "Asynchronous inference jobs pending."),
        ] {
            o.one(&format!("doin_inference_{key}"), kind, help, q[key].as_f64().unwrap_or(0.0));
        }
    }
    if let Some(m) = &s.market {
        let c = m.counts();
        let offers = std::collections::BTreeMap::from([
            ("unchecked", c.unchecked as f64),
            ("passed", c.passed as f64),
            ("failed", c.failed as f64),
        ]);
        o.metric(
            "doin_market_offers",
            "gauge",
            "Providers' offers this market holds, by check status.",
            &labelled("status", offers),
        );
        o.one("doin_market_checks", "counter", "Capability checks this market ran.", c.checks as f64);
        o.one(
            "doin_market_failed_checks",
            "counter",
            "Capability checks a provider failed.",
            c.failed_checks as f64,
        );
        o.one(
            "doin_hire_evaluations_bought",
            "counter",
            "Evaluations of this node's search bought by hires (domains optimized on hire).",
            c.hired_bought as f64,
        );
        o.one(
            "doin_hire_evaluations_run",
            "counter",
            "Hired evaluations this node's optimizer ran.",
            c.hired_evaluated as f64,
        );
    }
    o.one("doin_peers", "gauge", "Connected peers.", l.peers.len() as f64);
    o.one("doin_mempool_transactions", "gauge", "Transactions waiting in the mempool.", l.mempool as f64);
    o.one(
        "doin_pending_commitments",
        "gauge",
        "Commits without a certificate yet.",
        l.pending_commitments as f64,
    );
    o.one("doin_pending_quorums", "gauge", "Quorums evaluating or escalated.", l.pending_quorums as f64);
    o.metric(
        "doin_gossip_refused_total",
        "counter",
        "Optimae gossip refused by the state checks (reject: the forwarding peer is penalized).",
        &[
            ("{verdict=\"reject\"}".to_owned(), l.gossip_refused.0 as f64),
            ("{verdict=\"ignore\"}".to_owned(), l.gossip_refused.1 as f64),
        ],
    );
    o.one(
        "doin_gossip_pending_commits",
        "gauge",
        "Commits admitted by the gossip checks and not settled.",
        l.gossip_pending as f64,
    );
    o.one(
        "doin_peers_graylisted",
        "gauge",
        "Peers whose gossip score is below the graylist threshold.",
        l.peer_scores.values().filter(|v| **v < crate::GRAYLIST_SCORE).count() as f64,
    );
    o.one(
        "doin_peers_banned",
        "gauge",
        "Peers disconnected and refused after their gossip score fell far below the graylist.",
        l.banned_peers.len() as f64,
    );
    o.one(
        "doin_evidence_pending",
        "gauge",
        "Double-vote and finality evidence waiting for a block.",
        l.evidence_pending as f64,
    );
    o.one(
        "doin_finality_votes_pending",
        "gauge",
        "Finality votes held for blocks (own and gossiped).",
        l.finality_votes_pending as f64,
    );
    o.one(
        "doin_evaluations_running",
        "gauge",
        "Quorum evaluations running on this node.",
        l.evaluating.len() as f64,
    );
    let (pending, claimed, completed) = s.tasks.lock().map(|mut q| q.counts()).unwrap_or((0, 0, 0));
    o.metric(
        "doin_task_queue",
        "gauge",
        "External evaluator tasks by state.",
        &[
            ("{state=\"pending\"}".into(), pending as f64),
            ("{state=\"claimed\"}".into(), claimed as f64),
            ("{state=\"completed\"}".into(), completed as f64),
        ],
    );
    let evals: Vec<(String, f64)> = l
        .domains
        .iter()
        .filter(|(_, d)| d.optimize)
        .map(|(id, d)| (format!("{{domain=\"{}\"}}", label(id)), d.evaluations as f64))
        .collect();
    o.metric(
        "doin_optimizer_evaluations_total",
        "counter",
        "Evaluations this node's optimizer loop ran.",
        &evals,
    );
    let by_purpose: Vec<(String, f64)> = l
        .domains
        .iter()
        .filter(|(_, d)| d.optimize)
        .flat_map(|(id, d)| {
            d.evaluations_by_purpose.iter().map(move |(p, n)| {
                (format!("{{domain=\"{}\",purpose=\"{}\"}}", label(id), label(p)), *n as f64)
            })
        })
        .collect();
    o.metric(
        "doin_optimizer_evaluations_by_purpose_total",
        "counter",
        "Evaluations this node's optimizer loop ran, by purpose: its own candidates, checks of other nodes' claims, verified champions measured here, second opinions before a claim.",
        &by_purpose,
    );
    let mut shared = Vec::new();
    let mut senders = Vec::new();
    for (id, d) in l.domains.iter().filter(|(_, d)| d.shared_trials.enabled) {
        let t = &d.shared_trials;
        for (kind, v) in
            [("received", t.received), ("used", t.used), ("published", t.published), ("checked", t.checks)]
        {
            shared.push((format!("{{domain=\"{}\",kind=\"{kind}\"}}", label(id)), v as f64));
        }
        for (state, v) in
            [("trusted", t.trusted_senders), ("banned", t.senders_banned), ("vouched", t.vouched_senders)]
        {
            senders.push((format!("{{domain=\"{}\",state=\"{state}\"}}", label(id)), v as f64));
        }
    }
    o.metric(
        "doin_shared_trials_total",
        "counter",
        "Shared trials: received from other nodes, used by the optimizer, published by this node, other nodes' claims checked here.",
        &shared,
    );
    o.metric(
        "doin_shared_trial_senders",
        "gauge",
        "Other nodes whose trials are used (trusted), were caught by a check (banned), or were trusted because the chain certified one of their claims (vouched).",
        &senders,
    );
    let withdrawn: Vec<(String, f64)> = l
        .domains
        .iter()
        .filter(|(_, d)| d.evaluate)
        .map(|(id, d)| {
            (format!("{{domain=\"{}\"}}", label(id)), f64::from(u8::from(d.standing == "withdrawn")))
        })
        .collect();
    o.metric(
        "doin_domain_withdrawn",
        "gauge",
        "1 when this node cannot evaluate the domain and left its quorums.",
        &withdrawn,
    );
    let mut calls = Vec::new();
    let mut errors = Vec::new();
    let mut starts = Vec::new();
    let mut backoff = Vec::new();
    let mut faults = Vec::new();
    for p in &l.plugins {
        let name = label(p["name"].as_str().unwrap_or("?"));
        let lbl = format!("{{plugin=\"{name}\"}}");
        calls.push((lbl.clone(), p["calls"].as_f64().unwrap_or(0.0)));
        errors.push((lbl.clone(), p["errors"].as_f64().unwrap_or(0.0)));
        starts.push((lbl.clone(), p["starts"].as_f64().unwrap_or(0.0)));
        backoff.push((lbl.clone(), f64::from(u8::from(p["disabled"] == true))));
        faults.push((lbl, p["faults_in_row"].as_f64().unwrap_or(0.0)));
    }
    o.metric("doin_plugin_calls_total", "counter", "Calls made to plugin processes.", &calls);
    o.metric("doin_plugin_errors_total", "counter", "Plugin calls that failed.", &errors);
    o.metric("doin_plugin_starts_total", "counter", "Plugin processes started (restarts included).", &starts);
    o.metric("doin_plugin_backoff", "gauge", "1 while a plugin waits out a restart backoff.", &backoff);
    o.metric("doin_plugin_faults_in_row", "gauge", "Plugin faults since its last good call.", &faults);
    let events: Vec<(String, f64)> = s
        .events
        .counts()
        .into_iter()
        .map(|(k, v)| (format!("{{type=\"{}\"}}", label(&k)), v as f64))
        .collect();
    o.metric("doin_events_total", "counter", "Live events emitted, by type.", &events);
    o.one(
        "doin_event_subscribers",
        "gauge",
        "Open event-stream subscriptions.",
        s.events.subscribers() as f64,
    );
    let g = &s.guard;
    let classes: Vec<(String, f64)> = (1..6)
        .map(|c| (format!("{{class=\"{c}xx\"}}"), g.responses[c].load(Ordering::Relaxed) as f64))
        .collect();
    o.metric("doin_http_responses_total", "counter", "HTTP responses by status class.", &classes);
    o.one(
        "doin_http_rate_limited_total",
        "counter",
        "Requests refused with 429.",
        g.rate_limited.load(Ordering::Relaxed) as f64,
    );
    o.one(
        "doin_http_timeouts_total",
        "counter",
        "Handlers cut by the timeout.",
        g.timeouts.load(Ordering::Relaxed) as f64,
    );
    o.one(
        "doin_http_handler_seconds_total",
        "counter",
        "Time spent answering requests.",
        g.handler_us.load(Ordering::Relaxed) as f64 / 1e6,
    );
    let c = &g.connections;
    let load = |a: &AtomicUsize| a.load(Ordering::Relaxed) as f64;
    let count = |a: &AtomicU64| a.load(Ordering::Relaxed) as f64;
    for (name, kind, help, v) in [
        ("doin_http_connections_open", "gauge", "HTTP connections open.", load(&c.open)),
        ("doin_http_connections_cap", "gauge", "HTTP connections allowed at once.", load(&c.cap)),
        ("doin_http_connections_accepted_total", "counter", "HTTP connections accepted.", count(&c.accepted)),
        (
            "doin_http_connections_evicted_total",
            "counter",
            "Idle HTTP connections closed to make room at the cap.",
            count(&c.evicted),
        ),
        (
            "doin_http_connections_refused_total",
            "counter",
            "HTTP connections refused at the cap (every open one busy).",
            count(&c.refused),
        ),
    ] {
        o.one(name, kind, help, v);
    }
    o.one("doin_process_cpu_seconds_total", "counter", "CPU time of the node process.", l.usage.0);
    o.one("doin_evaluation_cpu_seconds_total", "counter", "CPU time spent on quorum evaluations.", l.usage.1);
    o.one("doin_process_resident_memory_mb", "gauge", "Resident memory of the node process.", l.usage.2);
    o.one("doin_uptime_seconds", "gauge", "Seconds since the node started.", s.uptime_s());
    let mut text = o.0;
    text.push_str(&l.net_metrics);
    if !text.ends_with('\n') {
        text.push('\n');
    }
    text
}

/// The handler.
pub(crate) async fn render(State(s): State<ApiState>) -> Response {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], text(&s)).into_response()
}

/// Counts by label value as `{label="value"}` series.
fn labelled(label: &str, counts: std::collections::BTreeMap<&str, f64>) -> Vec<(String, f64)> {
    counts.into_iter().map(|(k, v)| (format!("{{{label}=\"{k}\"}}"), v)).collect()
}
