//! Schema changes across an A/B update, with the real binary: a store of an older schema is
//! snapshotted (`state.v<old>.redb`, 0600, beside it on the data partition) before the box
//! migrates it; a box finding a store of a newer schema (it came back on the older slot)
//! restores its own version's snapshot and keeps the newer store aside, or, without a
//! snapshot, refuses to start with an error that says so and changes nothing.
//!
//! The "other version" is the store file as that version would leave it: this binary's
//! store stamped with another schema version (`Store::stamp_schema_version`).

mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use appliance::store::{SCHEMA_VERSION, Store};
use support::{Appliance, data_dir_with_class, serve_refused};

fn class_yaml(root: &Path, name: &str) -> PathBuf {
    let yaml = root.join(format!("{name}.yaml"));
    std::fs::write(
        &yaml,
        format!(
            "apiVersion: metal.sidero.dev/v1alpha2\nkind: ServerClass\nmetadata:\n  name: {name}\nspec: {{}}\n"
        ),
    )
    .unwrap();
    yaml
}

fn classes(app: &Appliance) -> String {
    app.ctl_ok(&["get", "serverclass"])
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

#[test]
fn an_older_schema_is_snapshotted_before_the_box_migrates_it() {
    let root = tempfile::tempdir().unwrap();
    let data = data_dir_with_class(root.path(), "data");
    let store = data.join("state.redb");
    let old = SCHEMA_VERSION - 1;
    Store::stamp_schema_version(&store, old).unwrap();
    let snapshot = data.join(format!("state.v{old}.redb"));
    assert!(!snapshot.exists());

    let mut app = Appliance::start_in(&data);
    assert!(classes(&app).contains("kept"));
    app.stop();
    // The live store migrated; the snapshot is the old schema's file, private, beside it.
    assert_eq!(
        Store::schema_version_of(&store).unwrap(),
        Some(SCHEMA_VERSION)
    );
    assert_eq!(Store::schema_version_of(&snapshot).unwrap(), Some(old));
    assert_eq!(mode(&snapshot), 0o600, "snapshot mode");
    // A second start (nothing to migrate) writes no new snapshot.
    let before = std::fs::metadata(&snapshot).unwrap().modified().unwrap();
    let mut app = Appliance::start_in(&data);
    app.stop();
    assert_eq!(
        std::fs::metadata(&snapshot).unwrap().modified().unwrap(),
        before
    );

    // The snapshot is a whole store: in a data dir of its own (with the box's secrets key)
    // the box opens it and serves what it held.
    let copy = root.path().join("copy");
    std::fs::create_dir_all(&copy).unwrap();
    std::fs::copy(&snapshot, copy.join("state.redb")).unwrap();
    std::fs::copy(data.join("secrets.key"), copy.join("secrets.key")).unwrap();
    let app = Appliance::start_in(&copy);
    assert!(classes(&app).contains("kept"));
}

#[test]
fn a_box_back_on_the_older_version_restores_its_snapshot() {
    let root = tempfile::tempdir().unwrap();
    let data = data_dir_with_class(root.path(), "data");
    let store = data.join("state.redb");
    let newer = SCHEMA_VERSION + 1;
    // The newer version's first start: the snapshot of this schema (a copy of the file, as
    // the test above shows the box writes it), then changes, then its migration.
    let snapshot = data.join(format!("state.v{SCHEMA_VERSION}.redb"));
    std::fs::copy(&store, &snapshot).unwrap();
    std::fs::set_permissions(&snapshot, std::fs::Permissions::from_mode(0o600)).unwrap();
    let mut app = Appliance::start_in(&data);
    app.ctl_ok(&[
        "apply",
        "-f",
        class_yaml(root.path(), "after-update").to_str().unwrap(),
    ]);
    app.stop();
    Store::stamp_schema_version(&store, newer).unwrap();

    // Back on this version: the snapshot is restored, the newer store kept aside.
    let mut app = Appliance::start_in(&data);
    let list = classes(&app);
    assert!(list.contains("kept"), "{list}");
    assert!(
        !list.contains("after-update"),
        "a change made under the newer version survived the rollback: {list}"
    );
    let log = app.stop_and_log();
    assert!(log.contains("restored the snapshot"), "{log}");
    let aside = data.join(format!("state.v{newer}.rolled-back.redb"));
    assert_eq!(Store::schema_version_of(&aside).unwrap(), Some(newer));
    assert_eq!(
        Store::schema_version_of(&store).unwrap(),
        Some(SCHEMA_VERSION)
    );
    assert!(!snapshot.exists(), "the snapshot became the store");
    assert_eq!(mode(&store), 0o600);
}

#[test]
fn a_newer_store_without_a_snapshot_is_refused_clearly() {
    let root = tempfile::tempdir().unwrap();
    let data = data_dir_with_class(root.path(), "data");
    let store = data.join("state.redb");
    let newer = SCHEMA_VERSION + 1;
    Store::stamp_schema_version(&store, newer).unwrap();
    let log = serve_refused(&data);
    let snapshot = data.join(format!("state.v{SCHEMA_VERSION}.redb"));
    for want in [
        format!("schema version {newer}, newer than this binary's {SCHEMA_VERSION}"),
        format!("no snapshot {}", snapshot.display()),
        store.display().to_string(),
    ] {
        assert!(log.contains(&want), "missing {want:?} in: {log}");
    }
    // Nothing was changed or moved.
    assert_eq!(Store::schema_version_of(&store).unwrap(), Some(newer));
    let names: Vec<String> = std::fs::read_dir(&data)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".redb"))
        .collect();
    assert_eq!(names, ["state.redb"]);
}
