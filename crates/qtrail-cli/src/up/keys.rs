//! The keys `qtrail up` keeps in its data directory (mode 0600, made on first run and reused):
//! the collector's checkpoint key, with its public half beside it for `events verify
//! --public-key`, and the key of the witness it runs.

use std::path::{Path, PathBuf};

use qtrail_cadf::checkpoint::SigningKey;

use super::write_private;
use crate::error::CliError;

/// File of the collector's checkpoint key in the data directory; the public key is beside it.
const CHECKPOINT_KEY: &str = "checkpoint-key.pem";

/// File of the checkpoint key's public half, for `qtrail events verify --public-key`.
pub(super) const CHECKPOINT_PUBLIC_KEY: &str = "checkpoint-key.pub.pem";

/// Returns the checkpoint key file of `dir`, writing a new key (and its public half) first if
/// there is none. A dev key beside the data it protects proves little against someone who can
/// write that directory; a real collector keeps its key elsewhere (see docs/collector.md).
pub(super) fn checkpoint_key(dir: &Path) -> Result<(PathBuf, [u8; 32]), CliError> {
    let private = dir.join(CHECKPOINT_KEY);
    let pem = if private.exists() {
        std::fs::read(&private).map_err(|source| CliError::File { path: private.display().to_string(), source })?
    } else {
        let pem = SigningKey::generate_pem().map_err(|err| CliError::Usage(err.to_string()))?;
        write_private(&private, pem.as_bytes())?;
        pem.into_bytes()
    };
    let key = SigningKey::from_pem(&pem).map_err(|err| CliError::Usage(format!("{}: {err}", private.display())))?;
    let public = dir.join(CHECKPOINT_PUBLIC_KEY);
    std::fs::write(&public, key.public_pem())
        .map_err(|source| CliError::File { path: public.display().to_string(), source })?;
    Ok((private, key.public_key()))
}

/// File of the witness key in the data directory.
const WITNESS_KEY: &str = "witness-key.pem";

/// Returns the witness key of `dir`, writing a new one first if there is none.
pub(super) fn witness_key(dir: &Path) -> Result<SigningKey, CliError> {
    let path = dir.join(WITNESS_KEY);
    let pem = if path.exists() {
        std::fs::read(&path).map_err(|source| CliError::File { path: path.display().to_string(), source })?
    } else {
        let pem = SigningKey::generate_pem().map_err(|err| CliError::Usage(err.to_string()))?;
        write_private(&path, pem.as_bytes())?;
        pem.into_bytes()
    };
    SigningKey::from_pem(&pem).map_err(|err| CliError::Usage(format!("{}: {err}", path.display())))
}
