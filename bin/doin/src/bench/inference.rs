//! `doin bench inference`: the node's serving pipeline for the `mlp_digits` model, one request
//! of one row at a time on one thread, free and paid, beside the bare forward pass; and channel
//! updates taken per second on one core. The same calls the node makes
//! (`doin_node::serving`, `doin_node::channels`): the update decoded and its signature checked,
//! checked against the channel on chain, the answer computed, the update taken and appended to
//! the log, the receipt hashed and signed. HTTP is not included (one loopback request adds its
//! own fixed cost, the same paid or not). The per-core rate of channel updates is with their
//! signatures checked in batches of up to 64, as the node's verifier does when requests arrive
//! together; the one-at-a-time rate is reported beside it.

use std::time::Instant;

use anyhow::Context;
use doin_consensus::testkit::TestNet;
use doin_node::{
    channels::{
        ChannelBook,
        log::Log,
        verify::{MAX_BATCH, verify_all},
    },
    serving::sign_receipt,
};
use doin_optimize::domain::Domain;
use doin_primitives::{Amount, ChannelUpdate, ChannelUpdateBody, DomainId, Hash, Signed, TxKind};
use serde_json::json;

fn quantile(v: &mut [f64], q: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    v[((v.len() - 1) as f64 * q).round() as usize]
}

/// A chain where account 1 opened a channel of `deposit` to account 2; the channel's id.
fn channel(net: &mut TestNet, deposit: Amount) -> anyhow::Result<Hash> {
    let tx = net.tx(1, TxKind::OpenChannel { payee: net.addr(2), deposit, expiry_height: 1_000_000 });
    let id = tx.id();
    net.heartbeat(vec![tx]).map_err(|e| anyhow::anyhow!("opening the channel: {e}"))?;
    Ok(id)
}

fn updates(net: &TestNet, channel: Hash, n: u64, price: Amount) -> Vec<Vec<u8>> {
    (1..=n)
        .map(|i| {
            let u: ChannelUpdate = Signed::sign(
                ChannelUpdateBody {
                    channel,
                    payer: net.addr(1),
                    nonce: i,
                    paid_total: Amount(price.0 * u128::from(i)),
                },
                &net.keys[1],
            );
            doin_primitives::encode(&u)
        })
        .collect()
}

pub(crate) fn run(requests: usize, updates_n: u64) -> anyhow::Result<()> {
    let domain = doin_ml::MlpClassifier::new(3).map_err(anyhow::Error::msg)?;
    let params = doin_ml::MlpClassifier::reference_params();
    let model = domain
        .train(&params, None, doin_optimize::domain::Budget::new(std::time::Duration::from_secs(120), 0))
        .map_err(|e| anyhow::anyhow!("training the model: {e}"))?;
    let quality = domain.measure_artifact(&model).map_err(|e| anyhow::anyhow!("{e}"))?;
    let (rows, _) = domain.held_out();
    let price = Amount(1_000_000);
    let mut net = TestNet::new(4, 1, 0);
    let paid_channel = channel(&mut net, Amount(price.0 * (requests as u128 + 1)))?;
    let bulk_channel = channel(&mut net, Amount(u128::from(updates_n) + 1))?;
    let dir = tempfile::tempdir()?;
    let mut book = ChannelBook::new(net.addr(2));
    let (mut log, _) = Log::open(dir.path(), &mut book)?;
    let key = net.keys[2].clone();
    let id = DomainId::new(doin_ml::MlpClassifier::ID).context("domain id")?;
    let model_ref = (Hash::of(b"optimae"), Hash::of_artifact(&model), 1);
    let row = |i: usize| vec![rows[i % rows.len()].clone()];
    // Warm-up.
    for i in 0..50 {
        let _ = domain.infer(&model, &row(i));
    }
    let (mut bare, mut free, mut paid) = (Vec::new(), Vec::new(), Vec::new());
    let started = Instant::now();
    for i in 0..requests {
        let t = Instant::now();
        let _ = domain.infer(&model, &row(i)).map_err(|e| anyhow::anyhow!("{e}"))?;
        bare.push(t.elapsed().as_secs_f64() * 1e3);
    }
    let bare_s = started.elapsed().as_secs_f64();
    let started = Instant::now();
    for i in 0..requests {
        let t = Instant::now();
        let input = row(i);
        let answer = domain.infer(&model, &input).map_err(|e| anyhow::anyhow!("{e}"))?;
        let _receipt = sign_receipt(&key, id.clone(), model_ref, &input, &answer.outputs, None);
        free.push(t.elapsed().as_secs_f64() * 1e3);
    }
    let free_s = started.elapsed().as_secs_f64();
    let paying = updates(&net, paid_channel, requests as u64, price);
    let started = Instant::now();
    for (i, bytes) in paying.iter().enumerate() {
        let t = Instant::now();
        let update = ChannelBook::decode(bytes).map_err(|e| anyhow::anyhow!("{e}"))?;
        let checked = book.check(&net.state, update, price).map_err(|e| anyhow::anyhow!("{e}"))?;
        let input = row(i);
        let answer = domain.infer(&model, &input).map_err(|e| anyhow::anyhow!("{e}"))?;
        book.take(&checked).map_err(|e| anyhow::anyhow!("{e}"))?;
        log.taken(&checked.update)?;
        let _receipt =
            sign_receipt(&key, id.clone(), model_ref, &input, &answer.outputs, Some(checked.update.id()));
        paid.push(t.elapsed().as_secs_f64() * 1e3);
    }
    let paid_s = started.elapsed().as_secs_f64();
    // Channel updates alone, as the node takes them under concurrent requests: signatures
    // checked in batches (`channels::verify`), then each checked against the channel, taken and
    // logged.
    let bulk = updates(&net, bulk_channel, updates_n, Amount(1));
    let started = Instant::now();
    for batch in bulk.chunks(MAX_BATCH) {
        for update in verify_all(batch) {
            let update = update.map_err(|e| anyhow::anyhow!("{e}"))?;
            let checked = book.check(&net.state, update, Amount(1)).map_err(|e| anyhow::anyhow!("{e}"))?;
            book.take(&checked).map_err(|e| anyhow::anyhow!("{e}"))?;
            log.taken(&checked.update)?;
        }
    }
    let updates_s = started.elapsed().as_secs_f64();
    // One at a time (a lone request's update is checked alone).
    let started = Instant::now();
    for bytes in &bulk {
        ChannelBook::decode(bytes).map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    let verify_s = started.elapsed().as_secs_f64();
    log.sync()?;
    let (bare_p50, free_p50, paid_p50) =
        (quantile(&mut bare, 0.5), quantile(&mut free, 0.5), quantile(&mut paid, 0.5));
    println!(
        "{}",
        json!({
            "bench": "inference",
            "domain": doin_ml::MlpClassifier::ID,
            "model": "64-64-64-10 MLP",
            "model_quality": quality,
            "requests": requests,
            "rows_per_request": 1,
            "bare_forward_p50_ms": bare_p50,
            "bare_forward_p99_ms": quantile(&mut bare, 0.99),
            "bare_per_s": requests as f64 / bare_s,
            "unpaid_p50_ms": free_p50,
            "unpaid_p99_ms": quantile(&mut free, 0.99),
            "unpaid_requests_per_s": requests as f64 / free_s,
            "paid_p50_ms": paid_p50,
            "paid_p99_ms": quantile(&mut paid, 0.99),
            "paid_requests_per_s": requests as f64 / paid_s,
            "receipt_overhead_p50_ms": free_p50 - bare_p50,
            "paid_overhead_p50_ms": paid_p50 - bare_p50,
            "channel_updates": updates_n,
            "channel_updates_per_s_per_core": updates_n as f64 / updates_s,
            "update_batch": MAX_BATCH,
            "single_update_signature_checks_per_s": updates_n as f64 / verify_s,
            "earned": book.earnings().0.0.to_string(),
            "http": false,
        })
    );
    Ok(())
}
