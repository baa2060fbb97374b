//! Programs: one record per program and a unique index of names per account.

use redb::{ReadableTable, TableDefinition, WriteTransaction};
use serde::{Deserialize, Serialize};

use super::{Reader, Result, decode, encode};

/// id → JSON [`ProgramRecord`].
const PROGRAMS: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("programs");
/// (account, name) → id: what makes a name unique within its account.
const NAMES: TableDefinition<'_, (&str, &str), &str> = TableDefinition::new("program_names");

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
    txn.open_table(PROGRAMS)?;
    txn.open_table(NAMES)?;
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
    Ok(())
}

/// Deletes a program and frees its name.
///
/// # Errors
/// Database failures.
pub fn delete(txn: &WriteTransaction, record: &ProgramRecord) -> Result<()> {
    txn.open_table(NAMES)?.remove((record.account.as_str(), record.name.as_str()))?;
    txn.open_table(PROGRAMS)?.remove(record.id.as_str())?;
    Ok(())
}

/// Returns the programs `account` can see (its own and public ones), newest first.
///
/// # Errors
/// Database failures and corrupt records.
pub fn visible_to(txn: &impl Reader, account: &str) -> Result<Vec<ProgramRecord>> {
    let table = txn.open(PROGRAMS)?;
    let mut visible = Vec::new();
    for entry in table.iter()? {
        let (_, value) = entry?;
        let record: ProgramRecord = decode("programs", value.value())?;
        if record.account == account || record.is_public {
            visible.push(record);
        }
    }
    visible.sort_by(|a, b| b.create_millis.cmp(&a.create_millis).then_with(|| a.id.cmp(&b.id)));
    Ok(visible)
}
