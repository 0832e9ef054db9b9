//! Launches and supervises one plugin process speaking the JSON-lines protocol
//! (`docs/plugins.md`): one request line in, one reply line out, matched by `id`.
//!
//! Every way a plugin can misbehave ends in a reported [`PluginError`] and a killed process, never
//! in a stuck or crashed host: a call that outlives its time limit, a process that exits, a reply
//! that is not JSON or not a reply, a line over the size limit, more log lines than allowed per
//! call, or a resident set over the memory limit (a watchdog samples `/proc`, summing every
//! process of the plugin's group). The next call starts a fresh process and repeats the
//! `configure` handshake; after a second fault in a row restarts back off exponentially
//! ([`PluginLimits::restart_backoff`] doubling up to [`PluginLimits::max_backoff`]): calls in
//! between fail at once with [`PluginError::Backoff`], and a warning says when the next start
//! is. Nothing disables a plugin for good.
//!
//! Each plugin runs in a process group of its own (a wrapper script's children included) and is
//! killed as a group. With a [`PluginSpec::launcher`] (the node's `doin plugin-guard`) the group
//! is also killed when the node dies, however it dies. [`kill_all`] kills every plugin group at
//! once (the node's shutdown: calls in flight fail at once instead of running out their time).

use std::{
    collections::VecDeque,
    io::{BufRead, BufReader, Read, Write},
    path::PathBuf,
    process::{Child, ChildStdin, Command, Stdio},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
        mpsc::{Receiver, RecvTimeoutError, SyncSender, sync_channel},
    },
    thread,
    time::{Duration, Instant},
};

use serde_json::{Value as Json, json};

/// The protocol version this host speaks.
pub const PROTOCOL_VERSION: u64 = 1;

/// Limits a plugin runs under.
#[derive(Clone, Copy, Debug)]
pub struct PluginLimits {
    /// Time for one call (the `configure` handshake included).
    pub call_timeout: Duration,
    /// Largest reply line in bytes.
    pub max_reply_bytes: usize,
    /// Log lines a plugin may print during one call.
    pub max_log_lines: usize,
    /// Resident memory of the plugin's processes together.
    pub max_rss_bytes: u64,
    /// Wait before the start after a second fault in a row; doubles with each further fault.
    pub restart_backoff: Duration,
    /// Longest wait between starts.
    pub max_backoff: Duration,
}

impl Default for PluginLimits {
    fn default() -> Self {
        Self {
            call_timeout: Duration::from_secs(60),
            max_reply_bytes: 4 << 20,
            max_log_lines: 1000,
            max_rss_bytes: 4 << 30,
            restart_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(300),
        }
    }
}

/// How to start a plugin.
#[derive(Clone, Debug)]
pub struct PluginSpec {
    /// A name for logs and errors.
    pub name: String,
    /// Program and arguments.
    pub command: Vec<String>,
    /// Working directory.
    pub dir: Option<PathBuf>,
    /// Extra environment variables.
    pub env: Vec<(String, String)>,
    /// Limits.
    pub limits: PluginLimits,
    /// A program (and arguments) the command is handed to, which runs it in the plugin's group
    /// and kills the group when the host process dies (`doin plugin-guard --parent PID --`).
    pub launcher: Vec<String>,
}

impl PluginSpec {
    /// A plugin run as `command` with default limits and the process's default launcher
    /// ([`set_default_launcher`]).
    pub fn new(name: impl Into<String>, command: Vec<String>) -> Self {
        Self {
            name: name.into(),
            command,
            dir: None,
            env: Vec::new(),
            limits: PluginLimits::default(),
            launcher: LAUNCHER.get().cloned().unwrap_or_default(),
        }
    }
}

static LAUNCHER: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();

/// The launcher every [`PluginSpec::new`] of this process gets (set once, at start: the node
/// binary names its own `plugin-guard`).
pub fn set_default_launcher(launcher: Vec<String>) {
    let _ = LAUNCHER.set(launcher);
}

/// What went wrong with a plugin. [`PluginError::Remote`] is the plugin's own answer; every
/// other variant is a fault after which the process was killed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum PluginError {
    /// The program could not be started.
    #[error("plugin {plugin}: cannot start {command:?}: {reason}")]
    Spawn {
        /// Plugin name.
        plugin: String,
        /// The command.
        command: Vec<String>,
        /// OS error.
        reason: String,
    },
    /// A call took longer than its limit.
    #[error("plugin {plugin}: `{method}` did not answer within {after:?}; killed")]
    Timeout {
        /// Plugin name.
        plugin: String,
        /// The method called.
        method: String,
        /// The limit.
        after: Duration,
    },
    /// The process exited.
    #[error("plugin {plugin}: process exited ({status}) during `{method}`; last stderr: {stderr}")]
    Exited {
        /// Plugin name.
        plugin: String,
        /// The method called.
        method: String,
        /// Exit status.
        status: String,
        /// The end of its standard error.
        stderr: String,
    },
    /// A line that is not a valid reply.
    #[error("plugin {plugin}: malformed reply to `{method}`: {reason}; killed")]
    Malformed {
        /// Plugin name.
        plugin: String,
        /// The method called.
        method: String,
        /// What was wrong (with the start of the line).
        reason: String,
    },
    /// A line over the size limit.
    #[error("plugin {plugin}: reply to `{method}` exceeds {limit} bytes; killed")]
    Oversized {
        /// Plugin name.
        plugin: String,
        /// The method called.
        method: String,
        /// The limit.
        limit: usize,
    },
    /// Too many log lines during one call.
    #[error("plugin {plugin}: flooded {lines} lines of output during `{method}`; killed")]
    Flood {
        /// Plugin name.
        plugin: String,
        /// The method called.
        method: String,
        /// Lines seen.
        lines: usize,
    },
    /// The process used more memory than allowed.
    #[error("plugin {plugin}: resident memory {rss_mb} MiB over the limit of {limit_mb} MiB; killed")]
    Memory {
        /// Plugin name.
        plugin: String,
        /// Resident set seen.
        rss_mb: u64,
        /// The limit.
        limit_mb: u64,
    },
    /// The plugin's handshake is not this protocol.
    #[error("plugin {plugin}: handshake failed: {reason}")]
    Handshake {
        /// Plugin name.
        plugin: String,
        /// Why.
        reason: String,
    },
    /// Faults in a row: the next start waits.
    #[error("plugin {plugin}: {faults} faults in a row, restarting in {retry_in:?} (last: {last})")]
    Backoff {
        /// Plugin name.
        plugin: String,
        /// Faults in a row.
        faults: u32,
        /// Until the next start.
        retry_in: Duration,
        /// The last fault.
        last: String,
    },
    /// The plugin answered with an error of its own (the process keeps running).
    #[error("plugin {plugin}: `{method}` failed: {message}")]
    Remote {
        /// Plugin name.
        plugin: String,
        /// The method called.
        method: String,
        /// Its message.
        message: String,
    },
}

impl PluginError {
    /// Whether the process was killed for this error.
    pub fn is_fault(&self) -> bool {
        !matches!(self, Self::Remote { .. } | Self::Backoff { .. })
    }
}

/// One recorded fault.
#[derive(Clone, Debug)]
pub struct Incident {
    /// When it happened.
    pub at: Instant,
    /// What happened.
    pub error: PluginError,
}

/// What the stdout reader hands the caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Line {
    /// A complete line (without its newline; invalid UTF-8 replaced).
    Text(String),
    /// A line longer than the limit: the reader stops.
    Oversized,
    /// The stream ended.
    Eof,
}

/// One line of a plugin's stdout, read for the call with id `id`.
#[derive(Debug, Clone, PartialEq)]
pub enum LineKind {
    /// Whitespace only: skipped.
    Blank,
    /// A `{"log": …}` line: the message, logged.
    Log(String),
    /// The call's result.
    Result(Json),
    /// The call's `error.message` (or the whole `error` value).
    Error(String),
    /// Anything else, and why.
    Malformed(String),
}

/// Interprets one line of a plugin's stdout for the call with id `id` (the protocol's JSON
/// lines: a reply `{"id", "result" | "error"}` or a log `{"log"}`).
pub fn interpret_line(text: &str, id: u64) -> LineKind {
    if text.trim().is_empty() {
        return LineKind::Blank;
    }
    let mut value: Json = match serde_json::from_str(text) {
        Ok(v) => v,
        Err(e) => return LineKind::Malformed(format!("not JSON ({e})")),
    };
    if let Some(msg) = value.get("log") {
        return LineKind::Log(msg.as_str().map_or_else(|| msg.to_string(), str::to_owned));
    }
    match value.get("id").and_then(Json::as_u64) {
        Some(got) if got == id => {}
        Some(got) => return LineKind::Malformed(format!("reply id {got}, expected {id}")),
        None => return LineKind::Malformed("a line that is neither a reply nor a log".into()),
    }
    if let Some(err) = value.get("error") {
        let message =
            err.get("message").and_then(Json::as_str).map(str::to_owned).unwrap_or_else(|| err.to_string());
        return LineKind::Error(message);
    }
    match value.get_mut("result") {
        Some(r) => LineKind::Result(r.take()),
        None => LineKind::Malformed("reply without `result` or `error`".into()),
    }
}

struct Process {
    child: Arc<Mutex<Child>>,
    /// The process group (the first process's id).
    group: u32,
    requests: SyncSender<Vec<u8>>,
    lines: Receiver<Line>,
    /// Set by the memory watchdog when it killed the process.
    killed_for: Arc<Mutex<Option<PluginError>>>,
    stop: Arc<AtomicBool>,
    stderr: Arc<Mutex<VecDeque<String>>>,
}

impl Process {
    fn kill(&self) {
        self.stop.store(true, Ordering::Relaxed);
        kill_group(self.group);
        if let Ok(mut c) = self.child.lock() {
            let _ = c.kill();
            let _ = c.wait();
        }
        forget_group(self.group);
    }

    fn stderr_tail(&self) -> String {
        self.stderr.lock().map(|t| t.iter().cloned().collect::<Vec<_>>().join(" | ")).unwrap_or_default()
    }

    fn exit_status(&self) -> String {
        let deadline = Instant::now() + Duration::from_millis(500);
        while Instant::now() < deadline {
            if let Ok(mut c) = self.child.lock()
                && let Ok(Some(status)) = c.try_wait()
            {
                return status.to_string();
            }
            thread::sleep(Duration::from_millis(10));
        }
        "still running".into()
    }
}

/// Counters of one plugin (by name) across its processes, for `/metrics` and `/api/plugins`.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct PluginStats {
    /// Processes started.
    pub starts: u64,
    /// Calls made.
    pub calls: u64,
    /// Calls that failed (timeouts, crashes, protocol errors, plugin-reported errors).
    pub errors: u64,
    /// Processes started again after a fault.
    pub restarts: u64,
    /// Faults since the last successful call.
    pub faults_in_row: u32,
    /// Whether calls are refused now, waiting for the next start after faults in a row.
    pub disabled: bool,
    /// When the next start may be (Unix ms), while `disabled`.
    pub retry_at_ms: Option<u64>,
    /// The last error, if any.
    pub last_error: Option<String>,
}

static STATS: std::sync::Mutex<std::collections::BTreeMap<String, PluginStats>> =
    std::sync::Mutex::new(std::collections::BTreeMap::new());

fn note(name: &str, f: impl FnOnce(&mut PluginStats)) {
    if let Ok(mut m) = STATS.lock() {
        f(m.entry(name.to_owned()).or_default());
    }
}

/// When each plugin's unusable answer was last logged (at most one warning per plugin per 10 s;
/// every one is counted).
static LAST_WARNED: std::sync::Mutex<std::collections::BTreeMap<String, Instant>> =
    std::sync::Mutex::new(std::collections::BTreeMap::new());

/// Counts an error found in a plugin's answer by its caller (a reply whose figures are
/// unusable): reported like the host's own, logged at most once per 10 s per plugin.
pub fn record_error(name: &str, message: &str) {
    let due = LAST_WARNED.lock().is_ok_and(|mut m| {
        let now = Instant::now();
        let due = m.get(name).is_none_or(|t| now.duration_since(*t) >= Duration::from_secs(10));
        if due {
            m.insert(name.to_owned(), now);
        }
        due
    });
    if due {
        tracing::warn!(plugin = %name, error = %message, "plugin answer unusable (counted in its errors)");
    }
    note(name, |s| {
        s.errors += 1;
        s.last_error = Some(message.to_owned());
    });
}

/// Counters of every plugin this process has run, by plugin name.
pub fn stats() -> std::collections::BTreeMap<String, PluginStats> {
    STATS.lock().map(|m| m.clone()).unwrap_or_default()
}

/// A supervised plugin process.
pub struct PluginHost {
    spec: PluginSpec,
    process: Option<Process>,
    /// The `configure` parameters, re-sent after every restart.
    configure: Option<Json>,
    handshake: Option<Json>,
    next_id: u64,
    faults_in_row: u32,
    /// No start before this, after faults in a row.
    retry_at: Option<Instant>,
    starts: u32,
    incidents: VecDeque<Incident>,
}

impl std::fmt::Debug for PluginHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginHost")
            .field("name", &self.spec.name)
            .field("running", &self.process.is_some())
            .field("starts", &self.starts)
            .field("faults_in_row", &self.faults_in_row)
            .finish()
    }
}

const MAX_INCIDENTS: usize = 64;
const STDERR_TAIL_LINES: usize = 20;
const STDERR_LINE_BYTES: usize = 2048;

impl PluginHost {
    /// Starts the plugin and runs the `configure` handshake with `config`; the reply is
    /// available as [`PluginHost::handshake`].
    pub fn start(spec: PluginSpec, config: Json) -> Result<Self, PluginError> {
        let mut host = Self {
            spec,
            process: None,
            configure: Some(config),
            handshake: None,
            next_id: 1,
            faults_in_row: 0,
            retry_at: None,
            starts: 0,
            incidents: VecDeque::new(),
        };
        host.ensure_running()?;
        Ok(host)
    }

    /// The plugin's name.
    pub fn name(&self) -> &str {
        &self.spec.name
    }

    /// The reply to the last `configure`.
    pub fn handshake(&self) -> Option<&Json> {
        self.handshake.as_ref()
    }

    /// How many times a process was started.
    pub fn starts(&self) -> u32 {
        self.starts
    }

    /// Restarts after faults (starts beyond the first).
    pub fn restarts(&self) -> u32 {
        self.starts.saturating_sub(1)
    }

    /// Recent faults, oldest first.
    pub fn incidents(&self) -> impl Iterator<Item = &Incident> {
        self.incidents.iter()
    }

    /// Whether calls are refused now, waiting out the backoff after faults in a row.
    pub fn in_backoff(&self) -> bool {
        self.retry_at.is_some_and(|t| Instant::now() < t)
    }

    /// Faults since the last successful call.
    pub fn faults_in_row(&self) -> u32 {
        self.faults_in_row
    }

    /// Forgets the faults: the next call starts the plugin at once.
    pub fn reset(&mut self) {
        self.faults_in_row = 0;
        self.retry_at = None;
    }

    /// The wait before the next start after `faults` faults in a row: none after the first,
    /// then `restart_backoff` doubling up to `max_backoff`.
    pub fn backoff_after(limits: &PluginLimits, faults: u32) -> Duration {
        if faults < 2 {
            return Duration::ZERO;
        }
        let doubled = limits.restart_backoff.saturating_mul(1u32 << (faults - 2).min(20));
        doubled.min(limits.max_backoff)
    }

    /// The OS process id, while one runs.
    pub fn pid(&self) -> Option<u32> {
        self.process.as_ref().and_then(|p| p.child.lock().ok().map(|c| c.id()))
    }

    /// Calls `method` with `params` and returns its `result`.
    pub fn call(&mut self, method: &str, params: Json) -> Result<Json, PluginError> {
        self.call_with_timeout(method, params, self.spec.limits.call_timeout)
    }

    /// Like [`PluginHost::call`] with a shorter time limit (never longer than the configured one).
    pub fn call_with_timeout(
        &mut self,
        method: &str,
        params: Json,
        timeout: Duration,
    ) -> Result<Json, PluginError> {
        note(&self.spec.name, |s| s.calls += 1);
        let result = self.ensure_running().and_then(|()| {
            let timeout = timeout.min(self.spec.limits.call_timeout);
            match self.exchange(method, params, timeout) {
                Ok(v) => {
                    self.faults_in_row = 0;
                    self.retry_at = None;
                    note(&self.spec.name, |s| s.faults_in_row = 0);
                    Ok(v)
                }
                Err(e) => Err(self.after_error(e)),
            }
        });
        if let Err(e) = &result {
            let (faults, retry_at_ms) = (self.faults_in_row, self.retry_at_ms());
            // Calls refused during the backoff are not new errors.
            let counted = !matches!(e, PluginError::Backoff { .. });
            note(&self.spec.name, |s| {
                s.errors += u64::from(counted);
                s.faults_in_row = faults;
                s.disabled = retry_at_ms.is_some();
                s.retry_at_ms = retry_at_ms;
                s.last_error = Some(e.to_string());
            });
        }
        result
    }

    /// Asks the plugin to exit and waits briefly; kills it otherwise.
    pub fn shutdown(&mut self) {
        if self.process.is_some() {
            let _ = self.exchange("shutdown", json!({}), Duration::from_secs(2));
        }
        if let Some(p) = self.process.take() {
            p.kill();
        }
    }

    /// The backoff's end as Unix milliseconds, while one runs.
    fn retry_at_ms(&self) -> Option<u64> {
        let left = self.retry_at?.checked_duration_since(Instant::now())?;
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).ok()?;
        Some((now + left).as_millis() as u64)
    }

    fn after_error(&mut self, e: PluginError) -> PluginError {
        if e.is_fault() {
            if let Some(p) = self.process.take() {
                p.kill();
            }
            self.faults_in_row += 1;
            let wait = Self::backoff_after(&self.spec.limits, self.faults_in_row);
            if wait.is_zero() {
                tracing::warn!(plugin = %self.spec.name, error = %e, "plugin fault; process killed, restarting");
            } else {
                self.retry_at = Some(Instant::now() + wait);
                tracing::warn!(
                    plugin = %self.spec.name,
                    error = %e,
                    faults_in_row = self.faults_in_row,
                    retry_in_s = wait.as_secs_f64(),
                    "plugin fault; process killed, next start after a backoff"
                );
            }
            if self.incidents.len() == MAX_INCIDENTS {
                self.incidents.pop_front();
            }
            self.incidents.push_back(Incident { at: Instant::now(), error: e.clone() });
        }
        e
    }

    fn ensure_running(&mut self) -> Result<(), PluginError> {
        if self.process.is_some() {
            return Ok(());
        }
        if let Some(retry_in) = self.retry_at.and_then(|t| t.checked_duration_since(Instant::now())) {
            let last = self.incidents.back().map(|i| i.error.to_string()).unwrap_or_default();
            return Err(PluginError::Backoff {
                plugin: self.spec.name.clone(),
                faults: self.faults_in_row,
                retry_in,
                last,
            });
        }
        let process = self.spawn().map_err(|e| self.after_error(e))?;
        self.process = Some(process);
        self.starts += 1;
        let restarted = self.starts > 1;
        note(&self.spec.name, |s| {
            s.starts += 1;
            s.restarts += u64::from(restarted);
            s.disabled = false;
            s.retry_at_ms = None;
        });
        if self.starts > 1 {
            tracing::info!(plugin = %self.spec.name, restarts = self.starts - 1, "plugin restarted");
        }
        if let Some(config) = self.configure.clone() {
            let timeout = self.spec.limits.call_timeout;
            let reply = self.exchange("configure", config, timeout).map_err(|e| self.after_error(e))?;
            let version = reply.get("protocol").and_then(Json::as_u64);
            if version != Some(PROTOCOL_VERSION) {
                let e = PluginError::Handshake {
                    plugin: self.spec.name.clone(),
                    reason: format!("protocol {version:?}, this host speaks {PROTOCOL_VERSION}"),
                };
                return Err(self.after_error(e));
            }
            self.handshake = Some(reply);
        }
        Ok(())
    }

    fn spawn(&self) -> Result<Process, PluginError> {
        let spawn_err = |reason: String| PluginError::Spawn {
            plugin: self.spec.name.clone(),
            command: self.spec.command.clone(),
            reason,
        };
        if self.spec.command.is_empty() {
            return Err(spawn_err("empty command".into()));
        }
        let full: Vec<&String> = self.spec.launcher.iter().chain(&self.spec.command).collect();
        let (program, args) = full.split_first().ok_or_else(|| spawn_err("empty command".into()))?;
        let mut cmd = Command::new(program);
        cmd.args(args).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
        // A group of its own: killed as one, memory counted as one.
        {
            use std::os::unix::process::CommandExt;
            cmd.process_group(0);
        }
        if let Some(dir) = &self.spec.dir {
            cmd.current_dir(dir);
        }
        for (k, v) in &self.spec.env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().map_err(|e| spawn_err(e.to_string()))?;
        let (Some(stdin), Some(stdout), Some(stderr)) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take())
        else {
            let _ = child.kill();
            return Err(spawn_err("standard streams unavailable".into()));
        };
        let pid = child.id();
        remember_group(pid);
        let child = Arc::new(Mutex::new(child));
        let stop = Arc::new(AtomicBool::new(false));
        let killed_for = Arc::new(Mutex::new(None));
        let name = self.spec.name.clone();

        let (requests, to_write) = sync_channel::<Vec<u8>>(1);
        thread::Builder::new()
            .name(format!("plugin-{name}-in"))
            .spawn(move || writer(stdin, to_write))
            .map_err(|e| spawn_err(e.to_string()))?;

        let (line_tx, lines) = sync_channel::<Line>(16);
        let max = self.spec.limits.max_reply_bytes;
        thread::Builder::new()
            .name(format!("plugin-{name}-out"))
            .spawn(move || read_lines(stdout, max, line_tx))
            .map_err(|e| spawn_err(e.to_string()))?;

        let tail = Arc::new(Mutex::new(VecDeque::new()));
        let tail_w = tail.clone();
        let log_name = name.clone();
        thread::Builder::new()
            .name(format!("plugin-{name}-err"))
            .spawn(move || stderr_reader(stderr, &log_name, &tail_w))
            .map_err(|e| spawn_err(e.to_string()))?;

        let (wd_child, wd_stop, wd_killed) = (child.clone(), stop.clone(), killed_for.clone());
        let limit = self.spec.limits.max_rss_bytes;
        thread::Builder::new()
            .name(format!("plugin-{name}-mem"))
            .spawn(move || watchdog(pid, limit, &name, &wd_child, &wd_stop, &wd_killed))
            .map_err(|e| spawn_err(e.to_string()))?;

        Ok(Process { child, group: pid, requests, lines, killed_for, stop, stderr: tail })
    }

    fn exchange(&mut self, method: &str, params: Json, timeout: Duration) -> Result<Json, PluginError> {
        let plugin = self.spec.name.clone();
        let id = self.next_id;
        self.next_id += 1;
        let Some(process) = self.process.as_ref() else {
            return Err(PluginError::Exited {
                plugin,
                method: method.into(),
                status: "not running".into(),
                stderr: String::new(),
            });
        };
        let deadline = Instant::now() + timeout;
        let exited = |p: &Process| {
            p.killed_for.lock().ok().and_then(|k| k.clone()).unwrap_or_else(|| PluginError::Exited {
                plugin: plugin.clone(),
                method: method.into(),
                status: p.exit_status(),
                stderr: p.stderr_tail(),
            })
        };
        let mut logs = 0usize;
        // Lines left over from before this call count against the log allowance.
        while let Ok(line) = process.lines.try_recv() {
            match line {
                Line::Text(_) => logs += 1,
                Line::Oversized => {
                    return Err(PluginError::Oversized {
                        plugin,
                        method: method.into(),
                        limit: self.spec.limits.max_reply_bytes,
                    });
                }
                Line::Eof => return Err(exited(process)),
            }
        }
        let mut request = serde_json::to_vec(&json!({ "id": id, "method": method, "params": params }))
            .map_err(|e| PluginError::Malformed {
                plugin: plugin.clone(),
                method: method.into(),
                reason: e.to_string(),
            })?;
        request.push(b'\n');
        if process.requests.send(request).is_err() {
            return Err(exited(process));
        }
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = match process.lines.recv_timeout(left) {
                Ok(l) => l,
                Err(RecvTimeoutError::Timeout) => {
                    if let Some(k) = process.killed_for.lock().ok().and_then(|k| k.clone()) {
                        return Err(k);
                    }
                    return Err(PluginError::Timeout { plugin, method: method.into(), after: timeout });
                }
                Err(RecvTimeoutError::Disconnected) => return Err(exited(process)),
            };
            let text = match line {
                Line::Text(t) => t,
                Line::Oversized => {
                    return Err(PluginError::Oversized {
                        plugin,
                        method: method.into(),
                        limit: self.spec.limits.max_reply_bytes,
                    });
                }
                Line::Eof => return Err(exited(process)),
            };
            let malformed = |reason: String| PluginError::Malformed {
                plugin: plugin.clone(),
                method: method.into(),
                reason: format!("{reason} in {:?}", text.chars().take(80).collect::<String>()),
            };
            match interpret_line(&text, id) {
                LineKind::Blank => continue,
                LineKind::Log(message) => {
                    logs += 1;
                    if logs > self.spec.limits.max_log_lines {
                        return Err(PluginError::Flood { plugin, method: method.into(), lines: logs });
                    }
                    tracing::info!(plugin = %plugin, message = %message, "plugin log");
                    continue;
                }
                LineKind::Malformed(reason) => return Err(malformed(reason)),
                LineKind::Error(message) => {
                    return Err(PluginError::Remote { plugin, method: method.into(), message });
                }
                LineKind::Result(r) => return Ok(r),
            }
        }
    }
}

impl Drop for PluginHost {
    fn drop(&mut self) {
        if let Some(p) = self.process.take() {
            p.kill();
        }
    }
}

fn writer(mut stdin: ChildStdin, requests: Receiver<Vec<u8>>) {
    while let Ok(bytes) = requests.recv() {
        if stdin.write_all(&bytes).and_then(|()| stdin.flush()).is_err() {
            break;
        }
    }
}

/// Splits stdout into lines of at most `max` bytes; stops at the first longer one.
pub fn read_lines(stdout: impl Read, max: usize, out: SyncSender<Line>) {
    let mut r = BufReader::with_capacity(64 * 1024, stdout);
    let mut line = Vec::new();
    loop {
        let buf = match r.fill_buf() {
            Ok([]) | Err(_) => {
                let _ = out.send(Line::Eof);
                return;
            }
            Ok(b) => b,
        };
        let (chunk, done) = match buf.iter().position(|b| *b == b'\n') {
            Some(i) => (&buf[..i], Some(i + 1)),
            None => (buf, None),
        };
        if line.len() + chunk.len() > max {
            let _ = out.send(Line::Oversized);
            return;
        }
        line.extend_from_slice(chunk);
        let used = done.unwrap_or(buf.len());
        r.consume(used);
        if done.is_some() {
            let text = String::from_utf8_lossy(&line).into_owned();
            line.clear();
            if out.send(Line::Text(text)).is_err() {
                return;
            }
        }
    }
}

fn stderr_reader(stderr: impl Read, name: &str, tail: &Mutex<VecDeque<String>>) {
    let mut r = BufReader::new(stderr);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        // Reads at most a bounded prefix of each line; the rest is skipped.
        match r.by_ref().take(STDERR_LINE_BYTES as u64).read_until(b'\n', &mut buf) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        if buf.last() != Some(&b'\n') {
            let mut skip = Vec::new();
            let _ = r.by_ref().take(16 << 20).read_until(b'\n', &mut skip);
        }
        let text = String::from_utf8_lossy(&buf).trim_end().to_owned();
        tracing::debug!(plugin = %name, line = %text, "plugin stderr");
        if let Ok(mut t) = tail.lock() {
            if t.len() == STDERR_TAIL_LINES {
                t.pop_front();
            }
            t.push_back(text);
        }
    }
}

/// Process groups of running plugins (the node's shutdown kills them all).
static GROUPS: std::sync::Mutex<std::collections::BTreeSet<u32>> =
    std::sync::Mutex::new(std::collections::BTreeSet::new());

fn remember_group(group: u32) {
    if let Ok(mut g) = GROUPS.lock() {
        g.insert(group);
    }
}

fn forget_group(group: u32) {
    if let Ok(mut g) = GROUPS.lock() {
        g.remove(&group);
    }
}

/// SIGKILL to every process of `group`.
pub fn kill_group(group: u32) {
    if let Some(pid) = i32::try_from(group).ok().and_then(rustix::process::Pid::from_raw) {
        let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
    }
}

/// Kills every plugin process group this process started and has not reaped: calls in flight
/// fail at once (the node's shutdown).
pub fn kill_all() {
    let groups = GROUPS.lock().map(|g| g.clone()).unwrap_or_default();
    for g in groups {
        kill_group(g);
    }
}

/// The processes of process group `group` (Linux `/proc`).
pub fn group_members(group: u32) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else { return Vec::new() };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            // `pid (comm) state ppid pgrp …`: comm may hold spaces and parentheses.
            std::fs::read_to_string(format!("/proc/{pid}/stat")).ok().is_some_and(|stat| {
                stat.rsplit_once(')')
                    .and_then(|(_, rest)| rest.split_whitespace().nth(2)?.parse::<u32>().ok())
                    == Some(group)
            })
        })
        .collect()
}

/// Resident set of the processes of `group` together, in bytes.
pub fn group_rss_bytes(group: u32) -> Option<u64> {
    let members = group_members(group);
    if members.is_empty() {
        return None;
    }
    Some(members.iter().filter_map(|p| rss_bytes(*p)).sum())
}

/// Resident set of `pid` in bytes (Linux `/proc`).
pub fn rss_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

fn watchdog(
    pid: u32,
    limit: u64,
    name: &str,
    child: &Mutex<Child>,
    stop: &AtomicBool,
    killed_for: &Mutex<Option<PluginError>>,
) {
    let mut tick = 0u32;
    while !stop.load(Ordering::Relaxed) {
        // The plugin's own process every 25 ms; its whole group (children of a wrapper that
        // does not `exec`) every 250 ms, a `/proc` scan.
        tick = tick.wrapping_add(1);
        let rss = if tick.is_multiple_of(10) { group_rss_bytes(pid) } else { rss_bytes(pid) };
        match rss {
            Some(rss) if rss > limit => {
                if let Ok(mut k) = killed_for.lock() {
                    *k = Some(PluginError::Memory {
                        plugin: name.to_owned(),
                        rss_mb: rss.div_ceil(1 << 20),
                        limit_mb: limit >> 20,
                    });
                }
                kill_group(pid);
                if let Ok(mut c) = child.lock() {
                    let _ = c.kill();
                }
                return;
            }
            Some(_) => {}
            None => return,
        }
        thread::sleep(Duration::from_millis(25));
    }
}
