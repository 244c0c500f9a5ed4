//! Monolog's LineFormatter, the format of Laravel's `laravel.log`:
//! `[%datetime%] %channel%.%level_name%: %message% %context% %extra%`.
//! Laravel builds it with `allowInlineLineBreaks` and stack traces, so
//! an exception's trace follows on the next lines, inside the context's
//! JSON string with raw newlines (no longer valid JSON as written), and
//! empty context/extra (`[]`) are left out.

use std::borrow::Cow;
use std::ops::Range;

use super::json::{flatten_into, trace_context};
use super::time::{iso_datetime, parse_offset};
use super::{severity, BodyPart, Meta};
use crate::wire::{AttributeSink, Value};
use crate::zone::Zone;

/// A record starts with its bracketed date (`Y-m-d H:i:s`, Laravel, or
/// Monolog's default `Y-m-d\TH:i:s.uP`); stack-trace lines do not.
pub(super) const RECORD_START: &str = r"^\[\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}:\d{2}";

/// Trailing JSON candidates tried per record: bounds the work a hostile
/// line full of ` {` can cause.
const MAX_JSON_TRIES: usize = 32;

fn level(name: &str) -> Option<(i32, &'static str)> {
    Some(match name {
        "DEBUG" => (severity::DEBUG, "DEBUG"),
        "INFO" => (severity::INFO, "INFO"),
        "NOTICE" => (severity::NOTICE, "NOTICE"),
        "WARNING" => (severity::WARN, "WARNING"),
        "ERROR" => (severity::ERROR, "ERROR"),
        "CRITICAL" => (severity::CRIT, "CRITICAL"),
        "ALERT" => (severity::ALERT, "ALERT"),
        "EMERGENCY" => (severity::FATAL, "EMERGENCY"),
        _ => return None,
    })
}

/// JSON text as Monolog writes it with inline line breaks: raw newlines,
/// carriage returns and tabs inside strings escaped again.
fn unbreak(s: &str) -> Cow<'_, str> {
    if !s.bytes().any(|b| b < 0x20) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 16);
    let (mut in_string, mut escaped) = (false, false);
    for c in s.chars() {
        if in_string && (c as u32) < 0x20 {
            // After a pending backslash this yields `\\n`: Monolog turned
            // the `\n` of an escaped backslash + `n` into a newline too.
            match c {
                '\n' => out.push_str("\\n"),
                '\r' => out.push_str("\\r"),
                '\t' => out.push_str("\\t"),
                other => out.push_str(&format!("\\u{:04x}", other as u32)),
            }
            escaped = false;
            continue;
        }
        if in_string {
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_string = false;
            }
        } else if c == '"' {
            in_string = true;
        }
        out.push(c);
    }
    Cow::Owned(out)
}

/// The JSON object or `[]` that ends `s` (after trailing blanks): its
/// value and where it starts. Candidates are tried from the right, each
/// after a space (or at 0).
fn json_tail(s: &str, tries: &mut usize) -> Option<(serde_json::Value, usize)> {
    let trimmed = s.trim_end();
    if trimmed.ends_with("[]") {
        let start = trimmed.len() - 2;
        if start == 0 || trimmed.as_bytes()[start - 1] == b' ' {
            return Some((serde_json::Value::Array(Vec::new()), start));
        }
        return None;
    }
    if !trimmed.ends_with('}') {
        return None;
    }
    let bytes = trimmed.as_bytes();
    let mut end = trimmed.len();
    while let Some(i) = memchr::memrchr(b'{', &bytes[..end]) {
        if i == 0 || bytes[i - 1] == b' ' {
            if *tries >= MAX_JSON_TRIES {
                return None;
            }
            *tries += 1;
            let candidate = unbreak(&trimmed[i..]);
            if let Ok(v @ serde_json::Value::Object(_)) = serde_json::from_str(&candidate) {
                return Some((v, i));
            }
        }
        end = i;
    }
    None
}

/// `[object] (Class(code: 0): message at /app/x.php:12)` then, with
/// stack traces, `[stacktrace]` lines and `[previous exception]` blocks.
fn exception<S: AttributeSink>(text: &str, attrs: &mut S) -> bool {
    let Some(rest) = text.strip_prefix("[object] (") else {
        return false;
    };
    let Some((class, rest)) = rest.split_once("(code: ") else {
        return false;
    };
    let Some((_code, rest)) = rest.split_once("): ") else {
        return false;
    };
    let (head, trace) = match rest.find("\n[stacktrace]\n") {
        Some(i) => (&rest[..i], Some(&rest[i + "\n[stacktrace]\n".len()..])),
        None => match rest.find("\n[previous exception] ") {
            Some(i) => (&rest[..i], Some(&rest[i + 1..])),
            None => (rest, None),
        },
    };
    let head = head.trim_end().strip_suffix(')').unwrap_or(head);
    attrs.attribute("exception.type", Value::Str(class));
    let message = match head.rsplit_once(" at ") {
        Some((message, location)) => {
            if let Some((file, line)) = location.rsplit_once(':') {
                if let Ok(line) = line.parse::<i64>() {
                    attrs.attribute("code.file.path", Value::Str(file));
                    attrs.attribute("code.line.number", Value::Int(line));
                }
            }
            message
        }
        None => head,
    };
    attrs.attribute("exception.message", Value::Str(message));
    if let Some(trace) = trace.map(str::trim_end).filter(|t| !t.is_empty()) {
        attrs.attribute("exception.stacktrace", Value::Str(trace));
    }
    true
}

/// Adds a context or extra object as `prefix.key` attributes; the
/// exception string becomes `exception.*`, the trace ids stay out (they
/// are the record's trace context).
fn fields<S: AttributeSink>(prefix: &str, v: &serde_json::Value, ids: (bool, bool), attrs: &mut S) {
    let serde_json::Value::Object(map) = v else {
        return;
    };
    for (k, v) in map {
        let is_trace = matches!(k.as_str(), "trace_id" | "traceId" | "otel.trace_id");
        let is_span = matches!(k.as_str(), "span_id" | "spanId" | "otel.span_id");
        if (is_trace && ids.0) || (is_span && ids.1) {
            continue;
        }
        if k == "exception" {
            if let Some(text) = v.as_str() {
                if exception(text, attrs) {
                    continue;
                }
            }
        }
        flatten_into(&format!("{prefix}.{k}"), v, attrs, 1);
    }
}

/// Parses one Monolog LINE record (possibly several lines).
pub(super) fn parse<S: AttributeSink>(text: &str, zone: Zone, attrs: &mut S) -> Option<Meta> {
    let rest = text.strip_prefix('[')?;
    let close = memchr::memchr(b']', rest.as_bytes())?;
    let stamp = &rest[..close];
    let after = rest[close + 1..].strip_prefix(' ')?;
    let colon = after.find(": ").or_else(|| {
        // An empty message leaves `LEVEL:` at the end of the line.
        after.ends_with(':').then(|| after.len() - 1)
    })?;
    let (channel, level_name) = after[..colon].rsplit_once('.')?;
    let (severity, severity_text) = level(level_name)?;
    if channel.contains(char::is_whitespace) {
        return None;
    }
    let time_unix_nano = iso_datetime(stamp)
        .and_then(|(civil, rest)| {
            let offset = match rest {
                "" => None,
                zone_text => Some(parse_offset(zone_text).filter(|(_, r)| r.is_empty())?.0),
            };
            civil.nanos(offset, zone)
        })
        .unwrap_or(0);
    // Offsets into `text` from here on.
    let message_start = text.len() - after.len() + (colon + 2).min(after.len());
    let body_text = &text[message_start..];
    let mut tries = 0;
    let mut tails = Vec::with_capacity(2);
    let mut end = body_text.len();
    while tails.len() < 2 {
        match json_tail(&body_text[..end], &mut tries) {
            Some((v, start)) => {
                tails.push(v);
                end = start;
            }
            None => break,
        }
    }
    // Both present: context, then extra. One: Laravel leaves out an empty
    // one, and the context is the one that usually has something.
    let (context, extra) = match tails.len() {
        2 => (tails.pop(), tails.pop()),
        1 => (tails.pop(), None),
        _ => (None, None),
    };
    let (trace_id, span_id) = trace_context(&[context.as_ref(), extra.as_ref()]);
    attrs.attribute("log.logger", Value::Str(channel));
    let ids = (trace_id.is_some(), span_id.is_some());
    if let Some(c) = &context {
        fields("context", c, ids, attrs);
    }
    if let Some(e) = &extra {
        fields("extra", e, ids, attrs);
    }
    let message = body_text[..end].trim_end();
    let body: Range<usize> = message_start..message_start + message.len();
    Some(Meta {
        time_unix_nano,
        severity,
        severity_text,
        body: Some(BodyPart::Slice(body)),
        trace_id,
        span_id,
        ..Default::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ParserKind;
    use crate::parse::test_support::{attr, body};
    use crate::parse::{parse_with, Options, Parsed};

    fn monolog(text: &str) -> Parsed {
        parse_with(ParserKind::Monolog, &Options::default(), text)
    }

    // What php-monolog's LineFormatter wrote, built as Laravel builds it
    // (`new LineFormatter(null, 'Y-m-d H:i:s', true, true)` with
    // `includeStacktraces()`); the integration test runs the real one.
    const LARAVEL_ERROR: &str = "[2026-12-04 15:31:30] production.ERROR: outer \"quoted\" fail {\"exception\":\"[object] (LogicException(code: 7): outer \\\"quoted\\\" fail at /tmp/lp/t.php:15)\n[stacktrace]\n#0 /tmp/lp/t.php(16): outer()\n#1 {main}\n\n[previous exception] [object] (RuntimeException(code: 0): inner boom at /tmp/lp/t.php:14)\n[stacktrace]\n#0 /tmp/lp/t.php(15): inner()\n#1 /tmp/lp/t.php(16): outer()\n#2 {main}\n\"} ";

    #[test]
    fn laravel_exception_with_stack_trace() {
        let p = monolog(LARAVEL_ERROR);
        assert_eq!(p.severity, severity::ERROR);
        assert_eq!(p.severity_text, "ERROR");
        assert_eq!(body(&p), "outer \"quoted\" fail");
        assert_eq!(attr(&p, "log.logger").as_deref(), Some("production"));
        assert_eq!(
            attr(&p, "exception.type").as_deref(),
            Some("LogicException")
        );
        assert_eq!(
            attr(&p, "exception.message").as_deref(),
            Some("outer \"quoted\" fail")
        );
        assert_eq!(attr(&p, "code.file.path").as_deref(), Some("/tmp/lp/t.php"));
        assert_eq!(attr(&p, "code.line.number").as_deref(), Some("15"));
        let trace = attr(&p, "exception.stacktrace").unwrap();
        assert!(
            trace.starts_with("#0 /tmp/lp/t.php(16): outer()\n#1 {main}"),
            "{trace}"
        );
        assert!(trace.contains("[previous exception] [object] (RuntimeException"));
        assert!(trace.ends_with("#2 {main}"));
        assert!(attr(&p, "context.exception").is_none());
        // 2026-12-04T15:31:30Z
        assert_eq!(p.time_unix_nano, 1_796_398_290 * 1_000_000_000);
    }

    #[test]
    fn context_extra_and_trace_context() {
        let p = monolog("[2026-12-04 15:31:30] production.INFO: User logged in {\"user_id\":42,\"trace_id\":\"4bf92f3577b34da6a3ce929d0e0e4736\",\"span_id\":\"00f067aa0ba902b7\"} {\"request_id\":\"r-1\",\"ip\":{\"v4\":\"10.0.0.1\"}}");
        assert_eq!(body(&p), "User logged in");
        assert_eq!(attr(&p, "context.user_id").as_deref(), Some("42"));
        assert_eq!(attr(&p, "extra.request_id").as_deref(), Some("r-1"));
        assert_eq!(attr(&p, "extra.ip.v4").as_deref(), Some("10.0.0.1"));
        assert!(attr(&p, "context.trace_id").is_none());
        assert_eq!(
            p.trace_id.unwrap()[..4],
            [0x4b, 0xf9, 0x2f, 0x35],
            "trace id from the context"
        );
        assert_eq!(p.span_id.unwrap()[7], 0xb7);
        // Monolog's own default: ISO time with offset, both always there.
        let p =
            monolog("[2026-12-04T16:31:30.578739+01:00] app.DEBUG: default {\"a\":{\"b\":1}} []");
        assert_eq!(p.time_unix_nano, 1_796_398_290_578_739_000);
        assert_eq!(body(&p), "default");
        assert_eq!(attr(&p, "context.a.b").as_deref(), Some("1"));
        assert_eq!(p.severity, severity::DEBUG);
        // A trace id that is no id stays an attribute.
        let p = monolog("[2026-12-04 15:31:30] app.INFO: x {\"trace_id\":\"nope\"}");
        assert!(p.trace_id.is_none());
        assert_eq!(attr(&p, "context.trace_id").as_deref(), Some("nope"));
    }

    #[test]
    fn messages_with_braces_newlines_and_no_context() {
        let p = monolog("[2026-12-04 15:31:30] production.WARNING: multi\nline message  ");
        assert_eq!(body(&p), "multi\nline message");
        assert_eq!(p.severity, severity::WARN);
        let p = monolog("[2026-12-04 15:31:30] production.INFO: set {x} to [1] {\"k\":\"v {w}\"}");
        assert_eq!(body(&p), "set {x} to [1]");
        assert_eq!(attr(&p, "context.k").as_deref(), Some("v {w}"));
        let p = monolog("[2026-12-04 15:31:30] production.NOTICE:");
        assert_eq!(body(&p), "");
        // Not Monolog: kept whole, nothing invented.
        for line in [
            "[2026-12-04 15:31:30] production.VERBOSE: x",
            "#0 /app/x.php(3): f()",
            "[2026-12-04 15:31:30] a b.INFO: x",
        ] {
            let p = monolog(line);
            assert!(p.body.is_none() && p.attributes.is_empty(), "{line}");
        }
    }

    #[test]
    fn zone_less_times_use_the_source_zone() {
        let line = "[2026-12-04 16:31:30] production.INFO: x";
        let paris = Options {
            zone: Zone::parse("Europe/Paris").unwrap(),
        };
        let p = parse_with(ParserKind::Monolog, &paris, line);
        assert_eq!(p.time_unix_nano, 1_796_398_290 * 1_000_000_000);
        // Summer: the same wall clock is one hour earlier in UTC.
        let p = parse_with(
            ParserKind::Monolog,
            &paris,
            "[2026-07-04 16:31:30] production.INFO: x",
        );
        assert_eq!(p.time_unix_nano, 1_783_175_490 * 1_000_000_000);
    }

    #[test]
    fn a_backslash_n_in_a_string_survives_inline_breaks() {
        // PHP's json `"C:\\new"` became `"C:\` + newline + `ew"`.
        let p = monolog("[2026-12-04 15:31:30] app.INFO: p {\"path\":\"C:\\\new\"}");
        assert_eq!(attr(&p, "context.path").as_deref(), Some("C:\\new"));
    }
}
