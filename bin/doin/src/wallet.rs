//! `doin wallet` and `doin status`: talk to a node's HTTP API (plain HTTP, usually on loopback).

use std::{
    io::{Read, Write},
    net::TcpStream,
    path::PathBuf,
    time::Duration,
};

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use doin_primitives::{
    Address, Amount, BoundedVec, DomainId, Keypair, Roles, Signed, TxBody, TxKind, tx::Capabilities,
};

#[derive(Debug, Args)]
pub(crate) struct NodeUrl {
    /// The node's HTTP address.
    #[arg(long, default_value = "127.0.0.1:8470")]
    pub(crate) node: String,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Wallet {
    /// Balance, nonce, stake and reputation of an account.
    Balance {
        #[command(flatten)]
        node: NodeUrl,
        /// The account (hex); default: the key's.
        #[arg(long)]
        address: Option<String>,
        /// A key file (to name the account).
        #[arg(long)]
        key: Option<PathBuf>,
    },
    /// Sends coins.
    Transfer {
        #[command(flatten)]
        node: NodeUrl,
        /// The sender's key file.
        #[arg(long)]
        key: PathBuf,
        /// Recipient address (hex).
        #[arg(long)]
        to: String,
        /// Amount in DOIN (decimals allowed, 9 places).
        #[arg(long)]
        amount: String,
    },
    /// Bonds coins as stake, as optimizer and evaluator of the given domains.
    Stake {
        #[command(flatten)]
        node: NodeUrl,
        /// The staker's key file.
        #[arg(long)]
        key: PathBuf,
        /// Amount in DOIN.
        #[arg(long)]
        amount: String,
        /// Domains (comma-separated).
        #[arg(long, value_delimiter = ',')]
        domains: Vec<String>,
    },
    /// Starts unbonding stake.
    Unstake {
        #[command(flatten)]
        node: NodeUrl,
        /// The staker's key file.
        #[arg(long)]
        key: PathBuf,
        /// Amount in DOIN.
        #[arg(long)]
        amount: String,
    },
}

/// One HTTP/1.1 request over plain TCP; returns the status and the body.
pub(crate) fn http(
    node: &str,
    method: &str,
    path: &str,
    body: Option<&str>,
) -> anyhow::Result<(u16, serde_json::Value)> {
    http_with(node, method, path, body, &[])
}

/// [`http`] with extra headers.
pub(crate) fn http_with(
    node: &str,
    method: &str,
    path: &str,
    body: Option<&str>,
    headers: &[(&str, &str)],
) -> anyhow::Result<(u16, serde_json::Value)> {
    let (status, raw) = request(node, method, path, body, headers)?;
    let text = String::from_utf8_lossy(&raw);
    let value = serde_json::from_str(text.trim()).unwrap_or(serde_json::Value::String(text.into_owned()));
    Ok((status, value))
}

/// A `GET` whose body is bytes (a model).
pub(crate) fn http_raw(node: &str, path: &str) -> anyhow::Result<(u16, Vec<u8>)> {
    request(node, "GET", path, None, &[])
}

fn request(
    node: &str,
    method: &str,
    path: &str,
    body: Option<&str>,
    headers: &[(&str, &str)],
) -> anyhow::Result<(u16, Vec<u8>)> {
    let mut stream = TcpStream::connect(node).with_context(|| format!("connecting to the node at {node}"))?;
    stream.set_read_timeout(Some(Duration::from_secs(15)))?;
    let body = body.unwrap_or("");
    let extra: String = headers.iter().map(|(k, v)| format!("{k}: {v}\r\n")).collect();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {node}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n{extra}Connection: close\r\n\r\n{body}",
        body.len()
    )?;
    let mut raw = Vec::new();
    stream.take(80 << 20).read_to_end(&mut raw)?;
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").context("malformed HTTP response")?;
    let head = String::from_utf8_lossy(&raw[..split]);
    let status: u16 =
        head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).context("no HTTP status")?;
    if head.to_ascii_lowercase().contains("transfer-encoding: chunked") {
        bail!("{path}: chunked responses are not supported");
    }
    Ok((status, raw[split + 4..].to_vec()))
}

pub(crate) fn get(node: &str, path: &str) -> anyhow::Result<serde_json::Value> {
    let (status, v) = http(node, "GET", path, None)?;
    if status != 200 {
        bail!("{path}: HTTP {status}: {v}");
    }
    Ok(v)
}

pub(crate) fn parse_amount(text: &str) -> anyhow::Result<Amount> {
    let (whole, frac) = text.split_once('.').unwrap_or((text, ""));
    if frac.len() > 9 || whole.is_empty() && frac.is_empty() {
        bail!("amount {text:?}: at most 9 decimal places");
    }
    let whole: u128 =
        if whole.is_empty() { 0 } else { whole.parse().with_context(|| format!("amount {text:?}"))? };
    let frac_units: u128 = if frac.is_empty() {
        0
    } else {
        format!("{frac:0<9}").parse().with_context(|| format!("amount {text:?}"))?
    };
    whole
        .checked_mul(1_000_000_000)
        .and_then(|w| w.checked_add(frac_units))
        .map(Amount)
        .context("amount too large")
}

pub(crate) fn key_of(path: &std::path::Path) -> anyhow::Result<Keypair> {
    if !path.exists() {
        bail!("key file {} does not exist (create one with `doin keygen`)", path.display());
    }
    Ok(doin_node::identity::load_or_create(path)?.0)
}

pub(crate) fn address(text: &str) -> anyhow::Result<Address> {
    let bytes = hex::decode(text).with_context(|| format!("address {text:?} is not hex"))?;
    Ok(Address(bytes.try_into().map_err(|_| anyhow::anyhow!("address {text:?} is not 32 bytes"))?))
}

/// Signs `kind` from `key` with the account's next nonce and submits it; prints its id.
pub(crate) fn submit(node: &str, key: &Keypair, kind: TxKind) -> anyhow::Result<()> {
    let (id, nonce) = submit_tx(node, key, kind)?;
    println!("{}", serde_json::json!({ "submitted": id.to_string(), "nonce": nonce }));
    Ok(())
}

/// Signs `kind` from `key` with the account's next nonce and submits it: its id and nonce.
pub(crate) fn submit_tx(
    node: &str,
    key: &Keypair,
    kind: TxKind,
) -> anyhow::Result<(doin_primitives::Hash, u64)> {
    submit_tx_at(node, key, kind, 0)
}

/// [`submit_tx`] with the account's next nonce plus `ahead` (transactions sent one after the
/// other before the first is in a block).
pub(crate) fn submit_tx_at(
    node: &str,
    key: &Keypair,
    kind: TxKind,
    ahead: u64,
) -> anyhow::Result<(doin_primitives::Hash, u64)> {
    let tx = sign_tx(node, key, kind, ahead)?;
    let (code, v) = http(node, "POST", "/tx", Some(&serde_json::to_string(&tx)?))?;
    if code != 202 {
        bail!(
            "the node refused the transaction (HTTP {code}): {}",
            v["detail"].as_str().unwrap_or(&v.to_string())
        );
    }
    Ok((tx.id(), tx.body.nonce))
}

/// Signs `kind` from `key` with the account's next nonce plus `ahead`, the chain id and fees
/// the node reports.
pub(crate) fn sign_tx(
    node: &str,
    key: &Keypair,
    kind: TxKind,
    ahead: u64,
) -> anyhow::Result<doin_primitives::Transaction> {
    let me = key.address();
    let account = get(node, &format!("/accounts/{me}"))?;
    let status = get(node, "/chain/status")?;
    let fees = get(node, "/fees")?;
    let nonce = account["nonce"].as_u64().context("account nonce")? + ahead;
    let base: u128 = fees["base_fee"].as_str().and_then(|s| s.parse().ok()).unwrap_or(10);
    let chain_id = status["chain_id"].as_u64().unwrap_or(1337);
    let body = TxBody {
        chain_id,
        sender: me,
        nonce,
        max_fee: Amount(base.saturating_mul(2).max(base + 2)),
        priority_fee: Amount(1),
        kind,
    };
    Ok(Signed::sign(body, key))
}

pub(crate) fn run(w: Wallet) -> anyhow::Result<()> {
    match w {
        Wallet::Balance { node, address: a, key } => {
            let who = match (a, key) {
                (Some(a), _) => address(&a)?,
                (None, Some(k)) => key_of(&k)?.address(),
                (None, None) => bail!("name the account with --address or --key"),
            };
            println!("{}", get(&node.node, &format!("/accounts/{who}"))?);
            Ok(())
        }
        Wallet::Transfer { node, key, to, amount } => {
            let kind = TxKind::Transfer { to: address(&to)?, amount: parse_amount(&amount)? };
            submit(&node.node, &key_of(&key)?, kind)
        }
        Wallet::Stake { node, key, amount, domains } => {
            let ids: Vec<DomainId> = domains
                .iter()
                .map(|d| DomainId::new(d.as_str()).map_err(|e| anyhow::anyhow!("domain {d:?}: {e}")))
                .collect::<Result<_, _>>()?;
            let kind = TxKind::Stake {
                amount: parse_amount(&amount)?,
                roles: Roles(Roles::OPTIMIZER.0 | Roles::EVALUATOR.0),
                domains: BoundedVec::try_from_vec(ids).map_err(|e| anyhow::anyhow!("--domains: {e}"))?,
                preferences: Capabilities::default(),
            };
            submit(&node.node, &key_of(&key)?, kind)
        }
        Wallet::Unstake { node, key, amount } => {
            submit(&node.node, &key_of(&key)?, TxKind::Unstake { amount: parse_amount(&amount)? })
        }
    }
}

/// `doin domain`: domains on chain.
#[derive(Debug, Subcommand)]
pub(crate) enum DomainCmd {
    /// Posts an optimization task: registers a built-in domain's spec with a bounty in escrow.
    Register {
        #[command(flatten)]
        node: NodeUrl,
        /// The payer's key file.
        #[arg(long)]
        key: PathBuf,
        /// Built-in domain (quadratic, sphere, rastrigin, rosenbrock, ackley, mlp_digits,
        /// co2_forecast).
        #[arg(long)]
        domain: String,
        /// Bounty escrowed for the domain, in DOIN.
        #[arg(long, default_value = "0")]
        bounty: String,
        /// Paid from the escrow to each accepted improvement, in DOIN.
        #[arg(long, default_value = "0")]
        bounty_per_accept: String,
        /// `target_performance`.
        #[arg(long, allow_hyphen_values = true)]
        target: Option<f64>,
    },
    /// Domains on chain with their champions.
    List {
        #[command(flatten)]
        node: NodeUrl,
    },
}

pub(crate) fn domain(cmd: DomainCmd) -> anyhow::Result<()> {
    match cmd {
        DomainCmd::List { node } => {
            println!("{}", get(&node.node, "/domains")?);
            Ok(())
        }
        DomainCmd::Register { node, key, domain, bounty, bounty_per_accept, target } => {
            let config = doin_node::DomainConfig {
                domain_id: domain.clone(),
                target_performance: target,
                ..doin_node::DomainConfig::default()
            };
            let built = doin_node::domains::build(&config).map_err(anyhow::Error::msg)?;
            let mut spec =
                doin_node::domains::spec_of(built.as_ref(), &config, &doin_node::NodeConfig::default())
                    .map_err(anyhow::Error::msg)?;
            spec.bounty_per_accept = parse_amount(&bounty_per_accept)?;
            let kind = TxKind::RegisterDomain { spec: Box::new(spec), bounty: parse_amount(&bounty)? };
            submit(&node.node, &key_of(&key)?, kind)
        }
    }
}

/// `doin status`: the node's `/status`.
pub(crate) fn status(node: NodeUrl) -> anyhow::Result<()> {
    println!("{}", get(&node.node, "/status")?);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts_parse_with_nine_decimals() {
        assert_eq!(parse_amount("1").unwrap(), Amount(1_000_000_000));
        assert_eq!(parse_amount("0.5").unwrap(), Amount(500_000_000));
        assert_eq!(parse_amount("2.000000001").unwrap(), Amount(2_000_000_001));
        assert!(parse_amount("1.0000000001").is_err());
        assert!(parse_amount("abc").is_err());
        assert!(parse_amount("").is_err());
    }
}
