//! The user's environment is not mobix's bug: a read-only store builds nothing new (exit 1
//! with a hint, never "internal error"), and a build with nothing to do needs no writable
//! store at all.

use std::process::Command;

use crate::common::{mobix_in, ok, repo, shared_store};

/// A read-only view of a directory, unmounted when dropped.
struct ReadOnly(std::path::PathBuf);

impl Drop for ReadOnly {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn a_read_only_store_serves_a_no_op_build_and_refuses_new_work_with_a_hint() {
    let t = tempfile::tempdir().unwrap();
    let out = t.path().join("out");
    let r = repo();
    let store = shared_store();
    let build = |store: &std::path::Path, extra: &[&str]| {
        let minimal = crate::common::minimal();
        let mut a = vec!["build", "--device", "qemu-aarch64", "--repo", r.to_str().unwrap()];
        a.extend(["--store", store.to_str().unwrap(), "--out", out.to_str().unwrap()]);
        if extra.is_empty() {
            a.extend(["--config", &minimal]);
        }
        a.extend(extra);
        mobix_in(t.path(), &a)
    };
    ok(&build(&store, &[]));
    let view = t.path().join("ro-store");
    std::fs::create_dir(&view).unwrap();
    let mounted = Command::new("mount").args(["--bind", "-o", "ro"]).arg(&store).arg(&view).status();
    assert!(
        mounted.is_ok_and(|s| s.success()),
        "this test needs root to bind-mount the store read-only (CI and scripts/test run as root)"
    );
    let _guard = ReadOnly(view.clone());
    let noop = build(&view, &[]);
    ok(&noop);
    assert!(String::from_utf8_lossy(&noop.stderr).contains("nothing to build"));

    std::fs::write(t.path().join("new.yaml"), "hostname: read-only-check\ninit: minimal\n").unwrap();
    let new = build(&view, &["--config", "new.yaml"]);
    assert_eq!(new.status.code(), Some(1), "{}", String::from_utf8_lossy(&new.stderr));
    let err = String::from_utf8_lossy(&new.stderr);
    assert!(err.contains("is not writable") && err.contains("hint: "), "{err}");
}

/// `PATH` as it is, less the Rust toolchain: a directory of links to every program on the
/// current `PATH` except rustc, cargo and rustup.
fn path_without_rust(dir: &std::path::Path) -> std::ffi::OsString {
    std::fs::create_dir_all(dir).unwrap();
    for d in std::env::split_paths(&std::env::var_os("PATH").unwrap()) {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let name = e.file_name();
            let dest = dir.join(&name);
            if ["rustc", "cargo", "rustup"].iter().any(|n| name == *n) || dest.symlink_metadata().is_ok() {
                continue;
            }
            std::os::unix::fs::symlink(e.path(), dest).unwrap();
        }
    }
    dir.as_os_str().to_owned()
}

#[test]
fn a_build_with_nothing_to_do_needs_no_rust_toolchain() {
    let t = tempfile::tempdir().unwrap();
    let out = t.path().join("out");
    let r = repo();
    let no_rust = path_without_rust(&t.path().join("bin"));
    let build = |store: &std::path::Path, without_rust: bool| {
        let mut c = crate::common::mobix_cmd();
        c.args([
            "build",
            "--device",
            "qemu-aarch64",
            "--repo",
            r.to_str().unwrap(),
            "--config",
            &crate::common::minimal(),
        ]);
        c.args(["--store", store.to_str().unwrap(), "--out", out.to_str().unwrap()]).current_dir(t.path());
        if without_rust {
            c.env("PATH", &no_rust);
        }
        let o = c.output().unwrap();
        eprintln!("{}", String::from_utf8_lossy(&o.stderr));
        o
    };
    ok(&build(&shared_store(), false));
    let noop = build(&shared_store(), true);
    ok(&noop);
    let err = String::from_utf8_lossy(&noop.stderr);
    assert!(err.contains("rustc is not installed: planning with the version the last build saw (rustc "), "{err}");
    assert!(err.contains("nothing to build"), "{err}");

    let fresh = build(&t.path().join("empty-store"), true);
    let err = String::from_utf8_lossy(&fresh.stderr);
    assert_eq!(fresh.status.code(), Some(1), "{err}");
    assert!(err.contains("error: rustc is not installed") && err.contains("hint: "), "{err}");
}
