//! The console's session key: the HMAC-SHA256 key that signs session cookies, so that any
//! collector holding it (every replica of a location, or one collector after a restart)
//! accepts the sessions another signed.
//!
//! It comes from `--console-session-key-file` (the same file on every replica) or, without it,
//! from `<data-dir>/console-session.key`, generated once (32 random bytes, base64, mode 0600,
//! written atomically). A key is at least [`MIN_KEY_BYTES`]; a file holds it in base64 (standard
//! or URL-safe) or raw. The key never reaches a log line or an error message.

use std::fs::{File, OpenOptions};
use std::io::{self, Write as _};
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE, URL_SAFE_NO_PAD};

/// Fewest bytes of key: 256 bits, HMAC-SHA256's own strength.
pub(crate) const MIN_KEY_BYTES: usize = 32;

/// Name of the generated key file in the data directory.
pub(crate) const GENERATED_FILE: &str = "console-session.key";

/// Why the session key is unusable.
#[derive(Debug, thiserror::Error)]
pub(crate) enum KeyError {
    #[error("cannot read or write console session key file {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("console session key file {path} holds {bytes} bytes of key: at least {MIN_KEY_BYTES} are needed")]
    Short { path: PathBuf, bytes: usize },
}

/// Returns the key of `file`, or without one the key generated into `data_dir`.
pub(crate) fn load_or_generate(file: Option<&Path>, data_dir: &Path) -> Result<Vec<u8>, KeyError> {
    if let Some(file) = file {
        return load(file);
    }
    let path = data_dir.join(GENERATED_FILE);
    match load(&path) {
        Err(KeyError::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
            let key: [u8; MIN_KEY_BYTES] = rand::random();
            let text = format!("{}\n", STANDARD.encode(key));
            write_atomically(&path, text.as_bytes()).map_err(|source| KeyError::Io { path: path.clone(), source })?;
            Ok(key.to_vec())
        }
        loaded => loaded,
    }
}

/// Reads a key file: base64 text if it decodes to a long enough key, else the raw bytes.
fn load(path: &Path) -> Result<Vec<u8>, KeyError> {
    let bytes = std::fs::read(path).map_err(|source| KeyError::Io { path: path.to_owned(), source })?;
    let text = std::str::from_utf8(&bytes).map(str::trim).unwrap_or_default();
    let decoded = [STANDARD, URL_SAFE]
        .iter()
        .find_map(|engine| engine.decode(text).ok())
        .or_else(|| URL_SAFE_NO_PAD.decode(text).ok())
        .filter(|key| key.len() >= MIN_KEY_BYTES);
    let key = decoded.unwrap_or(bytes);
    if key.len() < MIN_KEY_BYTES {
        return Err(KeyError::Short { path: path.to_owned(), bytes: key.len() });
    }
    Ok(key)
}

/// Writes `bytes` to `path` so that it holds either nothing or all of them, readable by the
/// owner alone (the key, and the revocation list beside it).
pub(crate) fn write_atomically(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut temporary = path.as_os_str().to_owned();
    temporary.push(".tmp");
    let temporary = PathBuf::from(temporary);
    // A leftover keeps its owner and mode when opened: create the file anew with O_EXCL.
    match std::fs::remove_file(&temporary) {
        Err(err) if err.kind() != io::ErrorKind::NotFound => return Err(err),
        _ => {}
    }
    let mut file = OpenOptions::new().write(true).create_new(true).mode(0o600).open(&temporary)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    drop(file);
    std::fs::rename(&temporary, path)?;
    File::open(path.parent().unwrap_or(Path::new(".")))?.sync_all()
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    #[test]
    fn a_generated_key_is_private_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let key = load_or_generate(None, dir.path()).unwrap();
        assert_eq!(key.len(), MIN_KEY_BYTES);
        let path = dir.path().join(GENERATED_FILE);
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(load_or_generate(None, dir.path()).unwrap(), key, "a restart reads the same key");
    }

    #[test]
    fn key_files_hold_base64_or_raw_and_short_ones_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key");
        std::fs::write(&path, format!("{}\n", STANDARD.encode([7u8; 40]))).unwrap();
        assert_eq!(load_or_generate(Some(&path), dir.path()).unwrap(), [7u8; 40]);
        std::fs::write(&path, [0xffu8; 32]).unwrap();
        assert_eq!(load_or_generate(Some(&path), dir.path()).unwrap(), [0xffu8; 32]);
        std::fs::write(&path, STANDARD.encode([1u8; 16])).unwrap();
        let err = load_or_generate(Some(&path), dir.path()).unwrap_err().to_string();
        assert!(err.contains("holds 24 bytes of key: at least 32 are needed"), "{err}");
        assert!(!dir.path().join(GENERATED_FILE).exists(), "a key file given is never replaced");
    }
}
