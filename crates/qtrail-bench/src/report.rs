//! Measurements and the report: each measurement prints as one line
//! `name: value unit (ratio vs baseline)` as soon as it is taken, and the whole run is written
//! as one JSON document with the machine, the commit, every value, baseline and ratio.

use std::path::Path;

use anyhow::Context as _;
use serde::Serialize;

use crate::machine::Machine;

/// One measured value and the baseline it is compared with, measured in the same run.
#[derive(Debug, Clone, Serialize)]
pub struct Measurement {
    /// Dotted name, scenario first, e.g. `ingest.collector.s4.b1000`.
    pub name: String,
    /// The measured value.
    pub value: f64,
    /// Unit of `value` and `baseline_value`, e.g. `events/s`, `ms`.
    pub unit: String,
    /// What the baseline is, e.g. `ack-only server`.
    pub baseline: String,
    /// The baseline's value, in `unit`.
    pub baseline_value: f64,
    /// `value / baseline_value`.
    pub ratio: f64,
    /// What limits or qualifies the number (a target, a smaller N in quick mode).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub note: String,
}

impl Measurement {
    /// Returns a measurement of `value` against `baseline_value`.
    pub fn new(name: impl Into<String>, value: f64, unit: &str, baseline: &str, baseline_value: f64) -> Self {
        let ratio = if baseline_value == 0.0 { f64::NAN } else { value / baseline_value };
        Self {
            name: name.into(),
            value,
            unit: unit.to_owned(),
            baseline: baseline.to_owned(),
            baseline_value,
            ratio,
            note: String::new(),
        }
    }

    /// Adds a note.
    pub fn note(mut self, note: impl Into<String>) -> Self {
        self.note = note.into();
        self
    }

    /// Returns the line the harness prints.
    pub fn line(&self) -> String {
        let mut line = format!(
            "{}: {} {} ({:.3} vs {} = {} {})",
            self.name,
            number(self.value),
            self.unit,
            self.ratio,
            self.baseline,
            number(self.baseline_value),
            self.unit
        );
        if !self.note.is_empty() {
            line.push_str(" [");
            line.push_str(&self.note);
            line.push(']');
        }
        line
    }
}

/// Formats a value with as many decimals as its size calls for.
fn number(value: f64) -> String {
    let magnitude = value.abs();
    if magnitude >= 100.0 || value == value.trunc() {
        format!("{value:.0}")
    } else if magnitude >= 1.0 {
        format!("{value:.2}")
    } else {
        format!("{value:.4}")
    }
}

/// Everything one run measured.
#[derive(Debug, Serialize)]
pub struct Report {
    /// The machine the numbers come from.
    pub machine: Machine,
    /// `git describe`-style commit of the work tree.
    pub commit: String,
    /// Whether this was a `--quick` run (smaller N).
    pub quick: bool,
    /// When the run started (RFC 3339).
    pub started: String,
    /// How long the whole run took, in seconds.
    pub seconds: f64,
    /// Scenarios skipped, with the reason.
    pub skipped: Vec<String>,
    /// Every measurement, in the order taken.
    pub measurements: Vec<Measurement>,
}

impl Report {
    /// Returns an empty report.
    pub fn new(machine: Machine, commit: String, quick: bool) -> Self {
        Self {
            machine,
            commit,
            quick,
            started: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            seconds: 0.0,
            skipped: Vec::new(),
            measurements: Vec::new(),
        }
    }

    /// Records a measurement and prints its line.
    pub fn record(&mut self, measurement: Measurement) {
        println!("{}", measurement.line());
        self.measurements.push(measurement);
    }

    /// Records that a scenario was skipped and says why.
    pub fn skip(&mut self, scenario: &str, reason: &str) {
        println!("{scenario}: skipped ({reason})");
        self.skipped.push(format!("{scenario}: {reason}"));
    }

    /// Writes the report as pretty JSON to `path`, creating its directory.
    ///
    /// # Errors
    /// When the file cannot be written.
    pub fn write(&self, path: &Path) -> anyhow::Result<()> {
        if let Some(dir) = path.parent().filter(|dir| !dir.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        }
        let json = serde_json::to_vec_pretty(self).context("cannot serialise the report")?;
        std::fs::write(path, json).with_context(|| format!("cannot write {}", path.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_show_value_unit_ratio_and_baseline() {
        let m = Measurement::new("ingest.collector.s4.b1000", 210_000.4, "events/s", "ack-only server", 420_000.0);
        assert!((m.ratio - 0.500_000_952).abs() < 1e-9, "{}", m.ratio);
        assert_eq!(m.line(), "ingest.collector.s4.b1000: 210000 events/s (0.500 vs ack-only server = 420000 events/s)");
        let m = Measurement::new("latency.p99", 3.25, "ms", "call p99", 1.3).note("target <= 10 ms");
        assert_eq!(m.line(), "latency.p99: 3.25 ms (2.500 vs call p99 = 1.30 ms) [target <= 10 ms]");
    }

    #[test]
    fn a_zero_baseline_gives_no_ratio() {
        assert!(Measurement::new("x", 1.0, "ms", "zero", 0.0).ratio.is_nan());
    }
}
