//! The one Prometheus text-format writer (exposition format 0.0.4) every `/metrics` section uses:
//! a family's `# HELP` / `# TYPE` lines, then its samples with escaped label values. Writing to a
//! `String` cannot fail, so nothing here returns an error.

use std::fmt::{Display, Write as _};

/// A metric family's type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Only goes up.
    Counter,
    /// Goes up and down.
    Gauge,
    /// Buckets, sum and count.
    Histogram,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        }
    }
}

/// `# HELP` and `# TYPE` of family `name`.
pub fn family(out: &mut String, name: &str, kind: Kind, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {}", kind.as_str());
}

/// One sample: `name{labels} value`, label values escaped.
pub fn sample(out: &mut String, name: &str, labels: &[(&str, &str)], value: impl Display) {
    out.push_str(name);
    if !labels.is_empty() {
        out.push('{');
        for (i, (label, v)) in labels.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str(label);
            out.push_str("=\"");
            escape_into(out, v);
            out.push('"');
        }
        out.push('}');
    }
    let _ = writeln!(out, " {value}");
}

/// A counter family with one unlabelled sample.
pub fn counter(out: &mut String, name: &str, help: &str, value: impl Display) {
    family(out, name, Kind::Counter, help);
    sample(out, name, &[], value);
}

/// A gauge family with one unlabelled sample.
pub fn gauge(out: &mut String, name: &str, help: &str, value: impl Display) {
    family(out, name, Kind::Gauge, help);
    sample(out, name, &[], value);
}

/// A label value as the format wants it: backslash, double quote and newline escaped.
fn escape_into(out: &mut String, value: &str) {
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_samples_and_escaped_labels() {
        let mut out = String::new();
        counter(&mut out, "a_total", "A things.", 3);
        family(&mut out, "b", Kind::Gauge, "B.");
        sample(&mut out, "b", &[("path", "/x\"y\\z\n"), ("m", "GET")], 1.5);
        assert_eq!(
            out,
            "# HELP a_total A things.\n# TYPE a_total counter\na_total 3\n\
             # HELP b B.\n# TYPE b gauge\nb{path=\"/x\\\"y\\\\z\\n\",m=\"GET\"} 1.5\n"
        );
    }
}
