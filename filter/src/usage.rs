//! The usage outbox: records wait here, per worker VM, until sent to the control plane in batches.
//!
//! Sending is at-least-once: a batch stays in flight until acknowledged and is queued again
//! on failure; the control plane skips request ids it has already stored.

use prost::Message;
use std::collections::VecDeque;
use tollgate_core::settings::FilterSettings;
use tollgate_proto::v1::{UsageAck, UsageBatch, UsageRecord};

/// Most records in one `ReportUsage` call; keeps each message well under gRPC's 4 MiB default.
const MAX_BATCH: usize = 1_000;

/// Records waiting to be reported, and the batch currently on its way.
#[derive(Default)]
pub struct Outbox {
    queue: VecDeque<UsageRecord>,
    in_flight: Option<(u32, Vec<UsageRecord>)>,
    limit: usize,
    dropped: u64,
}

impl Outbox {
    /// An empty outbox holding at most `settings.usage_buffer_limit` records.
    pub fn new(settings: &FilterSettings) -> Self {
        Self {
            limit: settings.usage_buffer_limit,
            ..Self::default()
        }
    }

    /// Queues a record; if the control plane has been away long enough to fill the buffer,
    /// the oldest record is dropped so memory stays bounded.
    pub fn push(&mut self, record: UsageRecord) {
        if self.queue.len() >= self.limit {
            self.queue.pop_front();
            self.dropped += 1;
            if self.dropped.is_power_of_two() {
                log::error!(
                    "tollgate: usage buffer full, {} records dropped so far",
                    self.dropped
                );
            }
        }
        self.queue.push_back(record);
    }

    /// The next batch to send, encoded, unless one is in flight or nothing waits.
    /// The caller must follow with [`Outbox::sent`] or [`Outbox::unsent`].
    pub fn next_batch(&mut self) -> Option<Vec<u8>> {
        if self.in_flight.is_some() || self.queue.is_empty() {
            return None;
        }
        let n = self.queue.len().min(MAX_BATCH);
        let records: Vec<UsageRecord> = self.queue.drain(..n).collect();
        let bytes = UsageBatch {
            records: records.clone(),
        }
        .encode_to_vec();
        self.in_flight = Some((0, records));
        Some(bytes)
    }

    /// The batch from [`Outbox::next_batch`] was dispatched as call `token`.
    pub fn sent(&mut self, token: u32) {
        if let Some((t, _)) = self.in_flight.as_mut() {
            *t = token;
        }
    }

    /// The batch from [`Outbox::next_batch`] could not be dispatched; it goes back in the queue.
    pub fn unsent(&mut self) {
        self.requeue();
    }

    /// The control plane answered call `token` with gRPC `status` and, on success, an ack.
    pub fn settle(&mut self, token: u32, status: u32, ack: Option<&[u8]>) {
        if !matches!(self.in_flight, Some((t, _)) if t == token) {
            return;
        }
        if status == 0 {
            if let Some(ack) = ack.and_then(|b| UsageAck::decode(b).ok()) {
                log::debug!(
                    "tollgate: usage batch stored={} duplicates={}",
                    ack.stored,
                    ack.duplicates
                );
            }
            self.in_flight = None;
        } else {
            log::warn!("tollgate: usage report failed with gRPC status {status}; will retry");
            self.requeue();
        }
    }

    fn requeue(&mut self) {
        if let Some((_, records)) = self.in_flight.take() {
            for record in records.into_iter().rev() {
                self.queue.push_front(record);
            }
            while self.queue.len() > self.limit {
                self.queue.pop_front();
                self.dropped += 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outbox(limit: usize) -> Outbox {
        Outbox::new(&FilterSettings {
            usage_buffer_limit: limit,
            ..FilterSettings::default()
        })
    }

    fn record(id: &str) -> UsageRecord {
        UsageRecord {
            request_id: id.into(),
            ..UsageRecord::default()
        }
    }

    fn ids(bytes: &[u8]) -> Vec<String> {
        UsageBatch::decode(bytes)
            .unwrap()
            .records
            .into_iter()
            .map(|r| r.request_id)
            .collect()
    }

    #[test]
    fn one_batch_in_flight_at_a_time() {
        let mut o = outbox(10);
        o.push(record("a"));
        o.push(record("b"));
        let batch = o.next_batch().unwrap();
        assert_eq!(ids(&batch), ["a", "b"]);
        o.sent(7);
        o.push(record("c"));
        assert!(o.next_batch().is_none(), "a batch is still in flight");
        o.settle(7, 0, None);
        assert_eq!(ids(&o.next_batch().unwrap()), ["c"]);
    }

    #[test]
    fn failed_batch_is_retried_first() {
        let mut o = outbox(10);
        o.push(record("a"));
        o.next_batch().unwrap();
        o.sent(1);
        o.push(record("b"));
        o.settle(1, 14, None); // UNAVAILABLE
        assert_eq!(ids(&o.next_batch().unwrap()), ["a", "b"]);
        o.unsent();
        assert_eq!(ids(&o.next_batch().unwrap()), ["a", "b"]);
    }

    #[test]
    fn answers_for_other_calls_are_ignored() {
        let mut o = outbox(10);
        o.push(record("a"));
        o.next_batch().unwrap();
        o.sent(1);
        o.settle(2, 0, None);
        assert!(o.next_batch().is_none());
    }

    #[test]
    fn buffer_is_bounded_oldest_dropped() {
        let mut o = outbox(3);
        for id in ["a", "b", "c", "d"] {
            o.push(record(id));
        }
        assert_eq!(o.dropped, 1);
        assert_eq!(ids(&o.next_batch().unwrap()), ["b", "c", "d"]);
    }

    #[test]
    fn batches_are_capped() {
        let mut o = outbox(5_000);
        for i in 0..(MAX_BATCH + 5) {
            o.push(record(&i.to_string()));
        }
        assert_eq!(ids(&o.next_batch().unwrap()).len(), MAX_BATCH);
    }
}
