//! Kernels from source, on a real tree (Debian's pinned linux-source-6.1): the config check
//! passes the qemu-aarch64 fragment and catches an option dropped by a missing dependency;
//! the kernel cross-compiled by the store boots in QEMU. These tests share one store under
//! target/ so a run (or a rerun) builds each recipe once; the first kernel build takes
//! about 6 minutes on 2 cores.

use crate::common::{copy_dir, repo};

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Output;

fn store() -> PathBuf {
    repo().join("target/mobix-test-store")
}

fn mobix(repo: &Path, args: &[&str]) -> Output {
    crate::common::run(crate::common::mobix_cmd().args(args).arg("--repo").arg(repo).arg("--store").arg(store()))
}

#[test]
fn kernel_check_passes_the_qemu_fragment_and_names_a_dropped_option() {
    let ok = mobix(&repo(), &["kernel", "check", "--device", "qemu-aarch64", "--variant", "tiny", "--json"]);
    assert!(ok.status.success(), "the qemu-tiny configuration keeps every option");
    let v: serde_json::Value = serde_json::from_slice(&ok.stdout).unwrap();
    assert!(v["report"]["dropped"].as_array().unwrap().is_empty());
    assert!(v["report"]["asked"].as_u64().unwrap() > 20);
    // The same fragment without MISC_FILESYSTEMS: erofs is dropped, and the check says why.
    let tmp = tempfile::tempdir().unwrap();
    for d in ["devices", "kernels", "init"] {
        copy_dir(&repo().join(d), &tmp.path().join(d));
    }
    fs::copy(repo().join("mobix.lock"), tmp.path().join("mobix.lock")).unwrap();
    let frag = tmp.path().join("kernels/qemu-tiny/qemu-virt.config");
    let text = fs::read_to_string(&frag).unwrap();
    fs::write(&frag, text.replace("CONFIG_MISC_FILESYSTEMS=y\n", "")).unwrap();
    let bad = mobix(tmp.path(), &["kernel", "check", "--device", "qemu-aarch64", "--variant", "tiny"]);
    assert_eq!(bad.status.code(), Some(1));
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(
        err.contains("CONFIG_EROFS_FS=y (from qemu-virt.config) became n: depends on MISC_FILESYSTEMS (MISC_FILESYSTEMS is not set)"),
        "{err}"
    );
    // And `kernel config` writes the final .config all the same.
    let cfg = tmp.path().join("kernel.config");
    let out = mobix(
        tmp.path(),
        &["kernel", "config", "--device", "qemu-aarch64", "--variant", "tiny", "--config-out", cfg.to_str().unwrap()],
    );
    assert_eq!(out.status.code(), Some(1));
    let written = fs::read_to_string(&cfg).unwrap();
    // Symbols whose menu is off are not written at all.
    assert!(written.contains("CONFIG_VIRTIO_BLK=y") && !written.contains("CONFIG_EROFS_FS=y"));
}

#[test]
fn a_kernel_built_from_source_boots() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let o = out.to_str().unwrap();
    let b = mobix(
        &repo(),
        &["build", "--device", "qemu-aarch64", "--variant", "tiny", "--out", o, "--config", &crate::common::minimal()],
    );
    assert!(b.status.success(), "building qemu-aarch64 tiny failed");
    let said = String::from_utf8_lossy(&b.stderr);
    assert!(said.contains("kernel: built from source: kernels/qemu-tiny"));
    if said.contains("(kernel-build)") {
        // Compiled here (not found in the store): it said beforehand how many objects to
        // expect, and at the end how many it compiled; the estimate (read from the tree's
        // makefiles) is within a quarter of the count.
        let number_after = |what: &str| -> f64 {
            let at = said.find(what).unwrap_or_else(|| panic!("no {what:?} in:\n{said}")) + what.len();
            said[at..].split(|c: char| !c.is_ascii_digit()).next().unwrap().parse().unwrap()
        };
        let estimate = number_after("options enabled): about ");
        let done =
            said.lines().find_map(|l| l.strip_prefix("mobix: kernel: ").filter(|l| l.contains("compiled (about")));
        let done: f64 =
            done.unwrap_or_else(|| panic!("no final count:\n{said}")).split(' ').next().unwrap().parse().unwrap();
        assert!((estimate - done).abs() <= done / 4.0, "estimated {estimate} objects, compiled {done}");
    }
    let t = mobix(&repo(), &["test", "--device", "qemu-aarch64", "--variant", "tiny", "--out", o, "--timeout", "120"]);
    assert!(t.status.success(), "the from-source kernel did not reach boot-complete");
    let log = fs::read_to_string(out.join("vm/serial.log")).unwrap();
    assert!(log.contains("Linux version 6.1.176"), "it is the kernel built here");
    assert!(log.contains("mobix: boot-complete generation="));
}

#[test]
fn phone_kernel_specs_keep_their_options_on_linux_6_12() {
    for device in ["oneplus-enchilada", "google-sargo"] {
        let o = mobix(&repo(), &["kernel", "check", "--device", device]);
        assert!(o.status.success(), "{device}: every option of its fragment and mobix's survives olddefconfig");
    }
}
