//! Decides what a secret needs now, from its policy, what the backend holds and the clock.
//!
//! Pure: no I/O, so every rule (slots, jitter, catch-up, max age, grace, leftovers) is
//! unit-tested with fixed times.

use chrono::{DateTime, Duration as ChronoDuration, Utc};

use crate::audit::Trigger;
use crate::backend::SecretDescription;
use crate::policy::SecretPolicy;
use crate::schedule;
use crate::secret::{Stage, VersionId};

/// A scheduled rotation that rekeyd runs late by more than this is a catch-up, not on time.
pub const ON_TIME_TOLERANCE: ChronoDuration = ChronoDuration::minutes(5);

/// A rotation to run: which version id to write and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Due {
    /// The version id to write.
    pub version: VersionId,
    /// The schedule slot, for scheduled rotations.
    pub slot: Option<DateTime<Utc>>,
    /// Why.
    pub trigger: Trigger,
}

/// What the secret needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Plan {
    /// A pending version was left by an interrupted rotation.
    Recover {
        /// The pending version.
        version: VersionId,
        /// Finish it (rekeyd made it) or discard it (someone else did).
        resume: bool,
    },
    /// Rotate now.
    Rotate(Due),
    /// Nothing to do until `until`.
    Wait {
        /// When to look again.
        until: DateTime<Utc>,
    },
    /// The schedule will never fire again and nothing else forces a rotation.
    Idle,
}

fn chrono(d: std::time::Duration) -> ChronoDuration {
    ChronoDuration::from_std(d).unwrap_or(ChronoDuration::MAX)
}

/// When `slot` is due for this secret: the slot plus its stable jitter.
pub fn due_at(secret: &SecretPolicy, slot: DateTime<Utc>) -> DateTime<Utc> {
    match secret.window {
        Some(window) => slot + chrono(schedule::jitter(secret.name.as_str(), slot, window)),
        None => slot,
    }
}

/// The latest slot whose due time has passed at `now`.
pub fn latest_due_slot(secret: &SecretPolicy, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    let latest = secret.schedule.latest_at_or_before(now)?;
    if due_at(secret, latest) <= now {
        return Some(latest);
    }
    secret
        .schedule
        .latest_at_or_before(latest - ChronoDuration::seconds(1))
}

/// The next rotation times after `now` (a plan for `rekeyd check`), ignoring backend state.
pub fn upcoming(secret: &SecretPolicy, now: DateTime<Utc>, count: usize) -> Vec<DateTime<Utc>> {
    let mut out = Vec::with_capacity(count);
    let mut cursor = latest_due_slot(secret, now).unwrap_or(now);
    while out.len() < count {
        match secret.schedule.next_after(cursor) {
            Some(slot) => {
                out.push(due_at(secret, slot));
                cursor = slot;
            }
            None => break,
        }
    }
    out
}

/// Decides what `secret` needs at `now`, given the backend's description (`None`: the
/// secret does not exist yet).
pub fn plan(secret: &SecretPolicy, state: Option<&SecretDescription>, now: DateTime<Utc>) -> Plan {
    let current = state.and_then(|s| s.stage(Stage::Current));
    if let Some(pending) = state.and_then(|s| s.stage(Stage::Pending))
        && current.is_none_or(|c| c.id != pending.id)
    {
        return Plan::Recover {
            version: pending.id.clone(),
            resume: pending.id.requested_at().is_some(),
        };
    }
    let due_slot = latest_due_slot(secret, now);
    let Some(current) = current else {
        return Plan::Rotate(Due {
            version: match due_slot {
                Some(slot) => VersionId::for_slot(&secret.name, slot),
                None => VersionId::for_manual(&secret.name, now),
            },
            slot: due_slot,
            trigger: Trigger::Initial,
        });
    };
    // A version covers every slot up to when it was asked for. After a rollback the
    // previous version is the newer one: its slot is handled too, or the next look would
    // promote the version an operator just rolled back from.
    let asked = |v: &crate::backend::VersionInfo| v.id.requested_at().unwrap_or(v.created_at);
    let rolled_back_from = state
        .and_then(|s| s.stage(Stage::Previous))
        .map(asked)
        .filter(|previous| *previous > asked(current));
    let covered = rolled_back_from.unwrap_or_else(|| asked(current));
    // The previous version must stay readable for `grace` after it stopped being current.
    let grace_ends = current.created_at + chrono(secret.grace);

    let mut wanted: Option<Due> = None;
    if let Some(slot) = due_slot.filter(|slot| *slot > covered) {
        let late = now - due_at(secret, slot);
        wanted = Some(Due {
            version: VersionId::for_slot(&secret.name, slot),
            slot: Some(slot),
            trigger: if late <= ON_TIME_TOLERANCE {
                Trigger::Schedule
            } else {
                Trigger::CatchUp
            },
        });
    }
    let age_deadline = secret.max_age.map(|max| current.created_at + chrono(max));
    if wanted.is_none()
        && let Some(deadline) = age_deadline.filter(|d| *d <= now)
    {
        wanted = Some(Due {
            version: VersionId::for_deadline(&secret.name, deadline),
            slot: None,
            trigger: Trigger::MaxAge,
        });
    }
    if let Some(due) = wanted {
        if now < grace_ends {
            return Plan::Wait { until: grace_ends };
        }
        return Plan::Rotate(due);
    }

    let next_slot = secret
        .schedule
        .next_after(covered.max(due_slot.unwrap_or(covered)))
        .map(|slot| due_at(secret, slot));
    match (next_slot, age_deadline) {
        (Some(a), Some(b)) => Plan::Wait {
            until: a.min(b).max(grace_ends),
        },
        (Some(t), None) | (None, Some(t)) => Plan::Wait {
            until: t.max(grace_ends),
        },
        (None, None) => Plan::Idle,
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use chrono::TimeZone;

    use super::*;
    use crate::backend::VersionInfo;
    use crate::generate::{BytesSpec, Encoding, GeneratorSpec};
    use crate::schedule::Schedule;
    use crate::secret::SecretName;

    const HOUR: Duration = Duration::from_secs(3600);

    fn secret(schedule: Schedule) -> SecretPolicy {
        SecretPolicy::example(
            schedule,
            GeneratorSpec::Bytes(BytesSpec {
                length: 32,
                encoding: Encoding::Hex,
            }),
        )
    }

    fn daily_0230() -> Schedule {
        Schedule::cron("30 2 * * *", None).unwrap()
    }

    fn at(d: u32, h: u32, m: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, d, h, m, 0).unwrap()
    }

    fn described(versions: Vec<(VersionId, DateTime<Utc>, Vec<Stage>)>) -> SecretDescription {
        SecretDescription {
            name: SecretName::new("app/db").unwrap(),
            versions: versions
                .into_iter()
                .map(|(id, created_at, stages)| VersionInfo {
                    id,
                    created_at,
                    stages,
                })
                .collect(),
        }
    }

    fn current_for_slot(s: &SecretPolicy, slot: DateTime<Utc>) -> SecretDescription {
        described(vec![(
            VersionId::for_slot(&s.name, slot),
            slot,
            vec![Stage::Current],
        )])
    }

    #[test]
    fn a_missing_secret_is_created_for_the_latest_slot() {
        let s = secret(daily_0230());
        let plan = plan(&s, None, at(25, 9, 0));
        assert_eq!(
            plan,
            Plan::Rotate(Due {
                version: VersionId::for_slot(&s.name, at(25, 2, 30)),
                slot: Some(at(25, 2, 30)),
                trigger: Trigger::Initial,
            })
        );
    }

    #[test]
    fn after_its_slot_is_done_the_secret_waits_for_the_next_one() {
        let s = secret(daily_0230());
        let state = current_for_slot(&s, at(25, 2, 30));
        assert_eq!(
            plan(&s, Some(&state), at(25, 9, 0)),
            Plan::Wait {
                until: at(26, 2, 30)
            }
        );
    }

    #[test]
    fn a_slot_is_due_on_time_and_a_missed_one_is_caught_up_once() {
        let s = secret(daily_0230());
        let state = current_for_slot(&s, at(24, 2, 30));
        let on_time = plan(&s, Some(&state), at(25, 2, 31));
        assert!(
            matches!(&on_time, Plan::Rotate(d) if d.trigger == Trigger::Schedule && d.slot == Some(at(25, 2, 30))),
            "{on_time:?}"
        );
        // Down for three days: one catch-up rotation for the latest slot, not three.
        let state = current_for_slot(&s, at(21, 2, 30));
        let late = plan(&s, Some(&state), at(24, 12, 0));
        assert!(
            matches!(&late, Plan::Rotate(d) if d.trigger == Trigger::CatchUp && d.slot == Some(at(24, 2, 30))),
            "{late:?}"
        );
    }

    #[test]
    fn a_pending_version_is_recovered_first() {
        let s = secret(daily_0230());
        let ours = VersionId::for_slot(&s.name, at(25, 2, 30));
        let state = described(vec![
            (
                VersionId::for_slot(&s.name, at(24, 2, 30)),
                at(24, 2, 30),
                vec![Stage::Current],
            ),
            (ours.clone(), at(25, 2, 30), vec![Stage::Pending]),
        ]);
        assert_eq!(
            plan(&s, Some(&state), at(25, 3, 0)),
            Plan::Recover {
                version: ours,
                resume: true
            }
        );
        let foreign = VersionId::new("3f1c2a8e-0000-4000-8000-000000000000");
        let state = described(vec![
            (
                VersionId::for_slot(&s.name, at(24, 2, 30)),
                at(24, 2, 30),
                vec![Stage::Current],
            ),
            (foreign.clone(), at(25, 2, 30), vec![Stage::Pending]),
        ]);
        assert_eq!(
            plan(&s, Some(&state), at(25, 3, 0)),
            Plan::Recover {
                version: foreign,
                resume: false
            },
            "a pending version rekeyd did not make is discarded, not promoted"
        );
    }

    #[test]
    fn the_window_delays_each_slot_by_a_stable_offset() {
        let mut s = secret(daily_0230());
        s.window = Some(HOUR);
        let due = due_at(&s, at(25, 2, 30));
        assert!(due >= at(25, 2, 30) && due < at(25, 3, 30), "{due}");
        assert_eq!(due, due_at(&s, at(25, 2, 30)), "stable");
        let state = current_for_slot(&s, at(24, 2, 30));
        // Between the slot and its jittered due time nothing is due yet.
        if due > at(25, 2, 30) {
            assert_eq!(
                plan(&s, Some(&state), at(25, 2, 30)),
                Plan::Wait { until: due }
            );
        }
        assert!(matches!(plan(&s, Some(&state), due), Plan::Rotate(_)));
    }

    #[test]
    fn max_age_forces_a_rotation_with_a_deadline_id_replicas_agree_on() {
        let mut s = secret(Schedule::cron("0 0 1 1 *", None).unwrap());
        s.max_age = Some(HOUR * 24 * 30);
        // An externally created version (no rekeyd id), 40 days old.
        let created = at(25, 0, 0) - chrono::Duration::days(40);
        let state = described(vec![(
            VersionId::new("EXAMPLE-1111-2222-3333-444444444444"),
            created,
            vec![Stage::Current],
        )]);
        let deadline = created + chrono::Duration::days(30);
        match plan(&s, Some(&state), at(25, 0, 0)) {
            Plan::Rotate(due) => {
                assert_eq!(due.trigger, Trigger::MaxAge);
                assert_eq!(due.version, VersionId::for_deadline(&s.name, deadline));
            }
            other => panic!("{other:?}"),
        }
        // Younger than max_age: wait for whichever comes first, deadline or slot.
        let state = described(vec![(
            VersionId::new("EXAMPLE-1111-2222-3333-444444444444"),
            at(20, 0, 0),
            vec![Stage::Current],
        )]);
        assert_eq!(
            plan(&s, Some(&state), at(25, 0, 0)),
            Plan::Wait {
                until: at(20, 0, 0) + chrono::Duration::days(30)
            }
        );
    }

    #[test]
    fn nothing_rotates_inside_the_grace_period() {
        let mut s = secret(daily_0230());
        s.grace = HOUR * 12;
        // Rotated manually at 20:00 yesterday; today's 02:30 slot is due, but the
        // previous version must stay readable until 08:00.
        let state = described(vec![(
            VersionId::for_manual(&s.name, at(24, 20, 0)),
            at(24, 20, 0),
            vec![Stage::Current],
        )]);
        assert_eq!(
            plan(&s, Some(&state), at(25, 3, 0)),
            Plan::Wait {
                until: at(25, 8, 0)
            }
        );
        assert!(matches!(
            plan(&s, Some(&state), at(25, 8, 0)),
            Plan::Rotate(_)
        ));
    }

    /// Regression (found in review of issue 7): after `rekeyd rollback` the next look
    /// promoted the rolled-back version again, undoing the rollback.
    #[test]
    fn a_rollback_holds_until_the_next_slot() {
        let s = secret(daily_0230());
        let older = VersionId::for_slot(&s.name, at(24, 2, 30));
        let rejected = VersionId::for_slot(&s.name, at(25, 2, 30));
        let state = described(vec![
            (older, at(24, 2, 30), vec![Stage::Current]),
            (rejected, at(25, 2, 30), vec![Stage::Previous]),
        ]);
        assert_eq!(
            plan(&s, Some(&state), at(25, 9, 0)),
            Plan::Wait {
                until: at(26, 2, 30)
            }
        );
    }

    #[test]
    fn upcoming_lists_the_next_slots() {
        let s = secret(daily_0230());
        assert_eq!(
            upcoming(&s, at(25, 9, 0), 3),
            vec![at(26, 2, 30), at(27, 2, 30), at(28, 2, 30)]
        );
    }
}
