//! Starting a node: store, genesis, network, HTTP API, tracking and optimizer threads wired
//! to one event loop, and the loop itself.

#[allow(clippy::wildcard_imports)]
use super::*;

pub(super) async fn run_async(config: NodeConfig, limits: RunLimits) -> Result<(), NodeError> {
    if limits.adversary.is_some() && !ADVERSARIES {
        return Err(other("this build has no adversaries (the `adversary` feature is for test builds)"));
    }
    if config.genesis.is_none() && config.domains.is_empty() && config.federated_jobs.is_empty() {
        return Err(other(
            "nothing to do: without a `genesis` file this node starts its own development chain, and \
             with no `domains` or `federated_jobs` it would neither optimize, evaluate nor supervise \
             (add a domain or a job, or a genesis to join)",
        ));
    }
    std::fs::create_dir_all(&config.data_dir)
        .map_err(|e| other(format!("data_dir {}: {e}", config.data_dir.display())))?;
    let (key, created) = crate::identity::load_or_create(&config.identity_path())?;
    let me = key.address();
    if created {
        tracing::info!(address = %me, path = %config.identity_path().display(), "created node key");
    }

    // Domains this node works on (and those whose quorums it left, unable to evaluate them).
    // (A new chain, `--reset-chain`, starts with the node in every quorum its stake names.)
    let left = if config.reset_chain {
        Default::default()
    } else {
        crate::participation::load_left(&config.data_dir)
    };
    let mut rts = BTreeMap::new();
    for d in &config.domains {
        let domain = domains::build(d).map_err(|e| other(format!("domain {}: {e}", d.domain_id)))?;
        // `param_bounds` against the domain's parameters, before anything acts (`--reset-chain`).
        domains::search_domain(domain.clone(), d)
            .map_err(|e| other(format!("domain {}: {e}", d.domain_id)))?;
        if !d.synthetic_data_validation {
            tracing::warn!(
                domain = %d.domain_id,
                "TRUSTED MODE: synthetic_data_validation is false; claims are accepted unverified and earn nothing"
            );
            println!("trusted {}: claims are accepted without verification and earn nothing", d.domain_id);
        }
        rts.insert(
            d.domain_id.clone(),
            DomainRt {
                domain,
                config: d.clone(),
                control: None,
                paused: Arc::default(),
                target_reached: false,
                waiting_for_peers: None,
                peers_needed: 1,
                evaluations: Arc::default(),
                hired: d.optimize_on_hire.then(Arc::default),
                running: Arc::default(),
                last_found: None,
                health: Arc::default(),
                participation: Participation::new(left.contains(&d.domain_id)),
                probe: Arc::default(),
                stake_tx: None,
                champion_values: None,
                trials_in: None,
                sharing: Arc::default(),
                trial_seq: 0,
                claims_seen_at: std::collections::VecDeque::new(),
                experiment: (
                    {
                        let mut id = [0u8; 16];
                        rand::RngCore::fill_bytes(&mut rand::rng(), &mut id);
                        hex::encode(id)
                    },
                    Hash::of(serde_json::to_string(d).unwrap_or_default().as_bytes()),
                ),
            },
        );
    }

    // The development genesis (no `genesis` file) is written to the data directory on the first
    // start and read back on every later one: rebuilt, it would carry a new timestamp and name
    // another chain than the one stored.
    let dev_genesis = config.data_dir.join("genesis.json");
    let read_spec = |path: &std::path::Path| -> Result<GenesisSpec, NodeError> {
        let text = std::fs::read(path).map_err(|e| other(format!("genesis {}: {e}", path.display())))?;
        serde_json::from_slice(&text).map_err(|e| other(format!("genesis {}: {e}", path.display())))
    };
    let spec: GenesisSpec = match &config.genesis {
        Some(path) => read_spec(path)?,
        None if dev_genesis.exists() && !config.reset_chain => read_spec(&dev_genesis)?,
        None => genesis::single_node(
            &config,
            &me,
            &rts.values().map(|r| (r.domain.clone(), r.config.clone())).collect::<Vec<_>>(),
        )
        .map_err(other)?,
    };
    // Destructive steps only once everything above (config, domains, genesis) checked out.
    if config.reset_chain {
        let _ = std::fs::remove_file(config.data_dir.join("chain.redb"));
        crate::participation::forget_left(&config.data_dir);
    }
    if config.genesis.is_none() {
        let text = serde_json::to_vec_pretty(&spec).map_err(other)?;
        std::fs::write(&dev_genesis, text)
            .map_err(|e| other(format!("writing the development genesis {}: {e}", dev_genesis.display())))?;
    }
    let options =
        StoreOptions { archive: config.archive, keep_bodies: config.keep_bodies, ..StoreOptions::default() };
    let bootstrap: Vec<Multiaddr> = config
        .bootstrap_peers
        .iter()
        .map(|p| parse_peer(p).map_err(|e| other(format!("bootstrap_peers: {p:?}: {e}"))))
        .collect::<Result<_, _>>()?;
    let store_path = config.data_dir.join("chain.redb");
    // Late joining: no chain here yet and a checkpoint trusted: the state comes from the peers'
    // snapshot (checked against the checkpoint), the rest by syncing as usual.
    if let Some(text) = &config.checkpoint {
        let trusted: crate::join::Trusted = text.parse().map_err(|e| other(format!("checkpoint: {e}")))?;
        if store_path.exists() {
            tracing::info!("checkpoint: this data directory has a chain already; it goes on from there");
        } else {
            println!("joining from a snapshot, trusting block {} at height {}", trusted.hash, trusted.height);
            let joined = crate::join::Join {
                key: &key,
                host: &config.host,
                bootstrap: &bootstrap,
                spec: &spec,
                trusted,
                data_dir: &config.data_dir,
                store_path: &store_path,
                options,
                peer_wait: crate::join::PEER_WAIT,
            }
            .run()
            .await
            .map_err(|e| other(format!("joining from a snapshot: {e}")))?;
            println!(
                "joined from snapshot height {} records {} from {} peers in {:.2} s",
                joined.import.height, joined.import.records, joined.peers, joined.seconds
            );
        }
    }
    let store = ChainStore::open(&store_path, &spec, options).map_err(other)?;
    let store = SharedStore::new(store);
    println!("address {me}");
    println!("genesis {}", store.lock().genesis_hash());

    let listen: Multiaddr =
        format!("/ip4/{}/tcp/{}", config.host, config.p2p_port()).parse().map_err(other)?;
    let mut listen = vec![listen];
    if config.quic {
        listen
            .push(format!("/ip4/{}/udp/{}/quic-v1", config.host, config.p2p_port()).parse().map_err(other)?);
    }
    let multiaddrs = |key: &str, texts: &[String]| -> Result<Vec<Multiaddr>, NodeError> {
        texts
            .iter()
            .map(|t| t.parse::<Multiaddr>().map_err(|e| other(format!("{key}: {t:?}: {e}"))))
            .collect()
    };
    listen.extend(multiaddrs("listen_addresses", &config.listen_addresses)?);
    let net_config = doin_net::Config {
        listen,
        relay_server: config.relay_server,
        external: multiaddrs("external_addresses", &config.external_addresses)?,
        bootstrap: bootstrap.clone(),
        domains: rts.keys().cloned().collect(),
        // Multicast stays off on loopback (`::1` too), whatever the config says.
        enable_mdns: config.discovery_enabled
            && !config.host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback()),
        ip_colocation_penalty: false,
        gossip_heartbeat: Duration::from_millis(200),
        request_timeout: Duration::from_secs(3),
        ..doin_net::Config::default()
    };
    // Optimae gossip is checked against the tip's state before it is forwarded.
    let gossip = Arc::new(GossipCheck::new());
    gossip.set_state(store.lock().tip().clone());
    let net_config_mdns = net_config.mdns_allowed();
    // Peers fetch the chain and the artifacts this node holds (federated models).
    let artifacts = Arc::new(crate::artifacts::Artifacts::new());
    let snapshots = Arc::new(crate::snapshots::Snapshots::new(
        &config.data_dir,
        (!config.archive).then_some(config.keep_bodies),
    ));
    let provider = crate::artifacts::Provider {
        store: store.clone(),
        artifacts: artifacts.clone(),
        snapshots: snapshots.clone(),
    };
    let mut network =
        doin_net::start(&key, net_config, Arc::new(provider), gossip.clone()).await.map_err(other)?;
    // Trained models (claims', measured, served), kept under `models/` and announced.
    let models = Arc::new(
        crate::models::Models::open(&config.data_dir, artifacts.clone(), network.handle.clone())
            .map_err(|e| other(format!("models directory: {e}")))?,
    );
    {
        let models = models.clone();
        tokio::spawn(async move { models.announce().await });
    }
    // The marketplace: this node answers capability challenges and admits providers' offers.
    let market = crate::market::Market::new(
        key.clone(),
        store.clone(),
        config.market_threads,
        config.market_check_mem_mb,
    );
    #[cfg(feature = "adversary")]
    let market = if limits.adversary == Some(Adversary::FakeCapability) { market.faking() } else { market };
    tokio::spawn(market.clone().run_checks());

    // The HTTP API on the node's port.
    let discovery =
        std::iter::once("kademlia".to_owned()).chain(net_config_mdns.then(|| "mdns".to_owned())).collect();
    let live = Arc::new(std::sync::RwLock::new(doin_api::LiveStatus { discovery, ..Default::default() }));
    let (submit_tx, mut submit_rx) = mpsc::channel::<doin_api::Submission>(64);
    let tasks = Arc::new(Mutex::new(doin_api::tasks::TaskQueue::new(1024, Duration::from_secs(120))));
    let (completions_tx, mut completions_rx) =
        mpsc::channel::<(doin_api::tasks::Task, doin_api::tasks::Completion)>(64);
    let events = Arc::new(doin_api::events::EventBus::new());
    // The federated supervisor: the config's jobs and those created over HTTP (`POST /api/job`).
    let jobs = {
        let jobs = crate::federated::Jobs::new(
            &config.federated_jobs,
            store.clone(),
            events.clone(),
            &config.data_dir,
            artifacts.clone(),
        )
        .map_err(|e| other(format!("federated_jobs: {e}")))?;
        for (job, model) in jobs.behind() {
            println!("fl behind {job}: the chain's model {model} is not checkpointed here");
        }
        Some(Arc::new(jobs))
    };
    let serving = {
        let mut served = BTreeMap::new();
        for (id, rt) in &rts {
            let price = crate::config::price_units(rt.config.inference_price);
            if !rt.domain.has_model() {
                if price > doin_primitives::Amount::ZERO {
                    return Err(other(format!(
                        "domain {id}: inference_price is set, but {id} has no model to serve (built-in \
                         domains with a model: mlp_digits, co2_forecast; a domain plugin has one \
                         when it implements train, measure and infer)"
                    )));
                }
                continue;
            }
            if rt.config.serve_inference {
                served.insert(id.clone(), crate::serving::Served { domain: rt.domain.clone(), price });
            }
        }
        // Always on: federated jobs (the config's, and those created over HTTP later) are
        // served from their verified models.
        let serving = crate::serving::Serving::new(
            store.clone(),
            models.clone(),
            served,
            jobs.clone(),
            key.clone(),
            &config.data_dir,
        )
        .map_err(|e| other(format!("channels.log: {e}")))?;
        #[cfg(feature = "adversary")]
        let serving =
            if limits.adversary == Some(Adversary::WrongAnswers) { serving.lying() } else { serving };
        Some(serving)
    };
    // Domains optimized on hire: their loops' allowances, bought through the market's hire
    // endpoint and paid through the serving's channel book.
    if let Some(serving) = &serving {
        let on_hire: BTreeMap<String, crate::market::hire::OnHire> = rts
            .iter()
            .filter_map(|(id, rt)| {
                let allowance = rt.hired.clone()?;
                let price = crate::config::price_units(rt.config.hire_price);
                let paused = rt.paused.clone();
                Some((id.clone(), crate::market::hire::OnHire { allowance, price, paused }))
            })
            .collect();
        if !on_hire.is_empty() {
            let hires = Arc::new(crate::market::hire::Hires::new(on_hire, serving.clone(), &config.data_dir));
            hires.keep_saved();
            market.set_hires(hires);
        }
    }

    let http_addr: std::net::SocketAddr =
        format!("{}:{}", config.host, config.port).parse().map_err(other)?;
    let api = doin_api::ApiState {
        store: store.0.clone(),
        live: live.clone(),
        submit: submit_tx,
        address: me,
        peer_id: network.handle.peer_id().to_string(),
        port: config.port,
        tasks: tasks.clone(),
        completions: completions_tx,
        api_key: config.api_key.clone(),
        events: events.clone(),
        guard: Arc::new(doin_api::guard::Guard::new(doin_api::guard::Limits {
            rate_per_s: config.http_rate_limit,
            burst: config.http_burst,
            cors_origins: config.cors_origins.clone(),
            users: config
                .api_users
                .iter()
                .map(|u| doin_api::guard::User {
                    name: u.user.clone(),
                    key: u.key.clone(),
                    rate_per_s: u.rate_per_s,
                    burst: u.burst,
                    create_jobs: u.create_jobs,
                })
                .collect(),
        })),
        started: Instant::now(),
        stats: config
            .olap_db_path
            .clone()
            .map(|p| doin_api::stats::Stats::new(doin_tracking::olap::StatsReader::new(p)))
            .transpose()
            .map_err(|e| other(format!("olap_db_path: no temporary directory for exports: {e}")))?,
        chain_cache: Arc::default(),
        jobs: jobs.clone().map(|j| j as Arc<dyn doin_api::jobs::JobApi>),
        inference: serving.clone().map(|s| Arc::new(s) as Arc<dyn doin_api::inference::InferenceApi>),
        market: Some(Arc::new(market) as Arc<dyn doin_api::market::MarketApi>),
    };
    let _http = doin_api::serve(http_addr, api)
        .await
        .map_err(|e| other(format!("port {}: cannot serve HTTP on {http_addr}: {e}", config.port)))?;
    println!("http http://{http_addr}");

    // Experiment tracking (CSV and the SQLite cube) on its own thread; a database that cannot be
    // opened is reported and the node goes on without it.
    let tracker = if config.experiment_stats_file.is_some() || config.olap_db_path.is_some() {
        let (t, problems) =
            doin_tracking::Tracker::start(config.experiment_stats_file.clone(), config.olap_db_path.clone());
        for p in problems {
            tracing::error!(error = %p, "experiment tracking unavailable; the node continues without it");
            println!("tracking error: {p}");
        }
        Some(Arc::new(t))
    } else {
        None
    };
    let (rounds_tx, mut rounds_rx) = mpsc::channel::<optimizer::RoundInfo>(256);
    let (found_tx, mut found_rx) = mpsc::channel::<Found>(16);
    let (shared_tx, mut shared_rx) = mpsc::channel::<crate::trials::share::Outgoing>(16);
    let (measured_tx, mut measured_rx) = mpsc::channel::<Measured>(64);
    let stop = Arc::new(AtomicBool::new(false));
    let params = store.lock().tip().params().clone();
    // (A lock taken inside the struct literal below would be held to its end.)
    let genesis_hash = store.lock().genesis_hash();
    let voter = crate::finality::Voter::load(&config.data_dir.join("finality-votes.json"), genesis_hash)
        .map_err(NodeError::Other)?;
    let following = Following::new(rts.keys().map(|d| Engine::domain_id(d)));
    let mut engine = Engine {
        key: key.clone(),
        me,
        data_dir: config.data_dir.clone(),
        snapshots,
        anchored: (0, format!("http://{}:{}/anchors", config.host, config.port)),
        store: store.clone(),
        net: network.handle.clone(),
        domains: rts,
        verification: Verification::new(me, Duration::from_millis(params.quorum_timeout_ms), MAX_PENDING),
        quorum_timeout: Duration::from_millis(params.quorum_timeout_ms),
        claims: OwnClaims::new(MAX_PENDING),
        claim_deadline: Duration::from_millis(
            2 * params.quorum_timeout_ms.saturating_add(params.max_block_interval_ms),
        ),
        production: Production::new(MAX_PENDING),
        mempool: Mempool::new(10_000, 64),
        eval_slots: Arc::new(Semaphore::new(config.workers)),
        measured_tx,
        seal_wait: Duration::from_millis(params.seal_slot_ms.saturating_mul(4)) + Duration::from_secs(1),
        following,
        recheck_quorums: false,
        syncing: Arc::default(),
        bootstrap,
        #[cfg(feature = "adversary")]
        adversary: limits.adversary,
        #[cfg(feature = "adversary")]
        copied: HashSet::new(),
        eval_nanos: Arc::default(),
        live: live.clone(),
        tasks: tasks.clone(),
        events,
        tracker: tracker.clone(),
        start_balance: store.lock().tip().account(&me).balance.0,
        tracked: BTreeMap::new(),
        gossip,
        cert_latency_ms: std::collections::VecDeque::new(),
        warned: HashMap::new(),
        poked: false,
        voter,
        polls: 0,
        jobs,
        fl_fetches: Default::default(),
        models,
        serving,
        arbiter: Default::default(),
    };
    if let Some(t) = &tracker {
        let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_owned())
            .unwrap_or_default();
        for (id, rt) in &engine.domains {
            if !rt.config.optimize {
                continue;
            }
            let c = &rt.config;
            t.experiment(doin_tracking::Experiment {
                experiment_id: rt.experiment.0.clone(),
                domain_id: id.clone(),
                node_id: me.to_string(),
                hostname: hostname.clone(),
                optimizer_plugin: c
                    .optimization_plugin
                    .clone()
                    .unwrap_or_else(|| crate::optimizer::DEFAULT_OPTIMIZER.into()),
                performance_metric: if rt.domain.higher_is_better() { "performance" } else { "loss" }.into(),
                higher_is_better: rt.domain.higher_is_better(),
                optimization_config: serde_json::to_string(&c.optimization_config).unwrap_or_default(),
                param_bounds: serde_json::to_string(&c.param_bounds).unwrap_or_default(),
                target_performance: c.target_performance,
                started_ms: now_ms(),
                doin_version: env!("CARGO_PKG_VERSION").into(),
                config_hash: rt.experiment.1.to_string(),
            });
        }
    }
    // The network's metrics, copied for `/metrics` off the event loop: asking the network task
    // from the loop could wait on a task that is itself waiting for the loop to take its events.
    {
        let (net, live) = (network.handle.clone(), live.clone());
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(2)).await;
                let Ok(text) = net.metrics().await else { break };
                // Connected peers' gossip scores (a flooding peer's falls below the graylist).
                let mut scores = BTreeMap::new();
                for peer in net.peers().await.unwrap_or_default().into_iter().take(256) {
                    if let Ok(Some(score)) = net.score(peer).await {
                        scores.insert(peer.to_string(), score);
                    }
                }
                let banned: Vec<String> = net
                    .banned()
                    .await
                    .unwrap_or_default()
                    .iter()
                    .take(256)
                    .map(ToString::to_string)
                    .collect();
                if let Ok(mut l) = live.write() {
                    l.net_metrics = text;
                    l.peer_scores = scores;
                    l.banned_peers = banned;
                }
            }
        });
    }

    // A domain configured not to evaluate, while the chain has this node in its quorums: they
    // will wait for votes that never come (the stake's domains serve both roles, so the node
    // cannot leave only the evaluator's part by itself).
    {
        let s = store.lock();
        let tip = s.tip();
        for (id, rt) in &engine.domains {
            let staked = tip.stake(&me).is_some_and(|st| st.evaluates(&Engine::domain_id(id)));
            // (A trusted domain draws no quorums.)
            if staked && !rt.config.evaluate && rt.config.synthetic_data_validation {
                tracing::warn!(
                    domain = %id,
                    "staked as an evaluator of the domain but `evaluate` is false: quorums that draw this \
                     node wait out quorum_timeout; stake without the domain, or evaluate"
                );
                println!("warning {id}: staked as an evaluator but evaluate is false");
            }
        }
    }

    // Optimizer loops, one thread per domain this node optimizes.
    let threads =
        super::optimizers::start(&mut engine, &config, &store, found_tx, shared_tx, &rounds_tx, &stop)?;

    let started = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    let mut poll = tokio::time::interval(Duration::from_millis(1000));
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    let (eof_tx, mut eof_rx) = mpsc::channel::<()>(1);
    if limits.stop_on_stdin_eof {
        tokio::spawn(async move {
            use tokio::io::AsyncReadExt;
            let mut stdin = tokio::io::stdin();
            let mut buf = [0u8; 256];
            while matches!(stdin.read(&mut buf).await, Ok(n) if n > 0) {}
            let _ = eof_tx.send(()).await;
        });
    }
    engine.on_tip();
    loop {
        if limits.duration.is_some_and(|d| started.elapsed() >= d) {
            break;
        }
        tokio::select! {
            _ = &mut ctrl_c => {
                println!("stopping");
                break;
            }
            Some(()) = eof_rx.recv() => {
                println!("stopping");
                break;
            }
            ev = network.events.recv() => match ev {
                Some(ev) => engine.on_network(ev).await,
                None => return Err(other("network stopped")),
            },
            Some(f) = found_rx.recv() => engine.on_found(f, None).await,
            Some(t) = shared_rx.recv() => engine.on_own_trials(t).await,
            Some(r) = rounds_rx.recv() => engine.on_round(r),
            Some(m) = measured_rx.recv() => engine.on_measured(m).await,
            Some(sub) = submit_rx.recv() => engine.on_submission(sub).await,
            Some((task, done)) = completions_rx.recv() => engine.on_completion(task, done).await,
            _ = tick.tick() => {
                engine.on_tick().await;
                engine.on_tip();
            }
            _ = poll.tick() => engine.poll_peers(),
        }
        if std::mem::take(&mut engine.poked) {
            engine.react().await;
        }
    }
    stop.store(true, Ordering::Relaxed);
    store.close();
    let eval_s = engine.eval_nanos.load(Ordering::Relaxed) as f64 / 1e9;
    let (cpu_s, rss_mb) = process_usage();
    let tracking_s = engine.tracker.as_ref().map_or(0.0, |t| {
        t.flush();
        t.stats.cpu_nanos.load(Ordering::Relaxed) as f64 / 1e9
    });
    println!("usage cpu_s {cpu_s:.3} eval_s {eval_s:.3} rss_mb {rss_mb:.1} tracking_s {tracking_s:.3}");
    let refused = engine.gossip.refused();
    let mut latencies: Vec<u64> = engine.cert_latency_ms.iter().copied().collect();
    latencies.sort_unstable();
    println!(
        "latency claims {} claim_to_cert_p50_ms {} gossip_rejected {} gossip_ignored {}",
        latencies.len(),
        latencies.get(latencies.len().saturating_sub(1) / 2).copied().unwrap_or(0),
        refused.rejected,
        refused.ignored
    );
    network.handle.shutdown().await;
    // The final state is printed before the optimizer threads are joined: one may be in the
    // middle of a candidate's training (seconds on a busy machine), and the chain no longer
    // changes once the event loop and the network stopped.
    {
        let s = store.lock();
        let state = s.tip();
        println!(
            "stopped height {} tip {} root {} balance {} reputation {} stake {}",
            state.height(),
            state.tip().hash,
            state.root(),
            state.account(&me).balance.0,
            config
                .domains
                .iter()
                .map(|d| state.reputation(&me, &Engine::domain_id(&d.domain_id)))
                .sum::<u64>(),
            state.stake(&me).map_or(0, |s| s.amount.0)
        );
    }
    // Optimizer threads finish their candidate and stop; one stuck in a plugin call (a hung
    // plugin may have minutes left of its time limit) is freed by killing every plugin's
    // process group after 3 s: the node stops within seconds whatever its plugins do.
    let deadline = Instant::now() + Duration::from_secs(3);
    while threads.iter().any(|t| !t.is_finished()) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    if threads.iter().any(|t| !t.is_finished()) {
        tracing::warn!("plugins still busy at shutdown; killing their process groups");
    }
    doin_plugin::host::kill_all();
    for t in threads {
        let _ = t.join();
    }
    Ok(())
}
