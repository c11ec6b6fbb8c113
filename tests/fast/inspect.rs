//! `mobix inspect`: info fields, and unpack followed by pack giving back the identical file,
//! on fixtures of every format (reference-tool-made where a reference tool exists).

use crate::common::tool;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

fn mobix(args: &[&str]) -> std::process::Output {
    crate::common::mobix_cmd().args(args).output().expect("running mobix")
}

fn ok(args: &[&str]) -> String {
    let out = mobix(args);
    assert!(out.status.success(), "mobix {args:?} failed:\n{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn info(format: &str, file: &Path) -> serde_json::Value {
    let v: serde_json::Value =
        serde_json::from_str(&ok(&["inspect", format, "info", "--json", file.to_str().unwrap()])).unwrap();
    assert_eq!(v["version"], 1);
    v
}

fn fixture(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(rel)
}

/// unpack into a directory, pack it back, compare bytes.
fn identity(format: &str, file: &Path, tmp: &Path) {
    let dir = tmp.join(format!("{}-unpacked", file.file_name().unwrap().to_string_lossy()));
    let back = tmp.join(format!("{}-repacked", file.file_name().unwrap().to_string_lossy()));
    ok(&["inspect", format, "unpack", file.to_str().unwrap(), "--out", dir.to_str().unwrap()]);
    ok(&["inspect", format, "pack", dir.to_str().unwrap(), "--out", back.to_str().unwrap()]);
    let (a, b) = (fs::read(file).unwrap(), fs::read(&back).unwrap());
    let first = a.iter().zip(&b).position(|(x, y)| x != y);
    assert!(
        a.len() == b.len() && first.is_none(),
        "{format} {}: repack differs at {first:?} ({} vs {} bytes)",
        file.display(),
        a.len(),
        b.len()
    );
}

#[test]
fn bootimg_info_and_identity() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    // mkbootimg-made v0-v2, one with Debian's 512-character cmdline split.
    fs::write(t.join("k"), vec![0x41u8; 9000]).unwrap();
    fs::write(t.join("r"), vec![0x1fu8; 3000]).unwrap();
    fs::write(t.join("d"), vec![0xd0u8; 300]).unwrap();
    for (v, cmdline) in
        [(0, "console=ttyMSM0,115200".to_string()), (1, "x".repeat(700)), (2, "androidboot.hardware=qcom".to_string())]
    {
        let img = t.join(format!("mk-v{v}.img"));
        let mut cmd = Command::new("mkbootimg");
        cmd.arg("--kernel").arg(t.join("k")).arg("--ramdisk").arg(t.join("r"));
        cmd.args(["--cmdline", &cmdline, "--base", "0x80000000", "--pagesize", "4096", "--board", "sdm845"]);
        cmd.args(["--os_version", "10.0.0", "--os_patch_level", "2020-05", "--header_version", &v.to_string(), "-o"])
            .arg(&img);
        if v == 2 {
            cmd.arg("--dtb").arg(t.join("d"));
        }
        tool(&mut cmd);
        let i = info("bootimg", &img);
        assert_eq!(i["header_version"], v);
        assert_eq!(i["page_size"], 4096);
        assert_eq!(i["kernel_addr"], "0x80008000");
        assert_eq!(i["ramdisk_addr"], "0x81000000");
        assert_eq!(i["tags_addr"], "0x80000100");
        assert_eq!(i["os_version"], "10.0.0");
        assert_eq!(i["os_patch_level"], "2020-05");
        assert_eq!(i["board"], "sdm845");
        assert_eq!(format!("{}{}", i["cmdline"].as_str().unwrap(), i["extra_cmdline"].as_str().unwrap()), cmdline);
        assert_eq!(i["kernel_size"], 9000);
        identity("bootimg", &img, t);
    }
    for f in ["boot-v3.img", "boot-v4.img", "boot-v4-sig.img"] {
        identity("bootimg", &fixture(&format!("bootimg/{f}")), t);
    }
    assert_eq!(info("bootimg", &fixture("bootimg/boot-v4-sig.img"))["boot_signature_size"], 4096);
    // Garbage is a clear error, exit 1.
    fs::write(t.join("junk"), b"not a boot image").unwrap();
    let out = mobix(&["inspect", "bootimg", "info", t.join("junk").to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("is not a valid boot image"));
    // An address edited past 32 bits is refused, not cut off.
    let dir = t.join("mk-v0.img-unpacked");
    let json = fs::read_to_string(dir.join("bootimg.json")).unwrap();
    fs::write(dir.join("bootimg.json"), json.replace("\"0x80008000\"", "\"0x180008000\"")).unwrap();
    let out = mobix(&["inspect", "bootimg", "pack", dir.to_str().unwrap(), "--out", t.join("x.img").to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("does not fit in 32 bits"));
}

#[test]
fn vendor_boot_identity() {
    let tmp = tempfile::tempdir().unwrap();
    for f in ["vendor_boot-v3.img", "vendor_boot-v4.img"] {
        identity("vendor-boot", &fixture(&format!("bootimg/{f}")), tmp.path());
    }
    let i = info("vendor-boot", &fixture("bootimg/vendor_boot-v4.img"));
    assert_eq!(i["vendor_ramdisks"][1]["ramdisk_name"], "dlkm");
    assert_eq!(i["vendor_ramdisks"][1]["ramdisk_type"], 3);
    assert_eq!(i["vendor_cmdline"], "androidboot.hardware=qemu");
}

#[test]
fn sparse_info_pack_unpack_split_against_libsparse() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let mut raw = mobix::format::sparse::sample_image();
    raw.resize(raw.len().div_ceil(4096) * 4096, 0);
    let rawp = t.join("x.raw");
    fs::write(&rawp, &raw).unwrap();
    let theirs = t.join("x.simg");
    tool(Command::new("img2simg").arg(&rawp).arg(&theirs));
    let ours = t.join("ours.simg");
    ok(&["inspect", "sparse", "pack", rawp.to_str().unwrap(), "--out", ours.to_str().unwrap()]);
    assert_eq!(fs::read(&ours).unwrap(), fs::read(&theirs).unwrap(), "pack equals img2simg");
    let back = t.join("back.raw");
    ok(&["inspect", "sparse", "unpack", theirs.to_str().unwrap(), "--out", back.to_str().unwrap()]);
    assert_eq!(fs::read(&back).unwrap(), raw);
    let i = info("sparse", &theirs);
    assert_eq!(i["blk_sz"], 4096);
    assert_eq!(i["chunks"][1]["type"], "fill");
    ok(&[
        "inspect",
        "sparse",
        "pack",
        theirs.to_str().unwrap(),
        "--split",
        "262144",
        "--out",
        t.join("p").to_str().unwrap(),
    ]);
    tool(Command::new("simg2simg").arg(&theirs).arg(t.join("q")).arg("262144"));
    for i in 0.. {
        let (p, q) = (t.join(format!("p.{i}")), t.join(format!("q.{i}")));
        assert_eq!(p.exists(), q.exists(), "piece {i}");
        if !p.exists() {
            break;
        }
        assert_eq!(fs::read(&p).unwrap(), fs::read(&q).unwrap(), "piece {i}");
    }
}

#[test]
fn vbmeta_pack_flags_and_edit() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let made = t.join("vbmeta.img");
    ok(&["inspect", "vbmeta", "pack", "--flags", "3", "--out", made.to_str().unwrap()]);
    assert_eq!(fs::read(&made).unwrap(), fs::read(fixture("vbmeta/vbmeta-flags3.img")).unwrap());
    identity("vbmeta", &fixture("vbmeta/vbmeta-flags2.img"), t);
    let i = info("vbmeta", &made);
    assert_eq!(i["flags"], 3);
    assert_eq!(i["verification_disabled"], true);
    // Editing flags in the unpacked JSON patches them, as fastboot --disable-verity does.
    let dir = t.join("v");
    ok(&[
        "inspect",
        "vbmeta",
        "unpack",
        fixture("vbmeta/vbmeta-flags2.img").to_str().unwrap(),
        "--out",
        dir.to_str().unwrap(),
    ]);
    let j = fs::read_to_string(dir.join("vbmeta.json")).unwrap().replace("\"flags\": 2", "\"flags\": 3");
    fs::write(dir.join("vbmeta.json"), j).unwrap();
    let edited = t.join("edited.img");
    ok(&["inspect", "vbmeta", "pack", dir.to_str().unwrap(), "--out", edited.to_str().unwrap()]);
    assert_eq!(fs::read(&edited).unwrap(), fs::read(fixture("vbmeta/vbmeta-flags3.img")).unwrap());
}

#[test]
fn gpt_info_and_identity() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let profile = mobix::profile::load(repo, "qemu-aarch64").unwrap();
    let disk = t.join("disk.img");
    // Put something in a partition so identity covers contents too.
    let layout = mobix::vm::create_disk(&profile, &disk).unwrap();
    mobix::vm::write_partition(&disk, &layout, "boot_a", b"ANDROID! pretend").unwrap();
    let i = info("gpt", &disk);
    let names: Vec<&str> = i["partitions"].as_array().unwrap().iter().map(|p| p["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["misc", "boot_a", "boot_b", "system", "userdata"]);
    identity("gpt", &disk, t);

    // A hand-edited gpt.json that cannot be laid out is refused (exit 1, no panic), and
    // neither the output nor a temporary file is left behind.
    let dir = t.join("disk.img-unpacked");
    let gpt_json = fs::read_to_string(dir.join("gpt.json")).unwrap();
    let out = t.join("bad.img");
    let refuse = |json: &serde_json::Value, what: &str| {
        fs::write(dir.join("gpt.json"), serde_json::to_string(json).unwrap()).unwrap();
        let o = mobix(&["inspect", "gpt", "pack", dir.to_str().unwrap(), "--out", out.to_str().unwrap()]);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{what}: {err}");
        assert!(err.contains(what), "{what}: {err}");
        assert!(!out.exists());
        assert_eq!(
            fs::read_dir(t)
                .unwrap()
                .filter(|e| e.as_ref().unwrap().file_name().to_string_lossy().contains(".tmp-"))
                .count(),
            0
        );
    };
    let orig: serde_json::Value = serde_json::from_str(&gpt_json).unwrap();
    let mut j = orig.clone();
    let first = j["partitions"][0].clone();
    j["partitions"] = serde_json::Value::Array(vec![first; 129]);
    refuse(&j, "more than 128 partitions");
    let mut j = orig.clone();
    j["partitions"][1]["last_lba"] = j["partitions"][1]["first_lba"].as_u64().unwrap().saturating_sub(1).into();
    refuse(&j, "is after its last sector");
    let mut j = orig.clone();
    j["partitions"][0]["last_lba"] = j["partitions"][0]["first_lba"].clone();
    refuse(&j, "is larger than partition misc");
}

#[test]
fn cpio_pack_is_deterministic_and_cpio_reads_it() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let src = t.join("tree");
    fs::create_dir_all(src.join("etc")).unwrap();
    fs::write(src.join("init"), b"#!/bin/sh\n").unwrap();
    fs::write(src.join("etc/hostname"), b"phone\n").unwrap();
    std::os::unix::fs::symlink("etc", src.join("config")).unwrap();
    for c in ["none", "gzip", "lz4", "xz", "zstd"] {
        let a = t.join(format!("a.{c}"));
        ok(&["inspect", "cpio", "pack", src.to_str().unwrap(), "--compression", c, "--out", a.to_str().unwrap()]);
        assert_eq!(info("cpio", &a)["compression"], c);
        identity("cpio", &a, t);
        if c == "none" {
            let listing = tool(Command::new("cpio").args(["-t", "-H", "newc", "--quiet", "-F"]).arg(&a));
            assert_eq!(listing.lines().collect::<Vec<_>>(), ["config", "etc", "etc/hostname", "init"]);
        }
    }
}

#[test]
fn misc_identity_and_edit() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let f = fixture("misc/misc-ab.bin");
    identity("misc", &f, t);
    let i = info("misc", &f);
    assert_eq!(i["bootloader_message"]["command"], "boot-recovery");
    assert_eq!(i["bootloader_control"]["crc_ok"], true);
    assert_eq!(i["bootloader_would_boot"], "a", "slot b is verity-corrupted");
    // Make slot b bootable by editing the unpacked JSON; pack recomputes the CRC.
    let dir = t.join("m");
    ok(&["inspect", "misc", "unpack", f.to_str().unwrap(), "--out", dir.to_str().unwrap()]);
    let mut j: serde_json::Value = serde_json::from_str(&fs::read_to_string(dir.join("misc.json")).unwrap()).unwrap();
    j["bootloader_control"]["slot_info"][1]["verity_corrupted"] = serde_json::json!(false);
    fs::write(dir.join("misc.json"), serde_json::to_string(&j).unwrap()).unwrap();
    let edited = t.join("edited.bin");
    ok(&["inspect", "misc", "pack", dir.to_str().unwrap(), "--out", edited.to_str().unwrap()]);
    let i = info("misc", &edited);
    assert_eq!(i["bootloader_control"]["crc_ok"], true);
    assert_eq!(i["bootloader_would_boot"], "b");
}

/// `mobix … | head -1`: the reader goes away and mobix ends quietly (by SIGPIPE, as other
/// tools do), never with a panic.
#[test]
fn a_closed_pipe_ends_mobix_quietly() {
    use std::io::Read;
    use std::os::unix::process::ExitStatusExt;
    // A listing far larger than a pipe holds, so mobix is still writing when the reader
    // goes away.
    let d = tempfile::tempdir().unwrap();
    let tree = d.path().join("tree");
    fs::create_dir(&tree).unwrap();
    for i in 0..3000 {
        fs::write(tree.join(format!("a-file-with-a-rather-long-name-to-fill-the-pipe-{i:05}")), b"x").unwrap();
    }
    let archive = d.path().join("a.cpio");
    ok(&["inspect", "cpio", "pack", tree.to_str().unwrap(), "--out", archive.to_str().unwrap()]);
    let mut child = crate::common::mobix_cmd()
        .args(["inspect", "cpio", "info"])
        .arg(&archive)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = [0u8; 1];
    child.stdout.take().unwrap().read_exact(&mut first).unwrap();
    // The pipe's read end is closed now; what mobix still writes meets no reader.
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("bug in mobix") && !err.contains("panicked"), "{err}");
    const SIGPIPE: i32 = 13;
    assert_eq!(out.status.signal(), Some(SIGPIPE), "ended with {:?}: {err}", out.status);
}
