//! What each subcommand does. Values leave rekeyd in one place only: `get`, to stdout.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono::Utc;
use tokio::sync::mpsc;

use super::args::{AuditCommand, Cli, Command, OutputFormat};
use super::exit::{self, Failure};
use super::table;
use crate::audit;
use crate::backend::{self, Backend, Selector};
use crate::daemon;
use crate::generate::GeneratorSpec;
use crate::policy::{self, Policy, SecretPolicy};
use crate::rotation::plan::{self, Plan};
use crate::rotation::status;
use crate::rotation::{self, Outcome};
use crate::secret::{Stage, VersionId};

type CliResult = Result<(), Failure>;

/// Runs the parsed command.
pub async fn execute(cli: Cli) -> CliResult {
    let policy = cli.policy;
    match cli.command {
        Command::Run { once } => run(&policy, once).await,
        Command::Check {
            file,
            count,
            format,
        } => check(file.as_deref().unwrap_or(&policy), count, format),
        Command::Rotate {
            name,
            dry_run,
            force,
            by,
        } => rotate(&policy, &name, dry_run, force, by).await,
        Command::Rollback { name, by } => rollback(&policy, &name, by).await,
        Command::Status { format } => status(&policy, format).await,
        Command::Get {
            name,
            stage,
            version,
            field,
        } => get(&policy, &name, stage, version, field).await,
        Command::Audit(AuditCommand::Verify {
            logs,
            anchor,
            format,
        }) => audit_verify(&logs, anchor.as_deref(), format),
        Command::Audit(AuditCommand::Query {
            logs,
            secret,
            since,
            until,
            outcome,
            format,
        }) => {
            let logs = if logs.is_empty() {
                vec![policy::load(&policy)?.daemon.audit_log]
            } else {
                logs
            };
            audit_query(&logs, secret, since, until, outcome, format)
        }
    }
}

fn print_json<T: serde::Serialize>(value: &T) -> CliResult {
    let text = serde_json::to_string_pretty(value)
        .map_err(|e| Failure::new(exit::FAILED, format!("cannot format JSON: {e}")))?;
    println!("{text}");
    Ok(())
}

async fn run(path: &Path, once: bool) -> CliResult {
    let (sender, receiver) = mpsc::channel(8);
    daemon::forward_signals(sender)
        .map_err(|e| Failure::new(exit::FAILED, format!("cannot install signal handlers: {e}")))?;
    daemon::run(path.to_owned(), once, receiver).await?;
    Ok(())
}

fn secret_of<'p>(policy: &'p Policy, name: &str) -> Result<&'p Arc<SecretPolicy>, Failure> {
    policy.secret(name).ok_or_else(|| {
        Failure::new(
            exit::NOT_FOUND,
            format!(
                "secret {name:?} is not in the policy {}",
                policy.source.display()
            ),
        )
    })
}

fn check(path: &Path, count: usize, format: OutputFormat) -> CliResult {
    let policy = policy::load(path)?;
    let now = Utc::now();
    #[derive(serde::Serialize)]
    struct Planned<'a> {
        name: &'a str,
        backend: &'a str,
        schedule: &'a str,
        enabled: bool,
        next: Vec<chrono::DateTime<Utc>>,
    }
    let planned: Vec<Planned> = policy
        .secrets
        .iter()
        .map(|s| Planned {
            name: s.name.as_str(),
            backend: &s.backend,
            schedule: &s.schedule_text,
            enabled: s.enabled,
            next: if s.enabled {
                plan::upcoming(s, now, count)
            } else {
                Vec::new()
            },
        })
        .collect();
    match format {
        OutputFormat::Json => print_json(&planned),
        OutputFormat::Table => {
            println!(
                "{}: valid; {} secrets, {} backends",
                path.display(),
                policy.secrets.len(),
                policy.backends.len()
            );
            let rows: Vec<Vec<String>> = planned
                .iter()
                .map(|p| {
                    let next = if p.enabled {
                        p.next
                            .iter()
                            .map(|t| t.format("%Y-%m-%d %H:%M:%SZ").to_string())
                            .collect::<Vec<_>>()
                            .join(", ")
                    } else {
                        "disabled".to_owned()
                    };
                    vec![
                        p.name.to_owned(),
                        p.backend.to_owned(),
                        p.schedule.to_owned(),
                        next,
                    ]
                })
                .collect();
            print!(
                "{}",
                table::render(
                    &["SECRET", "BACKEND", "SCHEDULE", "NEXT ROTATIONS (UTC)"],
                    &rows
                )
            );
            Ok(())
        }
    }
}

async fn rotate(
    path: &Path,
    name: &str,
    dry_run: bool,
    force: bool,
    by: Option<String>,
) -> CliResult {
    let policy = policy::load(path)?;
    let secret = Arc::clone(secret_of(&policy, name)?);
    if dry_run {
        let backends = backend::open_all(&policy).await?;
        return dry_run_report(&policy, &secret, &backends).await;
    }
    let by = by.unwrap_or_else(rotation::local_actor);
    let (_, engine) = daemon::open_runtime(policy, None).await?;
    match engine.rotate_manually(&secret, &by, force).await? {
        Outcome::Rotated { version, previous } => {
            println!(
                "rotated {}: current {version}{}",
                secret.name,
                previous
                    .map(|p| format!(", previous {p}"))
                    .unwrap_or_default()
            );
        }
        Outcome::AlreadyDone { version } => {
            println!("{}: {version} is already current", secret.name)
        }
        Outcome::Discarded { version } => println!("{}: discarded pending {version}", secret.name),
    }
    Ok(())
}

/// Plain words for a generator, for dry runs (never a value).
fn describe_generator(spec: &GeneratorSpec) -> String {
    use crate::generate::{CharClass, Encoding};
    match spec {
        GeneratorSpec::Password(p) => {
            let classes: Vec<String> = p
                .classes
                .iter()
                .map(|(class, min)| {
                    let class = match class {
                        CharClass::Lower => "lower",
                        CharClass::Upper => "upper",
                        CharClass::Digit => "digit",
                        CharClass::Symbol => "symbol",
                    };
                    format!("{class} (at least {min})")
                })
                .collect();
            let exclude = if p.exclude.is_empty() {
                String::new()
            } else {
                format!(", excluding {:?}", p.exclude)
            };
            format!(
                "a {}-character password from {}{exclude}",
                p.length,
                classes.join(", ")
            )
        }
        GeneratorSpec::Bytes(b) => format!(
            "{} random bytes as {}",
            b.length,
            match b.encoding {
                Encoding::Hex => "hex",
                Encoding::Base64 => "base64",
                Encoding::Base64Url => "base64url",
            }
        ),
        GeneratorSpec::Ed25519 => "an Ed25519 key pair (PKCS#8 PEM, public PEM and JWK)".to_owned(),
        GeneratorSpec::EcdsaP256 => {
            "an ECDSA P-256 key pair (PKCS#8 PEM, public PEM and JWK)".to_owned()
        }
        GeneratorSpec::Json(j) => {
            let kept: Vec<&str> = j
                .template
                .keys()
                .map(String::as_str)
                .filter(|k| *k != j.field)
                .collect();
            format!(
                "a JSON object: field {:?} = {}; fields kept from the current value or template: {}",
                j.field,
                describe_generator(&j.generate),
                if kept.is_empty() {
                    "none".to_owned()
                } else {
                    kept.join(", ")
                }
            )
        }
    }
}

async fn dry_run_report(
    policy: &Policy,
    secret: &SecretPolicy,
    backends: &BTreeMap<String, Arc<dyn Backend>>,
) -> CliResult {
    let backend = backends.get(&secret.backend).ok_or_else(|| {
        Failure::new(
            exit::FAILED,
            format!("backend {} is not open", secret.backend),
        )
    })?;
    let state = match backend.describe(&secret.name).await {
        Ok(d) => Some(d),
        Err(e) if e.is_not_found() => None,
        Err(e) => return Err(e.into()),
    };
    let now = Utc::now();
    let version = VersionId::for_manual(&secret.name, now);
    let stage = |s: Stage| {
        state
            .as_ref()
            .and_then(|d| d.stage(s))
            .map(|v| v.id.to_string())
    };
    println!("dry run: nothing is generated, written, notified or audited");
    println!("secret:    {}", secret.name);
    println!("backend:   {}", secret.backend);
    match (&state, stage(Stage::Current)) {
        (None, _) => println!("state:     does not exist yet; it would be created"),
        (Some(_), current) => println!(
            "state:     current {}, previous {}, pending {}",
            current.unwrap_or_else(|| "none".into()),
            stage(Stage::Previous).unwrap_or_else(|| "none".into()),
            stage(Stage::Pending).unwrap_or_else(|| "none".into())
        ),
    }
    if let Plan::Recover { version, resume } = plan::plan(secret, state.as_ref(), now) {
        println!(
            "first:     {} the interrupted rotation's pending version {version}",
            if resume { "finish" } else { "discard" }
        );
    }
    println!("generate:  {}", describe_generator(&secret.generator));
    println!("write:     pending version {version}");
    match stage(Stage::Current) {
        Some(current) => println!(
            "promote:   {version} becomes current; {current} becomes previous (readable for {}){}",
            crate::schedule::format_duration(secret.grace),
            stage(Stage::Previous)
                .map(|p| format!("; {p} is retired"))
                .unwrap_or_default()
        ),
        None => println!("promote:   {version} becomes current"),
    }
    if secret.notify.is_empty() {
        println!("notify:    no targets configured");
    } else {
        for target in &secret.notify {
            let url = policy
                .notify
                .get(target)
                .map(|t| t.url.as_str())
                .unwrap_or("?");
            println!("notify:    {target} ({url})");
        }
    }
    println!("audit:     rotation_started, pending_stored, promoted, rotation_succeeded");
    Ok(())
}

async fn rollback(path: &Path, name: &str, by: Option<String>) -> CliResult {
    let policy = policy::load(path)?;
    let secret = Arc::clone(secret_of(&policy, name)?);
    let by = by.unwrap_or_else(rotation::local_actor);
    let (_, engine) = daemon::open_runtime(policy, None).await?;
    let (from, to) = engine.rollback(&secret, &by).await?;
    println!("rolled back {}: current {to} (was {from})", secret.name);
    Ok(())
}

async fn status(path: &Path, format: OutputFormat) -> CliResult {
    let policy = policy::load(path)?;
    let backends = backend::open_all(&policy).await?;
    let statuses = status::collect(&policy, &backends, Utc::now()).await;
    match format {
        OutputFormat::Json => print_json(&statuses),
        OutputFormat::Table => {
            let time = |t: Option<chrono::DateTime<Utc>>| {
                t.map(|t| t.format("%Y-%m-%d %H:%M:%SZ").to_string())
                    .unwrap_or_else(|| "-".to_owned())
            };
            let rows: Vec<Vec<String>> = statuses
                .iter()
                .map(|s| {
                    vec![
                        s.name.clone(),
                        serde_json::to_value(s.state)
                            .ok()
                            .and_then(|v| v.as_str().map(str::to_owned))
                            .unwrap_or_default(),
                        s.current
                            .as_ref()
                            .map(|c| c.id.clone())
                            .unwrap_or_else(|| "-".into()),
                        time(s.last_rotated),
                        time(s.next_due),
                        s.error.clone().unwrap_or_default(),
                    ]
                })
                .collect();
            print!(
                "{}",
                table::render(
                    &[
                        "SECRET",
                        "STATE",
                        "CURRENT",
                        "LAST ROTATED",
                        "NEXT DUE",
                        "ERROR"
                    ],
                    &rows
                )
            );
            Ok(())
        }
    }
}

async fn get(
    path: &Path,
    name: &str,
    stage: Stage,
    version: Option<String>,
    field: Option<String>,
) -> CliResult {
    let policy = policy::load(path)?;
    let secret = secret_of(&policy, name)?;
    let config = policy.backends.get(&secret.backend).ok_or_else(|| {
        Failure::new(
            exit::FAILED,
            format!("backend {} is not defined", secret.backend),
        )
    })?;
    // Open only the one backend the secret lives in: `get` sits in service start-up paths.
    let backend: Arc<dyn Backend> = backend::open(&secret.backend, config).await?;
    let selector = match version {
        Some(id) => Selector::Version(VersionId::new(id)),
        None => Selector::Stage(stage),
    };
    let value = backend.read(&secret.name, &selector).await?;
    let mut stdout = std::io::stdout().lock();
    let written = match field {
        None => stdout.write_all(value.expose()),
        Some(field) => {
            let parsed: serde_json::Value =
                serde_json::from_slice(value.expose()).map_err(|_| {
                    Failure::new(
                        exit::FAILED,
                        format!("{name} is not a JSON object, so --field cannot apply"),
                    )
                })?;
            let zeroizing = zeroize::Zeroizing::new(match parsed.get(&field) {
                Some(serde_json::Value::String(text)) => text.clone(),
                Some(other) => other.to_string(),
                None => {
                    return Err(Failure::new(
                        exit::NOT_FOUND,
                        format!("{name} has no field {field:?}"),
                    ));
                }
            });
            stdout.write_all(zeroizing.as_bytes())
        }
    };
    written
        .and_then(|_| stdout.flush())
        .map_err(|e| Failure::new(exit::FAILED, format!("cannot write to stdout: {e}")))
}

fn audit_verify(logs: &[PathBuf], anchor: Option<&str>, format: OutputFormat) -> CliResult {
    let anchor = anchor
        .map(|a| {
            a.parse::<audit::Anchor>()
                .map_err(|e| Failure::new(2, format!("--anchor {a:?}: {e}")))
        })
        .transpose()?;
    let mut broken = false;
    let mut reports = Vec::new();
    for log in logs {
        let report = audit::verify_anchored(log, anchor.as_ref())
            .map_err(|e| Failure::new(exit::FAILED, e.to_string()))?;
        broken |= !report.problems.is_empty();
        reports.push((log.display().to_string(), report));
    }
    match format {
        OutputFormat::Json => {
            let out: Vec<_> = reports
                .iter()
                .map(|(log, r)| {
                    serde_json::json!({
                        "log": log,
                        "entries": r.entries,
                        "head": r.head.as_ref().map(|(seq, hash)| serde_json::json!({"seq": seq, "hash": hash})),
                        "ok": r.problems.is_empty(),
                        "problems": r.problems.iter().map(|p| serde_json::json!({"line": p.line, "message": p.message})).collect::<Vec<_>>(),
                    })
                })
                .collect();
            print_json(&out)?;
        }
        OutputFormat::Table => {
            for (log, r) in &reports {
                for p in &r.problems {
                    println!("{log}:{}: {}", p.line, p.message);
                }
                let head = r
                    .head
                    .as_ref()
                    .map(|(seq, hash)| format!("head {seq}:{hash}"))
                    .unwrap_or_else(|| "empty".to_owned());
                if r.problems.is_empty() {
                    println!("{log}: OK, {} entries, {head}", r.entries);
                } else {
                    println!(
                        "{log}: FAILED, {} problems in {} entries, {head}",
                        r.problems.len(),
                        r.entries
                    );
                }
            }
        }
    }
    if broken {
        return Err(Failure::new(
            exit::AUDIT_BROKEN,
            "audit log verification failed",
        ));
    }
    Ok(())
}

fn audit_query(
    logs: &[PathBuf],
    secret: Option<String>,
    since: Option<chrono::DateTime<Utc>>,
    until: Option<chrono::DateTime<Utc>>,
    outcome: Option<String>,
    format: OutputFormat,
) -> CliResult {
    let outcome = outcome
        .map(|o| {
            o.parse::<audit::Outcome>()
                .map_err(|e| Failure::new(2, format!("--outcome: {e}")))
        })
        .transpose()?;
    let filter = audit::Filter {
        secret,
        since,
        until,
        outcome,
    };
    let result =
        audit::query(logs, &filter).map_err(|e| Failure::new(exit::FAILED, e.to_string()))?;
    for skipped in &result.unreadable {
        eprintln!(
            "rekeyd: skipped {}:{}: {}",
            skipped.source.display(),
            skipped.line,
            skipped.reason
        );
    }
    match format {
        OutputFormat::Json => println!("{}", audit::render_json(&result.entries)),
        OutputFormat::Table => print!("{}", audit::render_table(&result.entries)),
    }
    Ok(())
}
