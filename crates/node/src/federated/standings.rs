//! Contributors' standings published by the supervisor with each round record and restored by
//! a standby that follows the job (`docs/design.md` §21c).

use super::*;

impl Jobs {
    /// Publishes job `job`'s contributor standings as an artifact (kept, served, announced; the
    /// oldest beyond [`KEPT_STANDINGS`] dropped) and returns its content address, zero when it
    /// cannot be written.
    pub(super) fn publish_standing(&self, job: &str, saved: &[Saved]) -> Hash {
        let bytes = saved_json(saved).to_string().into_bytes();
        let hash = Hash::of_artifact(&bytes);
        let path = standing_artifact_path(&self.dir, job, &hash);
        if let Err(e) = write_durably(&path, &bytes) {
            tracing::warn!(job, error = %e, "cannot publish the contributors' standing");
            return Hash::ZERO;
        }
        self.artifacts.add(&path, &bytes);
        lock(&self.announce).push(hash);
        if let Some(dir) = path.parent()
            && let Ok(entries) = std::fs::read_dir(dir)
        {
            let mut files: Vec<(std::time::SystemTime, PathBuf)> = entries
                .flatten()
                .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path())))
                .collect();
            files.sort();
            let excess = files.len().saturating_sub(KEPT_STANDINGS);
            for (_, old) in files.into_iter().take(excess) {
                let _ = std::fs::remove_file(old);
            }
        }
        hash
    }

    /// Standings the chain recorded for jobs this node follows (not supervises) that it has not
    /// restored yet: (job, content address).
    pub fn standings_behind(&self) -> Vec<(String, Hash)> {
        lock(&self.jobs).iter().filter_map(|(id, rt)| rt.standing_wanted.map(|h| (id.clone(), h))).collect()
    }

    /// Restores the standings `hash` names (fetched: `bytes`) into job `job`, as the supervisor
    /// that recorded them had them: a contributor quarantined there stays quarantined here when
    /// this node takes the job over. Returns how many contributors it names.
    pub fn install_standing(&self, job: &str, hash: &Hash, bytes: &[u8]) -> Result<usize, String> {
        if bytes.len() > MAX_STANDING_BYTES {
            return Err(format!("{} bytes, over {MAX_STANDING_BYTES}", bytes.len()));
        }
        if Hash::of_artifact(bytes) != *hash {
            return Err(format!("the bytes hash to {}, not {hash}", Hash::of_artifact(bytes)));
        }
        let v: Value = serde_json::from_slice(bytes).map_err(|e| format!("not JSON: {e}"))?;
        let saved = saved_from(&v);
        let mut jobs = lock(&self.jobs);
        let rt = jobs.get_mut(job).ok_or_else(|| format!("no job {job:?}"))?;
        if rt.standing_wanted != Some(*hash) {
            return Err("no longer wanted (a newer round, or this node supervises now)".into());
        }
        let n = saved.len();
        rt.job.restore(saved);
        rt.standing_seen = *hash;
        rt.standing_wanted = None;
        let text = saved_json(&rt.job.saved()).to_string();
        if let Err(e) = write_durably(&standing_path(&self.dir, job), text.as_bytes()) {
            tracing::error!(job, error = %e, "cannot save the contributors' standing");
        }
        Ok(n)
    }
}
