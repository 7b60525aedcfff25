//! A large policy read in parts, on every core: the text before the first `[[secrets]]`
//! line (daemon, backends, notify targets, API, defaults), then runs of `[[secrets]]`
//! tables of about 64 KiB each, each parsed and checked on its own.
//!
//! Parsing is most of a load (issue 8: 100,000 secrets in under 250 ms), and one TOML
//! tree for the whole file is twenty times its size; parts are parsed two at a time (on
//! two cores) and each tree is dropped as soon as its secrets are built. Parts are small
//! because the parser's buffers (its tokens and events) are several times the text: a
//! mebibyte's worth of text needed buffers big enough that the allocator mapped them
//! fresh from the kernel each time, and faulting those pages in was a fifth of a load's
//! CPU; a 64 KiB part's buffers are reused from the heap. Settings built in one part are
//! shared with the others (`SharedSettings`), so more parts do not mean more copies.
//!
//! Only a policy with no problem at all is accepted this way. At the first problem, or
//! anything a part cannot decide alone (a syntax error, a cut that fell inside a multi-line
//! string, another top-level table after the secrets, a name defined twice), this
//! gives up and the caller reads the whole file in one piece, which reports every problem
//! with its file, line, field and fix. Diagnostics are therefore the one-piece read's by
//! construction, and a valid policy gives the same `Policy` either way (tested below).

use std::collections::HashSet;
use std::hash::BuildHasherDefault;
use std::ops::Range;
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use toml::de::DeTable;

use super::diagnostic::Diags;
use super::secrets::{NameHasher, SecretWalk, SharedSettings, secrets_array};
use super::validate::{self, Header};
use super::{Policy, SecretPolicy};

/// How a policy is cut.
pub(super) struct Sizes {
    /// Smaller policies are read in one piece: parts would not pay for their threads.
    pub(super) smallest: usize,
    /// Roughly how much text goes into one part.
    pub(super) part: usize,
}

impl Sizes {
    pub(super) const DEFAULT: Sizes = Sizes {
        smallest: 256 * 1024,
        part: 64 * 1024,
    };
}

/// The policy, if it is read in parts and has no problem; `None`: read it whole.
pub(super) fn policy(file: &Path, text: &str, sizes: &Sizes) -> Option<Policy> {
    if text.len() < sizes.smallest {
        return None;
    }
    let cuts = cuts(text, sizes.part)?;
    let head = &text[..cuts[0]];
    let doc = DeTable::parse(head).ok()?;
    let root = doc.get_ref();
    if root.contains_key("secrets") {
        return None;
    }
    let mut d = Diags::new(String::new(), head);
    let header = validate::header(&mut d, root, file);
    let defaults = SecretWalk::new(
        head,
        &header.backend_names,
        &header.notify_names,
        header.min_interval,
    )
    .defaults(&mut d, root);
    if !d.is_clean() {
        return None;
    }
    let parts: Vec<Range<usize>> = cuts
        .iter()
        .zip(cuts.iter().skip(1).chain([&text.len()]))
        .map(|(&start, &end)| start..end)
        .collect();

    // Work items: 0 is the digest of the whole text, then one per part.
    let next = AtomicUsize::new(0);
    let failed = AtomicBool::new(false);
    let digest = Mutex::new(None);
    let done: Mutex<Vec<(usize, Vec<SecretPolicy>)>> = Mutex::new(Vec::with_capacity(parts.len()));
    let shared = SharedSettings::default();
    let work = || {
        loop {
            let item = next.fetch_add(1, Ordering::Relaxed);
            if item > parts.len() || failed.load(Ordering::Relaxed) {
                return;
            }
            if item == 0 {
                *digest.lock().expect("digest") = Some(validate::digest(text));
                continue;
            }
            match secrets_of(&text[parts[item - 1].clone()], &header, &defaults, &shared) {
                Some(secrets) => done.lock().expect("parts").push((item - 1, secrets)),
                None => failed.store(true, Ordering::Relaxed),
            }
        }
    };
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    std::thread::scope(|scope| {
        let helpers: Vec<_> = (1..threads.min(parts.len() + 1))
            .map(|_| scope.spawn(work))
            .collect();
        work();
        for helper in helpers {
            if let Err(panic) = helper.join() {
                std::panic::resume_unwind(panic);
            }
        }
    });
    if failed.into_inner() {
        return None;
    }
    let mut done = done.into_inner().expect("parts");
    done.sort_unstable_by_key(|(part, _)| *part);
    let total = done.iter().map(|(_, s)| s.len()).sum();
    let mut secrets = Vec::with_capacity(total);
    for (_, part) in done {
        secrets.extend(part);
    }
    if defined_twice(&secrets) {
        return None;
    }
    let digest = digest.into_inner().expect("digest")?;
    Some(header.into_policy(file, digest, secrets))
}

/// The secrets of one part, if it holds only `[[secrets]]` tables and every one is valid.
fn secrets_of(
    part: &str,
    header: &Header<'_>,
    defaults: &super::secrets::Fields<'_>,
    shared: &SharedSettings,
) -> Option<Vec<SecretPolicy>> {
    let doc = DeTable::parse(part).ok()?;
    let root = doc.get_ref();
    if root.len() != 1 {
        return None;
    }
    let mut d = Diags::new(String::new(), part);
    let items = secrets_array(&mut d, root)?;
    let mut walk = SecretWalk::new(
        part,
        &header.backend_names,
        &header.notify_names,
        header.min_interval,
    )
    .in_part(shared);
    // Positions only name secrets in diagnostics, and any diagnostic sends the file to
    // the one-piece read: the part's own numbering will do.
    walk.secrets(&mut d, items, 0, defaults);
    d.is_clean().then(|| walk.finish())
}

/// Whether a name is defined twice, in one part or in two: a part's walk leaves names to
/// this one check over all of them.
fn defined_twice(secrets: &[SecretPolicy]) -> bool {
    let mut seen: HashSet<&str, BuildHasherDefault<NameHasher>> =
        HashSet::with_capacity_and_hasher(secrets.len(), Default::default());
    !secrets.iter().all(|s| seen.insert(s.name.as_str()))
}

/// Where parts start: the first line that is exactly a `[[secrets]]` header (a comment
/// may follow), then the first such line at least `part` bytes after the previous cut.
/// `None` when there is no such line.
fn cuts(text: &str, part: usize) -> Option<Vec<usize>> {
    let mut cuts = vec![next_header(text, 0)?];
    loop {
        let mut from = cuts[cuts.len() - 1] + part;
        while from < text.len() && !text.is_char_boundary(from) {
            from += 1;
        }
        match (from < text.len())
            .then(|| next_header(text, from))
            .flatten()
        {
            Some(cut) => cuts.push(cut),
            None => return Some(cuts),
        }
    }
}

/// The start of the first `[[secrets]]` header line at or after `from`.
fn next_header(text: &str, from: usize) -> Option<usize> {
    if from == 0 && is_header(text) {
        return Some(0);
    }
    let mut search = from;
    loop {
        let line = search + text[search..].find("\n[[secrets]]")? + 1;
        if is_header(&text[line..]) {
            return Some(line);
        }
        search = line;
    }
}

/// Whether `rest` starts with a line that is `[[secrets]]` and nothing else but blanks
/// or a comment.
fn is_header(rest: &str) -> bool {
    let Some(after) = rest.strip_prefix("[[secrets]]") else {
        return false;
    };
    let line = after.split('\n').next().unwrap_or_default();
    let line = line.strip_suffix('\r').unwrap_or(line);
    let line = line.trim_start_matches([' ', '\t']);
    line.is_empty() || line.starts_with('#')
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::policy::SecretSettings;

    /// Parts of a few hundred bytes, so small policies exercise every path.
    const TINY: Sizes = Sizes {
        smallest: 0,
        part: 200,
    };

    const HEAD: &str = r#"
[daemon]
state_dir = "state"

[backends.local]
type = "file"

[notify.hooks]
url = "https://hooks.example/rekeyd"
secret_env = "HOOKS_WHSEC"

[defaults]
backend = "local"
schedule = { every = "30d" }
generator = { type = "password", length = 32 }
tags = { managed_by = "rekeyd" }
"#;

    fn secrets(count: usize) -> String {
        let mut text = String::new();
        for i in 0..count {
            text.push_str(&format!("[[secrets]]\nname = \"app/{i}\"\n"));
            match i % 4 {
                0 => text.push_str("schedule = { cron = \"30 2 * * *\", timezone = \"Europe/Berlin\" }\ngrace = \"12h\"\n"),
                1 => text.push_str("owner = \"team\"\nnotify = [\"hooks\"]\n"),
                2 => text.push_str("[secrets.tags]\nenv = \"prod\"\n"),
                _ => text.push_str("generator = { type = \"bytes\", length = 16 } # hex\n"),
            }
            text.push('\n');
        }
        text
    }

    fn same(text: &str) {
        let file = Path::new("p.toml");
        let parts = policy(file, text, &TINY).expect("read in parts");
        let whole = validate::whole(file, text).expect("valid");
        assert_eq!(format!("{parts:?}"), format!("{whole:?}"));
        assert!(cuts(text, TINY.part).unwrap().len() > 3, "several parts");
    }

    #[test]
    fn a_valid_policy_reads_the_same_in_parts_and_whole() {
        same(&format!("{HEAD}{}", secrets(40)));
        // CRLF line ends, and a comment after a header.
        same(&format!("{HEAD}{}", secrets(40)).replace('\n', "\r\n"));
        same(&format!("{HEAD}{}", secrets(40)).replace("[[secrets]]\n", "[[secrets]] # one\n"));
        for file in ["config/example.toml", "config/production.toml"] {
            let text =
                std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(file)).unwrap();
            let example = Path::new(env!("CARGO_MANIFEST_DIR")).join(file);
            let parts = policy(&example, &text, &TINY).expect(file);
            let whole = validate::whole(&example, &text).expect(file);
            assert_eq!(format!("{parts:?}"), format!("{whole:?}"), "{file}");
        }
    }

    /// Secrets with the same settings share one copy across parts, as in a one-piece read:
    /// many small parts must not mean many copies held by the daemon.
    #[test]
    fn parts_share_settings_with_each_other() {
        let text = format!("{HEAD}{}", secrets(40));
        let parts = policy(Path::new("p.toml"), &text, &TINY).expect("read in parts");
        assert!(cuts(&text, TINY.part).unwrap().len() > 10, "many parts");
        // `secrets` repeats four kinds of secret: app/1 and app/37 are in different parts.
        let (first, last) = (
            parts.secret("app/1").unwrap(),
            parts.secret("app/37").unwrap(),
        );
        assert!(Arc::ptr_eq(first.settings(), last.settings()));
        let distinct: HashSet<*const SecretSettings> = parts
            .secrets
            .iter()
            .map(|s| Arc::as_ptr(s.settings()))
            .collect();
        assert_eq!(distinct.len(), 4);
    }

    /// Whatever a part cannot decide alone goes to the one-piece read.
    #[test]
    fn anything_a_part_cannot_decide_is_read_whole() {
        let file = Path::new("p.toml");
        let valid = format!("{HEAD}{}", secrets(40));
        assert!(policy(file, &valid, &TINY).is_some());
        let whole_only = |text: &str| policy(file, text, &TINY).is_none();
        // A problem in one secret.
        assert!(whole_only(
            &valid.replace("name = \"app/33\"", "name = \"app 33\"")
        ));
        assert!(whole_only(&valid.replace("length = 16", "length = \"16\"")));
        // A syntax error.
        assert!(whole_only(
            &valid.replace("owner = \"team\"", "owner = \"team")
        ));
        // A name defined twice in one part, or in two parts.
        assert!(whole_only(&valid.replace("app/2\"", "app/1\"")));
        assert!(whole_only(&valid.replace("app/39", "app/1")));
        // A table after the secrets, which the parts before it would not see.
        assert!(whole_only(&format!(
            "{valid}\n[notify.late]\nurl = \"https://x.example/\"\nsecret_env = \"X\"\n"
        )));
        assert!(whole_only(&format!(
            "{valid}\n[defaults]\nowner = \"late\"\n"
        )));
        // Secrets first, the backend they use after them.
        assert!(whole_only(
            "[[secrets]]\nname = \"a\"\nbackend = \"local\"\nschedule = { every = \"1d\" }\n\
             generator = { type = \"ed25519\" }\n\n[backends.local]\ntype = \"file\"\n"
        ));
        // A problem before the secrets.
        assert!(whole_only(
            &valid.replace("type = \"file\"", "type = \"fiel\"")
        ));
        // No [[secrets]] header line to cut at.
        assert!(whole_only(HEAD));
    }

    /// A `[[secrets]]` line inside a multi-line string is text, not a header: the cut there
    /// leaves a part with an unterminated string, and the file is read whole.
    #[test]
    fn a_header_inside_a_multi_line_string_is_not_a_cut() {
        let mut text = format!("{HEAD}{}", secrets(3));
        text.push_str("[[secrets]]\nname = \"odd\"\nowner = \"\"\"\n");
        text.push_str(&"x\n".repeat(150));
        text.push_str("[[secrets]]\nname = \"not a secret\"\n\"\"\"\n\n");
        text.push_str(&secrets(3).replace("app/", "more/"));
        let inside = text.find("[[secrets]]\nname = \"not a secret\"").unwrap();
        assert!(cuts(&text, TINY.part).unwrap().contains(&inside));
        let file = Path::new("p.toml");
        assert!(policy(file, &text, &TINY).is_none());
        let whole = validate::whole(file, &text).expect("valid TOML and a valid policy");
        assert!(
            whole
                .secret("odd")
                .unwrap()
                .owner
                .as_deref()
                .unwrap()
                .contains("not a secret")
        );
        assert_eq!(whole.secrets.len(), 7);
    }

    #[test]
    fn cuts_fall_on_header_lines_only() {
        let text = "a = 1\n[[secrets]]x\n[[secrets]]\t# c\nb = 2\n [[secrets]]\n[[secrets]]\n";
        assert_eq!(cuts(text, 1), Some(vec![19, 54]));
        assert_eq!(cuts(text, 1000), Some(vec![19]));
        assert_eq!(cuts("[[secrets]]\r\nx = 1\n", 1), Some(vec![0]));
        assert_eq!(cuts("a = 1\n", 1), None);
    }
}
