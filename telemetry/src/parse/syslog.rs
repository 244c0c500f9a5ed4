//! Syslog files (RFC 5424; RFC 3164, the traditional file format, with
//! or without `<PRI>`; rsyslog's high-precision `2026-12-04T15:30:00.123456+00:00
//! host tag[pid]: msg`) and supervisor: supervisord's own log, and its
//! programs' output files, whose lines stay plain and are tagged with the
//! program and stream named by the file.

use std::time::{SystemTime, UNIX_EPOCH};

use super::time::{hms, iso_datetime, month_number, parse_offset, Civil};
use super::{severity, BodyPart, Meta};
use crate::wire::{AttributeSink, Value};
use crate::zone::Zone;

/// Syslog severities 0 (emerg) to 7 (debug).
fn syslog_severity(s: u8) -> (i32, &'static str) {
    match s {
        0 => (severity::FATAL, "emerg"),
        1 => (severity::ALERT, "alert"),
        2 => (severity::CRIT, "crit"),
        3 => (severity::ERROR, "err"),
        4 => (severity::WARN, "warning"),
        5 => (severity::NOTICE, "notice"),
        6 => (severity::INFO, "info"),
        _ => (severity::DEBUG, "debug"),
    }
}

/// `<PRI>` (0..=191): facility and severity, and the rest.
fn pri(s: &str) -> Option<(u8, u8, &str)> {
    let rest = s.strip_prefix('<')?;
    let close = rest.bytes().take(4).position(|b| b == b'>')?;
    let n: u8 = rest[..close].parse().ok().filter(|n| *n <= 191)?;
    Some((n >> 3, n & 7, &rest[close + 1..]))
}

fn take_field(s: &str) -> Option<(&str, &str)> {
    let (field, rest) = s.split_once(' ').unwrap_or((s, ""));
    (!field.is_empty()).then_some((field, rest))
}

/// `[id k="v" k2="v\"2"][id2]`: the attributes, and the rest after it.
fn structured_data<'a, S: AttributeSink>(s: &'a str, attrs: &mut S) -> Option<&'a str> {
    if let Some(rest) = s.strip_prefix('-') {
        return Some(rest);
    }
    let mut rest = s;
    while let Some(element) = rest.strip_prefix('[') {
        let id_end = element.find([' ', ']'])?;
        let id = &element[..id_end];
        let mut params = &element[id_end..];
        loop {
            params = params.trim_start_matches(' ');
            if let Some(after) = params.strip_prefix(']') {
                rest = after;
                break;
            }
            let (name, value) = params.split_once("=\"")?;
            let mut out = String::new();
            let mut chars = value.char_indices();
            let end = loop {
                let (i, c) = chars.next()?;
                match c {
                    '\\' => {
                        let (_, next) = chars.next()?;
                        if !matches!(next, '"' | '\\' | ']') {
                            out.push('\\');
                        }
                        out.push(next);
                    }
                    '"' => break i,
                    c => out.push(c),
                }
            };
            attrs.attribute(
                &format!("syslog.structured_data.{id}.{name}"),
                Value::Str(&out),
            );
            params = &value[end + 1..];
        }
    }
    Some(rest)
}

/// `tag[pid]: ` / `tag: ` at the start of a 3164 message.
fn tag<S: AttributeSink>(s: &str, attrs: &mut S) -> usize {
    let Some(colon) = s.find(": ") else {
        return 0;
    };
    let tag = &s[..colon];
    if tag.is_empty() || tag.contains(' ') || tag.len() > 64 {
        return 0;
    }
    let (name, pid) = match tag.strip_suffix(']').and_then(|t| t.split_once('[')) {
        Some((name, pid)) => (name, Some(pid)),
        None => (tag, None),
    };
    attrs.attribute("syslog.appname", Value::Str(name));
    if let Some(pid) = pid {
        match pid.parse::<i64>() {
            Ok(p) => attrs.attribute("process.pid", Value::Int(p)),
            Err(_) => attrs.attribute("syslog.procid", Value::Str(pid)),
        }
    }
    colon + 2
}

fn now_unix_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// `Dec  4 15:30:00` has no year: this year, or last year when that
/// would put the line more than a day in the future (read in January).
fn bsd_time(s: &str, zone: Zone, now_secs: i64) -> Option<(u64, &str)> {
    let month = month_number(s.get(..3)?)?;
    let rest = s[3..].strip_prefix(' ')?;
    let rest = rest.strip_prefix(' ').unwrap_or(rest);
    let (day, rest) = rest.split_once(' ')?;
    let day: u32 = day.parse().ok()?;
    let (hour, minute, second, nanos, rest) = hms(rest)?;
    let year = 1970 + now_secs.div_euclid(31_556_952);
    let at = |year| {
        Civil {
            year,
            month,
            day,
            hour,
            minute,
            second,
            nanos,
        }
        .nanos(None, zone)
    };
    // The candidate years around `now`: the latest not past tomorrow.
    let candidates: Vec<u64> = [year + 1, year, year - 1]
        .into_iter()
        .filter_map(at)
        .collect();
    let t = candidates
        .iter()
        .copied()
        .find(|t| (t / 1_000_000_000) as i64 <= now_secs + 86_400)
        .or(candidates.last().copied())?;
    Some((t, rest))
}

pub(super) fn parse_at<S: AttributeSink>(
    text: &str,
    zone: Zone,
    now_secs: i64,
    attrs: &mut S,
) -> Option<Meta> {
    let (prival, rest) = match pri(text) {
        Some((facility, sev, rest)) => (Some((facility, sev)), rest),
        None => (None, text),
    };
    let (severity, severity_text) = prival.map_or((0, ""), |(_, s)| syslog_severity(s));
    // RFC 5424: `1 TIMESTAMP HOST APP PROCID MSGID SD MSG`.
    if let Some(rest) = rest.strip_prefix("1 ") {
        let (stamp, rest) = take_field(rest)?;
        let time_unix_nano = match stamp {
            "-" => 0,
            s => {
                let (civil, zone_text) = iso_datetime(s)?;
                let (offset, tail) = parse_offset(zone_text)?;
                if !tail.is_empty() {
                    return None;
                }
                civil.nanos(Some(offset), zone).unwrap_or(0)
            }
        };
        let (host, rest) = take_field(rest)?;
        let (app, rest) = take_field(rest)?;
        let (procid, rest) = take_field(rest)?;
        let (msgid, rest) = take_field(rest)?;
        // Attributes from here: the header parsed.
        let mut named = |key: &str, v: &str| {
            if v != "-" {
                attrs.attribute(key, Value::Str(v));
            }
        };
        named("syslog.hostname", host);
        named("syslog.appname", app);
        named("syslog.msgid", msgid);
        match procid.parse::<i64>() {
            Ok(p) => attrs.attribute("process.pid", Value::Int(p)),
            Err(_) => {
                if procid != "-" {
                    attrs.attribute("syslog.procid", Value::Str(procid));
                }
            }
        }
        if let Some((facility, _)) = prival {
            attrs.attribute("syslog.facility", Value::Int(facility as i64));
        }
        let msg = match structured_data(rest, attrs) {
            Some(after) => after.strip_prefix(' ').unwrap_or(after),
            None => rest,
        };
        let msg = msg.strip_prefix('\u{feff}').unwrap_or(msg);
        return Some(Meta {
            time_unix_nano,
            severity,
            severity_text,
            body: Some(BodyPart::Slice(text.len() - msg.len()..text.len())),
            ..Default::default()
        });
    }
    // RFC 3164 / rsyslog file formats: TIMESTAMP HOST TAG: MSG.
    let (time_unix_nano, rest) = match iso_datetime(rest) {
        Some((civil, after)) => {
            let (offset, after) = match parse_offset(after) {
                Some((o, a)) => (Some(o), a),
                None => (None, after),
            };
            (civil.nanos(offset, zone).unwrap_or(0), after)
        }
        None => bsd_time(rest, zone, now_secs)?,
    };
    let rest = rest.strip_prefix(' ')?;
    let (host, rest) = take_field(rest)?;
    attrs.attribute("syslog.hostname", Value::Str(host));
    if let Some((facility, _)) = prival {
        attrs.attribute("syslog.facility", Value::Int(facility as i64));
    }
    let msg = &rest[tag(rest, attrs)..];
    Some(Meta {
        time_unix_nano,
        severity,
        severity_text,
        body: Some(BodyPart::Slice(text.len() - msg.len()..text.len())),
        ..Default::default()
    })
}

/// One syslog line.
pub(super) fn parse<S: AttributeSink>(text: &str, zone: Zone, attrs: &mut S) -> Option<Meta> {
    parse_at(text, zone, now_unix_secs(), attrs)
}

/// supervisord's log (`2026-12-04 15:30:00,123 INFO spawned: 'worker'
/// with pid 7`); a program's output is plain (`None`), its program and
/// stream come from the file name ([`supervisor_file_tags`]).
pub(super) fn supervisor<S: AttributeSink>(text: &str, zone: Zone, attrs: &mut S) -> Option<Meta> {
    let (civil, rest) = iso_datetime(text)?;
    let rest = rest.strip_prefix(' ')?;
    let (level, message) = rest.split_once(' ')?;
    let (severity, severity_text) = match level {
        "CRIT" => (severity::CRIT, "CRIT"),
        "ERRO" => (severity::ERROR, "ERRO"),
        "WARN" => (severity::WARN, "WARN"),
        "INFO" => (severity::INFO, "INFO"),
        "DEBG" => (severity::DEBUG, "DEBG"),
        "TRAC" | "BLAT" => (1, if level == "TRAC" { "TRAC" } else { "BLAT" }),
        _ => return None,
    };
    // `spawned: 'worker' with pid 7`, `exited: worker (exit status 1; not
    // expected)`, `success: worker entered RUNNING state, ...`.
    let program = message.split_once(": ").and_then(|(event, what)| {
        matches!(
            event,
            "spawned" | "exited" | "success" | "gave up" | "stopped" | "waiting for"
        )
        .then(|| {
            what.trim_start_matches('\'')
                .split(['\'', ' '])
                .next()
                .unwrap_or("")
        })
        .filter(|p| !p.is_empty())
    });
    if let Some(p) = program {
        attrs.attribute("supervisor.program", Value::Str(p));
    }
    Some(Meta {
        time_unix_nano: civil.nanos(None, zone).unwrap_or(0),
        severity,
        severity_text,
        body: Some(BodyPart::Slice(text.len() - message.len()..text.len())),
        ..Default::default()
    })
}

/// The program and stream a supervisor output file is named after:
/// `worker-stdout---supervisor-x1y2z3.log` (`AUTO`) gives `worker` and
/// `stdout`; a configured `stdout_logfile=/var/log/worker.log`, `worker`.
/// supervisord's own log gives nothing.
pub fn supervisor_file_tags(path: &str) -> Vec<(&'static str, String)> {
    let name = path.rsplit('/').next().unwrap_or(path);
    let stem = name.strip_suffix(".log").unwrap_or(name);
    if stem.starts_with("supervisord") || stem.is_empty() {
        return Vec::new();
    }
    if let Some((head, _)) = stem.split_once("---") {
        for stream in ["stdout", "stderr"] {
            if let Some(program) = head.strip_suffix(stream).and_then(|p| p.strip_suffix('-')) {
                return vec![
                    ("supervisor.program", program.to_string()),
                    ("log.iostream", stream.to_string()),
                ];
            }
        }
    }
    vec![("supervisor.program", stem.to_string())]
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::common::v1::{any_value, KeyValue};

    fn run(text: &str, now: i64) -> (Option<Meta>, Vec<KeyValue>) {
        let mut attrs = Vec::new();
        let m = parse_at(text, Zone::Utc, now, &mut attrs);
        (m, attrs)
    }

    fn get<'a>(attrs: &'a [KeyValue], key: &str) -> Option<&'a any_value::Value> {
        attrs
            .iter()
            .find(|k| k.key == key)
            .and_then(|k| k.value.as_ref()?.value.as_ref())
    }

    const DEC_2026: i64 = 1_796_398_200; // 2026-12-04T15:30:00Z

    #[test]
    fn rfc5424_with_structured_data() {
        let text = "<165>1 2026-12-04T15:30:00.003Z web01 app 811 ID47 [exampleSDID@32473 iut=\"3\" eventSource=\"App\\\"lication\"][x@1 a=\"b\"] \u{feff}An application event";
        let (m, attrs) = run(text, DEC_2026);
        let m = m.unwrap();
        assert_eq!((m.severity, m.severity_text), (severity::NOTICE, "notice"));
        assert_eq!(
            m.time_unix_nano,
            DEC_2026 as u64 * 1_000_000_000 + 3_000_000
        );
        let Some(BodyPart::Slice(r)) = m.body else {
            panic!()
        };
        assert_eq!(&text[r], "An application event");
        assert!(matches!(
            get(&attrs, "syslog.facility"),
            Some(any_value::Value::IntValue(20))
        ));
        assert!(matches!(
            get(&attrs, "process.pid"),
            Some(any_value::Value::IntValue(811))
        ));
        assert!(matches!(
            get(&attrs, "syslog.structured_data.exampleSDID@32473.eventSource"),
            Some(any_value::Value::StringValue(s)) if s == "App\"lication"
        ));
        assert!(get(&attrs, "syslog.structured_data.x@1.a").is_some());
        // Nil values and no message.
        let (m, attrs) = run("<14>1 - - - - - -", DEC_2026);
        assert_eq!(m.unwrap().time_unix_nano, 0);
        assert!(attrs.iter().all(|k| k.key == "syslog.facility"));
    }

    #[test]
    fn rfc3164_and_the_missing_year() {
        let text = "Dec  4 15:30:00 web01 sshd[1234]: Accepted publickey for deploy";
        let (m, attrs) = run(text, DEC_2026);
        let m = m.unwrap();
        assert_eq!(m.time_unix_nano, DEC_2026 as u64 * 1_000_000_000);
        assert_eq!(m.severity, 0);
        let Some(BodyPart::Slice(r)) = m.body else {
            panic!()
        };
        assert_eq!(&text[r], "Accepted publickey for deploy");
        assert!(
            matches!(get(&attrs, "syslog.appname"), Some(any_value::Value::StringValue(s)) if s == "sshd")
        );
        // Read on 2027-01-02: a December line is from 2026.
        let (m, _) = run(text, DEC_2026 + 29 * 86_400);
        assert_eq!(m.unwrap().time_unix_nano, DEC_2026 as u64 * 1_000_000_000);
        let (m, _) = run("<11>Dec  4 15:30:00 web01 cron: x", DEC_2026);
        assert_eq!(m.unwrap().severity, severity::ERROR);
        // rsyslog's precise format.
        let (m, _) = run(
            "2026-12-04T16:30:00.123456+01:00 web01 kernel: [  1.0] x",
            DEC_2026,
        );
        assert_eq!(
            m.unwrap().time_unix_nano,
            DEC_2026 as u64 * 1_000_000_000 + 123_456_000
        );
        for bad in ["hello", "<999>1 x", "Dec 44 15:30:00 h x", "<13>"] {
            assert!(run(bad, DEC_2026).0.is_none(), "{bad}");
        }
    }

    #[test]
    fn supervisor_log_and_file_names() {
        let mut attrs = Vec::new();
        let m = supervisor(
            "2026-12-04 15:30:00,123 INFO spawned: 'worker_00' with pid 7",
            Zone::Utc,
            &mut attrs,
        )
        .unwrap();
        assert_eq!(m.severity, severity::INFO);
        assert_eq!(
            m.time_unix_nano,
            DEC_2026 as u64 * 1_000_000_000 + 123_000_000
        );
        assert!(
            matches!(get(&attrs, "supervisor.program"), Some(any_value::Value::StringValue(s)) if s == "worker_00")
        );
        assert!(supervisor("  Processing: App\\Jobs\\X", Zone::Utc, &mut Vec::new()).is_none());
        assert_eq!(
            supervisor_file_tags("/var/log/supervisor/queue-worker-stderr---supervisor-k2j3.log"),
            vec![
                ("supervisor.program", "queue-worker".to_string()),
                ("log.iostream", "stderr".to_string())
            ]
        );
        assert_eq!(
            supervisor_file_tags("/srv/app/storage/logs/worker.log"),
            vec![("supervisor.program", "worker".to_string())]
        );
        assert!(supervisor_file_tags("/var/log/supervisor/supervisord.log").is_empty());
    }
}
