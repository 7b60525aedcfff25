//! Whether the process that wrote a record (an audit entry, an outbox message) still runs.
//!
//! Records name their writer by host and pid. A pid alone is a weak name: Linux hands pids
//! out again (`pid_max` is often 32768), and `/proc/<id>` also answers for thread ids,
//! which come from the same space (a busy daemon starts and retires blocking threads all
//! the time). So a writer counts as running only if `/proc` shows a process (not a thread)
//! under its pid that started before the record was written.

use chrono::{DateTime, TimeZone, Utc};

/// Ticks per second of `/proc/<pid>/stat`'s start time (`USER_HZ`, 100 on the
/// architectures rekeyd builds for).
const TICKS_PER_SECOND: i64 = 100;

/// This machine's name, as records carry it.
pub(crate) fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|name| name.trim().to_owned())
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "unknown".to_owned())
}

/// True when `pid` is a running process of this machine (not a thread of another one).
pub(crate) fn running(pid: u32) -> bool {
    let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
        return false;
    };
    // A thread's entry shows the process it belongs to.
    status
        .lines()
        .find_map(|line| line.strip_prefix("Tgid:"))
        .and_then(|tgid| tgid.trim().parse::<u32>().ok())
        == Some(pid)
}

/// True when `pid` is a running process that started before `written` (a second's margin
/// for the kernel's whole-second boot time): the one that wrote a record then, not a later
/// process that was given the same pid. When the start time cannot be read, a running
/// process is taken to be the writer (waiting is the safe mistake).
pub(crate) fn running_since(pid: u32, written: DateTime<Utc>) -> bool {
    running(pid)
        && started_at(pid).is_none_or(|started| started <= written + chrono::Duration::seconds(1))
}

/// When `pid` started, from its start time in ticks after boot and the boot time.
fn started_at(pid: u32) -> Option<DateTime<Utc>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces and parentheses): the state is
    // field 3 of the line, the start time field 22.
    let (_, fields) = stat.rsplit_once(')')?;
    let ticks: i64 = fields.split_whitespace().nth(22 - 3)?.parse().ok()?;
    let booted: i64 = std::fs::read_to_string("/proc/stat")
        .ok()?
        .lines()
        .find_map(|line| line.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()?;
    let millis = booted * 1000 + ticks * 1000 / TICKS_PER_SECOND;
    Utc.timestamp_millis_opt(millis).single()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_runs_and_started_before_now() {
        let me = std::process::id();
        assert!(running(me));
        let started = started_at(me).expect("a start time");
        let now = Utc::now();
        assert!(started <= now, "{started} after {now}");
        assert!(now - started < chrono::Duration::hours(1), "{started}");
        assert!(running_since(me, now));
    }

    #[test]
    fn a_record_older_than_the_process_under_its_pid_is_not_its() {
        // This process started after the epoch: a record written then was someone else's.
        let long_ago = Utc.timestamp_opt(0, 0).single().unwrap();
        assert!(!running_since(std::process::id(), long_ago));
    }

    #[test]
    fn a_thread_id_is_not_a_running_process() {
        let (tx, rx) = std::sync::mpsc::channel();
        let (done, wait) = std::sync::mpsc::channel::<()>();
        let thread = std::thread::spawn(move || {
            let tid = std::fs::read_link("/proc/thread-self")
                .ok()
                .and_then(|p| p.file_name()?.to_str()?.parse::<u32>().ok())
                .expect("this thread's id");
            tx.send(tid).unwrap();
            wait.recv().unwrap();
        });
        let tid = rx.recv().unwrap();
        assert!(
            std::path::Path::new(&format!("/proc/{tid}")).exists(),
            "/proc answers for the thread id"
        );
        assert_ne!(tid, std::process::id());
        assert!(!running(tid), "but it is not a process");
        done.send(()).unwrap();
        thread.join().unwrap();
    }

    #[test]
    fn a_pid_nobody_has_is_not_running() {
        assert!(!running(u32::MAX));
        assert!(!running_since(u32::MAX, Utc::now()));
    }
}
