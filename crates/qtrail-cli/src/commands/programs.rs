//! `qtrail programs create | list | get | update | delete`.

use std::io::{Read, Write};
use std::path::Path;

use qtrail_cadf::proto::json_from_struct;
use qtrail_proto::qtrail::runtime::v1::{
    CreateProgramRequest, DeleteProgramRequest, GetProgramRequest, ListProgramsRequest, Program, ProgramSpec,
    UpdateProgramRequest, program_service_client::ProgramServiceClient,
};
use serde_json::{Value, json};
use tonic::transport::Channel;

use crate::cli::{OutputFormat, PageArgs, ProgramCreateArgs, ProgramUpdateArgs, ProgramsCommand};
use crate::connect::{Settings, authorized};
use crate::error::CliError;
use crate::output::{Table, write_fields, write_json};
use crate::timearg::format_time;

/// What every `programs` subcommand works on: the runtime client, the API key and the output
/// format.
struct Session {
    client: ProgramServiceClient<Channel>,
    key: String,
    output: OutputFormat,
}

/// Runs one `programs` subcommand.
///
/// # Errors
/// Connection, file and RPC errors.
pub async fn run(command: ProgramsCommand, settings: &Settings, out: &mut dyn Write) -> Result<(), CliError> {
    let key = settings.api_key()?;
    let client = ProgramServiceClient::new(settings.runtime_channel().await?)
        .max_decoding_message_size(super::jobs::MAX_ANSWER_BYTES);
    let session = Session { client, key, output: settings.output };
    match command {
        ProgramsCommand::Create(args) => create(session, args, out).await,
        ProgramsCommand::Get { id } => get(session, id, out).await,
        ProgramsCommand::Update(args) => update(session, args, out).await,
        ProgramsCommand::Delete { id } => delete(session, id, out).await,
        ProgramsCommand::List(page) => list(session, page, out).await,
    }
}

/// Creates a program from `args.source_file`.
async fn create(session: Session, args: ProgramCreateArgs, out: &mut dyn Write) -> Result<(), CliError> {
    let Session { mut client, key, output } = session;
    let request = CreateProgramRequest {
        name: args.name,
        description: args.description,
        source: read_source(&args.source_file)?,
        max_execution_time: args.max_execution_time,
        spec: None,
        is_public: args.public,
    };
    let program = client.create_program(authorized(request, &key)?).await?.into_inner();
    print_program(output, &program, out)
}

/// Prints one program.
async fn get(session: Session, id: String, out: &mut dyn Write) -> Result<(), CliError> {
    let Session { mut client, key, output } = session;
    let program = client.get_program(authorized(GetProgramRequest { id }, &key)?).await?.into_inner();
    print_program(output, &program, out)
}

/// Changes what `args` names of a program.
async fn update(session: Session, args: ProgramUpdateArgs, out: &mut dyn Write) -> Result<(), CliError> {
    let Session { mut client, key, output } = session;
    let source = args.source_file.as_deref().map(read_source).transpose()?;
    let request = UpdateProgramRequest {
        id: args.id,
        name: args.name,
        description: args.description,
        source,
        max_execution_time: args.max_execution_time,
        spec: None,
        is_public: args.public,
    };
    let program = client.update_program(authorized(request, &key)?).await?.into_inner();
    print_program(output, &program, out)
}

/// Deletes a program.
async fn delete(session: Session, id: String, out: &mut dyn Write) -> Result<(), CliError> {
    let Session { mut client, key, output } = session;
    client.delete_program(authorized(DeleteProgramRequest { id: id.clone() }, &key)?).await?;
    match output {
        OutputFormat::Json => write_json(out, &json!({ "deleted": id }))?,
        OutputFormat::Table => writeln!(out, "deleted program {id}")?,
    }
    Ok(())
}

/// Prints a page of programs.
async fn list(session: Session, page: PageArgs, out: &mut dyn Write) -> Result<(), CliError> {
    let Session { mut client, key, output } = session;
    let request = ListProgramsRequest { limit: page.limit, offset: page.offset, ..Default::default() };
    let list = client.list_programs(authorized(request, &key)?).await?.into_inner();
    if output == OutputFormat::Json {
        let items: Vec<Value> = list.programs.iter().map(program_json).collect();
        write_json(out, &json!({ "programs": items, "count": list.count }))?;
        return Ok(());
    }
    let mut table = Table::new(&["ID", "NAME", "QUBITS", "PUBLIC", "UPDATED", "DESCRIPTION"]);
    for program in &list.programs {
        table.row(vec![
            program.id.clone(),
            program.name.clone(),
            program.num_qubits.to_string(),
            program.is_public.to_string(),
            format_time(program.update_time.as_ref()),
            program.description.clone(),
        ]);
    }
    table.write(out)?;
    writeln!(out, "{} of {} programs", list.programs.len(), list.count)?;
    Ok(())
}

/// Reads program source from a file, or standard input for `-`.
fn read_source(path: &Path) -> Result<String, CliError> {
    let file_error = |source| CliError::File { path: path.display().to_string(), source };
    if path == Path::new("-") {
        let mut source = String::new();
        std::io::stdin().read_to_string(&mut source).map_err(file_error)?;
        return Ok(source);
    }
    std::fs::read_to_string(path).map_err(file_error)
}

fn print_program(output: OutputFormat, program: &Program, out: &mut dyn Write) -> Result<(), CliError> {
    match output {
        OutputFormat::Json => write_json(out, &program_json(program))?,
        OutputFormat::Table => write_fields(
            out,
            &[
                ("id", program.id.clone()),
                ("name", program.name.clone()),
                ("description", program.description.clone()),
                ("qubits", program.num_qubits.to_string()),
                ("max execution time", format!("{}s", program.max_execution_time)),
                ("public", program.is_public.to_string()),
                ("created", format_time(program.create_time.as_ref())),
                ("updated", format_time(program.update_time.as_ref())),
            ],
        )?,
    }
    Ok(())
}

/// Returns a program as JSON (camelCase, as grpcurl would print it).
pub fn program_json(program: &Program) -> Value {
    json!({
        "id": program.id,
        "name": program.name,
        "description": program.description,
        "source": program.source,
        "maxExecutionTime": program.max_execution_time,
        "spec": program.spec.as_ref().map(spec_json),
        "isPublic": program.is_public,
        "createTime": format_time(program.create_time.as_ref()),
        "updateTime": format_time(program.update_time.as_ref()),
        "numQubits": program.num_qubits,
    })
}

fn spec_json(spec: &ProgramSpec) -> Value {
    let part = |value: &Option<prost_types::Struct>| {
        value.clone().and_then(|s| json_from_struct("spec", s).ok()).map(Value::Object).unwrap_or(Value::Null)
    };
    json!({
        "backendRequirements": part(&spec.backend_requirements),
        "parameters": part(&spec.parameters),
        "returnValues": part(&spec.return_values),
        "interimResults": part(&spec.interim_results),
    })
}
