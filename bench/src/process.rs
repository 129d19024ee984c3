//! What a measured process (the service, a RabbitMQ node) has used, from `/proc`.

/// A memory figure of the service from `/proc/<pid>/status` (`VmHWM`, `VmRSS`), in MiB.
pub(crate) fn memory_mb(pid: u32, field: &str) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

/// The service's peak resident memory so far, in MiB.
pub(crate) fn peak_rss_mb(pid: u32) -> f64 {
    memory_mb(pid, "VmHWM:")
}

/// CPU seconds a process has used so far (user and system), from `/proc/<pid>/stat`.
fn cpu_seconds(pid: u32) -> f64 {
    let ticks = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            // The fields after the command name, which is in parentheses.
            let rest = s.rsplit_once(')')?.1;
            let fields: Vec<&str> = rest.split_whitespace().collect();
            let user: f64 = fields.get(11)?.parse().ok()?;
            let system: f64 = fields.get(12)?.parse().ok()?;
            Some(user + system)
        })
        .unwrap_or(0.0);
    // Linux reports in USER_HZ, which is 100 on every architecture hookrelay builds for.
    ticks / 100.0
}

pub(crate) fn cpu_of(pids: &[u32]) -> f64 {
    pids.iter().map(|p| cpu_seconds(*p)).sum()
}

/// Bytes a process has caused to be written to storage so far (`write_bytes` of
/// `/proc/<pid>/io`: what reached the block layer, not what it merely wrote to a file).
fn written_bytes(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/io"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("write_bytes:"))
                .and_then(|v| v.trim().parse().ok())
        })
        .unwrap_or(0)
}

pub(crate) fn written_by(pids: &[u32]) -> u64 {
    pids.iter().map(|p| written_bytes(*p)).sum()
}

/// CPU seconds of each of `pids` so far, to tell later what each used since.
pub(crate) fn cpu_each(pids: &[u32]) -> std::collections::HashMap<u32, f64> {
    pids.iter().map(|p| (*p, cpu_seconds(*p))).collect()
}

/// CPU seconds `pids` used since `before` (a process not in it started since: all of its).
pub(crate) fn cpu_since(pids: &[u32], before: &std::collections::HashMap<u32, f64>) -> f64 {
    pids.iter()
        .map(|p| cpu_seconds(*p) - before.get(p).copied().unwrap_or(0.0))
        .sum()
}
