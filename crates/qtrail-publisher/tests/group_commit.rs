//! Group commit (`Outbox::begin`): concurrent callers' transactions, each with its own fate,
//! made durable together; the publisher reads only what a durable commit covers.

mod support;

use std::sync::{Arc, Barrier};

use qtrail_publisher::{CommitMode, Outbox, OutboxLimits};
use redb::{Database, Durability, ReadableDatabase, TableDefinition};
use support::{event, open};

/// A table of the caller's own state, changed in the same transaction as the event.
const STATE: TableDefinition<'_, u64, u64> = TableDefinition::new("state");

fn state(db: &Database, key: u64) -> Option<u64> {
    let txn = db.begin_read().unwrap();
    let table = txn.open_table(STATE).ok()?;
    table.get(key).unwrap().map(|value| value.value())
}

/// Threads commit at once, every fifth one aborts after writing: each committed change and event
/// is there, nothing of an aborted one is, and the sequence stays dense.
#[test]
fn concurrent_callers_commit_their_own_changes_and_aborts_take_nothing_from_others() {
    let (_dir, db, outbox) = open(OutboxLimits::default(), CommitMode::Grouped);
    let threads = 8;
    let per_thread = 25;
    let start = Arc::new(Barrier::new(threads));
    let handles: Vec<_> = (0..threads)
        .map(|thread| {
            let (outbox, start) = (outbox.clone(), start.clone());
            std::thread::spawn(move || {
                start.wait();
                let mut committed = Vec::new();
                for n in 0..per_thread {
                    let key = (thread * per_thread + n) as u64;
                    let txn = outbox.begin().unwrap();
                    txn.open_table(STATE).unwrap().insert(key, key * 10).unwrap();
                    outbox.enqueue(&txn, &event(key as usize)).unwrap();
                    if key.is_multiple_of(5) {
                        txn.abort();
                    } else {
                        txn.commit().unwrap();
                        committed.push(key);
                    }
                }
                committed
            })
        })
        .collect();
    let committed: Vec<u64> = handles.into_iter().flat_map(|handle| handle.join().unwrap()).collect();
    let total = (threads * per_thread) as u64;
    assert_eq!(committed.len() as u64, total - total / 5);
    for key in 0..total {
        let expected = (!key.is_multiple_of(5)).then_some(key * 10);
        assert_eq!(state(&db, key), expected, "state of {key}");
    }
    assert_eq!(outbox.position().unwrap(), (1, committed.len() as u64), "aborted events used up no seq");
    let batch = outbox.read_after(0, 1000, usize::MAX).unwrap();
    let seqs: Vec<u64> = batch.events.iter().map(|queued| queued.seq).collect();
    assert_eq!(seqs, (1..=committed.len() as u64).collect::<Vec<_>>(), "every committed event is publishable");
}

/// An event committed without a durable commit after it stays invisible to the publisher until
/// one comes, even though other transactions already see it.
#[test]
fn the_publisher_reads_only_events_a_durable_commit_covers() {
    let (_dir, db, outbox) = open(OutboxLimits::default(), CommitMode::Grouped);
    let first = outbox.begin().unwrap();
    outbox.enqueue(&first, &event(1)).unwrap();
    first.commit().unwrap();

    // A commit without fsync, as group commit makes before its leader's durable commit.
    let mut pending = db.begin_write().unwrap();
    pending.set_durability(Durability::None).unwrap();
    outbox.enqueue(&pending, &event(2)).unwrap();
    pending.commit().unwrap();
    assert_eq!(outbox.position().unwrap(), (1, 2), "visible to other transactions");
    let seqs = |outbox: &Outbox| -> Vec<u64> {
        outbox.read_after(0, 100, usize::MAX).unwrap().events.iter().map(|queued| queued.seq).collect()
    };
    assert_eq!(seqs(&outbox), [1], "not yet durable, not yet published");

    // The next group commit's durable commit covers it.
    let next = outbox.begin().unwrap();
    outbox.enqueue(&next, &event(3)).unwrap();
    next.commit().unwrap();
    assert_eq!(seqs(&outbox), [1, 2, 3]);
}

/// Without group commit (plain transactions committed durably by the caller), every committed
/// event is publishable, as before.
#[test]
fn plain_durable_commits_are_published_without_group_commit() {
    let (_dir, db, outbox) = open(OutboxLimits::default(), CommitMode::PerTransaction);
    for n in 0..3 {
        let txn = db.begin_write().unwrap();
        outbox.enqueue(&txn, &event(n)).unwrap();
        txn.commit().unwrap();
    }
    assert_eq!(outbox.read_after(0, 100, usize::MAX).unwrap().events.len(), 3);
}

/// Without group commit, a transaction from `Outbox::begin` commits durably by itself: its change
/// and event are there and publishable at once, and an aborted one leaves nothing.
#[test]
fn outbox_transactions_commit_alone_when_each_commit_is_durable() {
    let (_dir, db, outbox) = open(OutboxLimits::default(), CommitMode::PerTransaction);
    assert_eq!(outbox.commit_mode(), CommitMode::PerTransaction);
    let aborted = outbox.begin().unwrap();
    aborted.open_table(STATE).unwrap().insert(1, 10).unwrap();
    outbox.enqueue(&aborted, &event(1)).unwrap();
    aborted.abort();
    let committed = outbox.begin().unwrap();
    committed.open_table(STATE).unwrap().insert(2, 20).unwrap();
    outbox.enqueue(&committed, &event(2)).unwrap();
    committed.commit().unwrap();
    assert_eq!((state(&db, 1), state(&db, 2)), (None, Some(20)));
    let seqs: Vec<u64> =
        outbox.read_after(0, 100, usize::MAX).unwrap().events.iter().map(|queued| queued.seq).collect();
    assert_eq!(seqs, [1], "the aborted event used up no seq");
}

/// Events submitted to the event writer (`Outbox::submit`) complete each with its own seq once
/// durable, the sequence stays dense, and an event past the bound fails its own recording only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submitted_events_complete_when_durable_each_with_its_own_fate() {
    let (_dir, _db, outbox) = open(OutboxLimits { max_events: 5, max_bytes: u64::MAX }, CommitMode::Grouped);
    let recordings: Vec<_> = (0..5).map(|n| outbox.submit(&event(n)).unwrap()).collect();
    let mut seqs = Vec::new();
    for recording in recordings {
        seqs.push(recording.durable().await.unwrap());
    }
    seqs.sort_unstable();
    assert_eq!(seqs, vec![1, 2, 3, 4, 5]);
    assert_eq!(outbox.depth().unwrap().events, 5);
    let refused = outbox.submit(&event(5)).unwrap().durable().await;
    assert!(matches!(refused, Err(qtrail_publisher::OutboxError::Full { events: 5, .. })), "{refused:?}");
    assert_eq!(outbox.read_after(0, 100, usize::MAX).unwrap().events.len(), 5);
}
