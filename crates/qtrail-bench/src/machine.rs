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

/// `/proc` counts in USER_HZ ticks, 100 per second on every Linux ABI.
const TICKS_PER_SECOND: f64 = 100.0;

/// Returns the fields of `/proc/<pid>/stat` after the command name (so field 3, the state,
/// is at 0), if it can be read.
fn stat_fields(pid: u32) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces: count after it.
    Some(stat.rsplit_once(')')?.1.split_whitespace().map(str::to_owned).collect())
}

/// Returns the sum of `fields` (indexes after the command name) in seconds.
fn ticks(fields: &[String], indexes: &[usize]) -> Option<f64> {
    let mut sum = 0.0;
    for &index in indexes {
        sum += fields.get(index)?.parse::<f64>().ok()?;
    }
    Some(sum / TICKS_PER_SECOND)
}

/// Returns the CPU time process `pid` has used so far, all threads, user and system, in
/// seconds, if it can be read.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    // utime and stime are fields 14 and 15 of the line, so 11 and 12 after the name.
    ticks(&stat_fields(pid)?, &[11, 12])
}

/// Returns the CPU time of a server made of processes, in seconds: `pid`, its children alive
/// now, and the children it has reaped (its `cutime` and `cstime`), as PostgreSQL's postmaster
/// and its backends; `None` when `pid` cannot be read.
pub fn process_tree_cpu_seconds(pid: u32) -> Option<f64> {
    let fields = stat_fields(pid)?;
    // utime, stime, cutime, cstime: fields 14 to 17.
    let own = ticks(&fields, &[11, 12, 13, 14])?;
    let children: f64 = child_pids(pid).into_iter().filter_map(cpu_seconds).sum();
    Some(own + children)
}

/// Returns the ids of the processes whose parent is `pid`.
pub fn child_pids(pid: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        // The parent id is field 4, so 1 after the name.
        .filter(|&child| stat_fields(child).and_then(|fields| fields.get(1)?.parse::<u32>().ok()) == Some(pid))
        .collect()
}

/// Returns the one-minute load average, if it can be read.
pub fn load_average() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg").ok()?.split_whitespace().next()?.parse().ok()
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

    #[test]
    fn a_process_tree_counts_its_children() {
        let mut child = std::process::Command::new("sleep").arg("5").spawn().unwrap();
        let me = std::process::id();
        assert!(child_pids(me).contains(&child.id()));
        let own = cpu_seconds(me).unwrap();
        assert!(process_tree_cpu_seconds(me).unwrap() >= own);
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(!child_pids(me).contains(&child.id()));
        assert!(load_average().unwrap() >= 0.0);
    }
}
