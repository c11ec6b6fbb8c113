//! Firmware pinned by hash in a profile, taken from the directory the system config names:
//! the stage-1 files land in the initramfs, all of them in the system under /lib/firmware,
//! and a file that does not match its pin stops the build with both hashes shown.

use crate::common::{mobix_in as mobix, repo_copy, store_entry};

use mobix::format::{bootimg::BootImage, compress, cpio};
use std::fs;

#[test]
fn firmware_is_pinned_and_installed() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    repo_copy(t);
    // Two "firmware" blobs in a directory of the user's.
    let fwdir = t.join("vendor-firmware");
    fs::create_dir_all(fwdir.join("qcom")).unwrap();
    let gpu: Vec<u8> = (0..5000u32).map(|i| (i * 7) as u8).collect();
    let modem: Vec<u8> = (0..9000u32).map(|i| (i * 13) as u8).collect();
    fs::write(fwdir.join("qcom/gpu.fw"), &gpu).unwrap();
    fs::write(fwdir.join("qcom/modem.mbn"), &modem).unwrap();
    let sha = |d: &[u8]| mobix::hash::Sha256Digest::of(d).hex();
    let dev = t.join("devices/qemu-aarch64/device.yaml");
    let mut text = fs::read_to_string(&dev).unwrap();
    text.push_str(&format!(
        "\nfirmware:\n  files:\n    - {{ path: qcom/gpu.fw, sha256: {}, stage1: true }}\n    - {{ path: qcom/modem.mbn, sha256: {} }}\n",
        sha(&gpu),
        sha(&modem)
    ));
    fs::write(&dev, text).unwrap();
    fs::write(t.join("system.yaml"), "hostname: fwphone\ninit: minimal\nfirmware_dir: vendor-firmware\n").unwrap();
    let store = t.join("store");
    let build = |store: &std::path::Path, out: &str| {
        mobix(
            t,
            &[
                "build",
                "--device",
                "qemu-aarch64",
                "--config",
                "system.yaml",
                "--store",
                store.to_str().unwrap(),
                "--out",
                out,
            ],
        )
    };
    let o = build(&store, "out");
    assert!(o.status.success());
    // Stage-1's file is in the initramfs, where the kernel's loader looks.
    let img = BootImage::parse(&fs::read(t.join("out/boot.img")).unwrap()).unwrap();
    let entries = cpio::read(&compress::decompress(&img.ramdisk, 1 << 30).unwrap()).unwrap();
    let get = |p: &str| entries.iter().find(|e| e.path == p).map(|e| e.kind.clone());
    assert_eq!(get("lib/firmware/qcom/gpu.fw"), Some(cpio::Kind::File(gpu.clone())));
    assert_eq!(get("lib/firmware/qcom/modem.mbn"), None, "only stage-1's files go into the initramfs");
    // Both are in the system closure, under the toplevel's firmware link.
    let fw = store_entry(&store, "-firmware");
    assert_eq!(fs::read(fw.join("lib/firmware/qcom/modem.mbn")).unwrap(), modem);
    let top = store_entry(&store, "-mobix-system-qemu-aarch64");
    assert!(fs::read_link(top.join("firmware")).unwrap().to_string_lossy().ends_with("-firmware/lib/firmware"));
    // It boots (stage-2 links /lib/firmware).
    let test = mobix(t, &["test", "--device", "qemu-aarch64", "--config", "system.yaml", "--out", "out"]);
    assert!(test.status.success());
    // A changed file is refused when fetched (an empty store), with both hashes, and no
    // firmware path enters the store. (A store that has the pinned path does not fetch it
    // again: the path is named by the pins.)
    let mut changed = modem.clone();
    changed[0] ^= 1;
    fs::write(fwdir.join("qcom/modem.mbn"), &changed).unwrap();
    let fresh = t.join("fresh-store");
    let o = build(&fresh, "out2");
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("does not match its pin") && err.contains(&sha(&modem)) && err.contains(&sha(&changed)),
        "{err}"
    );
    assert!(!fs::read_dir(&fresh).unwrap().any(|e| e.unwrap().path().to_string_lossy().ends_with("-firmware")));
    let _ = mobix::util::remove_tree(&store);
    let _ = mobix::util::remove_tree(&fresh);
}
