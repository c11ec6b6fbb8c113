//! The kernel judges our formats: the qemu-aarch64 initramfs recompressed with gzip, lz4
//! (legacy frame), xz (CRC32) and zstd, inside boot images of header versions 0 to 4, each
//! booted in QEMU to stage-2's boot-complete line. Needs what scripts/setup installs.

use mobix::format::bootimg::BootImage;
use mobix::format::compress::{self, Compression};
use std::path::PathBuf;
use std::time::Duration;

#[test]
fn every_header_version_and_compression_boots() {
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let tmp = tempfile::tempdir().unwrap();
    let (store, out) = (tmp.path().join("store"), tmp.path().join("out"));
    let minimal = repo.join("tests/fixtures/systems/minimal.yaml");
    let status = crate::common::mobix_cmd()
        .args(["build", "--device", "qemu-aarch64", "--repo"])
        .arg(&repo)
        .arg("--config")
        .arg(&minimal)
        .arg("--store")
        .arg(&store)
        .arg("--out")
        .arg(&out)
        .status()
        .unwrap();
    assert!(status.success(), "mobix build failed");
    let sel = mobix::profile::Selection { variant: None, config: Some(&minimal) };
    let profile = mobix::profile::load_with(&repo, "qemu-aarch64", sel).unwrap();
    let manifest = mobix::publish::load_manifest(&out).unwrap();
    let built = BootImage::parse(&std::fs::read(out.join("boot.img")).unwrap()).unwrap();
    let cpio = compress::decompress(&built.ramdisk, 1 << 30).unwrap();
    let cases = [
        (0, Compression::Gzip),
        (1, Compression::Lz4),
        (2, Compression::Xz),
        (3, Compression::Zstd),
        (4, Compression::Lz4),
        (2, Compression::Zstd),
    ];
    let mut failures = Vec::new();
    // The profile's phone of one emulated CPU, as each boot below.
    let _phone = crate::common::small_phone();
    for (version, c) in cases {
        let mut img = built.clone();
        img.header_version = version;
        img.ramdisk = compress::compress(&cpio, c).unwrap();
        if version >= 3 {
            // No addresses or dtb in v3/v4 boot images (they live in vendor_boot).
            img = BootImage {
                header_version: version,
                page_size: 4096,
                os_version: built.os_version,
                cmdline: built.cmdline.clone(),
                kernel: built.kernel.clone(),
                ramdisk: img.ramdisk,
                ..BootImage::default()
            };
        } else if version < 2 {
            img.dtb.clear();
            img.dtb_addr = 0;
        }
        let bytes = img.to_bytes().unwrap();
        let dir = tmp.path().join(format!("v{version}-{}", c.name()));
        let prepared =
            mobix::vm::prepare_from(&profile, &dir, &bytes, &out.join("system.img"), manifest.clone()).unwrap();
        let outcome =
            mobix::vm::test(&profile, &prepared, Duration::from_secs(180), None, None, &|m| eprintln!("{m}")).unwrap();
        eprintln!(
            "header v{version}, {} initramfs: {} after {:.1}s",
            c.name(),
            outcome.reason.lines().next().unwrap_or(""),
            outcome.seconds
        );
        if !outcome.passed {
            failures.push(format!("v{version}/{}: {}", c.name(), outcome.reason));
        }
    }
    let _ = mobix::util::remove_tree(&store);
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}
