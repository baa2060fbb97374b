//! The witness's memory: the newest checkpoint it cosigned of every log (origin → size, root,
//! note), in one JSON file written durably (a synced temporary file renamed over the old one,
//! then the directory synced), so that a restart — or a crash between two writes — never
//! forgets a size it cosigned and so never cosigns a rollback.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde::{Deserialize, Serialize};

/// The file name of the state in the witness directory.
const STATE_FILE: &str = "witness-state.json";

/// What the witness holds of one log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct LogHead {
    /// The size of the newest checkpoint cosigned.
    pub(crate) size: u64,
    /// Its root hash, base64.
    pub(crate) root: String,
    /// The note as submitted, kept as evidence.
    pub(crate) note: String,
}

impl LogHead {
    /// Returns the root hash; `None` when the file holds something else.
    pub(crate) fn root_hash(&self) -> Option<qtrail_tlog::Hash> {
        BASE64.decode(&self.root).ok().and_then(|root| root.try_into().ok())
    }
}

/// The newest cosigned checkpoint of every log, and where it is kept.
#[derive(Debug)]
pub(crate) struct State {
    path: PathBuf,
    logs: BTreeMap<String, LogHead>,
}

impl State {
    /// Opens the state in `dir` (created if missing); an absent file is an empty state.
    ///
    /// # Errors
    /// When the directory cannot be created, or the file cannot be read or parsed.
    pub(crate) fn open(dir: &Path) -> anyhow::Result<Self> {
        use anyhow::Context as _;
        std::fs::create_dir_all(dir).with_context(|| format!("failed to create {}", dir.display()))?;
        let path = dir.join(STATE_FILE);
        let logs = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .with_context(|| format!("the witness state {} is damaged", path.display()))?,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(err) => return Err(err).with_context(|| format!("failed to read {}", path.display())),
        };
        Ok(Self { path, logs })
    }

    /// Returns what is held of `origin`.
    pub(crate) fn get(&self, origin: &str) -> Option<&LogHead> {
        self.logs.get(origin)
    }

    /// Records `head` as the newest of `origin`, durably, before returning; on failure the
    /// state in memory is left as it was.
    ///
    /// # Errors
    /// When the file cannot be written and synced.
    pub(crate) fn put(&mut self, origin: &str, head: LogHead) -> std::io::Result<()> {
        let mut next = self.logs.clone();
        next.insert(origin.to_owned(), head);
        let bytes = serde_json::to_vec_pretty(&next).map_err(std::io::Error::other)?;
        let temporary = self.path.with_extension("json.tmp");
        let mut file = std::fs::File::create(&temporary)?;
        file.write_all(&bytes)?;
        file.sync_all()?;
        std::fs::rename(&temporary, &self.path)?;
        if let Some(dir) = self.path.parent() {
            std::fs::File::open(dir)?.sync_all()?;
        }
        self.logs = next;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_recorded_head_survives_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let mut state = State::open(dir.path()).unwrap();
        assert_eq!(state.get("a/b"), None);
        let head = LogHead { size: 3, root: BASE64.encode([7u8; 32]), note: "n".into() };
        state.put("a/b", head.clone()).unwrap();
        let reopened = State::open(dir.path()).unwrap();
        assert_eq!(reopened.get("a/b"), Some(&head));
        assert_eq!(reopened.get("a/b").unwrap().root_hash(), Some([7u8; 32]));
    }

    #[test]
    fn a_damaged_file_stops_the_witness() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(STATE_FILE), "{not json").unwrap();
        assert!(State::open(dir.path()).unwrap_err().to_string().contains("damaged"));
    }
}
