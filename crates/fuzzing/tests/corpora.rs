//! Every fuzz target on stable: the committed corpora (`fuzz/corpus/<target>/`, seeds from
//! `make_corpus` plus whatever cargo-fuzz runs found and were committed), then a bounded,
//! seeded mutation of each input (the same every run). A crash is a failing test that names
//! the target and the input.

use std::path::PathBuf;

use doin_fuzzing::{TARGETS, seeds};

/// The crate's directory at run time (cargo may reuse a binary built in another checkout).
fn manifest_dir() -> PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")), PathBuf::from)
}

fn corpus(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = manifest_dir().join("../../fuzz/corpus").join(target);
    let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| {
            panic!("{}: {e} (make it with `cargo run -p doin-fuzzing --example make_corpus`)", dir.display())
        })
        .filter_map(Result::ok)
        .filter_map(|e| Some((e.file_name().to_string_lossy().into_owned(), std::fs::read(e.path()).ok()?)))
        .collect();
    files.sort();
    files
}

/// Runs `f` on `input`, naming the target and input if it panics.
fn run(target: &str, what: &str, f: fn(&[u8]), input: &[u8]) {
    if std::panic::catch_unwind(|| f(input)).is_err() {
        panic!("fuzz target {target} failed on {what}: {}", hex(input));
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().take(4096).map(|x| format!("{x:02x}")).collect()
}

/// xorshift64*: a fixed stream of mutations, the same in every run.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

fn mutated(rng: &mut Rng, input: &[u8]) -> Vec<u8> {
    let mut out = input.to_vec();
    for _ in 0..1 + rng.next() % 4 {
        let r = rng.next();
        match r % 4 {
            0 if !out.is_empty() => {
                let i = (r >> 8) as usize % out.len();
                out[i] ^= 1 << ((r >> 40) % 8);
            }
            1 if !out.is_empty() => {
                let i = (r >> 8) as usize % out.len();
                out[i] = (r >> 32) as u8;
            }
            2 => {
                let i = (r >> 8) as usize % (out.len() + 1);
                out.insert(i, (r >> 32) as u8);
            }
            _ if !out.is_empty() => {
                let i = (r >> 8) as usize % out.len();
                out.truncate(i.max(1));
            }
            _ => out.push(r as u8),
        }
    }
    out
}

#[test]
fn every_target_survives_its_corpus_and_seeded_mutations() {
    let mut rng = Rng(0x0d01_f022);
    for (target, f) in TARGETS {
        let files = corpus(target);
        assert!(!files.is_empty(), "fuzz/corpus/{target} is committed");
        let mut inputs: Vec<Vec<u8>> = Vec::new();
        for (name, bytes) in &files {
            run(target, name, *f, bytes);
            inputs.push(bytes.clone());
        }
        for (i, seed) in seeds(target).iter().enumerate() {
            run(target, &format!("seed {i}"), *f, seed);
            inputs.push(seed.clone());
        }
        for input in &inputs {
            for _ in 0..40 {
                let m = mutated(&mut rng, input);
                run(target, "a seeded mutation", *f, &m);
            }
        }
    }
}

/// The corpus holds every current seed (a seed the targets' code changed is committed again).
#[test]
fn the_committed_corpus_holds_the_current_seeds() {
    for (target, _) in TARGETS {
        let files: Vec<Vec<u8>> = corpus(target).into_iter().map(|(_, b)| b).collect();
        for (i, seed) in seeds(target).iter().enumerate() {
            assert!(
                files.contains(seed),
                "seed {i} of {target} is not in fuzz/corpus/{target}: run make_corpus"
            );
        }
    }
}
