//! The positions against a model of partitions, their brokers and a stream that
//! commits what it takes: whatever the order of fetches, batches, silences, appends and
//! rebalances, every record from the store's position on is taken exactly once and in
//! order, and records deleted before they were read stop the consumer with an error.

use std::time::{Duration, Instant};

use proptest::prelude::*;

use super::{
    Missing, Positions, Step, MAX_RESTARTS_AT_ZERO, MAX_STALL_REWIND, POSITIONING_PATIENCE,
};
use crate::StartPosition;

/// How a broker answers a fetch that starts inside a producer batch.
#[derive(Debug, Clone, Copy)]
enum Broker {
    /// From the asked offset (Kafka sends the whole batch; the client drops what is
    /// below the offset).
    Kafka,
    /// From the next batch, or nothing until there is one (Tansu).
    NextBatch,
}

/// One partition as its broker holds it, and where its fetch is.
#[derive(Debug)]
struct Partition {
    /// The end offset of each producer batch; the first batch starts at 0.
    batch_ends: Vec<u64>,
    /// Records below this were deleted (retention); always a batch boundary.
    log_start: u64,
    /// The next offset the fetch delivers, once the log reaches it; `None` before the
    /// partition is assigned.
    cursor: Option<u64>,
}

impl Partition {
    fn end(&self) -> u64 {
        self.batch_ends.last().copied().unwrap_or(0)
    }

    fn append(&mut self, records: u64) {
        let end = self.end();
        self.batch_ends.push(end + records);
    }

    /// The fetch (re)starts at `start`, as `broker` answers it.
    fn fetch_from(&mut self, start: u64, broker: Broker) {
        // Below the log start the offset is out of range and resets to the earliest.
        let start = start.max(self.log_start);
        let from = match broker {
            Broker::Kafka => start,
            Broker::NextBatch => {
                let mut batch_start = 0;
                let mut from = start;
                for &end in &self.batch_ends {
                    if batch_start < start && start < end {
                        from = end;
                        break;
                    }
                    batch_start = end;
                }
                from
            }
        };
        self.cursor = Some(from);
    }

    /// The next fetched record's offset, if the log has it.
    fn fetch(&mut self) -> Option<u64> {
        let cursor = self.cursor.as_mut()?;
        // Deleted under the fetch: out of range, which resets to the earliest.
        *cursor = (*cursor).max(self.log_start);
        (*cursor < self.batch_ends.last().copied().unwrap_or(0)).then(|| {
            *cursor += 1;
            *cursor - 1
        })
    }
}

/// The consumer and a stream that commits each batch to a store.
struct Sim {
    broker: Broker,
    partitions: Vec<Partition>,
    positions: Positions,
    now: Instant,
    /// The store: the next offset of each partition, and every offset committed.
    stored: Vec<u64>,
    committed: Vec<Vec<u64>>,
    /// The batch being filled, and the record held over for the next one.
    batch: Option<(u32, Vec<u64>)>,
    held: Option<(u32, u64)>,
    in_poll: bool,
    max_batch: usize,
}

/// What happens next, chosen by the property tests.
#[derive(Debug, Clone)]
enum Op {
    /// The fetch of this partition (modulo the count) delivers its next record.
    Fetch(usize),
    /// The poll ends: the batch is committed.
    EndPoll,
    /// Time passes with nothing fetched.
    Wait(Duration),
    /// A producer appends a batch of this many records.
    Append(usize, u64),
    /// The group rebalances: every partition is revoked, then assigned again at the
    /// store's positions.
    Rebalance,
    /// A seek is refused and every partition is assigned again at its fetch start.
    /// That happens inside a poll, so after the held record opened its batch.
    Reassign,
}

impl Sim {
    fn new(broker: Broker, logs: Vec<(Vec<u64>, u64)>, max_batch: usize) -> Self {
        let mut partitions = Vec::new();
        let mut stored = Vec::new();
        for (sizes, position) in logs {
            let mut partition = Partition {
                batch_ends: Vec::new(),
                log_start: 0,
                cursor: None,
            };
            for size in sizes {
                partition.append(size);
            }
            stored.push(position.min(partition.end()));
            partitions.push(partition);
        }
        let count = partitions.len();
        let mut sim = Self {
            broker,
            partitions,
            positions: Positions::default(),
            now: Instant::now(),
            stored,
            committed: vec![Vec::new(); count],
            batch: None,
            held: None,
            in_poll: false,
            max_batch,
        };
        sim.assign_at_store_positions();
        sim
    }

    fn assign_at_store_positions(&mut self) {
        let positions: Vec<StartPosition> = (0..self.partitions.len())
            .map(|partition| StartPosition {
                partition: id(partition),
                next_offset: self.stored[partition],
            })
            .collect();
        let starts = self.positions.assign(&positions, self.now);
        self.restart_all(&starts);
    }

    fn restart_all(&mut self, starts: &[(u32, u64)]) {
        assert_eq!(
            starts.len(),
            self.partitions.len(),
            "an assignment names every assigned partition"
        );
        for &(partition, start) in starts {
            self.partitions[index(partition)].fetch_from(start, self.broker);
        }
    }

    fn start_poll(&mut self) -> Result<(), Missing> {
        if self.in_poll {
            return Ok(());
        }
        self.in_poll = true;
        if let Some((partition, offset)) = self.held.take() {
            let step = self.offer(partition, offset)?;
            assert_eq!(step, Step::Take, "a held record opens the next batch");
        }
        for (partition, start) in self.positions.stalled(self.now) {
            self.partitions[index(partition)].fetch_from(start, self.broker);
        }
        Ok(())
    }

    /// Offers one record and does what the positions answer.
    fn offer(&mut self, partition: u32, offset: u64) -> Result<Step, Missing> {
        let batch = self.batch.as_ref().map(|(partition, _)| *partition);
        let log_start = self.partitions[index(partition)].log_start;
        let step = self
            .positions
            .offer(partition, offset, batch, self.now, || Some(log_start))?;
        match step {
            Step::Take => {
                let (_, offsets) = self.batch.get_or_insert((partition, Vec::new()));
                offsets.push(offset);
            }
            Step::Skip => {}
            Step::Hold => self.held = Some((partition, offset)),
            Step::Restart { start } => {
                self.partitions[index(partition)].fetch_from(start, self.broker);
            }
        }
        Ok(step)
    }

    /// The stream commits the batch: it must start at the store's position and be
    /// consecutive.
    fn end_poll(&mut self) {
        self.in_poll = false;
        let Some((partition, offsets)) = self.batch.take() else {
            return;
        };
        let partition = index(partition);
        let expected: Vec<u64> =
            (self.stored[partition]..self.stored[partition] + offsets.len() as u64).collect();
        assert_eq!(
            offsets, expected,
            "a batch of partition {partition} is the next records after the store's position"
        );
        self.stored[partition] += offsets.len() as u64;
        self.committed[partition].extend(offsets);
    }

    /// Fetches one record of a partition; answers whether one was there.
    fn fetch(&mut self, partition: usize) -> Result<bool, Missing> {
        self.start_poll()?;
        let Some(offset) = self.partitions[partition].fetch() else {
            return Ok(false);
        };
        let step = self.offer(id(partition), offset)?;
        let full = self
            .batch
            .as_ref()
            .is_some_and(|(_, offsets)| offsets.len() >= self.max_batch);
        if step == Step::Hold || full {
            self.end_poll();
        }
        Ok(true)
    }

    fn apply(&mut self, op: &Op) -> Result<(), Missing> {
        let count = self.partitions.len();
        match *op {
            Op::Fetch(partition) => {
                self.fetch(partition % count)?;
            }
            Op::EndPoll => self.end_poll(),
            Op::Wait(duration) => self.now += duration,
            Op::Append(partition, records) => self.partitions[partition % count].append(records),
            Op::Rebalance => {
                // The batch being filled is dropped: its records are read again.
                if let Some((partition, offsets)) = self.batch.take() {
                    self.positions.unread(partition, offsets[0]);
                }
                self.held = None;
                self.in_poll = false;
                let all: Vec<u32> = (0..count).map(id).collect();
                self.positions.revoke(&all);
                self.assign_at_store_positions();
            }
            Op::Reassign => {
                self.start_poll()?;
                let starts = self.positions.fetch_starts(self.now);
                self.restart_all(&starts);
            }
        }
        Ok(())
    }

    /// Polls until every record in every log is committed, time passing only while
    /// nothing arrives; fails if that never happens.
    fn drain(&mut self) -> Result<(), Missing> {
        for _ in 0..10_000 {
            let mut fetched = false;
            for partition in 0..self.partitions.len() {
                while self.fetch(partition)? {
                    fetched = true;
                    if !self.in_poll {
                        break;
                    }
                }
            }
            self.end_poll();
            let done = self.held.is_none()
                && self
                    .partitions
                    .iter()
                    .zip(&self.stored)
                    .all(|(partition, stored)| *stored == partition.end());
            if done {
                return Ok(());
            }
            if !fetched {
                self.now += Duration::from_millis(500);
            }
        }
        panic!(
            "the stream never reached the end of the logs: stored {:?}, ends {:?}",
            self.stored,
            self.partitions
                .iter()
                .map(Partition::end)
                .collect::<Vec<_>>()
        );
    }
}

fn id(partition: usize) -> u32 {
    u32::try_from(partition).expect("a handful of partitions")
}

fn index(partition: u32) -> usize {
    usize::try_from(partition).expect("a handful of partitions")
}

fn broker() -> impl Strategy<Value = Broker> {
    prop_oneof![Just(Broker::Kafka), Just(Broker::NextBatch)]
}

/// Up to four partitions, each with some producer batches and a store position
/// anywhere in them (as a fraction of the log, so it lands inside batches too).
fn logs() -> impl Strategy<Value = Vec<(Vec<u64>, f64)>> {
    prop::collection::vec((prop::collection::vec(1u64..120, 0..8), 0.0f64..=1.0), 1..4)
}

fn at_positions(logs: Vec<(Vec<u64>, f64)>) -> Vec<(Vec<u64>, u64)> {
    logs.into_iter()
        .map(|(sizes, fraction)| {
            let total: u64 = sizes.iter().sum();
            // Truncation is the point: any offset from 0 to the end.
            #[allow(
                clippy::cast_possible_truncation,
                clippy::cast_sign_loss,
                clippy::cast_precision_loss
            )]
            let position = (total as f64 * fraction) as u64;
            (sizes, position)
        })
        .collect()
}

fn ops() -> impl Strategy<Value = Vec<Op>> {
    let op = prop_oneof![
        12 => (0usize..4).prop_map(Op::Fetch),
        3 => Just(Op::EndPoll),
        2 => (0u64..7_000).prop_map(|ms| Op::Wait(Duration::from_millis(ms))),
        2 => ((0usize..4), (1u64..150)).prop_map(|(partition, records)| Op::Append(partition, records)),
        1 => Just(Op::Rebalance),
        1 => Just(Op::Reassign),
    ];
    prop::collection::vec(op, 0..400)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn every_record_from_the_store_position_on_is_taken_once_and_in_order(
        broker in broker(),
        logs in logs(),
        max_batch in 1usize..50,
        ops in ops(),
    ) {
        let logs = at_positions(logs);
        let from: Vec<u64> = logs.iter().map(|(_, position)| *position).collect();
        let mut sim = Sim::new(broker, logs, max_batch);
        for op in &ops {
            if let Err(missing) = sim.apply(op) {
                prop_assert!(false, "no record was deleted, yet: {missing:?}");
            }
        }
        if let Err(missing) = sim.drain() {
            prop_assert!(false, "no record was deleted, yet: {missing:?}");
        }
        for (partition, committed) in sim.committed.iter().enumerate() {
            let all: Vec<u64> = (from[partition]..sim.partitions[partition].end()).collect();
            prop_assert_eq!(committed, &all, "partition {}", partition);
        }
    }

    #[test]
    fn records_deleted_before_they_were_read_stop_the_consumer_naming_them(
        broker in broker(),
        logs in logs(),
        max_batch in 1usize..50,
        ops in ops(),
        deleted_batches in 1usize..4,
    ) {
        let logs = at_positions(logs);
        let mut sim = Sim::new(broker, logs, max_batch);
        for op in &ops {
            let _ = sim.apply(op);
        }
        // Retention deletes whole batches of partition 0 past its store position,
        // leaving at least one record.
        let position = sim.positions.expected().next().map(|(_, offset)| offset);
        let partition = &mut sim.partitions[0];
        let beyond: Vec<u64> = partition
            .batch_ends
            .iter()
            .copied()
            .filter(|end| Some(*end) > position && *end < partition.end())
            .collect();
        prop_assume!(!beyond.is_empty() && sim.batch.is_none() && sim.held.is_none());
        let log_start = beyond[(deleted_batches - 1).min(beyond.len() - 1)];
        partition.log_start = log_start;
        let expected = sim.stored[0];
        prop_assume!(position == Some(expected));
        match sim.drain() {
            Ok(()) => prop_assert!(false, "records {expected}..{log_start} were skipped silently"),
            Err(missing) => {
                prop_assert_eq!(missing.partition, 0);
                prop_assert_eq!(missing.expected, expected);
                prop_assert_eq!(missing.found, log_start);
                // Found while streaming, or from offset 0 after the broker said where
                // the log starts now.
                prop_assert!(
                    missing.reason.contains("records are missing from the topic"),
                    "{}", missing.reason
                );
            }
        }
        prop_assert!(sim.committed[0].iter().all(|offset| *offset < expected));
    }
}

fn positioned(partition: u32, next_offset: u64, now: Instant) -> Positions {
    let mut positions = Positions::default();
    let starts = positions.assign(
        &[StartPosition {
            partition,
            next_offset,
        }],
        now,
    );
    assert_eq!(starts, vec![(partition, next_offset)]);
    positions
}

fn no_log_start() -> Option<u64> {
    panic!("the log start is asked only when a fetch from offset 0 skips")
}

#[test]
fn records_below_are_skipped_the_expected_one_taken_and_another_partitions_held() {
    let now = Instant::now();
    let mut positions = positioned(0, 10, now);
    positions.assign(
        &[StartPosition {
            partition: 1,
            next_offset: 3,
        }],
        now,
    );
    assert_eq!(
        positions.offer(0, 9, None, now, no_log_start),
        Ok(Step::Skip)
    );
    assert_eq!(
        positions.offer(0, 10, None, now, no_log_start),
        Ok(Step::Take)
    );
    assert_eq!(
        positions.offer(1, 3, Some(0), now, no_log_start),
        Ok(Step::Hold)
    );
    assert_eq!(
        positions.expected().collect::<Vec<_>>(),
        vec![(0, 11), (1, 3)],
        "a held record changes nothing"
    );
    assert_eq!(
        positions.offer(1, 3, None, now, no_log_start),
        Ok(Step::Take)
    );
    assert_eq!(
        positions.offer(7, 0, None, now, no_log_start),
        Ok(Step::Skip),
        "not assigned"
    );
}

#[test]
fn a_skip_after_the_fetch_is_in_place_is_a_gap_at_once() {
    let now = Instant::now();
    let mut positions = positioned(2, 10, now);
    assert_eq!(
        positions.offer(2, 10, None, now, no_log_start),
        Ok(Step::Take)
    );
    let missing = positions
        .offer(2, 15, None, now, no_log_start)
        .expect_err("records 11 to 14 are missing");
    assert_eq!(
        (missing.partition, missing.expected, missing.found),
        (2, 11, 15)
    );
    let error = missing.into_error("events").to_string();
    assert!(
        error.contains("kafka topic events partition 2")
            && error.contains("the next record is at offset 15 but the stream expects 11")
            && error.contains("records are missing from the topic"),
        "{error}"
    );
}

#[test]
fn a_skip_while_positioning_restarts_twice_as_far_back_each_time_then_from_zero() {
    let now = Instant::now();
    let mut positions = positioned(0, 1_000, now);
    let mut starts = Vec::new();
    loop {
        match positions.offer(0, 1_005, None, now, || Some(0)) {
            Ok(Step::Restart { start }) => starts.push(start),
            Ok(step) => panic!("a skip is not {step:?}"),
            Err(missing) => {
                assert!(
                    missing.reason.contains(&format!(
                        "{} fetches from offset 0 skipped it and the broker says the topic starts at offset 0",
                        MAX_RESTARTS_AT_ZERO + 1
                    )),
                    "{}",
                    missing.reason
                );
                break;
            }
        }
    }
    let rewinds: Vec<u64> = [936, 872, 744, 488, 0].into();
    let zeros = usize::try_from(MAX_RESTARTS_AT_ZERO).expect("small");
    let mut expected = rewinds;
    expected.extend(std::iter::repeat_n(0, zeros));
    assert_eq!(starts, expected);
}

#[test]
fn a_skip_from_zero_past_the_log_start_names_where_the_topic_starts_and_a_silent_broker_is_said_so()
{
    let now = Instant::now();
    let mut positions = positioned(0, 0, now);
    let missing = positions
        .offer(0, 40, None, now, || Some(40))
        .expect_err("records 0 to 39 are deleted");
    assert!(
        missing.reason.contains("the topic now starts at offset 40"),
        "{}",
        missing.reason
    );

    let mut positions = positioned(0, 0, now);
    let mut error = None;
    for _ in 0..=MAX_RESTARTS_AT_ZERO {
        match positions.offer(0, 40, None, now, || None) {
            Ok(step) => assert_eq!(step, Step::Restart { start: 0 }),
            Err(missing) => error = Some(missing),
        }
    }
    let missing = error.expect("the fetch from 0 keeps skipping");
    assert!(
        missing
            .reason
            .contains("the broker did not say where the topic starts"),
        "{}",
        missing.reason
    );
}

#[test]
fn a_silent_positioned_fetch_restarts_further_back_after_the_patience_up_to_a_bound() {
    let start = Instant::now();
    let mut positions = positioned(0, 100_000, start);
    assert_eq!(
        positions.stalled(start + POSITIONING_PATIENCE - Duration::from_millis(1)),
        vec![],
        "not before the patience"
    );
    let mut now = start;
    let mut restarts = Vec::new();
    for _ in 0..20 {
        now += POSITIONING_PATIENCE;
        restarts.extend(positions.stalled(now));
    }
    let distances: Vec<u64> = restarts.iter().map(|(_, at)| 100_000 - at).collect();
    let mut expected = Vec::new();
    let mut distance = 64;
    while distance <= MAX_STALL_REWIND {
        expected.push(distance);
        distance *= 2;
    }
    assert_eq!(distances, expected);

    // A record fetched, even below the expected one, says the broker answers.
    let mut positions = positioned(0, 100_000, start);
    assert_eq!(
        positions.offer(0, 50, None, start, no_log_start),
        Ok(Step::Skip)
    );
    assert_eq!(positions.stalled(start + POSITIONING_PATIENCE * 10), vec![]);
}

#[test]
fn a_new_assignment_positions_every_partition_again_at_its_expected_offset() {
    let now = Instant::now();
    let mut positions = positioned(0, 5, now);
    assert_eq!(
        positions.offer(0, 5, None, now, no_log_start),
        Ok(Step::Take)
    );
    assert_eq!(positions.fetch_starts(now), vec![(0, 6)]);
    // Positioning again: a skip now restarts further back instead of failing.
    assert_eq!(
        positions.offer(0, 9, None, now, no_log_start),
        Ok(Step::Restart { start: 0 })
    );
    positions.unread(0, 2);
    assert_eq!(positions.expected().collect::<Vec<_>>(), vec![(0, 2)]);
    positions.revoke(&[0]);
    assert_eq!(positions.expected().count(), 0);
}
