//! # The process: CPU, memory and memory maps, read from `/proc/self` at scrape time
//!
//! - `strata_process_cpu_seconds_total`: user and system CPU time.
//! - `strata_process_resident_memory_bytes`: resident set size.
//! - `strata_process_memory_maps`: open memory maps (segment indexes and logs are mapped;
//!   the kernel's `vm.max_map_count` bounds them).
//!
//! On a system without `/proc` the series are left out rather than reported as zero.

use std::sync::atomic::AtomicI64;

use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// What `/proc/self` said.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProcessStats {
    pub cpu_seconds: f64,
    pub resident_bytes: u64,
    pub memory_maps: u64,
}

/// CPU seconds from `/proc/self/stat`'s text: fields 14 and 15 (utime, stime), in clock ticks
/// of `ticks_per_second`. The command name (field 2) may hold spaces and parentheses, so the
/// fields are counted from the last `)`.
pub fn cpu_seconds(stat: &str, ticks_per_second: u64) -> Option<f64> {
    let after_name = &stat[stat.rfind(')')? + 1..];
    let mut fields = after_name.split_whitespace();
    // After the name come field 3 (state) onwards: utime is field 14, the 12th from here.
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some((utime + stime) as f64 / ticks_per_second.max(1) as f64)
}

/// Resident bytes from `/proc/self/statm`'s text (its second field, in pages).
pub fn resident_bytes(statm: &str, page_bytes: u64) -> Option<u64> {
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * page_bytes)
}

/// Reads the process's figures now; `None` without `/proc`.
pub fn read() -> Option<ProcessStats> {
    // SAFETY: sysconf only reads a system constant.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    // SAFETY: as above.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let maps = std::fs::read("/proc/self/maps").ok()?;
    Some(ProcessStats {
        cpu_seconds: cpu_seconds(&stat, u64::try_from(ticks).unwrap_or(100))?,
        resident_bytes: resident_bytes(&statm, u64::try_from(page).unwrap_or(4096))?,
        memory_maps: maps.iter().filter(|byte| **byte == b'\n').count() as u64,
    })
}

/// Registers the process series (see the module doc) with their values now.
pub fn scrape(registry: &mut Registry) {
    let Some(stats) = read() else {
        return;
    };
    registry.register(
        "process_cpu_seconds",
        "User and system CPU time of the node's process",
        ConstCounter::new(stats.cpu_seconds),
    );
    let resident: Gauge<i64, AtomicI64> = Gauge::default();
    resident.set(i64::try_from(stats.resident_bytes).unwrap_or(i64::MAX));
    registry.register(
        "process_resident_memory_bytes",
        "Resident memory of the node's process",
        resident,
    );
    let maps: Gauge<i64, AtomicI64> = Gauge::default();
    maps.set(i64::try_from(stats.memory_maps).unwrap_or(i64::MAX));
    registry.register(
        "process_memory_maps",
        "Memory maps the node's process holds",
        maps,
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    /// CPU time is utime plus stime, counted after the command name even when the name holds
    /// spaces and parentheses.
    #[test]
    fn cpu_seconds_are_read_after_the_command_name() {
        let stat = "42 (strata (x) y) S 1 42 42 0 -1 4194560 100 0 0 0 250 150 0 0 20 0 9 0 5 0";
        assert_eq!(cpu_seconds(stat, 100), Some(4.0));
        assert_eq!(cpu_seconds("garbage", 100), None);
        assert_eq!(resident_bytes("1000 25 3 1 0 10 0", 4096), Some(25 * 4096));
    }

    /// On Linux the figures of the test process itself are there and plausible.
    #[test]
    fn the_process_reads_itself() {
        let stats = read().expect("/proc/self is readable on Linux");
        assert!(stats.resident_bytes > 0, "{stats:?}");
        assert!(stats.memory_maps > 0, "{stats:?}");
    }
}
