//! Notices messages other processes add to the outbox queue, without polling it.
//!
//! A daemon takes over what a stopped `rekeyd rotate` left queued. Looking for such
//! messages on a timer would wake an idle daemon for a directory that rarely changes
//! (issue 8: at most one wake-up a minute while nothing is due). On Linux an inotify watch
//! on the queue directory wakes the worker only when a message file arrives. Where no
//! watch can be set up (another OS, the inotify limits reached, a directory that went
//! away), the worker looks on a timer as before.

use std::io;
use std::path::Path;

/// What arrived in the queue directory.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Arrivals {
    /// A message file, by its id (the file name without `.json`).
    Message(String),
    /// Events were lost (the kernel's queue overflowed): anything may have arrived.
    Unknown,
}

/// A watch on the queue directory.
pub(crate) struct QueueWatch {
    inner: imp::Watch,
}

impl QueueWatch {
    /// Watches `queue_dir`, which must exist.
    pub(crate) fn new(queue_dir: &Path) -> io::Result<Self> {
        Ok(Self {
            inner: imp::Watch::new(queue_dir)?,
        })
    }

    /// Waits for a message file to arrive (temporary files are passed over). An error means the watch has ended (the
    /// directory was removed or moved): look on a timer from then on.
    pub(crate) async fn arrivals(&mut self) -> io::Result<Arrivals> {
        self.inner.arrivals().await
    }
}

/// The message id a queue file name stands for; `None` for anything else (temporary
/// files start with a dot, see `crate::temp_file`).
fn message_id(file_name: &std::ffi::OsStr) -> Option<String> {
    let name = file_name.to_str()?;
    if name.starts_with('.') {
        return None;
    }
    name.strip_suffix(".json").map(str::to_owned)
}

#[cfg(target_os = "linux")]
mod imp {
    use std::io;
    use std::path::Path;
    use std::pin::Pin;

    use futures_core::Stream;
    use inotify::{EventMask, EventStream, Inotify, WatchMask};

    use super::{Arrivals, message_id};

    pub(super) struct Watch {
        events: EventStream<Box<[u8]>>,
    }

    impl Watch {
        pub(super) fn new(dir: &Path) -> io::Result<Self> {
            let inotify = Inotify::init()?;
            // A message is linked or renamed into place once it is complete.
            inotify.watches().add(
                dir,
                WatchMask::CREATE
                    | WatchMask::MOVED_TO
                    | WatchMask::DELETE_SELF
                    | WatchMask::MOVE_SELF
                    | WatchMask::ONLYDIR,
            )?;
            let buffer = vec![0; 4096].into_boxed_slice();
            Ok(Self {
                events: inotify.into_event_stream(buffer)?,
            })
        }

        pub(super) async fn arrivals(&mut self) -> io::Result<Arrivals> {
            loop {
                let next =
                    std::future::poll_fn(|cx| Pin::new(&mut self.events).poll_next(cx)).await;
                let event = next.ok_or_else(|| io::Error::other("the watch was closed"))??;
                if event.mask.contains(EventMask::Q_OVERFLOW) {
                    return Ok(Arrivals::Unknown);
                }
                if event
                    .mask
                    .intersects(EventMask::DELETE_SELF | EventMask::MOVE_SELF | EventMask::IGNORED)
                {
                    return Err(io::Error::other("the queue directory went away"));
                }
                // Temporary files are not messages yet: keep waiting.
                if let Some(id) = event.name.as_deref().and_then(message_id) {
                    return Ok(Arrivals::Message(id));
                }
            }
        }
    }
}

#[cfg(not(target_os = "linux"))]
mod imp {
    use std::io;
    use std::path::Path;

    use super::Arrivals;

    pub(super) struct Watch;

    impl Watch {
        pub(super) fn new(_dir: &Path) -> io::Result<Self> {
            Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "watching a directory needs Linux's inotify",
            ))
        }

        pub(super) async fn arrivals(&mut self) -> io::Result<Arrivals> {
            std::future::pending().await
        }
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use std::time::Duration;

    use super::*;

    /// A bound on how long an event may take to arrive, not a wait for it.
    const DEADLINE: Duration = Duration::from_secs(10);

    async fn next(watch: &mut QueueWatch) -> io::Result<Arrivals> {
        tokio::time::timeout(DEADLINE, watch.arrivals())
            .await
            .expect("an event within the deadline")
    }

    #[tokio::test]
    async fn messages_linked_or_renamed_into_the_queue_are_reported_and_temp_files_are_not() {
        let dir = tempfile::tempdir().unwrap();
        let mut watch = QueueWatch::new(dir.path()).unwrap();
        // Written the way the outbox writes: a temporary file, then linked into place.
        let temp = dir.path().join(".abc.json.1.tmp");
        std::fs::write(&temp, b"{}").unwrap();
        std::fs::hard_link(&temp, dir.path().join("abc.json")).unwrap();
        assert_eq!(
            next(&mut watch).await.unwrap(),
            Arrivals::Message("abc".into())
        );
        // A rewrite by rename over the old file.
        let temp = dir.path().join(".def.json.1.tmp");
        std::fs::write(&temp, b"{}").unwrap();
        std::fs::rename(&temp, dir.path().join("def.json")).unwrap();
        assert_eq!(
            next(&mut watch).await.unwrap(),
            Arrivals::Message("def".into())
        );
    }

    #[tokio::test]
    async fn a_removed_directory_ends_the_watch() {
        let parent = tempfile::tempdir().unwrap();
        let queue = parent.path().join("queue");
        std::fs::create_dir(&queue).unwrap();
        let mut watch = QueueWatch::new(&queue).unwrap();
        std::fs::remove_dir(&queue).unwrap();
        assert!(next(&mut watch).await.is_err());
    }

    #[test]
    fn only_message_files_name_a_message() {
        use std::ffi::OsStr;
        assert_eq!(message_id(OsStr::new("abc.json")), Some("abc".into()));
        assert_eq!(message_id(OsStr::new(".abc.json.7.tmp")), None);
        assert_eq!(message_id(OsStr::new("abc.txt")), None);
    }
}
