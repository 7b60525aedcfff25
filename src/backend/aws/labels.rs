//! AWS staging labels ↔ rekeyd stages, one to one, plus the two cases AWS forces on us.
//!
//! `AWSCURRENT` is `current`, `AWSPREVIOUS` is `previous`, `AWSPENDING` is `pending`. Two
//! label states need a rule, because AWS creates them itself:
//!
//! - **`AWSPENDING` left on a promoted version.** Promotion moves `AWSCURRENT` only (the
//!   protocol minimum, as AWS's own rotation functions do), so the new current version keeps
//!   `AWSPENDING` until the next rotation's put moves it. AWS documents that state as "no
//!   rotation in progress", and so does rekeyd: `AWSPENDING` on a version that also holds
//!   `AWSCURRENT` or `AWSPREVIOUS` is not a pending version.
//! - **A secret's first version is made `AWSCURRENT` by AWS** the moment it is stored, even
//!   when the put asked for `AWSPENDING` only. rekeyd stores a first version with the extra
//!   label [`UNPROMOTED`], which reads as "pending, not yet current" until `promote` removes
//!   it. AWS consumers read it as current all the same: there is no older value to read.

use crate::secret::Stage;

/// The label of the current version.
pub(super) const CURRENT: &str = "AWSCURRENT";
/// The label of the previous version.
pub(super) const PREVIOUS: &str = "AWSPREVIOUS";
/// The label of a version a rotation is about to make current.
pub(super) const PENDING: &str = "AWSPENDING";
/// rekeyd's own label on a first version that AWS made current before rekeyd promoted it.
pub(super) const UNPROMOTED: &str = "REKEYD_UNPROMOTED";

/// One version's labels as AWS reported them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(super) struct Labels(pub(super) Vec<String>);

impl Labels {
    pub(super) fn has(&self, label: &str) -> bool {
        self.0.iter().any(|l| l == label)
    }

    /// A pending version, as far as this version's own labels tell.
    pub(super) fn is_pending(&self) -> bool {
        (self.has(PENDING) && !self.has(PREVIOUS) && (!self.has(CURRENT) || self.has(UNPROMOTED)))
            || (self.has(CURRENT) && self.has(UNPROMOTED))
    }

    /// The current version rekeyd promoted (or anyone else did).
    pub(super) fn is_current(&self) -> bool {
        self.has(CURRENT) && !self.has(UNPROMOTED)
    }

    /// Whether reading `stage` may return the version with these labels.
    pub(super) fn holds(&self, stage: Stage) -> bool {
        match stage {
            Stage::Current => self.is_current(),
            Stage::Previous => self.has(PREVIOUS),
            Stage::Pending => self.is_pending(),
        }
    }

    /// The stages of one version, before [`stages_of_all`] settles a clash.
    fn stages(&self) -> Vec<Stage> {
        Stage::ALL.into_iter().filter(|s| self.holds(*s)).collect()
    }
}

/// The stages of every version, each stage on one version at most.
///
/// The one possible clash: a first version still marked [`UNPROMOTED`] and a later put
/// that moved `AWSPENDING` to a new version. The version holding `AWSPENDING` is pending
/// (the put moved `pending`, as the contract says), and the first version holds nothing.
pub(super) fn stages_of_all(labels: &[&Labels]) -> Vec<Vec<Stage>> {
    let mut out: Vec<Vec<Stage>> = labels.iter().map(|l| l.stages()).collect();
    let pending: Vec<usize> = (0..out.len())
        .filter(|i| out[*i].contains(&Stage::Pending))
        .collect();
    if pending.len() > 1 {
        for i in pending {
            if !labels[i].has(PENDING) || labels[i].has(CURRENT) {
                out[i].retain(|s| *s != Stage::Pending);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(l: &[&str]) -> Labels {
        Labels(l.iter().map(|s| (*s).to_owned()).collect())
    }

    #[test]
    fn the_three_labels_map_one_to_one() {
        assert_eq!(labels(&[CURRENT]).stages(), vec![Stage::Current]);
        assert_eq!(labels(&[PREVIOUS]).stages(), vec![Stage::Previous]);
        assert_eq!(labels(&[PENDING]).stages(), vec![Stage::Pending]);
        assert_eq!(labels(&[]).stages(), Vec::<Stage>::new());
        assert_eq!(
            labels(&["custom", CURRENT]).stages(),
            vec![Stage::Current],
            "other labels are ignored"
        );
    }

    #[test]
    fn pending_left_on_a_promoted_version_is_not_pending() {
        assert_eq!(labels(&[CURRENT, PENDING]).stages(), vec![Stage::Current]);
        assert_eq!(labels(&[PREVIOUS, PENDING]).stages(), vec![Stage::Previous]);
        assert!(!labels(&[CURRENT, PENDING]).holds(Stage::Pending));
    }

    #[test]
    fn an_unpromoted_first_version_is_pending_not_current() {
        let first = labels(&[PENDING, UNPROMOTED, CURRENT]);
        assert_eq!(first.stages(), vec![Stage::Pending]);
        assert!(!first.holds(Stage::Current));
        assert!(first.holds(Stage::Pending));
        // Pushed out of AWSCURRENT before it was promoted: the marker means nothing.
        assert_eq!(
            labels(&[PREVIOUS, UNPROMOTED]).stages(),
            vec![Stage::Previous]
        );
    }

    #[test]
    fn a_put_after_an_unpromoted_first_version_moves_pending() {
        let first = labels(&[UNPROMOTED, CURRENT]);
        let second = labels(&[PENDING]);
        assert_eq!(
            stages_of_all(&[&first, &second]),
            vec![vec![], vec![Stage::Pending]]
        );
    }
}
