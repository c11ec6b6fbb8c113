//! End to end, through the `mobix` binary: build the qemu-aarch64 images of the default
//! system (as the quick start does: `init: systemd`), judge them with the reference tools,
//! rebuild from a second empty store and compare, boot them in QEMU.
//! Needs what `scripts/setup` installs; downloads the pinned packages once per host.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;
use std::process::{Command, Output};
use std::time::Instant;

use crate::common::{ok, repo, tool};

fn mobix(cwd: &Path, args: &[&str]) -> Output {
    crate::common::run(
        crate::common::mobix_cmd().args(args).current_dir(cwd).env_remove("MOBIX_STORE").env_remove("MOBIX_REPO"),
    )
}

/// `mobix build` of qemu-aarch64 into `store` and `out`, run from `cwd`; `from_source`: no
/// binary cache, whatever the run has (scripts/test's CI cache).
fn build(cwd: &Path, store: &Path, out: &Path, json: bool, from_source: bool) -> Output {
    let r = repo();
    let mut args = vec!["build", "--repo", r.to_str().unwrap(), "--device", "qemu-aarch64"];
    args.extend(["--store", store.to_str().unwrap(), "--out", out.to_str().unwrap()]);
    if json {
        args.push("--json");
    }
    if from_source {
        args.push("--no-substitute");
    }
    mobix(cwd, &args)
}

fn sha256s(manifest: &serde_json::Value) -> BTreeMap<String, String> {
    manifest["images"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v["sha256"].as_str().unwrap().to_string()))
        .collect()
}

fn store_entries(store: &Path) -> Vec<String> {
    let mut v: Vec<String> =
        fs::read_dir(store).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    v.sort();
    v
}

/// The store paths a build from source makes: every recipe of `mobix build --dry-run`.
fn planned(cwd: &Path, store: &Path) -> Vec<String> {
    let r = repo();
    let args = ["build", "--repo", r.to_str().unwrap(), "--device", "qemu-aarch64", "--dry-run", "--json", "--store"];
    let plan: serde_json::Value =
        serde_json::from_str(&ok(&mobix(cwd, &[&args[..], &[store.to_str().unwrap()]].concat()))).unwrap();
    let mut v: Vec<String> = plan["recipes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["path"].as_str().unwrap().trim_start_matches("/mobix/store/").to_string())
        .collect();
    v.sort();
    v
}

#[test]
fn build_check_reproduce_and_boot() {
    let tmp = tempfile::tempdir().unwrap();
    let r = repo();
    let repo_arg = r.to_str().unwrap();
    let (store_a, out_a) = (tmp.path().join("store-a"), tmp.path().join("out-a"));
    let oa = out_a.to_str().unwrap();

    // 1. A build into an empty store (from the run's binary caches where it has any); it says
    // how to get in (nobody can yet).
    let first = build(tmp.path(), &store_a, &out_a, true, false);
    assert!(String::from_utf8_lossy(&first.stderr).contains("no account can log in yet (root is locked)"));
    let manifest: serde_json::Value = serde_json::from_str(&ok(&first)).unwrap();
    assert_eq!(manifest["device"], "qemu-aarch64");
    assert_eq!(manifest["generation"], 1);
    let toplevel = manifest["toplevel"].as_str().unwrap().to_string();
    assert!(toplevel.starts_with("/mobix/store/"));

    // 2. unpack_bootimg reports the profile's header values.
    let f = tool(
        Command::new("unpack_bootimg")
            .arg("--boot_img")
            .arg(out_a.join("boot.img"))
            .arg("--out")
            .arg(tmp.path().join("un")),
    );
    let field = |k: &str| {
        f.lines()
            .find_map(|l| l.strip_prefix(&format!("{k}: ")))
            .unwrap_or_else(|| panic!("unpack_bootimg printed no {k}:\n{f}"))
            .trim()
            .to_string()
    };
    assert_eq!(field("boot image header version"), "2");
    assert_eq!(field("page size"), "4096");
    assert_eq!(field("kernel load address"), "0x40200000");
    assert_eq!(field("ramdisk load address"), "0x44000000");
    assert_eq!(field("kernel tags load address"), "0x40000100");
    assert_eq!(field("dtb address"), "0x43f00000");
    assert_eq!(field("command line args"), "console=ttyAMA0 panic=5");
    assert_eq!(field("product name"), "qemu-aarch64");
    assert_eq!(field("os version"), "14.0.0");

    // 3. simg2img and mobix expand the sparse image to the same raw partition, and e2fsck
    // finds nothing wrong in its filesystem.
    let back = tmp.path().join("system.back");
    let ours = tmp.path().join("system.ours");
    tool(Command::new("simg2img").arg(out_a.join("system.img")).arg(&back));
    tool(
        crate::common::mobix_cmd()
            .args(["inspect", "sparse", "unpack"])
            .arg(out_a.join("system.img"))
            .arg("-o")
            .arg(&ours),
    );
    tool(Command::new("cmp").arg(&back).arg(&ours));
    tool(Command::new("e2fsck").arg("-fn").arg(&back));
    fs::remove_file(&back).unwrap();
    fs::remove_file(&ours).unwrap();

    // 3b. The system carries the modules the profile lists with their dependencies, not
    // the whole of Debian's kernel: virtio_net (listed), virtio_blk (stage-1), net_failover
    // (virtio_net needs it), and no GPU driver.
    let mods = store_entries(&store_a).into_iter().find(|e| e.ends_with("-kernel-modules")).unwrap();
    let dep = fs::read_dir(store_a.join(&mods).join("lib/modules")).unwrap().next().unwrap().unwrap().path();
    let dep = fs::read_to_string(dep.join("modules.dep")).unwrap();
    for m in ["/virtio_net.ko:", "/virtio_blk.ko:", "/net_failover.ko:"] {
        assert!(dep.contains(m), "modules.dep lacks {m}:\n{dep}");
    }
    assert!(!dep.contains("/nouveau.ko:") && dep.lines().count() < 60, "unlisted modules kept:\n{dep}");

    // 4. A rebuild with nothing changed builds nothing and says so.
    let before = store_entries(&store_a);
    let t0 = Instant::now();
    let again = build(tmp.path(), &store_a, &out_a, false, false);
    ok(&again);
    eprintln!("no-op rebuild took {:.3}s", t0.elapsed().as_secs_f64());
    assert!(String::from_utf8_lossy(&again.stderr).contains("nothing to build"));
    assert_eq!(store_entries(&store_a), before, "a no-op rebuild must not add store paths");

    // 5. A second empty store, another working directory: identical images.
    let elsewhere = tmp.path().join("elsewhere");
    fs::create_dir(&elsewhere).unwrap();
    let (store_b, out_b) = (tmp.path().join("other-store"), tmp.path().join("out-b"));
    // From source: identical images to the first (substituted from what an earlier run built,
    // or built here when the run has no cache), and every store path a build makes is the one
    // the first build's plan names.
    let manifest_b: serde_json::Value =
        serde_json::from_str(&ok(&build(&elsewhere, &store_b, &out_b, true, true))).unwrap();
    assert_eq!(sha256s(&manifest), sha256s(&manifest_b), "builds from two empty stores differ");
    assert_eq!(manifest["toplevel"], manifest_b["toplevel"]);
    let built: Vec<String> = store_entries(&store_b).into_iter().filter(|e| !e.starts_with('.')).collect();
    assert_eq!(planned(tmp.path(), &store_a), built, "the same store paths in both");
    drop(out_b);
    let _ = mobix_util_remove(&store_b);

    // 6. The images boot in QEMU to boot-complete of generation 1.
    let test = mobix(
        tmp.path(),
        &["test", "--repo", repo_arg, "--out", oa, "--device", "qemu-aarch64", "--timeout", "240", "--json"],
    );
    let outcome: serde_json::Value = serde_json::from_str(&ok(&test)).unwrap();
    assert_eq!(outcome["passed"], true);
    assert_eq!(outcome["generation"], 1);
    assert_eq!(outcome["toplevel"], toplevel.as_str());
    let log = fs::read_to_string(out_a.join("vm/serial.log")).unwrap();
    assert!(log.contains(&format!("mobix: boot-complete generation=1 toplevel={toplevel}")));
    assert!(log.contains("reboot: Power down"), "stage-2 powers off cleanly when asked");
    assert!(log.contains("systemd[1]: systemd 252"), "the default system runs Debian's systemd");
    assert!(log.contains("first boot: making the state filesystem"), "with its state on userdata");
    mobix_util_remove(&store_a).unwrap();
}

/// Store paths are read-only; make them writable so the temporary directory can go.
fn mobix_util_remove(p: &Path) -> std::io::Result<()> {
    mobix::util::remove_tree(p)
}

/// Writes a copy of the mobix tree with an edited qemu-aarch64 profile into `dir`.
fn broken_repo(dir: &Path, edit: impl Fn(String) -> String) {
    let r = repo();
    fs::create_dir_all(dir.join("devices/qemu-aarch64")).unwrap();
    fs::copy(r.join("mobix.lock"), dir.join("mobix.lock")).unwrap();
    let text = fs::read_to_string(r.join("devices/qemu-aarch64/device.yaml")).unwrap();
    fs::write(dir.join("devices/qemu-aarch64/device.yaml"), edit(text)).unwrap();
}

#[test]
fn broken_profiles_fail_with_file_line_and_key() {
    let cases: [(&str, &str, &str, &str); 4] = [
        ("header_version: 2", "header_version: 2\n  colour: blue", "bootimg.colour", "unknown field"),
        ("console: ttyAMA0\n", "", "console", "missing field `console`"),
        ("page_size: 4096", "page_size: big", "bootimg.page_size", "invalid type"),
        ("memory_mib: 1024", "memory_mib: -1", "qemu.memory_mib", "expected a whole number from 0 to 4294967295"),
    ];
    for (i, (from, to, key, msg)) in cases.iter().enumerate() {
        let tmp = tempfile::tempdir().unwrap();
        broken_repo(tmp.path(), |t| t.replacen(from, to, 1));
        let edited = fs::read_to_string(tmp.path().join("devices/qemu-aarch64/device.yaml")).unwrap();
        let out = mobix(
            tmp.path(),
            &["build", "--device", "qemu-aarch64", "--store", tmp.path().join("s").to_str().unwrap()],
        );
        assert_eq!(out.status.code(), Some(1), "case {i}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.starts_with("error: "), "case {i}: {err}");
        if !to.is_empty() {
            let last = to.lines().last().unwrap().trim();
            let line = edited.lines().position(|l| l.trim() == last).unwrap() + 1;
            assert!(err.contains(&format!("device.yaml:{line}: key `{key}`")), "case {i}: {err}");
        } else {
            // A missing key has no line of its own: the error points at its parent mapping.
            let line = edited.lines().position(|l| !l.is_empty() && !l.starts_with('#')).unwrap() + 1;
            assert!(err.contains(&format!("device.yaml:{line}: key `console`")), "case {i}: {err}");
        }
        assert!(err.contains(msg), "case {i}: {err}");
    }
}

#[test]
fn unknown_device_and_missing_build_are_user_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let r = repo();
    let out = mobix(tmp.path(), &["build", "--repo", r.to_str().unwrap(), "--device", "no-such-phone"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("known devices:") && err.contains("qemu-aarch64"), "{err}");
    let out =
        mobix(tmp.path(), &["test", "--repo", r.to_str().unwrap(), "--device", "qemu-aarch64", "--out", "nowhere"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("hint: run `mobix build --device qemu-aarch64 --out nowhere` first"), "{err}");
    let out = mobix(
        tmp.path(),
        &["flash", "--repo", r.to_str().unwrap(), "--device", "qemu-aarch64", "--variant", "tiny", "--out", "nowhere"],
    );
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("run `mobix build --device qemu-aarch64 --variant tiny --out nowhere` first"), "{err}");
}

#[test]
fn doctor_finds_every_tool_after_setup() {
    let out = mobix(&repo(), &["doctor", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let missing: Vec<&serde_json::Value> =
        v["checks"].as_array().unwrap().iter().filter(|c| c["found"].is_null()).collect();
    assert!(missing.is_empty(), "missing after scripts/setup: {missing:?}");
    assert!(out.status.success());
    // The text table's columns line up however long a tool's name is.
    let text = String::from_utf8(mobix(&repo(), &["doctor"]).stdout).unwrap();
    let state_at = |l: &str| l.find("  ok  ").or_else(|| l.find("  missing  ")).unwrap();
    let columns: std::collections::BTreeSet<usize> = text.lines().map(state_at).collect();
    assert_eq!(columns.len(), 1, "one column for ok/missing:\n{text}");
}
