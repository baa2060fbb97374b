//! Time arguments: an RFC 3339 time (`2026-11-26T10:00:00Z`) or an age before now (`90s`,
//! `30m`, `1h`, `2d`, `1h 30m`).

use chrono::{DateTime, Utc};

use crate::error::CliError;

/// Returns the time `text` names, relative to `now` for ages.
///
/// # Errors
/// [`CliError::Usage`] naming `flag` when the text is neither form.
pub fn parse_time(flag: &str, text: &str, now: DateTime<Utc>) -> Result<prost_types::Timestamp, CliError> {
    let time = match DateTime::parse_from_rfc3339(text) {
        Ok(time) => time.with_timezone(&Utc),
        Err(_) => {
            let age = humantime::parse_duration(text).map_err(|_| {
                CliError::Usage(format!("{flag}: `{text}` is neither an RFC 3339 time nor an age such as 1h or 30m"))
            })?;
            let age = chrono::Duration::from_std(age)
                .map_err(|_| CliError::Usage(format!("{flag}: `{text}` is too long ago")))?;
            now.checked_sub_signed(age).ok_or_else(|| CliError::Usage(format!("{flag}: `{text}` is too long ago")))?
        }
    };
    Ok(prost_types::Timestamp { seconds: time.timestamp(), nanos: time.timestamp_subsec_nanos() as i32 })
}

/// Returns a protobuf timestamp as RFC 3339 with milliseconds, or an empty string when unset.
pub fn format_time(time: Option<&prost_types::Timestamp>) -> String {
    time.and_then(|t| DateTime::<Utc>::from_timestamp(t.seconds, t.nanos.clamp(0, 999_999_999) as u32))
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_times_and_ages() {
        let now: DateTime<Utc> = "2026-11-26T12:00:00Z".parse().unwrap();
        assert_eq!(parse_time("--since", "1h", now).unwrap().seconds, now.timestamp() - 3600);
        assert_eq!(parse_time("--since", "1h 30m", now).unwrap().seconds, now.timestamp() - 5400);
        let exact = parse_time("--since", "2026-11-26T10:00:00.5+02:00", now).unwrap();
        assert_eq!(format_time(Some(&exact)), "2026-11-26T08:00:00.500Z");
        let err = parse_time("--since", "yesterday", now).unwrap_err().to_string();
        assert_eq!(err, "--since: `yesterday` is neither an RFC 3339 time nor an age such as 1h or 30m");
        assert_eq!(format_time(None), "");
    }
}
