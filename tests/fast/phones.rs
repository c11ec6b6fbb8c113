//! Every real phone profile builds, and its images carry what the profile says: boot image
//! header values read back by unpack_bootimg, the appended device tree being the one the
//! profile (and variant) names, vbmeta where needed, and a flash plan naming the right
//! partitions. The phones use their substitute kernel (Debian's arm64 6.12 package).

use crate::common::{repo, tool};
use mobix::format::{arm64, bootimg::BootImage, compress, cpio, vbmeta};
use serde_json::Value;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Builds a phone's default system (`init: systemd`) or, with `minimal`, the minimal one.
fn build(store: &Path, out: &Path, device: &str, variant: Option<&str>, minimal: bool) -> Value {
    let mut cmd = crate::common::mobix_cmd();
    cmd.args(["build", "--json", "--kernel-from", "substitute", "--device", device, "--repo"])
        .arg(repo())
        .arg("--store")
        .arg(store)
        .arg("--out")
        .arg(out);
    if let Some(v) = variant {
        cmd.args(["--variant", v]);
    }
    if minimal {
        cmd.args(["--config", &crate::common::minimal()]);
    }
    let o = cmd.output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "building {device} {variant:?}:\n{err}");
    assert!(
        err.contains("kernel: prebuilt package linux-image-6.12.115"),
        "the build says it used the substitute:\n{err}"
    );
    // It ends with what comes next on a real phone, with this phone's own flash command.
    let flash = match variant {
        Some(v) => format!("`mobix flash --device {device} --variant {v} --out {} --dry-run`", out.display()),
        None => format!("`mobix flash --device {device} --out {} --dry-run`", out.display()),
    };
    assert!(err.contains("next, to put it on the") && err.contains("fastboot flashing unlock"), "{err}");
    assert!(err.contains(&flash), "the flash command for this phone ({flash}):\n{err}");
    // And how to reach it: over the USB network (a shell on the SDM845 phones' minimal
    // system; the default system has no ssh until the config turns it on), else its
    // serial console.
    let reach = match (device, minimal) {
        ("google-sargo", _) => "its console is the serial port ttyMSM0",
        (_, true) => "`telnet 172.16.42.1`",
        (_, false) => "it answers at 172.16.42.1 over the USB cable, but runs no ssh server",
    };
    assert!(err.contains(reach), "{reach}:\n{err}");
    serde_json::from_slice(&o.stdout).unwrap()
}

/// The kernel store path of a store holding one kernel.
fn kernel_dtbs(store: &Path) -> PathBuf {
    let k = fs::read_dir(store)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.to_string_lossy().ends_with("-kernel"))
        .unwrap();
    k.join("dtbs")
}

fn field(f: &str, k: &str) -> String {
    f.lines()
        .find_map(|l| l.strip_prefix(&format!("{k}: ")))
        .unwrap_or_else(|| panic!("no {k}:\n{f}"))
        .trim()
        .to_string()
}

#[test]
fn every_phone_builds_with_its_profile_values() {
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    let cases = [
        ("oneplus-enchilada", None, "qcom/sdm845-oneplus-enchilada.dtb", "0x00000000"),
        ("xiaomi-beryllium", Some("tianma"), "qcom/sdm845-xiaomi-beryllium-tianma.dtb", "0x00000000"),
        ("xiaomi-beryllium", Some("ebbg"), "qcom/sdm845-xiaomi-beryllium-ebbg.dtb", "0x00000000"),
        ("google-sargo", None, "qcom/sdm670-google-sargo.dtb", "0x00000000"),
    ];
    for (device, variant, dtb, _) in cases {
        let out = tmp.path().join(format!("{device}-{}", variant.unwrap_or("")));
        // The OnePlus 6 with its default system (systemd); the others minimal, to be quick.
        let default = device == "oneplus-enchilada";
        let manifest = build(&store, &out, device, variant, !default);
        if default {
            // systemd, its state on userdata after the 2 GiB system image.
            let top = crate::common::store_entry(&store, "-mobix-system-oneplus-enchilada");
            // The toplevel's links name paths on the phone (/mobix/store/…).
            let etc = store.join(fs::read_link(top.join("etc")).unwrap().file_name().unwrap());
            let spec: Value = serde_json::from_slice(&fs::read(etc.join("mobix/system.json")).unwrap()).unwrap();
            assert_eq!(spec["init"], "systemd", "{spec}");
            assert_eq!(spec["state"], serde_json::json!({ "partition": "userdata", "offset": 2u64 << 30 }), "{spec}");
        }
        assert_eq!(manifest["device"], device);
        assert_eq!(manifest["variant"].as_str(), variant);
        // unpack_bootimg reports the profile's header values.
        let f = tool(
            Command::new("unpack_bootimg")
                .arg("--boot_img")
                .arg(out.join("boot.img"))
                .arg("--out")
                .arg(tmp.path().join("un")),
        );
        assert_eq!(field(&f, "boot image header version"), "0", "{device}");
        assert_eq!(field(&f, "page size"), "4096");
        assert_eq!(field(&f, "kernel load address"), "0x8000");
        assert_eq!(field(&f, "ramdisk load address"), "0x1000000");
        assert_eq!(field(&f, "kernel tags load address"), "0x100");
        assert_eq!(field(&f, "command line args"), "console=ttyMSM0,115200");
        // The kernel is Image.gz with exactly the named device tree appended.
        let img = BootImage::parse(&fs::read(out.join("boot.img")).unwrap()).unwrap();
        let (kernel_gz, dtbs) = arm64::split_appended_dtbs(&img.kernel).unwrap();
        assert_eq!(compress::Compression::detect(&kernel_gz), compress::Compression::Gzip);
        assert_eq!(dtbs.len(), 1, "{device}");
        assert!(
            dtbs[0] == fs::read(kernel_dtbs(&store).join(dtb)).unwrap(),
            "{device} {variant:?}: appended dtb is {dtb}"
        );
        // The initramfs holds the variant's modules, decompressed.
        let entries = cpio::read(&compress::decompress(&img.ramdisk, 1 << 30).unwrap()).unwrap();
        let names: Vec<&str> = entries.iter().map(|e| e.path.as_str()).collect();
        assert!(names.iter().all(|n| !n.ends_with(".ko.xz")), "modules are decompressed");
        let has = |m: &str| names.iter().any(|n| n.ends_with(&format!("/{m}.ko")));
        assert!(has("ufs-qcom") || has("sdhci-msm"), "{device}: a storage driver");
        assert_eq!(has("edt-ft5x06"), variant == Some("ebbg"), "{device} {variant:?}: the ebbg touchscreen only");
        // The SDM845 phones get the USB network from stage-1 on: its config, the device
        // controller's driver and the NCM function with what it needs (from modules.dep).
        let stage1 = entries.iter().find(|e| e.path == "etc/mobix/stage1.json").expect("stage1.json");
        let cpio::Kind::File(json) = &stage1.kind else { panic!("stage1.json is a file") };
        let stage1: Value = serde_json::from_slice(json).unwrap();
        let sdm845 = device != "google-sargo";
        assert_eq!(stage1["usb_network"]["product_id"].as_u64(), sdm845.then_some(0xd001), "{device}: {stage1}");
        for m in ["dwc3-qcom", "dwc3", "phy-qcom-qusb2", "usb_f_ncm", "u_ether", "libcomposite"] {
            assert_eq!(has(m), sdm845, "{device} {variant:?}: module {m}");
        }
        // The flash plan.
        let plan: Value = serde_json::from_str(&fs::read_to_string(out.join("flash-plan.json")).unwrap()).unwrap();
        let steps = plan["steps"].as_array().unwrap();
        // Flashing the default (systemd) system keeps the state after the system image.
        assert_eq!(plan["state_after"].as_u64(), default.then_some(2u64 << 30), "{device}: {plan}");
        let last = steps.last().unwrap();
        assert_eq!(
            (last["partition"].as_str(), last["image"].as_str()),
            (Some("userdata"), Some("system.img")),
            "{device}: the system goes to userdata"
        );
        assert_eq!(plan["ab"], device != "xiaomi-beryllium");
        let flashed: Vec<&str> =
            steps.iter().filter(|s| s["action"] == "flash").map(|s| s["partition"].as_str().unwrap()).collect();
        let erased: Vec<&str> =
            steps.iter().filter(|s| s["action"] == "erase").map(|s| s["partition"].as_str().unwrap()).collect();
        match device {
            "google-sargo" => {
                assert_eq!(flashed, ["boot", "vbmeta", "userdata"]);
                let (h, _) = vbmeta::parse(&fs::read(out.join("vbmeta.img")).unwrap()).unwrap();
                assert_eq!(h.flags, 3, "verity and verification disabled");
            }
            "oneplus-enchilada" => {
                assert_eq!(flashed, ["boot", "userdata"]);
                assert_eq!(erased, ["dtbo_a", "dtbo_b"]);
            }
            _ => assert_eq!(flashed, ["boot", "userdata"]),
        }
        assert_eq!(out.join("vbmeta.img").exists(), device == "google-sargo");

        // The preview the build suggests works without a phone (issue 30 item 12).
        let mut cmd = crate::common::mobix_cmd();
        cmd.args(["flash", "--dry-run", "--json", "--device", device, "--repo"])
            .arg(repo())
            .arg("--store")
            .arg(&store)
            .arg("--out")
            .arg(&out);
        if let Some(v) = variant {
            cmd.args(["--variant", v]);
        }
        let o = cmd.output().unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(o.status.success(), "{device}: {err}");
        assert!(err.contains("previewing generation"), "{err}");
        let r: Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!((r["transport"].as_str(), r["dry_run"].as_bool()), (Some("no phone"), Some(true)), "{r}");
        assert!(r["assumed"][0].as_str().unwrap().starts_with("no phone: a preview"), "{r}");
        let commands: Vec<&str> = r["commands"].as_array().unwrap().iter().map(|c| c.as_str().unwrap()).collect();
        assert!(commands.iter().any(|c| c.starts_with("flash:userdata")), "{device}: {commands:?}");
        let boot = if plan["ab"] == true { "flash:boot_b" } else { "flash:boot" };
        assert!(commands.contains(&boot), "{device}: {commands:?}");
        assert_eq!(commands.iter().any(|c| c.starts_with("set_active")), plan["ab"] == true, "{device}: {commands:?}");
        assert!(commands.iter().all(|c| !c.starts_with("getvar")), "nothing was asked: {commands:?}");
    }
    // `device check` reads the device trees of the kernel now in the store (Debian's 6.12,
    // the phones' substitute): the Pixel 3a's describes the bootloader's framebuffer, the
    // SDM845 phones' do not, so nothing shows on those before the system's display driver.
    let o = crate::common::mobix_cmd()
        .args(["device", "check", "--repo"])
        .arg(repo())
        .arg("--store")
        .arg(&store)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    let after = |id: &str| {
        let at = err.find(&format!("ok: {id}\n")).unwrap_or_else(|| panic!("{id}:\n{err}"));
        err[at..].lines().nth(1).unwrap().to_string()
    };
    let sargo = after("google-sargo");
    assert!(
        sargo.contains("screen: qcom/sdm670-google-sargo.dtb of linux-image-6.12")
            && sargo.contains("(/chosen/framebuffer@9c000000): stage-1 draws on it"),
        "{err}"
    );
    for id in ["oneplus-enchilada", "xiaomi-beryllium --variant tianma", "xiaomi-beryllium --variant ebbg"] {
        assert!(after(id).contains("has no simple-framebuffer node: nothing shows on the screen"), "{id}:\n{err}");
    }
    // The emulated phone's kernels were not built into this store, and are not fetched.
    assert!(
        err.contains("the screens of qemu-aarch64 --variant debian, qemu-aarch64 --variant tiny were not checked"),
        "{err}"
    );
    let _ = mobix::util::remove_tree(&store);
}
