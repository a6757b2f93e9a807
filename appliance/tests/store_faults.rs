//! A damaged store file is refused, never silently replaced: `appliance serve` on a data dir
//! whose `state.redb` was truncated to nothing, cut short, or had its header overwritten
//! exits non-zero with an error naming the file, and leaves the file as it found it. A store
//! whose first start was cut short (an empty file, no secrets key yet) still starts.

mod support;

use std::path::Path;

use support::{Appliance, data_dir_with_class, serve_refused};

#[test]
fn damaged_store_files_are_refused_naming_the_file() {
    let root = tempfile::tempdir().unwrap();
    type Damage = fn(&Path);
    let cases: [(&str, Damage); 3] = [
        ("empty", |p| std::fs::File::create(p).map(drop).unwrap()),
        ("cut", |p| {
            std::fs::OpenOptions::new()
                .write(true)
                .open(p)
                .unwrap()
                .set_len(3000)
                .unwrap()
        }),
        ("header", |p| {
            use std::io::{Seek, SeekFrom, Write};
            let mut f = std::fs::OpenOptions::new().write(true).open(p).unwrap();
            f.seek(SeekFrom::Start(0)).unwrap();
            f.write_all(&[0xa5; 512]).unwrap();
        }),
    ];
    for (name, damage) in cases {
        let data = data_dir_with_class(root.path(), name);
        let store = data.join("state.redb");
        damage(&store);
        let before = std::fs::read(&store).unwrap();
        let log = serve_refused(&data);
        assert!(
            log.contains(&store.display().to_string()),
            "{name}: the error does not name {}: {log}",
            store.display()
        );
        assert_eq!(
            std::fs::read(&store).unwrap(),
            before,
            "{name}: the damaged store was changed"
        );
    }
}

#[test]
fn a_first_start_cut_short_still_starts() {
    // An empty store file and no secrets key: the box's own first open was interrupted.
    let root = tempfile::tempdir().unwrap();
    let data = root.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::File::create(data.join("state.redb")).unwrap();
    let app = Appliance::start_in(&data);
    app.ctl_ok(&["get", "serverclass"]);
}
