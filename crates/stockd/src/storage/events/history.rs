//! A position's history: the IQ changes at one (product, location) that the retained events
//! carry, oldest first, in pages that resume at an exact (sequence, change) point.
//!
//! Why from the events: a position keeps only its ACTIVE IQs in memory; what became
//! INACTIVE lives on only in the event that made it so (`EventRecord::iqs`). A page reads
//! the log like `ListEvents` (at most `EVENTS_SCAN_MAX` events examined per call), so a
//! quiet position may answer an empty page that says where to go on.

use super::EventsError;
use super::read::Filter;
use super::record::IqRecord;
use super::shared::{Shared, Stored};

/// Where a history page starts: the event's sequence and how many of that event's
/// changes at the position were already returned.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HistoryAt {
    pub seq: u64,
    pub skip: u32,
}

impl HistoryAt {
    /// The page token: `{seq}.{skip}`; stable, since the log never rewrites an event.
    pub fn token(self) -> String {
        format!("{}.{}", self.seq, self.skip)
    }

    pub fn parse(token: &str) -> Option<HistoryAt> {
        let (seq, skip) = token.split_once('.')?;
        Some(HistoryAt {
            seq: seq.parse().ok().filter(|s| *s > 0)?,
            skip: skip.parse().ok()?,
        })
    }
}

/// One change of the position and the event that caused it.
#[derive(Clone, Debug)]
pub struct Change {
    pub event: std::sync::Arc<Stored>,
    /// Index into `event.record.iqs`.
    pub index: usize,
}

impl Change {
    pub fn iq(&self) -> &IqRecord {
        &self.event.record.iqs[self.index]
    }
}

/// A page of a position's changes; `next` is `None` once every retained event was examined.
#[derive(Clone, Debug, Default)]
pub struct HistoryPage {
    pub changes: Vec<Change>,
    pub next: Option<HistoryAt>,
}

impl Shared {
    /// Up to `limit` changes at (product, location) from `at` on.
    pub fn history(
        &self,
        product: &str,
        location: &str,
        at: HistoryAt,
        limit: usize,
    ) -> Result<HistoryPage, EventsError> {
        let filter = Filter {
            touches: Some((product.to_owned(), location.to_owned())),
            ..Filter::default()
        };
        let page = self.read(at.seq, limit, &filter)?;
        let mut out = HistoryPage::default();
        for stored in page.events {
            let event = std::sync::Arc::new(stored);
            let here: Vec<usize> = (0..event.record.iqs.len())
                .filter(|i| {
                    event.record.iqs[*i].position(&event.record) == (Some(product), Some(location))
                })
                .collect();
            let skip = if event.seq == at.seq {
                at.skip as usize
            } else {
                0
            };
            for (n, index) in here.iter().enumerate().skip(skip) {
                if out.changes.len() == limit {
                    out.next = Some(HistoryAt {
                        seq: event.seq,
                        skip: n as u32,
                    });
                    return Ok(out);
                }
                out.changes.push(Change {
                    event: event.clone(),
                    index: *index,
                });
            }
        }
        out.next = (page.next <= self.published()).then_some(HistoryAt {
            seq: page.next,
            skip: 0,
        });
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_refuse_garbage() {
        let at = HistoryAt { seq: 42, skip: 3 };
        assert_eq!(HistoryAt::parse(&at.token()), Some(at));
        for bad in ["", "x", "1", "0.0", "1.-1", "1.2.3"] {
            assert_eq!(HistoryAt::parse(bad), None, "{bad}");
        }
    }
}
