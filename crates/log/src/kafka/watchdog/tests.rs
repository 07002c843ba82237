use super::*;

const PATIENCE: Duration = Duration::from_secs(10);

fn seen(partitions: &[(u32, u64, u64)]) -> Vec<PartitionSeen> {
    partitions
        .iter()
        .map(|&(partition, committed, end)| PartitionSeen {
            partition,
            committed,
            end,
        })
        .collect()
}

fn owned(partitions: &[u32]) -> BTreeSet<u32> {
    partitions.iter().copied().collect()
}

#[test]
fn partitions_read_by_their_owners_are_healthy() {
    let mut watchdog = Watchdog::new(PATIENCE);
    let start = Instant::now();
    for second in 0..60u64 {
        let verdict = watchdog.check(
            start + Duration::from_secs(second),
            &owned(&[0]),
            &seen(&[
                (0, second * 10, second * 10 + 50),
                (1, second * 10, second * 10 + 50),
            ]),
        );
        assert_eq!(verdict, Verdict::Healthy, "second {second}");
    }
}

#[test]
fn partitions_without_records_to_read_are_healthy_however_long_nothing_moves() {
    let mut watchdog = Watchdog::new(PATIENCE);
    let start = Instant::now();
    for second in 0..60u64 {
        let verdict = watchdog.check(
            start + Duration::from_secs(second),
            &owned(&[]),
            &seen(&[(0, 100, 100), (1, 0, 0)]),
        );
        assert_eq!(verdict, Verdict::Healthy);
    }
}

#[test]
fn a_member_without_partitions_while_records_wait_rejoins_after_the_patience() {
    let mut watchdog = Watchdog::new(PATIENCE);
    let start = Instant::now();
    let waiting = seen(&[(0, 100, 500), (1, 0, 0), (2, 7, 9)]);
    assert_eq!(
        watchdog.check(start, &owned(&[]), &waiting),
        Verdict::Healthy
    );
    assert_eq!(
        watchdog.check(
            start + PATIENCE - Duration::from_millis(1),
            &owned(&[]),
            &waiting
        ),
        Verdict::Healthy
    );
    let verdict = watchdog.check(start + PATIENCE, &owned(&[]), &waiting);
    assert_eq!(
        verdict,
        Verdict::Rejoin(StuckCause::NoPartitions {
            waiting: vec![0, 2]
        })
    );
}

#[test]
fn partitions_of_a_gone_member_make_a_reading_member_rejoin() {
    let mut watchdog = Watchdog::new(PATIENCE);
    let start = Instant::now();
    for second in 0..=10u64 {
        let verdict = watchdog.check(
            start + Duration::from_secs(second),
            &owned(&[1]),
            // Partition 1 is read; partition 0 waits and its committed offset stays.
            &seen(&[(0, 300, 900), (1, second * 10, second * 10 + 50)]),
        );
        let expected = if second < 10 {
            Verdict::Healthy
        } else {
            Verdict::Rejoin(StuckCause::PartitionsUnread { waiting: vec![0] })
        };
        assert_eq!(verdict, expected, "second {second}");
    }
}

#[test]
fn a_store_that_holds_everyone_back_is_no_reason_to_rejoin() {
    let mut watchdog = Watchdog::new(PATIENCE);
    let start = Instant::now();
    for second in 0..60u64 {
        let verdict = watchdog.check(
            start + Duration::from_secs(second),
            &owned(&[1]),
            &seen(&[(0, 300, 900), (1, 200, 800)]),
        );
        assert_eq!(verdict, Verdict::Healthy, "second {second}");
    }
}

#[test]
fn a_partition_just_taken_over_gets_the_whole_patience() {
    let mut watchdog = Watchdog::new(PATIENCE);
    let start = Instant::now();
    let waiting = seen(&[(0, 300, 900), (1, 300, 900)]);
    // Both partitions have waited long; this member takes partition 1 over only now:
    // partition 0 alone makes the group stuck, partition 1 is judged from now on.
    assert_eq!(
        watchdog.check(start, &owned(&[]), &waiting),
        Verdict::Healthy
    );
    let taken_over = start + PATIENCE * 3;
    watchdog.last_rejoin = Some(taken_over);
    watchdog.rejoins_in_a_row = 1;
    assert_eq!(
        watchdog.check(taken_over, &owned(&[1]), &waiting),
        Verdict::Stuck(StuckCause::PartitionsUnread { waiting: vec![0] })
    );
    // Once partition 1 has been this member's for the patience without moving, the
    // member itself is held back: no rejoin.
    assert_eq!(
        watchdog.check(taken_over + PATIENCE, &owned(&[1]), &waiting),
        Verdict::Healthy
    );
}

#[test]
fn rejoins_that_do_not_help_come_less_and_less_often() {
    let mut watchdog = Watchdog::new(PATIENCE);
    let start = Instant::now();
    let waiting = seen(&[(0, 100, 500)]);
    let mut rejoins = Vec::new();
    for second in 0..=400u64 {
        let now = start + Duration::from_secs(second);
        match watchdog.check(now, &owned(&[]), &waiting) {
            Verdict::Rejoin(_) => rejoins.push(second),
            Verdict::Stuck(_) => assert!(second > 10, "stuck before the patience"),
            Verdict::Healthy => assert!(second < 10, "healthy while stuck at {second}"),
        }
    }
    // The patience, then 1, 2, 4 and 8 times it between two rejoins, at most 8.
    assert_eq!(rejoins, vec![10, 20, 40, 80, 160, 240, 320, 400]);
}

#[test]
fn progress_after_a_rejoin_ends_the_stall_and_resets_the_backoff() {
    let mut watchdog = Watchdog::new(PATIENCE);
    let start = Instant::now();
    let stalled = seen(&[(0, 100, 500)]);
    assert_eq!(
        watchdog.check(start, &owned(&[]), &stalled),
        Verdict::Healthy
    );
    assert!(matches!(
        watchdog.check(start + PATIENCE, &owned(&[]), &stalled),
        Verdict::Rejoin(_)
    ));
    // Another member now reads partition 0.
    let moving = seen(&[(0, 200, 500)]);
    assert_eq!(
        watchdog.check(start + PATIENCE * 2, &owned(&[]), &moving),
        Verdict::Healthy
    );
    assert_eq!(watchdog.rejoins_in_a_row, 0);
    // A later stall starts from the patience again.
    assert_eq!(
        watchdog.check(
            start + PATIENCE * 3 - Duration::from_millis(1),
            &owned(&[]),
            &moving
        ),
        Verdict::Healthy
    );
    assert!(matches!(
        watchdog.check(start + PATIENCE * 3, &owned(&[]), &moving),
        Verdict::Rejoin(_)
    ));
}
