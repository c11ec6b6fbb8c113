//! Packages by name: `packages:` takes Debian names, a build completes mobix.lock with what
//! apt itself resolves in mobix's private root (equal to `apt-get install --simulate`
//! there), the lock builds the same images in any store, with the network cut too, and
//! the programs run on the emulated phone. Bad names, conflicts, vanished versions and
//! `--locked` fail with exit 1 and leave the lock as it was.

use crate::common::{mobix_in, ok, repo_copy};
use std::collections::BTreeMap;
use std::fs;
use std::path::Path;
use std::process::Command;

const FULL: &str = "packages: [openssh-server, systemd, htop]
health_checks:
  - {name: htop, command: [htop, --version]}
  - {name: ssh, command: [ssh, -V]}
init: minimal
";

fn lock_apt(repo: &Path) -> serde_json::Value {
    let l: serde_json::Value = serde_json::from_slice(&fs::read(repo.join("mobix.lock")).unwrap()).unwrap();
    l["apt"].clone()
}

/// Leaves the copy's lock without apt's solution (and the ids that go with it): resolution
/// starts from nothing, as in a tree that never named a Debian package.
fn without_apt(repo: &Path) {
    let mut l: serde_json::Value = serde_json::from_slice(&fs::read(repo.join("mobix.lock")).unwrap()).unwrap();
    let o = l.as_object_mut().unwrap();
    o.remove("apt");
    o.remove("ids");
    fs::write(repo.join("mobix.lock"), serde_json::to_string_pretty(&l).unwrap() + "\n").unwrap();
}

fn build(repo: &Path, store: &Path, out: &Path, extra: &[&str]) -> std::process::Output {
    let (s, o) = (store.to_str().unwrap(), out.to_str().unwrap());
    let mut args = vec!["build", "--device", "qemu-aarch64", "--config", "system.yaml", "--store", s, "--out", o];
    args.extend(extra);
    mobix_in(repo, &args)
}

#[test]
fn the_lock_holds_apts_own_solution_and_builds_the_same_anywhere() {
    let t = tempfile::tempdir().unwrap();
    let repo = t.path().join("tree");
    repo_copy(&repo);
    without_apt(&repo);
    fs::write(repo.join("system.yaml"), FULL).unwrap();
    let (s1, o1) = (t.path().join("s1"), t.path().join("o1"));
    let first = build(&repo, &s1, &o1, &[]);
    ok(&first);
    let said = String::from_utf8_lossy(&first.stderr);
    assert!(said.contains("resolving openssh-server, systemd, htop with apt"), "{said}");
    assert!(said.contains("mobix.lock: added"), "{said}");
    assert!(said.contains("maintainer scripts mobix does not run: openssh-server"), "{said}");
    assert!(said.contains("generates keys"), "{said}");
    // openssh-server's postinst adds the sshd user; this system has no systemd, so no
    // accounts (a systemd system's note says mobix makes it: pins.rs's unit test).
    assert!(said.contains("creates users or groups (an `init: minimal` system has root only)"), "{said}");

    // What mobix pinned is what apt installs for the same names in the same root.
    // (Under the root's lock, as mobix takes it: another test may be updating its lists.)
    let sim = Command::new("flock")
        .arg(crate::common::apt_conf().with_file_name("lock"))
        .args(["apt-get", "install", "--simulate", "-q", "openssh-server", "systemd", "htop"])
        .env("APT_CONFIG", crate::common::apt_conf())
        .output()
        .unwrap();
    assert!(sim.status.success(), "{}", String::from_utf8_lossy(&sim.stderr));
    let apt: BTreeMap<String, String> = String::from_utf8_lossy(&sim.stdout)
        .lines()
        .filter_map(|l| {
            let rest = l.strip_prefix("Inst ")?;
            let (name, rest) = rest.split_once(' ')?;
            let version = rest[rest.find('(')? + 1..].split_whitespace().next()?;
            Some((name.to_string(), version.to_string()))
        })
        .collect();
    let lock = lock_apt(&repo);
    let pinned: BTreeMap<String, String> = lock["packages"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(n, p)| (n.clone(), p["version"].as_str().unwrap().to_string()))
        .collect();
    assert!(apt.len() > 50, "{apt:?}");
    assert_eq!(pinned, apt, "mobix pins exactly apt's solution, version for version");
    assert_eq!(lock["requested"], serde_json::json!(["htop", "openssh-server", "systemd"]));
    // Each pin has its file, size and index sha256, and edges inside the solution.
    let htop = &lock["packages"]["htop"];
    assert!(htop["file"].as_str().unwrap().starts_with("pool/main/h/htop/htop_"));
    assert!(htop["size"].as_u64().unwrap() > 10_000 && htop["sha256"].as_str().unwrap().len() == 64);
    for d in ["libc6", "libncursesw6"] {
        assert!(htop["depends"].as_array().unwrap().iter().any(|x| x == d), "htop depends on {d}: {htop}");
    }
    // libc6 and libgcc-s1 need each other: one store path holds both.
    let group = fs::read_dir(&s1)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .find(|n| n.contains("-libc6-") && n.ends_with("-and-1-more"));
    assert!(group.is_some(), "a libc6 group in the store");

    // The lock is complete now: a second store builds the same bytes without resolving, with
    // the network cut (the download cache is warm) and --locked. (From source, whatever
    // binary caches the run has. One build shows all three: it once took a second store
    // online, then a third offline, the same build twice.)
    let offline = crate::common::run(
        Command::new("unshare")
            .args(["-n", env!("CARGO_BIN_EXE_mobix"), "build", "--device", "qemu-aarch64", "--config", "system.yaml"])
            .arg("--store")
            .arg(t.path().join("s3"))
            .arg("--out")
            .arg(t.path().join("o3"))
            .args(["--locked", "--no-substitute"])
            .env_remove("RUSTC_BOOTSTRAP")
            .current_dir(&repo),
    );
    ok(&offline);
    assert!(!String::from_utf8_lossy(&offline.stderr).contains("resolving"));
    for img in ["boot.img", "system.img"] {
        let a = fs::read(o1.join(img)).unwrap();
        assert!(a == fs::read(t.path().join("o3").join(img)).unwrap(), "{img} differs when built offline");
    }

    // On the phone: `htop --version` and `ssh -V` are the generation's health checks.
    let s = s1.to_str().unwrap();
    let test = mobix_in(&repo, &["test", "--device", "qemu-aarch64", "--store", s, "--out", o1.to_str().unwrap()]);
    ok(&test);
    assert!(String::from_utf8_lossy(&test.stderr).contains("boot-complete: generation 1"));
}

#[test]
fn a_bad_name_a_conflict_a_vanished_version_and_locked_change_nothing() {
    let t = tempfile::tempdir().unwrap();
    let repo = t.path().join("tree");
    repo_copy(&repo);
    let (store, out) = (t.path().join("s"), t.path().join("o"));
    let before = fs::read(repo.join("mobix.lock")).unwrap();
    let fails = |config: &str, extra: &[&str], says: &[&str]| {
        fs::write(repo.join("system.yaml"), config).unwrap();
        let o = build(&repo, &store, &out, extra);
        assert_eq!(o.status.code(), Some(1), "{config}");
        let err = String::from_utf8_lossy(&o.stderr);
        for s in says {
            assert!(err.contains(s), "{config}: wanted {s:?} in:\n{err}");
        }
    };
    fails(
        "hostname: typo\npackages:\n  - htop\n  - htpo\ninit: minimal\n",
        &[],
        &["system.yaml:4: key `packages[1]`", "has no package htpo", "hint: did you mean `htop`?"],
    );
    fails(
        "packages: [postfix, exim4-daemon-light]\ninit: minimal\n",
        &[],
        &["apt cannot install these packages together", "Conflicts:", "E: Unable to correct problems"],
    );
    fails("packages: [htop]\ninit: minimal\n", &["--locked"], &["does not pin htop and --locked forbids changing it"]);
    assert!(fs::read(repo.join("mobix.lock")).unwrap() == before, "the lock is unchanged");

    // A pinned version the archive dropped: said, with the command that fixes it.
    fs::write(repo.join("system.yaml"), "packages: [tree]\ninit: minimal\n").unwrap();
    let mut lock: serde_json::Value = serde_json::from_slice(&before).unwrap();
    lock["apt"] = serde_json::json!({"requested": ["htop"], "packages": {"htop": {
        "version": "9.9-1", "arch": "arm64", "file": "pool/main/h/htop/htop_9.9-1_arm64.deb", "size": 1,
        "sha256": "ab".repeat(32)}}});
    let vanished = serde_json::to_string_pretty(&lock).unwrap() + "\n";
    fs::write(repo.join("mobix.lock"), &vanished).unwrap();
    fails("packages: [htop, evtest]\n", &[], &["no longer has htop 9.9-1", "hint: `mobix lock update htop`"]);
    assert_eq!(fs::read_to_string(repo.join("mobix.lock")).unwrap(), vanished);
    // The download says the same when the lock is complete and only the archive moved.
    let download = ["no longer has htop 9.9-1", "caused by: `apt-get download", "hint: `mobix lock update htop`"];
    fails("packages: [htop]\ninit: minimal\n", &[], &download);
    let up = mobix_in(&repo, &["lock", "update", "htop"]);
    let said = ok(&up);
    assert!(said.contains("apt.htop: 9.9-1 -> "), "{said}");
    let fixed = lock_apt(&repo);
    assert_ne!(fixed["packages"]["htop"]["version"], "9.9-1");
    assert!(fixed["packages"]["libc6"].is_object(), "its dependencies are pinned too: {fixed}");
}

/// A package's GLib settings schemas are compiled when the system is built (Debian's
/// libglib2.0-0 trigger would compile them on install): the host's own `gsettings` reads the
/// compiled file the build made, an overlay's override changes a default, and on the phone
/// the generation's health check reads the same values with the phone's `gsettings`.
#[test]
fn glib_settings_schemas_are_compiled_at_build_time() {
    let _one = crate::common::small_phone();
    let t = tempfile::tempdir().unwrap();
    let repo = t.path().join("tree");
    repo_copy(&repo);
    let ov = repo.join("overlays/clock/files/share/glib-2.0/schemas");
    fs::create_dir_all(&ov).unwrap();
    fs::write(ov.join("90-mobix-test.gschema.override"), "[org.gnome.desktop.interface]\nclock-format='12h'\n")
        .unwrap();
    let check = "GSETTINGS_BACKEND=memory gsettings get org.gnome.desktop.interface clock-format | grep -qx \"'12h'\" \
                 && GSETTINGS_BACKEND=memory gsettings get org.gnome.desktop.interface cursor-size | grep -qx 24";
    fs::write(
        repo.join("system.yaml"),
        format!(
            "init: minimal\npackages: [gsettings-desktop-schemas, libglib2.0-bin]\noverlays: [clock]\n\
             health_checks:\n  - {{name: schemas, command: [/bin/sh, -c, {check:?}]}}\n"
        ),
    )
    .unwrap();
    let (store, out) = (t.path().join("store"), t.path().join("out"));
    ok(&build(&repo, &store, &out, &[]));
    // The host's gsettings reads what the build compiled.
    let compiled = crate::common::store_entry(&store, "-glib-schemas").join("share/glib-2.0/schemas");
    let get = |key: &str| {
        let o = Command::new("gsettings")
            .arg("--schemadir")
            .arg(&compiled)
            .args(["get", "org.gnome.desktop.interface", key])
            .env("GSETTINGS_BACKEND", "memory")
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8_lossy(&o.stdout).trim().to_string()
    };
    assert_eq!(get("clock-format"), "'12h'", "the overlay's override wins over the schema's default");
    assert_eq!(get("cursor-size"), "24", "the schema's default");
    // The phone's gsettings reads them too: the health check passes.
    let (s, o) = (store.to_str().unwrap(), out.to_str().unwrap());
    let test = mobix_in(&repo, &["test", "--device", "qemu-aarch64", "--store", s, "--out", o]);
    ok(&test);
    assert!(String::from_utf8_lossy(&test.stderr).contains("boot-complete: generation 1"));
}
