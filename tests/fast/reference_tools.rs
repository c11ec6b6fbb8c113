//! Our codecs judged by the reference tools: what we write, they read; what they write, we
//! read. Needs the tools `scripts/setup` installs (mkbootimg, android-sdk-libsparse-utils,
//! cpio, gdisk).

use mobix::format::{bootimg, cpio, elf, sparse};
use std::collections::BTreeMap;
use std::fs;
use std::path::Path;
use std::process::Command;

use crate::common::tool as run;

/// `unpack_bootimg`'s printed header fields ("key: value" lines).
fn unpack_fields(img: &Path, out: &Path) -> BTreeMap<String, String> {
    let text = run(Command::new("unpack_bootimg").arg("--boot_img").arg(img).arg("--out").arg(out));
    text.lines().filter_map(|l| l.split_once(": ")).map(|(k, v)| (k.trim().to_string(), v.trim().to_string())).collect()
}

#[test]
fn unpack_bootimg_reads_our_boot_images() {
    for version in 0..=2 {
        let d = tempfile::tempdir().unwrap();
        let mut img = bootimg::sample(version);
        img.cmdline = format!("console=ttyAMA0 {}", "x".repeat(600)); // spills into extra_cmdline
        let path = d.path().join("boot.img");
        fs::write(&path, img.to_bytes().unwrap()).unwrap();
        let f = unpack_fields(&path, &d.path().join("un"));
        assert_eq!(f["boot_magic"], "ANDROID!");
        assert_eq!(f["boot image header version"], version.to_string());
        assert_eq!(f["kernel_size"], "5000");
        assert_eq!(f["kernel load address"], "0x40080000");
        assert_eq!(f["ramdisk size"], "3000");
        assert_eq!(f["ramdisk load address"], "0x41000000");
        assert_eq!(f["kernel tags load address"], "0x40000100");
        assert_eq!(f["page size"], "4096");
        assert_eq!(f["os version"], "12.0.0");
        assert_eq!(f["os patch level"], "2024-01");
        assert_eq!(f["product name"], "qemu");
        assert_eq!(
            format!("{}{}", f["command line args"], f.get("additional command line args").map_or("", |s| s)),
            img.cmdline
        );
        if version == 2 {
            assert_eq!(f["dtb size"], "100");
            assert_eq!(f["dtb address"], "0x41f00000");
            assert_eq!(fs::read(d.path().join("un/dtb")).unwrap(), img.dtb);
        }
        assert_eq!(fs::read(d.path().join("un/kernel")).unwrap(), img.kernel);
        assert_eq!(fs::read(d.path().join("un/ramdisk")).unwrap(), img.ramdisk);
    }
}

#[test]
fn we_read_what_mkbootimg_writes() {
    // A long command line spills into extra_cmdline. Debian's mkbootimg (29.0.6) splits it
    // at 512 with no NUL; upstream AOSP, and mobix, at 511 + NUL. The reader keeps the split.
    for (version, long) in [(0, false), (1, false), (2, false), (0, true), (2, true)] {
        let d = tempfile::tempdir().unwrap();
        let k = d.path().join("k");
        let r = d.path().join("r");
        let dtb = d.path().join("dtb");
        fs::write(&k, vec![0x41u8; 12345]).unwrap();
        fs::write(&r, vec![0x1fu8; 2345]).unwrap();
        fs::write(&dtb, vec![0xd0u8; 321]).unwrap();
        let out = d.path().join("boot.img");
        let cmdline = format!("console=ttyMSM0,115200 {}", "y".repeat(if long { 700 } else { 300 }));
        let mut cmd = Command::new("mkbootimg");
        cmd.arg("--kernel").arg(&k).arg("--ramdisk").arg(&r);
        cmd.args(["--cmdline", &cmdline, "--base", "0x80000000", "--pagesize", "2048", "--board", "enchilada"]);
        cmd.args(["--os_version", "11.0.0", "--os_patch_level", "2021-03"]);
        cmd.args(["--header_version", &version.to_string(), "-o"]).arg(&out);
        if version == 2 {
            cmd.arg("--dtb").arg(&dtb);
        }
        run(&mut cmd);
        let bytes = fs::read(&out).unwrap();
        let img = bootimg::BootImage::parse(&bytes).unwrap();
        assert_eq!(img.header_version, version);
        assert_eq!(img.page_size, 2048);
        assert_eq!(img.kernel_addr, 0x8000_8000);
        assert_eq!(img.ramdisk_addr, 0x8100_0000);
        assert_eq!(img.tags_addr, 0x8000_0100);
        assert_eq!(img.os_version, 0x1600_0153);
        assert_eq!(img.board, "enchilada");
        assert_eq!(img.cmdline, cmdline);
        assert_eq!(img.kernel.len(), 12345);
        assert_eq!(img.ramdisk.len(), 2345);
        if version == 2 {
            assert_eq!(img.dtb, vec![0xd0u8; 321]);
            assert_eq!(img.dtb_addr, 0x81f0_0000);
        }
        // Writing the parsed image gives mkbootimg's bytes back, SHA-1 id included.
        // Even Debian's split is kept, so a repack is byte-identical.
        let ours = img.to_bytes().unwrap();
        let first_diff = ours.iter().zip(&bytes).position(|(a, b)| a != b);
        assert!(
            ours.len() == bytes.len() && first_diff.is_none(),
            "v{version} repack differs from mkbootimg at {first_diff:?} (lengths {} vs {})",
            ours.len(),
            bytes.len()
        );
    }
}

#[test]
fn simg2img_restores_our_sparse_images() {
    let d = tempfile::tempdir().unwrap();
    let raw = sparse::sample_image();
    let mut padded = raw.clone();
    padded.resize(raw.len().div_ceil(4096) * 4096, 0);
    let sp = d.path().join("x.simg");
    let mut out = Vec::new();
    sparse::encode(std::io::Cursor::new(&raw), 4096, &mut out).unwrap();
    fs::write(&sp, &out).unwrap();
    let back = d.path().join("x.raw");
    run(Command::new("simg2img").arg(&sp).arg(&back));
    assert_eq!(fs::read(&back).unwrap(), padded);
}

#[test]
fn we_read_what_img2simg_writes() {
    let d = tempfile::tempdir().unwrap();
    let mut raw = sparse::sample_image();
    raw.resize(raw.len().div_ceil(4096) * 4096, 0);
    let rawp = d.path().join("x.raw");
    fs::write(&rawp, &raw).unwrap();
    let sp = d.path().join("x.simg");
    run(Command::new("img2simg").arg(&rawp).arg(&sp));
    let theirs = fs::read(&sp).unwrap();
    let mut back = Vec::new();
    sparse::decode_to(std::io::Cursor::new(&theirs), &mut back).unwrap();
    assert_eq!(back, raw);
    // Same chunk choices as img2simg, so the same bytes.
    let mut ours = Vec::new();
    sparse::encode(std::io::Cursor::new(&raw), 4096, &mut ours).unwrap();
    assert_eq!(ours, theirs, "our sparse encoding differs from img2simg's");
}

#[test]
fn cpio_lists_and_extracts_our_archives() {
    let d = tempfile::tempdir().unwrap();
    let entries = vec![
        cpio::Entry::file("init", 0o755, b"#!/bin/sh\necho hi\n".to_vec()),
        cpio::Entry::dir("etc"),
        cpio::Entry::file("etc/hostname", 0o644, b"phone\n".to_vec()),
        cpio::Entry::symlink("bin", "usr/bin"),
        cpio::Entry::dir("usr"),
        cpio::Entry::dir("usr/bin"),
    ];
    let archive = d.path().join("x.cpio");
    fs::write(&archive, cpio::write(&entries).unwrap()).unwrap();
    let listing = run(Command::new("cpio").args(["-t", "-H", "newc", "--quiet", "-F"]).arg(&archive));
    let names: Vec<&str> = listing.lines().collect();
    assert_eq!(names, ["bin", "etc", "etc/hostname", "init", "usr", "usr/bin"]);
    let x = d.path().join("x");
    fs::create_dir(&x).unwrap();
    run(Command::new("cpio").args(["-i", "-d", "-H", "newc", "--quiet", "-F"]).arg(&archive).current_dir(&x));
    assert_eq!(fs::read(x.join("etc/hostname")).unwrap(), b"phone\n");
    assert_eq!(fs::read_link(x.join("bin")).unwrap(), Path::new("usr/bin"));
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(fs::metadata(x.join("init")).unwrap().permissions().mode() & 0o777, 0o755);
    // And we read what GNU cpio writes.
    let theirs = run(Command::new("sh")
        .arg("-c")
        .arg("find . -mindepth 1 | LC_ALL=C sort | cpio -o -H newc --quiet --reproducible -R 0:0 | od -An -v -tx1")
        .current_dir(&x));
    let bytes: Vec<u8> = theirs.split_whitespace().map(|h| u8::from_str_radix(h, 16).unwrap()).collect();
    let back = cpio::read(&bytes).unwrap();
    let mut want = entries.clone();
    want.sort_by(|a, b| a.path.cmp(&b.path));
    assert_eq!(back, want);
}

#[test]
fn sgdisk_accepts_our_disks() {
    let d = tempfile::tempdir().unwrap();
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let profile = mobix::profile::load(repo, "qemu-aarch64").unwrap();
    let disk = d.path().join("disk.img");
    let layout = mobix::vm::create_disk(&profile, &disk).unwrap();
    let v = run(Command::new("sgdisk").arg("-v").arg(&disk));
    assert!(v.contains("No problems found"), "{v}");
    let p = run(Command::new("sgdisk").arg("-p").arg(&disk));
    for mobix::vm::Extent { name, offset: start, size } in &layout.partitions {
        let line = p
            .lines()
            .find(|l| l.split_whitespace().last() == Some(name.as_str()))
            .unwrap_or_else(|| panic!("{name} missing:\n{p}"));
        let cols: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(cols[1].parse::<u64>().unwrap() * 512, *start, "{name} start");
        assert_eq!((cols[2].parse::<u64>().unwrap() + 1) * 512 - start, *size, "{name} size");
    }
}

/// Our resparse must cut exactly where fastboot's libsparse does: simg2simg is the CLI of
/// `sparse_file_resparse`, and its pieces were seen to equal what fastboot sends.
#[test]
fn split_pieces_equal_simg2simg() {
    let d = tempfile::tempdir().unwrap();
    let mut raw = sparse::sample_image();
    // More shapes: a second fill value and a long data run to split several times.
    raw.extend(std::iter::repeat_n([1u8, 2, 3, 4], 3000).flatten());
    raw.extend((0..700_000u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8));
    raw.resize(raw.len().div_ceil(4096) * 4096, 0);
    let rawp = d.path().join("x.raw");
    fs::write(&rawp, &raw).unwrap();
    let sp = d.path().join("x.simg");
    run(Command::new("img2simg").arg(&rawp).arg(&sp));
    let theirs_in = fs::read(&sp).unwrap();
    let layout = sparse::Layout::from_sparse(std::io::Cursor::new(&theirs_in)).unwrap();
    for max in [65536u32, 131072, 262144, 500000, 4 << 20] {
        let prefix = d.path().join(format!("piece-{max}"));
        run(Command::new("simg2simg").arg(&sp).arg(&prefix).arg(max.to_string()));
        let pieces = layout.split(max).unwrap();
        for (i, p) in pieces.iter().enumerate() {
            let mut ours = Vec::new();
            p.write(std::io::Cursor::new(&theirs_in), &mut ours).unwrap();
            let theirs = fs::read(format!("{}.{i}", prefix.display()))
                .unwrap_or_else(|e| panic!("max {max}: simg2simg made fewer pieces than our {}: {e}", pieces.len()));
            let first = ours.iter().zip(&theirs).position(|(a, b)| a != b);
            assert!(
                ours.len() == theirs.len() && first.is_none(),
                "max {max} piece {i}: differs at {first:?} (lengths {} vs {})",
                ours.len(),
                theirs.len()
            );
        }
        assert!(
            !Path::new(&format!("{}.{}", prefix.display(), pieces.len())).exists(),
            "max {max}: simg2simg made more pieces than our {}",
            pieces.len()
        );
    }
}

#[test]
fn gpt_attributes_and_sgdisk_tables() {
    use mobix::format::gpt;
    let d = tempfile::tempdir().unwrap();
    let disk = d.path().join("d.img");
    let reqs = [
        gpt::Request { name: "misc".into(), size: 1 << 20, type_guid: gpt::android_type_for("misc"), attributes: 0 },
        gpt::Request {
            name: "boot_a".into(),
            size: 4 << 20,
            type_guid: gpt::android_type_for("boot_a"),
            attributes: 0x003f_0000_0000_0000,
        },
    ];
    let size = gpt::disk_size_for(&reqs, 1 << 20);
    let mut f = fs::OpenOptions::new().read(true).write(true).create(true).truncate(true).open(&disk).unwrap();
    f.set_len(size).unwrap();
    gpt::create(&mut f, size, 512, gpt::Guid::parse("6D6F6269-7800-4000-8000-000000000001").unwrap(), 1 << 20, &reqs)
        .unwrap();
    drop(f);
    let info = run(Command::new("sgdisk").args(["-i", "2"]).arg(&disk));
    assert!(info.contains("Partition name: 'boot_a'"), "{info}");
    assert!(info.to_lowercase().contains("attribute flags: 003f000000000000"), "{info}");
    assert!(info.contains("49A4D17F-93A3-45C1-A0DE-F50B2EBE2599"), "{info}");
    // A table sgdisk makes, read by us (4096-byte sectors, as on UFS phones).
    let other = d.path().join("e.img");
    fs::write(&other, vec![0u8; 16 << 20]).unwrap();
    run(Command::new("sgdisk")
        .args(["-n", "1:0:+1M", "-c", "1:misc", "-t", "1:EF32A33B-A409-486C-9141-9FFB711F6266"])
        .args(["-n", "2:0:+2M", "-c", "2:userdata", "-A", "2:set:60"])
        .arg(&other));
    let mut f = fs::File::open(&other).unwrap();
    let t = gpt::read(&mut f, None).unwrap();
    assert_eq!(t.sector_size, 512);
    let misc = t.find("misc").unwrap();
    assert_eq!(misc.type_guid.to_string(), "EF32A33B-A409-486C-9141-9FFB711F6266");
    assert_eq!(misc.size(512), 1 << 20);
    assert_eq!(t.find("userdata").unwrap().attributes, 1 << 60);
}

/// Stock images as mkbootimg makes them, read back into the arguments that made them
/// (what `mobix device import bootimg` builds a profile from): base and offsets, page
/// size, header version, command line, and where the device tree is.
#[test]
fn stock_images_give_back_the_mkbootimg_arguments_that_made_them() {
    use mobix::format::stockimg::{analyze, DtbPlacement};
    let d = tempfile::tempdir().unwrap();
    let t = d.path();
    // The smallest device tree: a root node with nothing in it.
    let dtb: Vec<u8> = {
        let words = [0xd00d_feedu32, 72, 56, 72, 40, 17, 16, 0, 0, 16];
        let mut b: Vec<u8> = words.iter().flat_map(|w| w.to_be_bytes()).collect();
        b.extend_from_slice(&[0u8; 16]);
        b.extend([1u32, 0, 2, 9].iter().flat_map(|w| w.to_be_bytes()));
        b
    };
    fs::write(t.join("tiny.dtb"), &dtb).unwrap();
    // A stand-in arm64 Image: the header a bootloader (and mobix's kernel step) checks.
    let mut image = vec![7u8; 9000];
    image[..64].fill(0);
    image[24] = 2; // little endian, 4K pages
    image[56..60].copy_from_slice(b"ARM\x64");
    let gz = {
        use std::io::Write;
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(&image).unwrap();
        e.finish().unwrap()
    };
    // A tree for whole profiles written from the stock images.
    let repo = t.join("repo");
    crate::common::repo_copy(&repo);
    fs::write(t.join("small.yaml"), "init: minimal\ndevice: { system: { size: 64MiB } }\n").unwrap();
    let store = crate::common::shared_store();
    fs::write(t.join("Image.gz"), &gz).unwrap();
    fs::write(t.join("Image.gz-dtb"), [gz.as_slice(), &dtb, &dtb].concat()).unwrap();
    fs::write(t.join("ramdisk"), [0x1fu8; 3000]).unwrap();
    // (kernel, header version, page size, base, kernel/ramdisk/second/tags offsets, extra
    // mkbootimg arguments, the dtb placement expected)
    type Case<'a> = (&'a str, u32, u32, u32, [u32; 4], &'a [&'a str], DtbPlacement);
    let cases: [Case; 5] = [
        // pmOS's boot-deploy defaults (base 0x10000000) with an Image.gz-dtb (SDM845-like).
        (
            "Image.gz-dtb",
            0,
            2048,
            0x1000_0000,
            [0x8000, 0x0100_0000, 0x00f0_0000, 0x100],
            &[],
            DtbPlacement::Appended { count: 2 },
        ),
        ("Image.gz", 0, 4096, 0x0000_0000, [0x8000, 0x0100_0000, 0x00f0_0000, 0x100], &["--second", "tiny.dtb"], {
            DtbPlacement::Second
        }),
        ("Image.gz", 1, 4096, 0x8000_0000, [0x8000, 0x0200_0000, 0x00f0_0000, 0x0000_0100], &[], DtbPlacement::None),
        // Header v2 with its dtb and a kernel offset other than 0x8000 (base moves with it).
        ("Image.gz", 2, 4096, 0x4000_0000, [0x0020_0000, 0x0400_0000, 0, 0x100], &["--dtb", "tiny.dtb"], {
            DtbPlacement::Header
        }),
        ("Image.gz", 2, 2048, 0x0000_0000, [0x8000, 0x0100_0000, 0, 0x0000_0100], &["--dtb", "tiny.dtb"], {
            DtbPlacement::Header
        }),
    ];
    for (i, (kernel, version, page, base, [ko, ro, so, to], extra, want)) in cases.into_iter().enumerate() {
        let out = t.join(format!("stock-{i}.img"));
        let hex = |v: u32| format!("{v:#x}");
        let mut c = Command::new("mkbootimg");
        c.current_dir(t)
            .args(["--kernel", kernel, "--ramdisk", "ramdisk", "--cmdline", "console=ttyMSM0,115200 androidboot.x=y"])
            .args(["--header_version", &version.to_string(), "--pagesize", &page.to_string()])
            .args(["--base", &hex(base), "--kernel_offset", &hex(ko), "--ramdisk_offset", &hex(ro)])
            .args(["--second_offset", &hex(so), "--tags_offset", &hex(to), "--board", "stock", "-o"])
            .arg(&out)
            .args(extra);
        if version == 2 {
            c.args(["--dtb_offset", "0x01f00000"]);
        }
        run(&mut c);
        let img = bootimg::BootImage::parse(&fs::read(&out).unwrap()).unwrap();
        let a = analyze(&img, None);
        assert_eq!((a.header_version, a.page_size), (version, page), "case {i}");
        // The base comes back as the kernel address less 0x8000; base + offset is what
        // mkbootimg wrote, whatever the split.
        let addr = |o: Option<u32>| a.base.unwrap().wrapping_add(o.unwrap());
        assert_eq!(addr(a.kernel_offset), base.wrapping_add(ko), "case {i}: kernel");
        assert_eq!(addr(a.ramdisk_offset), base.wrapping_add(ro), "case {i}: ramdisk");
        assert_eq!(addr(a.tags_offset), base.wrapping_add(to), "case {i}: tags");
        if ko == 0x8000 {
            assert_eq!((a.base, a.ramdisk_offset, a.tags_offset), (Some(base), Some(ro), Some(to)), "case {i}");
            // Only an image with a second stage has its address.
            let second = extra.contains(&"--second");
            assert_eq!(a.second_offset, second.then_some(so), "case {i}");
        }
        if version == 2 {
            assert_eq!(a.dtb_offset.map(|o| o + a.base.unwrap() as u64), Some(base as u64 + 0x01f0_0000), "case {i}");
        }
        assert_eq!(a.cmdline, "console=ttyMSM0,115200 androidboot.x=y", "case {i}");
        assert_eq!(a.board, "stock", "case {i}");
        assert_eq!(a.dtb, want, "case {i}");
        // The command prints them as profile keys (JSON here), and what it cannot map.
        let o = crate::common::mobix_cmd().args(["device", "import", "bootimg", "--json"]).arg(&out).output();
        let o = o.unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        let keys = &v["keys"]["bootimg"];
        assert_eq!(keys["header_version"], version, "case {i}");
        assert_eq!(keys["base"].as_u64().unwrap() + keys["tags_offset"].as_u64().unwrap(), (base + to) as u64);
        assert_eq!(v["keys"]["cmdline"], serde_json::json!(["console=ttyMSM0,115200", "androidboot.x=y"]));
        let mode = match want {
            DtbPlacement::Appended { .. } => Some("append"),
            DtbPlacement::Header => Some("header"),
            DtbPlacement::Second => Some("second"),
            _ => None,
        };
        assert_eq!(keys["dtb"]["mode"].as_str(), mode, "case {i}");
        // A whole profile from it (`--name`) boots the stock kernel and its device trees;
        // built, its boot.img has the stock image's header values.
        let name = format!("stock-{i}");
        let o =
            crate::common::mobix_in(&repo, &["device", "import", "bootimg", out.to_str().unwrap(), "--name", &name]);
        crate::common::ok(&o);
        let o = crate::common::mobix_in(
            &repo,
            &["build", "--device", &name, "--store", store.to_str().unwrap(), "--out", &format!("out-{name}")]
                .into_iter()
                .chain(["--config", t.join("small.yaml").to_str().unwrap()])
                .collect::<Vec<_>>(),
        );
        crate::common::ok(&o);
        let report = |img: &Path, dir: &str| -> BTreeMap<String, String> {
            let text = run(Command::new("unpack_bootimg").arg("--boot_img").arg(img).arg("--out").arg(t.join(dir)));
            text.lines()
                .filter_map(|l| l.split_once(": "))
                .filter(|(k, _)| k.contains("address") || k.contains("version") || *k == "page size")
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let built = repo.join(format!("out-{name}/boot.img"));
        assert_eq!(report(&built, "ours"), report(&out, "stock"), "case {i}");
        let ours = bootimg::BootImage::parse(&fs::read(&built).unwrap()).unwrap();
        assert_eq!(ours.cmdline, img.cmdline, "case {i}");
        assert_eq!(analyze(&ours, None).dtb, want, "case {i}: the device trees where the stock image had them");
        if want == (DtbPlacement::Appended { count: 2 }) {
            assert!(ours.kernel.ends_with(&[dtb.as_slice(), &dtb].concat()), "case {i}: the stock trees appended");
        }
    }
    // Not a boot image: exit 1, naming the file.
    let o = crate::common::mobix_cmd().args(["device", "import", "bootimg"]).arg(t.join("ramdisk")).output();
    let o = o.unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("ramdisk")
            && String::from_utf8_lossy(&o.stderr).contains("ANDROID!")
    );
}

/// What `readelf` says an ELF file needs: its interpreter, NEEDED libraries, soname and
/// run path, as `elf::read` gives them.
fn readelf_dynamic(path: &Path) -> elf::Dynamic {
    let text = run(Command::new("readelf").args(["-d", "-l", "-W"]).arg(path));
    let bracketed = |l: &str| l.rsplit_once('[').and_then(|(_, r)| r.strip_suffix(']')).map(String::from);
    let mut d = elf::Dynamic::default();
    for l in text.lines() {
        let l = l.trim();
        if let Some(i) = l.strip_prefix("[Requesting program interpreter: ") {
            d.interpreter = i.strip_suffix(']').map(String::from);
        } else if l.contains("(NEEDED)") {
            d.needed.extend(bracketed(l));
        } else if l.contains("(SONAME)") {
            d.soname = bracketed(l);
        } else if l.contains("(RUNPATH)") || (l.contains("(RPATH)") && d.runpath.is_empty()) {
            d.runpath =
                bracketed(l).unwrap_or_default().split(':').filter(|s| !s.is_empty()).map(String::from).collect();
        }
    }
    d
}

#[test]
fn readelf_agrees_with_what_we_read_of_elf_files() {
    // arm64: the cross toolchain's libraries (scripts/setup installs it for the `cc`
    // builder); x86-64: the host's programs. Up to 150 of each, in name order.
    let mut compared = BTreeMap::new();
    for (dir, machine) in [("/usr/aarch64-linux-gnu/lib", elf::EM_AARCH64), ("/usr/bin", elf::EM_X86_64)] {
        let mut files: Vec<_> = fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).collect();
        files.sort();
        let mut n = 0;
        for f in files.into_iter().filter(|f| fs::symlink_metadata(f).is_ok_and(|m| m.is_file())) {
            let Ok(bytes) = fs::read(&f) else { continue };
            if !bytes.starts_with(elf::MAGIC) {
                continue;
            }
            let ours = elf::read(&bytes).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
            let theirs = readelf_dynamic(&f);
            assert_eq!(
                (&ours.interpreter, &ours.needed, &ours.soname, &ours.runpath),
                (&theirs.interpreter, &theirs.needed, &theirs.soname, &theirs.runpath),
                "{}",
                f.display()
            );
            assert_eq!(ours.machine, machine, "{}", f.display());
            n += 1;
            if n == 150 {
                break;
            }
        }
        compared.insert(dir, n);
    }
    assert!(compared.values().all(|&n| n >= 20), "ELF files compared: {compared:?}");
}
