//! What the numbers were measured on: cores, CPU model, kernel, and the commit.

use serde::Serialize;

/// The machine a run measured.
#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    /// Logical cores available to this process.
    pub cores: usize,
    /// CPU model name from `/proc/cpuinfo`.
    pub cpu: String,
    /// Kernel release.
    pub kernel: String,
    /// Memory in GiB from `/proc/meminfo`.
    pub memory_gib: f64,
}

impl Machine {
    /// Returns what this machine says about itself; unknown parts are empty.
    pub fn detect() -> Self {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu = cpuinfo
            .lines()
            .find_map(|line| line.strip_prefix("model name").and_then(|rest| rest.split_once(':')))
            .map(|(_, model)| model.trim().to_owned())
            .unwrap_or_default();
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim().to_owned();
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let memory_kib = meminfo
            .lines()
            .find_map(|line| line.strip_prefix("MemTotal:"))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|kib| kib.parse::<f64>().ok())
            .unwrap_or(0.0);
        Self {
            cores: std::thread::available_parallelism().map_or(0, usize::from),
            cpu,
            kernel,
            memory_gib: (memory_kib / (1024.0 * 1024.0) * 10.0).round() / 10.0,
        }
    }
}

/// Returns the work tree's commit (`git describe --always --dirty`), or `unknown`.
pub fn commit() -> String {
    std::process::Command::new("git")
        .args(["describe", "--always", "--dirty", "--abbrev=12"])
        .output()
        .ok()
        .filter(|output| output.status.success())
        .and_then(|output| String::from_utf8(output.stdout).ok())
        .map(|text| text.trim().to_owned())
        .filter(|text| !text.is_empty())
        .unwrap_or_else(|| "unknown".to_owned())
}

/// Returns the peak resident set (`VmHWM`) of process `pid` in MiB, if it can be read.
pub fn peak_rss_mib(pid: u32) -> Option<f64> {
    proc_status_kib(pid, "VmHWM:").map(|kib| kib / 1024.0)
}

/// Returns the current resident set (`VmRSS`) of process `pid` in MiB, if it can be read.
pub fn rss_mib(pid: u32) -> Option<f64> {
    proc_status_kib(pid, "VmRSS:").map(|kib| kib / 1024.0)
}

/// Returns the CPU time process `pid` has used so far, all threads, user and system, in
/// seconds, if it can be read.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    /// `/proc` counts in USER_HZ ticks, 100 per second on every Linux ABI.
    const TICKS_PER_SECOND: f64 = 100.0;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces: count after it.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line, so 12 and 13 after the name.
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    Some(ticks / TICKS_PER_SECOND)
}

fn proc_status_kib(pid: u32, field: &str) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix(field))
        .and_then(|rest| rest.split_whitespace().next())?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_has_a_peak_rss_at_least_its_rss() {
        let pid = std::process::id();
        // The current size first: read after the peak, it could have grown past it.
        let now = rss_mib(pid).unwrap();
        let peak = peak_rss_mib(pid).unwrap();
        assert!(peak >= now && now > 0.0, "peak {peak} now {now}");
        assert!(Machine::detect().cores >= 1);
    }
}
