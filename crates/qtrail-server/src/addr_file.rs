//! The address file: where a server tells whoever started it which address it bound.
//!
//! Servers started with `--listen 127.0.0.1:0` get an ephemeral port; the parent (a test harness,
//! `qtrail up`) passes `--addr-file F` and polls for F. The file is written to a temporary name
//! and renamed into place, so a reader sees either nothing or the whole address, never a part.

use std::io;
use std::net::SocketAddr;
use std::path::Path;

/// Writes `addr` (as `127.0.0.1:PORT`, no newline) to `path` atomically.
///
/// # Errors
/// Any I/O error writing the temporary file or renaming it.
pub fn write(path: &Path, addr: SocketAddr) -> io::Result<()> {
    let mut temporary = path.as_os_str().to_owned();
    temporary.push(".tmp");
    std::fs::write(&temporary, addr.to_string())?;
    std::fs::rename(&temporary, path)
}

/// Reads an address file written by [`write`]; `Ok(None)` while it does not exist yet.
///
/// # Errors
/// I/O errors other than not-found, and content that is not a socket address.
pub fn read(path: &Path) -> io::Result<Option<SocketAddr>> {
    match std::fs::read_to_string(path) {
        Ok(text) => text
            .trim()
            .parse()
            .map(Some)
            .map_err(|err| io::Error::new(io::ErrorKind::InvalidData, format!("bad address file: {err}"))),
        Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(err) => Err(err),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_and_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("addr");
        assert_eq!(read(&path).unwrap(), None);
        let addr: SocketAddr = "127.0.0.1:4567".parse().unwrap();
        write(&path, addr).unwrap();
        assert_eq!(read(&path).unwrap(), Some(addr));
        assert!(!dir.path().join("addr.tmp").exists());
        std::fs::write(&path, "garbage").unwrap();
        assert_eq!(read(&path).unwrap_err().kind(), io::ErrorKind::InvalidData);
    }
}
