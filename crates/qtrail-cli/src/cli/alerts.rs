//! The grammar of `qtrail alerts …` (pinned in DESIGN.md, "Growing the trail" → Alerts).

use std::path::PathBuf;
use std::time::Duration;

use clap::{ArgGroup, Args, Subcommand};
use qtrail_runtime::config::Secret;

use super::EventFilterArgs;

/// `qtrail alerts …`
#[derive(Debug, Subcommand)]
pub enum AlertsCommand {
    /// Create a rule (needs an admin token).
    Create(AlertRuleArgs),
    /// List the location's rules.
    List,
    /// Show a rule.
    Get {
        /// The rule's name.
        name: String,
    },
    /// Replace a rule's filter, trigger, cool-down and webhook (needs an admin token); a webhook
    /// given without --secret keeps the rule's secret.
    Update(AlertRuleArgs),
    /// Delete a rule (needs an admin token).
    Delete {
        /// The rule's name.
        name: String,
    },
    /// Run a rule (not stored) over the newest stored events: what matches, what would fire.
    Test(AlertTestArgs),
    /// Print firings as they happen, one per line.
    Watch(AlertWatchArgs),
    /// Receive webhook deliveries: verify each signature and print each delivery as one JSON line
    /// (answers 401 to a bad signature).
    Receive(AlertReceiveArgs),
}

/// A rule: its name, the filter flags of `events query` and a trigger.
#[derive(Debug, Args)]
#[command(group(ArgGroup::new("trigger").required(true).args(["each", "threshold", "absence"])))]
pub struct AlertRuleArgs {
    /// The rule's name: lowercase letters, digits and `-`.
    #[arg(long)]
    pub name: String,
    /// Which events count (times and correlation id are refused for rules).
    #[command(flatten)]
    pub filter: EventFilterArgs,
    /// Fire on every matching event.
    #[arg(long)]
    pub each: bool,
    /// Fire when N matching events are stored within --window.
    #[arg(long, value_name = "N", requires = "window")]
    pub threshold: Option<u32>,
    /// The threshold's sliding window, e.g. 1m.
    #[arg(long, value_name = "DUR", value_parser = parse_duration, requires = "threshold")]
    pub window: Option<Duration>,
    /// Count threshold matches per initiator or per target.
    #[arg(long, value_parser = ["initiator", "target"], requires = "threshold")]
    pub group_by: Option<String>,
    /// Fire when no matching event is stored for DUR, e.g. 10m; resolves when one is.
    #[arg(long, value_name = "DUR", value_parser = parse_duration)]
    pub absence: Option<Duration>,
    /// Least time between two notifications; matches in between fold into the next count.
    #[arg(long, value_name = "DUR", value_parser = parse_duration)]
    pub cooldown: Option<Duration>,
    /// An http or https URL that receives each notification as a signed CloudEvent.
    #[arg(long, value_name = "URL")]
    pub webhook: Option<String>,
    /// The webhook's signing secret, `whsec_` and base64 (Standard Webhooks).
    #[arg(long, value_name = "SECRET", env = "QTRAIL_WEBHOOK_SECRET", hide_env_values = true, requires = "webhook")]
    pub secret: Option<Secret>,
}

/// Flags of `qtrail alerts test`.
#[derive(Debug, Args)]
pub struct AlertTestArgs {
    /// The rule to run.
    #[command(flatten)]
    pub rule: AlertRuleArgs,
    /// How many of the newest events to run it over (1 to 10000).
    #[arg(long, value_name = "N", default_value_t = 1000)]
    pub events: u32,
}

/// Flags of `qtrail alerts watch`.
#[derive(Debug, Args)]
pub struct AlertWatchArgs {
    /// Start after this firing number (resume where an earlier watch stopped).
    #[arg(long, value_name = "N", conflicts_with = "from_start")]
    pub after: Option<u64>,
    /// Start with the first stored firing.
    #[arg(long)]
    pub from_start: bool,
    /// Stop after this many firings.
    #[arg(long, value_name = "N")]
    pub count: Option<u64>,
    /// Also print a firing again each time its webhook delivery changes state (`delivered`,
    /// `failed`); these lines do not count toward --count.
    #[arg(long)]
    pub deliveries: bool,
}

/// Flags of `qtrail alerts receive`.
#[derive(Debug, Args)]
pub struct AlertReceiveArgs {
    /// Address to listen on, e.g. 127.0.0.1:0 for an ephemeral port.
    #[arg(long, value_name = "ADDR")]
    pub listen: std::net::SocketAddr,
    /// The secret the deliveries are signed with.
    #[arg(long, value_name = "SECRET", env = "QTRAIL_WEBHOOK_SECRET", hide_env_values = true)]
    pub secret: Secret,
    /// File that receives the bound address once listening.
    #[arg(long, value_name = "FILE")]
    pub addr_file: Option<PathBuf>,
    /// Stop after this many deliveries.
    #[arg(long, value_name = "N")]
    pub count: Option<u64>,
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text).map_err(|err| format!("invalid duration `{text}`: {err}"))
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use crate::cli::{Cli, Command};

    #[test]
    fn the_webhook_secret_never_shows_in_debug() {
        let cli = Cli::try_parse_from([
            "qtrail",
            "alerts",
            "receive",
            "--listen",
            "127.0.0.1:0",
            "--secret",
            "whsec_hunter2",
        ])
        .unwrap();
        let Command::Alerts(command) = &cli.command else { panic!("not an alerts command") };
        let shown = format!("{command:?}");
        assert!(shown.contains("<redacted>") && !shown.contains("hunter2"), "{shown}");
    }
}
