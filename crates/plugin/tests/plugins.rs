//! The plugin host against real Python processes: misbehaving plugins are killed, reported and
//! restarted while the host keeps working; the SDK's examples (a DEAP optimizer, a NumPy/PyTorch
//! domain) run through the host.

use std::{
    path::PathBuf,
    process::Command,
    time::{Duration, Instant},
};

use doin_optimize::{
    Ga, GaConfig, Optimizer, Value,
    domain::{Budget, Domain, EvalError, Quadratic},
    driver::{NoHooks, RunConfig, run},
};
use doin_plugin::{
    PluginClient, PluginDomain, PluginError, PluginHost, PluginLimits, PluginOptimizer, PluginSpec,
};
use serde_json::json;

/// This package's directory: cargo's runtime `CARGO_MANIFEST_DIR` first (a test binary built in
/// another checkout of a shared target directory embeds that checkout's path), the build-time
/// one otherwise.
fn manifest_dir() -> PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")), PathBuf::from)
}

/// Plugin tests share this process (`cargo test` runs them as threads): `kill_all` kills every
/// plugin group in it, so its test runs alone and the others hold the lock shared.
static PLUGINS: std::sync::RwLock<()> = std::sync::RwLock::new(());

fn shared() -> std::sync::RwLockReadGuard<'static, ()> {
    PLUGINS.read().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn exclusive() -> std::sync::RwLockWriteGuard<'static, ()> {
    PLUGINS.write().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn repo() -> PathBuf {
    manifest_dir().join("../..")
}

/// Python with the given modules, or `None` (a failure under CI, where they are installed).
fn python_with(modules: &[&str]) -> Option<String> {
    let probe = format!("import {}", if modules.is_empty() { "sys".into() } else { modules.join(", ") });
    let ok = Command::new("python3").args(["-c", &probe]).output().is_ok_and(|o| o.status.success());
    if !ok {
        // Under CI (`CI=true`) or as root, where `.ci/run` installs it, a missing python fails.
        let root = Command::new("id")
            .arg("-u")
            .output()
            .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
        assert!(
            std::env::var_os("CI").is_none() && !root,
            "CI (and a root run) must provide python3 with {modules:?}"
        );
        eprintln!("skipping: python3 with {modules:?} not available");
        return None;
    }
    Some("python3".into())
}

fn limits() -> PluginLimits {
    PluginLimits {
        call_timeout: Duration::from_secs(2),
        max_reply_bytes: 64 * 1024,
        max_log_lines: 50,
        max_rss_bytes: 300 << 20,
        restart_backoff: Duration::from_millis(200),
        max_backoff: Duration::from_millis(500),
    }
}

fn misbehaving(mode: &str, marker: Option<&std::path::Path>) -> PluginSpec {
    let script = manifest_dir().join("tests/fixtures/misbehave.py");
    let mut command = vec!["python3".to_owned(), script.display().to_string(), mode.to_owned()];
    if let Some(m) = marker {
        command.push(m.display().to_string());
    }
    PluginSpec { limits: limits(), ..PluginSpec::new(format!("misbehave-{mode}"), command) }
}

fn budget() -> Budget {
    Budget::new(Duration::from_secs(2), 10)
}

/// The plugin misbehaves once: the call fails with the expected fault, the process is
/// restarted, the next call succeeds, and the incident is recorded.
fn faults_once_then_recovers(mode: &str, expect: impl Fn(&PluginError) -> bool) {
    if python_with(&[]).is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("marker");
    let mut host = PluginHost::start(misbehaving(mode, Some(&marker)), json!({ "protocol": 1 })).unwrap();
    let first_pid = host.pid();
    let started = Instant::now();
    let err = host.call("evaluate", json!({ "params": [0.5] })).unwrap_err();
    assert!(expect(&err), "{mode}: unexpected error {err:?}");
    assert!(err.is_fault());
    assert!(started.elapsed() < Duration::from_secs(10), "{mode}: the host was stuck");
    let ok = host.call("evaluate", json!({ "params": [0.5] })).unwrap();
    assert_eq!(ok["performance"], 0.25);
    assert_eq!(host.restarts(), 1, "{mode}");
    assert_ne!(host.pid(), first_pid, "{mode}: a new process serves");
    let incidents: Vec<_> = host.incidents().collect();
    assert_eq!(incidents.len(), 1);
    assert_eq!(&incidents[0].error, &err);
}

#[test]
fn a_hanging_plugin_is_killed_at_its_time_limit() {
    let _plugins = shared();
    faults_once_then_recovers("hang", |e| matches!(e, PluginError::Timeout { .. }));
}

#[test]
fn a_crashing_plugin_is_reported_with_its_stderr() {
    let _plugins = shared();
    faults_once_then_recovers(
        "crash",
        |e| matches!(e, PluginError::Exited { status, stderr, .. } if status.contains('3') && stderr.contains("about to crash")),
    );
}

#[test]
fn a_flooding_plugin_is_killed() {
    let _plugins = shared();
    faults_once_then_recovers("flood", |e| matches!(e, PluginError::Flood { .. }));
}

#[test]
fn garbage_and_wrong_ids_are_malformed_replies() {
    let _plugins = shared();
    faults_once_then_recovers(
        "garbage",
        |e| matches!(e, PluginError::Malformed { reason, .. } if reason.contains("not JSON")),
    );
    faults_once_then_recovers(
        "wrong_id",
        |e| matches!(e, PluginError::Malformed { reason, .. } if reason.contains("id")),
    );
}

#[test]
fn an_oversized_reply_is_rejected() {
    let _plugins = shared();
    faults_once_then_recovers("oversized", |e| matches!(e, PluginError::Oversized { limit: 65536, .. }));
}

#[test]
fn a_plugin_over_its_memory_limit_is_killed() {
    let _plugins = shared();
    faults_once_then_recovers(
        "memory",
        |e| matches!(e, PluginError::Memory { limit_mb: 300, rss_mb, .. } if *rss_mb > 300),
    );
}

#[test]
fn a_plugin_error_reply_is_not_a_fault_and_repeated_faults_back_off() {
    let _plugins = shared();
    if python_with(&[]).is_none() {
        return;
    }
    let mut host = PluginHost::start(misbehaving("error", None), json!({ "protocol": 1 })).unwrap();
    let e = host.call("evaluate", json!({})).unwrap_err();
    assert!(matches!(&e, PluginError::Remote { message, .. } if message == "no data for this seed"), "{e:?}");
    assert_eq!(host.restarts(), 0, "an error reply keeps the process");

    // Always crashing: the first fault restarts at once, later ones after a backoff that doubles
    // (200 ms, 400 ms, capped at 500 ms here); calls in between are refused at once, uncounted.
    let l = limits();
    let backoffs: Vec<u128> = (1..6).map(|f| PluginHost::backoff_after(&l, f).as_millis()).collect();
    assert_eq!(backoffs, [0, 200, 400, 500, 500]);
    // A name of its own: the counters are per name and per process, shared with other tests.
    let spec = PluginSpec { name: "backoff-crash".into(), ..misbehaving("crash", None) };
    let mut host = PluginHost::start(spec, json!({ "protocol": 1 })).unwrap();
    let name = host.name().to_owned();
    assert!(matches!(host.call("evaluate", json!({})), Err(PluginError::Exited { .. })));
    assert!(!host.in_backoff(), "one crash restarts at once");
    assert!(matches!(host.call("evaluate", json!({})), Err(PluginError::Exited { .. })));
    assert!(host.in_backoff());
    let errors = doin_plugin::host::stats()[&name].errors;
    let e = host.call("evaluate", json!({})).unwrap_err();
    assert!(matches!(&e, PluginError::Backoff { faults: 2, .. }), "{e:?}");
    assert!(e.to_string().contains("restarting in"), "{e}");
    let stats = &doin_plugin::host::stats()[&name];
    assert_eq!((stats.errors, stats.faults_in_row, stats.disabled), (errors, 2, true), "{stats:?}");
    assert!(stats.retry_at_ms.is_some());
    std::thread::sleep(Duration::from_millis(250));
    assert!(
        matches!(host.call("evaluate", json!({})), Err(PluginError::Exited { .. })),
        "started again after the backoff"
    );
    assert_eq!(doin_plugin::host::stats()[&name].restarts, 2, "started three times");
    host.reset();
    assert!(
        matches!(host.call("evaluate", json!({})), Err(PluginError::Exited { .. })),
        "reset enables it again"
    );

    // A program that does not exist is a clear start error.
    let spec = PluginSpec::new("missing", vec!["/nonexistent/doin-plugin".into()]);
    let e = PluginHost::start(spec, json!({})).unwrap_err();
    assert!(matches!(&e, PluginError::Spawn { .. }), "{e:?}");
    assert!(e.to_string().contains("/nonexistent/doin-plugin"));
}

#[test]
fn a_domain_handshake_with_a_tolerance_above_one_or_a_non_boolean_model_is_refused() {
    if python_with(&[]).is_none() {
        return;
    }
    let _g = shared();
    for (mode, says) in [
        ("handshake_tolerance", "`inference_tolerance` 2.5 is not a number in [0, 1]"),
        ("handshake_model", "`model` \"yes\" is not true or false"),
    ] {
        let err = PluginDomain::start(misbehaving(mode, None), "misbehave", json!({}))
            .err()
            .unwrap_or_else(|| panic!("{mode}: the handshake was accepted"));
        assert!(matches!(err, PluginError::Handshake { .. }), "{mode}: {err}");
        assert!(err.to_string().contains(says), "{mode}: {err}");
    }
}

#[test]
fn domain_faults_become_evaluation_failures() {
    let _plugins = shared();
    if python_with(&[]).is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let domain =
        PluginDomain::start(misbehaving("hang", Some(&dir.path().join("m"))), "hang", json!({})).unwrap();
    assert!(!domain.higher_is_better());
    let short = Budget::new(Duration::from_millis(300), 1);
    assert_eq!(domain.evaluate(&[Value::Real(0.1)], None, short), Err(EvalError::Timeout));
    let m = domain.evaluate(&[Value::Real(0.1)], None, budget()).unwrap();
    assert_eq!(m.performance, 0.25);
    assert!(matches!(domain.evaluate(&[], None, budget()), Err(EvalError::BadParams(_))));

    // `"performance": null` is the plugin's error: refused, counted and reported, not silent.
    let domain = PluginDomain::start(misbehaving("null_performance", None), "null", json!({})).unwrap();
    for _ in 0..3 {
        let e = domain.evaluate(&[Value::Real(0.1)], None, budget()).unwrap_err();
        assert!(matches!(&e, EvalError::Failed(m) if m.contains("performance")), "{e:?}");
    }
    let stats = &doin_plugin::host::stats()["misbehave-null_performance"];
    assert_eq!(stats.errors, 3, "{stats:?}");
    assert!(stats.last_error.as_deref().is_some_and(|e| e.contains("`performance` missing or not finite")));
}

fn example(name: &str) -> Vec<String> {
    vec!["python3".into(), repo().join("plugins/python/examples").join(name).display().to_string()]
}

#[test]
fn deap_optimizer_plugin_solves_the_quadratic_domain() {
    let _plugins = shared();
    if python_with(&["deap"]).is_none() {
        return;
    }
    let domain = Quadratic::new(5, 20.0, 11, 0.0);
    let spec = PluginSpec::new("deap", example("deap_optimizer.py"));
    let mut opt =
        PluginOptimizer::start(spec, domain.space().clone(), json!({ "population": 40 }), 3).unwrap();
    let cfg = RunConfig {
        budget: 6_000,
        batch: 40,
        workers: 2,
        max_wall: Duration::from_secs(5),
        max_epochs: 0,
        max_memory_bytes: u64::MAX,
        target_loss: Some(0.5),
    };
    let r = run(&domain, &mut opt, cfg, &mut NoHooks);
    assert!(opt.last_error().is_none(), "{:?}", opt.last_error());
    // Random search in ±20 over 5 dimensions would sit near a loss of 500.
    assert!(r.best_loss < 0.5, "{r:?}");
    // The plugin's state survives a restart of the process through snapshot/restore.
    let state = opt.snapshot();
    assert!(!state.is_empty());
    let spec = PluginSpec::new("deap", example("deap_optimizer.py"));
    let mut again = PluginOptimizer::start(spec, domain.space().clone(), json!({}), 4).unwrap();
    again.restore(&state).unwrap();
    assert!(!again.ask(5).is_empty());
    // A champion from elsewhere is accepted.
    again.inject(doin_optimize::Evaluated { x: r.best_x.clone(), loss: r.best_loss });
    assert!(again.last_error().is_none());
}

/// The node's loop hooks reach a Python optimizer plugin through the SDK: only the hooks the
/// plugin overrides are sent (it declares them at `configure`), with their arguments; the
/// others cost no call.
#[test]
fn optimizer_hooks_reach_the_plugins_that_declare_them() {
    use doin_optimize::{Dim, Hook, Space};
    let _plugins = shared();
    if python_with(&[]).is_none() {
        return;
    }
    let fixture = manifest_dir().join("tests/fixtures/hooked.py").display().to_string();
    let spec = PluginSpec::new("hooked", vec!["python3".into(), fixture]);
    let space = Space { dims: vec![Dim::Continuous { lo: -1.0, hi: 1.0 }; 2] };
    let mut opt = PluginOptimizer::start(spec, space, json!({}), 5).unwrap();
    let declared = opt.with_host(|h| h.handshake().and_then(|r| r.get("hooks")).cloned()).flatten();
    assert_eq!(declared, Some(json!(["on_generation_start", "on_champion_found"])));
    opt.hook(&Hook::GenerationStart { generation: 1 });
    opt.hook(&Hook::BetweenCandidates { done: 1, total: 2 });
    opt.hook(&Hook::GenerationEnd { generation: 1, best_loss: Some(0.5) });
    opt.hook(&Hook::ChampionFound { x: vec![0.75, 0.5], loss: 0.25 });
    assert!(opt.last_error().is_none(), "{:?}", opt.last_error());
    let calls: serde_json::Value = serde_json::from_slice(&opt.snapshot()).unwrap();
    assert_eq!(calls, json!([["start", 1], ["champion", [0.5, 0.0], 0.25]]));
}

#[test]
fn numpy_domain_plugin_measures_and_learns() {
    let _plugins = shared();
    if python_with(&["numpy"]).is_none() {
        return;
    }
    let spec = PluginSpec::new("regressor", example("numpy_domain.py"));
    let domain = PluginDomain::start(spec, "regressor", json!({})).unwrap();
    assert_eq!(domain.space().len(), 5);
    assert!(domain.higher_is_better());
    let long = || Budget::new(Duration::from_secs(30), 100);
    // width 64, lr 1e-2, l2 1e-5, batch 32, 30 epochs vs width 4, lr 1e-4, 1 epoch.
    let good = [Value::Int(64), Value::Real(1e-2), Value::Real(1e-5), Value::Int(32), Value::Int(30)];
    let bad = [Value::Int(4), Value::Real(1e-4), Value::Real(1e-5), Value::Int(32), Value::Int(1)];
    let g = domain.evaluate(&good, None, long()).unwrap();
    let b = domain.evaluate(&bad, None, long()).unwrap();
    assert!(g.performance > b.performance + 0.1, "{g:?} vs {b:?}");
    // An evaluator's seed selects other data: close, not identical.
    let seed = doin_primitives::Hash::of(b"evaluator seed");
    let e = domain.evaluate(&good, Some(&seed), long()).unwrap();
    assert_ne!(e.performance, g.performance);
    assert!((e.performance - g.performance).abs() < 0.1, "{e:?} vs {g:?}");
    // Training returns the model's weights.
    let artifact = domain.train(&good, None, long()).unwrap();
    assert!(artifact.starts_with(b"PK"), "an npz archive");
    // The trained model is measured on the held-out rows and answers rows, deterministically.
    assert!(domain.has_model());
    assert_eq!(domain.inference_tolerance(), 1e-5);
    let weak = domain.train(&bad, None, long()).unwrap();
    let (q_good, q_weak) =
        (domain.measure_artifact(&artifact).unwrap(), domain.measure_artifact(&weak).unwrap());
    assert!(q_good > q_weak + 0.1, "{q_good} vs {q_weak}");
    assert_eq!(domain.measure_artifact(&artifact).unwrap(), q_good, "measured twice, same figure");
    let rows: Vec<Vec<f64>> =
        (0..5).map(|i| (0..8).map(|j| ((i * 8 + j) as f64 / 40.0) - 0.5).collect()).collect();
    let a = domain.infer(&artifact, &rows).unwrap();
    assert_eq!(a.outputs.len(), 5);
    assert!(a.outputs.iter().all(|o| o.len() == 1 && o[0].is_finite()));
    // Row by row gives the batch's answer within the declared tolerance (what a dispute's
    // re-execution compares; NumPy's products may differ in the last bits by batch size), and
    // the other model answers otherwise.
    for (i, row) in rows.iter().enumerate() {
        let alone = domain.infer(&artifact, std::slice::from_ref(row)).unwrap().outputs[0].clone();
        assert!(doin_primitives::same_output(&alone, &a.outputs[i], 1e-5), "{alone:?} vs {:?}", a.outputs[i]);
    }
    assert_ne!(domain.infer(&weak, &rows).unwrap().outputs, a.outputs);
    // A caller holding the model under its content address (the serving queue, a dispute
    // member) passes it: the model loaded under that hash answers, the bytes are not hashed
    // again — the weak model's bytes under the good model's address get the good model's answer.
    let good_hash = doin_primitives::Hash::of_artifact(&artifact);
    assert_eq!(domain.infer_known(&good_hash, &artifact, &rows).unwrap().outputs, a.outputs);
    assert_eq!(domain.infer_known(&good_hash, &weak, &rows).unwrap().outputs, a.outputs);
    // A row the model cannot take is the caller's error; bytes that are no model are refused.
    let e = domain.infer(&artifact, &[vec![0.0; 7]]).unwrap_err();
    assert!(matches!(e, EvalError::BadParams(ref why) if why.contains("8 inputs")), "{e:?}");
    let e = domain.measure_artifact(b"not a model").unwrap_err();
    assert!(e.to_string().contains("not a model of this domain"), "{e}");
    // After the process is killed and restarted, the model is handed over again.
    let pid = domain.model_pid().unwrap();
    assert_ne!(Some(pid), domain.with_host(|h| h.pid()).flatten(), "models run in a process of their own");
    assert!(std::process::Command::new("kill").args(["-9", &pid.to_string()]).status().unwrap().success());
    let again = (0..3).find_map(|_| domain.infer(&artifact, &rows).ok()).expect("answers after a restart");
    assert_eq!(again.outputs, a.outputs);
    assert_ne!(domain.model_pid(), Some(pid), "restarted");
    // A short search through the host improves on random candidates.
    let mut ga = Ga::new(5, GaConfig { population: 8, ..GaConfig::default() }, 1);
    let cfg = RunConfig {
        budget: 24,
        batch: 8,
        workers: 1,
        max_wall: Duration::from_secs(30),
        max_epochs: 60,
        max_memory_bytes: u64::MAX,
        target_loss: None,
    };
    let r = run(&domain, &mut ga, cfg, &mut NoHooks);
    assert_eq!(r.failures, 0);
    assert!(r.best_loss < 0.2, "{r:?}");
}

/// `misbehave.py MODE` behind a shell that does not `exec` it: the plugin is the shell's child
/// (a wrapper script, as users write them), in the group the host made.
fn wrapped(mode: &str) -> PluginSpec {
    let script = manifest_dir().join("tests/fixtures/misbehave.py");
    let command =
        vec!["sh".to_owned(), "-c".to_owned(), format!("python3 {} {mode}; true", script.display())];
    PluginSpec { limits: limits(), ..PluginSpec::new(format!("wrapped-{mode}"), command) }
}

/// Waits up to 5 s for `group` to have no process left.
fn group_gone(group: u32) -> bool {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while std::time::Instant::now() < deadline {
        if doin_plugin::host::group_members(group).is_empty() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

/// A plugin behind a wrapper that does not `exec` is still one group: the memory limit covers
/// the grandchild, and a timeout kills the whole group (no orphan left behind).
#[test]
fn a_wrapped_plugin_is_limited_and_killed_as_a_group() {
    let _plugins = shared();
    if python_with(&[]).is_none() {
        return;
    }
    let mut host = PluginHost::start(wrapped("memory"), json!({ "protocol": 1 })).unwrap();
    let group = host.pid().unwrap();
    let e = host.call("evaluate", json!({})).unwrap_err();
    assert!(matches!(e, PluginError::Memory { .. }), "the grandchild's memory counts: {e:?}");
    assert!(group_gone(group), "the group was killed: {:?}", doin_plugin::host::group_members(group));

    let mut host = PluginHost::start(wrapped("hang"), json!({ "protocol": 1 })).unwrap();
    let group = host.pid().unwrap();
    assert!(doin_plugin::host::group_members(group).len() >= 2, "the shell and its python child");
    let e = host.call("evaluate", json!({})).unwrap_err();
    assert!(matches!(e, PluginError::Timeout { .. }), "{e:?}");
    assert!(group_gone(group), "no orphan after the timeout: {:?}", doin_plugin::host::group_members(group));
}

/// `kill_all` (the node's shutdown) frees a call stuck in a hung plugin at once.
#[test]
fn kill_all_frees_a_call_in_a_hung_plugin() {
    let _plugins = exclusive();
    if python_with(&[]).is_none() {
        return;
    }
    let spec = PluginSpec {
        limits: PluginLimits { call_timeout: Duration::from_secs(60), ..limits() },
        ..wrapped("hang")
    };
    let mut host = PluginHost::start(spec, json!({ "protocol": 1 })).unwrap();
    let group = host.pid().unwrap();
    let started = std::time::Instant::now();
    let killer = std::thread::spawn(|| {
        std::thread::sleep(Duration::from_millis(300));
        doin_plugin::host::kill_all();
    });
    let e = host.call("evaluate", json!({})).unwrap_err();
    killer.join().unwrap();
    assert!(matches!(e, PluginError::Exited { .. }), "{e:?}");
    assert!(started.elapsed() < Duration::from_secs(30), "not the 60 s time limit");
    assert!(group_gone(group));
}

/// Rows "64 features, label" of three separable classes (the feature block a label lights up).
fn client_csv(path: &std::path::Path) {
    let mut text = String::new();
    for r in 0..120 {
        let label = r % 3;
        let cells: Vec<String> = (0..64)
            .map(|f| if f / 16 == label { format!("{}", 8 + (r * 7 + f) % 8) } else { "0".into() })
            .collect();
        text.push_str(&format!("{},{label}\n", cells.join(",")));
    }
    std::fs::write(path, text).unwrap();
}

#[test]
fn numpy_client_plugin_trains_the_jobs_model_in_the_flower_shape() {
    let _plugins = shared();
    let Some(_) = python_with(&["numpy"]) else { return };
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("client.csv");
    client_csv(&csv);
    let mut command = example("numpy_fl_client.py");
    command.push(csv.display().to_string());
    let spec = PluginSpec {
        limits: PluginLimits { call_timeout: Duration::from_secs(30), max_reply_bytes: 16 << 20, ..limits() },
        ..PluginSpec::new("client", command)
    };
    let mut client = PluginClient::start(spec, "fl_test").unwrap();
    let sizes = [64, 16, 3];
    // This client builds its model from the job's sizes.
    client.check_shapes(&sizes).unwrap();

    let params: usize = sizes.windows(2).map(|w| w[0] * w[1] + w[1]).sum();
    let global: Vec<f32> = (0..params).map(|i| ((i * 37 % 101) as f32 / 101.0 - 0.5) * 0.2).collect();
    let config = json!({ "round": 0, "lr": 0.05, "batch": 16, "seed": 7, "sizes": sizes });
    let before = client.evaluate(&global, &sizes, config.clone()).unwrap();
    let fit = client.fit(&global, &sizes, config.clone()).unwrap();
    assert_eq!(fit.weights.len(), params);
    assert_eq!(fit.examples, 120);
    assert!(fit.weights.iter().all(|w| w.is_finite()));
    // Biases of the output layer sit last: the layout round-trips in the model's order.
    assert_ne!(fit.weights[params - 3..], global[params - 3..]);
    let after = client.evaluate(&fit.weights, &sizes, config).unwrap();
    assert!(after.loss < before.loss * 0.8, "one epoch of SGD: loss {} -> {}", before.loss, after.loss);
    assert!(after.metrics["accuracy"].as_f64().unwrap() > 0.9, "{:?}", after.metrics);
    client.shutdown();
}

#[test]
fn a_client_plugins_unusable_updates_are_refused_by_name() {
    let _plugins = shared();
    if python_with(&["numpy"]).is_none() {
        return;
    }
    let sizes = [2, 1];
    let global = vec![0.1f32, 0.2, 0.3];
    let config = json!({ "round": 0 });
    for (mode, why) in
        [("short", "1 tensors, the job's model has 2"), ("nan", "not finite"), ("zero", "num_examples")]
    {
        let script = manifest_dir().join("tests/fixtures/bad_client.py");
        let command = vec!["python3".to_owned(), script.display().to_string(), mode.to_owned()];
        let spec = PluginSpec { limits: limits(), ..PluginSpec::new(format!("bad-{mode}"), command) };
        let mut client = PluginClient::start(spec, "fl_test").unwrap();
        // Its model (one tensor of 3) is not the job's: refused before anything is signed.
        let err = client.check_shapes(&sizes).unwrap_err().to_string();
        assert!(err.contains("[[3]]") && err.contains("[[2,1],[1]]"), "{err}");
        let err = client.fit(&global, &sizes, config.clone()).unwrap_err().to_string();
        assert!(err.contains(why), "{mode}: {err}");
        client.shutdown();
    }
    // A `fit` past the call timeout (`doin fl join --fit-timeout`) is cut there and named; the
    // client process is restarted and answers the next call.
    let script = manifest_dir().join("tests/fixtures/bad_client.py");
    let command = vec!["python3".to_owned(), script.display().to_string(), "slow".to_owned()];
    let spec = PluginSpec {
        limits: PluginLimits { call_timeout: Duration::from_secs(2), ..limits() },
        ..PluginSpec::new("slow", command)
    };
    let mut client = PluginClient::start(spec, "fl_test").unwrap();
    let started = std::time::Instant::now();
    let err = client.fit(&global, &[3], config.clone()).unwrap_err().to_string();
    assert!(started.elapsed() < Duration::from_secs(15), "not cut at the timeout: {:?}", started.elapsed());
    assert!(err.contains("`fit` did not answer within 2s"), "{err}");
    let again = client.evaluate(&global, &[3], config.clone());
    assert!(again.is_ok(), "the restarted client answers: {again:?}");
    client.shutdown();
}
