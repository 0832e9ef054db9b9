//! The inference queue: requests wait here for the node's one inference slot. They are ordered
//! by [`Priority`] (the operator's, then paid, then free; arrival order within a class) and
//! each carries a time to start by, past which it is answered `expired` instead of run. The
//! worker takes the first waiting request and every other one for the same model, up to
//! [`MAX_BATCH_ROWS`] rows, and runs them as one forward pass: requests that arrive while a
//! batch runs are answered together by the next. One worker, one pass at a time: inference
//! takes at most one core and never the evaluation slots verification runs on.

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Instant,
};

use doin_api::inference::ServeError;
use doin_optimize::domain::{Domain, EvalError, Inference};
use doin_primitives::Hash;
use tokio::sync::{Notify, oneshot};

/// Most requests waiting; one more is told the node is busy.
pub const MAX_WAITING: usize = 256;
/// Most rows one forward pass takes (several requests' together).
pub const MAX_BATCH_ROWS: usize = 1024;

/// Who goes first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Priority {
    /// A request without payment.
    Free,
    /// A request paid through a channel.
    Paid,
    /// A request with the node's API key (its operator).
    Operator,
}

/// What a request gets back: its rows and the model's answer to them.
pub type Outcome = Result<(Vec<Vec<f64>>, Inference), ServeError>;

/// One request waiting.
pub(crate) struct Job {
    pub priority: Priority,
    pub start_by: Instant,
    pub domain: Arc<dyn Domain>,
    pub artifact: Hash,
    pub bytes: Arc<Vec<u8>>,
    pub rows: Vec<Vec<f64>>,
    pub reply: oneshot::Sender<Outcome>,
    seq: u64,
}

/// Counters of the queue (for `/metrics`).
#[derive(Debug, Default)]
pub struct QueueStats {
    /// Forward passes run.
    pub batches: AtomicU64,
    /// Requests answered by them.
    pub requests: AtomicU64,
    /// Requests answered `expired` (not started in time).
    pub expired: AtomicU64,
    /// Requests refused because the queue was full.
    pub refused: AtomicU64,
}

/// The queue.
#[derive(Default)]
#[allow(missing_debug_implementations)]
pub struct Queue {
    waiting: Mutex<Vec<Job>>,
    wake: Notify,
    seq: AtomicU64,
    /// Its counters.
    pub stats: QueueStats,
}

impl Queue {
    /// Adds a request; a full queue refuses it.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn push(
        &self,
        priority: Priority,
        start_by: Instant,
        domain: Arc<dyn Domain>,
        artifact: Hash,
        bytes: Arc<Vec<u8>>,
        rows: Vec<Vec<f64>>,
    ) -> Result<oneshot::Receiver<Outcome>, ServeError> {
        let (reply, rx) = oneshot::channel();
        let seq = self.seq.fetch_add(1, Ordering::Relaxed);
        {
            let mut waiting = self.waiting.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            if waiting.len() >= MAX_WAITING {
                self.stats.refused.fetch_add(1, Ordering::Relaxed);
                return Err(ServeError::Busy(format!("{MAX_WAITING} inference requests are waiting")));
            }
            waiting.push(Job { priority, start_by, domain, artifact, bytes, rows, reply, seq });
        }
        self.wake.notify_one();
        Ok(rx)
    }

    /// Requests waiting now.
    pub fn waiting(&self) -> usize {
        self.waiting.lock().unwrap_or_else(std::sync::PoisonError::into_inner).len()
    }

    /// The next batch at `now`: the first request by priority and arrival, and every other
    /// waiting for the same model while the rows fit; requests past their start-by time are
    /// returned apart, to be told so.
    pub(crate) fn take(&self, now: Instant) -> (Vec<Job>, Vec<Job>) {
        let mut waiting = self.waiting.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let (expired, mut live): (Vec<Job>, Vec<Job>) = waiting.drain(..).partition(|j| j.start_by < now);
        live.sort_by_key(|j| (std::cmp::Reverse(j.priority), j.seq));
        let mut batch: Vec<Job> = Vec::new();
        let mut rows = 0;
        for job in live {
            let fits = batch.first().is_none_or(|first| {
                first.artifact == job.artifact
                    && first.domain.id() == job.domain.id()
                    && rows + job.rows.len() <= MAX_BATCH_ROWS
            });
            if fits {
                rows += job.rows.len();
                batch.push(job);
            } else {
                waiting.push(job);
            }
        }
        (expired, batch)
    }
}

/// Runs `domain` on every job's rows as one pass and splits the answer; when the pass fails
/// and there are several jobs (one bad row must not fail the others), each job runs alone.
fn run_batch(
    domain: &dyn Domain,
    artifact: &Hash,
    bytes: &[u8],
    jobs: &[Vec<Vec<f64>>],
) -> Vec<Result<Inference, EvalError>> {
    if let [rows] = jobs {
        return vec![domain.infer_known(artifact, bytes, rows)];
    }
    let all: Vec<Vec<f64>> = jobs.iter().flatten().cloned().collect();
    match domain.infer_known(artifact, bytes, &all) {
        Ok(answer) if answer.outputs.len() == all.len() => {
            let mut at = 0;
            jobs.iter()
                .map(|rows| {
                    let range = at..at + rows.len();
                    at += rows.len();
                    Ok(Inference {
                        outputs: answer.outputs[range.clone()].to_vec(),
                        labels: answer.labels.as_ref().map(|l| l[range].to_vec()),
                    })
                })
                .collect()
        }
        _ => jobs.iter().map(|rows| domain.infer_known(artifact, bytes, rows)).collect(),
    }
}

/// The worker: answers batches until the process ends.
pub(crate) async fn work(queue: Arc<Queue>) {
    loop {
        let (expired, batch) = queue.take(Instant::now());
        for job in expired {
            queue.stats.expired.fetch_add(1, Ordering::Relaxed);
            let _ = job.reply.send(Err(ServeError::Expired(
                "the request waited past its expiry for the inference slot".into(),
            )));
        }
        let Some(first) = batch.first() else {
            queue.wake.notified().await;
            continue;
        };
        let (domain, artifact, bytes) = (first.domain.clone(), first.artifact, first.bytes.clone());
        let (replies, rows): (Vec<_>, Vec<_>) = batch.into_iter().map(|j| (j.reply, j.rows)).unzip();
        let done = tokio::task::spawn_blocking(move || {
            let answers = run_batch(domain.as_ref(), &artifact, &bytes, &rows);
            (rows, answers)
        })
        .await;
        queue.stats.batches.fetch_add(1, Ordering::Relaxed);
        queue.stats.requests.fetch_add(replies.len() as u64, Ordering::Relaxed);
        match done {
            Ok((rows, answers)) => {
                for ((reply, rows), answer) in replies.into_iter().zip(rows).zip(answers) {
                    let _ = reply.send(answer.map(|a| (rows, a)).map_err(|e| match e {
                        EvalError::BadParams(why) => ServeError::BadInput(why),
                        other => ServeError::Unavailable(other.to_string()),
                    }));
                }
            }
            Err(e) => {
                for reply in replies {
                    let _ = reply.send(Err(ServeError::Unavailable(format!("inference panicked: {e}"))));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use doin_optimize::domain::{Budget, Measurement};
    use doin_optimize::{Space, Value};

    use super::*;

    /// A model that answers each row with its sum, and refuses rows with a negative number.
    struct Summer(Space, std::sync::atomic::AtomicUsize);

    impl Domain for Summer {
        fn id(&self) -> &str {
            "summer"
        }
        fn space(&self) -> &Space {
            &self.0
        }
        fn higher_is_better(&self) -> bool {
            true
        }
        fn evaluate(&self, _: &[Value], _: Option<&Hash>, _: Budget) -> Result<Measurement, EvalError> {
            Err(EvalError::Unsupported("none".into()))
        }
        fn infer(&self, _: &[u8], rows: &[Vec<f64>]) -> Result<Inference, EvalError> {
            self.1.fetch_add(1, Ordering::Relaxed);
            if rows.iter().flatten().any(|x| *x < 0.0) {
                return Err(EvalError::BadParams("a negative input".into()));
            }
            Ok(Inference { outputs: rows.iter().map(|r| vec![r.iter().sum()]).collect(), labels: None })
        }
    }

    fn summer() -> Arc<Summer> {
        Arc::new(Summer(Space { dims: vec![] }, Default::default()))
    }

    fn push(
        q: &Queue,
        d: &Arc<Summer>,
        p: Priority,
        model: u8,
        rows: Vec<Vec<f64>>,
    ) -> oneshot::Receiver<Outcome> {
        let start_by = Instant::now() + Duration::from_secs(60);
        q.push(p, start_by, d.clone(), Hash([model; 32]), Arc::new(vec![model]), rows).unwrap()
    }

    #[test]
    fn the_operator_then_paid_then_free_go_first_and_one_model_is_batched() {
        let (q, d) = (Queue::default(), summer());
        let _free = push(&q, &d, Priority::Free, 1, vec![vec![1.0]]);
        let _other = push(&q, &d, Priority::Paid, 2, vec![vec![2.0]]);
        let _paid = push(&q, &d, Priority::Paid, 1, vec![vec![3.0]]);
        let _op = push(&q, &d, Priority::Operator, 1, vec![vec![4.0]]);
        let (expired, batch) = q.take(Instant::now());
        assert!(expired.is_empty());
        // Model 1's three requests, the operator's first; model 2's waits for the next pass.
        let firsts: Vec<f64> = batch.iter().map(|j| j.rows[0][0]).collect();
        assert_eq!(firsts, [4.0, 3.0, 1.0]);
        assert_eq!(q.waiting(), 1);
        let (_, next) = q.take(Instant::now());
        assert_eq!(next[0].rows, vec![vec![2.0]]);
    }

    #[test]
    fn a_batch_stops_at_its_row_limit_and_expired_requests_are_set_apart() {
        let (q, d) = (Queue::default(), summer());
        let _a = push(&q, &d, Priority::Free, 1, vec![vec![0.0]; MAX_BATCH_ROWS - 1]);
        let _b = push(&q, &d, Priority::Free, 1, vec![vec![0.0]; 2]);
        let late = Instant::now() + Duration::from_secs(120);
        let (expired, batch) = q.take(late);
        assert_eq!((expired.len(), batch.len()), (2, 0), "both past their start-by time");
        let _a = push(&q, &d, Priority::Free, 1, vec![vec![0.0]; MAX_BATCH_ROWS - 1]);
        let _b = push(&q, &d, Priority::Free, 1, vec![vec![0.0]; 2]);
        let _c = push(&q, &d, Priority::Free, 1, vec![vec![0.0]; 1]);
        let (_, batch) = q.take(Instant::now());
        let sizes: Vec<usize> = batch.iter().map(|j| j.rows.len()).collect();
        assert_eq!(sizes, [MAX_BATCH_ROWS - 1, 1], "the 2-row request does not fit; the 1-row one does");
        assert_eq!(q.waiting(), 1);
    }

    #[test]
    fn a_full_queue_refuses() {
        let (q, d) = (Queue::default(), summer());
        let _held: Vec<_> =
            (0..MAX_WAITING).map(|_| push(&q, &d, Priority::Free, 1, vec![vec![0.0]])).collect();
        let e = q
            .push(
                Priority::Operator,
                Instant::now(),
                d.clone(),
                Hash([1; 32]),
                Arc::new(vec![]),
                vec![vec![0.0]],
            )
            .err()
            .unwrap();
        assert!(matches!(e, ServeError::Busy(_)), "{e:?}");
        assert_eq!(q.stats.refused.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn a_batch_answers_each_request_its_own_rows_and_a_bad_row_fails_only_its_request() {
        let d = summer();
        let jobs = vec![vec![vec![1.0, 2.0]], vec![vec![3.0], vec![4.0, 5.0]]];
        let answers = run_batch(d.as_ref(), &Hash::ZERO, &[], &jobs);
        assert_eq!(answers[0].as_ref().unwrap().outputs, vec![vec![3.0]]);
        assert_eq!(answers[1].as_ref().unwrap().outputs, vec![vec![3.0], vec![9.0]]);
        assert_eq!(d.1.load(Ordering::Relaxed), 1, "one pass for both");
        let jobs = vec![vec![vec![1.0]], vec![vec![-1.0]]];
        let answers = run_batch(d.as_ref(), &Hash::ZERO, &[], &jobs);
        assert_eq!(answers[0].as_ref().unwrap().outputs, vec![vec![1.0]]);
        assert!(matches!(answers[1], Err(EvalError::BadParams(_))));
    }

    #[tokio::test]
    async fn the_worker_answers_requests_that_arrived_together_in_one_pass() {
        let (q, d) = (Arc::new(Queue::default()), summer());
        let rxs: Vec<_> = (0..5).map(|i| push(&q, &d, Priority::Free, 1, vec![vec![f64::from(i)]])).collect();
        tokio::spawn(work(q.clone()));
        for (i, rx) in rxs.into_iter().enumerate() {
            let (rows, answer) = rx.await.unwrap().unwrap();
            assert_eq!(rows, vec![vec![i as f64]]);
            assert_eq!(answer.outputs, vec![vec![i as f64]]);
        }
        assert_eq!(q.stats.batches.load(Ordering::Relaxed), 1);
        assert_eq!(q.stats.requests.load(Ordering::Relaxed), 5);
        // Later requests wake the worker again.
        let rx = push(&q, &d, Priority::Free, 1, vec![vec![7.0]]);
        assert_eq!(rx.await.unwrap().unwrap().1.outputs, vec![vec![7.0]]);
    }
}
