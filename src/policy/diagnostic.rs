//! Diagnostics plumbing: byte offsets to line/column, field paths, "did you mean" suggestions.
//!
//! Paths and positions are only computed when a problem is reported, so a clean policy of
//! 100,000 secrets pays nothing for them.

use std::cell::OnceCell;
use std::fmt;
use std::ops::Range;

use super::Diagnostic;

/// Where a value sits in the policy (`secrets[2].schedule.cron`), formatted only on error.
#[derive(Clone, Copy, Debug)]
pub(super) enum Loc<'a> {
    /// The document itself.
    Root,
    /// A key of the parent table.
    Key(&'a Loc<'a>, &'a str),
    /// An element of the parent array.
    Index(&'a Loc<'a>, usize),
}

impl<'a> Loc<'a> {
    /// The path of `key` inside this table.
    pub(super) fn key(&'a self, key: &'a str) -> Loc<'a> {
        Loc::Key(self, key)
    }

    /// The path of element `index` of this array.
    pub(super) fn index(&'a self, index: usize) -> Loc<'a> {
        Loc::Index(self, index)
    }

    /// "at the top level" or "in secrets[0]", for messages about this table.
    pub(super) fn place(&self) -> String {
        match self {
            Loc::Root => "at the top level".to_owned(),
            _ => format!("in {self}"),
        }
    }
}

impl fmt::Display for Loc<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Loc::Root => Ok(()),
            Loc::Key(parent, key) => {
                parent.fmt(f)?;
                if !matches!(parent, Loc::Root) {
                    f.write_str(".")?;
                }
                // Quote keys the way TOML would need them, so the path can be searched for.
                let bare = !key.is_empty()
                    && key
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
                if bare {
                    f.write_str(key)
                } else {
                    write!(f, "{key:?}")
                }
            }
            Loc::Index(parent, index) => {
                parent.fmt(f)?;
                write!(f, "[{index}]")
            }
        }
    }
}

/// Collects the problems of one policy file.
pub(super) struct Diags<'t> {
    file: String,
    text: &'t str,
    /// Byte offset of each line's start; built on the first problem only.
    line_starts: OnceCell<Vec<usize>>,
    found: Vec<(usize, Diagnostic)>,
}

impl<'t> Diags<'t> {
    /// A collector for `text`, read from the file named `file`.
    pub(super) fn new(file: String, text: &'t str) -> Self {
        Self {
            file,
            text,
            line_starts: OnceCell::new(),
            found: Vec::new(),
        }
    }

    /// Records a problem at the start of `span`.
    pub(super) fn report(
        &mut self,
        span: Range<usize>,
        loc: &Loc<'_>,
        message: impl Into<String>,
        hint: impl Into<String>,
    ) {
        let (line, column) = self.line_col(span.start);
        self.found.push((
            span.start,
            Diagnostic {
                file: self.file.clone(),
                line,
                column,
                path: loc.to_string(),
                message: message.into(),
                hint: hint.into(),
            },
        ));
    }

    /// True while nothing has been reported.
    pub(super) fn is_clean(&self) -> bool {
        self.found.is_empty()
    }

    /// The 1-based line of a byte offset.
    pub(super) fn line(&self, offset: usize) -> usize {
        self.line_col(offset).0
    }

    /// 1-based line and column (in characters) of a byte offset.
    fn line_col(&self, offset: usize) -> (usize, usize) {
        let text = self.text;
        let starts = self.line_starts.get_or_init(|| {
            std::iter::once(0)
                .chain(text.match_indices('\n').map(|(i, _)| i + 1))
                .collect()
        });
        let offset = offset.min(text.len());
        // `starts[0] == 0 <= offset`, so at least one start precedes it.
        let line = starts.partition_point(|&start| start <= offset);
        let start = starts[line - 1];
        let column = match text.get(start..offset) {
            Some(prefix) => prefix.chars().count() + 1,
            None => offset - start + 1,
        };
        (line, column)
    }

    /// The problems, sorted by position (ties keep the order they were found in).
    pub(super) fn finish(mut self) -> Vec<Diagnostic> {
        self.found.sort_by_key(|(offset, _)| *offset);
        self.found.into_iter().map(|(_, d)| d).collect()
    }
}

/// The candidate closest to `word`, if it is close enough to be a likely typo.
pub(super) fn closest<'c>(word: &str, candidates: &[&'c str]) -> Option<&'c str> {
    let word_lower = word.to_lowercase();
    candidates
        .iter()
        .map(|c| (edit_distance(&word_lower, &c.to_lowercase()), *c))
        .filter(|(distance, c)| {
            let longer = word.chars().count().max(c.chars().count());
            *distance <= 2 && distance * 2 < longer
        })
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, c)| c)
}

/// Edit distance over characters where swapping two neighbours counts as one edit
/// (optimal string alignment), since `fiel` for `file` is a typical typo.
fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let width = b.len() + 1;
    let mut m = vec![0usize; (a.len() + 1) * width];
    for i in 0..=a.len() {
        for j in 0..=b.len() {
            m[i * width + j] = if i == 0 || j == 0 {
                i + j
            } else {
                let cost = usize::from(a[i - 1] != b[j - 1]);
                let mut best = (m[(i - 1) * width + j] + 1)
                    .min(m[i * width + j - 1] + 1)
                    .min(m[(i - 1) * width + j - 1] + cost);
                if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                    best = best.min(m[(i - 2) * width + j - 2] + 1);
                }
                best
            };
        }
    }
    m[a.len() * width + b.len()]
}

/// A duration in the one largest unit that divides it (`30d`, `90m`, `1d`), so messages
/// read like what users write; `format_duration` would say `4w2d` for `30d`.
pub(super) fn human(duration: std::time::Duration) -> String {
    if duration.subsec_nanos() != 0 {
        return crate::schedule::format_duration(duration);
    }
    let secs = duration.as_secs();
    for (unit, size) in [("d", 86_400), ("h", 3_600), ("m", 60)] {
        if secs >= size && secs.is_multiple_of(size) {
            return format!("{}{unit}", secs / size);
        }
    }
    format!("{secs}s")
}

/// "`a`, `b`, `c`" for hints.
pub(super) fn list(names: &[&str]) -> String {
    names
        .iter()
        .map(|n| format!("`{n}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// " did you mean `x`?" when a close candidate exists, else "".
pub(super) fn did_you_mean(word: &str, candidates: &[&str]) -> String {
    match closest(word, candidates) {
        Some(c) => format!("; did you mean `{c}`?"),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distance_and_suggestions() {
        assert_eq!(edit_distance("schedul", "schedule"), 1);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("fiel", "file"), 1);
        assert_eq!(closest("fiel", &["file", "aws", "vault"]), Some("file"));
        assert_eq!(closest("schedul", &["name", "schedule"]), Some("schedule"));
        assert_eq!(closest("Grace", &["grace"]), Some("grace"));
        assert_eq!(closest("zzz", &["name", "schedule"]), None);
        assert_eq!(closest("x", &["y"]), None);
    }

    #[test]
    fn positions_count_characters_from_one() {
        let d = Diags::new("f".into(), "ab\nçd = 1\n");
        assert_eq!(d.line_col(0), (1, 1));
        assert_eq!(d.line_col(3), (2, 1));
        // `ç` is two bytes but one column.
        assert_eq!(d.line_col(5), (2, 2));
        assert_eq!(d.line_col(999), (3, 1));
    }

    #[test]
    fn durations_read_in_one_unit() {
        use std::time::Duration;
        assert_eq!(human(Duration::from_secs(30 * 86_400)), "30d");
        assert_eq!(human(Duration::from_secs(90 * 60)), "90m");
        assert_eq!(human(Duration::from_secs(86_400)), "1d");
        assert_eq!(human(Duration::from_secs(45)), "45s");
        assert_eq!(human(Duration::ZERO), "0s");
    }

    #[test]
    fn paths_quote_odd_keys() {
        let root = Loc::Root;
        let secrets = root.key("secrets");
        let first = secrets.index(2);
        assert_eq!(first.key("schedule").to_string(), "secrets[2].schedule");
        let backends = root.key("backends");
        assert_eq!(backends.key("a.b").to_string(), "backends.\"a.b\"");
        assert_eq!(root.place(), "at the top level");
        assert_eq!(first.place(), "in secrets[2]");
    }
}
