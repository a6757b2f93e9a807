//! A damaged store file is refused, never silently replaced: `appliance serve` on a data dir
//! whose `state.redb` was truncated to nothing, cut short, or had its header overwritten
//! exits non-zero with an error naming the file, and leaves the file as it found it. A store
//! whose first start was cut short (an empty file, no secrets key yet) still starts.

mod support;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use support::{Appliance, BIN, free_port};

/// Runs `serve` on `data_dir` expecting it to refuse to start: its exit status and log.
fn serve_refused(data_dir: &Path) -> String {
    let config = data_dir.join("test-config.toml");
    let mut child = Command::new(BIN)
        .args(["serve", "--log-level", "warn", "--config"])
        .arg(&config)
        .arg("--data-dir")
        .arg(data_dir)
        .arg("--http-listen")
        .arg(format!("127.0.0.1:{}", free_port()))
        .env_remove("APPLIANCE_CONFIG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = appliance::clock::now() + Duration::from_secs(20);
    while child.try_wait().unwrap().is_none() {
        if appliance::clock::now() > deadline {
            let _ = child.kill();
            panic!("serve kept running on a damaged store");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    assert!(!out.status.success(), "serve succeeded on a damaged store");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A data dir with one applied object, the box stopped.
fn used_data_dir(root: &Path, name: &str) -> std::path::PathBuf {
    let data = root.join(name);
    let mut app = Appliance::start_in(&data);
    let yaml = root.join(format!("{name}.yaml"));
    std::fs::write(
        &yaml,
        "apiVersion: metal.sidero.dev/v1alpha2\nkind: ServerClass\nmetadata:\n  name: kept\nspec: {}\n",
    )
    .unwrap();
    app.ctl_ok(&["apply", "-f", yaml.to_str().unwrap()]);
    app.stop();
    data
}

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
        let data = used_data_dir(root.path(), name);
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
