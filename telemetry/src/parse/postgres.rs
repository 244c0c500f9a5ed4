//! PostgreSQL's server log: stderr lines behind a `log_line_prefix` (the
//! default `%m [%p] `, Debian's `%m [%p] %q%u@%d `, pgBadger's
//! `%t [%p]: [%l-1] user=%u,db=%d,app=%a,client=%h ` and alike: the prefix
//! is read by shape, not configured), and `jsonlog` (PostgreSQL 15+). A
//! message keeps its DETAIL, HINT, CONTEXT, QUERY and STATEMENT lines and
//! the tab-indented lines of multi-line statements; `duration:` lines
//! feed the slow-query histogram.

use std::borrow::Cow;

use super::time::{iso_datetime, parse_offset};
use super::{severity, string_value, BodyPart, Meta, SlowQuery};
use crate::wire::{AttributeSink, Value};
use crate::zone::Zone;

/// A record starts at a line whose first `WORD:  ` (PostgreSQL puts two
/// spaces after the level) is a message level, so the DETAIL/HINT/...
/// lines that follow and tab-indented lines continue it; jsonlog lines
/// start one each. The prefix before the level holds no `:  `.
pub(super) const RECORD_START: &str = r"^(\{|[^\s](?:[^:\n]|:[^ \n]|: [^ \n])*?\b(?:LOG|ERROR|WARNING|FATAL|PANIC|NOTICE|INFO|DEBUG[1-5]):  )";

fn level(word: &str) -> Option<(i32, &'static str)> {
    Some(match word {
        "DEBUG1" | "DEBUG2" | "DEBUG3" | "DEBUG4" | "DEBUG5" => (severity::DEBUG, "DEBUG"),
        "INFO" => (severity::INFO, "INFO"),
        "LOG" => (severity::INFO, "LOG"),
        "NOTICE" => (severity::NOTICE, "NOTICE"),
        "WARNING" => (severity::WARN, "WARNING"),
        "ERROR" => (severity::ERROR, "ERROR"),
        "FATAL" => (severity::FATAL, "FATAL"),
        // FATAL4: above FATAL, the whole server restarts.
        "PANIC" => (24, "PANIC"),
        _ => return None,
    })
}

/// Where the lines after a message go.
fn part_key(word: &str) -> Option<&'static str> {
    Some(match word {
        "DETAIL" => "postgresql.detail",
        "HINT" => "postgresql.hint",
        "CONTEXT" => "postgresql.context",
        "QUERY" => "postgresql.internal_query",
        "LOCATION" => "postgresql.location",
        "STATEMENT" => "db.query.text",
        _ => return None,
    })
}

/// The `WORD:  ` of a line: the word, where the line's prefix ends and
/// where its text starts.
fn split_level(line: &str) -> Option<(&str, usize, usize)> {
    let mut from = 0;
    while let Some(i) = line[from..].find(":  ") {
        let at = from + i;
        let word_start = line[..at].rfind(' ').map_or(0, |s| s + 1);
        let word = &line[word_start..at];
        if level(word).is_some() || part_key(word).is_some() {
            return Some((word, word_start, at + 3));
        }
        from = at + 3;
    }
    None
}

/// Text PostgreSQL continued with `\n\t`: the tabs dropped.
fn untab(s: &str) -> Cow<'_, str> {
    if s.contains("\n\t") {
        Cow::Owned(s.replace("\n\t", "\n"))
    } else {
        Cow::Borrowed(s)
    }
}

/// `2026-12-04 15:30:00.123 UTC` (`%m`, `%t`, jsonlog's `timestamp`).
fn prefix_time(s: &str, zone: Zone) -> Option<(u64, &str)> {
    let (civil, rest) = iso_datetime(s)?;
    let (offset, rest) = match rest.strip_prefix(' ') {
        Some(r) => {
            let abbrev_len = r.find(' ').unwrap_or(r.len());
            let abbrev = &r[..abbrev_len];
            let offset = match abbrev {
                "UTC" | "GMT" | "Z" => Some(0),
                _ => parse_offset(abbrev)
                    .filter(|(_, r)| r.is_empty())
                    .map(|(o, _)| o),
            };
            // Another abbreviation (CET, EST): the source's zone, which
            // knows the daylight-saving changes the abbreviation implies.
            (offset, &r[abbrev_len..])
        }
        None => (None, rest),
    };
    Some((civil.nanos(offset, zone).unwrap_or(0), rest))
}

/// `[1234]`, `[1234-1]`, `user@db`, `user=x,db=y,app=z,client=h` in a prefix.
fn prefix_fields<S: AttributeSink>(prefix: &str, attrs: &mut S) {
    let mut brackets = 0;
    for token in prefix.split([' ', ',']).filter(|t| !t.is_empty()) {
        let token = token.trim_end_matches(':');
        if let Some(inner) = token.strip_prefix('[').and_then(|t| t.strip_suffix(']')) {
            // `[%p]` or `[%p-%l]` first; pgBadger's `[%l-1]` after it.
            let (first, second) = inner.split_once('-').unwrap_or((inner, ""));
            let (Ok(first), second) = (first.parse::<i64>(), second.parse::<i64>()) else {
                continue;
            };
            brackets += 1;
            match (brackets, second) {
                (1, second) => {
                    attrs.attribute("process.pid", Value::Int(first));
                    if let Ok(l) = second {
                        attrs.attribute("postgresql.log_line", Value::Int(l));
                    }
                }
                (2, _) => attrs.attribute("postgresql.log_line", Value::Int(first)),
                _ => {}
            }
        } else if let Some((key, value)) = token.split_once('=') {
            let name = match key {
                "user" => "user.name",
                "db" => "db.namespace",
                "app" => "postgresql.application_name",
                "client" | "host" => "client.address",
                _ => continue,
            };
            if !value.is_empty() && value != "[unknown]" {
                attrs.attribute(name, Value::Str(value));
            }
        } else if let Some((user, db)) = token.split_once('@') {
            if !user.is_empty() && user != "[unknown]" {
                attrs.attribute("user.name", Value::Str(user));
            }
            if !db.is_empty() && db != "[unknown]" {
                attrs.attribute("db.namespace", Value::Str(db));
            }
        }
    }
}

/// `duration: 2003.456 ms  statement: SELECT ...` (also `execute <name>:`):
/// the duration in seconds and the statement.
fn duration<S: AttributeSink>(message: &str, attrs: &mut S) -> Option<SlowQuery> {
    let rest = message.strip_prefix("duration: ")?;
    let (ms, rest) = rest.split_once(" ms")?;
    let seconds = ms
        .parse::<f64>()
        .ok()
        .filter(|v| v.is_finite() && *v >= 0.0)?
        / 1000.0;
    attrs.attribute("postgresql.duration", Value::F64(seconds));
    let rest = rest.trim_start();
    let statement = rest.strip_prefix("statement: ").or_else(|| {
        let (kind, text) = rest.split_once(": ")?;
        matches!(kind.split(' ').next(), Some("execute" | "parse" | "bind")).then_some(text)
    });
    if let Some(s) = statement {
        attrs.attribute("db.query.text", Value::Str(&untab(s)));
    }
    Some(SlowQuery {
        duration: seconds,
        rows_examined: None,
    })
}

/// One stderr-format record (a message and the lines that belong to it).
fn text_record<S: AttributeSink>(text: &str, zone: Zone, attrs: &mut S) -> Option<Meta> {
    let first_end = text.find('\n').unwrap_or(text.len());
    let (word, prefix_end, message_start) = split_level(&text[..first_end])?;
    let (severity, severity_text) = level(word)?;
    let prefix = &text[..prefix_end];
    let (time_unix_nano, rest_of_prefix) = match prefix_time(prefix, zone) {
        Some((t, rest)) => (t, rest),
        None => (0, prefix),
    };
    // Segments: the message, then each DETAIL/HINT/... line with its
    // tab-indented continuation lines.
    let mut parts: Vec<(&'static str, usize, usize)> = Vec::new();
    let mut message_end = text.len();
    let mut offset = first_end;
    while offset < text.len() {
        let line_start = offset + 1;
        let line_end = text[line_start..]
            .find('\n')
            .map_or(text.len(), |i| line_start + i);
        let line = &text[line_start..line_end];
        if !line.starts_with(['\t', ' ']) {
            if let Some((w, _, start)) = split_level(line) {
                if let Some(key) = part_key(w) {
                    if parts.is_empty() {
                        message_end = offset;
                    } else if let Some(last) = parts.last_mut() {
                        last.2 = offset;
                    }
                    parts.push((key, line_start + start, text.len()));
                }
            }
        }
        offset = line_end;
    }
    prefix_fields(rest_of_prefix, attrs);
    attrs.attribute("db.system.name", Value::Str("postgresql"));
    let message = &text[message_start..message_end];
    let slow_query = duration(message, attrs);
    if slow_query.is_none() {
        if let Some(s) = message.strip_prefix("statement: ") {
            attrs.attribute("db.query.text", Value::Str(&untab(s)));
        }
    }
    for (key, start, end) in parts {
        attrs.attribute(key, Value::Str(&untab(&text[start..end])));
    }
    let body = match untab(message) {
        Cow::Borrowed(_) => BodyPart::Slice(message_start..message_end),
        Cow::Owned(s) => BodyPart::Any(string_value(s)),
    };
    Some(Meta {
        time_unix_nano,
        severity,
        severity_text,
        body: Some(body),
        slow_query,
        ..Default::default()
    })
}

/// One jsonlog line.
fn json_record<S: AttributeSink>(text: &str, zone: Zone, attrs: &mut S) -> Option<Meta> {
    let serde_json::Value::Object(map) = serde_json::from_str(text.trim()).ok()? else {
        return None;
    };
    let (severity, severity_text) = map
        .get("error_severity")
        .and_then(serde_json::Value::as_str)
        .and_then(level)?;
    let time_unix_nano = map
        .get("timestamp")
        .and_then(serde_json::Value::as_str)
        .and_then(|t| prefix_time(t, zone))
        .map_or(0, |(t, _)| t);
    attrs.attribute("db.system.name", Value::Str("postgresql"));
    let mut slow_query = None;
    for (key, value) in &map {
        let name = match key.as_str() {
            "message" => {
                if let Some(m) = value.as_str() {
                    slow_query = duration(m, attrs);
                    if let (None, Some(s)) = (slow_query, m.strip_prefix("statement: ")) {
                        attrs.attribute("db.query.text", Value::Str(s));
                    }
                }
                continue;
            }
            "error_severity" | "timestamp" => continue,
            "pid" => "process.pid",
            "user" => "user.name",
            "dbname" => "db.namespace",
            "remote_host" => "client.address",
            "remote_port" => "client.port",
            "state_code" => "db.response.status_code",
            "statement" => "db.query.text",
            "detail" => "postgresql.detail",
            "hint" => "postgresql.hint",
            "context" => "postgresql.context",
            "internal_query" => "postgresql.internal_query",
            other => {
                super::json::flatten_into(&format!("postgresql.{other}"), value, attrs, 1);
                continue;
            }
        };
        super::json::flatten_into(name, value, attrs, 1);
    }
    let body = map
        .get("message")
        .and_then(serde_json::Value::as_str)
        .map(|m| BodyPart::Any(string_value(m)));
    Some(Meta {
        time_unix_nano,
        severity,
        severity_text,
        body,
        slow_query,
        ..Default::default()
    })
}

/// One record of either format.
pub(super) fn parse<S: AttributeSink>(text: &str, zone: Zone, attrs: &mut S) -> Option<Meta> {
    if text.starts_with('{') {
        json_record(text, zone, attrs)
    } else {
        text_record(text, zone, attrs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ParserKind;
    use crate::parse::test_support::{attr, body};
    use crate::parse::{parse_with, Options, Parsed};

    fn pg(text: &str) -> Parsed {
        parse_with(ParserKind::Postgresql, &Options::default(), text)
    }

    #[test]
    fn debian_prefix_error_with_detail_hint_and_multi_line_statement() {
        let text = "2026-12-04 15:30:00.123 UTC [4242] postgres@app ERROR:  duplicate key value violates unique constraint \"t_pkey\"\n2026-12-04 15:30:00.123 UTC [4242] postgres@app DETAIL:  Key (id)=(1) already exists.\n2026-12-04 15:30:00.123 UTC [4242] postgres@app HINT:  Look: it is there.\n2026-12-04 15:30:00.123 UTC [4242] postgres@app STATEMENT:  INSERT INTO t\n\tVALUES (1);";
        let p = pg(text);
        assert_eq!((p.severity, p.severity_text), (severity::ERROR, "ERROR"));
        assert_eq!(
            body(&p),
            "duplicate key value violates unique constraint \"t_pkey\""
        );
        assert_eq!(attr(&p, "process.pid").as_deref(), Some("4242"));
        assert_eq!(attr(&p, "user.name").as_deref(), Some("postgres"));
        assert_eq!(attr(&p, "db.namespace").as_deref(), Some("app"));
        assert_eq!(
            attr(&p, "postgresql.detail").as_deref(),
            Some("Key (id)=(1) already exists.")
        );
        assert_eq!(
            attr(&p, "postgresql.hint").as_deref(),
            Some("Look: it is there.")
        );
        assert_eq!(
            attr(&p, "db.query.text").as_deref(),
            Some("INSERT INTO t\nVALUES (1);")
        );
        assert_eq!(p.time_unix_nano, 1_796_398_200_123_000_000);
    }

    #[test]
    fn record_start_regex_groups_what_belongs_together() {
        let re = regex::Regex::new(RECORD_START).unwrap();
        for start in [
            "2026-12-04 15:30:00.123 UTC [4242] LOG:  database system is ready",
            "2026-12-04 15:30:00 UTC [4242]: [3-1] user=app,db=app,app=psql,client=127.0.0.1 ERROR:  x",
            "2026-12-04 15:30:00.123 CET [1] postgres@app FATAL:  password authentication failed",
            "{\"timestamp\":\"2026-12-04 15:30:00.123 UTC\"}",
        ] {
            assert!(re.is_match(start), "{start}");
        }
        for cont in [
            "2026-12-04 15:30:00.123 UTC [4242] postgres@app DETAIL:  Key (id)=(1) ERROR:  x",
            "2026-12-04 15:30:00.123 UTC [4242] STATEMENT:  SELECT 'LOG:  no'",
            "\tFROM t",
            "  continued",
        ] {
            assert!(!re.is_match(cont), "{cont}");
        }
    }

    #[test]
    fn duration_lines_and_other_prefixes() {
        let p = pg("2026-12-04 16:30:00.5 CET [77]: [5-1] user=app,db=shop,app=psql,client=10.0.0.2 LOG:  duration: 2003.456 ms  statement: SELECT pg_sleep(2)\n\t, 1");
        assert_eq!(attr(&p, "postgresql.duration").as_deref(), Some("2.003456"));
        assert_eq!(
            attr(&p, "db.query.text").as_deref(),
            Some("SELECT pg_sleep(2)\n, 1")
        );
        assert_eq!(
            attr(&p, "postgresql.application_name").as_deref(),
            Some("psql")
        );
        assert_eq!(attr(&p, "client.address").as_deref(), Some("10.0.0.2"));
        assert_eq!(attr(&p, "postgresql.log_line").as_deref(), Some("5"));
        assert_eq!(p.slow_query.map(|q| q.duration), Some(2.003456));
        // CET is not known by itself: the source's zone (UTC here).
        assert_eq!(p.time_unix_nano, 1_796_401_800_500_000_000);
        let paris = Options {
            zone: Zone::parse("Europe/Paris").unwrap(),
        };
        let p = parse_with(
            ParserKind::Postgresql,
            &paris,
            "2026-12-04 16:30:00.5 CET [77] LOG:  x",
        );
        assert_eq!(p.time_unix_nano, 1_796_398_200_500_000_000);
        let p = pg("2026-12-04 17:30:00 +02 [77] LOG:  checkpoint complete");
        assert_eq!(p.time_unix_nano, 1_796_398_200 * 1_000_000_000);
        assert!(pg("no level here").body.is_none());
    }

    #[test]
    fn jsonlog() {
        let p = pg(
            r#"{"timestamp":"2026-12-04 15:30:00.123 UTC","user":"postgres","dbname":"app","pid":4242,"remote_host":"127.0.0.1","session_id":"6750","line_num":3,"ps":"SELECT","error_severity":"ERROR","state_code":"42P01","message":"relation \"nope\" does not exist","statement":"SELECT * FROM nope;","application_name":"psql","backend_type":"client backend","query_id":0}"#,
        );
        assert_eq!(p.severity, severity::ERROR);
        assert_eq!(body(&p), "relation \"nope\" does not exist");
        assert_eq!(
            attr(&p, "db.response.status_code").as_deref(),
            Some("42P01")
        );
        assert_eq!(
            attr(&p, "db.query.text").as_deref(),
            Some("SELECT * FROM nope;")
        );
        assert_eq!(
            attr(&p, "postgresql.backend_type").as_deref(),
            Some("client backend")
        );
        assert_eq!(attr(&p, "process.pid").as_deref(), Some("4242"));
        assert_eq!(p.time_unix_nano, 1_796_398_200_123_000_000);
    }
}
