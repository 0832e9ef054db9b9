//! Asynchronous inference jobs (`POST /inference` with `"async": true`, then
//! `GET /inference/{task_id}`): each job's state by an id drawn at random (another client cannot
//! guess it and read the answer), kept [`KEEP`] after it finished; at most [`MAX_JOBS`] are
//! held, finished ones evicted oldest first, and a new job is refused while every one held is
//! still pending.

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use doin_api::inference::ServeError;
use serde_json::{Value, json};

/// Most jobs held.
pub const MAX_JOBS: usize = 1024;
/// How long a finished job's answer is kept.
pub const KEEP: Duration = Duration::from_secs(600);

/// A job's state.
#[derive(Debug, Clone)]
pub enum JobState {
    /// Waiting for or running on the inference slot.
    Pending,
    /// Answered (the same body a synchronous request gets).
    Done(Value),
    /// Not answered: why (`expired` when it waited past its expiry).
    Failed(ServeError),
}

/// The jobs.
#[derive(Debug, Default)]
pub struct Jobs {
    jobs: HashMap<String, (Instant, JobState)>,
}

impl Jobs {
    /// A new pending job's id, or busy when the table is full of pending jobs.
    pub fn open(&mut self, now: Instant) -> Result<String, ServeError> {
        self.jobs.retain(|_, (at, st)| matches!(st, JobState::Pending) || now.duration_since(*at) < KEEP);
        if self.jobs.len() >= MAX_JOBS {
            let oldest = self
                .jobs
                .iter()
                .filter(|(_, (_, st))| !matches!(st, JobState::Pending))
                .min_by_key(|(_, (at, _))| *at)
                .map(|(id, _)| id.clone());
            match oldest {
                Some(id) => {
                    self.jobs.remove(&id);
                }
                None => return Err(ServeError::Busy(format!("{MAX_JOBS} asynchronous jobs are pending"))),
            }
        }
        let id = format!("job-{:032x}", rand::random::<u128>());
        self.jobs.insert(id.clone(), (now, JobState::Pending));
        Ok(id)
    }

    /// Records a job's end.
    pub fn finish(&mut self, id: &str, state: JobState, now: Instant) {
        if let Some(slot) = self.jobs.get_mut(id) {
            *slot = (now, state);
        }
    }

    /// `{task_id, status, result, error?, detail?}` of job `id`.
    pub fn view(&self, id: &str) -> Option<Value> {
        let (_, state) = self.jobs.get(id)?;
        Some(match state {
            JobState::Pending => json!({ "task_id": id, "status": "pending", "result": null }),
            JobState::Done(v) => json!({ "task_id": id, "status": "done", "result": v }),
            JobState::Failed(e) => {
                let status = if matches!(e, ServeError::Expired(_)) { "expired" } else { "failed" };
                let (_, error, detail) = e.parts();
                json!({ "task_id": id, "status": status, "result": null, "error": error, "detail": detail })
            }
        })
    }

    /// Jobs held, pending ones.
    pub fn counts(&self) -> (usize, usize) {
        (self.jobs.len(), self.jobs.values().filter(|(_, s)| matches!(s, JobState::Pending)).count())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jobs_are_kept_a_while_bounded_and_never_evicted_while_pending() {
        let mut jobs = Jobs::default();
        let t0 = Instant::now();
        let a = jobs.open(t0).unwrap();
        let b = jobs.open(t0).unwrap();
        assert_ne!(a, b);
        assert_eq!(jobs.view(&a).unwrap()["status"], "pending");
        jobs.finish(&a, JobState::Done(json!({ "outputs": [[1.0]] })), t0);
        jobs.finish(&b, JobState::Failed(ServeError::Expired("late".into())), t0);
        assert_eq!(jobs.view(&a).unwrap()["result"]["outputs"], json!([[1.0]]));
        assert_eq!(jobs.view(&b).unwrap()["status"], "expired");
        assert!(jobs.view("job-0").is_none());
        // After KEEP a finished job is gone; a pending one stays.
        let c = jobs.open(t0).unwrap();
        let _ = jobs.open(t0 + KEEP + Duration::from_secs(1)).unwrap();
        assert!(jobs.view(&a).is_none() && jobs.view(&b).is_none());
        assert_eq!(jobs.view(&c).unwrap()["status"], "pending");
        // Full of pending jobs: refused.
        let mut full = Jobs::default();
        for _ in 0..MAX_JOBS {
            full.open(t0).unwrap();
        }
        assert!(matches!(full.open(t0), Err(ServeError::Busy(_))));
        assert_eq!(full.counts(), (MAX_JOBS, MAX_JOBS));
    }
}
