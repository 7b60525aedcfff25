//! The bad-input corpus: every file in tests/policies/bad is a malformed or hostile policy
//! whose `# expect:` lines name words its error report must contain. Each must be refused
//! (never accepted, never a panic) with its file, line and column named.

use std::path::Path;

#[test]
fn every_bad_policy_is_refused_with_the_expected_message() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/policies/bad");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("corpus directory")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    files.sort();
    assert!(
        files.len() >= 50,
        "the corpus keeps at least 50 cases, has {}",
        files.len()
    );
    let mut failures = Vec::new();
    for file in &files {
        let bytes = std::fs::read(file).expect("read");
        let text = String::from_utf8_lossy(&bytes);
        let expected: Vec<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("# expect: "))
            .collect();
        assert!(
            !expected.is_empty(),
            "{} has no # expect: line",
            file.display()
        );
        let outcome = std::panic::catch_unwind(|| rekeyd::policy::load(file));
        let report = match outcome {
            Err(_) => {
                failures.push(format!("{}: panicked", file.display()));
                continue;
            }
            Ok(Ok(_)) => {
                failures.push(format!("{}: accepted", file.display()));
                continue;
            }
            Ok(Err(errors)) => errors.to_string(),
        };
        let name = file.file_name().unwrap().to_string_lossy();
        let positioned = report.lines().any(|l| {
            l.contains(&*name)
                && l.split(':')
                    .nth(1)
                    .is_some_and(|n| n.parse::<usize>().is_ok())
        });
        if !positioned {
            failures.push(format!("{name}: no file:line:column in\n{report}"));
        }
        for word in expected {
            if !report.contains(word) {
                failures.push(format!("{name}: lacks {word:?} in\n{report}"));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} problems:\n{}",
        failures.len(),
        failures.join("\n\n")
    );
}
