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
    let stdout = child.stdout.take().unwrap();
    let tx = tx.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send((key, line, Instant::now())).is_err() {
                break;
            }
        }
    });
    Killed(child)
}
