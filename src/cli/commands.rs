//! What each subcommand does. Values leave rekeyd in one place only: `get`, to stdout.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono::Utc;
use tokio::sync::mpsc;

use super::args::{AuditCommand, Cli, Command, OutputFormat, ReportFormat};
use super::exit::{self, Failure};
use super::table;
use crate::audit;
use crate::backend::{self, Backend, Selector};
use crate::daemon;
use crate::generate::GeneratorSpec;
use crate::notify;
use crate::policy::{self, Policy, SecretPolicy};
use crate::rotation::plan::{self, Plan};
use crate::rotation::status;
use crate::rotation::{self, Outcome};
use crate::secret::{SecretValue, Stage, VersionId};

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
        Command::Rollback { name, dry_run, by } => rollback(&policy, &name, dry_run, by).await,
        Command::Confirm {
            name,
            version,
            target,
            refuse,
            by,
        } => confirm(&policy, &name, &version, &target, refuse, by).await,
        Command::Status { format } => status(&policy, format).await,
        Command::Get {
            name,
            stage,
            version,
            field,
        } => get(&policy, &name, stage, version, field).await,
        Command::Health { ready } => {
            super::health::probe(&policy, if ready { "/readyz" } else { "/healthz" })
        }
        Command::Exec {
            secrets,
            stage,
            command,
        } => super::exec::exec(&policy, &secrets, stage, &command).await,
        Command::Audit(AuditCommand::Report {
            logs,
            since,
            until,
            format,
            output,
        }) => audit_report(&policy, logs, since, until, format, output.as_deref()),
        Command::Audit(AuditCommand::Export { file }) => audit_export(&policy, file.as_deref()),
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

fn secret_of<'p>(policy: &'p Policy, name: &str) -> Result<&'p SecretPolicy, Failure> {
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
    let secret = secret_of(&policy, name)?.clone();
    if dry_run {
        let backends = backend::open_all(&policy).await?;
        return dry_run_report(&policy, &secret, &backends).await;
    }
    let by = by.unwrap_or_else(rotation::local_actor);
    let (_, engine) = daemon::open_runtime(policy, None, daemon::Notifications::Open).await?;
    let rotated = delivering(
        &engine,
        &secret,
        engine.rotate_manually(&secret, &by, force),
    )
    .await?;
    match rotated? {
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

/// Runs `action` while this process delivers (and hears confirmations for) the secret's
/// notifications: the notifier starts before it and is drained and stopped after it; the
/// daemon takes over whatever is left when this process exits.
async fn delivering<T>(
    engine: &rotation::Engine,
    secret: &SecretPolicy,
    action: impl std::future::Future<Output = T>,
) -> Result<T, Failure> {
    let notifier = engine.notifier().filter(|_| !secret.notify.is_empty());
    if let Some(notifier) = notifier {
        notifier
            .start(notify::Mode::OwnOnly)
            .await
            .map_err(|e| Failure::new(exit::FAILED, e.to_string()))?;
    }
    let done = action.await;
    if let Some(notifier) = notifier {
        daemon::drain_notifications(engine).await;
        notifier.stop().await;
    }
    Ok(done)
}

/// Plain words for a generator, for dry runs (never a value).
fn describe_generator(spec: &GeneratorSpec) -> String {
    use crate::generate::{CharClass, Encoding};
    match spec {
        GeneratorSpec::Password(p) => {
            let p = p.spec();
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

/// A dry run's `notify:` lines: each target `event` would go to.
fn print_notify_targets(policy: &Policy, secret: &SecretPolicy, event: &str) {
    if secret.notify.is_empty() {
        println!("notify:    no targets configured");
    }
    for target in &secret.notify {
        let url = policy
            .notify
            .get(target)
            .map(|t| t.url.as_str())
            .unwrap_or("?");
        println!("notify:    {target} ({url}): {event}");
    }
}

/// The open backend `secret` lives in.
fn backend_of<'a>(
    backends: &'a BTreeMap<String, Arc<dyn Backend>>,
    secret: &SecretPolicy,
) -> Result<&'a Arc<dyn Backend>, Failure> {
    backends.get(&secret.backend).ok_or_else(|| {
        Failure::new(
            exit::FAILED,
            format!("backend {} is not open", secret.backend),
        )
    })
}

async fn dry_run_report(
    policy: &Policy,
    secret: &SecretPolicy,
    backends: &BTreeMap<String, Arc<dyn Backend>>,
) -> CliResult {
    let backend = backend_of(backends, secret)?;
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
    let events = if secret.confirm.is_some() {
        "secret.rotation.pending, then secret.rotated"
    } else {
        "secret.rotated"
    };
    print_notify_targets(policy, secret, events);
    if let Some(confirm) = &secret.confirm {
        println!(
            "confirm:   promote only once {} confirm(s) within {}; otherwise discard",
            confirm.targets.join(", "),
            crate::schedule::format_duration(confirm.timeout)
        );
    }
    println!("audit:     rotation_started, pending_stored, promoted, rotation_succeeded");
    Ok(())
}

async fn rollback(path: &Path, name: &str, dry_run: bool, by: Option<String>) -> CliResult {
    let policy = policy::load(path)?;
    let secret = secret_of(&policy, name)?.clone();
    if dry_run {
        let backends = backend::open_all(&policy).await?;
        return rollback_dry_run(&policy, &secret, &backends).await;
    }
    let by = by.unwrap_or_else(rotation::local_actor);
    // Consumers are told, but a rollback is an emergency: it must work even when the
    // webhook keys cannot be read.
    let engine = if secret.notify.is_empty() {
        daemon::open_runtime(policy, None, daemon::Notifications::Off)
            .await?
            .1
    } else {
        match daemon::open_runtime(policy.clone(), None, daemon::Notifications::Open).await {
            Ok((_, engine)) => engine,
            Err(e) => {
                eprintln!(
                    "warning: notifications unavailable ({e}); rolling back without telling {}",
                    secret.notify.join(", ")
                );
                daemon::open_runtime(policy, None, daemon::Notifications::Off)
                    .await?
                    .1
            }
        }
    };
    let (from, to) = delivering(&engine, &secret, engine.rollback(&secret, &by)).await??;
    println!("rolled back {}: current {to} (was {from})", secret.name);
    Ok(())
}

/// What a rollback would do, touching nothing; refused as the rollback itself would be.
async fn rollback_dry_run(
    policy: &Policy,
    secret: &SecretPolicy,
    backends: &BTreeMap<String, Arc<dyn Backend>>,
) -> CliResult {
    let backend = backend_of(backends, secret)?;
    let state = backend.describe(&secret.name).await?;
    let (from, to) = rotation::rollback_versions(secret, &state)?;
    println!("dry run: nothing is written, notified or audited");
    println!("secret:    {}", secret.name);
    println!("backend:   {}", secret.backend);
    println!("promote:   {to} becomes current again; {from} becomes previous");
    println!("holds:     until the secret's next scheduled slot, which rotates to a fresh value");
    print_notify_targets(policy, secret, "secret.rolled_back");
    println!("audit:     rollback_started, rolled_back");
    Ok(())
}

/// Records a consumer's answer for a pending version; the gate waiting on it (in the
/// daemon or a `rotate`) reads it from the state directory.
async fn confirm(
    path: &Path,
    name: &str,
    version: &str,
    target: &str,
    refuse: bool,
    by: Option<String>,
) -> CliResult {
    let policy = policy::load(path)?;
    let secret = secret_of(&policy, name)?;
    let refused = |e: notify::answer::Unanswerable| {
        let code = if e.is_policy() {
            exit::REFUSED
        } else {
            exit::NOT_FOUND
        };
        Failure::new(code, e.to_string())
    };
    notify::answer::check_target(secret, target).map_err(refused)?;
    let config = policy.backends.get(&secret.backend).ok_or_else(|| {
        Failure::new(
            exit::FAILED,
            format!("backend {} is not defined", secret.backend),
        )
    })?;
    let backend = backend::open(&secret.backend, config).await?;
    let state = backend.describe(&secret.name).await?;
    let pending = state.stage(Stage::Pending).map(|v| v.id.as_str());
    notify::answer::check_pending(secret, version, pending).map_err(refused)?;
    let audit = audit::AuditLog::open(&policy.daemon.audit_log)
        .await
        .map_err(|e| Failure::new(exit::FAILED, e.to_string()))?;
    let answer = notify::Confirmation {
        secret: secret.name.to_string(),
        version: version.to_owned(),
        target: target.to_owned(),
        decision: if refuse {
            notify::Decision::Refused
        } else {
            notify::Decision::Confirmed
        },
        via: "cli".to_owned(),
        by: by.unwrap_or_else(rotation::local_actor),
        at: Utc::now(),
        // Checked against the backend above: this answer is for the version pending now.
        fingerprint: None,
    };
    let store = notify::Confirmations::new(&policy.daemon.state_dir);
    let recorded = notify::record_confirmation(&store, &audit, &answer).await;
    audit.close().await;
    recorded.map_err(|e| Failure::new(exit::FAILED, e.to_string()))?;
    println!("{} {name} {version} for {target}", answer.decision.as_str());
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
    let value = match field {
        None => value,
        Some(field) => json_field(&value, name, &field)?,
    };
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(value.expose())
        .and_then(|_| stdout.flush())
        .map_err(|e| Failure::new(exit::FAILED, format!("cannot write to stdout: {e}")))
}

/// One top-level field of a JSON secret: strings as they are, anything else as JSON text.
pub(super) fn json_field(
    value: &SecretValue,
    name: &str,
    field: &str,
) -> Result<SecretValue, Failure> {
    let parsed: serde_json::Value = serde_json::from_slice(value.expose()).map_err(|_| {
        Failure::new(
            exit::FAILED,
            format!("{name} is not a JSON object, so a field cannot be taken from it"),
        )
    })?;
    let parsed = crate::generate::WipedValue(parsed);
    match parsed.0.get(field) {
        Some(serde_json::Value::String(text)) => Ok(SecretValue::from_string(text.clone())),
        Some(other) => Ok(SecretValue::from_string(other.to_string())),
        None => Err(Failure::new(
            exit::NOT_FOUND,
            format!("{name} has no field {field:?}"),
        )),
    }
}

fn audit_verify(logs: &[PathBuf], anchor: Option<&str>, format: OutputFormat) -> CliResult {
    if anchor.is_some() && logs.len() > 1 {
        // Each replica's log has its own chain and so its own head.
        return Err(Failure::new(
            2,
            "--anchor names one log's head: verify that log alone (rekeyd audit verify LOG --anchor SEQ:HASH)",
        ));
    }
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

fn audit_report(
    policy_path: &Path,
    logs: Vec<PathBuf>,
    since: Option<chrono::DateTime<Utc>>,
    until: Option<chrono::DateTime<Utc>>,
    format: ReportFormat,
    output: Option<&Path>,
) -> CliResult {
    let policy = policy::load(policy_path)?;
    let logs = if logs.is_empty() {
        vec![policy.daemon.audit_log.clone()]
    } else {
        logs
    };
    let until = until.unwrap_or_else(Utc::now);
    let since = since.unwrap_or(until - chrono::Duration::days(30));
    let failed = |e: audit::AuditError| Failure::new(exit::FAILED, e.to_string());
    let mut checks = Vec::with_capacity(logs.len());
    for log in &logs {
        let verified = audit::verify(log).map_err(failed)?;
        checks.push(crate::report::LogCheck::new(
            &log.display().to_string(),
            &verified,
        ));
    }
    // Only the period's entries are held: the report looks at nothing else.
    let period = audit::Filter {
        since: Some(since),
        until: Some(until),
        ..audit::Filter::default()
    };
    let read = audit::query(&logs, &period).map_err(failed)?;
    let report = crate::report::build(&policy, &read.entries, checks, since, until);
    let text = match format {
        ReportFormat::Html => crate::report::render_html(&report),
        ReportFormat::Csv => crate::report::render_csv(&report),
    };
    match output {
        None => print!("{text}"),
        Some(path) => std::fs::write(path, text).map_err(|e| {
            Failure::new(
                exit::FAILED,
                format!("cannot write {}: {e}", path.display()),
            )
        })?,
    }
    Ok(())
}

/// Copies an audit log's bytes to stdout unchanged (images without `cat` or a shell).
fn audit_export(policy_path: &Path, log: Option<&Path>) -> CliResult {
    let log = match log {
        Some(log) => log.to_owned(),
        None => policy::load(policy_path)?.daemon.audit_log,
    };
    let mut file = std::fs::File::open(&log).map_err(|e| {
        Failure::new(
            exit::NOT_FOUND,
            format!("cannot open {}: {e}", log.display()),
        )
    })?;
    let mut stdout = std::io::stdout().lock();
    std::io::copy(&mut file, &mut stdout)
        .and_then(|_| stdout.flush())
        .map_err(|e| Failure::new(exit::FAILED, format!("cannot copy {}: {e}", log.display())))?;
    Ok(())
}
