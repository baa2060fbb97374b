//! Signed-out console sessions: the ids of session cookies that are still signed and unexpired
//! but were signed out, kept until they expire.
//!
//! The list is this collector's own: bounded in memory ([`MAX_REVOKED`]; past it, expired ids
//! go first, then the one that expires soonest) and kept in `<data-dir>/console-revoked` (one
//! `hex-id expiry` line each, rewritten atomically), so that a sign-out survives a restart. A
//! replica that does not share the data directory still accepts the cookie until it expires;
//! the browser has forgotten it all the same.

use std::collections::HashMap;
use std::io;
use std::path::PathBuf;
use std::sync::{Mutex, PoisonError};

use tracing::warn;

use super::key::write_atomically;

/// Most signed-out sessions remembered at once.
pub(crate) const MAX_REVOKED: usize = 10_000;

/// Name of the list's file in the data directory.
pub(crate) const FILE: &str = "console-revoked";

/// A session id, as signed into its cookie.
pub(crate) type SessionId = [u8; 16];

/// The signed-out sessions, by id, with when each expires (unix seconds).
#[derive(Debug)]
pub(crate) struct Revocations {
    path: Option<PathBuf>,
    by_id: Mutex<HashMap<SessionId, u64>>,
}

impl Revocations {
    /// Returns the list kept in `path` (read if it exists; lines that do not parse or have
    /// expired by `now` are dropped), or an in-memory list without a path.
    pub(crate) fn load(path: Option<PathBuf>, now: u64) -> io::Result<Self> {
        let mut by_id = HashMap::new();
        if let Some(path) = &path {
            match std::fs::read_to_string(path) {
                Ok(text) => {
                    for line in text.lines() {
                        match parse(line) {
                            Some((id, expires)) if expires > now => {
                                by_id.insert(id, expires);
                            }
                            Some(_) => {}
                            None => {
                                warn!(path = %path.display(), "skipping an unreadable line of the revoked sessions")
                            }
                        }
                    }
                }
                Err(err) if err.kind() == io::ErrorKind::NotFound => {}
                Err(err) => return Err(err),
            }
        }
        Ok(Self { path, by_id: Mutex::new(by_id) })
    }

    /// Returns whether session `id` was signed out.
    pub(crate) fn contains(&self, id: &SessionId) -> bool {
        self.by_id.lock().unwrap_or_else(PoisonError::into_inner).contains_key(id)
    }

    /// Signs session `id`, which expires at `expires`, out for good, durably when the list has
    /// a file. Blocking: call it off the async workers.
    pub(crate) fn revoke(&self, id: SessionId, expires: u64, now: u64) -> io::Result<()> {
        let text = {
            let mut by_id = self.by_id.lock().unwrap_or_else(PoisonError::into_inner);
            by_id.retain(|_, expiry| *expiry > now);
            if by_id.len() >= MAX_REVOKED {
                let soonest = by_id.iter().min_by_key(|(_, expiry)| **expiry).map(|(id, _)| *id);
                if let Some(soonest) = soonest {
                    by_id.remove(&soonest);
                }
            }
            by_id.insert(id, expires);
            by_id.iter().map(|(id, expiry)| format!("{} {expiry}\n", hex::encode(id))).collect::<String>()
        };
        match &self.path {
            Some(path) => write_atomically(path, text.as_bytes()),
            None => Ok(()),
        }
    }
}

fn parse(line: &str) -> Option<(SessionId, u64)> {
    let (id, expires) = line.split_once(' ')?;
    let id = hex::decode(id).ok()?.try_into().ok()?;
    Some((id, expires.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_outs_survive_a_reload_until_they_expire() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE);
        let revocations = Revocations::load(Some(path.clone()), 100).unwrap();
        revocations.revoke([1; 16], 200, 100).unwrap();
        revocations.revoke([2; 16], 150, 100).unwrap();
        assert!(revocations.contains(&[1; 16]) && !revocations.contains(&[3; 16]));
        std::fs::write(&path, format!("{}garbage\n", std::fs::read_to_string(&path).unwrap())).unwrap();
        let reloaded = Revocations::load(Some(path.clone()), 160).unwrap();
        assert!(reloaded.contains(&[1; 16]), "a restart keeps the sign-out");
        assert!(!reloaded.contains(&[2; 16]), "an expired one is dropped");
    }
}
