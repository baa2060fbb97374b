//! Conformance: signed checkpoints, kept per location, densely numbered, newest first.

use std::path::Path;

use qtrail_proto::qtrail::audit::v1 as proto;

use super::{Factory, at, location};
use crate::store::StoreError;

/// Checkpoints are kept per location, densely numbered, newest first, durably.
pub(super) fn checkpoints(factory: Factory<'_>, dir: &Path) {
    let checkpoint = |location: &str, number: u64| proto::Checkpoint {
        location: location.into(),
        number,
        location_seq: number * 10,
        head_chain_hash: vec![u8::try_from(number).unwrap_or(0); 32],
        time: Some(at(i64::try_from(number).unwrap_or(0))),
        key_id: "k".into(),
        signature: vec![1, 2, 3],
        note: format!("o/{location}\n{}\nroot\n\n— o/{location} sig\n", number * 10),
        tree_size: number * 10,
        root: vec![9; 32],
    };
    let store = factory(dir);
    let err = store.add_checkpoint(&checkpoint("us-east", 1)).unwrap_err();
    assert!(matches!(err, StoreError::NoCollector(_)), "{err}");
    for name in ["us-east", "eu-de"] {
        store.create_collector(&location(name), at(0)).unwrap();
    }
    assert!(store.checkpoints(&location("us-east"), None, 10).unwrap().is_empty());
    for number in 1..=5 {
        store.add_checkpoint(&checkpoint("us-east", number)).unwrap();
    }
    store.add_checkpoint(&checkpoint("eu-de", 1)).unwrap();
    for wrong in [3, 7] {
        let err = store.add_checkpoint(&checkpoint("us-east", wrong)).unwrap_err();
        assert!(matches!(err, StoreError::Backend(_)), "{err}");
    }
    drop(store);

    let store = factory(dir);
    let numbers = |before, limit| -> Vec<u64> {
        store.checkpoints(&location("us-east"), before, limit).unwrap().iter().map(|c| c.number).collect()
    };
    let intact = |name: &str, limit| -> Vec<proto::Checkpoint> {
        let entries = store.checkpoints(&location(name), None, limit).unwrap();
        entries.into_iter().map(|entry| entry.checkpoint.expect("intact")).collect()
    };
    assert_eq!(numbers(None, 10), [5, 4, 3, 2, 1]);
    assert_eq!(numbers(None, 2), [5, 4]);
    assert_eq!(numbers(Some(4), 2), [3, 2]);
    assert_eq!(numbers(Some(1), 2), Vec::<u64>::new());
    assert_eq!(intact("us-east", 1), [checkpoint("us-east", 5)]);
    assert_eq!(intact("eu-de", 10), [checkpoint("eu-de", 1)]);
    assert!(store.checkpoints(&location("jp-tok"), None, 10).unwrap().is_empty());
}
