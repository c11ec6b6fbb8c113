//! Fastboot over USB, with a real kernel USB stack at both ends.
//!
//! No USB device reaches this machine, so both ends run in one arm64 VM: Debian's kernel
//! with dummy_hcd, which connects a USB device controller to a USB host controller inside
//! the same kernel. mobix (cross-compiled for arm64, static) runs there twice: `mobix run
//! --fastboot --usb` makes the emulated phone a configfs/FunctionFS gadget on the device
//! controller, and `mobix flash` (no -s: the only USB fastboot device) finds it on the host
//! controller through usbfs and flashes the build. The build, the mobix tree and the store
//! are shared into the VM over 9p at their host paths, so the phone's disk the gadget
//! writes is the host's `<out>/phone/disk.img`; `mobix test --flashed` then boots it.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::{mobix_shared as mobix, repo, shared_store as store, tool};

/// mobix for arm64: static (glibc), so the VM needs no libraries, and without HTTP and S3
/// binary caches (the `network-caches` feature), which the VM never uses and which would
/// add TLS and S3 crates to its compile.
fn mobix_arm64() -> PathBuf {
    // Beside the host build's (CI keeps CARGO_TARGET_DIR between runs: tests/README.md).
    let target_dir = std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| repo().join("target"), std::path::PathBuf::from)
        .join("usb-guest");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let st = Command::new(cargo)
        .args(["build", "--locked", "--bin", "mobix", "--target", "aarch64-unknown-linux-gnu", "--no-default-features"])
        .current_dir(repo())
        .env("CARGO_TARGET_DIR", &target_dir)
        .env("CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER", "aarch64-linux-gnu-gcc")
        .env("CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUSTFLAGS", "-C target-feature=+crt-static")
        .env("CARGO_PROFILE_DEV_DEBUG", "0")
        .env_remove("RUSTC_BOOTSTRAP")
        .status()
        .unwrap();
    assert!(st.success(), "cross-compiling mobix for arm64 failed (scripts/setup installs what it needs)");
    target_dir.join("aarch64-unknown-linux-gnu/debug/mobix")
}

/// The guest VM's own modules, on top of what the emulated phone loads: USB gadgets on a
/// dummy controller pair, the 9p shares.
const GUEST_MODULES: [&str; 8] =
    ["configfs", "dummy_hcd", "libcomposite", "usb_f_fs", "usbcore", "virtio_pci", "9pnet_virtio", "9p"];

/// The minimal system, its kernel keeping the guest VM's modules too: the VM boots that
/// kernel with those modules and the system's busybox, all from the system's closure (a
/// build whose images came from a binary cache has no Debian kernel package in the store).
fn guest_config(dir: &Path) -> PathBuf {
    let shown = crate::common::run(
        crate::common::mobix_cmd().args(["device", "show", "qemu-aarch64", "--json", "--repo"]).arg(repo()),
    );
    assert!(shown.status.success());
    let profile: serde_json::Value = serde_json::from_slice(&shown.stdout).unwrap();
    let mut modules: Vec<String> =
        profile["kernel"]["modules"].as_array().unwrap().iter().map(|m| m.as_str().unwrap().to_string()).collect();
    modules.extend(GUEST_MODULES.iter().map(|m| m.to_string()));
    let config = dir.join("usb-guest.yaml");
    std::fs::write(&config, format!("init: minimal\ndevice:\n  kernel:\n    modules: [{}]\n", modules.join(", ")))
        .unwrap();
    config
}

/// The store path of `closure` whose name ends with `-{name}`.
fn closure_entry(closure: &str, name: &str) -> PathBuf {
    let p = closure
        .lines()
        .find(|l| l.ends_with(&format!("-{name}")))
        .unwrap_or_else(|| panic!("no {name} in the system's closure:\n{closure}"));
    store().join(p.rsplit('/').next().unwrap())
}

/// The modules `wanted` need, dependencies first (from each module's own `depends`, as
/// modprobe would follow modules.dep). Built-in ones are skipped.
fn modules_in_order(moddir: &Path, wanted: &[&str]) -> Vec<PathBuf> {
    let mut by_name = std::collections::BTreeMap::new();
    let mut stack = vec![moddir.join("kernel")];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "ko") {
                let name = p.file_stem().unwrap().to_string_lossy().replace('-', "_");
                by_name.insert(name, p);
            }
        }
    }
    let builtin = std::fs::read_to_string(moddir.join("modules.builtin")).unwrap();
    fn visit(
        name: &str,
        by_name: &std::collections::BTreeMap<String, PathBuf>,
        builtin: &str,
        seen: &mut BTreeSet<String>,
        order: &mut Vec<PathBuf>,
    ) {
        let name = name.replace('-', "_");
        if !seen.insert(name.clone()) {
            return;
        }
        let Some(path) = by_name.get(&name) else {
            assert!(
                builtin.lines().any(|l| l.rsplit('/').next().unwrap().replace('-', "_") == format!("{name}.ko")),
                "no module {name}"
            );
            return;
        };
        let deps = tool(Command::new("modinfo").args(["-F", "depends"]).arg(path));
        for d in deps.trim().split(',').filter(|d| !d.is_empty()) {
            visit(d, by_name, builtin, seen, order);
        }
        order.push(path.clone());
    }
    let (mut seen, mut order) = (BTreeSet::new(), Vec::new());
    for w in wanted {
        visit(w, &by_name, &builtin, &mut seen, &mut order);
    }
    order
}

#[test]
fn mobix_flash_over_usb_to_the_emulated_phone_as_a_gadget_then_it_boots() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let o = out.to_str().unwrap();
    let config = guest_config(tmp.path());
    let b = mobix(&["build", "--device", "qemu-aarch64", "--out", o, "--config", config.to_str().unwrap()]);
    assert!(b.status.success());
    let m: serde_json::Value = serde_json::from_slice(&std::fs::read(out.join("manifest.json")).unwrap()).unwrap();
    let generation = m["generation"].as_u64().unwrap();
    let closure = crate::common::run(
        crate::common::mobix_cmd()
            .arg("--store")
            .arg(store())
            .args(["store", "closure"])
            .arg(m["toplevel"].as_str().unwrap()),
    );
    assert!(closure.status.success());
    let closure = String::from_utf8(closure.stdout).unwrap();
    let guest_mobix = mobix_arm64();

    // The VM: the kernel qemu-aarch64 boots (Debian's), busybox, mobix, the modules.
    let kernel = closure_entry(&closure, "kernel").join("Image");
    let moddir = std::fs::read_dir(closure_entry(&closure, "kernel-modules").join("lib/modules"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let modules = modules_in_order(&moddir, &GUEST_MODULES);
    let root = tmp.path().join("initramfs");
    for d in ["bin", "modules", "proc", "sys", "dev", "tmp"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    let busybox = closure_entry(&closure, "sw").join("bin/busybox");
    std::fs::copy(&busybox, root.join("bin/busybox")).unwrap();
    std::os::unix::fs::symlink("busybox", root.join("bin/sh")).unwrap();
    std::fs::copy(&guest_mobix, root.join("bin/mobix")).unwrap();
    let mut insmods = String::new();
    for (i, m) in modules.iter().enumerate() {
        let name = format!("{i:02}-{}", m.file_name().unwrap().to_string_lossy());
        std::fs::copy(m, root.join("modules").join(&name)).unwrap();
        insmods.push_str(&format!("insmod /modules/{name} || echo \"insmod {name} failed\"\n"));
    }
    // Shared at the same paths as on the host: the build (and the phone's disk beside it),
    // the mobix tree, the store (the build's images live there).
    let shares = [tmp.path().to_path_buf(), repo(), store()];
    let mut mounts = String::new();
    for (i, p) in shares.iter().enumerate() {
        mounts.push_str(&format!(
            "mkdir -p {p}\nmount -t 9p -o trans=virtio,version=9p2000.L,msize=262144 share{i} {p}\n",
            p = p.display()
        ));
    }
    let (r, s) = (repo().display().to_string(), store().display().to_string());
    let init = format!(
        "#!/bin/sh\n\
         export PATH=/bin\n\
         /bin/busybox --install -s /bin\n\
         mount -t proc proc /proc; mount -t sysfs sysfs /sys; mount -t devtmpfs dev /dev\n\
         {insmods}\
         mount -t configfs none /sys/kernel/config\n\
         {mounts}\
         mobix run --device qemu-aarch64 --fastboot --usb --out {o} --repo {r} --store {s} 2>/tmp/device.log &\n\
         device=$!\n\
         i=0; while [ $i -lt 100 ] && ! grep -qs 42 /sys/bus/usb/devices/*/bInterfaceSubClass; do sleep 0.1; i=$((i+1)); done\n\
         mobix flash --device qemu-aarch64 --out {o} --repo {r} --store {s} --slot b --reboot --json \
           >{o}/usb-flash.json 2>/tmp/flash.log\n\
         echo \"flash-exit=$?\"\n\
         cat /tmp/flash.log\n\
         i=0; while [ $i -lt 100 ] && [ -d /proc/$device ] && ! grep -q Z /proc/$device/stat; do sleep 0.2; i=$((i+1)); done\n\
         if [ -d /proc/$device ] && ! grep -q Z /proc/$device/stat; then\n\
           echo \"the gadget side did not exit\"; for t in /proc/$device/task/*; do cat $t/stack; done; kill -9 $device; fi\n\
         wait $device; echo \"device-exit=$?\"\n\
         cat /tmp/device.log\n\
         sync\n\
         poweroff -f\n"
    );
    std::fs::write(root.join("init"), init).unwrap();
    std::fs::set_permissions(root.join("init"), std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let cpio = tmp.path().join("initramfs.cpio");
    let st = Command::new("sh")
        .arg("-c")
        .arg(format!("find . | sort | cpio -o -H newc --quiet > {}", cpio.display()))
        .current_dir(&root)
        .status()
        .unwrap();
    assert!(st.success());

    let mut qemu = Command::new("qemu-system-aarch64");
    crate::common::named(&mut qemu);
    qemu.args(["-M", "virt", "-cpu", "cortex-a57", "-smp", "1", "-m", "1024", "-nic", "none", "-nographic"])
        .args(["-no-reboot", "-append", "console=ttyAMA0 panic=-1 quiet"])
        .arg("-kernel")
        .arg(&kernel)
        .arg("-initrd")
        .arg(&cpio);
    for (i, p) in shares.iter().enumerate() {
        qemu.arg("-virtfs").arg(format!("local,path={},mount_tag=share{i},security_model=none", p.display()));
    }
    let console = tmp.path().join("console.log");
    qemu.stdin(Stdio::null()).stdout(std::fs::File::create(&console).unwrap()).stderr(Stdio::inherit());
    std::os::unix::process::CommandExt::process_group(&mut qemu, 0);
    // One emulated CPU, 300 s for what takes about 30: beside another small phone.
    let _held = crate::common::small_phone();
    let mut child = qemu.spawn().unwrap();
    let t0 = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if t0.elapsed() > Duration::from_secs(300) {
            crate::common::kill_group(&mut child); // QEMU leads its group
            panic!("the VM did not finish in 300 s:\n{}", std::fs::read_to_string(&console).unwrap_or_default());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let log = std::fs::read_to_string(&console).unwrap();
    eprintln!("{log}");
    assert!(log.contains("flash-exit=0"), "mobix flash over USB failed");
    assert!(log.contains("device-exit=0"), "the gadget side failed");
    assert!(log.contains("in fastboot mode on USB (controller dummy_udc.0"), "no gadget");
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("usb-flash.json")).unwrap()).unwrap();
    let transport = report["transport"].as_str().unwrap();
    assert!(transport.starts_with("usb:mobix-qemu-aarch64-"), "{report}");
    assert_eq!(report["phone"].as_str(), Some(format!("serialno:{}", &transport[4..]).as_str()));
    assert_eq!(report["set_active"], "b");
    assert!(report["commands"].as_array().unwrap().iter().any(|c| c == "flash:system"), "{report}");

    // The disk the gadget wrote is the phone's: it boots the flashed generation on slot b.
    let t = mobix(&["test", "--device", "qemu-aarch64", "--flashed", "--json", "--out", o]);
    let t: serde_json::Value = serde_json::from_slice(&t.stdout).unwrap();
    assert_eq!(t["passed"], true, "{t}");
    assert_eq!((t["boots"][0]["slot"].as_str(), t["generation"].as_u64()), (Some("b"), Some(generation)));
}
