//! Reading retained events by sequence, with filters: `ListEvents` pages and the replay
//! part of `WatchEvents`. Blocking file reads: callers run them off the async workers.

use super::EventsError;
use super::record::EventRecord;
use super::segments::{Cursor, Step};
use super::shared::{INDEX_EVERY, Shared, Stored};
use crate::limits::EVENTS_SCAN_MAX;
use stockd_domain::EventKind;

/// Which events a reader wants; empty fields match everything.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Filter {
    pub kinds: Vec<EventKind>,
    pub channel: Option<String>,
    pub product: Option<String>,
    pub location: Option<String>,
    /// Events at or after this time (milliseconds since 1970)…
    pub from_at: Option<i64>,
    /// …and before this one.
    pub to_at: Option<i64>,
    /// Only events that changed an IQ at this (product, location) (a position's history).
    pub touches: Option<(String, String)>,
}

impl Filter {
    pub fn matches(&self, r: &EventRecord) -> bool {
        let same = |want: &Option<String>, have: &Option<String>| {
            want.as_ref().is_none_or(|w| have.as_ref() == Some(w))
        };
        (self.kinds.is_empty() || r.kind().is_some_and(|k| self.kinds.contains(&k)))
            && same(&self.channel, &r.channel)
            && same(&self.product, &r.product)
            && same(&self.location, &r.location)
            && self.from_at.is_none_or(|t| r.at >= t)
            && self.to_at.is_none_or(|t| r.at < t)
            && self.touches.as_ref().is_none_or(|(p, l)| {
                r.iqs
                    .iter()
                    .any(|iq| iq.position(r) == (Some(p.as_str()), Some(l.as_str())))
            })
    }
}

/// A page of events and where the next page starts.
#[derive(Clone, Debug, Default)]
pub struct Page {
    pub events: Vec<Stored>,
    /// The sequence after the last one examined: the next page's `from`.
    pub next: u64,
}

impl Shared {
    /// Up to `limit` events matching `filter` with sequences from `from` on, examining at
    /// most `EVENTS_SCAN_MAX` events. `from` older than retention is `Expired`.
    pub fn read(&self, from: u64, limit: usize, filter: &Filter) -> Result<Page, EventsError> {
        let from = from.max(1);
        let end = self.published();
        let expired = |asked| EventsError::Expired {
            asked,
            oldest: self.oldest(),
        };
        if from < self.oldest() {
            return Err(expired(from));
        }
        let mut page = Page {
            events: Vec::new(),
            next: from,
        };
        let mut scanned = 0;
        while page.next <= end && page.events.len() < limit && scanned < EVENTS_SCAN_MAX {
            let Some(seg) = self.segment_of(page.next) else {
                return Err(expired(page.next));
            };
            let mut cursor = match Cursor::open(&self.dir, seg.0) {
                Ok(cursor) if cursor.header.first_lsn == seg.1 => cursor,
                // Recycled since the lookup (renamed or reused): the sequence is gone.
                Ok(_) => return Err(expired(page.next)),
                Err(_) if page.next < self.oldest() => return Err(expired(page.next)),
                Err(e) => return Err(unavailable(e)),
            };
            let mut seq = self.seek(&mut cursor, seg.0, seg.1, page.next);
            let before = page.next;
            while seq <= end && page.events.len() < limit && scanned < EVENTS_SCAN_MAX {
                let offset = cursor.offset();
                let payload = match cursor.next(seq) {
                    Ok(Step::Frame(_, payload)) => payload,
                    Ok(Step::End) => break,
                    Ok(Step::Stale) => return Err(expired(seq)),
                    Err(_) if seq < self.oldest() => return Err(expired(seq)),
                    Err(e) => return Err(unavailable(e)),
                };
                if seq.is_multiple_of(INDEX_EVERY) {
                    self.index
                        .lock()
                        .expect("index lock")
                        .insert(seq, (seg.0, offset));
                }
                if seq >= page.next {
                    scanned += 1;
                    let record = EventRecord::decode(&payload).map_err(EventsError::Unavailable)?;
                    if filter.matches(&record) {
                        page.events.push(Stored { seq, record });
                    }
                    page.next = seq + 1;
                }
                seq += 1;
            }
            if page.next == before {
                break;
            }
        }
        Ok(page)
    }

    /// The live segment holding `seq`: (epoch, first sequence).
    fn segment_of(&self, seq: u64) -> Option<(u64, u64)> {
        let segments = self.segments.read().expect("segments lock");
        segments
            .iter()
            .rev()
            .find(|s| s.first_seq <= seq)
            .map(|s| (s.epoch, s.first_seq))
    }

    /// Moves the cursor to the indexed frame nearest below `seq` in this segment; returns
    /// the sequence of the frame it now points at.
    fn seek(&self, cursor: &mut Cursor, epoch: u64, first: u64, seq: u64) -> u64 {
        let mut index = self.index.lock().expect("index lock");
        // Entries of recycled segments are useless: drop them as the oldest moves on.
        let oldest = self.oldest();
        if index.first_key_value().is_some_and(|(s, _)| *s < oldest) {
            *index = index.split_off(&oldest);
        }
        match index.range(first..=seq).next_back() {
            Some((&at, &(e, offset))) if e == epoch => {
                cursor.seek(offset);
                at
            }
            _ => first,
        }
    }
}

fn unavailable(e: crate::storage::log::LogError) -> EventsError {
    EventsError::Unavailable(format!("event log read failed: {e}"))
}
