//! Programs: one record per program, a unique index of names per account, and the indexes a
//! listing reads (each account's programs, and the public ones) so that listing decodes only
//! the programs on the page rather than every account's.

use redb::{ReadableTable, ReadableTableMetadata, TableDefinition, WriteTransaction};
use serde::{Deserialize, Serialize};

use super::{Reader, Result, decode, encode};

/// id → JSON [`ProgramRecord`].
const PROGRAMS: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("programs");
/// (account, name) → id: what makes a name unique within its account.
const NAMES: TableDefinition<'_, (&str, &str), &str> = TableDefinition::new("program_names");
/// (account, create millis, id): each account's programs.
const BY_ACCOUNT: TableDefinition<'_, (&str, i64, &str), ()> = TableDefinition::new("programs_by_account");
/// (create millis, id) → owning account: the public programs.
const PUBLIC: TableDefinition<'_, (i64, &str), &str> = TableDefinition::new("programs_public");

/// A stored program.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProgramRecord {
    /// Server-assigned id.
    pub id: String,
    /// Owning account.
    pub account: String,
    /// Name, unique within the account.
    pub name: String,
    /// Description.
    pub description: String,
    /// OpenQASM 2 source.
    pub source: String,
    /// Longest a job may run, in seconds.
    pub max_execution_time: u32,
    /// Spec as a JSON object with the keys of `ProgramSpec` that are set.
    pub spec: serde_json::Map<String, serde_json::Value>,
    /// Whether every account may read and run it.
    pub is_public: bool,
    /// Qubits the circuit uses.
    pub num_qubits: u32,
    /// Upload time, Unix milliseconds.
    pub create_millis: i64,
    /// Last change, Unix milliseconds.
    pub update_millis: i64,
}

pub(super) fn create_tables(txn: &WriteTransaction) -> Result<()> {
    let programs = txn.open_table(PROGRAMS)?;
    txn.open_table(NAMES)?;
    let mut by_account = txn.open_table(BY_ACCOUNT)?;
    let mut public = txn.open_table(PUBLIC)?;
    // A database from before the listing indexes: build them once.
    if by_account.is_empty()? && !programs.is_empty()? {
        for entry in programs.iter()? {
            let (_, value) = entry?;
            let record: ProgramRecord = decode("programs", value.value())?;
            by_account.insert((record.account.as_str(), record.create_millis, record.id.as_str()), ())?;
            if record.is_public {
                public.insert((record.create_millis, record.id.as_str()), record.account.as_str())?;
            }
        }
    }
    Ok(())
}

/// Returns the program with this id.
///
/// # Errors
/// Database failures and corrupt records.
pub fn get(txn: &impl Reader, id: &str) -> Result<Option<ProgramRecord>> {
    let table = txn.open(PROGRAMS)?;
    let Some(value) = table.get(id)? else {
        return Ok(None);
    };
    decode("programs", value.value()).map(Some)
}

/// Returns the id of the account's program with this name.
///
/// # Errors
/// Database failures.
pub fn id_by_name(txn: &impl Reader, account: &str, name: &str) -> Result<Option<String>> {
    let table = txn.open(NAMES)?;
    Ok(table.get((account, name))?.map(|id| id.value().to_owned()))
}

/// Writes a program, new or changed; `previous_name` is the name it had (to free it).
///
/// # Errors
/// Database failures.
pub fn put(txn: &WriteTransaction, record: &ProgramRecord, previous_name: Option<&str>) -> Result<()> {
    let mut names = txn.open_table(NAMES)?;
    if let Some(previous) = previous_name {
        names.remove((record.account.as_str(), previous))?;
    }
    names.insert((record.account.as_str(), record.name.as_str()), record.id.as_str())?;
    txn.open_table(PROGRAMS)?.insert(record.id.as_str(), encode(record).as_slice())?;
    // Account, id and creation time never change; visibility may.
    txn.open_table(BY_ACCOUNT)?.insert((record.account.as_str(), record.create_millis, record.id.as_str()), ())?;
    let mut public = txn.open_table(PUBLIC)?;
    if record.is_public {
        public.insert((record.create_millis, record.id.as_str()), record.account.as_str())?;
    } else {
        public.remove((record.create_millis, record.id.as_str()))?;
    }
    Ok(())
}

/// Deletes a program and frees its name.
///
/// # Errors
/// Database failures.
pub fn delete(txn: &WriteTransaction, record: &ProgramRecord) -> Result<()> {
    txn.open_table(NAMES)?.remove((record.account.as_str(), record.name.as_str()))?;
    txn.open_table(PROGRAMS)?.remove(record.id.as_str())?;
    txn.open_table(BY_ACCOUNT)?.remove((record.account.as_str(), record.create_millis, record.id.as_str()))?;
    txn.open_table(PUBLIC)?.remove((record.create_millis, record.id.as_str()))?;
    Ok(())
}

/// Returns the ids of the programs `account` can see (its own and public ones), newest first,
/// from the indexes alone: nothing is decoded.
///
/// # Errors
/// Database failures.
pub fn visible_ids(txn: &impl Reader, account: &str) -> Result<Vec<String>> {
    let mut visible: Vec<(i64, String)> = Vec::new();
    for entry in txn.open(BY_ACCOUNT)?.range((account, i64::MIN, "")..=(account, i64::MAX, "\u{10ffff}"))? {
        let (key, _) = entry?;
        let (_, millis, id) = key.value();
        visible.push((millis, id.to_owned()));
    }
    for entry in txn.open(PUBLIC)?.iter()? {
        let (key, owner) = entry?;
        if owner.value() != account {
            let (millis, id) = key.value();
            visible.push((millis, id.to_owned()));
        }
    }
    visible.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
    Ok(visible.into_iter().map(|(_, id)| id).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;

    fn program(id: &str, account: &str, millis: i64, is_public: bool) -> ProgramRecord {
        ProgramRecord {
            id: id.into(),
            account: account.into(),
            name: id.into(),
            description: String::new(),
            source: String::new(),
            max_execution_time: 60,
            spec: serde_json::Map::new(),
            is_public,
            num_qubits: 1,
            create_millis: millis,
            update_millis: millis,
        }
    }

    #[test]
    fn lists_own_and_public_programs_from_the_indexes() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let txn = store.begin().unwrap();
        put(&txn, &program("a-old", "acc-a", 1, false), None).unwrap();
        put(&txn, &program("a-new", "acc-a", 5, true), None).unwrap();
        put(&txn, &program("b-private", "acc-b", 3, false), None).unwrap();
        let shared = program("b-public", "acc-b", 4, true);
        put(&txn, &shared, None).unwrap();
        txn.commit().unwrap();

        let read = store.begin_read().unwrap();
        assert_eq!(visible_ids(&read, "acc-a").unwrap(), ["a-new", "b-public", "a-old"]);
        assert_eq!(visible_ids(&read, "acc-b").unwrap(), ["a-new", "b-public", "b-private"]);
        assert_eq!(visible_ids(&read, "acc-c").unwrap(), ["a-new", "b-public"]);
        drop(read);

        // Made private, then deleted: gone from the others' lists.
        let txn = store.begin().unwrap();
        let private = ProgramRecord { is_public: false, ..shared.clone() };
        put(&txn, &private, Some(&shared.name)).unwrap();
        txn.commit().unwrap();
        assert_eq!(visible_ids(&store.begin_read().unwrap(), "acc-c").unwrap(), ["a-new"]);
        let txn = store.begin().unwrap();
        delete(&txn, &private).unwrap();
        put(&txn, &program("a-new", "acc-a", 5, false), Some("a-new")).unwrap();
        txn.commit().unwrap();
        assert!(visible_ids(&store.begin_read().unwrap(), "acc-c").unwrap().is_empty());
        assert_eq!(visible_ids(&store.begin_read().unwrap(), "acc-b").unwrap(), ["b-private"]);
    }
}
