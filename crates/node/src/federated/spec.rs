//! The registered domain a federated job becomes, and the supervisor's spec of it.

use super::*;

/// DOIN as an amount (rounded down to base units).
pub(super) fn doin(v: f64) -> Amount {
    Amount((v * 1e9).max(0.0) as u128)
}

/// The federated domain a job registers: the training recipe as its parameters (the learning
/// rate and batch contributors use), accuracy as its metric, the job's rule and round length,
/// `pool_per_round` paid per round, declared compute capped at `max_wait`.
pub fn spec_of(job: &FederatedJobConfig, target_block_time_s: f64) -> Result<DomainSpec, String> {
    let name = |s: &str| BoundedString::new(s).map_err(|e| e.to_string());
    let metric = |v: f64| Metric::from_f64(v).ok_or_else(|| format!("{v} is out of range"));
    let round_blocks = (job.max_wait / target_block_time_s.max(0.001)).ceil().clamp(1.0, 1e6) as u32;
    let spec = DomainSpec {
        id: name(&job.job_id)?,
        metric: name("accuracy")?,
        direction: Direction::Maximize,
        params: BoundedVec::try_from_vec(vec![
            ParamSpec {
                name: name("lr")?,
                kind: ParamKind::LogContinuous { min: metric(1e-6)?, max: metric(10.0)? },
            },
            ParamSpec { name: name("batch")?, kind: ParamKind::Integer { min: 1, max: 1024 } },
        ])
        .map_err(|e| e.to_string())?,
        evaluation: EvaluationSpec {
            data: DataSource::HeldOut,
            recipe: BoundedString::new(format!("federated:{}", job.model)).map_err(|e| e.to_string())?,
            retrain: true,
        },
        tolerance: metric(0.01)?,
        acceptance_tolerance: Metric(0),
        relative_tolerance_ppm: 0,
        relative_acceptance_ppm: 0,
        scale: Metric(FIXED_ONE),
        baseline: Metric(0),
        weight: FIXED_ONE as u64,
        quorum: QuorumRule::default(),
        target: None,
        limits: ResourceLimits {
            max_wall_ms: (job.max_wait * 1000.0) as u64,
            max_epochs: 1,
            max_memory_mb: 2048,
        },
        bounty_per_accept: doin(job.pool_per_round),
        kind: DomainKind::Federated {
            aggregation: job.aggregation,
            round_blocks,
            initial_model: initial_hash(job)?,
        },
        reproducibility: None,
    };
    spec.validate().map_err(|e| e.to_string())?;
    Ok(spec)
}

/// The escrow a job registers with (DOIN → amount).
pub fn bounty_of(job: &FederatedJobConfig) -> Amount {
    doin(job.bounty)
}

/// The supervisor's spec of job `c` on `data`.
pub(super) fn job_spec(c: &FederatedJobConfig, data: &Tabular, domain: DomainId) -> JobSpec {
    let mut sizes = vec![data.features];
    sizes.extend(&c.hidden);
    sizes.push(data.classes);
    JobSpec {
        domain,
        rule: Rule::from(c.aggregation),
        sizes,
        min_updates: c.min_updates,
        max_updates: c.max_updates,
        max_samples: data.rows() as u32,
        deadline_k: c.deadline_k,
        min_wait_ms: (c.min_wait * 1000.0) as u64,
        max_wait_ms: (c.max_wait * 1000.0) as u64,
        lr: c.lr as f32,
        batch: c.batch,
        seed: c.seed,
    }
}

/// The hash of job `c`'s initial model (its model's shape on the digits data, seeded by
/// `seed`): registered with the domain, so round 0 starts from it whoever supervises.
pub fn initial_hash(c: &FederatedJobConfig) -> Result<Hash, String> {
    let domain = DomainId::new(c.job_id.clone()).map_err(|e| e.to_string())?;
    let spec = job_spec(c, &doin_ml::data::digits()?, domain);
    Ok(Job::new(spec, 0, None, 0)?.model().2)
}

/// The job's initial model (round 0's base, seeded by its spec).
pub(super) fn initial_model(spec: &JobSpec) -> Option<Vec<f32>> {
    Job::new(spec.clone(), 0, None, 0).ok().map(|j| j.model().1.to_vec())
}
