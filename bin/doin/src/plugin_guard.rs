//! `doin plugin-guard --parent PID -- COMMAND…` (hidden): how the node starts every plugin. The
//! node spawns the guard as the leader of a new process group; the guard runs the plugin in
//! that group with the node's pipes as its standard streams (it reads and writes nothing
//! itself), and
//!
//! - when the node dies — however: `kill -9` included — kills the whole group (it watches its
//!   parent: once reparented, the node is gone);
//! - when the plugin exits, kills what the plugin left behind in the group (children of a
//!   wrapper script that did not `exec`), then exits with the plugin's status.
//!
//! `PR_SET_PDEATHSIG` would need code between `fork` and `exec`, which this workspace's
//! `unsafe_code = "forbid"` rules out; a guard process does the same from safe code and also
//! covers grandchildren, which a death signal on the plugin alone would not.

use std::time::Duration;

use clap::Args;

#[derive(Debug, Args)]
pub(crate) struct GuardArgs {
    /// The node's process id: when it is no longer this guard's parent, the group is killed.
    #[arg(long)]
    parent: u32,
    /// The plugin's program and arguments.
    #[arg(last = true, required = true)]
    command: Vec<String>,
}

/// How often the guard looks at its parent and its plugin.
const POLL: Duration = Duration::from_millis(50);

pub(crate) fn run(args: GuardArgs) -> anyhow::Result<()> {
    let group = std::process::id();
    let parent_alive =
        || rustix::process::getppid().is_some_and(|p| p.as_raw_nonzero().get() as u32 == args.parent);
    if !parent_alive() {
        // The node died before the guard started its plugin.
        return Ok(());
    }
    let (program, rest) = args.command.split_first().ok_or_else(|| anyhow::anyhow!("no plugin command"))?;
    let mut child = std::process::Command::new(program)
        .args(rest)
        .spawn()
        .map_err(|e| anyhow::anyhow!("cannot start {program:?}: {e}"))?;
    loop {
        if let Some(status) = child.try_wait()? {
            // What the plugin left in the group goes with it.
            for pid in doin_plugin::host::group_members(group) {
                if pid != group
                    && let Some(pid) = i32::try_from(pid).ok().and_then(rustix::process::Pid::from_raw)
                {
                    let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
                }
            }
            use std::os::unix::process::ExitStatusExt;
            std::process::exit(status.code().unwrap_or_else(|| 128 + status.signal().unwrap_or(0)));
        }
        if !parent_alive() {
            // The node is gone: the whole group, this guard included.
            doin_plugin::host::kill_group(group);
            std::process::exit(137);
        }
        std::thread::sleep(POLL);
    }
}
