//! The PHP-FPM status page (`?json&full`) parsed into pool and process
//! numbers, and those numbers as php-fpm_exporter's families. Pure
//! functions over bytes, so they are tested (and fuzzed) without a pool.

use serde_json::Value;

use crate::metrics::{Labels, MetricFamily};

/// The process states the anchor always lists for each child.
const PROCESS_STATES: [&str; 6] = [
    "Idle",
    "Running",
    "Finishing",
    "Reading headers",
    "Getting request informations",
    "Ending",
];

/// The pool-level numbers of a status page.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct PoolStatus {
    pub pool: String,
    pub start_since: f64,
    pub accepted_conn: f64,
    pub listen_queue: f64,
    pub max_listen_queue: f64,
    pub listen_queue_len: f64,
    pub idle_processes: f64,
    pub active_processes: f64,
    pub total_processes: f64,
    pub max_active_processes: f64,
    pub max_children_reached: f64,
    pub slow_requests: f64,
    pub processes: Vec<ProcessStatus>,
}

/// One worker of a `full` status page.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ProcessStatus {
    pub state: String,
    pub requests: f64,
    pub request_duration: f64,
    pub last_request_cpu: f64,
    pub last_request_memory: f64,
}

/// Parses the JSON status page (`?json&full`). Any input is accepted
/// without panicking; an error names the missing or malformed field.
pub fn parse_status(body: &[u8]) -> Result<PoolStatus, String> {
    let value: Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(first) => {
            // PHP-FPM before 8.1 wrote request URIs into the JSON without
            // escaping them; re-escape those and try once more.
            let text = String::from_utf8_lossy(body);
            let fixed = escape_request_uris(&text);
            serde_json::from_str(&fixed)
                .map_err(|_| format!("the status page is not JSON ({first})"))?
        }
    };
    let obj = value
        .as_object()
        .ok_or("the status page is JSON but not an object; is QUERY_STRING json honoured?")?;
    let pool = obj
        .get("pool")
        .and_then(Value::as_str)
        .ok_or("the status page has no \"pool\" name; is this a PHP-FPM status page?")?
        .to_string();
    let num = |key: &str| -> Result<f64, String> {
        obj.get(key)
            .and_then(Value::as_f64)
            .ok_or_else(|| format!("the status page has no number {key:?}"))
    };
    let mut status = PoolStatus {
        pool,
        start_since: num("start since")?,
        accepted_conn: num("accepted conn")?,
        listen_queue: num("listen queue")?,
        max_listen_queue: num("max listen queue")?,
        listen_queue_len: num("listen queue len")?,
        idle_processes: num("idle processes")?,
        active_processes: num("active processes")?,
        total_processes: num("total processes")?,
        max_active_processes: num("max active processes")?,
        max_children_reached: num("max children reached")?,
        slow_requests: num("slow requests")?,
        processes: Vec::new(),
    };
    if let Some(list) = obj.get("processes") {
        let list = list.as_array().ok_or("\"processes\" is not a list")?;
        for p in list {
            // Worker fields are read leniently, as the anchor does: a
            // missing or odd value is 0 rather than a failed scrape.
            let n = |key: &str| p.get(key).and_then(Value::as_f64).unwrap_or(0.0);
            status.processes.push(ProcessStatus {
                state: p
                    .get("state")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string(),
                requests: n("requests"),
                request_duration: n("request duration"),
                last_request_cpu: n("last request cpu"),
                last_request_memory: n("last request memory"),
            });
        }
    }
    Ok(status)
}

/// Re-escapes the value of every `"request uri":"..."` up to the
/// `","content length":` that follows it.
fn escape_request_uris(text: &str) -> String {
    const START: &str = ",\"request uri\":\"";
    const END: &str = "\",\"content length\":";
    let mut out = String::with_capacity(text.len() + 64);
    let mut rest = text;
    while let Some(i) = rest.find(START) {
        let value_start = i + START.len();
        let Some(len) = rest[value_start..].find(END) else {
            break;
        };
        out.push_str(&rest[..value_start]);
        for c in rest[value_start..value_start + len].chars() {
            match c {
                '"' => out.push_str("\\\""),
                '\\' => out.push_str("\\\\"),
                c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
                c => out.push(c),
            }
        }
        rest = &rest[value_start + len..];
    }
    out.push_str(rest);
    out
}

/// The anchor's rule for `fix_process_count`: Running and Reading headers
/// are active, Idle is idle, the rest (finishing, ending) count as neither.
fn count_processes(processes: &[ProcessStatus]) -> (f64, f64) {
    let mut active = 0.0;
    let mut idle = 0.0;
    for p in processes {
        match p.state.as_str() {
            "Running" | "Reading headers" => active += 1.0,
            "Idle" => idle += 1.0,
            _ => {}
        }
    }
    (active, idle)
}

/// The hipages families of one pool. `status` is `None` when the pool could
/// not be read: then only `phpfpm_up 0` and the failure counter.
pub fn families(
    status: Option<&PoolStatus>,
    pool_label: &str,
    scrape_uri: &str,
    failures: u64,
    per_process: bool,
    fix_process_count: bool,
) -> Vec<MetricFamily> {
    let labels: Labels = vec![
        ("pool".into(), pool_label.to_string()),
        ("scrape_uri".into(), scrape_uri.to_string()),
    ];
    let one = |name: &str, help: &str, counter: bool, value: f64| {
        let mut f = if counter {
            MetricFamily::counter(name, help)
        } else {
            MetricFamily::gauge(name, help)
        };
        f.push_owned(labels.clone(), value);
        f
    };
    let mut out = vec![
        one(
            "phpfpm_scrape_failures",
            "The number of failures scraping from PHP-FPM.",
            true,
            failures as f64,
        ),
        one(
            "phpfpm_up",
            "Could PHP-FPM be reached?",
            false,
            if status.is_some() { 1.0 } else { 0.0 },
        ),
    ];
    let Some(s) = status else { return out };
    let (active, idle, total) = if fix_process_count {
        let (active, idle) = count_processes(&s.processes);
        (active, idle, active + idle)
    } else {
        (s.active_processes, s.idle_processes, s.total_processes)
    };
    out.extend([
        one(
            "phpfpm_start_since",
            "The number of seconds since FPM has started.",
            true,
            s.start_since,
        ),
        one(
            "phpfpm_accepted_connections",
            "The number of requests accepted by the pool.",
            true,
            s.accepted_conn,
        ),
        one(
            "phpfpm_listen_queue",
            "The number of requests in the queue of pending connections.",
            false,
            s.listen_queue,
        ),
        one(
            "phpfpm_max_listen_queue",
            "The maximum number of requests in the queue of pending connections since FPM has started.",
            true,
            s.max_listen_queue,
        ),
        one(
            "phpfpm_listen_queue_length",
            "The size of the socket queue of pending connections.",
            false,
            s.listen_queue_len,
        ),
        one(
            "phpfpm_idle_processes",
            "The number of idle processes.",
            false,
            idle,
        ),
        one(
            "phpfpm_active_processes",
            "The number of active processes.",
            false,
            active,
        ),
        one(
            "phpfpm_total_processes",
            "The number of idle + active processes.",
            false,
            total,
        ),
        one(
            "phpfpm_max_active_processes",
            "The maximum number of active processes since FPM has started.",
            true,
            s.max_active_processes,
        ),
        one(
            "phpfpm_max_children_reached",
            "The number of times, the process limit has been reached, when pm tries to start more children (works only for pm 'dynamic' and 'ondemand').",
            true,
            s.max_children_reached,
        ),
        one(
            "phpfpm_slow_requests",
            "The number of requests that exceeded your 'request_slowlog_timeout' value.",
            true,
            s.slow_requests,
        ),
    ]);
    if per_process && !s.processes.is_empty() {
        let mut requests = MetricFamily::counter(
            "phpfpm_process_requests",
            "The number of requests the process has served.",
        );
        let mut memory = MetricFamily::gauge(
            "phpfpm_process_last_request_memory",
            "The max amount of memory the last request consumed.",
        );
        let mut cpu = MetricFamily::gauge(
            "phpfpm_process_last_request_cpu",
            "The %cpu the last request consumed.",
        );
        let mut duration = MetricFamily::gauge(
            "phpfpm_process_request_duration",
            "The duration in microseconds of the requests.",
        );
        let mut state = MetricFamily::gauge(
            "phpfpm_process_state",
            "The state of the process (Idle, Running, ...).",
        );
        for (child, p) in s.processes.iter().enumerate() {
            let child = child.to_string();
            let l: Labels = vec![
                ("pool".into(), pool_label.to_string()),
                ("child".into(), child.clone()),
                ("scrape_uri".into(), scrape_uri.to_string()),
            ];
            requests.push_owned(l.clone(), p.requests);
            memory.push_owned(l.clone(), p.last_request_memory);
            cpu.push_owned(l.clone(), p.last_request_cpu);
            duration.push_owned(l, p.request_duration);
            let mut states: Vec<&str> = PROCESS_STATES.to_vec();
            if !states.contains(&p.state.as_str()) {
                states.push(&p.state);
            }
            for name in states {
                state.push_owned(
                    vec![
                        ("pool".into(), pool_label.to_string()),
                        ("child".into(), child.clone()),
                        ("state".into(), name.to_string()),
                        ("scrape_uri".into(), scrape_uri.to_string()),
                    ],
                    if name == p.state { 1.0 } else { 0.0 },
                );
            }
        }
        out.extend([state, requests, memory, cpu, duration]);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::phpfpm::fastcgi;

    const FULL: &str = r#"{"pool":"www","process manager":"static","start time":1700000000,"start since":42,"accepted conn":7,"listen queue":0,"max listen queue":1,"listen queue len":128,"idle processes":1,"active processes":1,"total processes":2,"max active processes":2,"max children reached":0,"slow requests":3, "processes":[{"pid":10,"state":"Idle","start time":1700000000,"start since":42,"requests":4,"request duration":120,"request method":"GET","request uri":"/index.php","content length":0,"user":"-","script":"/srv/index.php","last request cpu":12.5,"last request memory":2097152},{"pid":11,"state":"Running","start time":1700000000,"start since":42,"requests":3,"request duration":99,"request method":"GET","request uri":"/status?json&full","content length":0,"user":"-","script":"-","last request cpu":0.00,"last request memory":0}]}"#;

    #[test]
    fn parses_a_full_status_page() {
        let s = parse_status(FULL.as_bytes()).unwrap();
        assert_eq!(s.pool, "www");
        assert_eq!(s.accepted_conn, 7.0);
        assert_eq!(s.listen_queue_len, 128.0);
        assert_eq!(s.slow_requests, 3.0);
        assert_eq!(s.processes.len(), 2);
        assert_eq!(s.processes[0].last_request_memory, 2097152.0);
        assert_eq!(s.processes[1].state, "Running");
    }

    #[test]
    fn repairs_unescaped_request_uris() {
        let broken = FULL.replace(
            "\"request uri\":\"/index.php\"",
            "\"request uri\":\"/a\"b\\c\"",
        );
        assert!(serde_json::from_str::<Value>(&broken).is_err());
        let s = parse_status(broken.as_bytes()).unwrap();
        assert_eq!(s.processes.len(), 2);
    }

    #[test]
    fn rejects_garbage_with_a_reason() {
        for (page, reason) in [
            ("File not found.\n", "not JSON"),
            ("[1,2]", "not an object"),
            ("{}", "\"pool\""),
            (r#"{"pool":"www","start since":"x"}"#, "start since"),
            (r#"{"pool":"www"}"#, "start since"),
        ] {
            let err = parse_status(page.as_bytes()).unwrap_err();
            assert!(err.contains(reason), "{page}: {err}");
        }
        let bad_list = FULL
            .replace("\"processes\":[", "\"processes\":{\"a\":[")
            .replace("]}", "]}}");
        assert!(parse_status(bad_list.as_bytes()).is_err());
    }

    #[test]
    fn random_bytes_never_panic() {
        let mut rng = crate::probe::client::XorShift(0x2545_f491_4f6c_dd1d);
        for i in 0..20_000 {
            let mut input = if i % 2 == 0 {
                FULL.as_bytes().to_vec()
            } else {
                Vec::new()
            };
            rng.mutate(&mut input);
            let _ = parse_status(&input);
            let mut d = fastcgi::ResponseDecoder::new(1 << 20);
            if d.push(&input).is_ok() {
                if let Ok(r) = d.finish() {
                    let _ = fastcgi::split_cgi(&r.stdout);
                }
            }
        }
    }

    #[test]
    fn anchor_families_and_labels() {
        let s = parse_status(FULL.as_bytes()).unwrap();
        let uri = "unix:///run/php/fpm.sock;/status";
        let text = crate::exposition::encode(&families(Some(&s), "www", uri, 2, false, false));
        let l = format!("{{pool=\"www\",scrape_uri=\"{uri}\"}}");
        for line in [
            format!(
                "# TYPE phpfpm_accepted_connections counter\nphpfpm_accepted_connections{l} 7\n"
            ),
            format!("# TYPE phpfpm_up gauge\nphpfpm_up{l} 1\n"),
            format!("# TYPE phpfpm_scrape_failures counter\nphpfpm_scrape_failures{l} 2\n"),
            format!("# TYPE phpfpm_listen_queue_length gauge\nphpfpm_listen_queue_length{l} 128\n"),
            format!("# TYPE phpfpm_slow_requests counter\nphpfpm_slow_requests{l} 3\n"),
        ] {
            assert!(text.contains(&line), "{line}\nnot in\n{text}");
        }
        assert!(!text.contains("phpfpm_process_"));

        let with = crate::exposition::encode(&families(Some(&s), "www", uri, 0, true, false));
        assert!(with.contains(&format!(
            "phpfpm_process_requests{{pool=\"www\",child=\"0\",scrape_uri=\"{uri}\"}} 4\n"
        )));
        assert!(with.contains(&format!(
            "phpfpm_process_state{{pool=\"www\",child=\"1\",state=\"Running\",scrape_uri=\"{uri}\"}} 1\n"
        )));
        assert_eq!(with.matches("phpfpm_process_state{").count(), 12);

        let down = families(None, "www", uri, 1, true, false);
        assert_eq!(down.len(), 2);
    }

    #[test]
    fn fix_process_count_counts_states() {
        let s = parse_status(FULL.as_bytes()).unwrap();
        let f = families(Some(&s), "www", "u", 0, false, true);
        let total = f
            .iter()
            .find(|f| f.name == "phpfpm_total_processes")
            .unwrap();
        assert_eq!(total.samples[0].value, 2.0);
    }
}
