//! Who is calling: principals from the `--principals` file, looked up by API key, and what a
//! call knows about its caller.
//!
//! API keys are kept only as SHA-256 digests, so the process holds no key in the clear after
//! start-up and a lookup compares digests rather than secrets. No key, a key, an id or a name
//! from this module ever goes into a log line.

use std::collections::HashMap;
use std::path::Path;

use qtrail_cadf::{Crn, Location};
use serde::Deserialize;
use sha2::{Digest, Sha256};

/// The principals file: `[[principal]]` tables. No `Debug`: it holds API keys.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PrincipalsFile {
    #[serde(default)]
    principal: Vec<PrincipalEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PrincipalEntry {
    api_key: String,
    iam_id: String,
    name: String,
    account: String,
}

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// IAM id, e.g. `IBMid-0001`.
    pub iam_id: String,
    /// Human name, e.g. an e-mail address.
    pub name: String,
    /// Account that owns what the principal creates.
    pub account: String,
}

/// Principals by the SHA-256 digest of their API key.
#[derive(Clone, Default)]
pub struct Principals {
    by_key_digest: HashMap<[u8; 32], Principal>,
}

impl std::fmt::Debug for Principals {
    /// Shows how many there are: even key digests stay out of debug output.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Principals").field("count", &self.by_key_digest.len()).finish()
    }
}

/// Why the principals file is unusable.
#[derive(Debug, thiserror::Error)]
pub enum PrincipalsError {
    /// The file cannot be read or parsed.
    #[error(transparent)]
    File(#[from] qtrail_server::config::ConfigError),
    /// An entry breaks a rule (entries are numbered from 1; keys are never shown).
    #[error("invalid {path}: principal {index}: {reason}")]
    Entry {
        /// The file.
        path: String,
        /// Position of the entry, from 1.
        index: usize,
        /// What is wrong.
        reason: String,
    },
}

impl Principals {
    /// Loads and checks the principals file: every entry needs an API key, an IAM id and an
    /// account that fit in a CRN of `location` and `instance`, and no key may repeat.
    ///
    /// # Errors
    /// [`PrincipalsError`] naming the file and the entry at fault.
    pub fn load(path: &Path, location: &Location, instance: &str) -> Result<Self, PrincipalsError> {
        let file: PrincipalsFile = qtrail_server::config::load_toml(path)?;
        let mut principals = Principals::default();
        for (position, entry) in file.principal.into_iter().enumerate() {
            let invalid = |reason: &str| PrincipalsError::Entry {
                path: path.display().to_string(),
                index: position + 1,
                reason: reason.to_owned(),
            };
            if entry.api_key.trim().is_empty() {
                return Err(invalid("empty api_key"));
            }
            if !entry.api_key.chars().all(|c| c.is_ascii_graphic()) {
                return Err(invalid("api_key must be printable ascii without spaces"));
            }
            if entry.iam_id.is_empty() || entry.iam_id.len() > 128 || !entry.iam_id.chars().all(is_id_char) {
                return Err(invalid("iam_id must be 1 to 128 printable ascii characters without spaces"));
            }
            if entry.name.chars().any(char::is_control) {
                return Err(invalid("name must not contain control characters"));
            }
            if entry.account.len() > 128 || Crn::instance(location, &entry.account, instance).is_err() {
                return Err(invalid("account must be 1 to 128 printable ascii characters without spaces or `:`"));
            }
            let principal = Principal { iam_id: entry.iam_id, name: entry.name, account: entry.account };
            if principals.by_key_digest.insert(digest(&entry.api_key), principal).is_some() {
                return Err(invalid("api_key repeats an earlier principal's key"));
            }
        }
        Ok(principals)
    }

    /// Returns a set of principals, for tests: `(api_key, principal)` pairs.
    pub fn from_entries(entries: impl IntoIterator<Item = (String, Principal)>) -> Self {
        Self { by_key_digest: entries.into_iter().map(|(key, principal)| (digest(&key), principal)).collect() }
    }

    /// Returns the principal with this API key.
    pub fn find(&self, api_key: &str) -> Option<&Principal> {
        self.by_key_digest.get(&digest(api_key))
    }

    /// Returns the number of principals.
    pub fn len(&self) -> usize {
        self.by_key_digest.len()
    }

    /// Returns true when there are none.
    pub fn is_empty(&self) -> bool {
        self.by_key_digest.is_empty()
    }
}

fn digest(api_key: &str) -> [u8; 32] {
    Sha256::digest(api_key.as_bytes()).into()
}

fn is_id_char(c: char) -> bool {
    c.is_ascii_graphic() && c != ':'
}

/// The caller as far as a call knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// A known principal.
    Principal(Principal),
    /// A key was presented that no principal has.
    UnknownKey,
    /// No key was presented.
    Anonymous,
}

/// What a call knows about where it came from. Never holds the API key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallContext {
    /// Who is calling.
    pub caller: Caller,
    /// Originating IP: the peer address, or the right-most untrusted `x-forwarded-for` entry
    /// when the peer is a trusted proxy (see [`crate::forwarded`]).
    pub host_address: String,
    /// The `user-agent` header.
    pub user_agent: String,
    /// Correlation id: a valid `x-correlation-id`, else a new UUIDv4.
    pub correlation_id: String,
}

impl CallContext {
    /// Returns a context for an in-process call by `caller`, for tests.
    pub fn for_test(caller: Caller) -> Self {
        Self {
            caller,
            host_address: "127.0.0.1".to_owned(),
            user_agent: "test".to_owned(),
            correlation_id: uuid::Uuid::new_v4().to_string(),
        }
    }
}

/// Longest correlation id taken from a caller.
pub const MAX_CORRELATION_ID_BYTES: usize = 128;

/// Returns the caller's correlation id if it is 1 to 128 bytes of printable ASCII, else a new
/// UUIDv4.
pub fn correlation_id(given: Option<&str>) -> String {
    match given {
        Some(id)
            if !id.is_empty()
                && id.len() <= MAX_CORRELATION_ID_BYTES
                && id.bytes().all(|b| b.is_ascii_graphic() || b == b' ') =>
        {
            id.to_owned()
        }
        _ => uuid::Uuid::new_v4().to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> Result<Principals, PrincipalsError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("principals.toml");
        std::fs::write(&path, text).unwrap();
        Principals::load(&path, &"us-east".parse().unwrap(), "inst-1")
    }

    #[test]
    fn loads_principals_and_finds_them_by_key() {
        let principals =
            load("[[principal]]\napi_key = \"key-a\"\niam_id = \"IBMid-1\"\nname = \"alice\"\naccount = \"acc-a\"\n")
                .unwrap();
        assert_eq!(principals.len(), 1);
        assert_eq!(principals.find("key-a").unwrap().account, "acc-a");
        assert!(principals.find("key-b").is_none());
    }

    #[test]
    fn rejects_bad_entries_without_showing_keys() {
        let entry = |key: &str, iam: &str, account: &str| {
            format!("[[principal]]\napi_key = \"{key}\"\niam_id = \"{iam}\"\nname = \"n\"\naccount = \"{account}\"\n")
        };
        let cases = [
            (entry("", "i", "a"), "principal 1: empty api_key"),
            (entry("secret-1", "i:d", "a"), "principal 1: iam_id"),
            (entry("secret-1", "i", "a:b"), "principal 1: account"),
            (entry("secret-1", "i", "a") + &entry("secret-1", "j", "b"), "principal 2: api_key repeats"),
        ];
        for (text, expected) in cases {
            let message = load(&text).unwrap_err().to_string();
            assert!(message.contains(expected), "{message}");
            assert!(!message.contains("secret-1"), "{message}");
        }
        let unknown =
            load("[[principal]]\napi_key = \"k\"\niam_id = \"i\"\nname = \"n\"\naccount = \"a\"\nrole = \"x\"\n");
        assert!(unknown.unwrap_err().to_string().contains("line 6"));
    }

    #[test]
    fn takes_only_sane_correlation_ids() {
        assert_eq!(correlation_id(Some("req-42")), "req-42");
        for bad in [None, Some(""), Some("a\nb"), Some(&*"x".repeat(129))] {
            let id = correlation_id(bad);
            assert!(uuid::Uuid::parse_str(&id).is_ok(), "{bad:?} -> {id}");
        }
    }
}
