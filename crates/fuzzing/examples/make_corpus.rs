//! Writes every target's seeds into `fuzz/corpus/<target>/seed-<hash>` (commit the result).

fn main() -> std::io::Result<()> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus");
    for (target, _) in doin_fuzzing::TARGETS {
        let dir = root.join(target);
        std::fs::create_dir_all(&dir)?;
        for seed in doin_fuzzing::seeds(target) {
            let name = format!("seed-{}", &doin_primitives::Hash::of(&seed).to_string()[..16]);
            std::fs::write(dir.join(name), &seed)?;
        }
        println!("{target}: {} seeds", doin_fuzzing::seeds(target).len());
    }
    Ok(())
}
