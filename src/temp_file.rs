//! Temporary files of atomic writes (write + fsync, then rename or link into place), and
//! the sweep that removes the ones a killed writer left behind.
//!
//! A temporary file is `.<final name>.<pid>.tmp` beside its final file. Nothing reads one:
//! a writer killed between creating it and renaming it leaves an orphan that no record
//! refers to. Start-up sweeps remove every temporary file whose writer is no longer a
//! live process, so `kill -9` leaves no litter behind for long.

use std::io;
use std::path::{Path, PathBuf};

/// Where this process writes the next version of `final_path` before moving it in place.
pub(crate) fn path_for(final_path: &Path) -> PathBuf {
    let name = final_path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    final_path.with_file_name(format!(".{name}.{}.tmp", std::process::id()))
}

/// The writer's pid, if `file_name` is a temporary file's name.
fn writer_pid(file_name: &str) -> Option<u32> {
    let inner = file_name.strip_prefix('.')?.strip_suffix(".tmp")?;
    let (_, pid) = inner.rsplit_once('.')?;
    pid.parse().ok()
}

/// Whether `pid` is a live process on this host. Without `/proc` nothing can be known,
/// and [`sweep`] removes nothing.
fn alive(pid: u32) -> bool {
    Path::new("/proc").join(pid.to_string()).exists()
}

/// Removes the temporary files in `dir` whose writer has died; returns how many.
///
/// A writer on another host sharing the directory looks dead here; removing its file
/// makes its rename fail, and the write is retried: nothing is lost.
pub(crate) fn sweep(dir: &Path) -> io::Result<usize> {
    if !Path::new("/proc/self").exists() {
        return Ok(0);
    }
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e),
    };
    let mut removed = 0;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(writer_pid) else {
            continue;
        };
        if !alive(pid) && std::fs::remove_file(entry.path()).is_ok() {
            removed += 1;
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The pid of a process that has exited.
    fn dead_pid() -> u32 {
        let mut child = std::process::Command::new("true")
            .spawn()
            .expect("run true");
        let pid = child.id();
        child.wait().expect("reap");
        pid
    }

    #[test]
    fn a_temporary_name_carries_its_writer() {
        let temp = path_for(Path::new("/state/outbox/queue/msg_1.json"));
        assert_eq!(temp.parent(), Some(Path::new("/state/outbox/queue")));
        let name = temp.file_name().unwrap().to_str().unwrap();
        assert_eq!(name, format!(".msg_1.json.{}.tmp", std::process::id()));
        assert_eq!(writer_pid(name), Some(std::process::id()));
        for other in ["msg_1.json", ".msg_1.json", "x.tmp", ".x.y.tmp", ".tmp"] {
            assert_eq!(writer_pid(other), None, "{other}");
        }
    }

    #[test]
    fn the_sweep_removes_only_what_dead_writers_left() {
        let dir = tempfile::tempdir().unwrap();
        let orphan = dir.path().join(format!(".a.json.{}.tmp", dead_pid()));
        let mine = path_for(&dir.path().join("b.json"));
        let final_file = dir.path().join("a.json");
        for path in [&orphan, &mine, &final_file] {
            std::fs::write(path, b"{}").unwrap();
        }
        assert_eq!(sweep(dir.path()).unwrap(), 1);
        assert!(!orphan.exists(), "a dead writer's file is removed");
        assert!(mine.exists(), "a live writer's file is kept");
        assert!(final_file.exists(), "final files are never touched");
        assert_eq!(sweep(&dir.path().join("missing")).unwrap(), 0);
    }
}
