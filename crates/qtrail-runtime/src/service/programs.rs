//! The `ProgramService` calls: uploading, listing, reading, changing and deleting programs.

use qtrail_cadf::{Action, JsonObject};
use qtrail_proto::qtrail::runtime::v1 as pb;
use serde_json::{Value, json};

use super::bounds::within_page_bytes;
use super::ids::program_id;
use super::messages::{program_message, source_summary, spec_summary};
use super::validation::{check_description, check_max_execution_time, check_name, check_page, spec_json};
use super::visibility::{owned_program, visible_program};
use super::{Answer, RuntimeService};
use crate::audit::AuditRecord;
use crate::auth::CallContext;
use crate::error::{Error, quote};
use crate::executor::circuit;
use crate::store::now_millis;
use crate::store::programs::{self, ProgramRecord};

impl RuntimeService {
    /// Uploads a program.
    ///
    /// # Errors
    /// INVALID_ARGUMENT for a bad name, description, source, time or spec; ALREADY_EXISTS for a
    /// name the account has; UNAUTHENTICATED; UNAVAILABLE when the event cannot be recorded.
    pub fn create_program(&self, ctx: &CallContext, request: pb::CreateProgramRequest) -> Answer<pb::Program> {
        let mut record = AuditRecord::new(Action::ProgramCreate);
        record.success_status = 201;
        record.request("name", request.name.as_str());
        record.request("description", request.description.as_str());
        record.request("maxExecutionTime", request.max_execution_time);
        record.request("isPublic", request.is_public);
        record.request("source", source_summary(&request.source));
        let parse = || circuit::parse(&request.source);
        self.audited_prepared(ctx, record, parse, |txn, principal, record, parsed| {
            check_name(&request.name)?;
            check_description(&request.description)?;
            let max_execution_time = check_max_execution_time(request.max_execution_time)?;
            let circuit = parsed.map_err(|err| Error::invalid("source", err.to_string()))?;
            let spec = spec_json(request.spec)?;
            if programs::id_by_name(txn, &principal.account, &request.name)?.is_some() {
                return Err(Error::NameTaken(quote(&request.name)));
            }
            let now = now_millis();
            let program = ProgramRecord {
                id: program_id(&request.name),
                account: principal.account.clone(),
                name: request.name,
                description: request.description,
                source: request.source.clone(),
                max_execution_time,
                spec,
                is_public: request.is_public,
                num_qubits: circuit.num_qubits as u32,
                create_millis: now,
                update_millis: now,
            };
            programs::put(txn, &program, None)?;
            record.target(&program.id, &program.name);
            record.response("programId", program.id.as_str());
            record.response("numQubits", program.num_qubits);
            Ok(program_message(&program, true))
        })
    }

    /// Lists the programs the caller can see, newest first.
    ///
    /// # Errors
    /// INVALID_ARGUMENT for bad paging; UNAUTHENTICATED; UNAVAILABLE.
    pub fn list_programs(
        &self,
        ctx: &CallContext,
        request: pb::ListProgramsRequest,
    ) -> Answer<pb::ListProgramsResponse> {
        let mut record = AuditRecord::new(Action::ProgramRead);
        record.request("limit", request.limit);
        record.request("offset", request.offset);
        record.request("includeSource", request.include_source);
        self.audited_read(ctx, record, |txn, principal, record| {
            let (limit, offset) = check_page(request.limit, request.offset)?;
            // Ids from the indexes; only the page's programs are decoded, one at a time, and
            // no further than the page's byte bound.
            let visible = programs::visible_ids(txn, &principal.account)?;
            let count = visible.len() as u32;
            let page = within_page_bytes(visible.iter().skip(offset).take(limit).filter_map(|id| {
                programs::get(txn, id)
                    .map(|found| {
                        found.map(|program| {
                            program_message(&program, request.include_source && program.account == principal.account)
                        })
                    })
                    .transpose()
            }))?;
            record.response("count", count);
            record.response("returned", page.len() as u64);
            Ok(pb::ListProgramsResponse { programs: page, count })
        })
    }

    /// Returns one program (its source only to the owning account).
    ///
    /// # Errors
    /// INVALID_ARGUMENT for a bad id; NOT_FOUND for an unknown id or another account's private
    /// program; UNAUTHENTICATED; UNAVAILABLE.
    pub fn get_program(&self, ctx: &CallContext, request: pb::GetProgramRequest) -> Answer<pb::Program> {
        let mut record = AuditRecord::new(Action::ProgramRead);
        record.requested("programId", &request.id);
        self.audited_read(ctx, record, |txn, principal, record| {
            let program = visible_program(txn, principal, &request.id, record)?;
            record.response("name", program.name.as_str());
            Ok(program_message(&program, program.account == principal.account))
        })
    }

    /// Changes a program's metadata, source or visibility.
    ///
    /// # Errors
    /// INVALID_ARGUMENT for no or bad fields; NOT_FOUND; PERMISSION_DENIED for another account's
    /// public program; ALREADY_EXISTS for a taken name; UNAUTHENTICATED; UNAVAILABLE.
    pub fn update_program(&self, ctx: &CallContext, request: pb::UpdateProgramRequest) -> Answer<pb::Program> {
        let mut record = AuditRecord::new(Action::ProgramUpdate);
        record.requested("programId", &request.id);
        let parse = || request.source.as_deref().map(circuit::parse);
        self.audited_prepared(ctx, record, parse, |txn, principal, record, parsed| {
            let old = owned_program(txn, principal, &request.id, record)?;
            let mut new = old.clone();
            let mut changed: Vec<&str> = Vec::new();
            let mut initial = JsonObject::new();
            let mut updated = JsonObject::new();
            if let Some(name) = request.name {
                check_name(&name)?;
                if name != old.name && programs::id_by_name(txn, &principal.account, &name)?.is_some() {
                    return Err(Error::NameTaken(quote(&name)));
                }
                new.name = name;
                changed.push("name");
                initial.insert("name".into(), json!(old.name));
                updated.insert("name".into(), json!(new.name));
            }
            if let Some(description) = request.description {
                check_description(&description)?;
                new.description = description;
                changed.push("description");
                initial.insert("description".into(), json!(old.description));
                updated.insert("description".into(), json!(new.description));
            }
            if let (Some(source), Some(parsed)) = (&request.source, parsed) {
                let circuit = parsed.map_err(|err| Error::invalid("source", err.to_string()))?;
                new.num_qubits = circuit.num_qubits as u32;
                new.source = source.clone();
                changed.push("source");
                initial.insert("source".into(), source_summary(&old.source));
                updated.insert("source".into(), source_summary(&new.source));
            }
            if let Some(seconds) = request.max_execution_time {
                new.max_execution_time = check_max_execution_time(seconds)?;
                changed.push("maxExecutionTime");
                initial.insert("maxExecutionTime".into(), json!(old.max_execution_time));
                updated.insert("maxExecutionTime".into(), json!(new.max_execution_time));
            }
            if let Some(spec) = request.spec {
                new.spec = spec_json(Some(spec))?;
                changed.push("spec");
                initial.insert("spec".into(), spec_summary(&old.spec));
                updated.insert("spec".into(), spec_summary(&new.spec));
            }
            if let Some(is_public) = request.is_public {
                new.is_public = is_public;
                changed.push("isPublic");
                initial.insert("isPublic".into(), json!(old.is_public));
                updated.insert("isPublic".into(), json!(new.is_public));
            }
            if changed.is_empty() {
                return Err(Error::invalid(
                    "update",
                    "set at least one of name, description, source, max_execution_time, spec, is_public",
                ));
            }
            new.update_millis = now_millis();
            programs::put(txn, &new, Some(&old.name))?;
            record.target(&new.id, &new.name);
            record.request("updateType", changed.join(","));
            record.request("initialValue", Value::Object(initial));
            record.request("newValue", Value::Object(updated));
            Ok(program_message(&new, true))
        })
    }

    /// Deletes a program; its jobs are kept.
    ///
    /// # Errors
    /// INVALID_ARGUMENT; NOT_FOUND; PERMISSION_DENIED for another account's public program;
    /// UNAUTHENTICATED; UNAVAILABLE.
    pub fn delete_program(
        &self,
        ctx: &CallContext,
        request: pb::DeleteProgramRequest,
    ) -> Answer<pb::DeleteProgramResponse> {
        let mut record = AuditRecord::new(Action::ProgramDelete);
        record.requested("programId", &request.id);
        self.audited(ctx, record, |txn, principal, record| {
            let program = owned_program(txn, principal, &request.id, record)?;
            programs::delete(txn, &program)?;
            Ok(pb::DeleteProgramResponse {})
        })
    }
}
