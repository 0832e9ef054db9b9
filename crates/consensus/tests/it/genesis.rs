//! Genesis specs and protocol parameters: bad input is refused with a message naming it.

use doin_consensus::{GenesisSpec, ProtocolParams, StateKey, testkit::TestNet};
use doin_primitives::{Amount, Block, DomainSpec, encode};

fn spec() -> GenesisSpec {
    TestNet::new(4, 2, 1).spec
}

#[test]
fn genesis_is_deterministic_and_round_trips_through_json() {
    let s = spec();
    let json = serde_json::to_string_pretty(&s).unwrap();
    let back: GenesisSpec = serde_json::from_str(&json).unwrap();
    let (a, ga) = s.build().unwrap();
    let (b, gb) = back.build().unwrap();
    assert_eq!(ga.hash(), gb.hash());
    assert_eq!(a.root(), b.root());
    assert_eq!(ga.header.state_root, a.root());
    assert_eq!(a.accounted_supply(), Some(a.meta().supply.minted.0));
    // The genesis block survives its binary and JSON encodings.
    assert_eq!(Block::decode(&encode(&ga)).unwrap(), ga);
    let block_json = serde_json::to_string(&ga).unwrap();
    assert_eq!(serde_json::from_str::<Block>(&block_json).unwrap(), ga);
    // Parameters are part of the root.
    let (value, _) = a.prove(&StateKey::Params).unwrap();
    assert_eq!(value.unwrap(), encode(&s.params));
}

#[test]
fn inconsistent_genesis_is_refused_with_a_reason() {
    let mut s = spec();
    s.domains.push(s.domains[0].clone());
    assert!(s.build().unwrap_err().to_string().contains("listed twice"));

    let mut s = spec();
    s.stakes[0].domains = vec![doin_primitives::tx::string("nope")];
    assert!(s.build().unwrap_err().to_string().contains("unknown domain \"nope\""));

    let mut s = spec();
    s.params.finality_depth = 0;
    let err = s.build().unwrap_err().to_string();
    assert!(err.contains("finality_depth") && err.contains("at least 1"), "{err}");

    let mut s = spec();
    s.params.initial_threshold = s.params.max_threshold + 1;
    assert!(s.build().unwrap_err().to_string().contains("initial_threshold"));

    let mut s = spec();
    let mut d = DomainSpec::example("x", 1);
    d.quorum.min = 0;
    s.domains.push(doin_consensus::GenesisDomain { spec: d, bounty: Amount::ZERO });
    assert!(s.build().unwrap_err().to_string().contains("quorum_min"));

    let unknown = r#"{"chain_id": 1, "timestamp_ms": 0, "params": {"target_block_time": 5}}"#;
    let err = serde_json::from_str::<GenesisSpec>(unknown).unwrap_err().to_string();
    assert!(err.contains("unknown field `target_block_time`"), "{err}");
}

#[test]
fn default_parameters_are_valid_and_documented_values() {
    let p = ProtocolParams::default();
    p.validate().unwrap();
    assert_eq!(p.target_block_time_ms, 600_000);
    assert_eq!(p.initial_threshold, 1_000, "1e-6 in fixed point, as the Python system");
    assert_eq!(p.initial_reward, Amount::doin(50));
    assert_eq!(p.halving_interval, 210_000);
    assert_eq!(p.finality_depth, 6);
    assert_eq!(p.anchor_interval, 100);
}

#[test]
fn hostile_block_bytes_are_errors_not_panics() {
    let (_, genesis) = spec().build().unwrap();
    let bytes = encode(&genesis);
    for cut in 0..bytes.len() {
        assert!(Block::decode(&bytes[..cut]).is_err(), "truncated at {cut}");
    }
    // A transaction count prefix far above the bound, right after the header.
    let header_len = encode(&genesis.header).len();
    let mut evil = bytes[..header_len].to_vec();
    evil.extend_from_slice(&u32::MAX.to_le_bytes());
    let err = Block::decode(&evil).unwrap_err().to_string();
    assert!(err.contains("exceeds the bound 16384"), "{err}");
}
