//! The result of a `strata bench` run ([`Report`]): throughput, latency percentiles and the
//! client's CPU per GB, printed as text or as one JSON object.

use hdrhistogram::Histogram;
use serde_json::{Value, json};

use crate::format::Format;

/// What only a closed-loop run measures.
pub struct ClosedLoop {
    /// Intended send time→ack of every record, in microseconds.
    pub corrected: Histogram<u64>,
    /// Records/s asked for; `None` sends each record when the previous one is acknowledged.
    pub rate_target: Option<u64>,
}

/// A closed-loop run counts as holding its rate when it achieved at least this share of it.
const RATE_HELD_SHARE_MIN: f64 = 0.99;

/// A bench's result.
pub struct Report<'a> {
    pub bench: &'static str,
    pub topic: &'a str,
    pub records: u64,
    /// Record bytes (keys and values).
    pub bytes: u64,
    pub elapsed_s: f64,
    /// In microseconds: send→ack for produce, timestamp→arrival for consume.
    /// Empty when nothing was timed (see [`Report::latency_note`]).
    pub latency: &'a Histogram<u64>,
    /// Why latency covers fewer records than throughput, or none (consume).
    pub latency_note: Option<&'static str>,
    pub closed_loop: Option<&'a ClosedLoop>,
    /// CPU seconds (user + system) the bench process spent while measuring.
    pub cpu_s: f64,
    pub config: Value,
}

impl Report<'_> {
    /// Prints throughput, latency percentiles in milliseconds and the client's CPU per GB, as
    /// text or as one JSON object.
    pub fn print(&self, format: Format) {
        let per_s = |amount: f64| {
            if self.elapsed_s > 0.0 {
                amount / self.elapsed_s
            } else {
                0.0
            }
        };
        let records_per_s = per_s(self.records as f64);
        let mb_per_s = per_s(self.bytes as f64 / 1e6);
        let cpu_s_per_gb = if self.bytes > 0 {
            self.cpu_s / (self.bytes as f64 / 1e9)
        } else {
            0.0
        };
        let rate = self.closed_loop.map(|closed_loop| {
            let held = closed_loop
                .rate_target
                .map(|target| records_per_s >= target as f64 * RATE_HELD_SHARE_MIN);
            (closed_loop.rate_target, held)
        });
        let (bench, topic, records, bytes, elapsed_s) = (
            self.bench,
            self.topic,
            self.records,
            self.bytes,
            self.elapsed_s,
        );
        match format {
            Format::Json => {
                let mut report = json!({
                    "bench": bench,
                    "topic": topic,
                    "records": records,
                    "bytes": bytes,
                    "elapsed_s": elapsed_s,
                    "records_per_s": records_per_s,
                    "mb_per_s": mb_per_s,
                    "latency_ms": percentiles_ms(self.latency),
                    "latency_records": self.latency.len(),
                });
                if let Some(note) = self.latency_note {
                    report["latency_note"] = json!(note);
                }
                if let Some(closed_loop) = self.closed_loop {
                    let (target, held) = rate.unwrap_or_default();
                    report["schedule_corrected_latency_ms"] =
                        percentiles_ms(&closed_loop.corrected);
                    report["rate"] = json!({
                        "target_per_s": target,
                        "achieved_per_s": records_per_s,
                        "held": held,
                    });
                }
                report["client_cpu"] = json!({
                    "cpu_s": self.cpu_s,
                    "cpu_s_per_gb": cpu_s_per_gb,
                });
                report["config"] = self.config.clone();
                println!("{report}");
            }
            Format::Text => {
                println!(
                    "{bench}: {records} records ({:.1} MB) in {elapsed_s:.2} s: {records_per_s:.0} records/s, {mb_per_s:.1} MB/s",
                    bytes as f64 / 1e6
                );
                match self.closed_loop {
                    None => {
                        println!("latency ms: {}", percentiles_text(self.latency));
                        if let Some(note) = self.latency_note {
                            println!("  ({} records timed: {note})", self.latency.len());
                        }
                    }
                    Some(closed_loop) => {
                        println!(
                            "service latency ms (send→ack): {}",
                            percentiles_text(self.latency)
                        );
                        println!(
                            "schedule-corrected latency ms (intended send→ack): {}",
                            percentiles_text(&closed_loop.corrected)
                        );
                        match rate {
                            Some((Some(target), Some(held))) => println!(
                                "rate: {records_per_s:.0} records/s achieved of {target} asked ({})",
                                if held { "held" } else { "NOT held" }
                            ),
                            _ => println!(
                                "rate: {records_per_s:.0} records/s achieved (no --rate: each record sent at the previous one's acknowledgement)"
                            ),
                        }
                    }
                }
                println!(
                    "client CPU: {:.2} s, {cpu_s_per_gb:.2} CPU-s/GB",
                    self.cpu_s
                );
            }
        }
    }
}

const QUANTILES: [(&str, f64); 4] = [("p50", 0.5), ("p90", 0.9), ("p99", 0.99), ("p999", 0.999)];

/// The percentiles and maximum of a histogram of microseconds, in milliseconds; `null` when
/// nothing was timed (a zero would read as a measured latency).
fn percentiles_ms(histogram: &Histogram<u64>) -> Value {
    if histogram.is_empty() {
        return Value::Null;
    }
    let mut percentiles = serde_json::Map::new();
    for (name, quantile) in QUANTILES {
        let ms = histogram.value_at_quantile(quantile) as f64 / 1000.0;
        percentiles.insert(name.to_owned(), json!(ms));
    }
    percentiles.insert("max".to_owned(), json!(histogram.max() as f64 / 1000.0));
    Value::Object(percentiles)
}

fn percentiles_text(histogram: &Histogram<u64>) -> String {
    if histogram.is_empty() {
        return "none measured".to_owned();
    }
    let mut text = String::new();
    for (name, quantile) in QUANTILES {
        let ms = histogram.value_at_quantile(quantile) as f64 / 1000.0;
        text.push_str(&format!("{name} {ms:.3}  "));
    }
    text.push_str(&format!("max {:.3}", histogram.max() as f64 / 1000.0));
    text
}
