//! Shared by the multi-process tests: child processes killed on drop, `ip` for the namespace
//! labs, and line readers that tag each output line with its process and arrival time.
#![allow(dead_code)] // each test binary uses part of it

use std::{
    io::{BufRead, BufReader},
    process::{Child, Command, Stdio},
    sync::mpsc::SyncSender,
    time::Instant,
};

/// The devnets of one test binary run one at a time: each is several processes on a 2-core
/// machine, and two at once made the timing-sensitive ones flaky (a latency measurement went
/// from 747 to 8 507 ms with another devnet beside it).
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Holds the binary's devnet slot until dropped.
pub(crate) fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The `doin` binary under test.
pub(crate) fn doin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_doin"))
}

/// A child process, killed and reaped when dropped.
pub(crate) struct Killed(pub(crate) Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Sends `cmd`'s stdout and stderr to the file `path` (created): a process of a multi-process
/// test that [`LogsOnPanic`] shows when the test fails.
pub(crate) fn logged<'a>(cmd: &'a mut Command, path: &std::path::Path) -> &'a mut Command {
    let file = std::fs::File::create(path).unwrap();
    cmd.stdout(file.try_clone().unwrap()).stderr(file)
}

/// Prints the last lines of every `*.log` file in its folder when dropped by a panicking
/// test: what the processes of a failed multi-process test said (a CI failure is read from its
/// output only). Declare it after the folder's `TempDir`, so it drops first.
pub(crate) struct LogsOnPanic(pub(crate) std::path::PathBuf);

impl Drop for LogsOnPanic {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        let Ok(entries) = std::fs::read_dir(&self.0) else { return };
        let mut logs: Vec<_> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "log"))
            .collect();
        logs.sort();
        for log in logs {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            eprintln!("---- last lines of {} ({} lines) ----", log.display(), lines.len());
            for line in &lines[lines.len().saturating_sub(60)..] {
                eprintln!("{line}");
            }
        }
    }
}

/// Runs `ip ARGS`, returning its error text on failure.
pub(crate) fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip").args(args).output().map_err(|e| format!("ip {args:?}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("ip {args:?}: {}", String::from_utf8_lossy(&out.stderr).trim()))
    }
}

/// Spawns `cmd` with its stdout read line by line into `tx` as `(key, line, arrival)`.
pub(crate) fn spawn_lines<K: Copy + Send + 'static>(
    cmd: &mut Command,
    key: K,
    tx: &SyncSender<(K, String, Instant)>,
    show_stderr: bool,
) -> Killed {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(if show_stderr { Stdio::inherit() } else { Stdio::null() })
        .spawn()
        .unwrap();
    forward_lines(&mut child, key, tx);
    Killed(child)
}

/// Reads `child`'s piped stdout line by line into `tx` as `(key, line, arrival)`.
pub(crate) fn forward_lines<K: Copy + Send + 'static>(
    child: &mut Child,
    key: K,
    tx: &SyncSender<(K, String, Instant)>,
) {
    let stdout = child.stdout.take().unwrap();
    let tx = tx.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send((key, line, Instant::now())).is_err() {
                break;
            }
        }
    });
}

/// `GET path` on a node's API at 127.0.0.1:`port`, its body as JSON (None on any failure).
pub(crate) fn http_json(port: u16, path: &str) -> Option<serde_json::Value> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(std::time::Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    serde_json::from_str(out.split_once("\r\n\r\n")?.1.trim()).ok()
}

/// One HTTP request to a node's port (plain HTTP/1.1 on loopback), with the `x-api-key` header
/// when `key` is given: the status and the JSON body (`Null` when it is not JSON).
pub(crate) fn http_request(
    port: u16,
    method: &str,
    path: &str,
    body: &str,
    key: Option<&str>,
) -> (u16, serde_json::Value) {
    let headers: Vec<(&str, &str)> = key.map(|k| ("x-api-key", k)).into_iter().collect();
    http_request_with(port, method, path, body, &headers)
}

/// `method path` with a JSON `body` and extra `headers` on a node's port: the status and the
/// JSON body.
pub(crate) fn http_request_with(
    port: u16,
    method: &str,
    path: &str,
    body: &str,
    headers: &[(&str, &str)],
) -> (u16, serde_json::Value) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(20))).unwrap();
    let extra: String = headers.iter().map(|(k, v)| format!("{k}: {v}\r\n")).collect();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n{extra}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let status = out.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let json = out.split_once("\r\n\r\n").map_or("", |x| x.1).trim();
    (status, serde_json::from_str(json).unwrap_or(serde_json::Value::Null))
}

/// `POST path` with a JSON `body` on a node's port: the status and the JSON body.
pub(crate) fn http_post(port: u16, path: &str, body: &str) -> (u16, serde_json::Value) {
    http_request(port, "POST", path, body, None)
}

/// `GET path` on a node's port: the body as text (`/metrics`).
pub(crate) fn http_text(port: u16, path: &str) -> Option<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(std::time::Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    Some(out.split_once("\r\n\r\n")?.1.to_owned())
}

/// Reads a node's JSON config, lets `edit` change it, writes it back.
pub(crate) fn rewrite_config(path: &std::path::Path, edit: impl FnOnce(&mut serde_json::Value)) {
    let mut c: serde_json::Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    edit(&mut c);
    std::fs::write(path, serde_json::to_vec_pretty(&c).unwrap()).unwrap();
}

/// Whether the test runs as root.
pub(crate) fn is_root() -> bool {
    Command::new("id").arg("-u").output().is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// A namespace lab could not be built: under CI (`CI=true`) or as root that fails the test;
/// on a developer's laptop without root the test says why it skips.
pub(crate) fn lab_missing(what: &str, error: &str) {
    let must = std::env::var("CI").is_ok_and(|v| v == "true") || is_root();
    assert!(!must, "{what}: cannot create network namespaces under CI / as root: {error}");
    eprintln!("SKIPPED {what} (developer machine without root): cannot create network namespaces ({error})");
}

/// `doin devnet --setup-only` for `nodes` staked nodes in `dir` (plus `extra` arguments), with
/// the genesis changed to blocks at least every `block_ms` (heartbeat slots as long): the
/// genesis spec and each node's config file.
pub(crate) fn devnet_setup(
    dir: &std::path::Path,
    nodes: usize,
    block_ms: u64,
    extra: &[&str],
) -> (doin_consensus::GenesisSpec, Vec<std::path::PathBuf>) {
    let out = doin()
        .args(["devnet", "--nodes", &nodes.to_string(), "--setup-only", "--no-tracking"])
        .args(extra)
        .arg("--dir")
        .arg(dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    let v: serde_json::Value = serde_json::from_str(text.lines().last().unwrap()).unwrap();
    let genesis_path = v["genesis"].as_str().unwrap().to_owned();
    let mut genesis: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&genesis_path).unwrap()).unwrap();
    genesis["params"]["max_block_interval_ms"] = block_ms.into();
    genesis["params"]["heartbeat_slot_ms"] = block_ms.into();
    std::fs::write(&genesis_path, serde_json::to_vec_pretty(&genesis).unwrap()).unwrap();
    let configs = v["configs"].as_array().unwrap().iter().map(|p| p.as_str().unwrap().into()).collect();
    (serde_json::from_value(genesis).unwrap(), configs)
}

/// Collects lines from `rx` into `lines` until `until` holds or `deadline` passes; returns
/// whether it held. `DOIN_DEBUG_LINES` echoes every line to stderr.
pub(crate) fn collect<K: std::fmt::Debug>(
    rx: &std::sync::mpsc::Receiver<(K, String, Instant)>,
    lines: &mut Vec<(K, String, Instant)>,
    deadline: Instant,
    until: impl Fn(&[(K, String, Instant)]) -> bool,
) -> bool {
    let echo = std::env::var_os("DOIN_DEBUG_LINES").is_some();
    while Instant::now() < deadline {
        if until(lines) {
            return true;
        }
        if let Ok(l) = rx.recv_timeout(std::time::Duration::from_millis(200)) {
            if echo {
                eprintln!("[{:?}] {}", l.0, l.1);
            }
            lines.push(l);
        }
    }
    until(lines)
}

/// Whether python3 imports `modules`; `None` on a developer's machine without them (said on
/// stderr), a failure under CI (`CI=true`) or as root, where `.ci/run` installs them.
pub(crate) fn python_with(modules: &[&str]) -> Option<()> {
    let probe = format!("import sys, {}", modules.join(", "));
    let ok = Command::new("python3").args(["-c", &probe]).output().is_ok_and(|o| o.status.success());
    let must = std::env::var("CI").is_ok_and(|v| v == "true") || is_root();
    assert!(ok || !must, "CI (and a root run) must provide python3 with {modules:?}");
    if !ok {
        eprintln!("python3 with {modules:?} not available on this machine: that part is skipped");
    }
    ok.then_some(())
}

/// Rewrites a node's config for a namespace lab: its host, P2P port 4101 (HTTP 4100), no
/// bootstrap peers, then the `extra` keys.
pub(crate) fn configure_lab_node(path: &std::path::Path, host: &str, extra: serde_json::Value) {
    rewrite_config(path, |c| {
        c["host"] = host.into();
        c["port"] = 4100.into();
        c["bootstrap_peers"] = serde_json::json!([]);
        for (k, v) in extra.as_object().unwrap() {
            c[k] = v.clone();
        }
    });
}

/// The peer id in node `who`'s first `listening …/p2p/ID` line.
pub(crate) fn peer_id_of<K: PartialEq>(lines: &[(K, String, Instant)], who: K) -> Option<String> {
    lines.iter().find_map(|(w, l, _)| {
        (*w == who).then(|| l.strip_prefix("listening ")?.split("/p2p/").nth(1).map(str::to_owned)).flatten()
    })
}
