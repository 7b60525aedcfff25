//! Blocking file work from async code, without a thread hand-off where the runtime allows.
//!
//! A rotation on the file store is a chain of short fsync'd writes, each awaited before the
//! next step. Sending each one to the blocking pool costs two thread wake-ups (there and
//! back) per write, which measured as most of rekeyd's own time per rotation
//! (benches/store_rotation.rs). On the multi-threaded runtime the work instead runs right
//! here, after handing this worker's other tasks to another thread
//! (`tokio::task::block_in_place`), so the wait is the write's alone.

/// Runs `work`, which may block on file I/O, and returns its result.
///
/// On a multi-threaded runtime (the daemon's and the CLI's) it runs on this thread; on a
/// current-thread runtime (where blocking this thread would stall every task) it goes to
/// the blocking pool. Outside any runtime it simply runs.
pub(crate) async fn run<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> std::io::Result<T> {
    use tokio::runtime::{Handle, RuntimeFlavor};
    match Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(RuntimeFlavor::CurrentThread) => tokio::task::spawn_blocking(work)
            .await
            .map_err(std::io::Error::other),
        Ok(_) => Ok(tokio::task::block_in_place(work)),
        Err(_) => Ok(work()),
    }
}
