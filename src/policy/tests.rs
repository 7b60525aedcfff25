//! Tests of policy parsing and diagnostics: the example configs, one test per kind of
//! problem (exact position, path, and key words of message and hint), many problems in
//! one pass, syntax errors, and the display format.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::*;
use crate::generate::{
    BytesSpec, CharClass, CompiledPassword, Encoding, GeneratorSpec, PasswordSpec,
};
use crate::schedule::parse_duration;

/// Every problem in `text`, which must not be a valid policy.
fn problems(text: &str) -> Vec<Diagnostic> {
    match parse(Path::new("p.toml"), text) {
        Ok(_) => panic!("expected problems in:\n{text}"),
        Err(e) => e.0,
    }
}

/// The single problem in `text`.
fn only(text: &str) -> Diagnostic {
    let mut found = problems(text);
    assert_eq!(found.len(), 1, "expected exactly one problem: {found:#?}");
    found.remove(0)
}

/// Asserts position, path, and words in message and hint.
#[track_caller]
fn check(d: &Diagnostic, line: usize, column: usize, path: &str, message: &[&str], hint: &[&str]) {
    assert_eq!(
        (d.line, d.column, d.path.as_str()),
        (line, column, path),
        "{d:#?}"
    );
    for word in message {
        assert!(d.message.contains(word), "message lacks {word:?}: {d:#?}");
    }
    for word in hint {
        assert!(d.hint.contains(word), "hint lacks {word:?}: {d:#?}");
    }
}

fn ok(text: &str) -> Policy {
    match parse(Path::new("/srv/rekeyd/policy.toml"), text) {
        Ok(p) => p,
        Err(e) => panic!("unexpected problems:\n{e}"),
    }
}

fn hours(h: u64) -> Duration {
    Duration::from_secs(h * 3600)
}

/// A backend on lines 1-2, a blank line 3, so secrets start on line 4.
const HEAD: &str = "[backends.local]\ntype = \"file\"\n\n";

fn with_head(rest: &str) -> String {
    format!("{HEAD}{rest}")
}

fn config(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("config")
        .join(name)
}

// ---- valid policies ----

#[test]
fn example_config_parses_with_paths_next_to_it() {
    let path = config("example.toml");
    let policy = load(&path).unwrap_or_else(|e| panic!("{e}"));
    let dir = path.parent().unwrap();
    assert_eq!(policy.source, path);
    assert_eq!(policy.digest.len(), 64);
    assert_eq!(policy.daemon.state_dir, dir.join("state"));
    assert_eq!(
        policy.daemon.audit_log,
        dir.join("state").join("audit.jsonl")
    );
    assert_eq!(
        policy.daemon.audit_key_file,
        dir.join("state").join("audit.key")
    );
    assert_eq!(policy.daemon.min_interval, Duration::from_secs(60));
    let BackendConfig::File(local) = &policy.backends["local"] else {
        panic!("file backend expected")
    };
    assert_eq!(local.path, dir.join("state").join("store-local"));
    assert_eq!(local.key_file, dir.join("state").join("local.key"));
    assert_eq!(local.key_env, None);

    let kinds: Vec<&str> = policy
        .secrets
        .iter()
        .map(|s| match &s.generator {
            GeneratorSpec::Password(_) => "password",
            GeneratorSpec::Bytes(_) => "bytes",
            GeneratorSpec::Ed25519 => "ed25519",
            GeneratorSpec::EcdsaP256 => "ecdsa-p256",
            GeneratorSpec::Json(_) => "json",
        })
        .collect();
    assert_eq!(kinds, ["password", "bytes", "ed25519", "json"]);
    let db = policy.secret("demo/db/password").unwrap();
    assert_eq!(db.schedule_text, "cron \"30 2 * * *\" (Europe/Berlin)");
    let demo = policy.secret("demo/session/signing-key").unwrap();
    assert_eq!(demo.schedule_text, "every 1m");
    assert_eq!(demo.schedule.min_gap(), Duration::from_secs(60));
    let GeneratorSpec::Json(json) = &policy.secret("demo/db/credentials").unwrap().generator else {
        panic!("json generator expected");
    };
    assert_eq!(json.field, "password");
    assert_eq!(json.template["port"], serde_json::json!(5432));
    assert!(matches!(*json.generate, GeneratorSpec::Password(_)));
}

#[test]
fn production_config_parses_with_defaults_applied() {
    let policy = load(&config("production.toml")).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(policy.daemon.state_dir, Path::new("/var/lib/rekeyd"));
    assert_eq!(policy.daemon.concurrency, 16);
    assert_eq!(policy.secrets.len(), 7);

    let db = policy.secret("prod/db/password").unwrap();
    assert_eq!(db.backend, "primary");
    assert_eq!(db.notify, ["platform"]);
    assert_eq!(db.grace, hours(24));
    assert_eq!(db.window, Some(hours(1)));
    assert_eq!(db.max_age, Some(hours(35 * 24)));
    assert_eq!(db.owner.as_deref(), Some("team-db"));
    // A secret's tags replace the default tags; they are not merged.
    assert_eq!(db.tags.get("env").map(String::as_str), Some("prod"));
    assert!(!db.tags.contains_key("managed_by"));
    assert!(db.enabled);
    let GeneratorSpec::Password(p) = &db.generator else {
        panic!("default generator expected")
    };
    assert_eq!(p.spec().length, 32);

    let jwt = policy.secret("prod/auth/jwt-signing").unwrap();
    assert_eq!(jwt.schedule_text, "every 14d");
    assert_eq!(
        jwt.tags.get("managed_by").map(String::as_str),
        Some("rekeyd")
    );
    assert_eq!(
        policy
            .secret("prod/payments/api-key")
            .unwrap()
            .schedule_text,
        "every 30d"
    );
    assert!(!policy.secret("prod/legacy/ftp-password").unwrap().enabled);

    let BackendConfig::File(primary) = &policy.backends["primary"] else {
        panic!("file backend expected")
    };
    assert_eq!(primary.key_file, Path::new("/var/lib/rekeyd/primary.key"));
    assert_eq!(primary.key_env.as_deref(), Some("REKEYD_PRIMARY_KEY"));
    let BackendConfig::File(payments) = &policy.backends["payments"] else {
        panic!("file backend expected")
    };
    assert_eq!(payments.path, Path::new("/var/lib/rekeyd/payments-store"));
    assert_eq!(
        policy.notify["payments"].keys,
        [KeySource::Env("PAYMENTS_WHSEC".into())]
    );
    assert_eq!(policy.notify["payments"].max_attempts, 20);
    assert_eq!(
        policy.notify["platform"].window,
        Some(Duration::from_secs(60))
    );
    let api_key = policy.secret("prod/payments/api-key").unwrap();
    assert_eq!(
        api_key.confirm,
        Some(Confirm {
            targets: vec!["payments".into()],
            timeout: Duration::from_secs(600),
        })
    );
    assert_eq!(db.confirm, None);
}

#[test]
fn defaults_and_relative_paths() {
    let policy = ok(&with_head(
        "[daemon]\naudit_log = \"logs/audit.jsonl\"\n\n[[secrets]]\nname = \"a\"\n\
         backend = \"local\"\nschedule = { every = \"30d\" }\ngenerator = { type = \"password\" }\n",
    ));
    let dir = Path::new("/srv/rekeyd");
    assert_eq!(policy.daemon.state_dir, dir.join("state"));
    assert_eq!(policy.daemon.audit_log, dir.join("logs/audit.jsonl"));
    assert_eq!(policy.daemon.audit_key_file, dir.join("state/audit.key"));
    assert_eq!(policy.daemon.concurrency, 8);
    assert_eq!(policy.daemon.min_interval, hours(1));
    assert_eq!(policy.daemon.max_retry_backoff, Duration::from_secs(900));
    let BackendConfig::File(local) = &policy.backends["local"] else {
        panic!("file backend expected")
    };
    assert_eq!(local.path, dir.join("state/store-local"));

    let a = &policy.secrets[0];
    assert_eq!(a.grace, hours(24));
    assert_eq!((a.window, a.max_age, a.owner.as_ref()), (None, None, None));
    assert!(a.enabled && a.notify.is_empty() && a.tags.is_empty());
    assert_eq!(
        a.generator,
        GeneratorSpec::Password(
            CompiledPassword::new(PasswordSpec {
                length: 32,
                classes: vec![
                    (CharClass::Lower, 1),
                    (CharClass::Upper, 1),
                    (CharClass::Digit, 1),
                    (CharClass::Symbol, 1),
                ],
                symbols: None,
                exclude: String::new(),
            })
            .unwrap()
        )
    );
}

#[test]
fn generators_read_their_options() {
    let policy = ok(&with_head(
        r#"[defaults]
backend = "local"
schedule = { every = "30d" }

[[secrets]]
name = "p"
generator = { type = "password", length = 20, classes = ["digit", "lower"], min_digit = 5, exclude = "0" }

[[secrets]]
name = "b"
generator = { type = "bytes", encoding = "hex" }

[[secrets]]
name = "k"
generator = { type = "ecdsa-p256" }
"#,
    ));
    assert_eq!(
        policy.secrets[0].generator,
        GeneratorSpec::Password(
            CompiledPassword::new(PasswordSpec {
                length: 20,
                classes: vec![(CharClass::Digit, 5), (CharClass::Lower, 1)],
                symbols: None,
                exclude: "0".into(),
            })
            .unwrap()
        )
    );
    assert_eq!(
        policy.secrets[1].generator,
        GeneratorSpec::Bytes(BytesSpec {
            length: 32,
            encoding: Encoding::Hex
        })
    );
    assert_eq!(policy.secrets[2].generator, GeneratorSpec::EcdsaP256);
}

#[test]
fn same_cron_in_many_secrets_parses_to_equal_schedules() {
    let mut text =
        with_head("[defaults]\nbackend = \"local\"\ngenerator = { type = \"ed25519\" }\n\n");
    for i in 0..50 {
        text.push_str(&format!(
            "[[secrets]]\nname = \"s{i}\"\nschedule = {{ cron = \"0 3 * * *\", timezone = \"UTC\" }}\n"
        ));
    }
    let policy = ok(&text);
    assert_eq!(policy.secrets.len(), 50);
    assert!(policy.secrets.iter().all(
        |s| s.schedule_text == "cron \"0 3 * * *\" (UTC)" && s.schedule.min_gap() == hours(24)
    ));
}

// ---- one test per kind of problem ----

#[test]
fn syntax_error_has_its_position() {
    let d = only("[daemon]\nconcurrency = = 3\n");
    check(&d, 2, 15, "", &["invalid TOML"], &["syntax"]);
}

#[test]
fn unknown_key_suggests_the_closest() {
    let d = only(&with_head(
        "[[secrets]]\nname = \"a\"\nbackend = \"local\"\nschedul = { every = \"30d\" }\n\
         schedule = { every = \"30d\" }\ngenerator = { type = \"ed25519\" }\n",
    ));
    check(
        &d,
        7,
        1,
        "secrets[0].schedul",
        &["unknown key `schedul` in secrets[0]; did you mean `schedule`?"],
        &["valid keys", "`schedule`", "`grace`"],
    );
}

#[test]
fn unknown_keys_everywhere() {
    let found = problems(
        r#"colour = 1
[daemon]
concurency = 4
[defaults]
grace_period = "1h"
[backends.local]
type = "file"
pth = "x"
[notify.team]
url = "https://x.example"
secret_file = "k"
secrets_env = "X"
[[secrets]]
name = "a"
backend = "local"
schedule = { every = "30d", tz = "UTC" }
generator = { type = "ed25519", length = 3 }
"#,
    );
    let at: Vec<(usize, usize, &str)> = found
        .iter()
        .map(|d| (d.line, d.column, d.path.as_str()))
        .collect();
    assert_eq!(
        at,
        [
            (1, 1, "colour"),
            (3, 1, "daemon.concurency"),
            (5, 1, "defaults.grace_period"),
            (8, 1, "backends.local.pth"),
            (12, 1, "notify.team.secrets_env"),
            (16, 29, "secrets[0].schedule.tz"),
            (17, 33, "secrets[0].generator.length"),
        ]
    );
    assert!(found[0].message.contains("at the top level"));
    assert!(found[1].message.contains("did you mean `concurrency`?"));
    assert!(found[3].message.contains("did you mean `path`?"));
    assert!(found[4].message.contains("did you mean `secret_env`?"));
    assert!(found[6].hint.contains("`type`"));
}

#[test]
fn wrong_type_names_both_types() {
    let d = only(&with_head(
        "[[secrets]]\nname = \"a\"\nbackend = \"local\"\nschedule = { every = \"30d\" }\n\
         generator = { type = \"ed25519\" }\ngrace = 24\n",
    ));
    check(
        &d,
        9,
        9,
        "secrets[0].grace",
        &["expected a string like \"30d\", found an integer"],
        &["\"12h\""],
    );
}

#[test]
fn bad_duration_reports_the_parser_message() {
    let d = only("[daemon]\nmin_interval = \"ten minutes\"\n");
    check(&d, 2, 16, "daemon.min_interval", &[], &["\"30d\""]);
    assert_eq!(d.message, parse_duration("ten minutes").unwrap_err());
}

#[test]
fn missing_required_fields_point_at_the_secret() {
    let found = problems("[[secrets]]\nowner = \"x\"\n");
    let at: Vec<(usize, usize, &str)> = found
        .iter()
        .map(|d| (d.line, d.column, d.path.as_str()))
        .collect();
    assert_eq!(
        at,
        [
            (1, 1, "secrets[0].name"),
            (1, 1, "secrets[0].backend"),
            (1, 1, "secrets[0].schedule"),
            (1, 1, "secrets[0].generator"),
        ]
    );
    assert!(found[0].message.contains("no `name`"));
    assert!(found[1].message.contains("no `backend`"));
    assert!(found[1].hint.contains("[backends.local]"));
    assert!(found[2].hint.contains("every = \"30d\""));
    assert!(found[3].hint.contains("password"));
}

#[test]
fn missing_backend_hint_names_the_defined_ones() {
    let d = only(&with_head(
        "[[secrets]]\nname = \"a\"\nschedule = { every = \"30d\" }\n\
         generator = { type = \"ed25519\" }\n",
    ));
    check(
        &d,
        4,
        1,
        "secrets[0].backend",
        &["no `backend`", "[defaults]"],
        &["backend = \"local\"", "defined backends: `local`"],
    );
}

#[test]
fn undefined_backend_lists_the_defined_ones() {
    let d = only(&with_head(
        "[[secrets]]\nname = \"a\"\nbackend = \"locl\"\nschedule = { every = \"30d\" }\n\
         generator = { type = \"ed25519\" }\n",
    ));
    check(
        &d,
        6,
        11,
        "secrets[0].backend",
        &["backend `locl` is not defined", "did you mean `local`?"],
        &["defined backends: `local`"],
    );
}

#[test]
fn undefined_notify_target_lists_the_defined_ones() {
    let d = only(&with_head(
        "[notify.payments]\nurl = \"https://p.example/hook\"\nsecret_env = \"P\"\n\n[[secrets]]\nname = \"a\"\n\
         backend = \"local\"\nschedule = { every = \"30d\" }\ngenerator = { type = \"ed25519\" }\n\
         notify = [\"payments\", \"billing\"]\n",
    ));
    check(
        &d,
        13,
        23,
        "secrets[0].notify[1]",
        &["notify target `billing` is not defined"],
        &["defined notify: `payments`"],
    );
}

#[test]
fn duplicate_names_point_at_the_first() {
    let d = only(&with_head(
        r#"[defaults]
backend = "local"
schedule = { every = "30d" }
generator = { type = "ed25519" }

[[secrets]]
name = "app/key"

[[secrets]]
name = "app/key"
"#,
    ));
    check(
        &d,
        13,
        8,
        "secrets[1].name",
        &["`app/key` is defined twice", "also defined at line 10"],
        &["unique"],
    );
}

#[test]
fn invalid_name_reports_the_secret_name_rule() {
    let d = only(&with_head(
        "[[secrets]]\nname = \"a b\"\nbackend = \"local\"\nschedule = { every = \"30d\" }\n\
         generator = { type = \"ed25519\" }\n",
    ));
    check(&d, 5, 8, "secrets[0].name", &[], &["/ _ + = . @ -"]);
    assert_eq!(
        d.message,
        crate::secret::SecretName::new("a b")
            .unwrap_err()
            .to_string()
    );
}

/// A secret on lines 4.. with `extra` lines after the required keys (from line 8).
fn secret_with(extra: &str) -> String {
    with_head(&format!(
        "[[secrets]]\nname = \"a\"\nbackend = \"local\"\ngenerator = {{ type = \"ed25519\" }}\n{extra}"
    ))
}

#[test]
fn schedule_below_the_floor() {
    let d = only(&secret_with(
        "schedule = { every = \"5m\" }\ngrace = \"1m\"\n",
    ));
    check(
        &d,
        8,
        22,
        "secrets[0].schedule.every",
        &["fires every 5m; the floor is 1h", "[daemon] min_interval"],
        &["1h"],
    );
}

#[test]
fn cron_below_the_floor() {
    let d = only(&secret_with(
        "schedule = { cron = \"*/5 * * * *\" }\ngrace = \"1m\"\n",
    ));
    check(
        &d,
        8,
        21,
        "secrets[0].schedule.cron",
        &["fires every 5m; the floor is 1h"],
        &[],
    );
}

#[test]
fn grace_longer_than_the_interval() {
    let d = only(&secret_with(
        "schedule = { every = \"2h\" }\ngrace = \"3h\"\n",
    ));
    check(
        &d,
        9,
        9,
        "secrets[0].grace",
        &["grace 3h is longer than the 2h between rotations"],
        &["at most 2h"],
    );
}

#[test]
fn unset_grace_shrinks_to_a_short_schedule_and_explicit_grace_does_not() {
    // The one-day default is cut to the gap instead of failing a valid policy.
    let policy = ok(&secret_with("schedule = { every = \"2h\" }\n"));
    assert_eq!(policy.secrets[0].grace, Duration::from_secs(2 * 3600));
    // A daily 02:30 in Berlin is 23.5h apart on spring-forward day: still valid unset.
    let policy = ok(&secret_with(
        "schedule = { cron = \"30 2 * * *\", timezone = \"Europe/Berlin\" }\n",
    ));
    assert_eq!(
        policy.secrets[0].grace,
        Duration::from_secs(23 * 3600 + 1800)
    );
    // Asked for explicitly, a grace longer than the gap is an error.
    let d = only(&secret_with(
        "schedule = { every = \"2h\" }\ngrace = \"3h\"\n",
    ));
    assert_eq!(d.path, "secrets[0].grace");
    assert!(
        d.message.contains("grace 3h is longer than the 2h"),
        "{d:#?}"
    );
}

#[test]
fn window_not_shorter_than_the_interval() {
    let d = only(&secret_with(
        "schedule = { every = \"2h\" }\ngrace = \"1h\"\nwindow = \"2h\"\n",
    ));
    check(
        &d,
        10,
        10,
        "secrets[0].window",
        &["window 2h is not shorter than the 2h"],
        &["below 2h"],
    );
}

#[test]
fn max_age_shorter_than_the_interval() {
    let d = only(&secret_with(
        "schedule = { every = \"30d\" }\nmax_age = \"7d\"\n",
    ));
    check(
        &d,
        9,
        11,
        "secrets[0].max_age",
        &["max_age 7d is shorter than the 30d", "overdue"],
        &["at least 30d"],
    );
}

#[test]
fn defaults_problems_are_reported_once() {
    let mut text = with_head(
        "[defaults]\nbackend = \"local\"\ngenerator = { type = \"ed25519\" }\n\
         schedule = { every = \"5m\" }\ngrace = \"forever\"\n",
    );
    for i in 0..3 {
        text.push_str(&format!("[[secrets]]\nname = \"s{i}\"\n"));
    }
    let found = problems(&text);
    let at: Vec<(usize, usize, &str)> = found
        .iter()
        .map(|d| (d.line, d.column, d.path.as_str()))
        .collect();
    assert_eq!(
        at,
        [(7, 22, "defaults.schedule.every"), (8, 9, "defaults.grace")]
    );
}

#[test]
fn default_grace_against_a_secrets_own_schedule_is_per_secret() {
    let found = problems(&with_head(
        r#"[defaults]
backend = "local"
generator = { type = "ed25519" }
grace = "3h"

[[secrets]]
name = "fine"
schedule = { every = "1d" }

[[secrets]]
name = "short"
schedule = { every = "2h" }
"#,
    ));
    assert_eq!(found.len(), 1, "{found:#?}");
    check(
        &found[0],
        15,
        12,
        "secrets[1].schedule",
        &["grace 3h (from [defaults])"],
        &["at most 2h"],
    );
}

#[test]
fn name_cannot_have_a_default() {
    let d = only("[defaults]\nname = \"x\"\n");
    check(
        &d,
        2,
        1,
        "defaults.name",
        &["cannot have a default"],
        &["[[secrets]]"],
    );
}

#[test]
fn schedule_shape_problems() {
    let found = problems(&with_head(
        r#"[defaults]
backend = "local"
generator = { type = "ed25519" }

[[secrets]]
name = "both"
schedule = { cron = "0 3 * * *", every = "1d" }

[[secrets]]
name = "neither"
schedule = {}

[[secrets]]
name = "tz"
schedule = { every = "1d", timezone = "UTC" }

[[secrets]]
name = "not-a-table"
schedule = "1d"
"#,
    ));
    assert_eq!(found.len(), 4, "{found:#?}");
    check(
        &found[0],
        10,
        34,
        "secrets[0].schedule.every",
        &["exactly one of `cron` and `every`"],
        &[],
    );
    check(
        &found[1],
        14,
        12,
        "secrets[1].schedule",
        &["needs `cron` or `every`"],
        &["every = \"30d\""],
    );
    check(
        &found[2],
        18,
        28,
        "secrets[2].schedule.timezone",
        &["only applies to cron"],
        &[],
    );
    check(
        &found[3],
        22,
        12,
        "secrets[3].schedule",
        &["expected a schedule table, found a string"],
        &["every = \"30d\""],
    );
}

#[test]
fn bad_cron_and_time_zone_point_at_their_values() {
    let found = problems(&with_head(
        r#"[defaults]
backend = "local"
generator = { type = "ed25519" }

[[secrets]]
name = "cron"
schedule = { cron = "not cron" }

[[secrets]]
name = "tz"
schedule = { cron = "0 3 * * *", timezone = "Mars/Olympus" }
"#,
    ));
    assert_eq!(found.len(), 2, "{found:#?}");
    check(
        &found[0],
        10,
        21,
        "secrets[0].schedule.cron",
        &[],
        &["five fields"],
    );
    check(
        &found[1],
        14,
        45,
        "secrets[1].schedule.timezone",
        &[],
        &["IANA"],
    );
    assert!(!found[0].message.is_empty() && !found[1].message.is_empty());
}

#[test]
fn generator_problems() {
    let found = problems(&with_head(
        r#"[defaults]
backend = "local"
schedule = { every = "30d" }

[[secrets]]
name = "g0"
generator = { type = "pasword" }

[[secrets]]
name = "g1"
generator = { type = "password", length = 8 }

[[secrets]]
name = "g2"
generator = { type = "password", classes = ["lower", "lower"] }

[[secrets]]
name = "g3"
generator = { type = "password", classes = ["lower", "digit"], min_symbol = 2 }

[[secrets]]
name = "g4"
generator = { type = "password", length = 16, min_lower = 10, min_upper = 10 }

[[secrets]]
name = "g5"
generator = { type = "password", classes = ["digit", "lower"], exclude = "0123456789" }

[[secrets]]
name = "g6"
generator = { type = "bytes", encoding = "base32" }

[[secrets]]
name = "g7"
generator = { length = 32 }
"#,
    ));
    let at: Vec<(usize, usize, &str)> = found
        .iter()
        .map(|d| (d.line, d.column, d.path.as_str()))
        .collect();
    assert_eq!(
        at,
        [
            (10, 22, "secrets[0].generator.type"),
            (14, 43, "secrets[1].generator.length"),
            (18, 54, "secrets[2].generator.classes[1]"),
            (22, 64, "secrets[3].generator.min_symbol"),
            (26, 43, "secrets[4].generator.length"),
            (30, 74, "secrets[5].generator.exclude"),
            (34, 42, "secrets[6].generator.encoding"),
            (38, 13, "secrets[7].generator.type"),
        ]
    );
    assert!(found[0].message.contains("did you mean `password`?"));
    assert!(found[0].hint.contains("`bytes`"));
    assert!(found[1].hint.contains("between 16"));
    assert!(found[2].message.contains("listed twice"));
    assert!(found[3].message.contains("`symbol` is not in classes"));
    assert!(
        found[4]
            .message
            .contains("add up to 22, more than the length 16")
    );
    assert!(
        found[5]
            .message
            .contains("every character of class `digit`")
    );
    assert!(found[6].message.contains("unknown encoding `base32`"));
    assert!(found[6].hint.contains("`base64url`"));
    assert!(found[7].message.contains("needs a `type`"));
}

#[test]
fn json_generator_problems() {
    let found = problems(&with_head(
        r#"[defaults]
backend = "local"
schedule = { every = "30d" }

[[secrets]]
name = "j0"
generator = { type = "json", generate = { type = "json", field = "x" } }

[[secrets]]
name = "j1"
generator = { type = "json", field = "password", template = { at = 1979-05-27T07:32:00Z }, generate = { type = "bytes" } }
"#,
    ));
    let at: Vec<(usize, usize, &str)> = found
        .iter()
        .map(|d| (d.line, d.column, d.path.as_str()))
        .collect();
    assert_eq!(
        at,
        [
            (10, 13, "secrets[0].generator.field"),
            (10, 50, "secrets[0].generator.generate.type"),
            (14, 68, "secrets[1].generator.template.at"),
        ]
    );
    assert!(found[0].message.contains("needs a `field`"));
    assert!(found[1].message.contains("another json generator"));
    assert!(found[2].message.contains("found a datetime"));
}

#[test]
fn backend_problems() {
    let found = problems(
        r#"[backends.cloud]
type = "vault"

[backends.weird]
type = "fiel"

[backends.none]
path = "x"

[backends."a/b"]
type = "file"
key_env = "1BAD"
"#,
    );
    let at: Vec<(usize, usize, &str)> = found
        .iter()
        .map(|d| (d.line, d.column, d.path.as_str()))
        .collect();
    assert_eq!(
        at,
        [
            (1, 1, "backends.cloud.address"),
            (5, 8, "backends.weird.type"),
            (7, 1, "backends.none.type"),
            (10, 11, "backends.\"a/b\""),
            (12, 11, "backends.\"a/b\".key_env"),
        ]
    );
    assert!(found[0].message.contains("address"), "{:?}", found[0]);
    assert!(found[1].message.contains("did you mean `file`?"));
    assert!(found[1].hint.contains("\"file\", \"aws\" and \"vault\""));
    assert!(found[2].hint.contains("type = \"file\""));
    assert!(found[3].message.contains("not a valid backends name"));
    assert!(
        found[4]
            .message
            .contains("not a valid environment variable name")
    );
}

#[test]
fn aws_backend_reads_every_key() {
    let policy = ok(r#"[backends.aws]
type = "aws"
region = "eu-central-1"
endpoint_url = "http://127.0.0.1:5000"
role_arn = "arn:aws:iam::123456789012:role/rekeyd"
external_id = "rekeyd-prod"
session_name = "rekeyd-eu"
kms_key_id = "alias/rekeyd"
tags = { managed_by = "rekeyd" }
create_missing = true
take_over_native_rotation = true
access_key_id_env = "AWS_KEY"
secret_access_key_env = "AWS_SECRET"
session_token_env = "AWS_TOKEN"

[[secrets]]
name = "a"
backend = "aws"
schedule = { every = "30d" }
generator = { type = "ed25519" }
"#);
    let BackendConfig::Aws(aws) = &policy.backends["aws"] else {
        panic!("an aws backend")
    };
    assert_eq!(aws.region.as_deref(), Some("eu-central-1"));
    assert_eq!(aws.endpoint_url.as_deref(), Some("http://127.0.0.1:5000"));
    let role = aws.assume_role.as_ref().expect("role");
    assert_eq!(role.role_arn, "arn:aws:iam::123456789012:role/rekeyd");
    assert_eq!(role.external_id.as_deref(), Some("rekeyd-prod"));
    assert_eq!(role.session_name.as_deref(), Some("rekeyd-eu"));
    assert_eq!(aws.kms_key_id.as_deref(), Some("alias/rekeyd"));
    assert_eq!(aws.tags["managed_by"], "rekeyd");
    assert!(aws.create_missing && aws.take_over_native_rotation);
    let creds = aws.credentials_env.as_ref().expect("static credentials");
    assert_eq!(
        (
            creds.access_key_id.as_str(),
            creds.secret_access_key.as_str(),
            creds.session_token.as_deref()
        ),
        ("AWS_KEY", "AWS_SECRET", Some("AWS_TOKEN"))
    );

    // Everything optional: the SDK's chains fill in region and credentials.
    let policy = ok(
        "[backends.aws]\ntype = \"aws\"\n\n[[secrets]]\nname = \"a\"\nbackend = \"aws\"\n\
         schedule = { every = \"30d\" }\ngenerator = { type = \"ed25519\" }\n",
    );
    let BackendConfig::Aws(aws) = &policy.backends["aws"] else {
        panic!("an aws backend")
    };
    assert_eq!(aws, &crate::policy::AwsBackendConfig::default());
}

#[test]
fn aws_backend_problems_are_positioned() {
    let found = problems(
        r#"[backends.aws]
type = "aws"
regoin = "eu-west-1"
endpoint_url = "ftp://x"
role_arn = "role/rekeyd"
create_missing = "yes"
access_key_id_env = "AWS_KEY"
tags = { "aws:owner" = "x" }

[backends.other]
type = "aws"
external_id = "abc"
secret_access_key_env = "1BAD"
"#,
    );
    let at: Vec<(usize, usize, &str)> = found
        .iter()
        .map(|d| (d.line, d.column, d.path.as_str()))
        .collect();
    assert_eq!(
        at,
        [
            (3, 1, "backends.aws.regoin"),
            (4, 16, "backends.aws.endpoint_url"),
            (5, 12, "backends.aws.role_arn"),
            (6, 18, "backends.aws.create_missing"),
            (7, 21, "backends.aws.access_key_id_env"),
            (8, 8, "backends.aws.tags.\"aws:owner\""),
            (12, 15, "backends.other.external_id"),
            (13, 25, "backends.other.secret_access_key_env"),
        ],
        "{found:#?}"
    );
    assert!(found[0].message.contains("did you mean `region`?"));
    assert!(found[1].message.contains("not an http:// or https:// URL"));
    assert!(found[2].message.contains("not an IAM role ARN"));
    assert!(
        found[3].message.contains("found a string"),
        "{}",
        found[3].message
    );
    assert!(
        found[4]
            .message
            .contains("needs `secret_access_key_env` too")
    );
    assert!(found[5].message.contains("reserved prefix `aws:`"));
    assert!(found[6].message.contains("only used with `role_arn`"));
    assert!(
        found[7]
            .message
            .contains("not a valid environment variable name")
    );
}

#[test]
fn notify_problems() {
    let found = problems(
        "[notify.a]\nurl = \"ftp://x\"\nsecret_env = \"A\"\n\n[notify.b]\nsecret_env = \"B\"\n",
    );
    assert_eq!(found.len(), 2, "{found:#?}");
    check(
        &found[0],
        2,
        7,
        "notify.a.url",
        &["not an http:// or https:// URL"],
        &["https://"],
    );
    check(&found[1], 5, 1, "notify.b.url", &["needs a `url`"], &[]);
}

#[test]
fn notify_targets_read_keys_timings_and_defaults() {
    let policy = ok(&with_head(
        "[notify.fast]\nurl = \"http://127.0.0.1:9/h\"\nsecret_env = [\"NEW_K\", \"OLD_K\"]\n\
         timeout = \"250ms\"\nmax_attempts = 4\ngive_up_after = \"1m\"\nbackoff = \"10ms\"\n\
         max_backoff = \"2s\"\nbreaker_failures = 3\nbreaker_cooldown = \"1s\"\nwindow = \"2s\"\n\
         max_in_flight = 1\n\n\
         [notify.plain]\nurl = \"https://h.example\"\nsecret_file = \"keys/plain.whsec\"\n",
    ));
    let fast = &policy.notify["fast"];
    assert_eq!(
        fast.keys,
        [
            KeySource::Env("NEW_K".into()),
            KeySource::Env("OLD_K".into())
        ]
    );
    assert_eq!(fast.timeout, Duration::from_millis(250));
    assert_eq!((fast.max_attempts, fast.breaker_failures), (4, 3));
    assert_eq!(fast.give_up_after, Duration::from_secs(60));
    assert_eq!(fast.backoff, Duration::from_millis(10));
    assert_eq!(fast.max_backoff, Duration::from_secs(2));
    assert_eq!(fast.breaker_cooldown, Duration::from_secs(1));
    assert_eq!(fast.window, Some(Duration::from_secs(2)));
    assert_eq!(fast.max_in_flight, 1);
    let plain = &policy.notify["plain"];
    assert_eq!(
        plain.keys,
        [KeySource::File(PathBuf::from(
            "/srv/rekeyd/keys/plain.whsec"
        ))]
    );
    assert_eq!(plain.timeout, Duration::from_secs(15));
    assert_eq!(plain.window, None);
    assert_eq!(plain.max_in_flight, 4);
    assert!(plain.max_backoff >= plain.backoff && plain.max_attempts > 1);
}

#[test]
fn notify_key_and_timing_problems() {
    let found = problems(
        "[notify.a]\nurl = \"https://a.example\"\n\n\
         [notify.b]\nurl = \"https://b.example\"\nsecret_env = \"B\"\nsecret_file = \"b.key\"\n\n\
         [notify.c]\nurl = \"https://c.example\"\nsecret_env = [\"X\", \"Y\", \"Z\"]\n\
         timeout = \"5us\"\nmax_attempts = 0\nbackoff = \"1m\"\nmax_backoff = \"1s\"\n",
    );
    let at: Vec<(usize, usize, &str)> = found
        .iter()
        .map(|d| (d.line, d.column, d.path.as_str()))
        .collect();
    assert_eq!(
        at,
        [
            (1, 1, "notify.a.secret_env"),
            (7, 1, "notify.b.secret_file"),
            (11, 14, "notify.c.secret_env"),
            (12, 11, "notify.c.timeout"),
            (13, 16, "notify.c.max_attempts"),
        ],
        "{found:#?}"
    );
    assert!(found[0].message.contains("needs a signing key"));
    assert!(found[0].hint.contains("whsec_"));
    assert!(found[1].message.contains("not both"));
    assert!(
        found[2]
            .message
            .contains("one or two signing keys, found 3")
    );
    assert!(found[3].hint.contains("ms"));
    // max_backoff < backoff is checked only once the rest of the target is valid.
    let d = only(&with_head(
        "[notify.d]\nurl = \"https://d.example\"\nsecret_env = \"D\"\nbackoff = \"1m\"\n\
         max_backoff = \"1s\"\n",
    ));
    check(
        &d,
        8,
        15,
        "notify.d.max_backoff",
        &["shorter than backoff"],
        &["at least backoff"],
    );
}

#[test]
fn confirm_targets_must_be_notified() {
    let head = with_head(
        "[notify.pay]\nurl = \"https://p.example\"\nsecret_env = \"P\"\n\
         [notify.ops]\nurl = \"https://o.example\"\nsecret_env = \"O\"\n\n",
    );
    // Lines 1-10 are the head; secrets start on line 11.
    let secret = "[[secrets]]\nname = \"a\"\nbackend = \"local\"\nschedule = { every = \"30d\" }\n\
                  generator = { type = \"ed25519\" }\n";
    let policy = ok(&format!(
        "{head}{secret}notify = [\"pay\", \"ops\"]\nconfirm = [\"pay\"]\nconfirm_timeout = \"2s\"\n"
    ));
    let confirm = policy.secrets[0].confirm.as_ref().expect("gated");
    assert_eq!(confirm.targets, ["pay"]);
    assert_eq!(confirm.timeout, Duration::from_secs(2));
    let plain = ok(&format!("{head}{secret}notify = [\"pay\"]\n"));
    assert_eq!(plain.secrets[0].confirm, None);
    let defaulted = ok(&format!(
        "{head}{secret}notify = [\"pay\"]\nconfirm = [\"pay\"]\n"
    ));
    assert_eq!(
        defaulted.secrets[0].confirm.as_ref().unwrap().timeout,
        Duration::from_secs(300)
    );

    // The secret's own confirm names a target its notify lacks.
    let d = only(&format!(
        "{head}{secret}notify = [\"ops\"]\nconfirm = [\"ops\", \"pay\"]\n"
    ));
    check(
        &d,
        17,
        19,
        "secrets[0].confirm[1]",
        &["`pay` is not in notify"],
        &["add \"pay\" to notify"],
    );
    // confirm from [defaults], notify from the secret: reported at the secret's notify.
    let d = only(&format!(
        "{head}[defaults]\nconfirm = [\"pay\"]\n\n{secret}notify = [\"ops\"]\n"
    ));
    check(
        &d,
        19,
        10,
        "secrets[0].notify",
        &["`pay` (from [defaults]) is not in notify"],
        &["set confirm in this secret"],
    );
    // Both from [defaults]: reported once, at [defaults], however many secrets use them.
    let two = format!(
        "{head}[defaults]\nnotify = [\"ops\"]\nconfirm = [\"pay\"]\n\n{secret}\n{}",
        secret.replace("\"a\"", "\"b\"")
    );
    let d = only(&two);
    check(
        &d,
        13,
        12,
        "defaults.confirm[0]",
        &["`pay` is not in notify"],
        &[],
    );
    // An undefined target and a zero timeout.
    let found = problems(&format!(
        "{head}{secret}notify = [\"pay\"]\nconfirm = [\"pya\"]\nconfirm_timeout = \"0s\"\n"
    ));
    assert_eq!(found.len(), 2, "{found:#?}");
    assert!(found[0].message.contains("did you mean `pay`?"));
    check(
        &found[1],
        18,
        19,
        "secrets[0].confirm_timeout",
        &["longer than zero"],
        &[],
    );
}

#[test]
fn daemon_problems() {
    let found = problems("[daemon]\nconcurrency = 0\nstate_dir = \"\"\nmax_retry_backoff = 15\n");
    let at: Vec<(usize, usize, &str)> = found
        .iter()
        .map(|d| (d.line, d.column, d.path.as_str()))
        .collect();
    assert_eq!(
        at,
        [
            (2, 15, "daemon.concurrency"),
            (3, 13, "daemon.state_dir"),
            (4, 21, "daemon.max_retry_backoff"),
        ]
    );
    assert!(found[0].message.contains("between 1 and 1024"));
    assert!(found[1].message.contains("must not be empty"));
    assert!(found[2].message.contains("found an integer"));
}

#[test]
fn many_problems_in_one_pass_sorted_by_position() {
    let text = r#"[daemon]
concurrency = "eight"

[backends.local]
type = "vualt"

[[secrets]]
name = "a"
backend = "local"
schedule = { every = "1d" }
generator = { type = "password", length = 4 }
enabled = "yes"

[[secrets]]
name = "b"
backend = "nowhere"
schedul = { every = "30d" }
generator = { type = "bytes" }
grace = 3
"#;
    let found = problems(text);
    let at: Vec<(usize, usize, &str)> = found
        .iter()
        .map(|d| (d.line, d.column, d.path.as_str()))
        .collect();
    assert_eq!(
        at,
        [
            (2, 15, "daemon.concurrency"),
            (5, 8, "backends.local.type"),
            (11, 43, "secrets[0].generator.length"),
            (12, 11, "secrets[0].enabled"),
            (14, 1, "secrets[1].schedule"),
            (16, 11, "secrets[1].backend"),
            (17, 1, "secrets[1].schedul"),
            (19, 9, "secrets[1].grace"),
        ]
    );
    let mut sorted = at.clone();
    sorted.sort();
    assert_eq!(at, sorted);
}

#[test]
fn display_format() {
    let errors = PolicyErrors(vec![
        Diagnostic {
            file: "p.toml".into(),
            line: 3,
            column: 9,
            path: "secrets[0].grace".into(),
            message: "expected a string like \"30d\", found an integer".into(),
            hint: "write \"24h\"".into(),
        },
        Diagnostic {
            file: "p.toml".into(),
            line: 7,
            column: 1,
            path: String::new(),
            message: "invalid TOML".into(),
            hint: "fix it".into(),
        },
    ]);
    assert_eq!(
        errors.to_string(),
        "p.toml:3:9: secrets[0].grace: expected a string like \"30d\", found an integer\n\
         \x20 help: write \"24h\"\n\
         p.toml:7:1: invalid TOML\n\
         \x20 help: fix it\n\
         2 problems in p.toml"
    );
    let one = PolicyErrors(errors.0[..1].to_vec());
    assert!(one.to_string().ends_with("\n1 problem in p.toml"));
}

#[test]
fn display_of_a_real_problem() {
    let text = with_head(
        "[[secrets]]\nname = \"a\"\nbackend = \"local\"\nschedul = { every = \"30d\" }\n\
         generator = { type = \"ed25519\" }\n",
    );
    let e = parse(Path::new("conf/p.toml"), &text).unwrap_err();
    let shown = e.to_string();
    // The misspelt key leaves the secret without a schedule: both are reported, in order.
    assert!(
        shown.starts_with(
            "conf/p.toml:4:1: secrets[0].schedule: this secret has no `schedule` and \
             [defaults] sets none\n  help: write schedule = "
        ),
        "{shown}"
    );
    assert!(
        shown.contains(
            "\nconf/p.toml:7:1: secrets[0].schedul: unknown key `schedul` in secrets[0]; \
             did you mean `schedule`?\n  help: valid keys here: `name`, "
        ),
        "{shown}"
    );
    assert!(shown.ends_with("\n2 problems in conf/p.toml"), "{shown}");
}

#[test]
fn load_reports_unreadable_and_non_utf8_files() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.toml");
    let e = load(&missing).unwrap_err();
    check(&e.0[0], 1, 1, "", &["cannot read the policy file"], &[]);

    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, b"[daemon]\nstate_dir = \"\xff\"\n").unwrap();
    let e = load(&bad).unwrap_err();
    check(&e.0[0], 2, 14, "", &["not valid UTF-8"], &["UTF-8"]);
}

const API_BASE: &str = "[backends.local]\ntype = \"file\"\n";

#[test]
fn api_settings_parse_with_defaults() {
    let policy = ok(&format!(
        "{API_BASE}[api]\nlisten = \"0.0.0.0:9464\"\ntokens_file = \"tokens.toml\"\n"
    ));
    let api = policy.api.expect("api on");
    assert_eq!(api.listen.port(), 9464);
    assert_eq!(
        api.tokens_file,
        Some(PathBuf::from("/srv/rekeyd/tokens.toml"))
    );
    assert_eq!((api.rotate_burst, api.tls), (5, None));
    assert!(ok(API_BASE).api.is_none(), "off unless configured");
}

#[test]
fn api_beyond_loopback_needs_tokens_and_tls_needs_both_files() {
    let d = only(&format!("{API_BASE}[api]\nlisten = \"0.0.0.0:9464\"\n"));
    check(
        &d,
        4,
        10,
        "api.listen",
        &["without tokens_file"],
        &["tokens_file"],
    );
    let d = only(&format!(
        "{API_BASE}[api]\nlisten = \"127.0.0.1:9464\"\ntls_cert = \"c.pem\"\n"
    ));
    assert_eq!(d.path, "api.tls_cert");
    let d = only(&format!("{API_BASE}[api]\nlisten = \"localhost\"\n"));
    check(
        &d,
        4,
        10,
        "api.listen",
        &["not an address and port"],
        &["127.0.0.1:9464"],
    );
}

// ---- vault backends ----

#[test]
fn vault_backend_defaults_and_every_auth_method() {
    let policy = ok(r#"[backends.v2]
type = "vault"
address = "https://vault.example:8200/"

[backends.v1]
type = "vault"
address = "http://127.0.0.1:8200"
mount = "/kv/"
kv_version = 1
namespace = "admin/team-a"
ca_cert = "certs/vault-ca.pem"
auth = { method = "token", token_file = "/run/secrets/vault-token" }

[backends.approle]
type = "vault"
address = "https://vault.example:8200"
max_versions = 5
auth = { method = "approle", role_id = "db7f0d0e", secret_id_env = "VAULT_SECRET_ID" }

[backends.k8s]
type = "vault"
address = "https://vault.example:8200"
auth = { method = "kubernetes", role = "rekeyd", mount = "k8s-prod" }
"#);
    let vault = |name: &str| match &policy.backends[name] {
        BackendConfig::Vault(v) => v.clone(),
        other => panic!("{name}: {other:?}"),
    };
    let v2 = vault("v2");
    assert_eq!(v2.address, "https://vault.example:8200");
    assert_eq!(v2.mount, "secret");
    assert_eq!(v2.kv_version, KvVersion::V2);
    assert_eq!(
        v2.auth,
        VaultAuth::Token {
            token: CredentialSource::Env("VAULT_TOKEN".into())
        }
    );
    let v1 = vault("v1");
    assert_eq!(v1.mount, "kv");
    assert_eq!(v1.kv_version, KvVersion::V1);
    assert_eq!(v1.namespace.as_deref(), Some("admin/team-a"));
    assert_eq!(
        v1.ca_cert.as_deref(),
        Some(Path::new("/srv/rekeyd/certs/vault-ca.pem"))
    );
    assert_eq!(
        v1.auth,
        VaultAuth::Token {
            token: CredentialSource::File("/run/secrets/vault-token".into())
        }
    );
    let approle = vault("approle");
    assert_eq!(approle.max_versions, Some(5));
    assert_eq!(
        approle.auth,
        VaultAuth::AppRole {
            mount: "approle".into(),
            role_id: CredentialSource::Literal("db7f0d0e".into()),
            secret_id: CredentialSource::Env("VAULT_SECRET_ID".into()),
        }
    );
    assert_eq!(
        vault("k8s").auth,
        VaultAuth::Kubernetes {
            mount: "k8s-prod".into(),
            role: "rekeyd".into(),
            jwt_file: "/var/run/secrets/kubernetes.io/serviceaccount/token".into(),
        }
    );
}

#[test]
fn vault_backend_problems_are_positioned() {
    let found = problems(
        r#"[backends.a]
type = "vault"
mount = "secret"

[backends.b]
type = "vault"
address = "vault.example:8200"
kv_version = 3

[backends.c]
type = "vault"
address = "https://v"
kv_version = 1
max_versions = 4
auth = { method = "token", token = "hvs.literal" }

[backends.d]
type = "vault"
address = "https://v"
auth = { method = "approle", role_id = "r", secret_id_env = "S", secret_id_file = "f" }

[backends.e]
type = "vault"
address = "https://v"
auth = { method = "kerberos" }
max_version = 2

[backends.f]
type = "vault"
address = "https://v"
namespace = "team a"
"#,
    );
    let at: Vec<(usize, usize, &str)> = found
        .iter()
        .map(|d| (d.line, d.column, d.path.as_str()))
        .collect();
    assert_eq!(
        at,
        [
            (1, 1, "backends.a.address"),
            (7, 11, "backends.b.address"),
            (8, 14, "backends.b.kv_version"),
            (14, 16, "backends.c.max_versions"),
            (15, 36, "backends.c.auth.token"),
            (20, 83, "backends.d.auth.secret_id_file"),
            (25, 19, "backends.e.auth.method"),
            (26, 1, "backends.e.max_version"),
            (31, 13, "backends.f.namespace"),
        ],
        "{found:#?}"
    );
    assert!(found[0].message.contains("needs an `address`"));
    assert!(found[1].message.contains("not an http:// or https:// URL"));
    assert!(found[2].message.contains("between 1 and 2"));
    assert!(found[3].message.contains("KV v2 only"));
    assert!(
        found[4]
            .message
            .contains("would put a credential in the policy")
    );
    assert!(found[4].hint.contains("token_env or token_file"));
    assert!(found[5].message.contains("from one place only"));
    assert!(found[6].message.contains("unknown auth method `kerberos`"));
    assert!(found[7].message.contains("did you mean `max_versions`?"));
    assert!(found[8].message.contains("not a Vault namespace"));
    // The literal token never appears in a diagnostic.
    assert!(
        found
            .iter()
            .all(|d| !format!("{d:?}").contains("hvs.literal"))
    );
}

#[test]
fn production_config_vault_example_parses_once_uncommented() {
    let path = config("production.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    let start = text
        .find("# [backends.vault]")
        .expect("commented vault example");
    let (before, rest) = text.split_at(start);
    let end = rest.find("\n\n").expect("example ends with a blank line");
    let example: String = rest[..end]
        .lines()
        .map(|l| format!("{}\n", l.strip_prefix("# ").unwrap_or(l)))
        .collect();
    let policy = parse(&path, &format!("{before}{example}{}", &rest[end..]))
        .unwrap_or_else(|e| panic!("{e}"));
    let BackendConfig::Vault(vault) = &policy.backends["vault"] else {
        panic!("vault backend expected")
    };
    assert_eq!(vault.kv_version, KvVersion::V2);
    assert_eq!(vault.max_versions, Some(10));
    assert!(matches!(vault.auth, VaultAuth::AppRole { .. }));
}
