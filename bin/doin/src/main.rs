//! `doin`: the DOIN command-line entry point. Parses arguments and hands off to the subcommand.

mod analytics;
mod bench;
mod channel;
mod devnet;
mod dispute;
mod fl;
mod flood;
mod infer;
mod market;
mod network;
mod node_cmd;
mod plugin_guard;
mod pouw;
mod sim;
mod snapshot;
mod wallet;

use clap::{Parser, Subcommand};

/// DOIN — a peer-to-peer network that optimizes ML models together and keeps an honest,
/// verifiable record of who did what (Proof of Optimization).
#[derive(Debug, Parser)]
#[command(name = "doin", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Runs a node (config in the Python system's JSON format; flags override it).
    Node(node_cmd::NodeArgs),
    /// Starts N node processes on loopback with a genesis that funds and stakes them.
    Devnet(devnet::DevnetArgs),
    /// A network of several machines: `network init` writes its genesis and each machine's
    /// config and key.
    #[command(subcommand)]
    Network(network::Network),
    /// Balances, transfers and stakes through a node's HTTP API.
    #[command(subcommand)]
    Wallet(wallet::Wallet),
    /// Domains on chain: register one with a bounty, list them.
    #[command(subcommand)]
    Domain(wallet::DomainCmd),
    /// Federated training as a contributor: split data, join a job, its status.
    #[command(subcommand)]
    Fl(fl::Fl),
    /// Predictions from a domain's verified champion model, receipts checked (one JSON line per
    /// node).
    Infer(infer::InferArgs),
    /// Payment channels: open one to a serving node, sign updates, see it, close it.
    #[command(subcommand)]
    Channel(channel::Channel),
    /// The resource marketplace: offer this node to a market, see what it measured.
    #[command(subcommand)]
    Market(market::Market),
    /// Jobs through a market (PoUW's `submit_task(task, fee)`): matched by score, run there.
    #[command(subcommand)]
    Task(market::Task),
    /// Disputes of wrong inference answers: send the evidence `doin infer` wrote, follow one.
    #[command(subcommand)]
    Dispute(dispute::Dispute),
    /// A node's status (its `/status` endpoint).
    Status(wallet::NodeUrl),
    /// The PoUW seed's operator surface: stake-and-register (prints the ticket), status,
    /// health-metrics, economic-status, ticket.
    #[command(subcommand)]
    Pouw(pouw::Pouw),
    /// Creates a node key (mode 0600) and prints its address and peer id.
    Keygen {
        /// Where to write the key.
        #[arg(long, default_value = "node.key")]
        out: std::path::PathBuf,
    },
    /// System benchmarks; each prints one JSON line.
    #[command(subcommand)]
    Bench(bench::Bench),
    /// A deterministic simulation of N nodes on one chain over a simulated network (one JSON
    /// line).
    Sim(sim::SimArgs),
    /// State snapshots at finality checkpoints.
    #[command(subcommand)]
    Snapshot(snapshot::Snapshot),
    /// Experiment analytics: sync a node's OLAP cube into PostgreSQL.
    #[command(subcommand)]
    Analytics(analytics::Analytics),
    /// An attacker's gossip flood from throwaway keys, for the adversary tests.
    #[command(hide = true)]
    Flood(flood::FloodArgs),
    /// Runs a plugin in its process group and kills the group when the node dies.
    #[command(hide = true)]
    PluginGuard(plugin_guard::GuardArgs),
}

/// glibc's malloc settings for a node: trim freed memory at the top of a heap above 64 KiB
/// (which also keeps allocations over 128 KiB — training's tensors — in their own mappings,
/// returned on free) and at most two arenas. With glibc's defaults an optimizing node kept
/// 12 – 16 MB of freed training memory resident (41 – 47 MB in a 7-node `mlp_digits` devnet;
/// 37 – 39 MB with these, training throughput unchanged: `docs/design.md` §9).
const NODE_MALLOC_TUNABLES: &str = "glibc.malloc.trim_threshold=65536:glibc.malloc.arena_max=2";

/// Re-executes this process once with [`NODE_MALLOC_TUNABLES`] (glibc reads tunables only at
/// start), unless `GLIBC_TUNABLES` is already set: a user's own settings win. On failure the
/// node runs with glibc's defaults.
fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        use std::os::unix::process::CommandExt;
        if std::env::var_os("GLIBC_TUNABLES").is_some() {
            return;
        }
        let Ok(exe) = std::env::current_exe() else { return };
        let error = std::process::Command::new(exe)
            .args(std::env::args_os().skip(1))
            .env("GLIBC_TUNABLES", NODE_MALLOC_TUNABLES)
            .exec();
        eprintln!("warning: running with glibc's default malloc settings (re-exec failed: {error})");
    }
}

/// Every plugin this process starts runs under `doin plugin-guard` (killed with its group when
/// this process dies).
fn use_plugin_guard() {
    if let Ok(exe) = std::env::current_exe() {
        let exe = exe.display().to_string();
        let parent = std::process::id().to_string();
        doin_plugin::host::set_default_launcher(vec![
            exe,
            "plugin-guard".into(),
            "--parent".into(),
            parent,
            "--".into(),
        ]);
    }
}

fn libp2p_peer_id(key: &doin_primitives::Keypair) -> String {
    doin_net::PeerId::from_bytes(&key.address().peer_id_bytes()).map(|p| p.to_string()).unwrap_or_default()
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Node(a) => {
            tune_allocator();
            use_plugin_guard();
            node_cmd::run(a)
        }
        Command::PluginGuard(a) => plugin_guard::run(a),
        Command::Wallet(w) => wallet::run(w),
        Command::Fl(f) => {
            // A contributor plugin (`fl join --plugin`) dies with this process.
            use_plugin_guard();
            fl::run(f)
        }
        Command::Status(n) => wallet::status(n),
        Command::Pouw(c) => pouw::run(c),
        Command::Infer(a) => infer::run(a),
        Command::Channel(c) => channel::run(c),
        Command::Dispute(d) => dispute::run(d),
        Command::Market(m) => market::market(m),
        Command::Network(n) => network::run(n),
        Command::Task(t) => market::task(t),
        Command::Domain(d) => wallet::domain(d),
        Command::Keygen { out } => {
            if out.exists() {
                anyhow::bail!("{} exists; refusing to overwrite a key", out.display());
            }
            let (key, _) = doin_node::identity::load_or_create(&out)?;
            let peer = libp2p_peer_id(&key);
            println!(
                "{}",
                serde_json::json!({ "address": key.address().to_string(), "peer_id": peer, "file": out })
            );
            Ok(())
        }
        Command::Devnet(a) => devnet::run(a),
        Command::Bench(b) => bench::run(b),
        Command::Snapshot(s) => snapshot::run(s),
        Command::Analytics(a) => analytics::run(a),
        Command::Flood(a) => flood::run(a),
        Command::Sim(a) => sim::run(a),
    }
}
