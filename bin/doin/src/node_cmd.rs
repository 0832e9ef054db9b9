//! `doin node`: runs a node from a config file in the Python system's format, with flags that
//! override it.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use doin_node::{NodeConfig, RunLimits};

#[derive(Debug, Args)]
pub(crate) struct NodeArgs {
    /// JSON config file (the Python system's format).
    #[arg(long)]
    config: Option<PathBuf>,
    /// HTTP port (P2P listens on port + 1 unless `p2p_port` is set).
    #[arg(long)]
    port: Option<u16>,
    /// Data directory.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Peers to dial (multiaddr or host:port), comma-separated or repeated.
    #[arg(long, value_delimiter = ',')]
    peers: Vec<String>,
    /// Node key file (created with mode 0600 if missing).
    #[arg(long)]
    identity: Option<PathBuf>,
    /// Experiment CSV file.
    #[arg(long)]
    stats_file: Option<PathBuf>,
    /// SQLite OLAP cube.
    #[arg(long)]
    olap_db: Option<PathBuf>,
    /// Delete this node's chain data before starting.
    #[arg(long)]
    reset_chain: bool,
    /// Log level (error, warn, info, debug, trace) or a filter.
    #[arg(long)]
    log_level: Option<String>,
    /// A checkpoint you trust, HEIGHT:HASH (from a node you trust: its `/chain/status`
    /// `finalized_height` and `finalized_hash`): with an empty data directory, the node joins from
    /// its peers' snapshot, checked against it, instead of replaying the whole chain.
    #[arg(long, conflicts_with = "checkpoint_from")]
    checkpoint: Option<String>,
    /// Keep every block body (an archive node; config `archive`), whatever `keep_bodies` says.
    #[arg(long)]
    archive: bool,
    /// HOST:PORT of a node you trust: its finalized checkpoint (`GET /anchors`) becomes the
    /// checkpoint this node joins from (as `--checkpoint`).
    #[arg(long, value_name = "HOST:PORT")]
    checkpoint_from: Option<String>,
    /// Stop after this many seconds.
    #[arg(long)]
    duration: Option<f64>,
    /// Stop when standard input closes.
    #[arg(long, hide = true)]
    stop_on_stdin_eof: bool,
    /// Fault injection for end-to-end tests (`copy-reveals`).
    #[arg(long, hide = true)]
    adversary: Option<String>,
}

pub(crate) fn run(args: NodeArgs) -> anyhow::Result<()> {
    let text = match &args.config {
        Some(path) => std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?,
        None => "{}".to_owned(),
    };
    let loaded = NodeConfig::from_json(&text).map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut config = loaded.config;
    if let Some(p) = args.port {
        config.port = p;
    }
    if let Some(d) = args.data_dir {
        config.data_dir = d;
    }
    if !args.peers.is_empty() {
        config.bootstrap_peers = args.peers;
    }
    if args.identity.is_some() {
        config.identity = args.identity;
    }
    if args.stats_file.is_some() {
        config.experiment_stats_file = args.stats_file;
    }
    if args.olap_db.is_some() {
        config.olap_db_path = args.olap_db;
    }
    if args.checkpoint.is_some() {
        config.checkpoint = args.checkpoint;
    }
    config.archive |= args.archive;
    if let Some(node) = &args.checkpoint_from {
        let checkpoint = checkpoint_of(node)?;
        println!("trusting checkpoint {checkpoint} from {node}");
        config.checkpoint = Some(checkpoint);
    }
    config.reset_chain |= args.reset_chain;
    if let Some(l) = args.log_level {
        config.log_level = l;
    }
    let loaded = config.validated().map_err(|e| anyhow::anyhow!("{e}"))?;
    init_logs(&loaded.config.log_level);
    for w in &loaded.warnings {
        tracing::warn!("{w}");
    }
    if args.adversary.is_some() && !doin_node::ADVERSARIES {
        anyhow::bail!(
            "--adversary: this build has no adversaries (test-only misbehaviour is compiled into test \
             builds, with doin-node's `adversary` feature)"
        );
    }
    let adversary = match args.adversary.as_deref() {
        None => None,
        Some("copy-reveals") => Some(doin_node::Adversary::CopyReveals),
        Some("double-vote") => Some(doin_node::Adversary::DoubleVote),
        Some("double-finality-vote") => Some(doin_node::Adversary::DoubleFinalityVote),
        Some("inflate-trials") => Some(doin_node::Adversary::InflateTrials),
        Some("tamper-round-model") => Some(doin_node::Adversary::TamperRoundModel),
        Some("wrong-answers") => Some(doin_node::Adversary::WrongAnswers),
        Some("fake-capability") => Some(doin_node::Adversary::FakeCapability),
        Some(other) => {
            anyhow::bail!(
                "--adversary {other:?}: the behaviours are copy-reveals, double-vote, double-finality-vote, \
                 inflate-trials, tamper-round-model, wrong-answers and fake-capability"
            )
        }
    };
    let limits = RunLimits {
        duration: args.duration.filter(|d| *d > 0.0).map(std::time::Duration::from_secs_f64),
        stop_on_stdin_eof: args.stop_on_stdin_eof,
        adversary,
    };
    doin_node::run(loaded.config, limits).map_err(|e| anyhow::anyhow!("{e}"))
}

/// Logs to stderr with the given level or filter (`RUST_LOG` wins when set).
pub(crate) fn init_logs(level: &str) {
    let level = level.to_ascii_lowercase();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(&level))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .try_init();
}

/// The finalized checkpoint a trusted node reports at `GET /anchors`, as `HEIGHT:HASH`.
fn checkpoint_of(node: &str) -> anyhow::Result<String> {
    let anchors =
        crate::wallet::get(node, "/anchors").with_context(|| format!("--checkpoint-from {node}"))?;
    let f = &anchors["finalized"];
    match (f["height"].as_u64(), f["hash"].as_str()) {
        (Some(0), _) => anyhow::bail!("--checkpoint-from {node}: that node has finalized nothing yet"),
        (Some(h), Some(hash)) => Ok(format!("{h}:{hash}")),
        _ => anyhow::bail!("--checkpoint-from {node}: no finalized checkpoint in its /anchors: {anchors}"),
    }
}
