//! The channel book's append-only log (`DATA_DIR/channels.log`): one line per payment taken
//! (`u <hex of the signed update>`) and per channel settled (`s <channel> <amount>`). Each line
//! is written to the file before the answer it paid for leaves the node (a process restart
//! loses nothing); the file is synced to disk at most once a second (a power cut loses at most
//! that second's updates: the same trade a payment hub makes to answer fast). At start the log
//! is replayed (a line that does not decode or verify is skipped and reported) and, when it has
//! grown past four lines per channel, rewritten with the best update per channel (to a
//! temporary file, then renamed).

use std::{
    fs::{File, OpenOptions},
    io::{BufRead, BufReader, Write},
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use doin_primitives::{Amount, ChannelUpdate, Hash};

use super::ChannelBook;

/// How often the log is synced to disk at most.
const SYNC_EVERY: Duration = Duration::from_secs(1);

/// The open log.
#[derive(Debug)]
pub struct Log {
    path: PathBuf,
    file: File,
    lines: usize,
    synced: Instant,
    /// Written since the last sync.
    dirty: bool,
}

impl Log {
    /// Opens (creating) the log in `data_dir`, replaying it into `book`; returns the log and
    /// the count of lines skipped as unreadable.
    pub fn open(data_dir: &Path, book: &mut ChannelBook) -> std::io::Result<(Self, usize)> {
        let path = data_dir.join("channels.log");
        let (mut lines, mut skipped) = (0, 0);
        if let Ok(f) = File::open(&path) {
            for line in BufReader::new(f).lines() {
                let line = line?;
                lines += 1;
                let ok = match line.split_once(' ') {
                    Some(("u", hex)) => hex::decode(hex)
                        .ok()
                        .and_then(|b| ChannelBook::decode(&b).ok())
                        .map(|u| book.restore(u))
                        .is_some(),
                    Some(("s", rest)) => rest
                        .split_once(' ')
                        .and_then(|(c, a)| Some((c.parse::<Hash>().ok()?, a.parse::<u128>().ok()?)))
                        .map(|(c, a)| book.restore_settled(c, Amount(a)))
                        .is_some(),
                    _ => false,
                };
                if !ok {
                    skipped += 1;
                }
            }
        }
        let file = OpenOptions::new().create(true).append(true).open(&path)?;
        let mut log = Self { path, file, lines, synced: Instant::now(), dirty: false };
        let held = book.updates().count() + book.settled().len();
        if log.lines > 4 * held + 64 {
            log.compact(book)?;
        }
        Ok((log, skipped))
    }

    fn write_line(&mut self, line: &str) -> std::io::Result<()> {
        self.file.write_all(line.as_bytes())?;
        self.lines += 1;
        self.dirty = true;
        if self.synced.elapsed() >= SYNC_EVERY {
            self.sync()?;
        }
        Ok(())
    }

    /// Records a payment taken.
    pub fn taken(&mut self, update: &ChannelUpdate) -> std::io::Result<()> {
        self.write_line(&format!("u {}\n", hex::encode(doin_primitives::encode(update))))
    }

    /// Records a channel settled, with what it paid.
    pub fn settled(&mut self, channel: &Hash, paid: Amount) -> std::io::Result<()> {
        self.write_line(&format!("s {channel} {}\n", paid.0))
    }

    /// Rewrites the log with the book's best updates and settled channels.
    pub fn compact(&mut self, book: &ChannelBook) -> std::io::Result<()> {
        let tmp = self.path.with_extension("log.tmp");
        let mut out = std::io::BufWriter::new(File::create(&tmp)?);
        let mut lines = 0;
        for u in book.updates() {
            writeln!(out, "u {}", hex::encode(doin_primitives::encode(u)))?;
            lines += 1;
        }
        for (c, a) in book.settled() {
            writeln!(out, "s {c} {}", a.0)?;
            lines += 1;
        }
        out.into_inner().map_err(|e| e.into_error())?.sync_all()?;
        std::fs::rename(&tmp, &self.path)?;
        self.file = OpenOptions::new().append(true).open(&self.path)?;
        self.lines = lines;
        Ok(())
    }

    /// Syncs what was written since the last sync.
    pub fn sync(&mut self) -> std::io::Result<()> {
        self.synced = Instant::now();
        if std::mem::take(&mut self.dirty) { self.file.sync_data() } else { Ok(()) }
    }
}
