//! MySQL and MariaDB logs: the error log (MariaDB's `2026-12-04 15:30:00
//! 0 [Note] ...`, MySQL 8's `2026-12-04T15:30:00.123456Z 0 [System]
//! [MY-010116] [Server] ...`, the old `261204 15:30:00 [Note]`) and the
//! slow query log, one record per query: its `# Key: value` header lines
//! as attributes, `SET timestamp` as the time, the statement as the body.

use super::time::{iso_datetime, parse_offset, Civil};
use super::{severity, BodyPart, Meta, SlowQuery};
use crate::wire::{AttributeSink, Value};
use crate::zone::Zone;

/// An error-log record starts with its date; InnoDB dumps and other
/// continuation lines do not.
pub(super) const ERROR_RECORD_START: &str =
    r"^(\d{4}-\d{2}-\d{2}[ T][ \d]\d:\d{2}:\d{2}|\d{6} [ \d]\d:\d{2}:\d{2})";

/// A slow-log entry starts at `# User@Host:`. The `# Time:` line before
/// it is written only when the second changed, so it cannot start a
/// record; like filebeat's module the time comes from `SET timestamp`.
pub(super) const SLOW_RECORD_START: &str = r"^# User@Host: ";

/// `261204 15:30:00` / `261204  9:05:01` (MariaDB before 10.1.4, MySQL 5.5).
fn short_datetime(s: &str) -> Option<(Civil, &str)> {
    let date = s.get(..6)?;
    if !date.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let rest = s[6..].strip_prefix(' ')?;
    let rest = rest.strip_prefix(' ').unwrap_or(rest);
    let colon = rest.find(':')?;
    let hour: u32 = rest.get(..colon)?.parse().ok()?;
    let (minute, second) = (
        rest.get(colon + 1..colon + 3)?,
        rest.get(colon + 4..colon + 6)?,
    );
    if rest.as_bytes().get(colon + 3) != Some(&b':') {
        return None;
    }
    let d = |r: std::ops::Range<usize>| date[r].parse::<u32>().ok();
    Some((
        Civil {
            year: 2000 + d(0..2)? as i64,
            month: d(2..4)?,
            day: d(4..6)?,
            hour,
            minute: minute.parse().ok()?,
            second: second.parse().ok()?,
            nanos: 0,
        },
        &rest[colon + 6..],
    ))
}

/// `2026-12-05  0:06:01`: MariaDB pads hours 0-9 with a space, not a
/// zero; read as `2026-12-05T00:06:01` (same length, so the rest lines up).
fn padded_hour_datetime(s: &str) -> Option<(Civil, &str)> {
    let b = s.as_bytes();
    if b.len() < 19 || &b[10..12] != b"  " || !b[12].is_ascii_digit() || b[13] != b':' {
        return None;
    }
    let normal = format!("{}T0{}", s.get(..10)?, s.get(12..)?);
    let (civil, rest) = iso_datetime(&normal)?;
    let used = normal.len() - rest.len();
    Some((civil, s.get(used..)?))
}

/// A date as either server writes it, then an optional zone (MySQL 8's
/// `Z` or `+01:00` with `log_timestamps=SYSTEM`): the Unix time and the rest.
fn stamp(s: &str, zone: Zone) -> Option<(u64, &str)> {
    let (civil, rest) = iso_datetime(s)
        .or_else(|| padded_hour_datetime(s))
        .or_else(|| short_datetime(s))?;
    let (offset, rest) = match parse_offset(rest) {
        Some((o, r)) => (Some(o), r),
        None => (None, rest),
    };
    Some((civil.nanos(offset, zone).unwrap_or(0), rest))
}

fn error_level(label: &str) -> Option<(i32, &'static str)> {
    Some(match label {
        "Note" => (severity::INFO, "Note"),
        "System" => (severity::INFO, "System"),
        "Warning" => (severity::WARN, "Warning"),
        "ERROR" | "Error" => (severity::ERROR, "ERROR"),
        _ => return None,
    })
}

/// Takes `[word]` from the start of `s`.
fn bracketed(s: &str) -> Option<(&str, &str)> {
    let rest = s.strip_prefix('[')?;
    let close = rest.find(']')?;
    Some((&rest[..close], rest[close + 1..].trim_start_matches(' ')))
}

/// One error-log record.
pub(super) fn error_log<S: AttributeSink>(text: &str, zone: Zone, attrs: &mut S) -> Option<Meta> {
    let (time_unix_nano, rest) = stamp(text, zone)?;
    let mut rest = rest.trim_start_matches(' ');
    let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
    let mut thread = None;
    if digits > 0 && rest.as_bytes().get(digits) == Some(&b' ') {
        thread = rest[..digits].parse::<i64>().ok();
        rest = rest[digits + 1..].trim_start_matches(' ');
    }
    let (severity, severity_text, rest) = match bracketed(rest) {
        Some((label, after)) => {
            let (n, t) = error_level(label)?;
            (n, t, after)
        }
        // `mysqld_safe Starting mariadbd daemon`: the wrapper script.
        None => (severity::INFO, "", rest),
    };
    if let Some(t) = thread {
        attrs.attribute("thread.id", Value::Int(t));
    }
    let mut rest = rest;
    if let Some((code, after)) = bracketed(rest).filter(|(c, _)| c.starts_with("MY-")) {
        attrs.attribute("mysql.error_code", Value::Str(code));
        rest = after;
        if let Some((subsystem, after)) = bracketed(rest) {
            attrs.attribute("mysql.subsystem", Value::Str(subsystem));
            rest = after;
        }
    }
    Some(Meta {
        time_unix_nano,
        severity,
        severity_text,
        body: Some(BodyPart::Slice(text.len() - rest.len()..text.len())),
        ..Default::default()
    })
}

/// `root[root] @ localhost [127.0.0.1]  Id:     3`.
fn user_host<S: AttributeSink>(s: &str, attrs: &mut S) -> Option<i64> {
    let (user, rest) = s.split_once(" @ ")?;
    let user = user.split('[').next().unwrap_or(user).trim();
    if !user.is_empty() {
        attrs.attribute("user.name", Value::Str(user));
    }
    let (host, rest) = match rest.split_once('[') {
        Some((host, rest)) => (host.trim(), rest),
        None => (rest.trim(), ""),
    };
    let (ip, rest) = rest.split_once(']').unwrap_or(("", rest));
    let client = if ip.is_empty() { host } else { ip };
    if !client.is_empty() {
        attrs.attribute("client.address", Value::Str(client));
    }
    let id = rest.trim().strip_prefix("Id:")?.trim();
    id.parse().ok()
}

/// The slow log's own header, written when the server (re)opens the file.
fn is_file_header(line: &str) -> bool {
    (line.contains(", Version: ") && line.contains("started with:"))
        || line.starts_with("Tcp port: ")
        || line
            .split_whitespace()
            .eq(["Time", "Id", "Command", "Argument"])
}

/// One slow-log entry.
pub(super) fn slow_log<S: AttributeSink>(text: &str, zone: Zone, attrs: &mut S) -> Option<Meta> {
    let mut pairs: Vec<(&str, &str)> = Vec::new();
    let mut user_host_line = None;
    let mut time_line = None;
    let mut timestamp = None;
    let mut schema = None;
    let mut statement = None;
    let mut offset = 0;
    for line in text.split_inclusive('\n') {
        let start = offset;
        offset += line.len();
        let line = line.trim_end_matches(['\n', '\r']);
        if let Some(t) = line.strip_prefix("# Time: ") {
            time_line.get_or_insert(t.trim());
        } else if let Some(uh) = line.strip_prefix("# User@Host: ") {
            user_host_line = Some(uh);
        } else if let Some(kvs) = line.strip_prefix("# ") {
            // `Key: value` pairs; MariaDB leaves an empty `Schema:` bare.
            let mut tokens = kvs.split_whitespace().peekable();
            while let Some(k) = tokens.next() {
                let Some(key) = k.strip_suffix(':') else {
                    continue;
                };
                match tokens.peek() {
                    Some(v) if !v.ends_with(':') => {
                        pairs.push((key, v));
                        tokens.next();
                    }
                    _ => pairs.push((key, "")),
                }
            }
        } else if let Some(db) = line.strip_prefix("use ").and_then(|l| l.strip_suffix(';')) {
            schema = Some(db.trim_matches('`'));
        } else if let Some(ts) = line
            .strip_prefix("SET timestamp=")
            .and_then(|l| l.strip_suffix(';'))
        {
            timestamp = ts.parse::<u64>().ok();
        } else if is_file_header(line) || line.is_empty() {
            continue;
        } else {
            statement = Some(start);
            break;
        }
    }
    // The header the server writes when it opens the file: a record
    // saying so, not a query.
    if user_host_line.is_none() && text.lines().next().is_some_and(is_file_header) {
        let mariadb = text.contains("MariaDB");
        attrs.attribute(
            "db.system.name",
            Value::Str(if mariadb { "mariadb" } else { "mysql" }),
        );
        return Some(Meta {
            severity: severity::INFO,
            severity_text: "INFO",
            ..Default::default()
        });
    }
    // Without these it is no entry (a stray line).
    let user_host_line = user_host_line?;
    let query_time = pairs
        .iter()
        .find(|(k, _)| *k == "Query_time")
        .and_then(|(_, v)| v.parse::<f64>().ok())
        .filter(|v| v.is_finite() && *v >= 0.0)?;
    let mariadb = pairs
        .iter()
        .any(|(k, _)| matches!(*k, "Thread_id" | "QC_hit" | "Rows_affected"));
    attrs.attribute(
        "db.system.name",
        Value::Str(if mariadb { "mariadb" } else { "mysql" }),
    );
    if let Some(id) = user_host(user_host_line, attrs) {
        attrs.attribute("mysql.thread_id", Value::Int(id));
    }
    let mut rows_examined = None;
    for (key, value) in &pairs {
        if value.is_empty() {
            continue;
        }
        let name = match *key {
            "Query_time" => "mysql.query_time",
            "Lock_time" => "mysql.lock_time",
            "Rows_sent" => "mysql.rows_sent",
            "Rows_examined" => {
                rows_examined = value.parse::<u64>().ok();
                "mysql.rows_examined"
            }
            "Schema" => {
                schema.get_or_insert(value);
                continue;
            }
            "Thread_id" | "Id" => continue,
            other => {
                let key = format!("mysql.{}", other.to_ascii_lowercase());
                put_number_or_text(attrs, &key, value);
                continue;
            }
        };
        put_number_or_text(attrs, name, value);
    }
    if let Some(db) = schema.filter(|s| !s.is_empty()) {
        attrs.attribute("db.namespace", Value::Str(db));
    }
    // The statement runs to the end, less a following entry's `# Time:`
    // line and a file header written after a restart.
    let body = statement.map(|start| {
        let mut end = text.len();
        let mut at = start;
        for line in text[start..].split_inclusive('\n') {
            let bare = line.trim_end_matches(['\n', '\r']);
            if at > start && (bare.starts_with("# Time: ") || is_file_header(bare)) {
                end = at;
                break;
            }
            at += line.len();
        }
        let trimmed = text[start..end].trim_end();
        start..start + trimmed.len()
    });
    if let Some(op) = body.as_ref().and_then(|r| operation(&text[r.clone()])) {
        attrs.attribute("db.operation.name", Value::Str(op));
    }
    let time_unix_nano = timestamp
        .and_then(|s| s.checked_mul(1_000_000_000))
        .or_else(|| time_line.and_then(|t| stamp(t, zone)).map(|(t, _)| t))
        .unwrap_or(0);
    Some(Meta {
        time_unix_nano,
        severity: severity::WARN,
        severity_text: "WARN",
        body: body.map(BodyPart::Slice),
        slow_query: Some(SlowQuery {
            duration: query_time,
            rows_examined,
        }),
        ..Default::default()
    })
}

fn put_number_or_text<S: AttributeSink>(attrs: &mut S, key: &str, value: &str) {
    if let Ok(i) = value.parse::<i64>() {
        attrs.attribute(key, Value::Int(i));
    } else if let Some(f) = value.parse::<f64>().ok().filter(|f| f.is_finite()) {
        attrs.attribute(key, Value::F64(f));
    } else {
        attrs.attribute(key, Value::Str(value));
    }
}

/// The statement's first keyword (`SELECT`, `INSERT`, ...), as written.
fn operation(statement: &str) -> Option<&str> {
    let word = statement
        .trim_start()
        .split(|c: char| !c.is_ascii_alphabetic())
        .next()?;
    (!word.is_empty() && word.len() <= 16).then_some(word)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ParserKind;
    use crate::parse::test_support::{attr, body};
    use crate::parse::{parse_with, Options, Parsed};

    fn parse(kind: ParserKind, text: &str) -> Parsed {
        parse_with(kind, &Options::default(), text)
    }

    #[test]
    fn error_log_of_both_servers() {
        let p = parse(
            ParserKind::MysqlError,
            "2026-12-04 15:30:00 0 [Warning] 'proxies_priv' entry '@% root@localhost' ignored",
        );
        assert_eq!((p.severity, p.severity_text), (severity::WARN, "Warning"));
        assert_eq!(attr(&p, "thread.id").as_deref(), Some("0"));
        assert_eq!(body(&p), "'proxies_priv' entry '@% root@localhost' ignored");
        assert_eq!(p.time_unix_nano, 1_796_398_200 * 1_000_000_000);
        // Hours 0-9 are padded with a space by MariaDB.
        let p = parse(
            ParserKind::MysqlError,
            "2026-12-04  9:30:00 0 [Note] InnoDB: Using io_uring",
        );
        assert_eq!((p.severity, p.severity_text), (severity::INFO, "Note"));
        assert_eq!(body(&p), "InnoDB: Using io_uring");
        assert_eq!(p.time_unix_nano, (1_796_398_200 - 6 * 3600) * 1_000_000_000);
        let start = regex::Regex::new(ERROR_RECORD_START).unwrap();
        assert!(start.is_match("2026-12-05  0:06:01 0 [Note] Starting MariaDB"));
        assert!(!start.is_match("  0:06:01 continuation"));
        let p = parse(
            ParserKind::MysqlError,
            "2026-12-04T15:30:00.123456Z 8 [ERROR] [MY-010584] [Repl] Slave SQL: Error",
        );
        assert_eq!(p.severity, severity::ERROR);
        assert_eq!(attr(&p, "mysql.error_code").as_deref(), Some("MY-010584"));
        assert_eq!(attr(&p, "mysql.subsystem").as_deref(), Some("Repl"));
        assert_eq!(body(&p), "Slave SQL: Error");
        assert_eq!(p.time_unix_nano, 1_796_398_200_123_456_000);
        let p = parse(
            ParserKind::MysqlError,
            "261204  9:05:01 [Note] InnoDB: started",
        );
        assert_eq!(body(&p), "InnoDB: started");
        assert_eq!(p.severity, severity::INFO);
        let p = parse(
            ParserKind::MysqlError,
            "2026-12-04 15:30:00 mysqld_safe Starting mariadbd daemon",
        );
        assert_eq!(body(&p), "mysqld_safe Starting mariadbd daemon");
        let p = parse(ParserKind::MysqlError, "InnoDB: continuation");
        assert!(p.body.is_none());
    }

    const MARIADB_SLOW: &str = "# User@Host: root[root] @ localhost []\n# Thread_id: 8  Schema: app  QC_hit: No\n# Query_time: 0.300421  Lock_time: 0.000102  Rows_sent: 1  Rows_examined: 1200\n# Rows_affected: 0  Bytes_sent: 65\nuse app;\nSET timestamp=1796398200;\nSELECT id,\n       name\nFROM items\nWHERE id > SLEEP(0.3);\n# Time: 261204 15:30:05";

    #[test]
    fn slow_log_entry_with_a_multi_line_statement() {
        let p = parse(ParserKind::MysqlSlow, MARIADB_SLOW);
        assert_eq!(
            body(&p),
            "SELECT id,\n       name\nFROM items\nWHERE id > SLEEP(0.3);"
        );
        assert_eq!(attr(&p, "db.system.name").as_deref(), Some("mariadb"));
        assert_eq!(attr(&p, "db.namespace").as_deref(), Some("app"));
        assert_eq!(attr(&p, "db.operation.name").as_deref(), Some("SELECT"));
        assert_eq!(attr(&p, "user.name").as_deref(), Some("root"));
        assert_eq!(attr(&p, "client.address").as_deref(), Some("localhost"));
        assert_eq!(attr(&p, "mysql.query_time").as_deref(), Some("0.300421"));
        assert_eq!(attr(&p, "mysql.rows_examined").as_deref(), Some("1200"));
        assert_eq!(attr(&p, "mysql.bytes_sent").as_deref(), Some("65"));
        assert_eq!(attr(&p, "mysql.qc_hit").as_deref(), Some("No"));
        assert_eq!(p.time_unix_nano, 1_796_398_200 * 1_000_000_000);
        assert_eq!(
            p.slow_query,
            Some(SlowQuery {
                duration: 0.300421,
                rows_examined: Some(1200)
            })
        );
    }

    #[test]
    fn mysql8_slow_entry_and_non_entries() {
        let text = "# Time: 2026-12-04T15:30:00.654321Z\n# User@Host: app[app] @  [10.0.0.7]  Id:    12\n# Query_time: 2.000193  Lock_time: 0.000000 Rows_sent: 1  Rows_examined: 0\nSET timestamp=1796398198;\nselect sleep(2);";
        let p = parse(ParserKind::MysqlSlow, text);
        assert_eq!(attr(&p, "db.system.name").as_deref(), Some("mysql"));
        assert_eq!(attr(&p, "client.address").as_deref(), Some("10.0.0.7"));
        assert_eq!(attr(&p, "mysql.thread_id").as_deref(), Some("12"));
        assert_eq!(attr(&p, "db.operation.name").as_deref(), Some("select"));
        assert_eq!(body(&p), "select sleep(2);");
        assert_eq!(p.time_unix_nano, 1_796_398_198 * 1_000_000_000);
        // The file header alone, and garbage, are not entries.
        let header = "/usr/sbin/mariadbd, Version: 10.11.19-MariaDB-0+deb12u1-log (Debian 12). started with:\nTcp port: 3306  Unix socket: /run/mysqld/mysqld.sock\nTime                Id Command  Argument";
        let p = parse(ParserKind::MysqlSlow, header);
        assert!(p.slow_query.is_none() && p.body.is_none());
        assert_eq!(p.severity, severity::INFO);
        assert_eq!(attr(&p, "db.system.name").as_deref(), Some("mariadb"));
        // MariaDB without a default database leaves `Schema:` empty.
        let p = parse(
            ParserKind::MysqlSlow,
            "# User@Host: root[root] @ localhost []\n# Thread_id: 7  Schema:   QC_hit: No\n# Query_time: 0.300303  Lock_time: 0.000000  Rows_sent: 1  Rows_examined: 0\nSET timestamp=1796399938;\nSELECT SLEEP(0.3);",
        );
        assert_eq!(attr(&p, "mysql.qc_hit").as_deref(), Some("No"));
        assert!(attr(&p, "db.namespace").is_none());
        let p = parse(
            ParserKind::MysqlSlow,
            "# User@Host: x\n# Query_time: NaN\nSELECT 1;",
        );
        assert!(p.slow_query.is_none() && p.attributes.is_empty());
    }
}
