//! Alert rules: the checked form of a wire `AlertRule`, with every cap a rule is held to.
//!
//! A rule is stored as the wire message it was created from (secret included, since the
//! deliveries need it), and checked again each time it is loaded, so that the evaluator only
//! ever runs checked rules. Secrets never leave through [`public`], error messages or logs.

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use qtrail_cadf::Location;
use qtrail_proto::qtrail::audit::v1 as proto;

use crate::error::{Error, Result};
use crate::filter::Filter;
use crate::registry::parse_location;

/// Longest rule name.
pub const MAX_NAME_CHARS: usize = 64;
/// Most rules per location.
pub const MAX_RULES_PER_LOCATION: usize = 100;
/// Most matches a threshold may ask for.
pub const MAX_THRESHOLD_COUNT: u32 = 10_000;
/// Shortest threshold window and absence duration.
pub const MIN_DURATION: Duration = Duration::from_secs(1);
/// Longest threshold window and cool-down.
pub const MAX_WINDOW: Duration = Duration::from_secs(24 * 3600);
/// Longest absence duration.
pub const MAX_ABSENCE: Duration = Duration::from_secs(7 * 24 * 3600);
/// Longest webhook URL.
pub const MAX_URL_BYTES: usize = 2048;
/// Most bytes of a rule's `initiator_id` or `target_id` filter: rules are stored and read on
/// every evaluation, so their size is bounded like the rest of them.
pub const MAX_FILTER_ID_BYTES: usize = 256;
/// Fewest and most secret bytes (after `whsec_` and base64).
pub const SECRET_BYTES: std::ops::RangeInclusive<usize> = 24..=64;

/// How threshold matches are grouped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupBy {
    /// All matches together.
    None,
    /// Per initiator id.
    Initiator,
    /// Per target CRN.
    Target,
}

/// When a rule fires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// Every match.
    Each,
    /// `count` matches of one group within `window`.
    Threshold {
        /// Matches needed.
        count: u32,
        /// The sliding window.
        window: Duration,
        /// How matches are grouped.
        group_by: GroupBy,
    },
    /// No match for `duration`.
    Absence {
        /// How long without a match.
        duration: Duration,
    },
}

/// A webhook channel: where to post and the key that signs.
#[derive(Clone, PartialEq, Eq)]
pub struct Channel {
    /// The URL, checked.
    pub url: String,
    /// The secret's bytes (what `whsec_` encodes).
    pub key: Vec<u8>,
}

impl std::fmt::Debug for Channel {
    // Hand-written so that the key never reaches a log line through `{:?}`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Channel").field("url", &without_query(&self.url)).finish_non_exhaustive()
    }
}

/// Returns `url` without its query and fragment: a webhook URL's query often carries a token
/// (`?code=…`), so only this form may reach a log line.
pub fn without_query(url: &str) -> &str {
    url.split(['?', '#']).next().unwrap_or_default()
}

/// A checked rule.
#[derive(Debug, Clone)]
pub struct Rule {
    /// The location watched.
    pub location: Location,
    /// The name.
    pub name: String,
    /// Which events match.
    pub filter: Filter,
    /// When matches notify.
    pub trigger: Trigger,
    /// Least time between `fired` notifications.
    pub cooldown: Duration,
    /// The webhook, if any.
    pub channel: Option<Channel>,
}

impl Rule {
    /// Returns the key of the rule in the alert state: location and name.
    pub fn key(&self) -> String {
        rule_key(self.location.as_str(), &self.name)
    }
}

/// Returns the key of a rule in the alert state.
pub fn rule_key(location: &str, name: &str) -> String {
    format!("{location}/{name}")
}

/// Checks a wire rule.
///
/// # Errors
/// [`Error::InvalidArgument`] naming the field at fault; never quoting the secret.
pub fn check(wire: &proto::AlertRule) -> Result<Rule> {
    let location = parse_location(&wire.location)?;
    check_name(&wire.name)?;
    if let Some(filter) = &wire.filter
        && (filter.start_time.is_some() || filter.end_time.is_some() || !filter.correlation_id.is_empty())
    {
        return Err(Error::invalid(
            "rule.filter may not set start_time, end_time or correlation_id: a rule watches every new event",
        ));
    }
    if let Some(filter) = &wire.filter {
        for (field, value) in [("initiator_id", &filter.initiator_id), ("target_id", &filter.target_id)] {
            if value.len() > MAX_FILTER_ID_BYTES {
                return Err(Error::invalid(format!("rule.filter.{field} is longer than {MAX_FILTER_ID_BYTES} bytes")));
            }
        }
    }
    let filter = Filter::from_wire(wire.filter.as_ref())?;
    let trigger = check_trigger(wire.trigger.as_ref())?;
    let cooldown = match &wire.cooldown {
        None => Duration::ZERO,
        Some(cooldown) => duration("rule.cooldown", cooldown, Duration::ZERO, MAX_WINDOW)?,
    };
    let channel = wire.webhook.as_ref().map(check_webhook).transpose()?;
    Ok(Rule { location, name: wire.name.clone(), filter, trigger, cooldown, channel })
}

/// Checks a rule name: lowercase letters, digits and `-`, starting with a letter or digit.
///
/// # Errors
/// [`Error::InvalidArgument`].
pub fn check_name(name: &str) -> Result<()> {
    if name.is_empty() {
        return Err(Error::invalid("missing rule name"));
    }
    let fits = name.chars().count() <= MAX_NAME_CHARS
        && !name.starts_with('-')
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if !fits {
        return Err(Error::invalid(format!(
            "invalid rule name `{}`: lowercase letters, digits and `-`, at most {MAX_NAME_CHARS}, not starting with `-`",
            qtrail_cadf::text::escape_control(&name.chars().take(MAX_NAME_CHARS + 1).collect::<String>())
        )));
    }
    Ok(())
}

fn check_trigger(trigger: Option<&proto::AlertTrigger>) -> Result<Trigger> {
    use proto::alert_trigger::Kind;
    match trigger.and_then(|trigger| trigger.kind.as_ref()) {
        None => Err(Error::invalid("missing rule.trigger: each, threshold or absence")),
        Some(Kind::Each(_)) => Ok(Trigger::Each),
        Some(Kind::Threshold(threshold)) => {
            if !(1..=MAX_THRESHOLD_COUNT).contains(&threshold.count) {
                return Err(Error::invalid(format!(
                    "rule.trigger.threshold.count {} is outside 1 to {MAX_THRESHOLD_COUNT}",
                    threshold.count
                )));
            }
            let window =
                threshold.window.as_ref().ok_or_else(|| Error::invalid("missing rule.trigger.threshold.window"))?;
            let window = duration("rule.trigger.threshold.window", window, MIN_DURATION, MAX_WINDOW)?;
            let group_by = match proto::GroupBy::try_from(threshold.group_by) {
                Ok(proto::GroupBy::Unspecified) => GroupBy::None,
                Ok(proto::GroupBy::Initiator) => GroupBy::Initiator,
                Ok(proto::GroupBy::Target) => GroupBy::Target,
                Err(_) => {
                    return Err(Error::invalid(format!(
                        "unknown rule.trigger.threshold.group_by {}",
                        threshold.group_by
                    )));
                }
            };
            Ok(Trigger::Threshold { count: threshold.count, window, group_by })
        }
        Some(Kind::Absence(absence)) => {
            let wanted =
                absence.duration.as_ref().ok_or_else(|| Error::invalid("missing rule.trigger.absence.duration"))?;
            Ok(Trigger::Absence {
                duration: duration("rule.trigger.absence.duration", wanted, MIN_DURATION, MAX_ABSENCE)?,
            })
        }
    }
}

/// Returns a wire duration within `min..=max`.
fn duration(field: &str, wire: &prost_types::Duration, min: Duration, max: Duration) -> Result<Duration> {
    let value =
        Duration::try_from(*wire).map_err(|_| Error::invalid(format!("invalid {field}: negative or malformed")))?;
    if value < min || value > max {
        return Err(Error::invalid(format!(
            "{field} {} is outside {} to {}",
            humanize(value),
            humanize(min),
            humanize(max)
        )));
    }
    Ok(value)
}

fn humanize(value: Duration) -> String {
    format!("{}s", value.as_secs_f64())
}

fn check_webhook(webhook: &proto::Webhook) -> Result<Channel> {
    let url = &webhook.url;
    if url.len() > MAX_URL_BYTES {
        return Err(Error::invalid(format!("rule.webhook.url is longer than {MAX_URL_BYTES} bytes")));
    }
    // The URL is never quoted back: its query or userinfo may hold a credential.
    let uri: axum::http::Uri =
        url.parse().map_err(|_| Error::invalid("invalid rule.webhook.url: an http or https url with a host"))?;
    let scheme_ok = matches!(uri.scheme_str(), Some("http" | "https"));
    let host_ok = uri.host().is_some_and(|host| !host.is_empty());
    if !scheme_ok || !host_ok || url.chars().any(char::is_control) {
        return Err(Error::invalid("invalid rule.webhook.url: an http or https url with a host"));
    }
    // A password in the URL would be shown to every auditor and sent in the host header; the
    // webhook secret is the credential.
    if uri.authority().is_some_and(|authority| authority.as_str().contains('@')) {
        return Err(Error::invalid("invalid rule.webhook.url: no user or password in the url, the secret signs"));
    }
    let key = secret_key(&webhook.secret)?;
    Ok(Channel { url: url.clone(), key })
}

/// Returns the key bytes of a `whsec_<base64>` secret.
///
/// # Errors
/// [`Error::InvalidArgument`] that never quotes the secret.
pub fn secret_key(secret: &str) -> Result<Vec<u8>> {
    let shape = || {
        Error::invalid(format!(
            "invalid rule.webhook.secret: `whsec_` and the base64 of {} to {} bytes",
            SECRET_BYTES.start(),
            SECRET_BYTES.end()
        ))
    };
    let encoded = secret.strip_prefix("whsec_").ok_or_else(shape)?;
    let key = STANDARD.decode(encoded).map_err(|_| shape())?;
    if !SECRET_BYTES.contains(&key.len()) {
        return Err(shape());
    }
    Ok(key)
}

/// Returns a stored rule as callers see it: the secret replaced by `has_secret`.
pub fn public(mut stored: proto::AlertRule) -> proto::AlertRule {
    if let Some(webhook) = &mut stored.webhook {
        webhook.has_secret = !webhook.secret.is_empty();
        webhook.secret.clear();
    }
    stored
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule() -> proto::AlertRule {
        proto::AlertRule {
            location: "us-east".into(),
            name: "deletes".into(),
            trigger: Some(proto::AlertTrigger { kind: Some(proto::alert_trigger::Kind::Each(proto::EachTrigger {})) }),
            ..Default::default()
        }
    }

    fn webhook(url: &str, secret: &str) -> Option<proto::Webhook> {
        Some(proto::Webhook { url: url.into(), secret: secret.into(), has_secret: false })
    }

    #[test]
    fn checks_names_triggers_and_durations() {
        assert_eq!(check(&rule()).unwrap().trigger, Trigger::Each);
        for bad in ["", "Deletes", "-x", "a b", &"a".repeat(65)] {
            let err = check(&proto::AlertRule { name: bad.into(), ..rule() }).unwrap_err();
            assert!(err.to_string().contains("rule name"), "{err}");
        }
        let err = check(&proto::AlertRule { trigger: None, ..rule() }).unwrap_err();
        assert_eq!(err.to_string(), "missing rule.trigger: each, threshold or absence");
        let threshold = |count, secs| proto::AlertRule {
            trigger: Some(proto::AlertTrigger {
                kind: Some(proto::alert_trigger::Kind::Threshold(proto::ThresholdTrigger {
                    count,
                    window: Some(prost_types::Duration { seconds: secs, nanos: 0 }),
                    group_by: 1,
                })),
            }),
            ..rule()
        };
        assert!(matches!(
            check(&threshold(5, 60)).unwrap().trigger,
            Trigger::Threshold { count: 5, group_by: GroupBy::Initiator, .. }
        ));
        assert!(check(&threshold(0, 60)).unwrap_err().to_string().contains("count 0"));
        assert!(check(&threshold(5, 0)).unwrap_err().to_string().contains("window 0s is outside"));
        assert!(check(&threshold(5, -1)).unwrap_err().to_string().contains("negative"));
    }

    #[test]
    fn filter_ids_are_capped() {
        let with = |initiator: usize, target: usize| proto::AlertRule {
            filter: Some(proto::EventFilter {
                initiator_id: "i".repeat(initiator),
                target_id: "t".repeat(target),
                ..Default::default()
            }),
            ..rule()
        };
        assert!(check(&with(MAX_FILTER_ID_BYTES, MAX_FILTER_ID_BYTES)).is_ok());
        let err = check(&with(MAX_FILTER_ID_BYTES + 1, 0)).unwrap_err().to_string();
        assert!(err.ends_with("rule.filter.initiator_id is longer than 256 bytes"), "{err}");
        let err = check(&with(0, 4 << 20)).unwrap_err().to_string();
        assert!(err.ends_with("rule.filter.target_id is longer than 256 bytes"), "{err}");
    }

    #[test]
    fn webhook_urls_and_secrets_are_checked_and_the_secret_never_quoted() {
        let secret = format!("whsec_{}", STANDARD.encode([7u8; 32]));
        let checked =
            check(&proto::AlertRule { webhook: webhook("https://hooks.example/x", &secret), ..rule() }).unwrap();
        assert_eq!(checked.channel.unwrap().key, vec![7u8; 32]);
        for url in ["ftp://x/", "http:///nohost", "not a url", "/relative"] {
            let err = check(&proto::AlertRule { webhook: webhook(url, &secret), ..rule() }).unwrap_err();
            assert!(err.to_string().starts_with("invalid rule.webhook.url"), "{err}");
        }
        for url in ["https://user:hunter2@hooks.example/x", "http://hunter2@h/", "ftp://h/?code=hunter2"] {
            let err = check(&proto::AlertRule { webhook: webhook(url, &secret), ..rule() }).unwrap_err();
            assert!(err.to_string().starts_with("invalid rule.webhook.url"), "{err}");
            assert!(!err.to_string().contains("hunter2"), "{err}");
        }
        let with_token = Channel { url: "https://h/x?code=hunter2#f".into(), key: vec![1; 32] };
        assert_eq!(format!("{with_token:?}"), r#"Channel { url: "https://h/x", .. }"#);
        let short = format!("whsec_{}", STANDARD.encode([7u8; 8]));
        for bad in [short.as_str(), "hunter2-secret", "whsec_!!!"] {
            let err = check(&proto::AlertRule { webhook: webhook("http://h/", bad), ..rule() }).unwrap_err();
            assert!(err.to_string().starts_with("invalid rule.webhook.secret"), "{err}");
            assert!(!err.to_string().contains(bad), "{err}");
        }
        let shown = public(proto::AlertRule { webhook: webhook("http://h/", &secret), ..rule() });
        let shown = shown.webhook.unwrap();
        assert!(shown.has_secret && shown.secret.is_empty());
    }
}
