//! Fault injection: the process is killed (abort, as abrupt as `kill -9`) at every boundary
//! between durable rotation steps, restarted, and the invariants checked:
//! exactly one version per rotation, the right stages, nothing pending, an intact audit log.

mod common;

use chrono::Utc;
use common::{Sandbox, wait_for};
use rekeyd::rotation::{CRASH_POINTS, ROLLBACK_CRASH_POINTS};
use rekeyd::secret::VersionId;
use serde_json::Value;
use std::time::Duration;

const POLICY: &str = r#"
[[secrets]]
name = "app"
schedule = { every = "30d" }
"#;

fn crash_at(sandbox: &Sandbox, point: &str, args: &[&str]) {
    common::run_to_crash(sandbox.command(args), point);
}

/// The id of `app`'s version in `stage`.
fn version_id(sandbox: &Sandbox, stage: &str) -> String {
    sandbox.status("app")[stage]["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// A sandbox whose `app` was rotated twice, and the two versions' ids: (previous, current).
fn rotated_twice() -> (Sandbox, String, String) {
    let sandbox = Sandbox::new(POLICY);
    sandbox.ok(&["rotate", "app"]);
    sandbox.ok(&["rotate", "app", "--force"]);
    let (first, second) = (
        version_id(&sandbox, "previous"),
        version_id(&sandbox, "current"),
    );
    (sandbox, first, second)
}

fn versions(record: &Value) -> Vec<(String, Vec<String>)> {
    record["versions"]
        .as_array()
        .expect("versions")
        .iter()
        .map(|v| {
            let stages = v["stages"]
                .as_array()
                .unwrap()
                .iter()
                .map(|s| s.as_str().unwrap().to_owned())
                .collect();
            (v["id"].as_str().unwrap().to_owned(), stages)
        })
        .collect()
}

fn assert_audit_intact(sandbox: &Sandbox, point: &str) {
    let out = sandbox.run(&["audit", "verify", sandbox.audit_log().to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{point}: audit log broken: {}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
fn a_crash_during_the_first_rotation_is_finished_on_restart() {
    for point in CRASH_POINTS {
        let sandbox = Sandbox::new(POLICY);
        crash_at(&sandbox, point, &["run", "--once"]);
        sandbox.ok(&["run", "--once"]);

        let policy = rekeyd::policy::load(&sandbox.policy()).expect("policy");
        let secret = policy.secret("app").expect("app");
        let slot = rekeyd::rotation::plan::latest_due_slot(secret, Utc::now()).expect("slot");
        let expected = VersionId::for_slot(&secret.name, slot).to_string();

        let record = sandbox.store_record("app.json");
        assert_eq!(
            versions(&record),
            vec![(expected.clone(), vec!["current".to_owned()])],
            "{point}: exactly one version, current, for the slot"
        );
        assert_eq!(
            sandbox.events("rotation_succeeded", "app").len(),
            1,
            "{point}"
        );
        // What the restart had to do, by where the crash happened.
        let actions: Vec<String> = sandbox
            .events("recovery_found", "app")
            .iter()
            .map(|e| e["action"].as_str().unwrap().to_owned())
            .collect();
        let expected_actions: &[&str] = match point {
            // Nothing stored: the start is closed as failed and the slot rotated afresh.
            "after_started" => &[],
            // A pending version was stored: finished.
            "after_put" | "after_pending_audited" => &["resume"],
            // Promoted but its outcome never logged: the success is recorded.
            _ => &["record_success"],
        };
        assert_eq!(actions, expected_actions, "{point}");
        let interrupted = sandbox
            .events("rotation_failed", "app")
            .iter()
            .filter(|e| e["step"] == "interrupted")
            .count();
        assert_eq!(
            interrupted,
            usize::from(point == "after_started"),
            "{point}"
        );
        // Every start has an outcome.
        let starts = sandbox.events("rotation_started", "app").len();
        let ends = sandbox.events("rotation_succeeded", "app").len()
            + sandbox.events("rotation_failed", "app").len();
        assert!(
            ends >= 1 && starts <= ends + 1,
            "{point}: {starts} starts, {ends} ends"
        );
        assert_audit_intact(&sandbox, point);
    }
}

#[test]
fn a_crash_during_a_manual_rotation_is_finished_or_left_clean_on_restart() {
    for point in CRASH_POINTS {
        let sandbox = Sandbox::new(POLICY);
        sandbox.ok(&["rotate", "app"]);
        let first = sandbox.get("app", "current");
        let first_id = sandbox.status("app")["current"]["id"]
            .as_str()
            .unwrap()
            .to_owned();

        crash_at(&sandbox, point, &["rotate", "app", "--force"]);
        sandbox.ok(&["run", "--once"]);

        let record = sandbox.store_record("app.json");
        let vs = versions(&record);
        assert!(
            vs.iter()
                .all(|(_, stages)| !stages.contains(&"pending".to_owned())),
            "{point}: nothing pending: {vs:?}"
        );
        let started = sandbox.events("rotation_started", "app");
        let crashed_id = started.last().unwrap()["version"]
            .as_str()
            .unwrap()
            .to_owned();
        if point == "after_started" {
            // Nothing reached the store: the first version is still the only one.
            assert_eq!(
                vs,
                vec![(first_id.clone(), vec!["current".to_owned()])],
                "{point}"
            );
            assert_eq!(sandbox.get("app", "current"), first);
        } else {
            // The pending version was stored before the crash: it is finished, once.
            assert_eq!(
                vs,
                vec![
                    (first_id.clone(), vec!["previous".to_owned()]),
                    (crashed_id.clone(), vec!["current".to_owned()]),
                ],
                "{point}: exactly one new version, current; the old one previous"
            );
            assert_eq!(sandbox.get("app", "previous"), first, "{point}");
        }
        assert_audit_intact(&sandbox, point);
    }
}

#[test]
fn a_crash_during_a_third_rotation_leaves_current_and_previous_only() {
    // The third rotation is the first whose promote drops a version (the old previous),
    // in the same atomic write that moves the stages: no crash point sees it half done.
    for point in CRASH_POINTS {
        let (sandbox, first_id, second_id) = rotated_twice();
        let second = sandbox.get("app", "current");

        crash_at(&sandbox, point, &["rotate", "app", "--force"]);
        sandbox.ok(&["run", "--once"]);

        let vs = versions(&sandbox.store_record("app.json"));
        let crashed_id = sandbox.events("rotation_started", "app").last().unwrap()["version"]
            .as_str()
            .unwrap()
            .to_owned();
        if point == "after_started" {
            assert_eq!(
                vs,
                vec![
                    (first_id.clone(), vec!["previous".to_owned()]),
                    (second_id.clone(), vec!["current".to_owned()]),
                ],
                "{point}: nothing reached the store"
            );
        } else {
            assert_eq!(
                vs,
                vec![
                    (second_id.clone(), vec!["previous".to_owned()]),
                    (crashed_id, vec!["current".to_owned()]),
                ],
                "{point}: the oldest version is gone, the new one current"
            );
            assert_eq!(sandbox.get("app", "previous"), second, "{point}");
        }
        assert_audit_intact(&sandbox, point);
    }
}

/// A rollback killed after `rollback_started` (nothing changed yet) or after the backend
/// made the previous version current (not audited yet), then closed by the next daemon
/// start or by the operator running the rollback again: every start gets its end, the
/// store shows the rollback exactly when the log says it happened, and a rollback that had
/// taken effect is not swapped straight back by the rerun.
#[test]
fn a_crash_during_a_rollback_is_closed_by_the_next_start_or_the_next_rollback() {
    for point in ROLLBACK_CRASH_POINTS {
        for closer in [
            &["run", "--once"][..],
            &["rollback", "app", "--by", "carol"],
        ] {
            let case = format!("{point}, closed by {closer:?}");
            let (sandbox, first_id, second_id) = rotated_twice();
            let id = |stage: &str| version_id(&sandbox, stage);

            crash_at(&sandbox, point, &["rollback", "app", "--by", "bob"]);
            let out = sandbox.run(closer);

            let took_effect = point == "rollback_after_promote";
            let rerun = closer[0] == "rollback";
            if took_effect && rerun {
                assert_eq!(out.status.code(), Some(6), "{case}: refused");
                let stderr = String::from_utf8_lossy(&out.stderr);
                assert!(
                    stderr.contains("had already taken effect") && stderr.contains("by bob"),
                    "{case}: {stderr}"
                );
            } else {
                assert!(out.status.success(), "{case}: {out:?}");
            }
            // Rolled back once: by the crashed command if it got that far, else by the rerun.
            let rolled_back = took_effect || rerun;
            let (current, previous) = if rolled_back {
                (&first_id, &second_id)
            } else {
                (&second_id, &first_id)
            };
            assert_eq!(
                (id("current"), id("previous")),
                (current.clone(), previous.clone()),
                "{case}"
            );

            let done = sandbox.events("rolled_back", "app");
            let failed = sandbox.events("rollback_failed", "app");
            let started = sandbox.events("rollback_started", "app");
            assert_eq!(
                started.len(),
                done.len() + failed.len(),
                "{case}: an end per start"
            );
            assert_eq!(done.len(), usize::from(rolled_back), "{case}");
            assert_eq!(failed.len(), usize::from(!took_effect), "{case}");
            if let Some(done) = done.first() {
                assert_eq!(
                    (done["from"].as_str(), done["to"].as_str()),
                    (Some(second_id.as_str()), Some(first_id.as_str())),
                    "{case}"
                );
                let by = if took_effect { "bob" } else { "carol" };
                assert_eq!(done["by"], by, "{case}: who asked stays on record");
            }
            if let Some(failed) = failed.first() {
                assert!(
                    failed["error"].as_str().unwrap().contains(&format!(
                        "stopped before the backend made {first_id} current"
                    )),
                    "{case}: {failed}"
                );
            }
            let recorded: Vec<_> = sandbox
                .events("recovery_found", "app")
                .iter()
                .map(|e| e["action"].as_str().unwrap().to_owned())
                .collect();
            let expected: &[&str] = if took_effect {
                &["record_rollback"]
            } else {
                &[]
            };
            assert_eq!(recorded, expected, "{case}");
            assert_audit_intact(&sandbox, &case);
        }
    }
}

/// Processes waiting for a `flock` on the file with inode `inode`, from `/proc/locks`
/// (a waiter's line carries `->`).
fn flock_waiters(inode: u64) -> usize {
    let locks = std::fs::read_to_string("/proc/locks").expect("/proc/locks");
    let suffix = format!(":{inode}");
    locks
        .lines()
        .filter(|line| line.contains("->"))
        .filter(|line| line.split_whitespace().any(|f| f.ends_with(&suffix)))
        .count()
}

/// A starting daemon and a rerun of `rekeyd rollback` both find the same killed rollback
/// open. Released at the same moment, they take turns: it is closed once, and every
/// rollback start has exactly one end.
#[test]
fn two_processes_finding_one_killed_rollback_close_it_once() {
    use std::os::unix::fs::MetadataExt;

    let (sandbox, _, _) = rotated_twice();
    crash_at(&sandbox, "rollback_after_promote", &["rollback", "app"]);

    // Hold the lock both must take, so both are waiting before either reads the log.
    let lock_path = sandbox.path("state/audit.jsonl.closing.lock");
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .unwrap();
    lock.lock().unwrap();
    let inode = std::fs::metadata(&lock_path).unwrap().ino();
    let mut daemon = sandbox.command(&["run", "--once"]).spawn().unwrap();
    let mut rerun = sandbox
        .command(&["rollback", "app", "--by", "carol"])
        .spawn()
        .unwrap();
    wait_for("both to wait for the lock", Duration::from_secs(60), || {
        (flock_waiters(inode) == 2).then_some(())
    });
    drop(lock);
    let (daemon, rerun) = (daemon.wait().unwrap(), rerun.wait().unwrap());
    assert!(daemon.success(), "{daemon:?}");
    // Refused if it closed the killed rollback itself, done if the daemon had.
    assert!(matches!(rerun.code(), Some(0 | 6)), "{rerun:?}");

    let started = sandbox.events("rollback_started", "app");
    let done = sandbox.events("rolled_back", "app");
    let failed = sandbox.events("rollback_failed", "app");
    assert_eq!(
        started.len(),
        done.len() + failed.len(),
        "one end per start: {done:?} {failed:?}"
    );
    let killed = (&started[0]["from"], &started[0]["to"]);
    let ends_of_killed = done
        .iter()
        .filter(|e| (&e["from"], &e["to"]) == killed)
        .count();
    assert_eq!(ends_of_killed, 1, "{done:?}");
    assert_audit_intact(&sandbox, "two closers");
}

/// A killed rollback closed only after rotations have replaced both of its versions: the
/// log's next `promoted` entry, not the backend's state now, tells whether it had taken
/// effect.
#[test]
fn a_killed_rollback_is_judged_by_the_next_promotion_after_it() {
    for point in ROLLBACK_CRASH_POINTS {
        let (sandbox, first_id, second_id) = rotated_twice();
        let id = |stage: &str| version_id(&sandbox, stage);
        crash_at(&sandbox, point, &["rollback", "app"]);
        // Two manual rotations (which do not look at the log) move both versions out.
        sandbox.ok(&["rotate", "app", "--force"]);
        sandbox.ok(&["rotate", "app", "--force"]);
        assert!(
            ![id("current"), id("previous")].contains(&first_id),
            "{point}"
        );
        assert!(
            ![id("current"), id("previous")].contains(&second_id),
            "{point}"
        );

        sandbox.ok(&["run", "--once"]);
        let took_effect = point == "rollback_after_promote";
        let (done, failed) = (
            sandbox.events("rolled_back", "app"),
            sandbox.events("rollback_failed", "app"),
        );
        assert_eq!(
            (done.len(), failed.len()),
            (usize::from(took_effect), usize::from(!took_effect)),
            "{point}: {done:?} {failed:?}"
        );
        assert_audit_intact(&sandbox, point);
    }
}

/// A rotation a crash left open, found while the store cannot read the secret: start-up
/// defers closing it, the outage is audited, and once the store reads again the next
/// run closes it before anything else.
#[test]
fn an_interrupted_rotation_found_during_an_outage_is_closed_once_the_store_reads_again() {
    let sandbox = Sandbox::new(POLICY);
    sandbox.ok(&["rotate", "app"]);
    crash_at(&sandbox, "after_started", &["rotate", "app", "--force"]);
    let crashed = sandbox.events("rotation_started", "app").last().unwrap()["version"]
        .as_str()
        .unwrap()
        .to_owned();
    let file = sandbox.path("state/store-local/app.json");
    let healthy = std::fs::read(&file).unwrap();
    std::fs::write(&file, b"not a store record\n").unwrap();

    let out = sandbox.run(&["run", "--once"]);
    assert!(!out.status.success(), "the secret cannot be looked at");
    let failed = sandbox.events("rotation_failed", "app");
    assert_eq!(failed.len(), 1, "the outage, on record: {failed:?}");
    assert_eq!(failed[0]["step"], "describe");
    assert!(failed[0]["version"].is_null(), "{failed:?}");
    assert!(
        failed[0]["error"]
            .as_str()
            .unwrap()
            .contains("not a valid store file")
    );

    std::fs::write(&file, healthy).unwrap();
    sandbox.ok(&["run", "--once"]);
    let failed = sandbox.events("rotation_failed", "app");
    assert_eq!(failed.len(), 2, "{failed:?}");
    assert_eq!(
        (failed[1]["step"].as_str(), failed[1]["version"].as_str()),
        (Some("interrupted"), Some(crashed.as_str())),
        "the crashed start is closed"
    );
    assert_audit_intact(&sandbox, "after the outage");
}

/// Format 2 (ADR 0006): killed between a store append and its fdatasync. As the process
/// left it, the record is whole (the kernel holds it) and the restart finishes the
/// rotation. Had the machine lost power instead, only part of the record might be on disk
/// (cut here by hand): the restart then sees the state before it and closes the rotation
/// as interrupted. Old state or new, never neither, and no torn record left behind.
#[test]
fn a_crash_between_a_store_append_and_its_fdatasync_leaves_the_old_or_the_new_state() {
    for power_lost in [false, true] {
        let sandbox = Sandbox::new(POLICY);
        sandbox.ok(&["rotate", "app"]);
        let first = sandbox.get("app", "current");
        let first_id = sandbox.status("app")["current"]["id"]
            .as_str()
            .unwrap()
            .to_owned();
        let path = sandbox.path("state/store-local/app.json");
        let durable = std::fs::metadata(&path).unwrap().len();

        crash_at(
            &sandbox,
            "store_after_append",
            &["rotate", "app", "--force"],
        );
        let appended = std::fs::metadata(&path).unwrap().len();
        assert!(appended > durable, "the put appended its record");
        if power_lost {
            let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
            file.set_len(durable + (appended - durable) / 2).unwrap();
        }
        sandbox.ok(&["run", "--once"]);

        let crashed_id = sandbox.events("rotation_started", "app").last().unwrap()["version"]
            .as_str()
            .unwrap()
            .to_owned();
        let actions: Vec<String> = sandbox
            .events("recovery_found", "app")
            .iter()
            .map(|e| e["action"].as_str().unwrap().to_owned())
            .collect();
        let interrupted = sandbox
            .events("rotation_failed", "app")
            .iter()
            .filter(|e| e["step"] == "interrupted")
            .count();
        if power_lost {
            // Nothing was written since: the torn tail is still there, and ignored.
            let status = sandbox.status("app");
            assert_eq!(status["current"]["id"], first_id.as_str(), "{status}");
            assert!(status["pending"].is_null(), "{status}");
            assert_eq!(sandbox.get("app", "current"), first);
            assert!(actions.is_empty(), "{actions:?}");
            assert_eq!(interrupted, 1);
            // The next write cuts it off and appends after the last intact record
            // (store_records checks every line).
            sandbox.ok(&["rotate", "app", "--force"]);
            assert_eq!(sandbox.get("app", "previous"), first);
            assert_eq!(sandbox.store_records("app.json").len(), 4);
        } else {
            // store_record checks every line is intact.
            let vs = versions(&sandbox.store_record("app.json"));
            assert_eq!(
                vs,
                vec![
                    (first_id, vec!["previous".to_owned()]),
                    (crashed_id, vec!["current".to_owned()]),
                ]
            );
            assert_eq!(sandbox.get("app", "previous"), first);
            assert_eq!(actions, ["resume"]);
            assert_eq!(interrupted, 0);
        }
        assert_audit_intact(&sandbox, "store_after_append");
    }
}
