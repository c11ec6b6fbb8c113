//! `mobix device import deviceinfo` on 32 phones' deviceinfo files from pmaports
//! (tests/fixtures/deviceinfo): every one imports, and its boot image keys are what a
//! shell sourcing the file would hand to mkbootimg under boot-deploy's rules.

use crate::common::*;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

fn fixtures() -> Vec<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/deviceinfo");
    let mut v: Vec<PathBuf> =
        std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).filter(|p| p.join("deviceinfo").exists()).collect();
    v.sort();
    v
}

/// What boot-deploy gives mkbootimg for this deviceinfo, as the shell reads the file:
/// unset base is 0x10000000, unset header version none (mkbootimg's 0), unset offsets and
/// page size mkbootimg's defaults.
fn oracle(deviceinfo: &Path) -> BTreeMap<String, String> {
    let script = r#"set -e
. "$1"
n() { printf '%d' "$1"; }
echo "hv=${deviceinfo_header_version:-0}"
echo "ps=${deviceinfo_flash_pagesize:-2048}"
echo "base=$(n "${deviceinfo_flash_offset_base:-0x10000000}")"
echo "kernel=$(n "${deviceinfo_flash_offset_kernel:-0x00008000}")"
echo "ramdisk=$(n "${deviceinfo_flash_offset_ramdisk:-0x01000000}")"
echo "second=$(n "${deviceinfo_flash_offset_second:-0x00f00000}")"
echo "tags=$(n "${deviceinfo_flash_offset_tags:-0x00000100}")"
echo "dtb_offset=$(n "${deviceinfo_flash_offset_dtb:-0}")"
echo "append=${deviceinfo_append_dtb:-false}"
echo "qcdt=${deviceinfo_bootimg_qcdt:-false}"
echo "dtb_second=${deviceinfo_bootimg_dtb_second:-false}"
echo "dtb=${deviceinfo_dtb}"
echo "vbmeta=${deviceinfo_flash_fastboot_partition_vbmeta}"
echo "dtbo=${deviceinfo_flash_fastboot_partition_dtbo}"
"#;
    sourced(script, &[deviceinfo])
}

/// The `key=value` lines a bash script prints, run with `files` as its arguments.
fn sourced(script: &str, files: &[&Path]) -> BTreeMap<String, String> {
    let o = Command::new("bash").args(["-c", script, "oracle"]).args(files).output().unwrap();
    assert!(o.status.success(), "{files:?}: {}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8(o.stdout)
        .unwrap()
        .lines()
        .filter_map(|l| l.split_once('=').map(|(k, v)| (k.to_string(), v.to_string())))
        .collect()
}

fn import(dir: &Path) -> Value {
    let mut args = vec!["device".to_string(), "import".into(), "deviceinfo".into()];
    args.push(dir.join("deviceinfo").to_string_lossy().into_owned());
    if dir.join("kernel-cmdline.conf").exists() {
        args.push("--kernel-cmdline".into());
        args.push(dir.join("kernel-cmdline.conf").to_string_lossy().into_owned());
    }
    args.push("--json".into());
    let o = mobix_in(dir, &args.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(o.status.success(), "{}: {}", dir.display(), String::from_utf8_lossy(&o.stderr));
    serde_json::from_slice(&o.stdout).unwrap()
}

fn said(out: &Value, key: &str) -> Option<String> {
    out["unmapped"].as_array().unwrap().iter().find(|u| u["key"] == key).map(|u| u["why"].to_string())
}

#[test]
fn every_fixture_imports_with_the_boot_image_boot_deploy_would_make() {
    let mut seen: BTreeSet<String> = BTreeSet::new();
    for dir in fixtures() {
        let name = dir.file_name().unwrap().to_string_lossy().into_owned();
        let want = oracle(&dir.join("deviceinfo"));
        let out = import(&dir);
        let b = &out["keys"]["bootimg"];
        let num = |k: &str| want[k].parse::<u64>().unwrap();
        let hv = num("hv");
        seen.insert(format!("header version {}", want["hv"]));
        seen.insert(format!("page size {}", want["ps"]));
        assert_eq!(b["header_version"].as_u64(), Some(hv), "{name}");
        assert_eq!(b["page_size"].as_u64(), Some(num("ps")), "{name}");
        if hv >= 3 {
            assert!(said(&out, "header_version").is_some_and(|w| w.contains("vendor_boot")), "{name}: {out}");
        } else {
            for (k, profile_key) in [
                ("base", "base"),
                ("kernel", "kernel_offset"),
                ("ramdisk", "ramdisk_offset"),
                ("second", "second_offset"),
                ("tags", "tags_offset"),
            ] {
                assert_eq!(b[profile_key].as_u64(), Some(num(k)), "{name}: {profile_key}");
            }
        }
        let files: Vec<String> = want["dtb"].split_whitespace().map(|d| format!("{d}.dtb")).collect();
        // Where boot-deploy puts the dtb: appended to the kernel, and besides that as the
        // second stage, or in the header (v2 with its offset; v3/v4 in vendor_boot).
        let append = want["append"] == "true";
        let place = if want["qcdt"] == "true" {
            None
        } else if want["dtb_second"] == "true" {
            Some("second")
        } else if hv >= 2 {
            Some("header")
        } else {
            None
        };
        let mode = match (append, place) {
            (true, Some(p)) => Some(format!("append+{p}")),
            (true, None) => Some("append".to_string()),
            (false, p) => p.map(str::to_string),
        };
        if want["qcdt"] == "true" {
            seen.insert("QCDT".into());
            assert!(said(&out, "bootimg_qcdt").is_some(), "{name}: {out}");
        }
        if append {
            seen.insert("appended dtb".into());
            assert_eq!(b["kernel_compression"], "gzip", "{name}: appended trees follow a gzip kernel");
        }
        match place {
            Some("second") => seen.insert("second-stage dtb".into()),
            Some(_) if hv == 2 => seen.insert("header dtb".into()),
            _ => false,
        };
        if hv == 2 {
            assert_eq!(b["dtb_offset"].as_u64(), Some(num("dtb_offset")), "{name}");
        }
        let has_dtb = !files.is_empty() || out["keys"]["variants"].is_object();
        match (&mode, has_dtb) {
            (Some(m), true) => {
                assert_eq!(b["dtb"]["mode"].as_str(), Some(m.as_str()), "{name}");
                assert_eq!(b["dtb"]["files"], serde_json::json!(files), "{name}");
            }
            _ => assert!(b.get("dtb").is_none(), "{name}: {b}"),
        }
        if !want["vbmeta"].is_empty() {
            seen.insert("vbmeta".into());
            assert_eq!(out["keys"]["vbmeta"]["partition"].as_str(), Some(want["vbmeta"].as_str()), "{name}");
        }
        if !want["dtbo"].is_empty() {
            seen.insert("dtbo".into());
            let parts = out["keys"]["storage"]["partitions"].to_string();
            assert!(parts.contains(&format!("\"{}\"", want["dtbo"])), "{name}: {parts}");
        }
        if let Some(v) = out["keys"]["variants"].as_object() {
            seen.insert("variants".into());
            for (variant, keys) in v {
                let text = std::fs::read_to_string(dir.join("deviceinfo")).unwrap();
                let key = format!("deviceinfo_dtb_{}=", variant.replace('-', "_"));
                assert!(text.contains(&key), "{name}: variant {variant} from {key}");
                assert!(keys["bootimg"]["dtb"]["files"][0].as_str().unwrap().ends_with(".dtb"), "{name}");
            }
        }
        // The codename, and the kernel's absence said, not hidden.
        assert!(out["codename"].as_str().is_some_and(|c| c == name), "{name}: {}", out["codename"]);
        assert!(said(&out, "kernel").is_some(), "{name}");
    }
    // The fixtures cover the layouts the issue names (so the set cannot shrink unseen).
    for layout in [
        "header version 0",
        "header version 1",
        "header version 2",
        "header version 4",
        "page size 2048",
        "page size 4096",
        "appended dtb",
        "header dtb",
        "QCDT",
        "second-stage dtb",
        "variants",
        "vbmeta",
        "dtbo",
    ] {
        assert!(seen.contains(layout), "no fixture with {layout}: {seen:?}");
    }
    assert!(fixtures().len() >= 25);
}

/// The hand-written profiles of phones pmOS knows agree with their imports.
#[test]
fn imports_agree_with_the_profiles_written_by_hand() {
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    for codename in ["google-sargo", "oneplus-enchilada"] {
        let out = import(&repo.join("tests/fixtures/deviceinfo").join(codename));
        let o = mobix_in(&repo, &["device", "show", codename, "--json"]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let shown: Value = serde_json::from_slice(&o.stdout).unwrap();
        let (a, b) = (&out["keys"]["bootimg"], &shown["bootimg"]);
        for k in ["header_version", "page_size", "base", "kernel_offset", "ramdisk_offset", "tags_offset"] {
            assert_eq!(a[k], b[k], "{codename}: {k}");
        }
        assert_eq!(a["dtb"]["mode"], b["dtb"]["mode"], "{codename}");
        assert_eq!(a["dtb"]["files"], b["dtb"]["files"], "{codename}");
        // (pmOS names the Pixel 3a's console nowhere; the OnePlus 6's kernel-cmdline.conf does.)
        if said(&out, "console").is_none() {
            assert_eq!(out["keys"]["console"], shown["console"], "{codename}");
        }
    }
}

#[test]
fn broken_deviceinfo_exits_1_naming_the_key_and_line() {
    let t = tempfile::tempdir().unwrap();
    let cases = [
        (
            "deviceinfo_name=\"N\"\ndeviceinfo_codename=\"a-b\"\ndeviceinfo_arch=\"aarch64\"\n",
            "deviceinfo_manufacturer is missing",
        ),
        (
            "deviceinfo_name=\"N\"\ndeviceinfo_manufacturer=\"M\"\ndeviceinfo_codename=\"a-b\"\n\
             deviceinfo_arch=\"aarch64\"\ndeviceinfo_flash_offset_kernel=\"0x8000z\"\n",
            ":5: deviceinfo_flash_offset_kernel: \"0x8000z\" is not a number",
        ),
        ("[Unit]\nDescription=not a deviceinfo\n", ":1: not an assignment"),
        ("Description=not a deviceinfo\n", ":1: not a deviceinfo_ key"),
    ];
    for (i, (text, want)) in cases.iter().enumerate() {
        let f = t.path().join(format!("deviceinfo{i}"));
        std::fs::write(&f, text).unwrap();
        let o = mobix_in(t.path(), &["device", "import", "deviceinfo", f.to_str().unwrap()]);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{err}");
        assert!(err.contains(want), "{want}: {err}");
    }
}

/// The mkbootimg arguments boot-deploy's `create_bootimg` derives from a deviceinfo, as
/// the shell reads the file (one `key=value` per line; values may be empty).
fn boot_deploy_args(deviceinfo: &Path, cmdline_conf: &Path) -> BTreeMap<String, String> {
    let script = r#"set -e
. "$1"
echo "header_version=${deviceinfo_header_version}"
echo "base=${deviceinfo_flash_offset_base:-0x10000000}"
echo "second_offset=${deviceinfo_flash_offset_second}"
echo "kernel_offset=${deviceinfo_flash_offset_kernel}"
echo "ramdisk_offset=${deviceinfo_flash_offset_ramdisk}"
echo "tags_offset=${deviceinfo_flash_offset_tags}"
echo "pagesize=${deviceinfo_flash_pagesize}"
echo "dtb_offset=${deviceinfo_flash_offset_dtb}"
echo "dtb_second=${deviceinfo_bootimg_dtb_second}"
echo "append=${deviceinfo_append_dtb}"
echo "qcdt=${deviceinfo_bootimg_qcdt}"
echo "dtb=${deviceinfo_dtb}"
echo "override_payload=${deviceinfo_bootimg_override_payload}"
for v in $(set | sed -n 's/^deviceinfo_dtb_\([a-z0-9_]*\)=.*/\1/p'); do
  eval "echo \"variant_$v=\${deviceinfo_dtb_$v}\""
done
# The command line: kernel-cmdline.conf without comments and without the -ARG removals of
# pmOS defaults (mobix adds none), else deviceinfo's obsolete keys.
if [ -f "$2" ]; then words=$(grep -v '^[[:space:]]*#' "$2" | tr '\n' ' ')
else words="${deviceinfo_kernel_cmdline} ${deviceinfo_kernel_cmdline_append}"; fi
out=""
for w in $words; do case "$w" in -*) ;; *) out="$out $w" ;; esac; done
echo "cmdline=${out# }"
"#;
    sourced(script, &[deviceinfo, cmdline_conf])
}

/// An arm64 kernel Image that is not a kernel: the header bootloaders check, a banner.
fn stand_in_image() -> Vec<u8> {
    let mut b = vec![0u8; 64 << 10];
    b[0..2].copy_from_slice(b"MZ");
    b[16..24].copy_from_slice(&(64u64 << 10).to_le_bytes());
    b[24..32].copy_from_slice(&2u64.to_le_bytes()); // little endian, 4K pages
    b[56..60].copy_from_slice(b"ARM\x64");
    let banner = b"Linux version 6.6.0-standin (mobix test) #1 SMP\n";
    b[4096..4096 + banner.len()].copy_from_slice(banner);
    b
}

/// A mobix tree in `t` with a stand-in kernel (`stand-in/Image`), the directory for
/// stand-in device trees (`stand-in/dtbs`) and `small.yaml`, the minimal system on a
/// 64 MiB system image: (Image, dtbs).
fn stand_in_tree(t: &Path) -> (PathBuf, PathBuf) {
    repo_copy(t);
    let image = t.join("stand-in/Image");
    std::fs::create_dir_all(image.parent().unwrap()).unwrap();
    std::fs::write(&image, stand_in_image()).unwrap();
    std::fs::write(t.join("small.yaml"), "init: minimal\ndevice: { system: { size: 64MiB } }\n").unwrap();
    (image, t.join("stand-in/dtbs"))
}

/// A device tree that says which file it stands in for.
fn stand_in_dtb(path: &Path, name: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let dts = path.with_extension("dts");
    std::fs::write(&dts, format!("/dts-v1/;\n/ {{ model = \"{name}\"; compatible = \"mobix,stand-in\"; }};\n"))
        .unwrap();
    tool(Command::new("dtc").args(["-I", "dts", "-O", "dtb", "-o"]).arg(path).arg(&dts));
    std::fs::remove_file(dts).unwrap();
}

fn header_u32(img: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(img[at..at + 4].try_into().unwrap())
}

/// What unpack_bootimg reports, by its labels.
fn unpack(img: &Path, dir: &Path) -> BTreeMap<String, String> {
    let text = tool(Command::new("unpack_bootimg").arg("--boot_img").arg(img).arg("--out").arg(dir));
    text.lines().filter_map(|l| l.split_once(": ").map(|(k, v)| (k.to_string(), v.to_string()))).collect()
}

/// Every fixture pmOS makes an Android boot image for (all but the QCDT ones) becomes a
/// profile that passes its check and builds with a stand-in kernel and device trees; the
/// boot image is what boot-deploy's mkbootimg call makes of the same deviceinfo: for
/// header versions 0-2 byte for byte (Debian's mkbootimg, fed what unpack_bootimg took
/// out of ours), for 3 and 4 the values unpack_bootimg reports of boot.img and
/// vendor_boot.img.
#[test]
fn every_fixture_builds_the_boot_image_boot_deploy_would_make() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let (image, dtbs) = stand_in_tree(t);
    let config = t.join("small.yaml");
    let store = shared_store();
    let (mut built, mut versions) = (0, BTreeSet::new());
    for dir in fixtures() {
        // (Named apart from the profiles the tree ships for some of these phones.)
        let name = format!("pmos-{}", dir.file_name().unwrap().to_string_lossy());
        let conf = dir.join("kernel-cmdline.conf");
        let want = boot_deploy_args(&dir.join("deviceinfo"), &conf);
        // QCDT is not written yet; a boot.img whose payload is U-Boot is not a kernel's.
        if want["qcdt"] == "true" || !want["override_payload"].is_empty() {
            continue;
        }
        // The device trees this deviceinfo names, as stand-ins.
        let variants: Vec<(&str, &String)> = want
            .iter()
            .filter_map(|(k, v)| Some((k.strip_prefix("variant_")?, v)))
            .filter(|(_, v)| !v.is_empty())
            .collect();
        for d in want["dtb"].split_whitespace().chain(variants.iter().flat_map(|(_, v)| v.split_whitespace())) {
            stand_in_dtb(&dtbs.join(format!("{d}.dtb")), d);
        }
        let mut args = vec!["device", "import", "deviceinfo"];
        let di = dir.join("deviceinfo").to_string_lossy().into_owned();
        let conf_s = conf.to_string_lossy().into_owned();
        args.push(&di);
        if conf.exists() {
            args.extend(["--kernel-cmdline", &conf_s]);
        }
        let (img_s, dtbs_s) = (image.to_string_lossy().into_owned(), dtbs.to_string_lossy().into_owned());
        args.extend(["--name", &name, "--kernel-image", &img_s, "--dtbs", &dtbs_s]);
        ok(&mobix_in(t, &args));
        ok(&mobix_in(t, &["device", "check", &name]));
        // A phone with variants (panels) builds its first one; boot-deploy then takes
        // that variant's device tree.
        let (variant, dtb_names) = match (want["dtb"].is_empty(), variants.first()) {
            (true, Some((v, files))) => (Some(v.replace('_', "-")), files.to_string()),
            _ => (None, want["dtb"].clone()),
        };
        let out = t.join(format!("out-{name}"));
        let out_s = out.to_string_lossy().into_owned();
        let store_s = store.to_string_lossy().into_owned();
        let config_s = config.to_string_lossy().into_owned();
        let mut build = vec!["build", "--device", &name, "--store", &store_s, "--out", &out_s, "--config", &config_s];
        if let Some(v) = &variant {
            build.extend(["--variant", v]);
        }
        ok(&mobix_in(t, &build));
        built += 1;
        let dtb_files: Vec<PathBuf> = dtb_names.split_whitespace().map(|d| dtbs.join(format!("{d}.dtb"))).collect();
        let hv: u32 = want["header_version"].parse().unwrap_or(0);
        versions.insert(want["header_version"].clone());
        let unpacked = t.join(format!("unpacked-{name}"));
        let got = unpack(&out.join("boot.img"), &unpacked);
        assert_eq!(got["boot image header version"], hv.to_string(), "{name}");
        if hv >= 3 {
            // mkbootimg's defaults (boot-deploy passes no addresses), in vendor_boot.img.
            let vendor = unpack(&out.join("vendor_boot.img"), &t.join(format!("vendor-{name}")));
            assert_eq!(vendor["vendor boot image header version"], hv.to_string(), "{name}");
            assert_eq!(vendor["kernel load address"], "0x10008000", "{name}");
            assert_eq!(vendor["ramdisk load address"], "0x11000000", "{name}");
            assert_eq!(vendor["kernel tags load address"], "0x10000100", "{name}");
            assert_eq!(vendor["dtb address"], "0x11f00000", "{name}");
            assert_eq!(vendor["vendor command line args"].trim(), want["cmdline"], "{name}");
            let raw = std::fs::read(out.join("vendor_boot.img")).unwrap();
            assert_eq!(header_u32(&raw, 12).to_string(), want["pagesize"], "{name}: vendor_boot page size");
            let dtb = std::fs::read(t.join(format!("vendor-{name}/dtb"))).unwrap();
            assert_eq!(dtb, std::fs::read(&dtb_files[0]).unwrap(), "{name}: vendor_boot's dtb");
            let plan = std::fs::read_to_string(out.join("flash-plan.json")).unwrap();
            assert!(plan.contains("\"vendor_boot.img\""), "{name}: {plan}");
            // Read back as a stock image, the pair gives the values it was made with; a
            // profile written from it builds the same addresses.
            let (boot_s, vendor_s) = (out.join("boot.img"), out.join("vendor_boot.img"));
            let (boot_s, vendor_s) = (boot_s.to_str().unwrap(), vendor_s.to_str().unwrap());
            let o = ok(&mobix_in(t, &["device", "import", "bootimg", boot_s, "--vendor-boot", vendor_s, "--json"]));
            let v: Value = serde_json::from_slice(o.as_bytes()).unwrap();
            let b = &v["keys"]["bootimg"];
            assert_eq!(b["header_version"].as_u64(), Some(hv as u64), "{name}");
            assert_eq!(b["page_size"].to_string(), want["pagesize"], "{name}");
            let addr = |k: &str| b["base"].as_u64().unwrap() + b[k].as_u64().unwrap();
            assert_eq!(
                (addr("kernel_offset"), addr("ramdisk_offset"), addr("tags_offset"), addr("dtb_offset")),
                (0x1000_8000, 0x1100_0000, 0x1000_0100, 0x11f0_0000),
                "{name}"
            );
            assert_eq!(b["dtb"]["mode"], "header", "{name}");
            let again = format!("{name}-again");
            ok(&mobix_in(t, &["device", "import", "bootimg", boot_s, "--vendor-boot", vendor_s, "--name", &again]));
            let out2 = t.join(format!("out-{again}"));
            let out2_s = out2.to_string_lossy().into_owned();
            ok(&mobix_in(
                t,
                &["build", "--device", &again, "--store", &store_s, "--out", &out2_s, "--config", &config_s],
            ));
            let vendor2 = unpack(&out2.join("vendor_boot.img"), &t.join(format!("vendor-{again}")));
            for k in ["kernel load address", "ramdisk load address", "kernel tags load address", "dtb address"] {
                assert_eq!(vendor2[k], vendor[k], "{again}: {k}");
            }
            continue;
        }
        // Debian's mkbootimg with boot-deploy's arguments, on the kernel (Image.gz-dtb
        // where appended) and ramdisk taken out of ours.
        let kernel = unpacked.join("kernel");
        let mut mk = Command::new("mkbootimg");
        if !want["header_version"].is_empty() {
            mk.args(["--header_version", &want["header_version"]]);
        }
        mk.arg("--kernel").arg(&kernel).arg("--ramdisk").arg(unpacked.join("ramdisk"));
        // pmOS's mkbootimg-osm0sis adds base and offsets in 32 bits (some phones' values wrap);
        // Debian's refuses sums past 32 bits, so it gets the sums, over base 0.
        let n = |k: &str| {
            let v = &want[k];
            v.strip_prefix("0x").map_or_else(|| v.parse::<u64>().unwrap(), |h| u64::from_str_radix(h, 16).unwrap())
        };
        let at = |k: &str| format!("{:#x}", (n("base") + n(k)) & 0xffff_ffff);
        mk.args(["--base", "0", "--second_offset", &at("second_offset"), "--cmdline", &want["cmdline"]]);
        mk.args(["--kernel_offset", &at("kernel_offset"), "--ramdisk_offset", &at("ramdisk_offset")]);
        mk.args(["--tags_offset", &at("tags_offset"), "--pagesize", &want["pagesize"]]);
        if want["dtb_second"] == "true" {
            mk.arg("--second").arg(&dtb_files[0]);
        }
        if hv == 2 {
            mk.args(["--dtb_offset", &format!("{:#x}", n("base") + n("dtb_offset"))]).arg("--dtb").arg(&dtb_files[0]);
        }
        let reference = t.join(format!("reference-{name}.img"));
        tool(mk.arg("-o").arg(&reference));
        let ours = std::fs::read(out.join("boot.img")).unwrap();
        assert!(ours == std::fs::read(&reference).unwrap(), "{name}: boot.img differs from mkbootimg's");
        if want["append"] == "true" {
            let trees: Vec<u8> = dtb_files.iter().flat_map(|f| std::fs::read(f).unwrap()).collect();
            assert!(std::fs::read(&kernel).unwrap().ends_with(&trees), "{name}: the kernel ends with its device trees");
        }
    }
    assert!(built >= 25, "{built} fixtures built");
    // A profile is not replaced unless asked.
    let again = ["device", "import", "deviceinfo", "--name", "pmos-google-sargo"];
    let fixture = fixtures().into_iter().find(|d| d.ends_with("google-sargo")).unwrap().join("deviceinfo");
    let o = mobix_in(t, &[&again[..], &[fixture.to_str().unwrap()]].concat());
    assert_eq!(o.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("device.yaml exists"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    ok(&mobix_in(t, &[&again[..], &[fixture.to_str().unwrap(), "--force"]].concat()));
    let text = std::fs::read_to_string(t.join("devices/pmos-google-sargo/device.yaml")).unwrap();
    assert!(text.starts_with("# Written by `mobix device import deviceinfo` from postmarketOS's "), "{text}");
    assert!(text.contains("# - kernel: "), "the stand-in kernel is said: {text}");
    for v in ["", "0", "1", "2", "4"] {
        assert!(versions.contains(v), "no fixture with header version {v:?}: {versions:?}");
    }
}

/// `kernel.prebuilt`: the files are inputs like any other (a changed Image is a new
/// kernel path and boot image), the build says which kernel it used, and a missing file or
/// a second kernel source is refused naming the key.
#[test]
fn a_prebuilt_kernel_is_an_input_and_a_missing_one_is_named() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let (image, dtbs) = stand_in_tree(t);
    stand_in_dtb(&dtbs.join("qcom/sdm845-oneplus-enchilada.dtb"), "enchilada");
    let fixture = repo().join("tests/fixtures/deviceinfo/oneplus-enchilada");
    let (di, conf) = (fixture.join("deviceinfo"), fixture.join("kernel-cmdline.conf"));
    ok(&mobix_in(
        t,
        &[
            "device",
            "import",
            "deviceinfo",
            di.to_str().unwrap(),
            "--kernel-cmdline",
            conf.to_str().unwrap(),
            "--name",
            "mine",
            "--kernel-image",
            "stand-in/Image",
            "--dtbs",
            "stand-in/dtbs",
        ],
    ));
    let profile = std::fs::read_to_string(t.join("devices/mine/device.yaml")).unwrap();
    assert!(profile.contains("image: ../../stand-in/Image"), "paths inside the tree are relative: {profile}");
    let store = shared_store();
    let build = |out: &str| {
        mobix_in(
            t,
            &["build", "--device", "mine", "--store", store.to_str().unwrap(), "--out", out, "--config", "small.yaml"],
        )
    };
    let o = build("one");
    ok(&o);
    let said = String::from_utf8_lossy(&o.stderr);
    assert!(said.contains("kernel: prebuilt Image ") && said.contains("stand-in/Image"), "{said}");
    // Another Image (one byte of its banner) is another kernel and another boot image.
    let mut changed = stand_in_image();
    changed[4096 + 42] = b'9'; // "#1" -> "#9"
    std::fs::write(&image, &changed).unwrap();
    ok(&build("two"));
    let read = |d: &str| std::fs::read(t.join(d).join("boot.img")).unwrap();
    assert_ne!(read("one"), read("two"), "the changed Image is in the boot image");
    // The kernel's release is the one its banner announces.
    let manifest: Value = serde_json::from_slice(&std::fs::read(t.join("two/manifest.json")).unwrap()).unwrap();
    let toplevel = manifest["toplevel"].as_str().unwrap().rsplit('/').next().unwrap().to_string();
    let boot: Value = serde_json::from_slice(&std::fs::read(store.join(&toplevel).join("boot.json")).unwrap()).unwrap();
    assert_eq!(boot["kernel_release"], "6.6.0-standin", "{boot}");
    std::fs::remove_file(&image).unwrap();
    let o = build("three");
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("kernel.prebuilt.image of ") && err.contains("devices/mine/device.yaml"), "{err}");
    // One kernel only.
    std::fs::write(
        t.join("devices/mine/device.yaml"),
        profile.replace("kernel:\n  prebuilt:", "kernel:\n  package: linux-image-6.12\n  prebuilt:"),
    )
    .unwrap();
    let o = mobix_in(t, &["device", "check", "mine"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("kernel.prebuilt") && err.contains("the only kernel"), "{err}");
}

/// Issue 30 item 9: an import says what it can infer and what would keep the phone from
/// booting. A phone of a family the tree has (the OnePlus 6T beside the OnePlus 6: sdm845)
/// joins it; one whose family the tree lacks is told that stage-1 would load no storage
/// driver; without kernel-cmdline.conf the import says where the command line is; a
/// codename with an underscore gets a name offered; a build of the imported profile says
/// how many of its values are guesses.
#[test]
fn an_import_infers_the_family_and_says_what_would_keep_the_phone_from_booting() {
    let t = tempfile::tempdir().unwrap();
    repo_copy(t.path());
    let fixtures = repo().join("tests/fixtures/deviceinfo");
    // The OnePlus 6T: the 6's deviceinfo with the 6T's names.
    let fajita = t.path().join("fajita");
    std::fs::create_dir_all(&fajita).unwrap();
    let six = std::fs::read_to_string(fixtures.join("oneplus-enchilada/deviceinfo")).unwrap();
    std::fs::write(
        fajita.join("deviceinfo"),
        six.replace("enchilada", "fajita").replace("OnePlus 6\"", "OnePlus 6T\""),
    )
    .unwrap();
    let import = |dir: &Path, extra: &[&str]| {
        let file = dir.join("deviceinfo");
        mobix_in(t.path(), &[&["device", "import", "deviceinfo", file.to_str().unwrap()][..], extra].concat())
    };
    ok(&import(&fajita, &[]));
    let written = std::fs::read_to_string(t.path().join("devices/oneplus-fajita/device.yaml")).unwrap();
    assert!(written.contains("\nfamily: qcom-sdm845\n"), "{written}");
    let family: serde_norway::Value =
        serde_norway::from_str(&std::fs::read_to_string(t.path().join("devices/families/qcom-sdm845.yaml")).unwrap())
            .unwrap();
    let profile: serde_norway::Value = serde_norway::from_str(&written).unwrap();
    assert_eq!(profile["stage1"]["modules"], family["stage1"]["modules"], "the family's storage drivers lead");
    assert!(profile.get("kernel").is_none(), "the family's kernel, not Debian's generic stand-in: {written}");
    assert!(written.contains("# - family: qcom-sdm845 (the tree's family"), "{written}");
    assert!(written.contains("# - cmdline: read from deviceinfo's obsolete kernel_cmdline keys"), "{written}");
    let shown = ok(&mobix_in(t.path(), &["device", "show", "oneplus-fajita", "--json"]));
    assert!(shown.contains("ufs-qcom"), "{shown}");

    // A build of it says, in one line, that some values are guesses.
    let o = mobix_in(t.path(), &["build", "--device", "oneplus-fajita", "--dry-run", "--store", "store"]);
    let err = String::from_utf8_lossy(&o.stderr);
    let line =
        err.lines().find(|l| l.contains("was written by `mobix device import`")).unwrap_or_else(|| panic!("{err}"));
    assert!(line.contains("of its values are guesses or were not mapped"), "{line}");

    // A family the tree does not have: stage-1 would find no storage, and the import says so.
    let o = import(&fixtures.join("fairphone-fp5"), &["--json"]);
    let v: Value = serde_json::from_slice(&ok(&o).into_bytes()).unwrap();
    let note = v["unmapped"].as_array().unwrap().iter().find(|u| u["key"] == "stage1.modules").unwrap()["why"].clone();
    let note = note.as_str().unwrap();
    assert!(note.starts_with("empty: stage-1 would load no storage driver"), "{note}");
    assert!(note.contains("no family qcom-qcm6490 in devices/families/"), "{note}");

    // pmOS's codenames may hold an underscore; mobix's may not, and it offers one.
    let sprout = t.path().join("sprout");
    std::fs::create_dir_all(&sprout).unwrap();
    std::fs::write(sprout.join("deviceinfo"), six.replace("oneplus-enchilada", "xiaomi-jasmine_sprout")).unwrap();
    let o = import(&sprout, &[]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("hint: --name xiaomi-jasmine-sprout imports it under that name"), "{err}");
}
