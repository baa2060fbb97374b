//! Request validation: the limits a request must keep and the checks that turn its fields into
//! the values the calls store, each failure an INVALID_ARGUMENT naming the field.

use qtrail_cadf::JsonObject;
use qtrail_cadf::proto::json_from_struct;
use qtrail_proto::qtrail::runtime::v1 as pb;
use rand::Rng;
use serde_json::Value;

use crate::error::{Error, Result, quote};

/// Longest program name, in characters.
const MAX_NAME_CHARS: usize = 128;
/// Longest description, in characters.
const MAX_DESCRIPTION_CHARS: usize = 2048;
/// Default and largest `max_execution_time`, in seconds.
const DEFAULT_MAX_EXECUTION_TIME: u32 = 300;
const MAX_EXECUTION_TIME: u32 = 10_800;
/// Largest spec, in bytes of JSON.
const MAX_SPEC_BYTES: usize = 16 * 1024;
/// Longest id accepted in a request, in bytes.
pub(super) const MAX_ID_BYTES: usize = 128;
/// Page size bounds.
const DEFAULT_LIMIT: i32 = 100;
const MAX_LIMIT: i32 = 1000;
/// Shots bounds and default.
const DEFAULT_SHOTS: u32 = 1024;
const MAX_SHOTS: u32 = 100_000;
/// Largest integer a `google.protobuf.Value` number carries exactly (2^53).
const MAX_EXACT_INTEGER: f64 = 9_007_199_254_740_992.0;
/// Tag bounds.
const MAX_TAGS: usize = 16;
const MAX_TAG_CHARS: usize = 64;
/// Default and largest number of outcomes in a page of job results: 16,384 outcomes of 64 bits
/// make ~1.2 MB.
pub(super) const MAX_RESULTS_PAGE: u32 = 16_384;
/// Longest results page token: a bit string of at most 64 classical bits.
pub(super) const MAX_PAGE_TOKEN_CHARS: usize = 64;
/// Latest timestamp accepted in a filter (9999-12-31T23:59:59Z).
const MAX_TIMESTAMP_SECONDS: i64 = 253_402_300_799;

pub(super) fn check_id(field: &'static str, id: &str) -> Result<()> {
    if id.is_empty() {
        return Err(Error::invalid(field, "must not be empty"));
    }
    if id.len() > MAX_ID_BYTES {
        return Err(Error::invalid(field, format!("longer than {MAX_ID_BYTES} bytes")));
    }
    Ok(())
}

pub(super) fn check_name(name: &str) -> Result<()> {
    let chars = name.chars().count();
    if chars == 0 || chars > MAX_NAME_CHARS {
        return Err(Error::invalid("name", format!("must be 1 to {MAX_NAME_CHARS} characters, got {chars}")));
    }
    if name.trim() != name || name.chars().any(char::is_control) {
        return Err(Error::invalid("name", "must not contain control characters or start or end with spaces"));
    }
    Ok(())
}

pub(super) fn check_description(description: &str) -> Result<()> {
    let chars = description.chars().count();
    if chars > MAX_DESCRIPTION_CHARS {
        return Err(Error::invalid(
            "description",
            format!("must be at most {MAX_DESCRIPTION_CHARS} characters, got {chars}"),
        ));
    }
    Ok(())
}

pub(super) fn check_max_execution_time(seconds: u32) -> Result<u32> {
    match seconds {
        0 => Ok(DEFAULT_MAX_EXECUTION_TIME),
        1..=MAX_EXECUTION_TIME => Ok(seconds),
        _ => Err(Error::invalid(
            "max_execution_time",
            format!("must be 1 to {MAX_EXECUTION_TIME} seconds (0 means {DEFAULT_MAX_EXECUTION_TIME}), got {seconds}"),
        )),
    }
}

pub(super) fn check_page(limit: i32, offset: i32) -> Result<(usize, usize)> {
    if !(0..=MAX_LIMIT).contains(&limit) {
        return Err(Error::invalid(
            "limit",
            format!("must be 0 to {MAX_LIMIT} (0 means {DEFAULT_LIMIT}), got {limit}"),
        ));
    }
    if offset < 0 {
        return Err(Error::invalid("offset", format!("must be 0 or more, got {offset}")));
    }
    let limit = if limit == 0 { DEFAULT_LIMIT } else { limit };
    // Both are non-negative here.
    Ok((limit as usize, offset as usize))
}

pub(super) fn check_tags(field: &'static str, tags: &[String]) -> Result<()> {
    if tags.len() > MAX_TAGS {
        return Err(Error::invalid(field, format!("at most {MAX_TAGS} tags, got {}", tags.len())));
    }
    for tag in tags {
        let chars = tag.chars().count();
        if chars == 0 || chars > MAX_TAG_CHARS || tag.chars().any(char::is_control) {
            return Err(Error::invalid(
                field,
                format!("tag `{}` must be 1 to {MAX_TAG_CHARS} characters without control characters", quote(tag)),
            ));
        }
    }
    Ok(())
}

pub(super) fn spec_json(spec: Option<pb::ProgramSpec>) -> Result<JsonObject> {
    let Some(spec) = spec else {
        return Ok(JsonObject::new());
    };
    let mut object = JsonObject::new();
    for (key, part) in [
        ("backend_requirements", spec.backend_requirements),
        ("parameters", spec.parameters),
        ("return_values", spec.return_values),
        ("interim_results", spec.interim_results),
    ] {
        if let Some(part) = part {
            let json = json_from_struct("spec", part).map_err(|err| Error::invalid("spec", err.to_string()))?;
            object.insert(key.to_owned(), Value::Object(json));
        }
    }
    let size = serde_json::to_vec(&object).map(|bytes| bytes.len()).unwrap_or(usize::MAX);
    if size > MAX_SPEC_BYTES {
        return Err(Error::invalid("spec", format!("is {size} bytes of json, over the limit of {MAX_SPEC_BYTES}")));
    }
    Ok(object)
}

/// Job parameters after validation.
pub(super) struct Params {
    /// As given (validated), for the job record.
    pub(super) given: JsonObject,
    pub(super) shots: u32,
    pub(super) seed: u64,
}

pub(super) fn check_params(params: Option<prost_types::Struct>) -> Result<Params> {
    let given = match params {
        Some(params) => json_from_struct("params", params).map_err(|err| Error::invalid("params", err.to_string()))?,
        None => JsonObject::new(),
    };
    for key in given.keys() {
        if key != "shots" && key != "seed" {
            return Err(Error::invalid(
                "params",
                format!("unknown parameter `{}`, only `shots` and `seed` exist", quote(key)),
            ));
        }
    }
    let shots = match given.get("shots") {
        None => DEFAULT_SHOTS,
        Some(value) => match whole_number(value) {
            Some(n) if (1.0..=f64::from(MAX_SHOTS)).contains(&n) => n as u32,
            _ => return Err(Error::invalid("params.shots", format!("must be an integer from 1 to {MAX_SHOTS}"))),
        },
    };
    let seed = match given.get("seed") {
        None => rand::rng().random_range(0..=(1u64 << 53)),
        Some(value) => match whole_number(value) {
            Some(n) if (0.0..=MAX_EXACT_INTEGER).contains(&n) => n as u64,
            _ => return Err(Error::invalid("params.seed", "must be an integer from 0 to 2^53")),
        },
    };
    Ok(Params { given, shots, seed })
}

/// Returns a JSON number that has no fractional part.
fn whole_number(value: &Value) -> Option<f64> {
    let n = value.as_f64()?;
    (n.fract() == 0.0).then_some(n)
}

pub(super) fn timestamp_millis(field: &'static str, timestamp: Option<prost_types::Timestamp>) -> Result<Option<i64>> {
    let Some(timestamp) = timestamp else {
        return Ok(None);
    };
    if !(0..=MAX_TIMESTAMP_SECONDS).contains(&timestamp.seconds) || !(0..1_000_000_000).contains(&timestamp.nanos) {
        return Err(Error::invalid(field, "must be a valid time between 1970 and 9999"));
    }
    Ok(Some(timestamp.seconds * 1000 + i64::from(timestamp.nanos / 1_000_000)))
}

#[cfg(test)]
mod tests {
    use qtrail_cadf::proto::struct_from_json;
    use serde_json::json;

    use super::*;

    #[test]
    fn params_accept_shots_and_seed_only() {
        let parse = |json: Value| check_params(Some(struct_from_json(json.as_object().unwrap())));
        let params = parse(json!({"shots": 10, "seed": 7})).unwrap();
        assert_eq!((params.shots, params.seed), (10, 7));
        assert_eq!(parse(json!({})).unwrap().shots, DEFAULT_SHOTS);
        for (bad, field) in [
            (json!({"shots": 0}), "params.shots"),
            (json!({"shots": 100_001}), "params.shots"),
            (json!({"shots": 1.5}), "params.shots"),
            (json!({"shots": "10"}), "params.shots"),
            (json!({"seed": -1}), "params.seed"),
            (json!({"iterations": 3}), "params"),
        ] {
            let err = parse(bad.clone()).err().unwrap();
            assert!(matches!(&err, Error::InvalidArgument { field: f, .. } if *f == field), "{bad} -> {err}");
        }
    }

    #[test]
    fn paging_and_time_filters_are_checked() {
        assert_eq!(check_page(0, 0).unwrap(), (100, 0));
        assert_eq!(check_page(1000, 5).unwrap(), (1000, 5));
        assert!(check_page(-1, 0).is_err());
        assert!(check_page(1001, 0).is_err());
        assert!(check_page(10, -1).is_err());
        let bad = prost_types::Timestamp { seconds: 1, nanos: -5 };
        assert!(timestamp_millis("created_after", Some(bad)).is_err());
        let good = prost_types::Timestamp { seconds: 2, nanos: 5_000_000 };
        assert_eq!(timestamp_millis("created_after", Some(good)).unwrap(), Some(2005));
    }
}
