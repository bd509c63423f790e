//! What `/proc` says about a process: CPU time and memory.

use std::io;

/// Clock ticks per second of `/proc/PID/stat` (USER_HZ).
fn clk_tck() -> f64 {
    match nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK) {
        Ok(Some(n)) if n > 0 => n as f64,
        _ => 100.0,
    }
}

/// User + system CPU time of process `pid` (all its threads) in seconds,
/// from fields 14 and 15 of `/proc/PID/stat`.
pub fn cpu_seconds(pid: u32) -> io::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    parse_cpu_ticks(&stat)
        .map(|ticks| ticks as f64 / clk_tck())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "unreadable /proc/PID/stat"))
}

/// [`cpu_seconds`] of `pid` plus its direct children (a server that
/// forks workers, such as Kamailio).
pub fn family_cpu_seconds(pid: u32) -> io::Result<f64> {
    let mut total = cpu_seconds(pid)?;
    for entry in std::fs::read_dir("/proc")?.flatten() {
        let Some(child) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{child}/stat")) else {
            continue;
        };
        if parse_ppid(&stat) == Some(pid) {
            total += parse_cpu_ticks(&stat).map_or(0.0, |t| t as f64 / clk_tck());
        }
    }
    Ok(total)
}

/// Field 4 (ppid), counted after the command name's last `)`.
fn parse_ppid(stat: &str) -> Option<u32> {
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(1)?.parse().ok()
}

/// utime + stime in ticks. The command name (field 2) may hold spaces and
/// parentheses, so fields are counted after its last `)`.
fn parse_cpu_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state): utime is field 14, stime field 15.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// CPU-seconds the whole machine spent busy (all CPUs: user, nice, system,
/// irq, softirq, steal), from the first line of `/proc/stat`.
pub fn machine_busy_seconds() -> io::Result<f64> {
    let stat = std::fs::read_to_string("/proc/stat")?;
    parse_machine_busy(&stat)
        .map(|ticks| ticks as f64 / clk_tck())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "unreadable /proc/stat"))
}

fn parse_machine_busy(stat: &str) -> Option<u64> {
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|f| f.parse().ok())
        .collect::<Option<_>>()?;
    // user nice system idle iowait irq softirq steal …
    let at = |i: usize| v.get(i).copied().unwrap_or(0);
    Some(at(0) + at(1) + at(2) + at(5) + at(6) + at(7))
}

/// CPU-seconds of this process's children that have been waited for
/// (cutime + cstime, fields 16 and 17 of `/proc/self/stat`).
pub fn reaped_children_seconds() -> io::Result<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat")?;
    let rest = &stat[stat.rfind(')').map_or(0, |i| i + 1)..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let get = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok());
    match (get(13), get(14)) {
        (Some(u), Some(s)) => Ok((u + s) as f64 / clk_tck()),
        _ => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "unreadable /proc/self/stat",
        )),
    }
}

/// UDP datagrams dropped because a socket's receive buffer was full, on the
/// whole machine (`RcvbufErrors` of `/proc/net/snmp`).
pub fn udp_rcvbuf_errors() -> io::Result<u64> {
    let snmp = std::fs::read_to_string("/proc/net/snmp")?;
    parse_snmp(&snmp, "Udp:", "RcvbufErrors")
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "no Udp RcvbufErrors"))
}

fn parse_snmp(snmp: &str, table: &str, field: &str) -> Option<u64> {
    let mut lines = snmp.lines().filter(|l| l.starts_with(table));
    let names = lines.next()?;
    let values = lines.next()?;
    let i = names.split_whitespace().position(|n| n == field)?;
    values.split_whitespace().nth(i)?.parse().ok()
}

/// A `kB` field of `/proc/PID/status`, e.g. `VmRSS` or `VmHWM`.
pub fn status_kb(pid: u32, field: &str) -> io::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    parse_status_kb(&status, field)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, format!("no {field} in status")))
}

fn parse_status_kb(status: &str, field: &str) -> Option<u64> {
    status.lines().find_map(|l| {
        let v = l.strip_prefix(field)?.strip_prefix(':')?;
        v.split_whitespace().next()?.parse().ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parent_of_a_tricky_name() {
        assert_eq!(parse_ppid("42 (a) b) S 7 42 42 0"), Some(7));
        assert!(family_cpu_seconds(std::process::id()).is_ok());
    }

    #[test]
    fn stat_fields_after_a_tricky_name() {
        let stat = "42 (a) b (c) S 1 42 42 0 -1 4194560 100 0 0 0 7 5 0 0 20 0 1 0 1 2 3";
        assert_eq!(parse_cpu_ticks(stat), Some(12));
        assert_eq!(parse_cpu_ticks("garbage"), None);
    }

    #[test]
    fn status_kb_field() {
        let s = "Name:\tx\nVmHWM:\t   19648 kB\nVmRSS:\t  1234 kB\n";
        assert_eq!(parse_status_kb(s, "VmHWM"), Some(19648));
        assert_eq!(parse_status_kb(s, "VmRSS"), Some(1234));
        assert_eq!(parse_status_kb(s, "VmSwap"), None);
    }

    #[test]
    fn machine_and_snmp_counters() {
        let stat = "cpu  10 1 5 100 7 2 3 4 0 0\ncpu0 1 1 1 1 1 1 1 1 0 0\n";
        assert_eq!(parse_machine_busy(stat), Some(25));
        let snmp = "Udp: InDatagrams NoPorts InErrors OutDatagrams RcvbufErrors\nUdp: 1 2 3 4 5\n";
        assert_eq!(parse_snmp(snmp, "Udp:", "RcvbufErrors"), Some(5));
        assert_eq!(parse_snmp(snmp, "Udp:", "Nope"), None);
    }

    #[test]
    fn reads_own_process() {
        assert!(machine_busy_seconds().unwrap() > 0.0);
        assert!(reaped_children_seconds().unwrap() >= 0.0);
        let pid = std::process::id();
        assert!(cpu_seconds(pid).unwrap() >= 0.0);
        assert!(status_kb(pid, "VmRSS").unwrap() > 0);
    }
}
