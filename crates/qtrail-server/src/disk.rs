//! Disk headroom of a data directory's file system, for the services' metrics: a full disk is
//! the one way a durable audit trail stops taking events (the runtime then refuses calls), so
//! operators alert well before it (G10: at 80 %).

use std::path::Path;

/// Space of the file system holding a path, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Space {
    /// Bytes an unprivileged process may still write.
    pub free: u64,
    /// Size of the file system.
    pub size: u64,
}

/// Returns the space of the file system holding `path`, `None` when it cannot be read.
pub fn space(path: &Path) -> Option<Space> {
    let stats = nix::sys::statvfs::statvfs(path).ok()?;
    let block = stats.fragment_size();
    Some(Space { free: stats.blocks_available().saturating_mul(block), size: stats.blocks().saturating_mul(block) })
}

/// Records the space of the file system holding `path` as the gauges
/// `<prefix>_disk_free_bytes` and `<prefix>_disk_size_bytes`, with `labels`.
pub fn record(prefix: &str, path: &Path, labels: &[(&'static str, String)]) {
    let Some(space) = space(path) else {
        return;
    };
    let labels: Vec<metrics::Label> =
        labels.iter().map(|(key, value)| metrics::Label::new(*key, value.clone())).collect();
    metrics::gauge!(format!("{prefix}_disk_free_bytes"), labels.clone()).set(space.free as f64);
    metrics::gauge!(format!("{prefix}_disk_size_bytes"), labels).set(space.size as f64);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_space_of_a_directory() {
        let dir = tempfile::tempdir().unwrap();
        let space = space(dir.path()).unwrap();
        assert!(space.size > 0 && space.free <= space.size, "{space:?}");
        assert_eq!(self::space(&dir.path().join("missing")), None);
    }
}
