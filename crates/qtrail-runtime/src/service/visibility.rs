//! Lookups with visibility rules: which programs and jobs a caller may see and change, and how
//! one it may not is reported (as missing, unless it is public).

use redb::WriteTransaction;

use super::validation::check_id;
use crate::audit::AuditRecord;
use crate::auth::Principal;
use crate::error::{Error, Result};
use crate::store::Reader;
use crate::store::jobs::{self, JobRecord};
use crate::store::programs::{self, ProgramRecord};

/// Returns a program the caller may read (its own or a public one); targets the event at it,
/// in its owner's account. A hidden program stays in the caller's account, as a missing one.
pub(super) fn visible_program(
    txn: &impl Reader,
    principal: &Principal,
    id: &str,
    record: &mut AuditRecord,
) -> Result<ProgramRecord> {
    check_id("id", id)?;
    record.target(id, "");
    match programs::get(txn, id)? {
        Some(program) if program.account == principal.account || program.is_public => {
            record.target(id, &program.name);
            record.target_owner(&program.account);
            Ok(program)
        }
        // Another account's private program is reported exactly like a missing one.
        _ => Err(Error::not_found("program", id)),
    }
}

/// Returns a program the caller may change (its own). Another account's public program is
/// visible to everyone, so refusing it says nothing new: PERMISSION_DENIED. A private one is
/// NOT_FOUND, as if it did not exist.
pub(super) fn owned_program(
    txn: &WriteTransaction,
    principal: &Principal,
    id: &str,
    record: &mut AuditRecord,
) -> Result<ProgramRecord> {
    let program = visible_program(txn, principal, id, record)?;
    if program.account != principal.account {
        return Err(Error::PermissionDenied(format!(
            "program `{}` is public but belongs to another account, only its owner can change it",
            program.id
        )));
    }
    Ok(program)
}

/// Returns the program a new job runs (checked for visibility, named in errors as `program_id`).
pub(super) fn visible_program_for_job(
    txn: &WriteTransaction,
    principal: &Principal,
    id: &str,
) -> Result<ProgramRecord> {
    check_id("program_id", id)?;
    match programs::get(txn, id)? {
        Some(program) if program.account == principal.account || program.is_public => Ok(program),
        _ => Err(Error::not_found("program", id)),
    }
}

/// Returns one of the caller's jobs; another account's job is NOT_FOUND.
pub(super) fn owned_job(
    txn: &impl Reader,
    principal: &Principal,
    id: &str,
    record: &mut AuditRecord,
) -> Result<JobRecord> {
    check_id("id", id)?;
    record.target(id, "");
    match jobs::get(txn, id)? {
        Some(job) if job.account == principal.account => {
            record.target(id, id);
            Ok(job)
        }
        _ => Err(Error::not_found("job", id)),
    }
}
