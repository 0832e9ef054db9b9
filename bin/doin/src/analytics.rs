//! `doin analytics sync`: copies the SQLite OLAP cube into PostgreSQL — the same schema,
//! upserted incrementally and idempotently (a row is written only when it is new or differs, so
//! a second run changes nothing), chain rows orphaned by a reorg deleted, and the sync state
//! recorded in `doin_sync_state`. `--follow` repeats until Ctrl-C.

use std::{
    collections::HashSet,
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{Context, bail};
use doin_tracking::{
    olap::{Olap, SCHEMA, TABLES, UPGRADE_PG},
    rusqlite::types::ValueRef,
};
use serde_json::{Map, Value, json};
use tokio_postgres::{Client, NoTls, types::ToSql};

/// Analytics commands.
#[derive(Debug, clap::Subcommand)]
pub(crate) enum Analytics {
    /// Copies a node's OLAP database into PostgreSQL (one JSON line per pass).
    Sync(SyncArgs),
    /// Which history seeded each run's optimizer (its warm start): per experiment, the trials
    /// taught from each earlier experiment's rounds and each optimizer's chain optimae (one
    /// JSON line).
    Seeds(SeedsArgs),
}

/// `doin analytics seeds`.
#[derive(Debug, clap::Args)]
pub(crate) struct SeedsArgs {
    /// The node's OLAP database (`olap_db_path`).
    #[arg(long, default_value = "olap.db")]
    source: PathBuf,
    /// Only this experiment.
    #[arg(long)]
    experiment: Option<String>,
}

/// `doin analytics sync`.
#[derive(Debug, clap::Args)]
pub(crate) struct SyncArgs {
    /// PostgreSQL connection URL, e.g. postgres://user@127.0.0.1:5432/doin.
    #[arg(long)]
    postgres: String,
    /// The node's OLAP database (`olap_db_path`).
    #[arg(long, default_value = "olap.db")]
    source: PathBuf,
    /// Keep syncing every `--interval-s` seconds until Ctrl-C.
    #[arg(long)]
    follow: bool,
    /// Seconds between passes with `--follow`.
    #[arg(long, default_value_t = 5.0)]
    interval_s: f64,
    /// Stop `--follow` after this many passes.
    #[arg(long)]
    passes: Option<u64>,
}

const STATE: &str = "CREATE TABLE IF NOT EXISTS doin_sync_state (
    source TEXT NOT NULL, table_name TEXT NOT NULL, last_rowid BIGINT NOT NULL,
    rows_total BIGINT NOT NULL, synced_at TEXT NOT NULL, PRIMARY KEY (source, table_name))";

/// Rows per INSERT statement (PostgreSQL takes at most 65 535 parameters).
const CHUNK: usize = 400;

pub(crate) fn run(a: Analytics) -> anyhow::Result<()> {
    let args = match a {
        Analytics::Sync(args) => args,
        Analytics::Seeds(args) => return seeds(&args),
    };
    if !args.source.is_file() {
        bail!("--source {}: no such database (a node writes it at olap_db_path)", args.source.display());
    }
    if !(args.interval_s.is_finite() && args.interval_s > 0.0) {
        bail!("--interval-s must be a positive number of seconds");
    }
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(async move {
        let (client, conn) = tokio_postgres::connect(&args.postgres, NoTls)
            .await
            .with_context(|| format!("connecting to PostgreSQL at {}", redact(&args.postgres)))?;
        let connection = tokio::spawn(conn);
        client.batch_execute(SCHEMA).await.context("creating the schema in PostgreSQL")?;
        client.batch_execute(UPGRADE_PG).await.context("upgrading the schema in PostgreSQL")?;
        client.batch_execute(STATE).await.context("creating doin_sync_state")?;
        let mut pass = 0u64;
        loop {
            pass += 1;
            let report = sync_once(&client, &args.source).await?;
            println!("{report}");
            if !args.follow || args.passes.is_some_and(|p| pass >= p) {
                break;
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs_f64(args.interval_s)) => {}
                _ = tokio::signal::ctrl_c() => break,
            }
        }
        drop(client);
        let _ = connection.await;
        Ok(())
    })
}

fn seeds(args: &SeedsArgs) -> anyhow::Result<()> {
    if !args.source.is_file() {
        bail!("--source {}: no such database (a node writes it at olap_db_path)", args.source.display());
    }
    let rows = Olap::warm_starts(&args.source, args.experiment.as_deref())?;
    println!("{}", json!({ "warm_starts": rows }));
    Ok(())
}

fn redact(url: &str) -> String {
    // user:password@ → user:***@
    match (url.find("://"), url.find('@')) {
        (Some(s), Some(at)) if url[s + 3..at].contains(':') => {
            let colon = s + 3 + url[s + 3..at].find(':').unwrap_or(0);
            format!("{}:***{}", &url[..colon], &url[at..])
        }
        _ => url.to_owned(),
    }
}

/// A value read from SQLite, typed for its PostgreSQL column.
#[derive(Debug)]
enum Cell {
    Text(Option<String>),
    Big(Option<i64>),
    Int(Option<i32>),
    Real(Option<f64>),
}

impl Cell {
    fn new(pg_type: &str, v: ValueRef<'_>) -> Self {
        let int = match v {
            ValueRef::Integer(i) => Some(i),
            ValueRef::Real(f) => Some(f as i64),
            _ => None,
        };
        match pg_type {
            "bigint" => Cell::Big(int),
            "integer" => Cell::Int(int.map(|i| i as i32)),
            "double precision" => Cell::Real(match v {
                ValueRef::Integer(i) => Some(i as f64),
                ValueRef::Real(f) => Some(f),
                _ => None,
            }),
            _ => Cell::Text(match v {
                ValueRef::Text(t) => Some(String::from_utf8_lossy(t).into_owned()),
                ValueRef::Integer(i) => Some(i.to_string()),
                ValueRef::Real(f) => Some(f.to_string()),
                _ => None,
            }),
        }
    }

    fn sql(&self) -> &(dyn ToSql + Sync) {
        match self {
            Cell::Text(v) => v,
            Cell::Big(v) => v,
            Cell::Int(v) => v,
            Cell::Real(v) => v,
        }
    }

    fn key(&self) -> String {
        match self {
            Cell::Text(v) => v.clone().unwrap_or_default(),
            Cell::Big(v) => v.unwrap_or_default().to_string(),
            Cell::Int(v) => v.unwrap_or_default().to_string(),
            Cell::Real(v) => v.unwrap_or_default().to_string(),
        }
    }
}

async fn columns(client: &Client, table: &str) -> anyhow::Result<(Vec<(String, String)>, Vec<String>)> {
    let cols = client
        .query(
            "SELECT column_name::text, data_type::text FROM information_schema.columns
             WHERE table_name = $1 AND table_schema = current_schema() ORDER BY ordinal_position",
            &[&table],
        )
        .await?
        .iter()
        .map(|r| (r.get::<_, String>(0), r.get::<_, String>(1)))
        .collect();
    let pk = client
        .query(
            "SELECT a.attname::text FROM pg_index i
             JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey)
             WHERE i.indrelid = (quote_ident(current_schema()) || '.' || $1)::regclass AND i.indisprimary
             ORDER BY array_position(i.indkey, a.attnum)",
            &[&table],
        )
        .await?
        .iter()
        .map(|r| r.get::<_, String>(0))
        .collect();
    Ok((cols, pk))
}

/// One pass: every table, in one PostgreSQL transaction, from one consistent SQLite snapshot.
async fn sync_once(client: &Client, source: &Path) -> anyhow::Result<Value> {
    let src = source.display().to_string();
    // Read everything needed under one read transaction (a consistent snapshot while the node
    // keeps writing), then write.
    let mut plan = Vec::new();
    {
        let conn = Olap::reader(source)?;
        conn.execute_batch("BEGIN")?;
        for table in TABLES {
            let (cols, pk) = columns(client, table).await?;
            if cols.is_empty() || pk.is_empty() {
                bail!("PostgreSQL table {table} is missing or has no primary key");
            }
            let last: i64 = client
                .query_opt(
                    "SELECT last_rowid FROM doin_sync_state WHERE source = $1 AND table_name = $2",
                    &[&src, table],
                )
                .await?
                .map_or(0, |r| r.get(0));
            // fact_round rows never change once written: only newer ones are read. The other
            // tables are small and compared whole (a reorg may delete chain rows).
            let incremental = *table == "fact_round";
            let names: Vec<&str> = cols.iter().map(|(n, _)| n.as_str()).collect();
            let query = format!(
                "SELECT rowid, {} FROM {table}{}",
                names.join(", "),
                if incremental { " WHERE rowid > ?1 ORDER BY rowid" } else { "" }
            );
            let mut stmt = conn.prepare(&query)?;
            let mut rows = if incremental { stmt.query([last])? } else { stmt.query([])? };
            let mut data: Vec<Vec<Cell>> = Vec::new();
            let mut max_rowid = last;
            while let Some(r) = rows.next()? {
                max_rowid = max_rowid.max(r.get::<_, i64>(0)?);
                let mut row = Vec::with_capacity(cols.len());
                for (i, (_, t)) in cols.iter().enumerate() {
                    row.push(Cell::new(t, r.get_ref(i + 1)?));
                }
                data.push(row);
            }
            let total: i64 = conn.query_row(&format!("SELECT COUNT(*) FROM {table}"), [], |r| r.get(0))?;
            plan.push((*table, cols, pk, incremental, data, max_rowid, total));
        }
        conn.execute_batch("COMMIT")?;
    }
    client.batch_execute("BEGIN").await?;
    let result = async {
        let mut written = Map::new();
        let mut deleted = Map::new();
        for (table, cols, pk, incremental, data, max_rowid, total) in &plan {
            let names: Vec<&str> = cols.iter().map(|(n, _)| n.as_str()).collect();
            let updates: Vec<String> =
                names.iter().filter(|n| !pk.iter().any(|p| p == *n)).map(|n| format!("{n} = EXCLUDED.{n}")).collect();
            let mine: Vec<String> = names.iter().map(|n| format!("{table}.{n}")).collect();
            let theirs: Vec<String> = names.iter().map(|n| format!("EXCLUDED.{n}")).collect();
            let mut changed = 0u64;
            for chunk in data.chunks(CHUNK) {
                let mut placeholders = Vec::with_capacity(chunk.len());
                let mut params: Vec<&(dyn ToSql + Sync)> = Vec::with_capacity(chunk.len() * names.len());
                for row in chunk {
                    let start = params.len();
                    placeholders.push(format!(
                        "({})",
                        (1..=row.len()).map(|i| format!("${}", start + i)).collect::<Vec<_>>().join(", ")
                    ));
                    params.extend(row.iter().map(Cell::sql));
                }
                let sql = format!(
                    "INSERT INTO {table} ({}) VALUES {} ON CONFLICT ({}) DO UPDATE SET {} WHERE ({}) IS DISTINCT FROM ({})",
                    names.join(", "),
                    placeholders.join(", "),
                    pk.join(", "),
                    updates.join(", "),
                    mine.join(", "),
                    theirs.join(", "),
                );
                changed += client.execute(sql.as_str(), &params).await?;
            }
            written.insert((*table).to_owned(), json!(changed));
            if !incremental {
                // Rows gone from the source (a reorg's orphans) go from PostgreSQL too.
                let key_of = |row: &Vec<Cell>| -> String {
                    pk.iter()
                        .map(|p| names.iter().position(|n| n == p).map_or(String::new(), |i| row[i].key()))
                        .collect::<Vec<_>>()
                        .join("\u{1f}")
                };
                let keep: HashSet<String> = data.iter().map(key_of).collect();
                let select = format!("SELECT {} FROM {table}", pk.iter().map(|p| format!("{p}::text")).collect::<Vec<_>>().join(", "));
                let mut gone = 0u64;
                for r in client.query(select.as_str(), &[]).await? {
                    let values: Vec<String> = (0..pk.len()).map(|i| r.get::<_, String>(i)).collect();
                    if !keep.contains(&values.join("\u{1f}")) {
                        let cond: Vec<String> = pk.iter().enumerate().map(|(i, p)| format!("{p}::text = ${}", i + 1)).collect();
                        let params: Vec<&(dyn ToSql + Sync)> = values.iter().map(|v| v as &(dyn ToSql + Sync)).collect();
                        gone += client
                            .execute(format!("DELETE FROM {table} WHERE {}", cond.join(" AND ")).as_str(), &params)
                            .await?;
                    }
                }
                deleted.insert((*table).to_owned(), json!(gone));
            }
            client
                .execute(
                    "INSERT INTO doin_sync_state VALUES ($1, $2, $3, $4, $5)
                     ON CONFLICT (source, table_name) DO UPDATE SET last_rowid = EXCLUDED.last_rowid,
                       rows_total = EXCLUDED.rows_total, synced_at = EXCLUDED.synced_at",
                    &[&src, table, max_rowid, total, &doin_tracking::rfc3339(now_ms())],
                )
                .await?;
        }
        anyhow::Ok(json!({ "sync": "ok", "source": src, "written": written, "deleted": deleted }))
    }
    .await;
    match result {
        Ok(v) => {
            client.batch_execute("COMMIT").await?;
            Ok(v)
        }
        Err(e) => {
            let _ = client.batch_execute("ROLLBACK").await;
            Err(e)
        }
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    #[test]
    fn passwords_are_not_printed() {
        assert_eq!(super::redact("postgres://u:secret@h:5/d"), "postgres://u:***@h:5/d");
        assert_eq!(super::redact("postgres://u@h/d"), "postgres://u@h/d");
    }
}
