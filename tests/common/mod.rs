//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

/// Where the mobix binary keeps its download, apt and cargo caches (as `cli` decides it).
pub fn cache_dir() -> PathBuf {
    std::env::var_os("MOBIX_CACHE").map(PathBuf::from).unwrap_or_else(|| {
        let base = std::env::var_os("XDG_CACHE_HOME")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").expect("HOME")).join(".cache"));
        base.join("mobix")
    })
}

/// The configuration of mobix's private arm64 apt root: `APT_CONFIG` for an `apt-cache`
/// that sees what mobix sees, whatever architectures the host has.
pub fn apt_conf() -> PathBuf {
    cache_dir().join("apt/apt.conf")
}

/// Runs a reference tool and returns its stdout and stderr; a failure fails the test with
/// the tool's output.
pub fn tool(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("running {cmd:?}: {e} (run scripts/setup)"));
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
}

/// Copies a directory tree (leaving out `target/`), for tests that edit a copy of the repo.
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dst = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            if e.file_name() != "target" {
                copy_dir(&e.path(), &dst);
            }
        } else {
            std::fs::copy(e.path(), dst).unwrap();
        }
    }
}

/// The names of a store's paths (its `.mobix` state left out), sorted.
pub fn store_names(store: &Path) -> std::collections::BTreeSet<String> {
    std::fs::read_dir(store)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with('.'))
        .collect()
}

/// The store entry whose name ends with `suffix` (`-etc`, `-firmware`).
pub fn store_entry(store: &Path, suffix: &str) -> PathBuf {
    std::fs::read_dir(store)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.to_string_lossy().ends_with(suffix))
        .unwrap_or_else(|| panic!("no store entry *{suffix} in {}", store.display()))
}

/// Runs the mobix binary in `cwd`, echoing its stderr into the test's output.
pub fn mobix_in(cwd: &Path, args: &[&str]) -> std::process::Output {
    let o = Command::new(env!("CARGO_BIN_EXE_mobix")).args(args).current_dir(cwd).output().expect("running mobix");
    eprintln!("$ mobix {}\n{}", args.join(" "), String::from_utf8_lossy(&o.stderr));
    o
}

/// A copy of the mobix tree a build needs (devices, init, mobix.lock) in `dest`, to edit.
pub fn repo_copy(dest: &Path) {
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    for d in ["devices", "init"] {
        copy_dir(&repo.join(d), &dest.join(d));
    }
    std::fs::copy(repo.join("mobix.lock"), dest.join("mobix.lock")).unwrap();
}

/// The stdout of a mobix run that must have succeeded (else the test fails with its stderr).
pub fn ok(o: &std::process::Output) -> String {
    assert!(o.status.success(), "mobix failed ({}):\n{}", o.status, String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// The mobix tree these tests run from.
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The system config of the tests that are not about systemd (`init: minimal`), as an
/// absolute path.
pub fn minimal() -> String {
    repo().join("tests/fixtures/systems/minimal.yaml").to_str().unwrap().to_string()
}

/// The store the integration tests share (builds of the same inputs are reused).
pub fn shared_store() -> PathBuf {
    repo().join("target/mobix-test-store")
}

/// Runs mobix with `--repo` this tree and `--store` the shared store, echoing its stderr.
pub fn mobix_shared(args: &[&str]) -> std::process::Output {
    let o = Command::new(env!("CARGO_BIN_EXE_mobix"))
        .args(args)
        .arg("--repo")
        .arg(repo())
        .arg("--store")
        .arg(shared_store())
        .output()
        .expect("running mobix");
    eprintln!("$ mobix {}\n{}", args.join(" "), String::from_utf8_lossy(&o.stderr));
    o
}
