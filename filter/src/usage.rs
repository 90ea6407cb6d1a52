//! The usage outbox: records wait here, per worker VM, until sent to the control plane in batches.
//!
//! Sending is at-least-once: a batch stays in flight until acknowledged and is sent again
//! after a transient failure; the control plane skips request ids it has already stored.
//! A batch the control plane refuses for what it carries is split in halves until the
//! record at fault stands alone; that record is dropped, counted and logged, so one bad
//! record never holds back the others. The outbox is bounded in records and in bytes;
//! when full, the oldest records go first.

use prost::Message;
use std::collections::VecDeque;
use tollgate_core::settings::FilterSettings;
use tollgate_proto::USAGE_BATCH_BYTES;
use tollgate_proto::v1::{UsageAck, UsageRecord};

/// Most records in one `ReportUsage` call (the control plane takes up to 10 000).
const MAX_BATCH: usize = 1_000;

/// gRPC's UNAUTHENTICATED: the control plane refused this filter's token.
const UNAUTHENTICATED: u32 = 16;

/// What a failed report means for the records it carried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Failure {
    /// The control plane could not take them now (unreachable, too slow, storage down,
    /// or refusing this filter's token): the same records are sent again.
    Transient,
    /// The control plane refused what was sent (invalid, too large): the same batch
    /// would be refused again, so it is split.
    Refused,
}

impl Failure {
    fn of(grpc_status: u32) -> Self {
        match grpc_status {
            // INVALID_ARGUMENT, RESOURCE_EXHAUSTED, FAILED_PRECONDITION, OUT_OF_RANGE
            // (tonic's answer to a message over its size limit).
            3 | 8 | 9 | 11 => Failure::Refused,
            _ => Failure::Transient,
        }
    }
}

/// A record with its size inside a `UsageBatch`, counted once when it is queued.
struct Held {
    record: UsageRecord,
    bytes: usize,
}

impl Held {
    fn new(record: UsageRecord) -> Self {
        let bytes = prost::encoding::message::encoded_len(1, &record);
        Self { record, bytes }
    }
}

/// Records that must be sent together again: a half of a refused batch, or a formed
/// batch that failed transiently.
type Formed = Vec<Held>;

/// The batch on its way, and where its records go back to if it fails.
struct InFlight {
    token: u32,
    records: Vec<Held>,
    /// It was a formed batch (kept apart) rather than records taken from the queue.
    formed: bool,
}

/// Records waiting to be reported, and the batch currently on its way.
#[derive(Default)]
pub struct Outbox {
    /// Formed batches, sent before `queue`, first one first.
    formed: VecDeque<Formed>,
    /// Records in no batch yet, oldest first.
    queue: VecDeque<Held>,
    in_flight: Option<InFlight>,
    /// Records and bytes waiting in `formed` and `queue` (not the batch in flight).
    waiting_records: usize,
    waiting_bytes: usize,
    limit_records: usize,
    limit_bytes: usize,
    /// Records dropped because the outbox was full.
    dropped: u64,
    /// Records the control plane refused on their own, dropped.
    poisoned: u64,
    /// Records the control plane acknowledged.
    acknowledged: u64,
}

/// What became of the records an outbox took, so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tally {
    /// Acknowledged by the control plane.
    pub sent: u64,
    /// Dropped: the outbox was full, or the control plane refused them on their own.
    pub dropped: u64,
}

impl Outbox {
    /// An empty outbox holding at most `settings.usage_buffer_limit` records and
    /// `settings.usage_buffer_bytes` bytes of them.
    pub fn new(settings: &FilterSettings) -> Self {
        Self {
            limit_records: settings.usage_buffer_limit,
            limit_bytes: settings.usage_buffer_bytes,
            ..Self::default()
        }
    }

    /// Queues a record; if the control plane has been away long enough to fill the
    /// outbox, the oldest records are dropped so memory stays bounded.
    pub fn push(&mut self, record: UsageRecord) {
        let held = Held::new(record);
        self.make_room(held.bytes);
        self.waiting_records = self.waiting_records.saturating_add(1);
        self.waiting_bytes = self.waiting_bytes.saturating_add(held.bytes);
        self.queue.push_back(held);
    }

    /// What became of the records taken so far.
    pub fn tally(&self) -> Tally {
        Tally {
            sent: self.acknowledged,
            dropped: self.dropped.saturating_add(self.poisoned),
        }
    }

    /// The next batch to send, encoded, unless one is in flight or nothing waits.
    /// The caller must follow with [`Outbox::sent`] or [`Outbox::unsent`].
    pub fn next_batch(&mut self) -> Option<Vec<u8>> {
        if self.in_flight.is_some() {
            return None;
        }
        let (records, formed) = match self.formed.pop_front() {
            Some(batch) => (batch, true),
            None => (self.take_from_queue(), false),
        };
        if records.is_empty() {
            return None;
        }
        self.waiting_records = self.waiting_records.saturating_sub(records.len());
        self.waiting_bytes = self
            .waiting_bytes
            .saturating_sub(records.iter().map(|h| h.bytes).sum());
        // A `UsageBatch` is its records as field 1; encoded in place, without copying them.
        let mut bytes = Vec::with_capacity(records.iter().map(|h| h.bytes).sum());
        for held in &records {
            prost::encoding::message::encode(1, &held.record, &mut bytes);
        }
        self.in_flight = Some(InFlight {
            token: 0,
            records,
            formed,
        });
        Some(bytes)
    }

    /// The batch from [`Outbox::next_batch`] was dispatched as call `token`.
    pub fn sent(&mut self, token: u32) {
        if let Some(in_flight) = self.in_flight.as_mut() {
            in_flight.token = token;
        }
    }

    /// The batch from [`Outbox::next_batch`] could not be dispatched; it waits again.
    pub fn unsent(&mut self) {
        if let Some(in_flight) = self.in_flight.take() {
            self.put_back(in_flight);
        }
    }

    /// The control plane answered call `token` with gRPC `status` and, on success, an ack.
    pub fn settle(&mut self, token: u32, status: u32, ack: Option<&[u8]>) {
        let Some(in_flight) = self.in_flight.take_if(|f| f.token == token) else {
            return;
        };
        if status == 0 {
            let sent = u64::try_from(in_flight.records.len()).unwrap_or(u64::MAX);
            self.acknowledged = self.acknowledged.saturating_add(sent);
            if let Some(ack) = ack.and_then(|b| UsageAck::decode(b).ok()) {
                log::debug!(
                    "tollgate: usage batch stored={} duplicates={}",
                    ack.stored,
                    ack.duplicates
                );
            }
            return;
        }
        match (Failure::of(status), in_flight.records.len()) {
            (Failure::Transient, _) => {
                if status == UNAUTHENTICATED {
                    log::error!(
                        "tollgate: the control plane refused this filter's `control_plane_token`; \
                         usage waits until the tokens match"
                    );
                } else {
                    log::warn!(
                        "tollgate: usage report failed with gRPC status {status}; will retry"
                    );
                }
                self.put_back(in_flight);
            }
            (Failure::Refused, 1) => {
                self.poisoned += 1;
                let id = &in_flight.records[0].record.request_id;
                log::error!(
                    "tollgate: the control plane refused the usage record of request {id} \
                     (gRPC status {status}); dropped, {} refused so far",
                    self.poisoned
                );
            }
            (Failure::Refused, n) => {
                log::warn!(
                    "tollgate: the control plane refused a usage batch of {n} records \
                     (gRPC status {status}); sending it in halves"
                );
                let mut first = in_flight.records;
                let second = first.split_off(n / 2);
                self.return_waiting(&first);
                self.return_waiting(&second);
                self.formed.push_front(second);
                self.formed.push_front(first);
                self.trim();
            }
        }
    }

    /// Records taken from the queue's front, up to [`MAX_BATCH`] and [`USAGE_BATCH_BYTES`];
    /// a record larger than that on its own goes alone.
    fn take_from_queue(&mut self) -> Vec<Held> {
        let mut bytes = 0usize;
        let mut n = 0;
        for held in self.queue.iter().take(MAX_BATCH) {
            if n > 0 && bytes.saturating_add(held.bytes) > USAGE_BATCH_BYTES {
                break;
            }
            bytes = bytes.saturating_add(held.bytes);
            n += 1;
        }
        self.queue.drain(..n).collect()
    }

    /// A batch that failed transiently goes back where it came from, to be sent first.
    fn put_back(&mut self, in_flight: InFlight) {
        self.return_waiting(&in_flight.records);
        if in_flight.formed {
            self.formed.push_front(in_flight.records);
        } else {
            for held in in_flight.records.into_iter().rev() {
                self.queue.push_front(held);
            }
        }
        self.trim();
    }

    fn return_waiting(&mut self, records: &[Held]) {
        self.waiting_records = self.waiting_records.saturating_add(records.len());
        self.waiting_bytes = self
            .waiting_bytes
            .saturating_add(records.iter().map(|h| h.bytes).sum());
    }

    /// Drops the oldest waiting records until `incoming` more bytes and one more record fit.
    fn make_room(&mut self, incoming: usize) {
        while self.waiting_records > 0
            && (self.waiting_records >= self.limit_records
                || self.waiting_bytes.saturating_add(incoming) > self.limit_bytes)
        {
            self.drop_oldest();
        }
    }

    /// Drops the oldest waiting records until the limits hold.
    fn trim(&mut self) {
        while self.waiting_records > 0
            && (self.waiting_records > self.limit_records || self.waiting_bytes > self.limit_bytes)
        {
            self.drop_oldest();
        }
    }

    fn drop_oldest(&mut self) {
        let oldest = match self.formed.front_mut() {
            Some(batch) => {
                let held = batch.remove(0);
                if batch.is_empty() {
                    self.formed.pop_front();
                }
                Some(held)
            }
            None => self.queue.pop_front(),
        };
        let Some(held) = oldest else {
            return;
        };
        self.waiting_records = self.waiting_records.saturating_sub(1);
        self.waiting_bytes = self.waiting_bytes.saturating_sub(held.bytes);
        self.dropped += 1;
        if self.dropped.is_power_of_two() {
            log::error!(
                "tollgate: usage outbox full, {} records dropped so far",
                self.dropped
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tollgate_proto::v1::UsageBatch;

    const OK: u32 = 0;
    const INVALID_ARGUMENT: u32 = 3;
    const DEADLINE_EXCEEDED: u32 = 4;
    const OUT_OF_RANGE: u32 = 11;
    const UNAVAILABLE: u32 = 14;

    fn outbox(records: usize, bytes: usize) -> Outbox {
        Outbox::new(&FilterSettings {
            usage_buffer_limit: records,
            usage_buffer_bytes: bytes,
            ..FilterSettings::default()
        })
    }

    fn record(id: &str) -> UsageRecord {
        UsageRecord {
            request_id: id.into(),
            ..UsageRecord::default()
        }
    }

    /// A record carrying `text_bytes` of output text for an estimate.
    fn big(id: &str, text_bytes: usize) -> UsageRecord {
        UsageRecord {
            estimate: Some(tollgate_proto::v1::Estimate {
                output: Some(tollgate_proto::v1::TextSample {
                    pieces: vec!["x".repeat(text_bytes)],
                    total_bytes: text_bytes as u64,
                }),
                ..Default::default()
            }),
            ..record(id)
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

    /// Sends batches until none is left, answering each with `answer`; returns every batch
    /// sent, as ids, in order.
    fn drain(o: &mut Outbox, answer: impl Fn(&[String]) -> u32) -> Vec<Vec<String>> {
        let mut sent = Vec::new();
        let mut token = 0;
        while let Some(batch) = o.next_batch() {
            token += 1;
            o.sent(token);
            let batch = ids(&batch);
            o.settle(token, answer(&batch), None);
            sent.push(batch);
            assert!(sent.len() < 1000, "the outbox never empties");
        }
        sent
    }

    #[test]
    fn one_batch_in_flight_at_a_time() {
        let mut o = outbox(10, 1 << 20);
        o.push(record("a"));
        o.push(record("b"));
        let batch = o.next_batch().unwrap();
        assert_eq!(ids(&batch), ["a", "b"]);
        o.sent(7);
        o.push(record("c"));
        assert!(o.next_batch().is_none(), "a batch is still in flight");
        o.settle(7, OK, None);
        assert_eq!(ids(&o.next_batch().unwrap()), ["c"]);
    }

    #[test]
    fn transient_failure_retries_the_batch_first() {
        let mut o = outbox(10, 1 << 20);
        o.push(record("a"));
        o.next_batch().unwrap();
        o.sent(1);
        o.push(record("b"));
        o.settle(1, UNAVAILABLE, None);
        assert_eq!(ids(&o.next_batch().unwrap()), ["a", "b"]);
        o.unsent();
        assert_eq!(ids(&o.next_batch().unwrap()), ["a", "b"]);
        o.sent(2);
        o.settle(2, DEADLINE_EXCEEDED, None);
        assert_eq!(ids(&o.next_batch().unwrap()), ["a", "b"]);
        assert_eq!(o.poisoned, 0);
    }

    #[test]
    fn answers_for_other_calls_are_ignored() {
        let mut o = outbox(10, 1 << 20);
        o.push(record("a"));
        o.next_batch().unwrap();
        o.sent(1);
        o.settle(2, OK, None);
        assert!(o.next_batch().is_none());
    }

    #[test]
    fn buffer_is_bounded_in_records_oldest_dropped() {
        let mut o = outbox(3, 1 << 20);
        for id in ["a", "b", "c", "d"] {
            o.push(record(id));
        }
        assert_eq!(o.dropped, 1);
        assert_eq!(ids(&o.next_batch().unwrap()), ["b", "c", "d"]);
    }

    #[test]
    fn buffer_is_bounded_in_bytes_oldest_dropped() {
        let limit = 1 << 20;
        let mut o = outbox(10_000, limit);
        for i in 0..10 {
            o.push(big(&format!("r{i}"), 300_000));
            assert!(o.waiting_bytes <= limit, "{} bytes held", o.waiting_bytes);
        }
        // Three records of ~300 KB fit in 1 MiB; the seven oldest went.
        assert_eq!(o.dropped, 7);
        let sent: Vec<String> = drain(&mut o, |_| OK).concat();
        assert_eq!(sent, ["r7", "r8", "r9"]);
    }

    #[test]
    fn batches_are_capped_in_records() {
        let mut o = outbox(5_000, 1 << 20);
        for i in 0..(MAX_BATCH + 5) {
            o.push(record(&i.to_string()));
        }
        assert_eq!(ids(&o.next_batch().unwrap()).len(), MAX_BATCH);
    }

    #[test]
    fn batches_are_capped_in_bytes_and_a_huge_record_goes_alone() {
        let mut o = outbox(100, 64 << 20);
        for i in 0..10 {
            o.push(big(&format!("r{i}"), 300_000));
        }
        o.push(big("huge", 2 * USAGE_BATCH_BYTES));
        o.push(record("small"));
        let mut sizes = Vec::new();
        let mut token = 0;
        while let Some(batch) = o.next_batch() {
            token += 1;
            o.sent(token);
            o.settle(token, OK, None);
            assert!(
                batch.len() <= USAGE_BATCH_BYTES || ids(&batch) == ["huge"],
                "{} bytes in {:?}",
                batch.len(),
                ids(&batch)
            );
            sizes.push(ids(&batch).len());
        }
        assert_eq!(sizes, [3, 3, 3, 1, 1, 1]);
    }

    #[test]
    fn refused_batch_is_split_until_the_poison_record_stands_alone() {
        let mut o = outbox(10_000, 32 << 20);
        let all: Vec<String> = (0..8).map(|i| format!("r{i}")).collect();
        for id in &all {
            o.push(record(id));
        }
        let sent = drain(&mut o, |batch| {
            if batch.iter().any(|id| id == "r5") {
                INVALID_ARGUMENT
            } else {
                OK
            }
        });
        assert_eq!(
            sent,
            [
                &all[..],
                &all[..4],
                &all[4..],
                &all[4..6],
                &all[4..5],
                &all[5..6],
                &all[6..],
            ]
        );
        assert_eq!(o.poisoned, 1);
        assert_eq!(o.dropped, 0);
        // Reporting goes on as before.
        o.push(record("next"));
        assert_eq!(drain(&mut o, |_| OK), [["next"]]);
    }

    #[test]
    fn an_oversized_record_is_dropped_not_resent_forever() {
        let mut o = outbox(10_000, 64 << 20);
        o.push(record("before"));
        o.push(big("oversized", tollgate_proto::MAX_MESSAGE_BYTES));
        o.push(record("after"));
        // The control plane refuses any message over its limit with OUT_OF_RANGE.
        let sent = drain(&mut o, |batch| {
            if batch.iter().any(|id| id == "oversized") {
                OUT_OF_RANGE
            } else {
                OK
            }
        });
        let delivered: Vec<&str> = sent
            .iter()
            .filter(|b| !b.iter().any(|id| id == "oversized"))
            .flatten()
            .map(String::as_str)
            .collect();
        assert_eq!(delivered, ["before", "after"]);
        assert_eq!(o.poisoned, 1);
    }

    #[test]
    fn transient_failure_of_a_half_resends_that_half() {
        let mut o = outbox(10_000, 32 << 20);
        for id in ["a", "b", "c", "d"] {
            o.push(record(id));
        }
        o.next_batch().unwrap();
        o.sent(1);
        o.settle(1, INVALID_ARGUMENT, None);
        o.push(record("e"));
        assert_eq!(ids(&o.next_batch().unwrap()), ["a", "b"]);
        o.sent(2);
        o.settle(2, UNAVAILABLE, None);
        assert_eq!(
            ids(&o.next_batch().unwrap()),
            ["a", "b"],
            "the half, unchanged"
        );
        o.sent(3);
        o.settle(3, OK, None);
        assert_eq!(drain(&mut o, |_| OK), [vec!["c", "d"], vec!["e"]]);
        assert_eq!(o.poisoned, 0);
    }

    #[test]
    fn only_content_refusals_split() {
        for status in [3, 8, 9, 11] {
            assert_eq!(Failure::of(status), Failure::Refused, "status {status}");
        }
        // CANCELLED, UNKNOWN, DEADLINE_EXCEEDED, UNAVAILABLE, INTERNAL, UNAUTHENTICATED...
        for status in [1, 2, 4, 7, 13, 14, 16] {
            assert_eq!(Failure::of(status), Failure::Transient, "status {status}");
        }
    }
}
