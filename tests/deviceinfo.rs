//! `mobix device import deviceinfo` on 32 phones' deviceinfo files from pmaports
//! (tests/fixtures/deviceinfo): every one imports, and its boot image keys are what a
//! shell sourcing the file would hand to mkbootimg under boot-deploy's rules.

mod common;

use common::*;
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
    let o = Command::new("bash").args(["-c", script, "oracle"]).arg(deviceinfo).output().unwrap();
    assert!(o.status.success(), "{}: {}", deviceinfo.display(), String::from_utf8_lossy(&o.stderr));
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
        if want["qcdt"] == "true" {
            seen.insert("QCDT".into());
            assert!(b.get("dtb").is_none() && said(&out, "bootimg_qcdt").is_some(), "{name}: {out}");
        } else if want["dtb_second"] == "true" {
            seen.insert("second-stage dtb".into());
            assert!(b.get("dtb").is_none() && said(&out, "bootimg_dtb_second").is_some(), "{name}: {out}");
        } else if want["append"] == "true" {
            seen.insert("appended dtb".into());
            assert_eq!(b["dtb"]["mode"], "append", "{name}");
            assert_eq!(b["kernel_compression"], "gzip", "{name}: appended trees follow a gzip kernel");
            assert_eq!(b["dtb"]["files"], serde_json::json!(files), "{name}");
        } else if hv == 2 {
            seen.insert("header dtb".into());
            assert_eq!(b["dtb"]["mode"], "header", "{name}");
            assert_eq!(b["dtb_offset"].as_u64(), Some(num("dtb_offset")), "{name}");
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
        if !out["keys"]["console"].is_null() {
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
