//! Key checks and job queues of one scrape, after INFO: exact keys, key
//! patterns expanded by SCAN under a per-scrape bound, and the O(1) counts
//! of each job queue. Keys are grouped by db so SELECT is only sent when
//! the db changes, and the connection is left on db 0.

use std::collections::BTreeSet;

use tokio::io::BufStream;

use super::config::{parse_check_key, QueueKeys, RedisScrapeTarget};
use super::resp::{self, Io, Reply};
use crate::metrics::{Labels, MetricFamily};

/// Longest string read back for `redis_key_value`: a number's text is far
/// shorter, and a longer value is never read whole.
const VALUE_PREFIX_BYTES: i64 = 512;

/// What the checks look at, parsed once from the target.
pub(super) struct Plan {
    /// Exact keys: (db, key), from `check_single_keys` and the `check_keys`
    /// entries without glob characters.
    singles: Vec<(u32, String)>,
    /// `check_keys` globs: (db, pattern).
    patterns: Vec<(u32, String)>,
    batch: u32,
    max_scanned: u32,
    queues: Vec<(String, QueueKeys)>,
    queue_db: u32,
}

/// How one pattern's SCAN went.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Scan {
    pub db: u32,
    pub pattern: String,
    /// SCAN calls times their COUNT: Redis walks about COUNT keys a call.
    pub examined: u64,
    /// The bound stopped the SCAN before the cursor came back to 0.
    pub truncated: bool,
}

/// What the key commands read.
#[derive(Debug, Default)]
pub(super) struct KeyReading {
    /// (db, key, size): `redis_key_size`.
    pub sizes: Vec<(u32, String, f64)>,
    /// (db, key, value) of numeric strings: `redis_key_value`.
    pub values: Vec<(u32, String, f64)>,
    /// (queue, state, jobs).
    pub queues: Vec<(String, &'static str, f64)>,
    /// (queue, seconds since its oldest delayed job fell due, 0 if none).
    pub overdue: Vec<(String, f64)>,
    pub scans: Vec<Scan>,
    /// Checks that failed, by kind: a key whose type the check cannot size
    /// (`check:<key>`, `queue:<name>:<state>`), a refused SCAN
    /// (`scan:<pattern>`).
    pub wrong_types: Vec<String>,
}

impl KeyReading {
    /// `redis_key_size`, `redis_key_value` (the exporter's names), the
    /// SCAN bound's gauges and `steward_queue_jobs`.
    pub(super) fn families(&self, labels: &Labels) -> Vec<MetricFamily> {
        let with = |pairs: [(&str, String); 2]| {
            let mut l = labels.clone();
            l.extend(pairs.map(|(k, v)| (k.to_string().into(), v)));
            l
        };
        let mut sizes = MetricFamily::gauge("redis_key_size", "The length or size of \"key\"");
        for (db, key, n) in &self.sizes {
            sizes.push_owned(with([("db", format!("db{db}")), ("key", key.clone())]), *n);
        }
        let mut values = MetricFamily::gauge("redis_key_value", "The value of \"key\"");
        for (db, key, v) in &self.values {
            values.push_owned(with([("db", format!("db{db}")), ("key", key.clone())]), *v);
        }
        let mut examined = MetricFamily::gauge(
            "steward_redis_key_check_scanned_keys",
            "Keys the SCANs of a check_keys pattern could examine in the last scrape (SCAN calls times COUNT); all patterns together stay within check_keys_max_scanned.",
        );
        let mut truncated = MetricFamily::gauge(
            "steward_redis_key_check_truncated",
            "1 when the last scrape stopped SCANning a check_keys pattern at check_keys_max_scanned before covering the keyspace: matching keys may be missing from redis_key_size.",
        );
        for s in &self.scans {
            let l = with([
                ("db", format!("db{}", s.db)),
                ("pattern", s.pattern.clone()),
            ]);
            examined.push_owned(l.clone(), s.examined as f64);
            truncated.push_owned(l, f64::from(u8::from(s.truncated)));
        }
        let mut jobs = MetricFamily::gauge(
            "steward_queue_jobs",
            "Jobs in a queue by state: ready (waiting for a worker), delayed (not due yet), reserved (taken by a worker).",
        );
        for (queue, state, n) in &self.queues {
            jobs.push_owned(
                with([("queue", queue.clone()), ("state", state.to_string())]),
                *n,
            );
        }
        let mut overdue = MetricFamily::gauge(
            "steward_queue_oldest_delayed_job_overdue_seconds",
            "Seconds since the oldest delayed job of a queue fell due (0 when none is due): workers move due jobs to the ready list when they poll, so a growing value means no worker polls this queue.",
        );
        for (queue, seconds) in &self.overdue {
            let mut l = labels.clone();
            l.push(("queue".into(), queue.clone()));
            overdue.push_owned(l, *seconds);
        }
        vec![sizes, values, examined, truncated, jobs, overdue]
    }
}

/// A glob as SCAN MATCH reads it; the exporter treats the same characters
/// as "this is a pattern".
fn is_glob(key: &str) -> bool {
    key.contains(['*', '?', '[', ']', '^'])
}

impl Plan {
    pub(super) fn new(t: &RedisScrapeTarget) -> Result<Plan, String> {
        let mut singles = Vec::new();
        for raw in &t.check_single_keys {
            singles.push(parse_check_key(raw)?);
        }
        let mut patterns = Vec::new();
        for raw in &t.check_keys {
            let (db, key) = parse_check_key(raw)?;
            if is_glob(&key) {
                patterns.push((db, key));
            } else {
                singles.push((db, key));
            }
        }
        let queues = t
            .queues
            .iter()
            .map(|q| (q.clone(), QueueKeys::new(&t.prefix, &t.queue_prefix, q)))
            .collect();
        Ok(Plan {
            singles,
            patterns,
            batch: t.check_keys_batch_size.max(1),
            max_scanned: t.check_keys_max_scanned,
            queues,
            queue_db: t.queue_db,
        })
    }

    pub(super) fn is_empty(&self) -> bool {
        self.singles.is_empty() && self.patterns.is_empty() && self.queues.is_empty()
    }
}

fn cmd(args: &[&str]) -> Vec<Vec<u8>> {
    args.iter().map(|a| a.as_bytes().to_vec()).collect()
}

/// Runs `items` (db, command, tag) grouped by db, SELECTing as needed and
/// db 0 again at the end; returns each tag with its reply.
async fn by_db<T>(
    conn: &mut BufStream<Box<dyn Io>>,
    mut items: Vec<(u32, Vec<Vec<u8>>, T)>,
) -> Result<Vec<(T, Reply)>, String> {
    items.sort_by_key(|(db, _, _)| *db);
    let mut commands = Vec::with_capacity(items.len() + 2);
    let mut tags = Vec::with_capacity(items.len() + 2);
    let mut selected = 0;
    for (db, command, tag) in items {
        if db != selected {
            commands.push(cmd(&["SELECT", &db.to_string()]));
            tags.push(None);
            selected = db;
        }
        commands.push(command);
        tags.push(Some(tag));
    }
    if selected != 0 {
        commands.push(cmd(&["SELECT", "0"]));
        tags.push(None);
    }
    let replies = resp::pipeline(conn, &commands).await?;
    let mut out = Vec::with_capacity(replies.len());
    for (tag, reply) in tags.into_iter().zip(replies) {
        match (tag, reply) {
            (None, Reply::Error(e)) => return Err(format!("SELECT refused: {e}")),
            (None, _) => {}
            (Some(tag), reply) => out.push((tag, reply)),
        }
    }
    Ok(out)
}

/// Expands the patterns with SCAN MATCH, examining at most
/// `max_scanned` keys in all (SCAN calls times COUNT).
async fn scan(
    conn: &mut BufStream<Box<dyn Io>>,
    plan: &Plan,
    found: &mut BTreeSet<(u32, String)>,
    failed: &mut Vec<String>,
) -> Result<Vec<Scan>, String> {
    let mut budget = u64::from(plan.max_scanned);
    let mut scans = Vec::new();
    let mut selected = 0;
    for (db, pattern) in &plan.patterns {
        let mut outcome = Scan {
            db: *db,
            pattern: pattern.clone(),
            examined: 0,
            truncated: false,
        };
        let mut cursor = "0".to_string();
        loop {
            if budget == 0 {
                outcome.truncated = true;
                break;
            }
            let count = budget.min(u64::from(plan.batch));
            let mut commands = Vec::new();
            if *db != selected {
                commands.push(cmd(&["SELECT", &db.to_string()]));
                selected = *db;
            }
            commands.push(cmd(&[
                "SCAN",
                &cursor,
                "MATCH",
                pattern,
                "COUNT",
                &count.to_string(),
            ]));
            let reply = resp::pipeline(conn, &commands).await?;
            if let (2, Some(Reply::Error(e))) = (reply.len(), reply.first()) {
                return Err(format!("SELECT refused: {e}"));
            }
            // SCAN denied (an ACL without @keyspace, a renamed command):
            // that pattern's check fails, not the scrape.
            if let Some(Reply::Error(_)) = reply.last() {
                failed.push(format!("scan:{pattern}"));
                break;
            }
            budget -= count;
            outcome.examined += count;
            let Some(Reply::Array(Some(parts))) = reply.last() else {
                return Err(format!("unexpected SCAN answer {:?}", reply.last()));
            };
            let [next, Reply::Array(Some(keys))] = parts.as_slice() else {
                return Err("a SCAN answer is not [cursor, keys]".into());
            };
            for key in keys {
                // A key name that is not UTF-8 cannot be a label value.
                if let Reply::Bulk(Some(raw)) = key {
                    if let Ok(key) = String::from_utf8(raw.clone()) {
                        found.insert((*db, key));
                    }
                }
            }
            cursor = next
                .text()
                .filter(|c| c.bytes().all(|b| b.is_ascii_digit()) && !c.is_empty())
                .ok_or("a SCAN cursor is not a number")?;
            if cursor == "0" {
                break;
            }
        }
        scans.push(outcome);
    }
    if selected != 0 {
        if let Some(Reply::Error(e)) = resp::pipeline(conn, &[cmd(&["SELECT", "0"])]).await?.pop() {
            return Err(format!("SELECT refused: {e}"));
        }
    }
    Ok(scans)
}

/// One key command of the TYPE round.
enum Probe {
    Type(String),
    Queue {
        queue: String,
        state: &'static str,
    },
    /// ZRANGE 0 0 WITHSCORES of the delayed set: the earliest due time.
    Oldest(String),
}

/// One command of the size round.
enum Size {
    /// PFCOUNT of a string: a HyperLogLog's cardinality, else an error.
    Hll,
    Len(u32, String),
    /// The first bytes of a string, for `redis_key_value`.
    Prefix,
}

/// The O(1) size command of a key type, as the exporter's key checks use.
fn size_command(kind: &str) -> Option<&'static str> {
    Some(match kind {
        "string" => "STRLEN",
        "list" => "LLEN",
        "set" => "SCARD",
        "zset" => "ZCARD",
        "hash" => "HLEN",
        "stream" => "XLEN",
        _ => return None,
    })
}

/// All key checks and queue counts of one scrape.
pub(super) async fn read(
    conn: &mut BufStream<Box<dyn Io>>,
    plan: &Plan,
) -> Result<KeyReading, String> {
    let mut reading = KeyReading::default();
    let mut keys: BTreeSet<(u32, String)> = plan.singles.iter().cloned().collect();
    reading.scans = scan(conn, plan, &mut keys, &mut reading.wrong_types).await?;

    let mut probes = Vec::new();
    for (db, key) in &keys {
        probes.push((*db, cmd(&["TYPE", key]), (*db, Probe::Type(key.clone()))));
    }
    for (queue, k) in &plan.queues {
        for (key, state, command) in [
            (&k.ready, "ready", "LLEN"),
            (&k.delayed, "delayed", "ZCARD"),
            (&k.reserved, "reserved", "ZCARD"),
        ] {
            let probe = Probe::Queue {
                queue: queue.clone(),
                state,
            };
            probes.push((plan.queue_db, cmd(&[command, key]), (plan.queue_db, probe)));
        }
        // O(log n) and one job's payload: the first member of the set
        // scored by available-at time.
        probes.push((
            plan.queue_db,
            cmd(&["ZRANGE", &k.delayed, "0", "0", "WITHSCORES"]),
            (plan.queue_db, Probe::Oldest(queue.clone())),
        ));
    }
    if probes.is_empty() {
        return Ok(reading);
    }
    // TYPE answers decide the size commands of each checked key.
    let mut sizes = Vec::new();
    for ((db, probe), reply) in by_db(conn, probes).await? {
        match (probe, reply) {
            (Probe::Type(key), Reply::Status(kind)) if kind == "none" => {
                // As the exporter: a checked key that does not exist is 0.
                reading.sizes.push((db, key, 0.0));
            }
            (Probe::Type(key), Reply::Status(kind)) => {
                let Some(command) = size_command(&kind) else {
                    reading.wrong_types.push(format!("check:{key}"));
                    continue;
                };
                if kind == "string" {
                    sizes.push((db, cmd(&["PFCOUNT", &key]), Size::Hll));
                    let end = (VALUE_PREFIX_BYTES - 1).to_string();
                    sizes.push((db, cmd(&["GETRANGE", &key, "0", &end]), Size::Prefix));
                }
                sizes.push((db, cmd(&[command, &key]), Size::Len(db, key)));
            }
            (Probe::Type(key), _) => reading.wrong_types.push(format!("check:{key}")),
            (Probe::Queue { queue, state }, Reply::Int(n)) => {
                reading.queues.push((queue, state, n as f64));
            }
            (Probe::Queue { queue, state }, _) => {
                reading.wrong_types.push(format!("queue:{queue}:{state}"));
            }
            (Probe::Oldest(queue), Reply::Array(Some(items))) => {
                // An empty set has nothing overdue; a member's score is its
                // available-at unix time.
                let due = items
                    .get(1)
                    .and_then(Reply::text)
                    .and_then(|t| t.parse::<f64>().ok());
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0.0, |d| d.as_secs_f64());
                let overdue = due.map_or(0.0, |due| (now - due).max(0.0));
                reading.overdue.push((queue, overdue.floor()));
            }
            // A delayed key of the wrong type is already counted by ZCARD.
            (Probe::Oldest(_), _) => {}
        }
    }
    if sizes.is_empty() {
        return Ok(reading);
    }
    // Per key, in order: PFCOUNT and GETRANGE (strings), then the length.
    let mut hll: Option<f64> = None;
    let mut prefix: Option<Vec<u8>> = None;
    for (size, reply) in by_db(conn, sizes).await? {
        match size {
            Size::Hll => hll = reply.int().map(|n| n as f64),
            Size::Prefix => {
                prefix = match reply {
                    Reply::Bulk(Some(b)) => Some(b),
                    _ => None,
                }
            }
            Size::Len(db, key) => {
                let len = reply.int();
                if let Some(n) = hll.take().or(len.map(|n| n as f64)) {
                    reading.sizes.push((db, key.clone(), n));
                }
                // Only a value read whole can be a number.
                if let (Some(text), Some(len)) = (prefix.take(), len) {
                    if (text.len() as i64) == len {
                        if let Some(v) = std::str::from_utf8(&text)
                            .ok()
                            .and_then(|t| t.parse::<f64>().ok())
                        {
                            reading.values.push((db, key, v));
                        }
                    }
                }
            }
        }
    }
    Ok(reading)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_are_scanned_and_plain_names_are_exact() {
        let t = RedisScrapeTarget {
            check_single_keys: vec!["a".into(), "db2=b*".into()],
            check_keys: vec!["db1=sess:*".into(), "plain".into(), "x?y".into()],
            queues: vec!["default".into()],
            ..Default::default()
        };
        let plan = Plan::new(&t).unwrap();
        assert_eq!(
            plan.singles,
            [(0, "a".into()), (2, "b*".into()), (0, "plain".into())]
        );
        assert_eq!(plan.patterns, [(1, "sess:*".into()), (0, "x?y".into())]);
        assert_eq!(plan.queues[0].1.ready, "queues:default");
        assert!(!plan.is_empty());
        assert!(Plan::new(&RedisScrapeTarget::default()).unwrap().is_empty());
    }
}
