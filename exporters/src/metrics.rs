//! The in-memory metric model collectors produce: families of samples with
//! a name, a help text, a type and label sets, close to the text format 0.0.4.

use std::borrow::Cow;

/// The metric types of the Prometheus text format 0.0.4.
///
/// `Untyped` exists because anchor exporters expose untyped families
/// (`mysql_global_status_*`, `node_netstat_*`) and dashboards rely on them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MetricType {
    Counter,
    Gauge,
    Untyped,
    Histogram,
    Summary,
}

impl MetricType {
    /// The word written after `# TYPE name`.
    pub fn as_str(self) -> &'static str {
        match self {
            MetricType::Counter => "counter",
            MetricType::Gauge => "gauge",
            MetricType::Untyped => "untyped",
            MetricType::Histogram => "histogram",
            MetricType::Summary => "summary",
        }
    }
}

/// Label pairs of one sample, in the order they are written.
pub type Labels = Vec<(Cow<'static, str>, String)>;

/// One line of exposition: `<family name><suffix>{labels} value`.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// Appended to the family name: empty for plain metrics, `_bucket`,
    /// `_sum`, `_count` for histograms and summaries.
    pub suffix: &'static str,
    pub labels: Labels,
    pub value: f64,
}

/// A named group of samples sharing one type and help text.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricFamily {
    pub name: String,
    pub help: String,
    pub kind: MetricType,
    pub samples: Vec<Sample>,
}

impl MetricFamily {
    pub fn new(name: impl Into<String>, help: impl Into<String>, kind: MetricType) -> Self {
        MetricFamily {
            name: name.into(),
            help: help.into(),
            kind,
            samples: Vec::new(),
        }
    }

    pub fn counter(name: impl Into<String>, help: impl Into<String>) -> Self {
        Self::new(name, help, MetricType::Counter)
    }

    pub fn gauge(name: impl Into<String>, help: impl Into<String>) -> Self {
        Self::new(name, help, MetricType::Gauge)
    }

    pub fn untyped(name: impl Into<String>, help: impl Into<String>) -> Self {
        Self::new(name, help, MetricType::Untyped)
    }

    /// Adds a plain sample; labels given as `(name, value)` pairs.
    pub fn push<L, V>(&mut self, labels: L, value: f64) -> &mut Self
    where
        L: IntoIterator<Item = (&'static str, V)>,
        V: Into<String>,
    {
        self.samples.push(Sample {
            suffix: "",
            labels: labels
                .into_iter()
                .map(|(k, v)| (Cow::Borrowed(k), v.into()))
                .collect(),
            value,
        });
        self
    }

    /// Adds a sample whose label names are only known at run time
    /// (e.g. per-field labels read from a status page).
    pub fn push_owned(&mut self, labels: Labels, value: f64) -> &mut Self {
        self.samples.push(Sample {
            suffix: "",
            labels,
            value,
        });
        self
    }

    /// Builder form of [`MetricFamily::push`] for one-sample families.
    pub fn with<L, V>(mut self, labels: L, value: f64) -> Self
    where
        L: IntoIterator<Item = (&'static str, V)>,
        V: Into<String>,
    {
        self.push(labels, value);
        self
    }

    /// Builder form for a family with one unlabelled sample.
    pub fn value(mut self, value: f64) -> Self {
        self.samples.push(Sample {
            suffix: "",
            labels: Vec::new(),
            value,
        });
        self
    }

    /// Adds one histogram series: cumulative `buckets` as `(upper bound,
    /// cumulative count)`, then `_sum` and `_count`. The `+Inf` bucket is
    /// written from `count` so it always equals `_count`.
    pub fn push_histogram(&mut self, labels: Labels, buckets: &[(f64, u64)], sum: f64, count: u64) {
        for (le, cumulative) in buckets {
            let mut l = labels.clone();
            l.push((Cow::Borrowed("le"), format_float(*le)));
            self.samples.push(Sample {
                suffix: "_bucket",
                labels: l,
                value: *cumulative as f64,
            });
        }
        let mut l = labels.clone();
        l.push((Cow::Borrowed("le"), "+Inf".to_string()));
        self.samples.push(Sample {
            suffix: "_bucket",
            labels: l,
            value: count as f64,
        });
        self.samples.push(Sample {
            suffix: "_sum",
            labels: labels.clone(),
            value: sum,
        });
        self.samples.push(Sample {
            suffix: "_count",
            labels,
            value: count as f64,
        });
    }
}

/// Formats a float exactly as Go's `strconv.FormatFloat(v, 'g', -1, 64)`,
/// which client_golang uses and so every anchor exporter writes: shortest
/// round-trip digits, `e` notation when the decimal exponent is < -4 or
/// >= 6 (`8.253820928e+09`, `1e+06`, `123456`, `0.0001`, `1e-05`).
pub fn format_float(v: f64) -> String {
    let mut s = String::with_capacity(24);
    write_float(&mut s, v);
    s
}

/// [`format_float`] appending to `out`: the encoder writes a thousand
/// values per scrape, and a `String` per value was a visible share of a
/// scrape's CPU time.
pub fn write_float(out: &mut String, v: f64) {
    use std::fmt::Write;
    if v.is_nan() {
        out.push_str("NaN");
        return;
    }
    if v.is_infinite() {
        out.push_str(if v > 0.0 { "+Inf" } else { "-Inf" });
        return;
    }
    if v == 0.0 {
        out.push('0');
        return;
    }
    // Most values are small whole numbers (counts, flags, sizes in pages):
    // Go writes those as plain integers.
    if v.fract() == 0.0 && v.abs() < 1e6 {
        let _ = write!(out, "{}", v as i64);
        return;
    }
    let mut sci = StackText::default();
    let _ = write!(sci, "{v:e}");
    let sci = sci.as_str();
    let (mantissa, exp) = sci.split_once('e').unwrap_or((sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    if !(-4..6).contains(&exp) {
        out.push_str(mantissa);
        out.push('e');
        out.push(if exp < 0 { '-' } else { '+' });
        if exp.unsigned_abs() < 10 {
            out.push('0');
        }
        let _ = write!(out, "{}", exp.unsigned_abs());
    } else {
        let _ = write!(out, "{v}");
    }
}

/// A fixed buffer for one float in `{:e}` form (at most 24 bytes, e.g.
/// `-2.2250738585072014e-308`), so formatting needs no heap allocation.
#[derive(Default)]
struct StackText {
    bytes: [u8; 32],
    len: usize,
}

impl StackText {
    fn as_str(&self) -> &str {
        std::str::from_utf8(&self.bytes[..self.len]).unwrap_or("")
    }
}

impl std::fmt::Write for StackText {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        let end = self.len + s.len();
        let slot = self.bytes.get_mut(self.len..end).ok_or(std::fmt::Error)?;
        slot.copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floats_format_like_go() {
        assert_eq!(format_float(0.0), "0");
        assert_eq!(format_float(12.0), "12");
        assert_eq!(format_float(0.25), "0.25");
        assert_eq!(format_float(f64::INFINITY), "+Inf");
        assert_eq!(format_float(f64::NAN), "NaN");
        assert_eq!(format_float(-3.0), "-3");
        assert_eq!(format_float(123456.0), "123456");
        assert_eq!(format_float(1_000_000.0), "1e+06");
        assert_eq!(format_float(8_253_820_928.0), "8.253820928e+09");
        assert_eq!(format_float(0.0001), "0.0001");
        assert_eq!(format_float(0.00001), "1e-05");
    }

    /// The allocation-free formatter against the plain one it replaced,
    /// over magnitudes from 1e-300 to 1e300, negative values, integers
    /// around the 1e6 switch and values with many digits.
    #[test]
    fn write_float_matches_the_reference_formatter() {
        fn reference(v: f64) -> String {
            if v.is_nan() {
                return "NaN".to_string();
            }
            if v.is_infinite() {
                return if v > 0.0 { "+Inf" } else { "-Inf" }.to_string();
            }
            if v == 0.0 {
                return "0".to_string();
            }
            let sci = format!("{v:e}");
            let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
            let exp: i32 = exp.parse().unwrap_or(0);
            if !(-4..6).contains(&exp) {
                let sign = if exp < 0 { '-' } else { '+' };
                format!("{mantissa}e{sign}{:02}", exp.abs())
            } else {
                format!("{v}")
            }
        }
        let mut values = vec![
            -0.0,
            999_999.0,
            1e6,
            -999_999.0,
            1_000_001.0,
            0.1 + 0.2,
            f64::MAX,
            f64::MIN_POSITIVE,
            5e-324,
            9_007_199_254_740_993.0,
            f64::NEG_INFINITY,
        ];
        let mut x = 0.123_456_789_012_345_67_f64;
        for exp in -300..300 {
            let v = x * 10f64.powi(exp);
            values.extend([v, -v, v.round(), v.trunc() + 0.5]);
            x = (x * 7.3).fract() + 0.01;
        }
        for v in values {
            let mut out = String::from("x ");
            write_float(&mut out, v);
            assert_eq!(out, format!("x {}", reference(v)), "value {v:?}");
        }
    }

    #[test]
    fn histogram_inf_bucket_equals_count() {
        let mut f = MetricFamily::new("h", "help", MetricType::Histogram);
        f.push_histogram(vec![], &[(0.1, 1), (1.0, 3)], 2.5, 4);
        let inf = f
            .samples
            .iter()
            .find(|s| s.labels.iter().any(|(k, v)| k == "le" && v == "+Inf"))
            .unwrap();
        let count = f.samples.iter().find(|s| s.suffix == "_count").unwrap();
        assert_eq!(inf.value, count.value);
    }
}
