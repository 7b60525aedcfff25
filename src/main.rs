//! The `rekeyd` binary: parse arguments, set up logging, run the command, pick the exit code.

use clap::Parser;
use rekeyd::cli::{self, Cli, args::LogFormat};
use tracing_subscriber::EnvFilter;

/// The Vault client's crates log every 404 (an absent path, which rekeyd expects) as an
/// error; rekeyd reports what matters itself. Named in a filter, they log as asked.
const QUIET_UNLESS_NAMED: &[&str] = &["vaultrs", "rustify"];

fn init_logging(format: LogFormat, filter: &str) {
    let text = std::env::var("RUST_LOG").unwrap_or_else(|_| filter.to_owned());
    let mut filter = EnvFilter::try_new(&text).unwrap_or_else(|_| EnvFilter::new("info"));
    for target in QUIET_UNLESS_NAMED {
        if !text.contains(target)
            && let Ok(directive) = format!("{target}=off").parse()
        {
            filter = filter.add_directive(directive);
        }
    }
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().flatten_event(true).init(),
        LogFormat::Text => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
    }
}

/// glibc keeps the heap it grew during start-up (the policy's parse tree, the first look at
/// every secret) mapped even once it is free: holding 100,000 secrets, an idle daemon stayed
/// at 220 MiB resident for 15 MiB of live data (benches/idle_daemon.rs). This gives the free
/// pages back each time the daemon settles.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn release_free_memory() {
    // SAFETY: malloc_trim takes no pointers; it only returns free pages of glibc's own
    // arenas to the kernel, under glibc's locks, and may be called from any thread.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn release_free_memory() {}

/// glibc's dynamic mmap threshold rises to the size of the largest block freed so far (up
/// to 32 MiB): after a large policy's parse, or one /metrics response for 100,000 secrets,
/// blocks of megabytes come from the heap instead, and stay there once freed (the daemon
/// grew by 2 MiB a scrape). A fixed threshold (glibc's default value, 128 KiB) keeps
/// large blocks in their own mappings, returned when freed. Fewer arenas: start-up's
/// first look at every secret runs on up to a hundred blocking-pool threads, each of which
/// would otherwise get an arena (up to eight per core) that keeps its own free memory.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn tune_allocator() {
    const MMAP_THRESHOLD: i32 = 128 * 1024;
    const ARENAS: i32 = 2;
    // SAFETY: mallopt only sets glibc's allocator parameters; called before any thread
    // is started. A refused setting (it returns 0) leaves glibc's default, which is safe.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
        libc::mallopt(libc::M_ARENA_MAX, ARENAS);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn tune_allocator() {}

fn main() {
    tune_allocator();
    let cli = Cli::parse();
    init_logging(cli.log_format, &cli.log);
    rekeyd::daemon::when_settled(release_free_memory);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("rekeyd: cannot start the async runtime: {e}");
            std::process::exit(cli::exit::FAILED);
        }
    };
    if let Err(failure) = runtime.block_on(cli::execute(cli)) {
        eprintln!("rekeyd: {failure}");
        std::process::exit(failure.code);
    }
}
