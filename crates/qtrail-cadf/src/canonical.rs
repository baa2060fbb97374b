//! Canonical bytes of an event and the SHA-256 hash chain built over them.
//!
//! # Canonical bytes, version 1
//!
//! The canonical bytes are a compact UTF-8 JSON object that is the same for the same event
//! whatever form it arrived in and whatever order its keys had:
//!
//! - keys of every object, nested ones included, are sorted by their UTF-8 bytes;
//! - no whitespace between tokens;
//! - strings are escaped as JSON requires and no further (`"`, `\`, control characters);
//! - a number with no fractional part and a magnitude of at most 2^53 is written as an
//!   integer (`3`, never `3.0`), since protobuf's `Struct` carries every number as a double;
//!   other numbers use the shortest representation that round-trips;
//! - every field is present: empty strings stay `""`, absent request or response data is `null`;
//! - the top-level fields are `action`, `correlationId`, `dataEvent`, `eventTime` (RFC 3339,
//!   UTC, milliseconds, `Z`), `id` (lowercase hyphenated UUID), `initiator` (`credentialType`,
//!   `hostAddress`, `hostAgent`, `id`, `name`, `typeURI`), `logSourceCRN`, `message`,
//!   `outcome`, `reason` (`reasonCode` as a number, `reasonForFailure`, `reasonType`),
//!   `requestData`, `responseData`, `saveServiceCopy`, `severity`, `target` (`id`, `name`) and
//!   `v` (this format's version, 1).
//!
//! # Chain
//!
//! Each location's events form a chain: `chain_hash(n) = SHA-256(chain_hash(n-1) ||
//! canonical_bytes(event n))`, where `chain_hash(0)` is 32 zero bytes ([`ChainHash::GENESIS`]).

use std::fmt;
use std::io::Write as _;

use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::event::{AuditEvent, JsonObject};

/// Version of the canonical byte format, written as the `v` field.
pub const CANONICAL_VERSION: u64 = 1;

/// Largest magnitude at which every integer is exactly representable as a double (2^53).
const MAX_EXACT_INTEGER: f64 = 9_007_199_254_740_992.0;

/// A SHA-256 chain hash.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ChainHash(pub [u8; 32]);

impl ChainHash {
    /// The hash before the first event of a chain: 32 zero bytes.
    pub const GENESIS: ChainHash = ChainHash([0; 32]);

    /// Returns the hash from its 32 raw bytes, or `None` for any other length.
    pub fn from_slice(bytes: &[u8]) -> Option<Self> {
        bytes.try_into().ok().map(ChainHash)
    }

    /// Returns the raw bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Returns the lowercase hex form.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl fmt::Display for ChainHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for ChainHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ChainHash({})", self.to_hex())
    }
}

/// Returns the next chain hash: SHA-256 of the previous hash followed by the event's canonical
/// bytes.
pub fn chain_hash(prev: &ChainHash, event: &AuditEvent) -> ChainHash {
    chain_hash_of_bytes(prev, &canonical_bytes(event))
}

/// Returns the next chain hash from canonical bytes computed earlier.
pub fn chain_hash_of_bytes(prev: &ChainHash, canonical: &[u8]) -> ChainHash {
    let mut hasher = Sha256::new();
    hasher.update(prev.0);
    hasher.update(canonical);
    ChainHash(hasher.finalize().into())
}

/// Returns the canonical bytes of an event (format in the module documentation).
pub fn canonical_bytes(event: &AuditEvent) -> Vec<u8> {
    let mut out = Vec::with_capacity(1024);
    let mut object = ObjectWriter::new(&mut out);
    object.str("action", event.action.as_str());
    object.str("correlationId", &event.correlation_id);
    object.bool("dataEvent", event.data_event);
    object.str("eventTime", &event.event_time.to_rfc3339());
    object.str("id", event.id.hyphenated().encode_lower(&mut uuid::Uuid::encode_buffer()));
    {
        let initiator = &event.initiator;
        let mut nested = object.object("initiator");
        nested.str("credentialType", &initiator.credential_type);
        nested.str("hostAddress", &initiator.host_address);
        nested.str("hostAgent", &initiator.host_agent);
        nested.str("id", &initiator.id);
        nested.str("name", &initiator.name);
        nested.str("typeURI", &initiator.type_uri);
        nested.end();
    }
    object.str("logSourceCRN", event.log_source_crn.as_str());
    object.str("message", &event.message);
    object.str("outcome", event.outcome.as_str());
    {
        let reason = &event.reason;
        let mut nested = object.object("reason");
        nested.number("reasonCode", u64::from(reason.code));
        nested.str("reasonForFailure", &reason.reason_for_failure);
        nested.str("reasonType", &reason.reason_type);
        nested.end();
    }
    object.data("requestData", event.request_data.as_ref());
    object.data("responseData", event.response_data.as_ref());
    object.bool("saveServiceCopy", event.save_service_copy);
    object.str("severity", event.severity.as_str());
    {
        let mut nested = object.object("target");
        nested.str("id", event.target.crn.as_str());
        nested.str("name", &event.target.name);
        nested.end();
    }
    object.number("v", CANONICAL_VERSION);
    object.end();
    out
}

/// Writes one JSON object whose keys the caller supplies in sorted order.
struct ObjectWriter<'a> {
    out: &'a mut Vec<u8>,
    first: bool,
    #[cfg(debug_assertions)]
    last_key: Option<&'static str>,
}

impl<'a> ObjectWriter<'a> {
    fn new(out: &'a mut Vec<u8>) -> Self {
        out.push(b'{');
        Self {
            out,
            first: true,
            #[cfg(debug_assertions)]
            last_key: None,
        }
    }

    fn key(&mut self, key: &'static str) {
        #[cfg(debug_assertions)]
        {
            debug_assert!(self.last_key.is_none_or(|last| last < key), "canonical keys out of order at {key}");
            self.last_key = Some(key);
        }
        if !self.first {
            self.out.push(b',');
        }
        self.first = false;
        write_string(self.out, key);
        self.out.push(b':');
    }

    fn str(&mut self, key: &'static str, value: &str) {
        self.key(key);
        write_string(self.out, value);
    }

    fn bool(&mut self, key: &'static str, value: bool) {
        self.key(key);
        self.out.extend_from_slice(if value { b"true" } else { b"false" });
    }

    fn number(&mut self, key: &'static str, value: u64) {
        self.key(key);
        // Writing to a Vec cannot fail.
        let _ = write!(self.out, "{value}");
    }

    fn data(&mut self, key: &'static str, value: Option<&JsonObject>) {
        self.key(key);
        match value {
            Some(object) => write_object(self.out, object),
            None => self.out.extend_from_slice(b"null"),
        }
    }

    fn object(&mut self, key: &'static str) -> ObjectWriter<'_> {
        self.key(key);
        ObjectWriter::new(self.out)
    }

    fn end(self) {
        self.out.push(b'}');
    }
}

/// Writes `value` as a JSON string, escaped exactly as serde_json escapes it (`"`, `\\`, the
/// short escapes `\b \t \n \f \r`, `\u00xx` for the other control characters, nothing else).
/// Written by hand because this runs for every string of every event at every hop: runs of
/// bytes that need no escape are copied whole.
fn write_string(out: &mut Vec<u8>, value: &str) {
    out.push(b'"');
    let bytes = value.as_bytes();
    let clean = clean_prefix(bytes);
    out.extend_from_slice(&bytes[..clean]);
    let mut start = clean;
    for (index, &byte) in bytes.iter().enumerate().skip(clean) {
        let escape: &[u8] = match byte {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            0x08 => b"\\b",
            b'\t' => b"\\t",
            b'\n' => b"\\n",
            0x0c => b"\\f",
            b'\r' => b"\\r",
            0x00..=0x1f => {
                out.extend_from_slice(&bytes[start..index]);
                const HEX: &[u8; 16] = b"0123456789abcdef";
                out.extend_from_slice(&[
                    b'\\',
                    b'u',
                    b'0',
                    b'0',
                    HEX[usize::from(byte >> 4)],
                    HEX[usize::from(byte & 0xf)],
                ]);
                start = index + 1;
                continue;
            }
            _ => continue,
        };
        out.extend_from_slice(&bytes[start..index]);
        out.extend_from_slice(escape);
        start = index + 1;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

/// Returns how many leading bytes of `bytes` need no JSON escape, eight at a time: most strings
/// need none, and testing a word at once is several times faster than a byte at a time.
fn clean_prefix(bytes: &[u8]) -> usize {
    const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
    const HIGHS: u64 = u64::from_ne_bytes([0x80; 8]);
    // The classic "has a byte less than n" and "has a zero byte" tests (Bit Twiddling Hacks):
    // each is non-zero exactly when some byte of the word matches.
    let needs_escape = |word: u64| {
        let control = word.wrapping_sub(ONES * 0x20) & !word & HIGHS;
        let quote = word ^ (ONES * u64::from(b'"'));
        let backslash = word ^ (ONES * u64::from(b'\\'));
        let zero = |x: u64| x.wrapping_sub(ONES) & !x & HIGHS;
        control | zero(quote) | zero(backslash) != 0
    };
    let mut clean = 0;
    for chunk in bytes.chunks_exact(8) {
        let mut word = [0; 8];
        word.copy_from_slice(chunk);
        if needs_escape(u64::from_ne_bytes(word)) {
            break;
        }
        clean += 8;
    }
    clean
}

fn write_object(out: &mut Vec<u8>, object: &JsonObject) {
    // Sorting here, rather than relying on the map's iteration order, keeps the bytes stable
    // even if another crate turns on serde_json's `preserve_order` feature.
    let mut keys: Vec<&String> = object.keys().collect();
    keys.sort();
    write_list(out, [b'{', b'}'], keys, |out, key| {
        write_string(out, key);
        out.push(b':');
        write_value(out, &object[key.as_str()]);
    });
}

/// Writes `items` with `write`, separated by commas, between the two `brackets`.
fn write_list<T>(
    out: &mut Vec<u8>,
    brackets: [u8; 2],
    items: impl IntoIterator<Item = T>,
    mut write: impl FnMut(&mut Vec<u8>, T),
) {
    out.push(brackets[0]);
    for (index, item) in items.into_iter().enumerate() {
        if index > 0 {
            out.push(b',');
        }
        write(out, item);
    }
    out.push(brackets[1]);
}

fn write_value(out: &mut Vec<u8>, value: &Value) {
    match value {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(b) => out.extend_from_slice(if *b { b"true" } else { b"false" }),
        Value::Number(number) => write_number(out, number),
        Value::String(s) => write_string(out, s),
        Value::Array(items) => write_list(out, [b'[', b']'], items, write_value),
        Value::Object(object) => write_object(out, object),
    }
}

fn write_number(out: &mut Vec<u8>, number: &serde_json::Number) {
    if number.is_f64()
        && let Some(float) = number.as_f64()
        && float.fract() == 0.0
        && float.abs() <= MAX_EXACT_INTEGER
    {
        // Exact: the value is an integer of at most 2^53 in magnitude (and -0 becomes 0).
        out.extend_from_slice((float as i64).to_string().as_bytes());
        return;
    }
    out.extend_from_slice(number.to_string().as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The canonical form promises serde_json's string escaping; the hand-written writer must
    /// agree with it on every ASCII byte and on text around it.
    #[test]
    fn strings_are_escaped_as_serde_json_escapes_them() {
        let mut samples: Vec<String> = (0_u8..=0x7f).map(|byte| format!("a{}b", char::from(byte))).collect();
        samples.extend(
            ["", "plain", "\"quoted\"", "back\\slash", "\u{1b}[31m\n", "é ü \u{2028} \u{202e} 😀", "\u{7f}\u{85}"]
                .map(String::from),
        );
        samples.push((0_u8..0x20).map(char::from).collect());
        // Escapes at every offset of the eight-byte words, after clean runs of every length.
        for clean in 0..20 {
            for special in ["\"", "\\", "\n", "\u{1f}", "\u{7f}", "é", "\u{0}"] {
                samples.push(format!("{}{special}{}", "a".repeat(clean), "b".repeat(clean % 9)));
            }
        }
        for sample in samples {
            let mut ours = Vec::new();
            write_string(&mut ours, &sample);
            assert_eq!(ours, serde_json::to_vec(&sample).unwrap(), "{sample:?}");
        }
    }
}
