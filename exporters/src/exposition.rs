//! Encoder for the Prometheus text exposition format 0.0.4, written by hand
//! because the anchors' dashboards need untyped families and counters without
//! `_total`, and label values must be escaped correctly.

use crate::metrics::{write_float, MetricFamily};

/// The `Content-Type` of text format 0.0.4.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Writes families in the order given. Callers pass families already merged
/// by name (see [`crate::scrape::merge_families`]) so each family's lines are
/// contiguous.
pub fn encode(families: &[MetricFamily]) -> String {
    // Sized up front from the families: growing a 50 kB buffer by doubling
    // copied it several times per scrape.
    let estimate: usize = families
        .iter()
        .map(|f| {
            f.help.len()
                + 32
                + f.name.len() * 2
                + f.samples
                    .iter()
                    .map(|s| {
                        f.name.len()
                            + 28
                            + s.labels
                                .iter()
                                .map(|(k, v)| k.len() + v.len() + 4)
                                .sum::<usize>()
                    })
                    .sum::<usize>()
        })
        .sum();
    let mut out = String::with_capacity(estimate);
    for family in families {
        encode_family(&mut out, family);
    }
    out
}

fn encode_family(out: &mut String, family: &MetricFamily) {
    if family.samples.is_empty() {
        return;
    }
    out.push_str("# HELP ");
    out.push_str(&family.name);
    out.push(' ');
    escape_help(out, &family.help);
    out.push('\n');
    out.push_str("# TYPE ");
    out.push_str(&family.name);
    out.push(' ');
    out.push_str(family.kind.as_str());
    out.push('\n');
    for sample in &family.samples {
        out.push_str(&family.name);
        out.push_str(sample.suffix);
        if !sample.labels.is_empty() {
            out.push('{');
            for (i, (name, value)) in sample.labels.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(name);
                out.push_str("=\"");
                escape_label_value(out, value);
                out.push('"');
            }
            out.push('}');
        }
        out.push(' ');
        write_float(out, sample.value);
        out.push('\n');
    }
}

fn escape_help(out: &mut String, help: &str) {
    // Nearly every text needs no escaping: copy it whole.
    if !help.bytes().any(|b| b == b'\\' || b == b'\n') {
        out.push_str(help);
        return;
    }
    for c in help.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

fn escape_label_value(out: &mut String, value: &str) {
    if !value.bytes().any(|b| b == b'\\' || b == b'"' || b == b'\n') {
        out.push_str(value);
        return;
    }
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

/// Turns an arbitrary string into a valid metric name component: characters
/// outside `[a-zA-Z0-9_:]` become `_` (the rule the anchors apply to
/// `/proc` field names and `SHOW STATUS` variables).
pub fn sanitize_name(raw: &str) -> String {
    let mut s: String = raw
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == ':' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if s.starts_with(|c: char| c.is_ascii_digit()) {
        s.insert(0, '_');
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::MetricType;

    #[test]
    fn escapes_help_and_labels() {
        let mut f = MetricFamily::new("x_total", "a \\ b\nc", MetricType::Counter);
        f.push([("path", "C:\\dir \"q\"\nnext")], 1.0);
        let text = encode(&[f]);
        assert_eq!(
            text,
            "# HELP x_total a \\\\ b\\nc\n# TYPE x_total counter\nx_total{path=\"C:\\\\dir \\\"q\\\"\\nnext\"} 1\n"
        );
    }

    #[test]
    fn empty_family_writes_nothing() {
        let f = MetricFamily::gauge("g", "h");
        assert_eq!(encode(&[f]), "");
    }

    #[test]
    fn sanitizes_names() {
        assert_eq!(sanitize_name("Active(anon)"), "Active_anon_");
        assert_eq!(sanitize_name("9lives"), "_9lives");
    }
}
