//! The file store's on-disk format, through the real binary: a store written by an older
//! rekeyd (format 1) is read, and moves to format 2 on its next write.

mod common;

use std::os::unix::fs::{MetadataExt, PermissionsExt};

use common::Sandbox;

const POLICY: &str = r#"
[[secrets]]
name = "app/db"
schedule = { every = "30d" }
"#;

/// A store as rekeyd 4bcc244 (format 1) left it after two rotations of `app/db`, its key,
/// and the values it printed for them then.
const FIXTURE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/store-format-1");
const FILE: &str = "app%2Fdb.json";
const CURRENT: &str = "-aK-(oD]E,4g7qS|VE-p!Xcw";
const PREVIOUS: &str = "Gm3W*!z%Gtu33,->SbZ,a7T-";

fn sandbox_with_format_1_store() -> Sandbox {
    let sandbox = Sandbox::new(POLICY);
    std::fs::create_dir_all(sandbox.path("state/store-local")).unwrap();
    std::fs::copy(
        format!("{FIXTURE}/{FILE}"),
        sandbox.path(&format!("state/store-local/{FILE}")),
    )
    .unwrap();
    let key = sandbox.path("state/local.key");
    std::fs::copy(format!("{FIXTURE}/local.key"), &key).unwrap();
    // A checkout may widen the mode; rekeyd refuses a key others can read.
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    sandbox
}

#[test]
fn a_format_1_store_is_read_and_rewritten_as_format_2_on_the_next_write() {
    let sandbox = sandbox_with_format_1_store();
    let path = sandbox.path(&format!("state/store-local/{FILE}"));
    let before = std::fs::read_to_string(&path).unwrap();
    assert!(before.contains("\"format\": 1"), "the fixture is format 1");

    assert_eq!(sandbox.get("app/db", "current"), CURRENT);
    assert_eq!(sandbox.get("app/db", "previous"), PREVIOUS);
    assert_eq!(
        std::fs::read_to_string(&path).unwrap(),
        before,
        "reading does not rewrite"
    );
    let old_current = sandbox.status("app/db")["current"]["id"]
        .as_str()
        .unwrap()
        .to_owned();

    let inode = |path: &std::path::Path| std::fs::metadata(path).unwrap().ino();
    let format_1_inode = inode(&path);
    sandbox.ok(&["rotate", "app/db", "--force"]);
    // The put rewrote the file whole, by rename, as one format 2 record; the promote then
    // appended one. store_records checks that each line is intact and in format 2.
    let converted = inode(&path);
    assert_ne!(
        converted, format_1_inode,
        "format 1 is replaced, not appended to"
    );
    let records = sandbox.store_records(FILE);
    assert_eq!(records.len(), 2, "{records:?}");
    let stages = |record: &serde_json::Value| -> Vec<(String, serde_json::Value)> {
        record["versions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| (v["id"].as_str().unwrap().to_owned(), v["stages"].clone()))
            .collect()
    };
    let put = stages(&records[0]);
    assert_eq!(
        put.len(),
        3,
        "the two old versions and the pending one: {put:?}"
    );
    assert_eq!(
        put[1],
        (old_current.clone(), serde_json::json!(["current"]))
    );
    let promoted = stages(&records[1]);
    assert_eq!(
        promoted,
        vec![
            (old_current, serde_json::json!(["previous"])),
            (put[2].0.clone(), serde_json::json!(["current"])),
        ]
    );
    assert_eq!(sandbox.get("app/db", "previous"), CURRENT);
    assert_ne!(sandbox.get("app/db", "current"), CURRENT);

    // From now on, writes append to the same file.
    sandbox.ok(&["rotate", "app/db", "--force"]);
    assert_eq!(
        sandbox.store_records(FILE).len(),
        4,
        "put and promote appended"
    );
    assert_eq!(inode(&path), converted);
}
