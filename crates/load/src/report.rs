//! ghz's two report formats: the text summary and the JSON report (integer nanoseconds,
//! ghz's field names), plus a scenario's own section.
//!
//! `latencyDistribution` holds exactly ghz's percentiles (10, 25, 50, 75, 90, 95, 99) with
//! integer `percentage`, because ghz's Go type is `int` and a 99.9 there would make ghz's
//! own tooling reject the file; 99.9 and 99.99 are in `latencyDistributionExtra`, which
//! Go's decoder ignores.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

use crate::cli::Format;
use crate::duration::ms;
use crate::rpc::code_name;
use crate::runner::{MethodStats, Outcome, Plan};
use crate::schema::Method;
use crate::watch::WatchReport;

/// ghz's percentiles.
pub const PERCENTILES: [u32; 7] = [10, 25, 50, 75, 90, 95, 99];
/// The finer ones stockd-load adds.
pub const EXTRA_PERCENTILES: [f64; 2] = [99.9, 99.99];

const CODES: [tonic::Code; 17] = [
    tonic::Code::Ok,
    tonic::Code::Cancelled,
    tonic::Code::Unknown,
    tonic::Code::InvalidArgument,
    tonic::Code::DeadlineExceeded,
    tonic::Code::NotFound,
    tonic::Code::AlreadyExists,
    tonic::Code::PermissionDenied,
    tonic::Code::ResourceExhausted,
    tonic::Code::FailedPrecondition,
    tonic::Code::Aborted,
    tonic::Code::OutOfRange,
    tonic::Code::Unimplemented,
    tonic::Code::Internal,
    tonic::Code::Unavailable,
    tonic::Code::DataLoss,
    tonic::Code::Unauthenticated,
];

/// A scenario's own results, shown after the ghz summary and under `"scenario"` in JSON.
#[derive(Debug, Clone, Default)]
pub struct ScenarioReport {
    pub name: String,
    /// (label, value) lines of the text summary.
    pub lines: Vec<(String, String)>,
    /// The same facts for the JSON report.
    pub json: serde_json::Map<String, Value>,
    /// `Some(Err(why))` when the scenario's check failed.
    pub check: Option<Result<String, String>>,
}

impl ScenarioReport {
    pub fn named(name: &str) -> ScenarioReport {
        ScenarioReport {
            name: name.to_string(),
            ..Default::default()
        }
    }

    pub fn line(&mut self, label: &str, value: impl Into<String>) {
        self.lines.push((label.to_string(), value.into()));
    }
}

/// A finished run, ready to report.
pub struct Ran {
    pub outcome: Outcome,
    pub scenario: Option<ScenarioReport>,
    /// What was called, for `options.call`.
    pub call: String,
    /// The request data, for `options.data`.
    pub data: Option<Value>,
}

/// Everything a report shows.
pub struct Report<'a> {
    pub name: Option<&'a str>,
    pub call: String,
    pub host: String,
    pub plan: &'a Plan,
    pub connections: usize,
    pub data: Option<Value>,
    pub outcome: &'a Outcome,
    pub scenario: Option<ScenarioReport>,
    /// `--watch`: what the stream beside the load received.
    pub watch: Option<WatchReport>,
    pub date: SystemTime,
}

/// Summary statistics of one set of calls, in nanoseconds.
struct Figures {
    count: u64,
    total: Duration,
    average: u64,
    fastest: u64,
    slowest: u64,
    rps: f64,
}

fn figures(s: &MethodStats, total: Duration) -> Figures {
    let counted = !s.hist.is_empty();
    Figures {
        count: s.count,
        total,
        average: if s.count == 0 {
            0
        } else {
            (s.sum_ns / u128::from(s.count)) as u64
        },
        fastest: if counted { s.min_ns } else { 0 },
        slowest: if counted { s.max_ns } else { 0 },
        rps: if total.is_zero() {
            0.0
        } else {
            s.count as f64 / total.as_secs_f64()
        },
    }
}

fn quantile(s: &MethodStats, percent: f64) -> u64 {
    if s.hist.is_empty() {
        return 0;
    }
    // hdrhistogram answers the highest value equivalent to the bucket: clamp to the exact
    // slowest so p100-ish quantiles never exceed it.
    s.hist
        .value_at_quantile(percent / 100.0)
        .min(s.max_ns)
        .max(s.min_ns)
}

/// ghz's histogram: 10 equal-width buckets from fastest to slowest (11 marks); each
/// latency counts in the first bucket whose mark is at or above it.
struct Bucket {
    mark_ns: f64,
    count: u64,
    frequency: f64,
}

fn buckets(s: &MethodStats) -> Vec<Bucket> {
    const BARS: usize = 10;
    let counted = s.hist.len();
    if counted == 0 {
        return Vec::new();
    }
    let (fastest, slowest) = (s.min_ns as f64, s.max_ns as f64);
    let width = (slowest - fastest) / BARS as f64;
    let marks: Vec<f64> = (0..=BARS)
        .map(|i| {
            if i == BARS {
                slowest
            } else {
                fastest + width * i as f64
            }
        })
        .collect();
    let mut counts = vec![0u64; marks.len()];
    for v in s.hist.iter_recorded() {
        let value =
            (s.hist.lowest_equivalent(v.value_iterated_to()) as f64).clamp(fastest, slowest);
        let i = marks.iter().position(|m| value <= *m).unwrap_or(BARS);
        counts[i] += v.count_at_value();
    }
    marks
        .into_iter()
        .zip(counts)
        .map(|(mark_ns, count)| Bucket {
            mark_ns,
            count,
            frequency: count as f64 / counted as f64,
        })
        .collect()
}

fn status_distribution(s: &MethodStats) -> BTreeMap<&'static str, u64> {
    CODES
        .iter()
        .zip(s.codes)
        .filter(|(_, n)| *n > 0)
        .map(|(c, n)| (code_name(*c), n))
        .collect()
}

impl Report<'_> {
    /// ghz's text summary, then the per-method table and the scenario section.
    pub fn summary(&self) -> String {
        let all = self.outcome.overall();
        let mut out = String::new();
        self.summary_figures(&all, &mut out);
        histogram_text(&all, &mut out);
        distributions_text(&all, &mut out);
        self.per_method_text(&mut out);
        if let Some(sc) = &self.scenario {
            scenario_text(sc, &mut out);
        }
        if let Some(late) = &self.outcome.send_late {
            late_text(late, self.outcome.late_no_worker, &mut out);
        }
        if let Some(w) = &self.watch {
            watch_text(w, &mut out);
        }
        out
    }

    fn summary_figures(&self, all: &MethodStats, out: &mut String) {
        let f = figures(all, self.outcome.total);
        out.push('\n');
        out.push_str("Summary:\n");
        if let Some(name) = self.name {
            let _ = writeln!(out, "  Name:\t\t{name}");
        }
        let _ = writeln!(out, "  Count:\t{}", f.count);
        let _ = writeln!(out, "  Total:\t{}", ms(f.total.as_nanos() as u64));
        let _ = writeln!(out, "  Slowest:\t{}", ms(f.slowest));
        let _ = writeln!(out, "  Fastest:\t{}", ms(f.fastest));
        let _ = writeln!(out, "  Average:\t{}", ms(f.average));
        let _ = writeln!(out, "  Requests/sec:\t{:.2}", f.rps);
    }

    /// One line per method called, when there is more than one or a scenario ran.
    fn per_method_text(&self, out: &mut String) {
        let called: Vec<(Method, &MethodStats)> = Method::all()
            .filter_map(|m| self.outcome.method(m).map(|s| (m, s)))
            .collect();
        if called.len() <= 1 && self.scenario.is_none() {
            return;
        }
        out.push_str("Per method:\n");
        let _ = writeln!(
            out,
            "  {:<16} {:>9} {:>10} {:>10} {:>10} {:>10} {:>10} {:>8}",
            "method", "count", "req/s", "average", "p50", "p99", "p99.9", "errors"
        );
        for (m, s) in called {
            let f = figures(s, self.outcome.total);
            let _ = writeln!(
                out,
                "  {:<16} {:>9} {:>10.1} {:>10} {:>10} {:>10} {:>10} {:>8}",
                m.name(),
                s.count,
                f.rps,
                ms(f.average),
                ms(quantile(s, 50.0)),
                ms(quantile(s, 99.0)),
                ms(quantile(s, 99.9)),
                s.failed()
            );
        }
        out.push('\n');
    }

    /// ghz's JSON report.
    pub fn json(&self) -> Value {
        let all = self.outcome.overall();
        let mut report = match stats_json(&all, self.outcome.total) {
            Value::Object(m) => m,
            _ => unreachable!("stats_json returns an object"),
        };
        if let Some(name) = self.name {
            report.insert("name".into(), json!(name));
        }
        report.insert("endReason".into(), json!(self.outcome.end_reason.as_str()));
        report.insert(
            "date".into(),
            json!(humantime::format_rfc3339_seconds(self.date.max(UNIX_EPOCH)).to_string()),
        );
        report.insert("options".into(), self.options_json());
        report.insert(
            "histogram".into(),
            Value::Array(
                buckets(&all)
                    .into_iter()
                    .map(|b| {
                        json!({
                            "mark": b.mark_ns / 1e9,
                            "count": b.count,
                            "frequency": b.frequency,
                        })
                    })
                    .collect(),
            ),
        );
        report.insert("details".into(), json!([]));
        report.insert("operations".into(), json!(self.outcome.operations));
        let mut methods = serde_json::Map::new();
        for m in Method::all() {
            if let Some(s) = self.outcome.method(m) {
                methods.insert(m.name().into(), stats_json(s, self.outcome.total));
            }
        }
        report.insert("methods".into(), Value::Object(methods));
        if let Some(sc) = &self.scenario {
            let mut s = sc.json.clone();
            s.insert("name".into(), json!(sc.name));
            if let Some(check) = &sc.check {
                s.insert("pass".into(), json!(check.is_ok()));
                s.insert(
                    "check".into(),
                    json!(match check {
                        Ok(w) | Err(w) => w,
                    }),
                );
            }
            report.insert("scenario".into(), Value::Object(s));
        }
        if let Some(w) = &self.watch {
            report.insert("watch".into(), watch_json(w));
        }
        if let Some(late) = &self.outcome.send_late {
            report.insert(
                "openLoop".into(),
                late_json(late, self.outcome.late_no_worker),
            );
        }
        Value::Object(report)
    }

    /// ghz's `options`: what was asked for.
    fn options_json(&self) -> Value {
        json!({
            "call": self.call,
            "host": self.host,
            "insecure": true,
            "total": self.plan.total.unwrap_or(0),
            "concurrency": self.plan.concurrency,
            "connections": self.connections,
            "rps": self.plan.rps.map_or(0, |r| r.round() as u64),
            "duration": self.plan.duration.map_or(0, |d| d.as_nanos() as u64),
            "timeout": self.plan.timeout.as_nanos() as u64,
            "data": self.data.clone().unwrap_or(Value::Null),
            "skipFirst": self.plan.skip_first,
            "countErrors": self.plan.count_errors,
        })
    }
}

fn histogram_text(all: &MethodStats, out: &mut String) {
    out.push_str("\nResponse time histogram:\n");
    let bars = buckets(all);
    let max = bars.iter().map(|b| b.count).max().unwrap_or(0).max(1);
    for b in &bars {
        let len = (b.count * 40 / max) as usize;
        let _ = writeln!(
            out,
            "  {:.3} [{}]\t|{}",
            b.mark_ns / 1e6,
            b.count,
            "∎".repeat(len)
        );
    }
}

/// Latency percentiles, then status codes and errors when there are any.
fn distributions_text(all: &MethodStats, out: &mut String) {
    out.push_str("\nLatency distribution:");
    for p in PERCENTILES {
        let _ = write!(out, "\n  {p} % in {} ", ms(quantile(all, f64::from(p))));
    }
    let _ = write!(out, "\n  99.9 % in {} ", ms(quantile(all, 99.9)));
    out.push_str("\n\n");
    let codes = status_distribution(all);
    if !codes.is_empty() {
        out.push_str("Status code distribution:");
        for (code, n) in &codes {
            let _ = write!(out, "\n  [{code}]\t{n} responses");
        }
        out.push_str("\n\n");
    }
    if !all.errors.is_empty() {
        out.push_str("Error distribution:");
        let mut errors: Vec<_> = all.errors.iter().collect();
        errors.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
        for (e, n) in errors {
            let _ = write!(out, "\n  [{n}]\t{e}");
        }
        out.push_str("\n\n");
    }
}

fn scenario_text(sc: &ScenarioReport, out: &mut String) {
    let _ = writeln!(out, "Scenario: {}", sc.name);
    let width = sc.lines.iter().map(|(l, _)| l.len()).max().unwrap_or(0) + 1;
    for (label, value) in &sc.lines {
        let _ = writeln!(
            out,
            "  {:<width$} {value}",
            format!("{label}:"),
            width = width
        );
    }
    match &sc.check {
        Some(Ok(why)) => {
            let _ = writeln!(out, "  PASS: {why}");
        }
        Some(Err(why)) => {
            let _ = writeln!(out, "  FAIL: {why}");
        }
        None => {}
    }
    out.push('\n');
}

/// Open loop: how late stockd-load itself started operations a worker was waiting for
/// (its own error, included in every latency above since latency runs from the intended
/// start), and how many found every worker busy (waiting on the server).
fn late_text(late: &hdrhistogram::Histogram<u64>, no_worker: u64, out: &mut String) {
    let q = |p: f64| late.value_at_quantile(p) as f64 / 1e6;
    let _ = writeln!(
        out,
        "Open loop, operations started late by stockd-load itself: p50 {:.2} ms, p99 {:.2} ms, \
         p99.9 {:.2} ms, max {:.2} ms; {no_worker} found every worker busy\n",
        q(0.5),
        q(0.99),
        q(0.999),
        late.max() as f64 / 1e6
    );
}

fn late_json(late: &hdrhistogram::Histogram<u64>, no_worker: u64) -> Value {
    json!({
        "startedLateP50": late.value_at_quantile(0.5),
        "startedLateP99": late.value_at_quantile(0.99),
        "startedLateP999": late.value_at_quantile(0.999),
        "startedLateMax": late.max(),
        "noFreeWorker": no_worker,
    })
}

fn watch_text(w: &WatchReport, out: &mut String) {
    let _ = writeln!(out, "Watch (WatchEvents from now, no filter):");
    let _ = writeln!(out, "  events:     {}", w.events);
    let _ = writeln!(out, "  events/s:   {:.0}", w.rate());
    let _ = writeln!(
        out,
        "  sequences:  {}..{}, {} missing",
        w.first_sequence, w.last_sequence, w.gaps
    );
    if let Some(why) = &w.ended {
        let _ = writeln!(out, "  ended:      {why}");
    }
    out.push('\n');
}

fn watch_json(w: &WatchReport) -> Value {
    json!({
        "events": w.events,
        "eventsPerSecond": w.rate(),
        "firstSequence": w.first_sequence,
        "lastSequence": w.last_sequence,
        "gaps": w.gaps,
        "spanSeconds": w.span.as_secs_f64(),
        "ended": w.ended,
    })
}

/// Writes the report in `format` to `output`, or to stdout.
pub fn write(report: &Report<'_>, format: Format, output: Option<&Path>) -> Result<(), String> {
    let text = match format {
        Format::Summary => report.summary(),
        Format::Json => format!("{}\n", report.json()),
        Format::Pretty => format!(
            "{}\n",
            serde_json::to_string_pretty(&report.json()).map_err(|e| e.to_string())?
        ),
    };
    match output {
        Some(path) => {
            std::fs::write(path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))
        }
        None => {
            let mut out = std::io::stdout().lock();
            let _ = out.write_all(text.as_bytes());
            let _ = out.flush();
            Ok(())
        }
    }
}

fn stats_json(s: &MethodStats, total: Duration) -> Value {
    let f = figures(s, total);
    json!({
        "count": f.count,
        "total": f.total.as_nanos() as u64,
        "average": f.average,
        "fastest": f.fastest,
        "slowest": f.slowest,
        "rps": f.rps,
        "latencyDistribution": PERCENTILES
            .iter()
            .map(|p| json!({"percentage": p, "latency": quantile(s, f64::from(*p))}))
            .collect::<Vec<_>>(),
        "latencyDistributionExtra": EXTRA_PERCENTILES
            .iter()
            .map(|p| json!({"percentage": p, "latency": quantile(s, *p)}))
            .collect::<Vec<_>>(),
        "statusCodeDistribution": status_distribution(s),
        "errorDistribution": s.errors,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runner::EndReason;

    fn stats(latencies_us: &[u64]) -> MethodStats {
        let mut s = MethodStats::new();
        for us in latencies_us {
            let ns = us * 1000;
            s.count += 1;
            s.sum_ns += u128::from(ns);
            s.codes[0] += 1;
            s.hist.record(ns).unwrap();
            s.min_ns = s.min_ns.min(ns);
            s.max_ns = s.max_ns.max(ns);
        }
        s
    }

    #[test]
    fn ghz_shaped_json() {
        let mut s = stats(&(1..=1000).collect::<Vec<_>>());
        s.count += 2;
        s.codes[14] += 2;
        s.errors
            .insert("rpc error: code = Unavailable desc = x".into(), 2);
        let mut methods: Vec<Option<MethodStats>> = (0..Method::count()).map(|_| None).collect();
        methods[Method::reserve().slot()] = Some(s);
        let outcome = Outcome {
            methods,
            total: Duration::from_secs(2),
            end_reason: EndReason::Normal,
            operations: 1002,
            send_late: None,
            late_no_worker: 0,
        };
        let plan = Plan {
            concurrency: 50,
            total: Some(1002),
            duration: None,
            rps: None,
            skip_first: 0,
            count_errors: false,
            timeout: Duration::from_secs(20),
            progress: false,
        };
        let report = Report {
            name: None,
            call: "inventory.v1.InventoryService.Reserve".into(),
            host: "127.0.0.1:1".into(),
            plan: &plan,
            connections: 4,
            data: None,
            outcome: &outcome,
            scenario: None,
            watch: None,
            date: SystemTime::now(),
        };
        let j = report.json();
        assert_eq!(j["count"], 1002);
        assert_eq!(j["total"], 2_000_000_000u64);
        assert_eq!(j["fastest"], 1_000);
        assert_eq!(j["slowest"], 1_000_000);
        assert_eq!(j["rps"], 501.0);
        let p50 = j["latencyDistribution"][2]["latency"].as_u64().unwrap();
        assert_eq!(j["latencyDistribution"][2]["percentage"], 50);
        assert!((499_000..=501_000).contains(&p50), "{p50}");
        assert_eq!(j["latencyDistribution"].as_array().unwrap().len(), 7);
        assert_eq!(j["latencyDistributionExtra"][0]["percentage"], 99.9);
        assert_eq!(j["statusCodeDistribution"]["OK"], 1000);
        assert_eq!(j["statusCodeDistribution"]["Unavailable"], 2);
        assert_eq!(
            j["errorDistribution"]["rpc error: code = Unavailable desc = x"],
            2
        );
        let hist = j["histogram"].as_array().unwrap();
        assert_eq!(hist.len(), 11);
        let total: u64 = hist.iter().map(|b| b["count"].as_u64().unwrap()).sum();
        assert_eq!(total, 1000);
        assert_eq!(hist[0]["mark"], 0.000001);
        assert_eq!(hist[10]["mark"], 0.001);
        assert_eq!(j["endReason"], "normal");
        let text = report.summary();
        assert!(text.contains("Requests/sec:\t501.00"), "{text}");
        assert!(text.contains("[OK]\t1000 responses"), "{text}");
        assert!(text.contains("99 % in"), "{text}");
    }
}
