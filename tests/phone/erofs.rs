//! An erofs system partition (`system.filesystem: erofs`): byte-identical from two empty
//! stores, read back by erofs-utils' own checker, and mounted by stage-1 on the emulated
//! phone through to boot-complete.

use crate::common::{mobix_in as mobix, ok, repo, tool};

use std::fs;
use std::process::Command;

#[test]
fn an_erofs_system_builds_reproducibly_checks_and_boots() {
    let d = tempfile::tempdir().unwrap();
    let t = d.path();
    fs::write(t.join("system.yaml"), "init: minimal\ndevice:\n  system: { filesystem: erofs }\n").unwrap();
    let repo = repo();
    let repo = repo.to_str().unwrap();
    // Both take what the binary caches of the run have (scripts/test's CI cache), so that
    // the erofs images, which no cache has, are what each build makes itself; the rest of the
    // minimal system is compared from two empty stores by packages::.
    for (store, out) in [("s1", "o1"), ("s2", "o2")] {
        let build = ["build", "--device", "qemu-aarch64", "--repo", repo, "--store", store, "--out", out];
        ok(&mobix(t, &[&build[..], &["--config", "system.yaml"]].concat()));
    }
    let img = fs::read(t.join("o1/system.img")).unwrap();
    assert!(img == fs::read(t.join("o2/system.img")).unwrap(), "system.img differs between two stores");

    // The reference tools: the sparse image expands (simg2img), and the partition it gives
    // is an erofs filesystem fsck.erofs accepts, holding the store and the generation.
    let raw = t.join("system.raw");
    tool(Command::new("simg2img").arg(t.join("o1/system.img")).arg(&raw));
    let raw_bytes = fs::read(&raw).unwrap();
    // The erofs superblock sits at 1024 with its magic first.
    assert_eq!(&raw_bytes[1024..1028], &0xE0F5_E1E2u32.to_le_bytes(), "erofs magic");
    tool(Command::new("fsck.erofs").arg(&raw));
    let files = t.join("files");
    tool(Command::new("fsck.erofs").arg(format!("--extract={}", files.display())).arg(&raw));
    assert!(files.join("mobix/generations/1.json").is_file());
    let toplevels: Vec<String> = fs::read_dir(files.join("mobix/store"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with("-mobix-system-qemu-aarch64"))
        .collect();
    assert_eq!(toplevels.len(), 1, "{toplevels:?}");

    ok(&mobix(t, &["test", "--device", "qemu-aarch64", "--repo", repo, "--store", "s1", "--out", "o1"]));
    let log = fs::read_to_string(t.join("o1/vm/serial.log")).unwrap();
    assert!(log.contains("erofs: (device vda4): mounted"), "stage-1 mounted the erofs partition:\n{log}");
    assert!(log.contains("mobix: boot-complete generation=1"), "{log}");
}
