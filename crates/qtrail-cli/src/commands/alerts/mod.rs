//! `qtrail alerts create | list | get | update | delete | test | watch` over the collector's
//! `AlertService`, and `receive` ([`receive`]), a verifying webhook receiver.

mod receive;

use std::io::Write;

use qtrail_proto::qtrail::audit::v1::{
    AbsenceTrigger, AlertFiring, AlertRule, AlertTrigger, CreateAlertRuleRequest, DeleteAlertRuleRequest,
    DeliveryState, EachTrigger, FiringKind, GetAlertRuleRequest, GroupBy, ListAlertRulesRequest, TestAlertRuleRequest,
    ThresholdTrigger, UpdateAlertRuleRequest, WatchAlertsRequest, Webhook, alert_service_client::AlertServiceClient,
    alert_trigger::Kind,
};
use serde_json::{Value, json};

use crate::cli::{AlertRuleArgs, AlertWatchArgs, AlertsCommand, OutputFormat};
use crate::commands::events::{build_filter, stored_event_json};
use crate::connect::{Settings, authorized};
use crate::error::CliError;
use crate::output::{Table, write_fields, write_json, write_json_line};
use crate::timearg::format_time;

/// Runs one `alerts` subcommand.
///
/// # Errors
/// Connection, argument and RPC errors.
pub async fn run(command: AlertsCommand, settings: &Settings, out: &mut dyn Write) -> Result<(), CliError> {
    if let AlertsCommand::Receive(args) = command {
        return receive::receive(args, out).await;
    }
    let location = settings.configured_location().ok_or_else(|| {
        CliError::Usage("no location: pass --location or set QTRAIL_LOCATION (or run `qtrail up`)".into())
    })?;
    let mut client = AlertServiceClient::new(settings.collector_channel().await?);
    let output = settings.output;
    match command {
        AlertsCommand::Create(args) => {
            let rule = rule(&location, &args)?;
            let request = authorized(CreateAlertRuleRequest { rule: Some(rule) }, &settings.admin_token()?)?;
            print_rule(output, &client.create_alert_rule(request).await?.into_inner(), out)
        }
        AlertsCommand::Update(args) => {
            let rule = rule(&location, &args)?;
            let request = authorized(UpdateAlertRuleRequest { rule: Some(rule) }, &settings.admin_token()?)?;
            print_rule(output, &client.update_alert_rule(request).await?.into_inner(), out)
        }
        AlertsCommand::Get { name } => {
            let request = authorized(GetAlertRuleRequest { location, name }, &settings.auditor_token()?)?;
            print_rule(output, &client.get_alert_rule(request).await?.into_inner(), out)
        }
        AlertsCommand::Delete { name } => {
            let request =
                authorized(DeleteAlertRuleRequest { location, name: name.clone() }, &settings.admin_token()?)?;
            client.delete_alert_rule(request).await?;
            match output {
                OutputFormat::Json => write_json(out, &json!({ "deleted": name }))?,
                OutputFormat::Table => writeln!(out, "deleted rule {name}")?,
            }
            Ok(())
        }
        AlertsCommand::List => {
            let request = authorized(ListAlertRulesRequest { location }, &settings.auditor_token()?)?;
            let rules = client.list_alert_rules(request).await?.into_inner().rules;
            if output == OutputFormat::Json {
                write_json(out, &json!({ "rules": rules.iter().map(rule_json).collect::<Vec<_>>() }))?;
                return Ok(());
            }
            let mut table = Table::new(&["NAME", "TRIGGER", "FILTER", "COOLDOWN", "WEBHOOK", "CURSOR"]);
            for rule in &rules {
                let json = rule_json(rule);
                table.row(vec![
                    rule.name.clone(),
                    trigger_text(rule.trigger.as_ref()),
                    json["filter"].to_string(),
                    json["cooldown"].as_str().unwrap_or_default().to_owned(),
                    rule.webhook.as_ref().map(|webhook| webhook.url.clone()).unwrap_or_default(),
                    rule.cursor.to_string(),
                ]);
            }
            table.write(out)?;
            Ok(())
        }
        AlertsCommand::Test(args) => {
            let rule = rule(&location, &args.rule)?;
            let request = TestAlertRuleRequest { rule: Some(rule), events: args.events };
            let tested = client.test_alert_rule(authorized(request, &settings.auditor_token()?)?).await?.into_inner();
            let samples: Vec<Value> = tested.samples.iter().map(stored_event_json).collect();
            match output {
                OutputFormat::Json => write_json(
                    out,
                    &json!({ "scanned": tested.scanned, "matched": tested.matched, "firings": tested.firings, "samples": samples }),
                )?,
                OutputFormat::Table => write_fields(
                    out,
                    &[
                        ("events scanned", tested.scanned.to_string()),
                        ("matched", tested.matched.to_string()),
                        ("would notify", tested.firings.to_string()),
                    ],
                )?,
            }
            Ok(())
        }
        AlertsCommand::Watch(args) => {
            watch(&mut client, &location, &settings.auditor_token()?, args, output, out).await
        }
        AlertsCommand::Receive(_) => Ok(()),
    }
}

/// Returns the wire rule the flags describe.
fn rule(location: &str, args: &AlertRuleArgs) -> Result<AlertRule, CliError> {
    let kind = match (args.each, args.threshold, args.absence) {
        (true, None, None) => Kind::Each(EachTrigger {}),
        (false, Some(count), None) => Kind::Threshold(ThresholdTrigger {
            count,
            window: args.window.map(wire_duration),
            group_by: match args.group_by.as_deref() {
                Some("initiator") => GroupBy::Initiator,
                Some("target") => GroupBy::Target,
                _ => GroupBy::Unspecified,
            } as i32,
        }),
        (false, None, Some(duration)) => Kind::Absence(AbsenceTrigger { duration: Some(wire_duration(duration)) }),
        _ => {
            return Err(CliError::Usage(
                "give one trigger: --each, --threshold N --window DUR or --absence DUR".into(),
            ));
        }
    };
    Ok(AlertRule {
        location: location.to_owned(),
        name: args.name.clone(),
        filter: Some(build_filter(&args.filter)?),
        trigger: Some(AlertTrigger { kind: Some(kind) }),
        cooldown: args.cooldown.map(wire_duration),
        webhook: args.webhook.as_ref().map(|url| Webhook {
            url: url.clone(),
            secret: args.secret.as_ref().map(|secret| secret.expose().to_owned()).unwrap_or_default(),
            has_secret: false,
        }),
        ..Default::default()
    })
}

fn wire_duration(duration: std::time::Duration) -> prost_types::Duration {
    prost_types::Duration::try_from(duration).unwrap_or(prost_types::Duration { seconds: i64::MAX, nanos: 0 })
}

fn seconds(duration: Option<&prost_types::Duration>) -> String {
    duration
        .and_then(|d| std::time::Duration::try_from(*d).ok())
        .map(|d| humantime::format_duration(d).to_string())
        .unwrap_or_default()
}

fn trigger_text(trigger: Option<&AlertTrigger>) -> String {
    match trigger.and_then(|trigger| trigger.kind.as_ref()) {
        Some(Kind::Each(_)) => "each".into(),
        Some(Kind::Threshold(threshold)) => {
            let group = match GroupBy::try_from(threshold.group_by) {
                Ok(GroupBy::Initiator) => " per initiator",
                Ok(GroupBy::Target) => " per target",
                _ => "",
            };
            format!("{} in {}{group}", threshold.count, seconds(threshold.window.as_ref()))
        }
        Some(Kind::Absence(absence)) => format!("absent {}", seconds(absence.duration.as_ref())),
        None => String::new(),
    }
}

fn rule_json(rule: &AlertRule) -> Value {
    let filter = rule.filter.clone().unwrap_or_default();
    let mut filter_json = serde_json::Map::new();
    for (key, value) in [("action", &filter.action), ("initiator", &filter.initiator_id), ("target", &filter.target_id)]
    {
        if !value.is_empty() {
            filter_json.insert(key.into(), json!(value));
        }
    }
    if filter.outcome != 0 {
        filter_json.insert(
            "outcome".into(),
            json!(enum_word(filter.outcome, "OUTCOME_", |v| {
                qtrail_proto::qtrail::audit::v1::Outcome::try_from(v).map(|o| o.as_str_name())
            })),
        );
    }
    if filter.severity != 0 {
        filter_json.insert(
            "severity".into(),
            json!(enum_word(filter.severity, "SEVERITY_", |v| {
                qtrail_proto::qtrail::audit::v1::Severity::try_from(v).map(|s| s.as_str_name())
            })),
        );
    }
    json!({
        "location": rule.location,
        "name": rule.name,
        "filter": Value::Object(filter_json),
        "trigger": trigger_text(rule.trigger.as_ref()),
        "cooldown": seconds(rule.cooldown.as_ref()),
        "webhook": rule.webhook.as_ref().map(|webhook| json!({ "url": webhook.url, "hasSecret": webhook.has_secret })),
        "createTime": format_time(rule.create_time.as_ref()),
        "updateTime": format_time(rule.update_time.as_ref()),
        "cursor": rule.cursor,
    })
}

fn enum_word<E>(value: i32, prefix: &str, name: impl Fn(i32) -> Result<&'static str, E>) -> String {
    name(value).map(|name| name.trim_start_matches(prefix).to_lowercase()).unwrap_or_default()
}

fn print_rule(output: OutputFormat, rule: &AlertRule, out: &mut dyn Write) -> Result<(), CliError> {
    let json = rule_json(rule);
    match output {
        OutputFormat::Json => write_json(out, &json)?,
        OutputFormat::Table => write_fields(
            out,
            &[
                ("location", rule.location.clone()),
                ("name", rule.name.clone()),
                ("trigger", trigger_text(rule.trigger.as_ref())),
                ("filter", json["filter"].to_string()),
                ("cooldown", json["cooldown"].as_str().unwrap_or_default().to_owned()),
                ("webhook", rule.webhook.as_ref().map(|webhook| webhook.url.clone()).unwrap_or_default()),
                ("cursor", rule.cursor.to_string()),
                ("created", format_time(rule.create_time.as_ref())),
            ],
        )?,
    }
    Ok(())
}

/// Returns a firing as JSON, its events in AT-JSON.
pub fn firing_json(firing: &AlertFiring) -> Value {
    json!({
        "number": firing.number,
        "location": firing.location,
        "rule": firing.rule,
        "kind": enum_word(firing.kind, "FIRING_KIND_", |v| FiringKind::try_from(v).map(|k| k.as_str_name())),
        "time": format_time(firing.time.as_ref()),
        "count": firing.count,
        "cursor": firing.cursor,
        "webhookId": firing.webhook_id,
        "delivery": enum_word(firing.delivery, "DELIVERY_STATE_", |v| DeliveryState::try_from(v).map(|s| s.as_str_name())),
        "deliveryUpdate": firing.delivery_update,
        "events": firing.events.iter().map(stored_event_json).collect::<Vec<_>>(),
    })
}

async fn watch(
    client: &mut AlertServiceClient<tonic::transport::Channel>,
    location: &str,
    token: &str,
    args: AlertWatchArgs,
    output: OutputFormat,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    let request = WatchAlertsRequest {
        location: location.to_owned(),
        after: args.after.unwrap_or(0),
        from_start: args.from_start,
        delivery_updates: args.deliveries,
    };
    let mut stream = client.watch_alerts(authorized(request, token)?).await?.into_inner();
    let mut seen = 0;
    while args.count.is_none_or(|count| seen < count) {
        let Some(firing) = stream.message().await? else {
            break;
        };
        if !firing.delivery_update {
            seen += 1;
        }
        let json = firing_json(&firing);
        match output {
            OutputFormat::Json => write_json_line(out, &json)?,
            OutputFormat::Table => writeln!(
                out,
                "#{} {}{} {} {} count={} delivery={}",
                firing.number,
                if firing.delivery_update { "update " } else { "" },
                json["time"].as_str().unwrap_or_default(),
                firing.rule,
                json["kind"].as_str().unwrap_or_default(),
                firing.count,
                json["delivery"].as_str().unwrap_or_default()
            )?,
        }
        out.flush()?;
    }
    Ok(())
}
