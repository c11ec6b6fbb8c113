//! A corpus of broken profiles: each mistake must fail at load with exit code 1 and a message
//! naming the file where the mistake is, its line, and the key.

use crate::common::copy_dir;

use std::fs;
use std::path::PathBuf;

struct Case {
    what: &'static str,
    /// File to edit (relative to the repo), text to replace, replacement.
    file: &'static str,
    from: &'static str,
    to: &'static str,
    /// Device (and variant) to load.
    device: &'static str,
    variant: Option<&'static str>,
    /// Where the error must point: file, a text on the expected line (None: not checked), key.
    err_file: &'static str,
    line_of: Option<&'static str>,
    key: &'static str,
    msg: &'static str,
}

const EN: &str = "devices/oneplus-enchilada/device.yaml";
const FAM: &str = "devices/families/qcom-sdm845.yaml";
const BE: &str = "devices/xiaomi-beryllium/device.yaml";
const QEMU: &str = "devices/qemu-aarch64/device.yaml";
const SARGO: &str = "devices/google-sargo/device.yaml";

/// One row of the corpus table.
#[allow(clippy::too_many_arguments)]
fn c(
    what: &'static str,
    file: &'static str,
    from: &'static str,
    to: &'static str,
    err_file: &'static str,
    line_of: Option<&'static str>,
    key: &'static str,
    msg: &'static str,
) -> Case {
    let device = match file {
        BE => "xiaomi-beryllium",
        QEMU => "qemu-aarch64",
        SARGO => "google-sargo",
        _ => "oneplus-enchilada",
    };
    let variant = (device == "xiaomi-beryllium").then_some("tianma");
    Case { what, file, from, to, device, variant, err_file, line_of, key, msg }
}

fn cases() -> Vec<Case> {
    vec![
        c(
            "unknown key in a device",
            EN,
            "name: OnePlus 6",
            "name: OnePlus 6\ncolour: red",
            EN,
            Some("colour: red"),
            "colour",
            "unknown field",
        ),
        c(
            "unknown key in a family",
            FAM,
            "  page_size: 4096",
            "  page_size: 4096\n  pagesize: 4096",
            FAM,
            Some("pagesize: 4096"),
            "bootimg.pagesize",
            "unknown field",
        ),
        c("missing required key", EN, "name: OnePlus 6\n", "", EN, None, "name", "missing field `name`"),
        c(
            "wrong type: string for a number",
            FAM,
            "page_size: 4096",
            "page_size: big",
            FAM,
            Some("page_size: big"),
            "bootimg.page_size",
            "invalid type",
        ),
        c(
            "wrong type: map for a list",
            EN,
            "  modules: [ufs-qcom, phy-qcom-qmp-ufs, i2c-qcom-geni, gpi, rmi_core, ext4, qcom-rpmh-regulator, phy-qcom-qusb2, phy-qcom-qmp-combo, dwc3, dwc3-qcom, usb_f_ncm]",
            "  modules: { a: b }",
            EN,
            Some("modules: { a: b }"),
            "stage1.modules",
            "invalid type",
        ),
        c(
            "a kernel module name with a path in it",
            QEMU,
            "modules: [virtio_net,",
            "modules: [../virtio_net,",
            QEMU,
            Some("modules: [../virtio_net,"),
            "kernel.modules[0]",
            "is not a module name",
        ),
        c(
            "page size not a power of two",
            FAM,
            "page_size: 4096",
            "page_size: 3000",
            FAM,
            Some("page_size: 3000"),
            "bootimg.page_size",
            "not a power of two",
        ),
        c(
            "page size out of range",
            FAM,
            "page_size: 4096",
            "page_size: 32768",
            FAM,
            Some("page_size: 32768"),
            "bootimg.page_size",
            "from 2048 to 16384",
        ),
        c(
            "base wider than 32 bits",
            FAM,
            "base: 0x00000000",
            "base: 0x100000000",
            FAM,
            Some("base: 0x100000000"),
            "bootimg.base",
            "does not fit 32 bits",
        ),
        c(
            "partition named twice",
            EN,
            "    - { name: misc }",
            "    - { name: misc }\n    - { name: misc }  # again",
            EN,
            Some("# again"),
            "storage.partitions[5].name",
            "defined twice",
        ),
        c(
            "slotted and plain names collide",
            EN,
            "    - { name: misc }",
            "    - { name: boot_a }",
            EN,
            Some("name: boot_a"),
            "storage.partitions[4].name",
            "defined twice",
        ),
        c(
            "variant that does not exist",
            BE,
            "variants:",
            "default_variant: boe\nvariants:",
            BE,
            Some("default_variant"),
            "default_variant",
            "does not exist",
        ),
        c(
            "family include cycle",
            FAM,
            "arch: aarch64",
            "family: qcom-sdm845\narch: aarch64",
            FAM,
            Some("family: qcom-sdm845"),
            "family",
            "cycle",
        ),
        c(
            "missing family file",
            EN,
            "family: qcom-sdm845",
            "family: qcom-sdm999",
            EN,
            Some("family: qcom-sdm999"),
            "family",
            "no family file",
        ),
        c(
            "system partition not in the table",
            FAM,
            "partition: userdata",
            "partition: data",
            FAM,
            Some("partition: data"),
            "system.partition",
            "not in storage.partitions",
        ),
        c(
            "system partition slotted",
            EN,
            "    - { name: userdata }",
            "    - { name: userdata, slotted: true }",
            FAM,
            Some("partition: userdata"),
            "system.partition",
            "slotted",
        ),
        c(
            "header version unsupported",
            FAM,
            "header_version: 0",
            "header_version: 7",
            FAM,
            Some("header_version: 7"),
            "bootimg.header_version",
            "is not a boot image header version (0-4)",
        ),
        c(
            "header dtb on a v0 image",
            EN,
            "mode: append",
            "mode: header",
            EN,
            Some("mode: header"),
            "bootimg.dtb.mode",
            "no dtb section",
        ),
        c(
            "sector size not 512/4096",
            FAM,
            "sector_size: 4096",
            "sector_size: 1000",
            FAM,
            Some("sector_size: 1000"),
            "storage.sector_size",
            "not 512 or 4096",
        ),
        c(
            "size not a multiple of the sector",
            EN,
            "    - { name: misc }",
            "    - { name: misc, size: 1000 }",
            EN,
            Some("size: 1000"),
            "storage.partitions[4].size",
            "multiple of the sector size",
        ),
        c(
            "size with a wrong unit",
            FAM,
            "size: 2GiB",
            "size: 2GB",
            FAM,
            Some("size: 2GB"),
            "system.size",
            "is not a size",
        ),
        c(
            "vbmeta flags out of range",
            SARGO,
            "flags: 3",
            "flags: 5",
            SARGO,
            Some("flags: 5"),
            "vbmeta.flags",
            "not 1, 2 or 3",
        ),
        c(
            "cmdline argument with a space",
            FAM,
            "cmdline: [\"console=ttyMSM0,115200\"]",
            "cmdline: [\"console=ttyMSM0 quiet\"]",
            FAM,
            Some("cmdline:"),
            "cmdline[0]",
            "without spaces",
        ),
        c(
            "appended dtb without gzip kernel",
            FAM,
            "kernel_compression: gzip",
            "kernel_compression: none",
            FAM,
            Some("kernel_compression: none"),
            "bootimg.kernel_compression",
            "gzip",
        ),
        c(
            "dtb path escaping",
            BE,
            "files: [qcom/sdm845-xiaomi-beryllium-tianma.dtb]",
            "files: [../../etc/passwd.dtb]",
            BE,
            Some("../../etc/passwd.dtb"),
            "variants.tianma.bootimg.dtb.files[0]",
            "relative path",
        ),
        c(
            "wrong type inside a variant",
            BE,
            "      modules: [ufs-qcom, phy-qcom-qmp-ufs, i2c-qcom-geni, gpi, qcom_pmi8998_charger, ext4, qcom-rpmh-regulator, phy-qcom-qusb2, phy-qcom-qmp-combo, dwc3, dwc3-qcom, usb_f_ncm]",
            "      modules: 12",
            BE,
            Some("modules: 12"),
            "variants.tianma.stage1.modules",
            "invalid type",
        ),
        c(
            "variants in a family file",
            FAM,
            "arch: aarch64",
            "arch: aarch64\nvariants: {}",
            FAM,
            Some("variants: {}"),
            "variants",
            "belongs in a device file",
        ),
        c("YAML syntax error", EN, "name: OnePlus 6", "name: [OnePlus 6", EN, None, "", "invalid YAML"),
        c(
            "emulator memory too small",
            QEMU,
            "memory_mib: 1024",
            "memory_mib: 64",
            QEMU,
            Some("memory_mib: 64"),
            "qemu.memory_mib",
            "too little",
        ),
        c(
            "compression not one the kernel takes",
            QEMU,
            "compression: gzip",
            "compression: brotli",
            QEMU,
            Some("compression: brotli"),
            "stage1.compression",
            "unknown variant",
        ),
        c("negative number", QEMU, "smp: 1", "smp: -2", QEMU, Some("smp: -2"), "qemu.smp", "expected a whole number from 0 to 4294967295"),
    ]
}

#[test]
fn broken_profiles_name_file_line_and_key() {
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let cases = cases();
    assert!(cases.len() >= 20);
    let mut failures = Vec::new();
    for case in &cases {
        let tmp = tempfile::tempdir().unwrap();
        copy_dir(&repo.join("devices"), &tmp.path().join("devices"));
        fs::copy(repo.join("mobix.lock"), tmp.path().join("mobix.lock")).unwrap();
        let f = tmp.path().join(case.file);
        let text = fs::read_to_string(&f).unwrap();
        assert!(text.contains(case.from), "{}: {:?} not in {}", case.what, case.from, case.file);
        fs::write(&f, text.replacen(case.from, case.to, 1)).unwrap();
        let mut cmd = crate::common::mobix_cmd();
        cmd.args(["device", "show", case.device, "--repo"]).arg(tmp.path());
        if let Some(v) = case.variant {
            cmd.args(["--variant", v]);
        }
        let out = cmd.output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr).to_string();
        let err_file = tmp.path().join(case.err_file);
        let mut problems = Vec::new();
        if out.status.code() != Some(1) {
            problems.push(format!("exit code {:?}", out.status.code()));
        }
        let located = match case.line_of {
            Some(marker) => {
                let edited = fs::read_to_string(&err_file).unwrap();
                let line = edited.lines().position(|l| l.contains(marker)).unwrap() + 1;
                format!("{}:{line}: ", err_file.display())
            }
            None => format!("{}:", err_file.display()),
        };
        if !err.contains(&located) {
            problems.push(format!("no {located:?}"));
        }
        if !case.key.is_empty() && !err.contains(&format!("key `{}`", case.key)) {
            problems.push(format!("no key `{}`", case.key));
        }
        if !err.contains(case.msg) {
            problems.push(format!("no {:?}", case.msg));
        }
        if !problems.is_empty() {
            failures.push(format!("{}: {}\n{err}", case.what, problems.join(", ")));
        }
    }
    assert!(failures.is_empty(), "{} of {} cases:\n{}", failures.len(), cases.len(), failures.join("\n"));
}

#[test]
fn a_typo_gets_the_closest_key_as_hint() {
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tmp.path().join("system.yaml");
    fs::write(&cfg, "hostnme: pocket\n").unwrap();
    let out = crate::common::mobix_cmd()
        .args(["device", "show", "qemu-aarch64", "--repo"])
        .arg(&repo)
        .arg("--config")
        .arg(&cfg)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert!(err.contains(&format!("{}:1: key `hostnme`", cfg.display())), "{err}");
    assert!(err.contains("hint: did you mean `hostname`?"), "{err}");
}

/// A `system.size` too small for the closure is the config's mistake: exit 1 at its file,
/// line and key with the closure's size, before any image is made (it was exit 2 with
/// mke2fs's own output).
#[test]
fn a_system_size_too_small_for_the_closure_is_refused_at_its_key() {
    let t = tempfile::tempdir().unwrap();
    let config = t.path().join("small.yaml");
    fs::write(&config, "init: minimal\ndevice:\n  system: { size: 16MiB }\n").unwrap();
    let out = t.path().join("out");
    let o = crate::common::build_shared(&config, &out);
    let said = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{said}");
    assert!(said.contains(&format!("{}:3", config.display())) && said.contains("device.system.size"), "{said}");
    assert!(said.contains("the system image of 16 MiB leaves 15 MiB for its filesystem"), "{said}");
    assert!(said.contains("store paths) needs") && said.contains("hint: give `system.size` at least"), "{said}");
    assert!(!said.contains("mke2fs") && !said.contains("system.img (system-image)"), "no image was started: {said}");
    assert!(!out.join("manifest.json").exists());
}

/// Issue 30 item 12: a health check naming a program the system lacks failed only on the
/// phone, spending every try; the build refuses it at its key. Programs the system has, by
/// name or by path, pass.
#[test]
fn a_health_check_naming_a_program_the_system_lacks_is_refused_at_its_key() {
    let t = tempfile::tempdir().unwrap();
    let build = |text: &str| {
        let config = t.path().join("checks.yaml");
        fs::write(&config, text).unwrap();
        let o = crate::common::build_shared(&config, &t.path().join("out"));
        (o.status.code(), String::from_utf8_lossy(&o.stderr).into_owned(), config)
    };
    let (code, said, config) = build(
        "init: minimal\nhealth_checks:\n  - {name: fine, command: [\"true\"]}\n  - {name: ping, command: [pingg, -c1, 10.0.2.2]}\n",
    );
    assert_eq!(code, Some(1), "{said}");
    assert!(said.contains(&format!("{}:4", config.display())) && said.contains("health_checks[1].command"), "{said}");
    assert!(said.contains("health check \"ping\" runs \"pingg\", which this system does not have"), "{said}");
    assert!(said.contains("hint: add the package that has it to `packages`"), "{said}");
    let (code, said, _) = build(
        "init: minimal\nhealth_checks:\n  - {name: by-path, command: [/bin/true]}\n  - {name: gen, command: [/run/current-system/sw/bin/busybox, \"true\"]}\n",
    );
    assert_eq!(code, Some(0), "{said}");
    // The minimal system's software tree has busybox alone: `true` is an applet, not a file.
    let (code, said, _) =
        build("init: minimal\nhealth_checks: [{name: gen, command: [/run/current-system/sw/bin/true]}]\n");
    assert_eq!(code, Some(1), "{said}");
    assert!(said.contains("runs \"/run/current-system/sw/bin/true\", which this system does not have\n"), "{said}");
}
