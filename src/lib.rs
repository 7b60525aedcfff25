//! rekeyd: a secrets rotation daemon.
//!
//! See `docs/ARCHITECTURE.md` for the map. Dependencies point one way:
//! cli/daemon → rotation → notify, policy, generate, schedule, backend, audit → secret.
#![forbid(unsafe_code)]
#![warn(missing_docs, unreachable_pub)]

pub mod api;
pub mod audit;
pub mod backend;
mod backoff;
mod blocking;
pub mod cli;
pub mod daemon;
mod fault;
pub mod generate;
pub mod hex;
pub mod metrics;
pub mod notify;
pub mod policy;
mod process;
pub mod report;
pub mod rotation;
pub mod schedule;
pub mod secret;
mod temp_file;
mod wipe;
