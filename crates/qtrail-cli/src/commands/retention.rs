//! `qtrail collectors retention set | get` and `qtrail collectors hold add | remove | list`:
//! the CollectorAdmin RPCs that decide what may expire.

use std::io::Write;

use qtrail_proto::qtrail::audit::v1::{
    GetRetentionRequest, LegalHold, ListLegalHoldsRequest, RetentionPolicy, SetLegalHoldRequest, SetRetentionRequest,
    collector_admin_client::CollectorAdminClient,
};
use serde_json::{Value, json};
use tonic::transport::Channel;

use crate::cli::{HoldCommand, HoldTarget, OutputFormat, RetentionCommand};
use crate::connect::{Settings, authorized};
use crate::error::CliError;
use crate::output::{Table, write_fields, write_json};
use crate::timearg::format_time;

/// Runs one `collectors retention` subcommand.
///
/// # Errors
/// Connection, authorisation and RPC errors.
pub async fn retention(
    command: RetentionCommand,
    client: &mut CollectorAdminClient<Channel>,
    token: &str,
    settings: &Settings,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    let policy = match command {
        RetentionCommand::Set { location, days } => {
            client.set_retention(authorized(SetRetentionRequest { location, days }, token)?).await?.into_inner()
        }
        RetentionCommand::Get { location } => {
            client.get_retention(authorized(GetRetentionRequest { location }, token)?).await?.into_inner()
        }
    };
    print_policy(settings.output, &policy, out)
}

fn print_policy(output: OutputFormat, policy: &RetentionPolicy, out: &mut dyn Write) -> Result<(), CliError> {
    match output {
        OutputFormat::Json => write_json(out, &json!({ "location": policy.location, "days": policy.days }))?,
        OutputFormat::Table => {
            let days = if policy.days == 0 { "off (kept forever)".to_owned() } else { policy.days.to_string() };
            write_fields(out, &[("location", policy.location.clone()), ("retention days", days)])?;
        }
    }
    Ok(())
}

/// Runs one `collectors hold` subcommand.
///
/// # Errors
/// Connection, authorisation and RPC errors.
pub async fn hold(
    command: HoldCommand,
    client: &mut CollectorAdminClient<Channel>,
    token: &str,
    settings: &Settings,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    let (target, on, reason) = match command {
        HoldCommand::Add { target, reason } => (target, true, reason),
        HoldCommand::Remove { target } => (target, false, String::new()),
        HoldCommand::List => {
            let list = client.list_legal_holds(authorized(ListLegalHoldsRequest {}, token)?).await?.into_inner();
            return print_holds(settings.output, &list.holds, out);
        }
    };
    let HoldTarget { location, account } = target;
    let request = SetLegalHoldRequest {
        location: location.unwrap_or_default(),
        account: account.unwrap_or_default(),
        on,
        reason,
    };
    let hold = client.set_legal_hold(authorized(request, token)?).await?.into_inner();
    match settings.output {
        OutputFormat::Json => write_json(out, &json!({ "hold": hold_json(&hold), "on": on }))?,
        OutputFormat::Table => {
            let verb = if on { "placed" } else { "lifted" };
            writeln!(out, "legal hold {verb} on {}", held_what(&hold))?;
        }
    }
    Ok(())
}

fn print_holds(output: OutputFormat, holds: &[LegalHold], out: &mut dyn Write) -> Result<(), CliError> {
    if output == OutputFormat::Json {
        write_json(out, &json!({ "holds": holds.iter().map(hold_json).collect::<Vec<Value>>() }))?;
        return Ok(());
    }
    let mut table = Table::new(&["HOLD", "REASON", "PLACED", "BY"]);
    for hold in holds {
        table.row(vec![
            held_what(hold),
            hold.reason.clone(),
            format_time(hold.create_time.as_ref()),
            hold.created_by.clone(),
        ]);
    }
    table.write(out)?;
    Ok(())
}

fn held_what(hold: &LegalHold) -> String {
    if hold.account.is_empty() { format!("location {}", hold.location) } else { format!("account {}", hold.account) }
}

fn hold_json(hold: &LegalHold) -> Value {
    json!({
        "location": hold.location,
        "account": hold.account,
        "reason": hold.reason,
        "createTime": format_time(hold.create_time.as_ref()),
        "createdBy": hold.created_by,
    })
}
