//! The pull task queue (`/tasks/pending`, `/tasks/claim`, `/tasks/complete`): an external
//! evaluator process (for example a GPU box running a Python plugin) takes this node's quorum
//! assignments. Verification comes before inference; a claim holds a lease that returns the task
//! to the queue when it expires; the node signs the vote itself, for its own account only, when a
//! claim is completed. Claims and completions need the node's API key.

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// What a task asks for; lower sorts first (served first).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskKind {
    /// Re-measure a revealed candidate for a quorum.
    Verification,
    /// Answer an inference request.
    Inference,
}

/// One unit of work.
#[derive(Clone, Debug, Serialize)]
pub struct Task {
    /// Id (the commit id and round for verifications).
    pub task_id: String,
    /// Kind.
    pub kind: TaskKind,
    /// Domain id.
    pub domain: String,
    /// The commit being verified.
    pub commit: String,
    /// Quorum round (0 first, 1 escalation).
    pub round: u8,
    /// Parameters in the domain's units.
    pub params: Vec<f64>,
    /// The evaluator seed (hex): the data must be derived from it.
    pub seed: String,
    /// Resource limits.
    pub limits: Value,
    /// Seconds left on the current lease (claimed tasks).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lease_s: Option<f64>,
    /// Inference: the request's inputs, for the champion's model (`params`) to answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inputs: Option<Value>,
}

/// A finished task.
#[derive(Clone, Debug, Deserialize)]
pub struct Completion {
    /// The task.
    pub task_id: String,
    /// The lease token the claim returned.
    pub lease: String,
    /// The measured performance (verification tasks).
    #[serde(default)]
    pub performance: Option<f64>,
    /// The answer (inference tasks).
    #[serde(default)]
    pub result: Option<Value>,
    /// Extra metrics.
    #[serde(default)]
    pub metrics: BTreeMap<String, f64>,
}

#[derive(Debug)]
struct Entry {
    task: Task,
    claimed: Option<(String, Instant)>,
    enqueued: Instant,
}

/// Why a queue operation failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TaskError {
    /// No such task (finished, expired or never queued).
    Unknown(String),
    /// The lease is not the current one (expired and claimed again, or wrong).
    Lease(String),
    /// The queue is full.
    Full,
}

/// The queue, bounded.
#[derive(Debug)]
pub struct TaskQueue {
    entries: BTreeMap<String, Entry>,
    lease: Duration,
    cap: usize,
    claimed_total: u64,
    completed_total: u64,
    next_lease: u64,
    /// Finished inference answers by task id (newest [`MAX_RESULTS`] kept).
    results: BTreeMap<String, (u64, Value)>,
    next_result: u64,
}

/// Inference answers kept for `GET /inference/{id}`.
pub const MAX_RESULTS: usize = 1024;

/// Where an inference request stands.
#[derive(Clone, Debug, PartialEq)]
pub enum InferenceState {
    /// Waiting for a worker.
    Pending,
    /// A worker holds it.
    Claimed,
    /// Answered.
    Done(Value),
}

impl TaskQueue {
    /// A queue of at most `cap` tasks whose claims last `lease`.
    pub fn new(cap: usize, lease: Duration) -> Self {
        Self {
            entries: BTreeMap::new(),
            lease,
            cap,
            claimed_total: 0,
            completed_total: 0,
            next_lease: 1,
            results: BTreeMap::new(),
            next_result: 0,
        }
    }

    /// Adds a task (no-op if it is queued already).
    pub fn push(&mut self, task: Task) -> Result<(), TaskError> {
        if self.entries.contains_key(&task.task_id) {
            return Ok(());
        }
        if self.entries.len() >= self.cap {
            return Err(TaskError::Full);
        }
        self.entries.insert(task.task_id.clone(), Entry { task, claimed: None, enqueued: Instant::now() });
        Ok(())
    }

    /// The kind of a queued task.
    pub fn kind_of(&self, task_id: &str) -> Option<TaskKind> {
        self.entries.get(task_id).map(|e| e.task.kind)
    }

    /// Drops a task (its commit was certified or expired).
    pub fn remove(&mut self, task_id: &str) {
        self.entries.remove(task_id);
    }

    fn expire(&mut self) {
        let lease = self.lease;
        for e in self.entries.values_mut() {
            if e.claimed.as_ref().is_some_and(|(_, at)| at.elapsed() >= lease) {
                e.claimed = None;
            }
        }
    }

    /// Unclaimed tasks, in the order they will be served.
    pub fn pending(&mut self) -> Vec<Task> {
        self.expire();
        let mut v: Vec<&Entry> = self.entries.values().filter(|e| e.claimed.is_none()).collect();
        v.sort_by_key(|e| (e.task.kind, e.enqueued));
        v.into_iter().map(|e| e.task.clone()).collect()
    }

    /// Claims the next task (verification first, oldest first); returns it with its lease token.
    pub fn claim(&mut self, kinds: Option<&[TaskKind]>) -> Option<(Task, String)> {
        self.expire();
        let lease_len = self.lease;
        let token = format!("lease-{}", self.next_lease);
        let entry = self
            .entries
            .values_mut()
            .filter(|e| e.claimed.is_none() && kinds.is_none_or(|k| k.contains(&e.task.kind)))
            .min_by_key(|e| (e.task.kind, e.enqueued))?;
        entry.claimed = Some((token.clone(), Instant::now()));
        self.next_lease += 1;
        self.claimed_total += 1;
        let mut task = entry.task.clone();
        task.lease_s = Some(lease_len.as_secs_f64());
        Some((task, token))
    }

    /// Completes a claimed task; returns it so the node can sign the vote.
    pub fn complete(&mut self, task_id: &str, lease: &str) -> Result<Task, TaskError> {
        self.expire();
        let entry = self.entries.get(task_id).ok_or_else(|| TaskError::Unknown(task_id.to_owned()))?;
        match &entry.claimed {
            Some((token, _)) if token == lease => {}
            _ => return Err(TaskError::Lease(format!("lease {lease:?} does not hold task {task_id}"))),
        }
        self.completed_total += 1;
        self.entries.remove(task_id).map(|e| e.task).ok_or_else(|| TaskError::Unknown(task_id.to_owned()))
    }

    /// Keeps an inference answer (the oldest goes when [`MAX_RESULTS`] are kept).
    pub fn store_result(&mut self, task_id: &str, result: Value) {
        if self.results.len() >= MAX_RESULTS
            && let Some(oldest) = self.results.iter().min_by_key(|(_, (n, _))| *n).map(|(k, _)| k.clone())
        {
            self.results.remove(&oldest);
        }
        self.next_result += 1;
        self.results.insert(task_id.to_owned(), (self.next_result, result));
    }

    /// An inference request's state; `None` if unknown (or its answer was dropped).
    pub fn inference(&mut self, task_id: &str) -> Option<InferenceState> {
        self.expire();
        if let Some((_, v)) = self.results.get(task_id) {
            return Some(InferenceState::Done(v.clone()));
        }
        self.entries
            .get(task_id)
            .filter(|e| e.task.kind == TaskKind::Inference)
            .map(|e| if e.claimed.is_some() { InferenceState::Claimed } else { InferenceState::Pending })
    }

    /// `(pending, claimed, completed)` counts.
    pub fn counts(&mut self) -> (usize, usize, u64) {
        self.expire();
        let claimed = self.entries.values().filter(|e| e.claimed.is_some()).count();
        (self.entries.len() - claimed, claimed, self.completed_total)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(id: &str, kind: TaskKind) -> Task {
        Task {
            task_id: id.into(),
            kind,
            domain: "quadratic".into(),
            commit: id.into(),
            round: 0,
            params: vec![1.0],
            seed: "00".into(),
            limits: Value::Null,
            lease_s: None,
            inputs: None,
        }
    }

    #[test]
    fn verification_first_leases_expire_and_completion_needs_the_lease() {
        let mut q = TaskQueue::new(3, Duration::from_millis(50));
        q.push(task("inf", TaskKind::Inference)).unwrap();
        q.push(task("v1", TaskKind::Verification)).unwrap();
        q.push(task("v2", TaskKind::Verification)).unwrap();
        assert_eq!(q.push(task("v3", TaskKind::Verification)), Err(TaskError::Full));
        let order: Vec<String> = q.pending().into_iter().map(|t| t.task_id).collect();
        assert_eq!(order, ["v1", "v2", "inf"]);
        let (t, lease) = q.claim(None).unwrap();
        assert_eq!(t.task_id, "v1");
        assert_eq!(q.counts(), (2, 1, 0));
        // The lease runs out: the task is pending again and the old lease is void.
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(q.counts(), (3, 0, 0));
        let (again, lease2) = q.claim(Some(&[TaskKind::Verification])).unwrap();
        assert_eq!(again.task_id, "v1");
        assert!(matches!(q.complete("v1", &lease), Err(TaskError::Lease(_))));
        assert_eq!(q.complete("v1", &lease2).unwrap().task_id, "v1");
        assert!(matches!(q.complete("v1", &lease2), Err(TaskError::Unknown(_))));
        assert_eq!(q.counts(), (2, 0, 1));
        // Only inference left once verifications are taken.
        let (_, _) = q.claim(Some(&[TaskKind::Verification])).unwrap();
        assert!(q.claim(Some(&[TaskKind::Verification])).is_none());
        assert_eq!(q.claim(None).unwrap().0.task_id, "inf");
    }
}
