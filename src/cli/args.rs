//! Command-line syntax: clap types only. Execution lives in `commands.rs`.

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

use crate::secret::Stage;

/// rekeyd rotates secrets on schedule, records every step in a tamper-evident audit log,
/// and serves the current value to service entrypoints.
#[derive(Debug, Parser)]
#[command(name = "rekeyd", version, about, long_about = None, after_help = EXIT_CODES)]
pub struct Cli {
    /// Log output: `text` for people, `json` for log shippers.
    #[arg(long, value_enum, default_value_t = LogFormat::Text, global = true, env = "REKEYD_LOG_FORMAT")]
    pub log_format: LogFormat,

    /// Log filter (tracing syntax, e.g. `info`, `rekeyd=debug`); `RUST_LOG` also works.
    #[arg(long, default_value = "info", global = true, env = "REKEYD_LOG")]
    pub log: String,

    /// The policy file.
    #[arg(
        short,
        long,
        env = "REKEYD_POLICY",
        default_value = "/etc/rekeyd/policy.toml",
        global = true
    )]
    pub policy: PathBuf,

    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Printed under `--help`: scripts may rely on these.
pub const EXIT_CODES: &str = "\
Exit codes:
  0  success
  1  a rotation, backend or I/O operation failed
  2  bad command-line usage
  3  the policy file is invalid (every problem is printed)
  4  the secret, stage or version does not exist
  5  the audit log failed verification
  6  refused (e.g. inside the grace period without --force, nothing to roll back)";

/// Log output format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Table for people, JSON for programs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// Aligned columns.
    Table,
    /// JSON.
    Json,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon: rotate secrets on schedule until SIGTERM (SIGHUP reloads the policy).
    Run {
        /// Bring every secret up to date once (recover, catch up), then exit.
        #[arg(long)]
        once: bool,
    },
    /// Validate a policy and print the next rotation times per secret; changes nothing.
    Check {
        /// The policy file (instead of --policy).
        file: Option<PathBuf>,
        /// How many upcoming rotations to show per secret.
        #[arg(short = 'n', long, default_value_t = 3)]
        count: usize,
        /// Output format.
        #[arg(long, value_enum, default_value_t = OutputFormat::Table)]
        format: OutputFormat,
    },
    /// Rotate one secret now (audited with who asked).
    Rotate {
        /// The secret's name.
        name: String,
        /// Show what would be generated, written and notified; touch nothing.
        #[arg(long)]
        dry_run: bool,
        /// Rotate even inside the grace period of the last rotation.
        #[arg(long)]
        force: bool,
        /// Who is asking (default: $SUDO_USER or $USER at this host).
        #[arg(long)]
        by: Option<String>,
    },
    /// Confirm (or refuse) a pending version of a gated secret on behalf of a consumer;
    /// the waiting rotation promotes (or discards) it.
    Confirm {
        /// The secret's name.
        name: String,
        /// The pending version (`data.version` of the `secret.rotation.pending` event).
        version: String,
        /// The notify target that answers (one of the secret's `confirm` targets).
        #[arg(long)]
        target: String,
        /// Refuse instead of confirming: the pending version is discarded.
        #[arg(long)]
        refuse: bool,
        /// Who is answering (default: $SUDO_USER or $USER at this host).
        #[arg(long)]
        by: Option<String>,
    },
    /// Make the previous version current again (audited).
    Rollback {
        /// The secret's name.
        name: String,
        /// Show which version would become current and who would be told; touch nothing.
        #[arg(long)]
        dry_run: bool,
        /// Who is asking (default: $SUDO_USER or $USER at this host).
        #[arg(long)]
        by: Option<String>,
    },
    /// Show every secret's versions, last rotation and next due time (never values).
    Status {
        /// Output format.
        #[arg(long, value_enum, default_value_t = OutputFormat::Table)]
        format: OutputFormat,
    },
    /// Print a secret's value to stdout, exactly (for service entrypoints).
    Get {
        /// The secret's name.
        name: String,
        /// Which stage to read.
        #[arg(long, default_value = "current", conflicts_with = "version")]
        stage: Stage,
        /// Read one version by id instead of a stage.
        #[arg(long)]
        version: Option<String>,
        /// For JSON secrets: print only this top-level field.
        #[arg(long)]
        field: Option<String>,
    },
    /// Run a command with secrets in its environment (for container entrypoints).
    ///
    /// Example: rekeyd exec --secret prod/db#password=DB_PASSWORD -- /app/server
    Exec {
        /// NAME=ENV_VAR, or NAME#FIELD=ENV_VAR for one field of a JSON secret; repeatable.
        #[arg(
            long = "secret",
            short = 's',
            required = true,
            value_name = "NAME[#FIELD]=VAR"
        )]
        secrets: Vec<crate::cli::exec::Mapping>,
        /// Which stage to read.
        #[arg(long, default_value = "current")]
        stage: Stage,
        /// The command and its arguments, after `--`.
        #[arg(last = true, required = true, value_name = "COMMAND")]
        command: Vec<std::ffi::OsString>,
    },
    /// Probe this host's API (for container HEALTHCHECKs): exit 0 when it answers 2xx.
    Health {
        /// Check readiness (/readyz) instead of liveness (/healthz).
        #[arg(long)]
        ready: bool,
    },
    /// Verify and search audit logs.
    #[command(subcommand)]
    Audit(AuditCommand),
}

/// Report output format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ReportFormat {
    /// One self-contained HTML page.
    Html,
    /// CSV rows for spreadsheets.
    Csv,
}

/// `rekeyd audit …`
#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Write the auditor's report: per secret, rotations against policy, gaps, failures,
    /// manual rotations and who asked, and each log's chain check.
    Report {
        /// Audit log files, one per replica (default: the policy's audit log).
        logs: Vec<PathBuf>,
        /// Start of the period (RFC 3339; default: 30 days before --until).
        #[arg(long)]
        since: Option<chrono::DateTime<chrono::Utc>>,
        /// End of the period (RFC 3339; default: now).
        #[arg(long)]
        until: Option<chrono::DateTime<chrono::Utc>>,
        /// Output format.
        #[arg(long, value_enum, default_value_t = ReportFormat::Html)]
        format: ReportFormat,
        /// Write to this file instead of stdout.
        #[arg(short, long)]
        output: Option<PathBuf>,
    },
    /// Print an audit log's raw bytes to stdout, to copy it out of a container without a
    /// shell: `kubectl exec POD -- rekeyd audit export > replica-0.jsonl`.
    Export {
        /// The log (default: the policy's audit log).
        #[arg(value_name = "LOG")]
        file: Option<PathBuf>,
    },
    /// Prove each log's hash chain: report every edited, removed, inserted or reordered line.
    Verify {
        /// Audit log files (one per replica).
        #[arg(required = true)]
        logs: Vec<PathBuf>,
        /// A head recorded elsewhere, `SEQ:HASH`: also proves nothing after it was cut off.
        #[arg(long)]
        anchor: Option<String>,
        /// Output format.
        #[arg(long, value_enum, default_value_t = OutputFormat::Table)]
        format: OutputFormat,
    },
    /// Filter entries by secret, time and outcome (logs merged by time).
    Query {
        /// Audit log files (default: the policy's audit log).
        logs: Vec<PathBuf>,
        /// Only this secret.
        #[arg(long)]
        secret: Option<String>,
        /// From this time (RFC 3339, e.g. 2026-11-01T00:00:00Z).
        #[arg(long)]
        since: Option<chrono::DateTime<chrono::Utc>>,
        /// Until this time (RFC 3339).
        #[arg(long)]
        until: Option<chrono::DateTime<chrono::Utc>>,
        /// Only entries with this outcome.
        #[arg(long)]
        outcome: Option<String>,
        /// Output format.
        #[arg(long, value_enum, default_value_t = OutputFormat::Table)]
        format: OutputFormat,
    },
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    fn parse(args: &[&str]) -> Cli {
        Cli::try_parse_from(std::iter::once("rekeyd").chain(args.iter().copied()))
            .unwrap_or_else(|e| panic!("{args:?}: {e}"))
    }

    #[test]
    fn command_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn run_takes_policy_and_once() {
        let cli = parse(&["run", "--policy", "p.toml", "--once"]);
        assert_eq!(cli.policy, PathBuf::from("p.toml"));
        match cli.command {
            Command::Run { once } => assert!(once),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn check_takes_a_positional_policy_and_count() {
        match parse(&["check", "x.toml", "-n", "5", "--format", "json"]).command {
            Command::Check {
                file,
                count,
                format,
                ..
            } => {
                assert_eq!(file, Some(PathBuf::from("x.toml")));
                assert_eq!(count, 5);
                assert_eq!(format, OutputFormat::Json);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn rotate_flags() {
        match parse(&["rotate", "db", "--dry-run", "--force", "--by", "alice"]).command {
            Command::Rotate {
                name,
                dry_run,
                force,
                by,
                ..
            } => {
                assert_eq!(name, "db");
                assert!(dry_run && force);
                assert_eq!(by.as_deref(), Some("alice"));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn get_defaults_to_current_and_takes_stage_and_field() {
        match parse(&["get", "db"]).command {
            Command::Get {
                stage,
                version,
                field,
                ..
            } => {
                assert_eq!(stage, Stage::Current);
                assert_eq!((version, field), (None, None));
            }
            other => panic!("{other:?}"),
        }
        match parse(&["get", "db", "--stage", "previous", "--field", "password"]).command {
            Command::Get { stage, field, .. } => {
                assert_eq!(stage, Stage::Previous);
                assert_eq!(field.as_deref(), Some("password"));
            }
            other => panic!("{other:?}"),
        }
        assert!(Cli::try_parse_from(["rekeyd", "get", "db", "--stage", "next"]).is_err());
        assert!(
            Cli::try_parse_from([
                "rekeyd",
                "get",
                "db",
                "--stage",
                "previous",
                "--version",
                "v"
            ])
            .is_err(),
            "stage and version exclude each other"
        );
    }

    #[test]
    fn audit_subcommands() {
        match parse(&["audit", "verify", "a.jsonl", "b.jsonl", "--anchor", "9:abc"]).command {
            Command::Audit(AuditCommand::Verify { logs, anchor, .. }) => {
                assert_eq!(logs.len(), 2);
                assert_eq!(anchor.as_deref(), Some("9:abc"));
            }
            other => panic!("{other:?}"),
        }
        assert!(
            Cli::try_parse_from(["rekeyd", "audit", "verify"]).is_err(),
            "a log is required"
        );
        match parse(&[
            "audit",
            "query",
            "--secret",
            "db",
            "--since",
            "2026-11-01T00:00:00Z",
            "--outcome",
            "failed",
        ])
        .command
        {
            Command::Audit(AuditCommand::Query {
                secret,
                since,
                outcome,
                logs,
                ..
            }) => {
                assert_eq!(secret.as_deref(), Some("db"));
                assert!(since.is_some());
                assert_eq!(outcome.as_deref(), Some("failed"));
                assert!(logs.is_empty());
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn confirm_takes_a_version_a_target_and_refuse() {
        match parse(&["confirm", "db", "v1", "--target", "payments", "--refuse"]).command {
            Command::Confirm {
                name,
                version,
                target,
                refuse,
                by,
            } => {
                assert_eq!((name.as_str(), version.as_str()), ("db", "v1"));
                assert_eq!(target, "payments");
                assert!(refuse);
                assert_eq!(by, None);
            }
            other => panic!("{other:?}"),
        }
        assert!(
            Cli::try_parse_from(["rekeyd", "confirm", "db", "v1"]).is_err(),
            "a target is required"
        );
    }

    #[test]
    fn exec_takes_mappings_and_a_command() {
        match parse(&["exec", "-s", "a=A", "--secret", "b#pw=B", "--", "env", "-0"]).command {
            Command::Exec {
                secrets,
                stage,
                command,
            } => {
                assert_eq!(secrets.len(), 2);
                assert_eq!(secrets[1].field.as_deref(), Some("pw"));
                assert_eq!(stage, Stage::Current);
                assert_eq!(command, vec![std::ffi::OsString::from("env"), "-0".into()]);
            }
            other => panic!("{other:?}"),
        }
        assert!(
            Cli::try_parse_from(["rekeyd", "exec", "-s", "a=A"]).is_err(),
            "a command is required"
        );
        assert!(
            Cli::try_parse_from(["rekeyd", "exec", "-s", "a", "--", "env"]).is_err(),
            "bad mapping"
        );
    }

    #[test]
    fn audit_report_flags() {
        match parse(&[
            "audit",
            "report",
            "a.jsonl",
            "--format",
            "csv",
            "-o",
            "r.csv",
            "--since",
            "2026-11-01T00:00:00Z",
        ])
        .command
        {
            Command::Audit(AuditCommand::Report {
                logs,
                format,
                output,
                since,
                until,
            }) => {
                assert_eq!(logs, vec![PathBuf::from("a.jsonl")]);
                assert_eq!(format, ReportFormat::Csv);
                assert_eq!(output, Some(PathBuf::from("r.csv")));
                assert!(since.is_some() && until.is_none());
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn audit_export_takes_an_optional_log() {
        // Its positional must not collide with the global --log filter.
        match parse(&["audit", "export", "a.jsonl", "--log", "debug"]).command {
            Command::Audit(AuditCommand::Export { file }) => {
                assert_eq!(file, Some(PathBuf::from("a.jsonl")))
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn log_format_flag_is_global() {
        let cli = parse(&["status", "--log-format", "json"]);
        assert_eq!(cli.log_format, LogFormat::Json);
    }
}
