//! The user's environment is not mobix's bug: a read-only store builds nothing new (exit 1
//! with a hint, never "internal error"), and a build with nothing to do needs no writable
//! store at all.

use std::process::Command;

mod common;
use common::{mobix_in, ok, repo, shared_store};

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
        let mut a = vec!["build", "--device", "qemu-aarch64", "--repo", r.to_str().unwrap()];
        a.extend(["--store", store.to_str().unwrap(), "--out", out.to_str().unwrap()]);
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

    std::fs::write(t.path().join("new.yaml"), "hostname: read-only-check\n").unwrap();
    let new = build(&view, &["--config", "new.yaml"]);
    assert_eq!(new.status.code(), Some(1), "{}", String::from_utf8_lossy(&new.stderr));
    let err = String::from_utf8_lossy(&new.stderr);
    assert!(err.contains("is not writable") && err.contains("hint: "), "{err}");
}
