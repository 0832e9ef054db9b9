//! `doin fl`: federated training from the contributor's side, through a supervising node's
//! QuackMesh-shaped API.
//!
//! - `split` deals the built-in digits training rows to N contributors with Dirichlet label
//!   skew (the Flower benchmark's split), one CSV per contributor;
//! - `join` registers the key as a contributor of a job (a stake with the contributor role and
//!   the machine's capacity: the Co-Train seed's registration) and contributes to rounds: fetch
//!   the global model, one local epoch of SGD on its own CSV — or the contributor's own code,
//!   a `doin_plugin.Client` plugin (`--plugin`, Flower's `NumPyClient` shape) —, sign the
//!   update, send it;
//! - `status` prints the job's cluster view (round, contributors, reputation, payouts).

use std::{path::PathBuf, time::Duration};

use anyhow::{Context, bail};
use clap::Subcommand;
use doin_federated::{Mlp, split, supervisor};
use doin_ml::data::Tabular;
use doin_plugin::{ClientError, PluginClient, PluginSpec};
use doin_primitives::{
    BoundedVec, DomainId, Hash, HeartbeatBody, Keypair, Roles, Signed, TxKind, UpdateBody, tx::Capabilities,
};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde_json::{Value, json};

use crate::wallet::{self, NodeUrl};

#[derive(Debug, Subcommand)]
pub(crate) enum Fl {
    /// Writes the digits training rows dealt to N contributors (label-skewed), one CSV each
    /// (64 features, then the label), leaving out the job's test rows.
    Split {
        /// Contributors.
        #[arg(long, default_value_t = 10)]
        clients: usize,
        /// Dirichlet concentration (smaller: more skew).
        #[arg(long, default_value_t = 0.5)]
        alpha: f64,
        /// The job's `seed` (its test rows are left out) and the split's.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Output directory.
        #[arg(long)]
        out: PathBuf,
    },
    /// Registers as a contributor of a job and trains its rounds on local data.
    Join {
        #[command(flatten)]
        node: NodeUrl,
        /// The job (federated domain) id.
        #[arg(long)]
        job: String,
        /// Another node supervising the job (repeatable): tried in turn when the current one
        /// does not answer (a standby supervisor takes over a stalled job).
        #[arg(long, value_name = "HOST:PORT")]
        fallback: Vec<String>,
        /// The contributor's key file (created if missing).
        #[arg(long)]
        key: PathBuf,
        /// The local training data for the built-in model: CSV rows of 64 features and a label
        /// 0-9.
        #[arg(long, required_unless_present = "plugin", conflicts_with = "plugin")]
        data: Option<PathBuf>,
        /// Train with a contributor plugin instead (`python3 my_client.py ARGS…`: a
        /// `doin_plugin.Client` with `get_parameters / fit / evaluate`, which reads its own data).
        #[arg(long)]
        plugin: Option<String>,
        /// Longest a plugin's `fit` may take, seconds (killed and restarted beyond).
        #[arg(long, default_value_t = 300)]
        fit_timeout: u64,
        /// Rounds to contribute to, then exit.
        #[arg(long, default_value_t = 10)]
        rounds: u64,
        /// Stake bonded at registration, DOIN (the account must hold it).
        #[arg(long, default_value = "1")]
        stake: String,
        /// CPU cores declared at registration.
        #[arg(long, default_value_t = 1)]
        cpu_cores: u32,
        /// Bandwidth declared at registration, Mbit/s.
        #[arg(long, default_value_t = 100)]
        bandwidth_mbps: u32,
        /// Give up after this many seconds.
        #[arg(long, default_value_t = 600)]
        timeout: u64,
    },
    /// The job's round, contributors, reputation, quarantines and payouts.
    Status {
        #[command(flatten)]
        node: NodeUrl,
        /// The job id.
        #[arg(long)]
        job: String,
    },
}

/// An error waiting cannot cure (the job is not there, or does not fit this data).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Fatal(String);

/// This contributor's own training failed (a plugin's `fit` cut at `--fit-timeout`, or an
/// error it answered): the node is not at fault, so it does not count toward a failover.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct LocalFailure(String);

/// Rows of a contributor CSV.
fn read_csv(path: &std::path::Path) -> anyhow::Result<Tabular> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let (mut x, mut y) = (Vec::new(), Vec::new());
    for (n, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let cells: Vec<&str> = line.split(',').map(str::trim).collect();
        if cells.len() != 65 {
            bail!(
                "{}:{}: {} columns, 65 expected (64 features, then the label)",
                path.display(),
                n + 1,
                cells.len()
            );
        }
        for c in &cells[..64] {
            let v: f32 = c.parse().with_context(|| format!("{}:{}: feature {c:?}", path.display(), n + 1))?;
            if !v.is_finite() {
                bail!("{}:{}: feature {c:?} is not finite", path.display(), n + 1);
            }
            x.push(v);
        }
        let label: i64 = cells[64].parse().with_context(|| format!("{}:{}: label", path.display(), n + 1))?;
        if !(0..10).contains(&label) {
            bail!("{}:{}: label {label} is not in 0..=9", path.display(), n + 1);
        }
        y.push(label);
    }
    if y.is_empty() {
        bail!("{}: no rows", path.display());
    }
    Ok(Tabular { x, y, features: 64, classes: 10 })
}

/// Writes `clients` label-skewed shards of the digits training rows (the job's test rows, by
/// `seed`, left out) as `out/client-I.csv`; returns their row counts.
pub(crate) fn split_to(
    clients: usize,
    alpha: f64,
    seed: u64,
    out: &std::path::Path,
) -> anyhow::Result<Vec<usize>> {
    if !((1..=1000).contains(&clients) && alpha > 0.0 && alpha.is_finite()) {
        bail!("--clients must be 1..=1000 and --alpha > 0");
    }
    let data = doin_ml::data::digits().map_err(anyhow::Error::msg)?;
    // The job's test rows (the node's split by the job's seed) are left out.
    let (_, train) = split::holdout(data.rows(), seed);
    let parts = split::dirichlet(&train, &data.y, clients, alpha, 10, seed ^ 0x5eed);
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    for (i, part) in parts.iter().enumerate() {
        let mut text = String::new();
        for r in part {
            let row = &data.x[r * data.features..(r + 1) * data.features];
            let cells: Vec<String> = row.iter().map(|v| v.to_string()).collect();
            text.push_str(&format!("{},{}\n", cells.join(","), data.y[*r]));
        }
        std::fs::write(out.join(format!("client-{i}.csv")), text)?;
    }
    Ok(parts.iter().map(Vec::len).collect())
}

/// `GET path`, waiting out the node's rate limit (HTTP 429) instead of failing.
fn get_patiently(node: &str, path: &str) -> anyhow::Result<Value> {
    for _ in 0..30 {
        let (code, v) = wallet::http(node, "GET", path, None)?;
        match code {
            200 => return Ok(v),
            429 => std::thread::sleep(Duration::from_secs(1)),
            _ => bail!("{path}: HTTP {code}: {v}"),
        }
    }
    bail!("{path}: still rate-limited after 30 s")
}

fn hash_of(v: &Value) -> anyhow::Result<Hash> {
    let bytes = hex::decode(v.as_str().context("a hash")?)?;
    Ok(Hash(bytes.try_into().map_err(|_| anyhow::anyhow!("a hash of 32 bytes"))?))
}

/// Stakes `key` as a contributor of `job` unless it already is; waits until the chain has it.
fn register(
    node: &str,
    key: &Keypair,
    job: &DomainId,
    stake: &str,
    capabilities: Capabilities,
) -> anyhow::Result<()> {
    let me = key.address();
    // `/accounts/{address}`: `roles` as bit flags, `domains` of the stake.
    let staked = |v: &Value| {
        v["roles"].as_u64().is_some_and(|r| r & u64::from(Roles::CONTRIBUTOR.0) != 0)
            && v["domains"].as_array().is_some_and(|d| d.iter().any(|x| x == job.as_str()))
    };
    if staked(&wallet::get(node, &format!("/accounts/{me}"))?) {
        return Ok(());
    }
    let account = wallet::get(node, &format!("/accounts/{me}"))?;
    let mut domains: Vec<DomainId> = account["domains"]
        .as_array()
        .map(|d| d.iter().filter_map(|x| x.as_str()).filter_map(|x| DomainId::new(x).ok()).collect())
        .unwrap_or_default();
    domains.push(job.clone());
    let kind = TxKind::Stake {
        amount: wallet::parse_amount(stake)?,
        // Roles the account already serves stay.
        roles: Roles(account["roles"].as_u64().unwrap_or(0) as u8).with(Roles::CONTRIBUTOR),
        domains: BoundedVec::try_from_vec(domains).map_err(|e| anyhow::anyhow!("domains: {e}"))?,
        preferences: capabilities,
    };
    wallet::submit(node, key, kind)?;
    let until = std::time::Instant::now() + Duration::from_secs(120);
    while std::time::Instant::now() < until {
        if staked(&wallet::get(node, &format!("/accounts/{me}"))?) {
            println!("{}", json!({ "registered": me.to_string(), "job": job.as_str() }));
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    bail!("the registration (stake) of {me} was not included within 120 s")
}

#[allow(clippy::too_many_arguments)]
/// What trains a contributor's rounds.
enum Trainer {
    /// The built-in model, one SGD epoch over these rows.
    Builtin(Tabular),
    /// The contributor's own code.
    Plugin(Box<PluginClient>),
}

impl Trainer {
    /// Trains from `global` (a network of `sizes`); the trained weights and the examples used.
    fn fit(
        &mut self,
        global: &[f32],
        sizes: &[usize],
        config: Value,
        seed: u64,
    ) -> anyhow::Result<(Vec<f32>, u32)> {
        match self {
            Trainer::Builtin(data) => {
                let mlp = Mlp::new(sizes).map_err(anyhow::Error::msg)?;
                if mlp.params() != global.len() || sizes.first() != Some(&data.features) {
                    return Err(Fatal(format!(
                        "the job's model {sizes:?} does not fit this data ({} features)",
                        data.features
                    ))
                    .into());
                }
                let mut w = global.to_vec();
                let lr = config["lr"].as_f64().unwrap_or(0.2) as f32;
                let batch = config["batch"].as_u64().unwrap_or(16) as usize;
                let all: Vec<usize> = (0..data.rows()).collect();
                mlp.sgd_epoch(&mut w, data, &all, lr, batch, &mut ChaCha8Rng::seed_from_u64(seed));
                Ok((w, data.rows() as u32))
            }
            Trainer::Plugin(client) => {
                // The global model on the contributor's own data first (Flower's evaluate).
                let before = client.evaluate(global, sizes, config.clone()).map_err(plugin_error)?;
                let fit = client.fit(global, sizes, config.clone()).map_err(plugin_error)?;
                println!(
                    "{}",
                    json!({ "round": config["round"], "local_loss": before.loss,
                            "local_metrics": before.metrics, "fit_metrics": fit.metrics })
                );
                Ok((fit.weights, u32::try_from(fit.examples).unwrap_or(u32::MAX)))
            }
        }
    }
}

/// A plugin that answers with something unusable will not mend by itself: fatal. A crash or an
/// error of its own is retried next round (the host restarts it).
fn plugin_error(e: ClientError) -> anyhow::Error {
    match e {
        ClientError::Reply { .. } => Fatal(e.to_string()).into(),
        ClientError::Plugin(e) => anyhow::Error::new(e),
    }
}

#[allow(clippy::too_many_arguments)]
fn join(
    nodes: &[String],
    job: &str,
    key: &Keypair,
    trainer: &mut Trainer,
    rounds: u64,
    stake: &str,
    capabilities: Capabilities,
    timeout: Duration,
) -> anyhow::Result<()> {
    let domain = DomainId::new(job).map_err(|e| anyhow::anyhow!("--job {job:?}: {e}"))?;
    // The supervisor in use: the first that answers; the next when it stops answering.
    let mut at = 0usize;
    // A node still starting (as in a devnet): wait for an API, up to a minute.
    let up = std::time::Instant::now() + Duration::from_secs(60);
    let started = std::time::Instant::now();
    while let Err(e) = wallet::http(&nodes[at], "GET", "/api/jobs", None) {
        if std::time::Instant::now() > up {
            return Err(e.context("no node's API answered within 60 s"));
        }
        // The first node (the job's supervisor) is given 20 s to start before the others.
        if started.elapsed() > Duration::from_secs(20) {
            at = (at + 1) % nodes.len();
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let node = nodes[at].clone();
    let node = node.as_str();
    if let Trainer::Plugin(client) = trainer {
        // A plugin whose model does not fit the job is refused before the stake is bonded.
        let m = get_patiently(node, &format!("/api/job/{job}/model"))?;
        let sizes: Vec<usize> = serde_json::from_value(m["sizes"].clone()).context("sizes")?;
        client.check_shapes(&sizes).map_err(plugin_error)?;
    }
    register(node, key, &domain, stake, capabilities)?;
    let deadline = std::time::Instant::now() + timeout;
    let mut done = 0u64;
    // The last round contributed to, and when the supervisor opened it (a round reopened —
    // its record not taken, or rejected by its audit — is contributed to again).
    let mut last: Option<Opened> = None;
    let mut failing = 0u32;
    // The last global model fetched: offered to a supervisor that lacks it (a standby taking
    // over from one that vanished right after recording it).
    let mut held: Option<(Hash, Vec<u8>)> = None;
    let mut beat_at: Option<std::time::Instant> = None;
    while done < rounds {
        if std::time::Instant::now() > deadline {
            bail!("gave up after {} s with {done} of {rounds} rounds contributed", timeout.as_secs());
        }
        let node = nodes[at].as_str();
        // A heartbeat every 5 s: the supervisor shows this contributor online.
        if beat_at.is_none_or(|t| t.elapsed() >= HEARTBEAT_EVERY) {
            beat_at = Some(std::time::Instant::now());
            match heartbeat(node, job, key, &domain) {
                Ok((200, _)) => {}
                Ok((code, v)) => println!("{}", json!({ "heartbeat": code, "answer": v })),
                Err(e) => println!("{}", json!({ "heartbeat": format!("{e:#}") })),
            }
        }
        let attempt = contribute(node, job, key, &domain, trainer, last, &mut held);
        failing = match &attempt {
            Err(e) if e.is::<LocalFailure>() => failing,
            Err(_) => failing + 1,
            Ok(_) => 0,
        };
        match attempt {
            Ok(Some(((round, opened), code, v))) => {
                last = Some((round, opened));
                if code == 202 {
                    done += 1;
                    println!("{}", json!({ "round": round, "admitted": v["admitted"], "contributed": done }));
                } else {
                    println!("{}", json!({ "round": round, "refused": v["detail"], "status": code }));
                }
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(500)),
            Err(e) if e.is::<Fatal>() => return Err(e),
            // Our own training failed: try the round again, on the same node.
            Err(e) if e.is::<LocalFailure>() => {
                println!("{}", json!({ "training_failed": format!("{e:#}"), "node": node }));
                std::thread::sleep(Duration::from_secs(1));
            }
            // The supervisor restarting, a response cut short: wait and try again; after 5 s
            // in a row, the next supervisor (a standby takes a stalled job over).
            Err(e) => {
                println!("{}", json!({ "waiting": format!("{e:#}"), "node": node }));
                if failing >= 5 && nodes.len() > 1 {
                    at = (at + 1) % nodes.len();
                    failing = 0;
                    // A round is known by its number and when its supervisor opened it, on that
                    // node's clock: another node's round of the same number is another round,
                    // even when its clock reads the same (two nodes started together opened
                    // round 5 within the same millisecond: the contributors never sent to the
                    // standby).
                    last = None;
                    println!("{}", json!({ "failover": nodes[at] }));
                }
                std::thread::sleep(Duration::from_secs(1));
            }
        }
    }
    Ok(())
}

/// How often a contributor says it is still there.
const HEARTBEAT_EVERY: Duration = Duration::from_secs(5);

/// Sends a signed heartbeat.
fn heartbeat(node: &str, job: &str, key: &Keypair, domain: &DomainId) -> anyhow::Result<(u16, Value)> {
    let sent_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    let beat =
        Signed::sign(HeartbeatBody { domain: domain.clone(), contributor: key.address(), sent_ms }, key);
    let body = serde_json::to_string(&beat)?;
    wallet::http(node, "POST", &format!("/api/job/{job}/heartbeat"), Some(&body))
}

/// A round and when its supervisor opened it (node clock, ms).
type Opened = (u64, u64);

/// One attempt: `None` while there is no new open round; else the round (with when it was
/// opened), the HTTP status and the answer to the update sent.
fn contribute(
    node: &str,
    job: &str,
    key: &Keypair,
    domain: &DomainId,
    trainer: &mut Trainer,
    last: Option<Opened>,
    held: &mut Option<(Hash, Vec<u8>)>,
) -> anyhow::Result<Option<(Opened, u16, Value)>> {
    {
        // Poll the small job list; fetch the model only for a new open round.
        let jobs = get_patiently(node, "/api/jobs")?;
        let entry = jobs["jobs"].as_array().and_then(|j| j.iter().find(|e| e["job"] == job)).cloned();
        let Some(entry) = entry else {
            return Err(Fatal(format!("the node supervises no job {job:?}")).into());
        };
        // A standby holds the job but records no round: updates go to the supervisor (after
        // five such answers in a row, the next node is tried).
        if entry["supervising"].as_bool() == Some(false) {
            bail!("{node} does not supervise {job} now (a standby)");
        }
        if let (Some(missing), Some((hash, bytes))) = (entry["behind"].as_str(), held.as_ref())
            && *missing == hash.to_string()
        {
            let offer = json!({ "weights": hex::encode(bytes) }).to_string();
            let (code, v) = wallet::http(node, "POST", &format!("/api/job/{job}/model"), Some(&offer))?;
            println!("{}", json!({ "offered_model": hash.to_string(), "status": code, "answer": v }));
        }
        let open = entry["round"].as_u64().context("round")?;
        let opened = entry["opened_ms"].as_u64().unwrap_or(0);
        if last.is_some_and(|(round, at)| open < round || (open == round && opened == at))
            || entry["closed"].as_bool() == Some(true)
        {
            return Ok(None);
        }
        let m = get_patiently(node, &format!("/api/job/{job}/model"))?;
        let round = m["round"].as_u64().context("round")?;
        let base = hash_of(&m["model_hash"])?;
        let sizes: Vec<usize> = serde_json::from_value(m["sizes"].clone()).context("sizes")?;
        let bytes = hex::decode(m["weights"].as_str().context("weights")?)?;
        let global = supervisor::from_bytes(&bytes).context("weights: not whole f32s")?;
        if supervisor::weights_hash(&global) != base {
            return Err(Fatal("the node sent a model whose hash is not the one it names".into()).into());
        }
        *held = Some((base, bytes));
        let mlp = Mlp::new(&sizes).map_err(anyhow::Error::msg)?;
        if mlp.params() != global.len() {
            return Err(Fatal(format!("the job's model {sizes:?} is not {} weights", global.len())).into());
        }
        let started = std::time::Instant::now();
        let seed = u64::from_le_bytes(key.address().0[..8].try_into().unwrap_or_default()) ^ round;
        let config = json!({
            "round": round,
            "lr": m["lr"].as_f64().unwrap_or(0.2),
            "batch": m["batch"].as_u64().unwrap_or(16),
            "seed": seed,
            "sizes": sizes,
        });
        let (w, samples) = trainer
            .fit(&global, &sizes, config, seed)
            .map_err(|e| LocalFailure(format!("training: {e:#}")))?;
        let delta: Vec<f32> = w.iter().zip(&global).map(|(a, b)| a - b).collect();
        let bytes = supervisor::to_bytes(&delta);
        let body = UpdateBody {
            domain: domain.clone(),
            round,
            base,
            weights: Hash::of_artifact(&bytes),
            contributor: key.address(),
            samples,
            compute_ms: started.elapsed().as_millis() as u64,
            bytes: bytes.len() as u64,
        };
        let request = json!({ "update": Signed::sign(body, key), "weights": hex::encode(&bytes) });
        let (code, v) =
            wallet::http(node, "POST", &format!("/api/job/{job}/update"), Some(&request.to_string()))?;
        if code == 429 {
            return Ok(None);
        }
        Ok(Some(((round, opened), code, v)))
    }
}

pub(crate) fn run(cmd: Fl) -> anyhow::Result<()> {
    match cmd {
        Fl::Split { clients, alpha, seed, out } => {
            let rows = split_to(clients, alpha, seed, &out)?;
            println!("{}", json!({ "clients": clients, "rows": rows, "out": out }));
            Ok(())
        }
        Fl::Join {
            node,
            job,
            fallback,
            key,
            data,
            plugin,
            fit_timeout,
            rounds,
            stake,
            cpu_cores,
            bandwidth_mbps,
            timeout,
        } => {
            let (key, _) = doin_node::identity::load_or_create(&key)?;
            let mut trainer = match (data, plugin) {
                (Some(data), _) => Trainer::Builtin(read_csv(&data)?),
                (None, Some(cmd)) => {
                    let command = doin_node::domains::plugin_command(&cmd).map_err(anyhow::Error::msg)?;
                    let mut spec = PluginSpec::new(format!("fl-client-{job}"), command);
                    spec.limits.call_timeout = Duration::from_secs(fit_timeout.max(1));
                    // Parameters travel as JSON numbers (~12 bytes each).
                    spec.limits.max_reply_bytes = 256 << 20;
                    Trainer::Plugin(Box::new(PluginClient::start(spec, &job).context("starting --plugin")?))
                }
                (None, None) => bail!("give --data or --plugin"),
            };
            let capabilities = Capabilities { cpu_cores, bandwidth_mbps, ..Capabilities::default() };
            let nodes: Vec<String> = std::iter::once(node.node).chain(fallback).collect();
            let result = join(
                &nodes,
                &job,
                &key,
                &mut trainer,
                rounds,
                &stake,
                capabilities,
                Duration::from_secs(timeout),
            );
            if let Trainer::Plugin(client) = &mut trainer {
                client.shutdown();
            }
            result
        }
        Fl::Status { node, job } => {
            println!("{}", wallet::get(&node.node, &format!("/api/cluster/{job}"))?);
            Ok(())
        }
    }
}
