//! The command line: syntax in [`args`], execution in `commands`, exit codes in [`exit`].

pub mod args;
mod commands;
pub mod exec;
pub mod exit;
mod health;
mod table;

pub use args::Cli;
pub use commands::execute;
