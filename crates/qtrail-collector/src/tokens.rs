//! Collector tokens and their roles, from the `--tokens` TOML file.
//!
//! Each token carries one role: `publisher` may only publish (Ingest), `auditor` may only read
//! (EventQuery), `admin` may only manage collectors (CollectorAdmin). A publisher token also
//! names the locations it may publish to (`locations = ["us-east"]`; none without it), so that
//! one location's runtime cannot write into another's chain. An auditor token may name the
//! accounts it reads (`accounts = ["acc-bob"]`; all without it, see [`crate::scope`]). Tokens are looked up by their
//! SHA-256 digest, so no comparison runs over the secret itself, and only a token's `name` ever
//! reaches a log line or an error message; names are unique, since publisher bindings, stored
//! records and logs know a token by its name alone, and may not contain `@cert:`, which joins a
//! name to a client certificate where publishers are bound to both.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::path::Path;

use qtrail_cadf::Location;
use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::error::Error;
use crate::scope::Scope;

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// May call `Ingest.Publish`.
    Publisher,
    /// May call `EventQuery`.
    Auditor,
    /// May call `CollectorAdmin`.
    Admin,
}

impl Role {
    /// Returns the role's name as written in the tokens file.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Publisher => "publisher",
            Role::Auditor => "auditor",
            Role::Admin => "admin",
        }
    }
}

/// One `[[token]]` entry of the tokens file.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenEntry {
    /// The secret that callers send as `authorization: Bearer <token>`.
    pub token: String,
    /// What the token may do.
    pub role: Role,
    /// A name for logs, e.g. `runtime-us-east`; unique within the file.
    pub name: String,
    /// The locations a publisher token may publish to; absent, it may publish to none. Only
    /// publisher tokens may carry it.
    #[serde(default)]
    pub locations: Option<Vec<Location>>,
    /// The accounts whose events an auditor token reads; absent, every account's. Only auditor
    /// tokens may carry it, and never empty.
    #[serde(default)]
    pub accounts: Option<Vec<String>>,
}

impl TokenEntry {
    /// Returns an entry without `locations`.
    pub fn new(token: impl Into<String>, role: Role, name: impl Into<String>) -> Self {
        Self { token: token.into(), role, name: name.into(), locations: None, accounts: None }
    }

    /// Returns the entry allowed to publish to `locations`.
    #[must_use]
    pub fn with_locations(mut self, locations: impl IntoIterator<Item = Location>) -> Self {
        self.locations = Some(locations.into_iter().collect());
        self
    }

    /// Returns the entry reading only the events of `accounts`.
    #[must_use]
    pub fn with_accounts(mut self, accounts: impl IntoIterator<Item = impl Into<String>>) -> Self {
        self.accounts = Some(accounts.into_iter().map(Into::into).collect());
        self
    }
}

impl fmt::Debug for TokenEntry {
    // Hand-written so that the secret never reaches a log line through `{:?}`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenEntry")
            .field("role", &self.role)
            .field("name", &self.name)
            .field("locations", &self.locations)
            .field("accounts", &self.accounts)
            .finish_non_exhaustive()
    }
}

/// The tokens file, `[[token]]` entries.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TokensFile {
    #[serde(default)]
    token: Vec<TokenEntry>,
}

/// The known tokens, by digest.
#[derive(Clone, Default)]
pub struct Tokens {
    by_digest: HashMap<[u8; 32], Caller>,
}

impl fmt::Debug for Tokens {
    // Only names and roles: even a digest of a short token would invite guessing.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.by_digest.values()).finish()
    }
}

/// Who a request comes from: a token's name and role, without the secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The token's name.
    pub name: String,
    /// The token's role.
    pub role: Role,
    /// The locations a publisher token may publish to (empty for other roles).
    pub locations: Vec<Location>,
    /// The accounts whose events the caller reads (every account's but for a scoped auditor).
    pub scope: Scope,
}

impl Caller {
    /// Returns whether the caller may publish to `location`.
    pub fn may_publish_to(&self, location: &Location) -> bool {
        self.role == Role::Publisher && self.locations.contains(location)
    }
}

/// Why a tokens file is unusable.
#[derive(Debug, thiserror::Error)]
pub enum TokensError {
    /// The file cannot be read or parsed; the message names the file and line.
    #[error(transparent)]
    Load(#[from] qtrail_server::config::ConfigError),
    /// An entry is unusable; the message names the entry by its `name`.
    #[error("invalid {path}: {message}")]
    Invalid {
        /// The file.
        path: String,
        /// What is wrong.
        message: String,
    },
}

impl Tokens {
    /// Loads and checks a tokens file: tokens and names must be non-empty and unique, and only
    /// publisher tokens may name locations.
    ///
    /// # Errors
    /// [`TokensError`] naming the file and the line or entry at fault.
    pub fn load(path: &Path) -> Result<Self, TokensError> {
        let file: TokensFile = qtrail_server::config::load_toml(path)?;
        Self::from_entries(file.token)
            .map_err(|message| TokensError::Invalid { path: path.display().to_string(), message })
    }

    /// Returns the tokens of `entries`.
    ///
    /// # Errors
    /// A message naming the entry at fault when a token or name is empty or repeats, or a token
    /// of another role than publisher names locations.
    pub fn from_entries(entries: impl IntoIterator<Item = TokenEntry>) -> Result<Self, String> {
        let mut by_digest = HashMap::new();
        let mut names = HashSet::new();
        for (index, entry) in entries.into_iter().enumerate() {
            let position = index + 1;
            if entry.name.trim().is_empty() {
                return Err(format!("token entry {position} has an empty `name`"));
            }
            // Reserved: a name and a client certificate make one credential, `NAME@cert:…`
            // (see `store::publisher::cert_credential`), which must read back unambiguously.
            if entry.name.contains("@cert:") {
                return Err(format!(
                    "token `{}` (entry {position}) has `@cert:` in its `name`, which is reserved for client certificates",
                    entry.name
                ));
            }
            if entry.token.trim().is_empty() {
                return Err(format!("token `{}` (entry {position}) has an empty `token`", entry.name));
            }
            if !names.insert(entry.name.clone()) {
                return Err(format!(
                    "token `{}` (entry {position}) repeats the `name` of an earlier entry: names must be unique",
                    entry.name
                ));
            }
            // Refused rather than ignored: an operator who wrote it meant a limit that no other
            // role has.
            if entry.role != Role::Publisher && entry.locations.is_some() {
                return Err(format!(
                    "token `{}` (entry {position}) has role `{}`: only publisher tokens take `locations`",
                    entry.name,
                    entry.role.as_str()
                ));
            }
            let scope = scope_of(&entry, position)?;
            let locations = entry.locations.unwrap_or_default();
            let caller = Caller { name: entry.name.clone(), role: entry.role, locations, scope };
            if by_digest.insert(digest(&entry.token), caller).is_some() {
                return Err(format!(
                    "token `{}` (entry {position}) repeats the `token` of an earlier entry",
                    entry.name
                ));
            }
        }
        Ok(Self { by_digest })
    }

    /// Returns the number of tokens.
    pub fn len(&self) -> usize {
        self.by_digest.len()
    }

    /// Returns true when there are no tokens.
    pub fn is_empty(&self) -> bool {
        self.by_digest.is_empty()
    }

    /// Returns the caller behind `token` if it may act as `needed`.
    ///
    /// # Errors
    /// [`Error::Unauthenticated`] for a missing or unknown token, [`Error::PermissionDenied`]
    /// for a token of another role.
    pub fn authorize(&self, token: Option<&str>, needed: Role) -> Result<Caller, Error> {
        let caller = token.and_then(|token| self.by_digest.get(&digest(token))).ok_or(Error::Unauthenticated)?;
        if caller.role != needed {
            return Err(Error::PermissionDenied {
                name: caller.name.clone(),
                role: caller.role.as_str(),
                needed: needed.as_str(),
            });
        }
        Ok(caller.clone())
    }
}

/// Returns the scope of an entry's `accounts`, refusing it on a role other than auditor (the
/// operator meant a limit no other role has), empty (absent is how to say every account) or
/// with an account id that no CRN could hold.
fn scope_of(entry: &TokenEntry, position: usize) -> Result<Scope, String> {
    let Some(accounts) = &entry.accounts else {
        return Ok(Scope::all());
    };
    let name = &entry.name;
    if entry.role != Role::Auditor {
        return Err(format!(
            "token `{name}` (entry {position}) has role `{}`: only auditor tokens take `accounts`",
            entry.role.as_str()
        ));
    }
    if accounts.is_empty() {
        return Err(format!(
            "token `{name}` (entry {position}) has empty `accounts`: leave it out to read every account"
        ));
    }
    for account in accounts {
        // The runtime's rule for account ids, so that every account it can name can be listed.
        if account.len() > MAX_ACCOUNT_BYTES || qtrail_cadf::crn::check_account(account).is_err() {
            return Err(format!(
                "token `{name}` (entry {position}) has account `{}` in `accounts`: an account must be 1 to {MAX_ACCOUNT_BYTES} printable ascii characters without spaces or `:`",
                qtrail_cadf::text::escape_control(account)
            ));
        }
    }
    Ok(Scope::accounts(accounts.iter().cloned()))
}

/// Longest account id, in bytes, as the runtime's principals file allows.
const MAX_ACCOUNT_BYTES: usize = 128;

impl Tokens {
    /// Returns the caller of the token named `name`, if any.
    pub(crate) fn caller(&self, name: &str) -> Option<Caller> {
        self.by_digest.values().find(|caller| caller.name == name).cloned()
    }

    /// Returns what binds a console session to the current secret of the token named `name`:
    /// 16 bytes of a digest of its digest, so that the cookie reveals nothing usable about the
    /// secret, and a rotated or removed token ends its sessions. `None` without such a token.
    pub(crate) fn session_binding(&self, name: &str) -> Option<[u8; 16]> {
        let (digest, _) = self.by_digest.iter().find(|(_, caller)| caller.name == name)?;
        let mut bound = Sha256::new();
        bound.update(b"qtrail console session\0");
        bound.update(digest);
        let bound: [u8; 32] = bound.finalize().into();
        bound[..16].try_into().ok()
    }
}

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(token: &str, role: Role, name: &str) -> TokenEntry {
        TokenEntry::new(token, role, name)
    }

    fn location(name: &str) -> Location {
        name.parse().unwrap()
    }

    #[test]
    fn publisher_tokens_publish_only_to_their_locations() {
        let tokens = Tokens::from_entries([
            entry("p", Role::Publisher, "runtime-us-east").with_locations([location("us-east")]),
            entry("q", Role::Publisher, "legacy"),
        ])
        .unwrap();
        let bound = tokens.authorize(Some("p"), Role::Publisher).unwrap();
        assert!(bound.may_publish_to(&location("us-east")));
        assert!(!bound.may_publish_to(&location("eu-de")));
        let legacy = tokens.authorize(Some("q"), Role::Publisher).unwrap();
        assert!(!legacy.may_publish_to(&location("us-east")), "no `locations`, no location");
    }

    #[test]
    fn names_are_unique_and_only_publishers_take_locations() {
        let repeated = Tokens::from_entries([entry("x", Role::Admin, "ops"), entry("y", Role::Auditor, "ops")]);
        assert_eq!(
            repeated.unwrap_err(),
            "token `ops` (entry 2) repeats the `name` of an earlier entry: names must be unique"
        );
        let auditor = Tokens::from_entries([entry("x", Role::Auditor, "alice").with_locations([location("us-east")])]);
        assert_eq!(
            auditor.unwrap_err(),
            "token `alice` (entry 1) has role `auditor`: only publisher tokens take `locations`"
        );
    }

    #[test]
    fn only_auditors_take_accounts_and_never_an_empty_or_bad_list() {
        let tokens = Tokens::from_entries([
            entry("b", Role::Auditor, "auditor-bob").with_accounts(["acc-bob"]),
            entry("a", Role::Auditor, "auditor"),
        ])
        .unwrap();
        let bob = tokens.authorize(Some("b"), Role::Auditor).unwrap();
        assert_eq!(bob.scope, Scope::accounts(["acc-bob".to_owned()]));
        assert!(tokens.authorize(Some("a"), Role::Auditor).unwrap().scope.is_all());
        let publisher = Tokens::from_entries([entry("p", Role::Publisher, "rt").with_accounts(["acc-bob"])]);
        assert_eq!(
            publisher.unwrap_err(),
            "token `rt` (entry 1) has role `publisher`: only auditor tokens take `accounts`"
        );
        let empty = Tokens::from_entries([entry("b", Role::Auditor, "bob").with_accounts(Vec::<String>::new())]);
        assert!(empty.unwrap_err().contains("empty `accounts`: leave it out"));
        for bad in ["", "acc:bob", "acc bob", &"a".repeat(129)] {
            let refused = Tokens::from_entries([entry("b", Role::Auditor, "bob").with_accounts([bad])]);
            assert!(refused.unwrap_err().contains("in `accounts`: an account must be"), "{bad}");
        }
    }

    #[test]
    fn authorizes_by_role() {
        let tokens =
            Tokens::from_entries([entry("p", Role::Publisher, "runtime"), entry("a", Role::Auditor, "alice")]).unwrap();
        assert_eq!(tokens.authorize(Some("p"), Role::Publisher).unwrap().name, "runtime");
        assert!(matches!(tokens.authorize(None, Role::Publisher), Err(Error::Unauthenticated)));
        assert!(matches!(tokens.authorize(Some("nope"), Role::Publisher), Err(Error::Unauthenticated)));
        let denied = tokens.authorize(Some("a"), Role::Admin).unwrap_err().to_string();
        assert_eq!(denied, "token `alice` has role `auditor`, this service needs role `admin`");
    }

    #[test]
    fn rejects_bad_entries() {
        let repeated = Tokens::from_entries([entry("x", Role::Admin, "a"), entry("x", Role::Auditor, "b")]);
        assert!(repeated.unwrap_err().contains("token `b` (entry 2) repeats"));
        assert!(Tokens::from_entries([entry("", Role::Admin, "a")]).unwrap_err().contains("empty `token`"));
        assert!(Tokens::from_entries([entry("x", Role::Admin, " ")]).unwrap_err().contains("empty `name`"));
        assert!(Tokens::from_entries([entry("x", Role::Publisher, "a@cert:b")]).unwrap_err().contains("reserved"));
    }

    #[test]
    fn loads_files_and_names_the_bad_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens.toml");
        std::fs::write(&path, "[[token]]\ntoken = \"s3cret\"\nrole = \"auditor\"\nname = \"alice\"\n").unwrap();
        let tokens = Tokens::load(&path).unwrap();
        assert_eq!(tokens.len(), 1);

        std::fs::write(&path, "[[token]]\ntoken = \"s3cret\"\nrole = \"root\"\nname = \"alice\"\n").unwrap();
        let message = Tokens::load(&path).unwrap_err().to_string();
        assert!(message.contains("line 3"), "{message}");
        assert!(!message.contains("s3cret"), "{message}");
        let debug = format!("{:?}", entry("s3cret", Role::Admin, "a"));
        assert!(!debug.contains("s3cret"), "{debug}");

        std::fs::write(
            &path,
            "[[token]]\ntoken = \"s3cret\"\nrole = \"publisher\"\nname = \"rt\"\nlocations = [\"us-east\", \"eu-de\"]\n",
        )
        .unwrap();
        let publisher = Tokens::load(&path).unwrap().authorize(Some("s3cret"), Role::Publisher).unwrap();
        assert_eq!(publisher.locations, vec![location("us-east"), location("eu-de")]);
        std::fs::write(
            &path,
            "[[token]]\ntoken = \"s3cret\"\nrole = \"publisher\"\nname = \"rt\"\nlocations = [\"US\"]\n",
        )
        .unwrap();
        let message = Tokens::load(&path).unwrap_err().to_string();
        assert!(message.contains("line 5"), "{message}");
        std::fs::write(
            &path,
            "[[token]]\ntoken = \"s3cret\"\nrole = \"auditor\"\nname = \"bob\"\naccounts = [\"acc-bob\"]\n",
        )
        .unwrap();
        let bob = Tokens::load(&path).unwrap().authorize(Some("s3cret"), Role::Auditor).unwrap();
        assert_eq!(bob.scope.listed(), Some(&["acc-bob".to_owned()][..]));
        std::fs::write(&path, "[[token]]\ntoken = \"s3cret\"\nrole = \"auditor\"\nname = \"alice\"\n").unwrap();
        let tokens = Tokens::load(&path).unwrap();
        let debug = format!("{tokens:?}");
        assert!(debug.contains("alice") && !debug.contains("s3cret"), "{debug}");
    }
}
