//! `doin`: the DOIN command-line entry point. Parses arguments and hands off to the subcommand.

mod bench;
mod peer;
mod snapshot;

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
    /// System benchmarks; each prints one JSON line.
    #[command(subcommand)]
    Bench(bench::Bench),
    /// State snapshots at finality checkpoints.
    #[command(subcommand)]
    Snapshot(snapshot::Snapshot),
    /// A minimal chain peer for multi-process network tests.
    #[command(hide = true)]
    NetPeer(peer::PeerArgs),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Bench(b) => bench::run(b),
        Command::Snapshot(s) => snapshot::run(s),
        Command::NetPeer(a) => peer::run(a),
    }
}
