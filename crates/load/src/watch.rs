//! `--watch`: one `EventService.WatchEvents` stream beside the load, so a run shows what a
//! live consumer of the demand signals receives while stockd serves the load, and what the
//! consumer costs the load (run the same load with and without it).
//!
//! The stream starts from now, without a filter, on a connection of its own, and is open
//! before the scenario seeds or loads anything. It counts what it receives and checks the
//! sequence: without a filter every event arrives, so a gap between two sequence numbers
//! is reported, never hidden.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use stockd::proto::inventory::v1 as pb;
use stockd::proto::watch_response::{SequenceOnly, watch_sequences};
use tonic::transport::Channel;

use crate::rpc;

/// After the load, how long the stream must stay quiet to count as drained.
const WATCH_SETTLE: Duration = Duration::from_millis(300);
/// After the load, the longest wait for the stream to drain.
const WATCH_SETTLE_MAX: Duration = Duration::from_secs(3);

/// What the stream received.
#[derive(Debug, Clone, Default)]
pub struct WatchReport {
    pub events: u64,
    pub first_sequence: u64,
    pub last_sequence: u64,
    /// Sequence numbers skipped between two received events.
    pub gaps: u64,
    /// From the first event received to the last.
    pub span: Duration,
    /// How the stream ended before the load did (its status), if it did.
    pub ended: Option<String>,
}

impl WatchReport {
    /// Events per second over the span they arrived in.
    pub fn rate(&self) -> f64 {
        let secs = self.span.as_secs_f64();
        if secs > 0.0 {
            self.events as f64 / secs
        } else {
            0.0
        }
    }
}

#[derive(Default)]
struct Seen {
    report: WatchReport,
    first_at: Option<Instant>,
    last_at: Option<Instant>,
}

/// A running watch.
pub struct Watch {
    seen: Arc<Mutex<Seen>>,
    task: tokio::task::JoinHandle<()>,
}

impl Watch {
    /// Opens the stream (from now) and starts counting.
    pub async fn start(addr: &str, connect_timeout: Duration) -> Result<Watch, String> {
        let channel: Channel = rpc::connect(addr, 1, connect_timeout).await?.remove(0);
        let request = pb::WatchEventsRequest {
            start: pb::watch_events_request::Start::Now as i32,
            ..Default::default()
        };
        let stream = watch_sequences(channel, request)
            .await
            .map_err(|s| format!("--watch: WatchEvents: {}", rpc::error_text(&s)))?;
        let seen = Arc::new(Mutex::new(Seen::default()));
        let task = tokio::spawn(count(stream, seen.clone()));
        Ok(Watch { seen, task })
    }

    /// Waits for the stream to drain (bounded), stops it and says what it received.
    pub async fn finish(self) -> WatchReport {
        let deadline = Instant::now() + WATCH_SETTLE_MAX;
        loop {
            let quiet = {
                let seen = self.seen.lock().expect("watch counters");
                seen.last_at.is_none_or(|t| t.elapsed() >= WATCH_SETTLE)
            };
            if quiet || Instant::now() >= deadline || self.task.is_finished() {
                break;
            }
            tokio::time::sleep(WATCH_SETTLE / 4).await;
        }
        self.task.abort();
        let seen = self.seen.lock().expect("watch counters");
        let mut report = seen.report.clone();
        if let (Some(a), Some(b)) = (seen.first_at, seen.last_at) {
            report.span = b - a;
        }
        report
    }
}

async fn count(mut stream: tonic::Streaming<SequenceOnly>, seen: Arc<Mutex<Seen>>) {
    loop {
        let next = stream.message().await;
        let mut seen = seen.lock().expect("watch counters");
        match next {
            Ok(Some(message)) => {
                let sequence = message.event.map_or(0, |e| e.sequence);
                seen.record(sequence, Instant::now());
            }
            Ok(None) => {
                seen.report.ended = Some("the server ended the stream".into());
                return;
            }
            Err(status) => {
                seen.report.ended = Some(rpc::error_text(&status));
                return;
            }
        }
    }
}

impl Seen {
    fn record(&mut self, sequence: u64, at: Instant) {
        let r = &mut self.report;
        if r.events == 0 {
            r.first_sequence = sequence;
            self.first_at = Some(at);
        } else if sequence > r.last_sequence + 1 {
            r.gaps += sequence - r.last_sequence - 1;
        }
        r.events += 1;
        r.last_sequence = r.last_sequence.max(sequence);
        self.last_at = Some(at);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gaps_between_sequences_are_counted() {
        let mut seen = Seen::default();
        let t0 = Instant::now();
        for (i, s) in [5u64, 6, 7, 10, 11].into_iter().enumerate() {
            seen.record(s, t0 + Duration::from_millis(i as u64 * 100));
        }
        let r = &seen.report;
        assert_eq!((r.events, r.first_sequence, r.last_sequence), (5, 5, 11));
        assert_eq!(r.gaps, 2, "8 and 9 never arrived");
    }
}
