//! Flashing with fastboot, end to end: the emulated phone in fastboot mode (`mobix run
//! --fastboot`, TCP on loopback, writing into its GPT disk) flashed by the stock AOSP
//! client and by `mobix flash`, then booted from that disk (`mobix test --flashed`).
//! Also: a second build to the inactive slot, an interrupted flash, a wrong product, an
//! image too large for its partition; and `mobix flash` over UDP to the emulated phone's
//! real bootloader, U-Boot's `fastboot udp`, after which U-Boot boots what was flashed.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStderr, Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::common::{mobix_shared as mobix, ok, repo, shared_store as store, tool};

/// The emulated phone in fastboot mode, killed when dropped.
struct Phone {
    child: Child,
    port: u16,
    /// Its stderr, past the line that named the port.
    err: BufReader<ChildStderr>,
    said: String,
    /// Held when it is to boot what it is sent from RAM (`fastboot boot`: QEMU); fastboot
    /// mode itself runs on the host.
    _held: Option<crate::common::PhoneGuard>,
}

impl Phone {
    /// Starts it on a port it picks itself (`--port 0`), read back from what it prints, so
    /// that tests running side by side cannot take each other's port.
    fn start(device: &str, out: &Path, extra: &[&str]) -> Phone {
        Phone::start_with(device, out, extra, None)
    }

    /// As [`Phone::start`], for a phone that will boot from RAM.
    fn start_to_boot(device: &str, out: &Path, extra: &[&str]) -> Phone {
        Phone::start_with(device, out, extra, Some(crate::common::small_phone()))
    }

    fn start_with(device: &str, out: &Path, extra: &[&str], held: Option<crate::common::PhoneGuard>) -> Phone {
        let mut child = crate::common::mobix_cmd()
            .args(["run", "--device", device, "--fastboot", "--port", "0"])
            .arg("--out")
            .arg(out)
            .args(extra)
            .arg("--repo")
            .arg(repo())
            // The console of a boot from RAM.
            .stdout(std::fs::File::create(out.with_extension("console.log")).unwrap())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut err = BufReader::new(child.stderr.take().unwrap());
        let mut said = String::new();
        let port = loop {
            let mut line = String::new();
            if err.read_line(&mut line).unwrap() == 0 {
                let _ = child.wait();
                panic!("the emulated phone did not start:\n{said}");
            }
            said.push_str(&line);
            if let Some(rest) = line.split("on tcp:127.0.0.1:").nth(1) {
                break rest.split(|c: char| !c.is_ascii_digit()).next().unwrap().parse().unwrap();
            }
        };
        Phone { child, port, err, said, _held: held }
    }

    fn serial(&self) -> String {
        format!("tcp:127.0.0.1:{}", self.port)
    }

    /// Waits until the phone leaves fastboot mode; returns what it logged.
    fn wait(mut self) -> String {
        let t0 = Instant::now();
        let status = loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                break st;
            }
            if t0.elapsed() > Duration::from_secs(180) {
                let _ = self.child.kill();
                panic!("the emulated phone did not finish within 180 s:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        let log = self.log();
        assert!(status.success(), "the fastboot device failed:\n{log}");
        log
    }

    /// Turns the phone off; returns what it logged.
    fn stop(mut self) -> String {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.log()
    }

    fn log(&mut self) -> String {
        let mut rest = String::new();
        self.err.read_to_string(&mut rest).unwrap();
        format!("{}{rest}", self.said)
    }
}

impl Drop for Phone {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Builds the qemu-aarch64 system of `config` [the minimal one] into `out`.
fn build(out: &Path, config: Option<&Path>) {
    let o = out.to_str().unwrap();
    let minimal = crate::common::minimal();
    let c = config.map_or(minimal.clone(), |c| c.to_str().unwrap().to_string());
    ok(&mobix(&["build", "--device", "qemu-aarch64", "--out", o, "--config", &c]));
}

fn test_flashed(out: &Path, config: Option<&Path>) -> serde_json::Value {
    let mut a = vec!["test", "--device", "qemu-aarch64", "--flashed", "--json", "--out", out.to_str().unwrap()];
    if let Some(c) = config {
        a.extend(["--config", c.to_str().unwrap()]);
    }
    let o = mobix(&a);
    serde_json::from_slice(&o.stdout).unwrap_or_else(|_| panic!("no report:\n{}", String::from_utf8_lossy(&o.stderr)))
}

/// The generation number of the build in `out` (numbers depend on the shared test store's
/// history, so tests compare with this rather than with constants).
fn generation(out: &Path) -> u64 {
    let m: serde_json::Value = serde_json::from_slice(&std::fs::read(out.join("manifest.json")).unwrap()).unwrap();
    m["generation"].as_u64().unwrap()
}

fn flash(out: &Path, phone: &Phone, extra: &[&str]) -> Output {
    let serial = phone.serial();
    let mut a = vec!["flash", "--device", "qemu-aarch64", "--out", out.to_str().unwrap(), "-s", &serial, "--json"];
    a.extend(extra);
    mobix(&a)
}

#[test]
fn the_stock_fastboot_client_flashes_the_emulated_phone_and_it_boots() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    // `--export`: the same build as real files, for a machine without this store.
    let export = tmp.path().join("export");
    let o = out.to_str().unwrap();
    let minimal = crate::common::minimal();
    ok(&mobix(&[
        "build",
        "--device",
        "qemu-aarch64",
        "--out",
        o,
        "--config",
        &minimal,
        "--export",
        export.to_str().unwrap(),
    ]));
    for e in std::fs::read_dir(&export).unwrap() {
        let e = e.unwrap();
        assert!(e.file_type().unwrap().is_file(), "{:?} is a real file", e.path());
    }
    let phone = Phone::start("qemu-aarch64", &out, &[]);
    let s = phone.serial();
    let fb = |args: &[&str]| {
        tool(Command::new("timeout").args(["120", "fastboot", "-s", &s]).args(args));
    };
    fb(&["flash", "boot_a", out.join("boot.img").to_str().unwrap()]);
    // Larger than the phone's 48 MiB max-download-size: the client splits it.
    fb(&["flash", "system", out.join("system.img").to_str().unwrap()]);
    fb(&["--set-active=a"]);
    fb(&["reboot"]);
    let log = phone.wait();
    assert!(log.matches("flash:system").count() > 1, "system went in several pieces:\n{log}");
    let t = test_flashed(&out, None);
    assert_eq!(t["passed"], true, "{t}");
    assert_eq!(t["boots"][0]["slot"], "a");

    // The build's flash.sh, for people with only the stock client, run from the export:
    // slot a runs, so it writes slot b and makes it active.
    let phone = Phone::start("qemu-aarch64", &out, &[]);
    let s = phone.serial();
    let said =
        tool(Command::new("timeout").arg("300").arg(export.join("flash.sh")).args(["-s", &s]).current_dir(tmp.path()));
    assert!(said.contains("writing slot b"), "{said}");
    tool(Command::new("timeout").args(["60", "fastboot", "-s", &s, "reboot"]));
    phone.wait();
    let t = test_flashed(&out, None);
    assert_eq!((t["passed"].as_bool(), t["boots"][0]["slot"].as_str()), (Some(true), Some("b")), "{t}");

    // `fastboot flashall` reads the build's android-info.txt: a fresh phone takes it and
    // boots; another model is refused.
    std::fs::remove_dir_all(out.join("phone")).unwrap();
    let flashall = |phone: &Phone| {
        Command::new("timeout")
            .args(["300", "fastboot", "-s", &phone.serial(), "flashall"])
            .env("ANDROID_PRODUCT_OUT", &out)
            .output()
            .unwrap()
    };
    let phone = Phone::start("qemu-aarch64", &out, &[]);
    let o = flashall(&phone);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    phone.wait();
    assert_eq!(test_flashed(&out, None)["passed"], true);
    let other = Phone::start("google-sargo", &tmp.path().join("other"), &[]);
    let o = flashall(&other);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("qemu-aarch64"), "{}", String::from_utf8_lossy(&o.stderr));
    let log = other.stop();
    assert!(!log.contains("download:"), "nothing was sent to the wrong phone:\n{log}");
}

#[test]
fn mobix_flash_then_boot_then_an_update_to_the_inactive_slot() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    build(&out, None);

    // A new phone: slot a is current, so the build goes to b, which becomes active.
    let phone = Phone::start("qemu-aarch64", &out, &[]);
    let dry = flash(&out, &phone, &["--dry-run"]);
    let plan: serde_json::Value = serde_json::from_str(&ok(&dry)).unwrap();
    let cmds: Vec<&str> = plan["commands"].as_array().unwrap().iter().map(|c| c.as_str().unwrap()).collect();
    assert!(cmds.contains(&"flash:boot_b") && cmds.contains(&"flash:system"), "{cmds:?}");
    assert_eq!(cmds.last(), Some(&"set_active:b"), "set_active comes after every write");
    let r: serde_json::Value = serde_json::from_str(&ok(&flash(&out, &phone, &["--reboot"]))).unwrap();
    assert_eq!(r["set_active"], "b");
    assert!(r["steps"]
        .as_array()
        .unwrap()
        .iter()
        .any(|s| s["partition"] == "system" && s["pieces"].as_u64() > Some(1)));
    phone.wait();
    let first = generation(&out);
    let t = test_flashed(&out, None);
    assert_eq!(t["passed"], true, "{t}");
    assert_eq!((t["boots"][0]["slot"].as_str(), t["generation"].as_u64()), (Some("b"), Some(first)));

    // `mobix boot`: the boot image from RAM, nothing flashed; it finds the system flashed
    // above and reaches boot-complete (then powers off, as asked).
    // The default max-download-size has room for the default boot image.
    let phone = Phone::start_to_boot("qemu-aarch64", &out, &["--append", "mobix.poweroff"]);
    ok(&mobix(&["boot", "--device", "qemu-aarch64", "--out", out.to_str().unwrap(), "-s", &phone.serial()]));
    let log = phone.wait();
    assert!(log.contains("booting the"), "{log}");
    let console = std::fs::read_to_string(out.with_extension("console.log")).unwrap();
    assert!(console.contains("mobix: boot-complete"), "{console}");

    // The same build again with --skip-unchanged sends nothing.
    let phone = Phone::start("qemu-aarch64", &out, &[]);
    let r: serde_json::Value =
        serde_json::from_str(&ok(&flash(&out, &phone, &["--skip-unchanged", "--slot", "b"]))).unwrap();
    assert!(r["steps"].as_array().unwrap().iter().all(|s| s["skipped"] == true), "{r}");
    drop(phone);

    // An update (a new command line: a new boot image) goes to slot a, the inactive one.
    let cfg = tmp.path().join("update.yaml");
    std::fs::write(&cfg, "init: minimal\ncmdline: [quiet]\n").unwrap();
    build(&out, Some(&cfg));
    let phone = Phone::start("qemu-aarch64", &out, &[]);
    let r: serde_json::Value = serde_json::from_str(&ok(&flash(&out, &phone, &["--reboot"]))).unwrap();
    assert_eq!((r["current_slot"].as_str(), r["set_active"].as_str()), (Some("b"), Some("a")));
    phone.wait();
    let second = generation(&out);
    assert_ne!(first, second);
    let t = test_flashed(&out, Some(&cfg));
    assert_eq!(t["passed"], true, "{t}");
    assert_eq!((t["boots"][0]["slot"].as_str(), t["generation"].as_u64()), (Some("a"), Some(second)));
}

#[test]
fn an_interrupted_flash_keeps_the_old_slot_and_a_wrong_phone_or_size_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    build(&out, None);
    let phone = Phone::start("qemu-aarch64", &out, &[]);
    ok(&flash(&out, &phone, &["--slot", "a", "--reboot"]));
    phone.wait();

    // The device drops the connection 20 MB into the next flash (to slot b).
    let phone = Phone::start("qemu-aarch64", &out, &["--drop-after-bytes", "20000000"]);
    let o = flash(&out, &phone, &[]);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("not written:") && err.contains("still boots slot a"), "{err}");
    phone.wait();
    let t = test_flashed(&out, None);
    assert_eq!(t["passed"], true, "the old system still boots: {t}");
    assert_eq!(t["boots"][0]["slot"], "a");

    // Another phone model is refused, naming both products.
    let other = tmp.path().join("other");
    let phone = Phone::start("google-sargo", &other, &[]);
    let o = flash(&out, &phone, &[]);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("sargo") && err.contains("qemu-aarch64"), "{err}");
    drop(phone);

    // A phone whose boot partitions are smaller than boot.img: refused before any download.
    let small = tmp.path().join("small.yaml");
    std::fs::write(
        &small,
        "init: minimal\ndevice:\n  storage:\n    sector_size: 512\n    partitions:\n      - { name: misc, size: 1MiB }\n      \
         - { name: boot, size: 8MiB, slotted: true }\n      - { name: system, size: 1GiB }\n  \
         state: null\n",
    )
    .unwrap();
    let phone = Phone::start("qemu-aarch64", &tmp.path().join("small-phone"), &["--config", small.to_str().unwrap()]);
    let o = flash(&out, &phone, &[]);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("does not fit partition boot_b") && err.contains("nothing was written"), "{err}");
    let log = phone.stop();
    assert!(!log.contains("download:"), "no byte was sent:\n{log}");
}

#[test]
fn mobix_flash_over_udp_to_u_boot_and_u_boot_boots_it() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    // U-Boot writes the emulated SD card at about 5 MB/s, FILL regions included: a small
    // system partition keeps this test short.
    let cfg = tmp.path().join("small.yaml");
    std::fs::write(
        &cfg,
        "init: minimal\ndevice:\n  storage:\n    sector_size: 512\n    partitions:\n      - { name: misc, size: 1MiB }\n      \
         - { name: boot, size: 64MiB, slotted: true }\n      - { name: system, size: 96MiB }\n  \
         system: { size: 96MiB }\n  state: null\n",
    )
    .unwrap();
    build(&out, Some(&cfg));
    let (o, c) = (out.to_str().unwrap(), cfg.to_str().unwrap());
    let port = std::net::UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port().to_string();
    // U-Boot and then the minimal system, on the profile's one emulated CPU.
    let _held = crate::common::small_phone();
    let mut phone = crate::common::mobix_cmd()
        .args(["run", "--device", "qemu-aarch64", "--fastboot", "--bootloader", "u-boot", "--port", &port])
        .args(["--out", o, "--config", c, "--store", store().to_str().unwrap()])
        .arg("--repo")
        .arg(repo())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Flash once U-Boot is starting (building it first takes a minute in a fresh store).
    let (ready_tx, ready) = std::sync::mpsc::channel();
    let stderr = phone.stderr.take().unwrap();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stderr).lines().map_while(Result::ok) {
            eprintln!("{line}");
            if line.contains("U-Boot in fastboot mode") {
                let _ = ready_tx.send(());
            }
        }
    });
    ready.recv_timeout(std::time::Duration::from_secs(600)).expect("U-Boot starts in fastboot mode");
    let serial = format!("udp:127.0.0.1:{port}");
    let f = mobix(
        &["flash", "--device", "qemu-aarch64", "--out", o, "--config", c, "-s", &serial, "--slot", "b"]
            .into_iter()
            .chain(["--reboot", "--json"])
            .collect::<Vec<_>>(),
    );
    if !f.status.success() {
        let _ = phone.kill();
    }
    let r: serde_json::Value = serde_json::from_str(&ok(&f)).unwrap();
    assert_eq!(r["transport"].as_str().map(|t| t.starts_with("udp:")), Some(true), "{r}");
    // U-Boot 2023.01 reports no product and no slot-count: said, and the switch to slot b
    // went through misc.
    let assumed = r["assumed"].to_string();
    assert!(assumed.contains("product") && assumed.contains("slot-count"), "{assumed}");
    assert_eq!(r["set_active"], "b");
    assert!(r["commands"].as_array().unwrap().iter().any(|c| c == "flash:misc"), "{r}");
    let t0 = Instant::now();
    while phone.try_wait().unwrap().is_none() {
        assert!(t0.elapsed() < Duration::from_secs(60), "U-Boot did not reboot");
        std::thread::sleep(Duration::from_millis(100));
    }
    let t = mobix(&[
        "test",
        "--device",
        "qemu-aarch64",
        "--flashed",
        "--bootloader",
        "u-boot",
        "--json",
        "--out",
        o,
        "--config",
        c,
    ]);
    let t: serde_json::Value = serde_json::from_slice(&t.stdout).unwrap();
    assert_eq!(t["passed"], true, "{t}");
    assert_eq!((t["boots"][0]["slot"].as_str(), t["generation"].as_u64()), (Some("b"), Some(generation(&out))));
}

/// Builds the minimal system of the real phone `device` with its prebuilt kernel into `out`.
fn build_phone(device: &str, out: &str) {
    let minimal = crate::common::minimal();
    ok(&mobix(&["build", "--device", device, "--kernel-from", "substitute", "--out", out, "--config", &minimal]));
}

/// Builds `device` (with its prebuilt kernel), flashes it to its emulated phone in
/// fastboot mode (which cannot boot: no QEMU model for it); the partitions written in
/// order, the slot made active, what the phone logged.
fn flash_a_real_phone(device: &str) -> (Vec<(String, String)>, serde_json::Value, String, PathBuf, tempfile::TempDir) {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let o = out.to_str().unwrap();
    build_phone(device, o);
    let phone = Phone::start(device, &out, &[]);
    let serial = phone.serial();
    let flashed = mobix(&["flash", "--device", device, "--out", o, "-s", &serial, "--reboot", "--json"]);
    let r: serde_json::Value = serde_json::from_str(&ok(&flashed)).unwrap();
    // Before the first write it says what is lost: both phones keep their system on userdata.
    let said = String::from_utf8_lossy(&flashed.stderr);
    let lost = "userdata is overwritten: everything stored on the phone";
    assert!(r["destroys"][0].as_str().is_some_and(|d| d.starts_with(lost)), "{}", r["destroys"]);
    let (warned, wrote) = (said.find(&format!("this flash destroys: {lost}")), said.find("flashed boot.img"));
    assert!(warned.is_some() && warned < wrote, "the warning comes before the first write:\n{said}");
    let steps = r["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["action"].as_str().unwrap().to_string(), s["partition"].as_str().unwrap().to_string()))
        .collect();
    let cmds = r["commands"].as_array().unwrap();
    let last_write = cmds.iter().rposition(|c| c.as_str().unwrap().starts_with("flash:")).unwrap();
    assert_eq!(cmds[last_write + 1], "set_active:b", "set_active comes after every write");
    (steps, r["set_active"].clone(), phone.wait(), out, tmp)
}

fn pairs(v: &[(&str, &str)]) -> Vec<(String, String)> {
    v.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect()
}

#[test]
fn a_phone_with_erase_steps_gets_them_first() {
    // The OnePlus 6 profile erases dtbo (so its bootloader does not apply Android's
    // overlays before the kernel's device tree).
    let (steps, active, log, _, _tmp) = flash_a_real_phone("oneplus-enchilada");
    assert_eq!(
        steps,
        pairs(&[("erase", "dtbo_a"), ("erase", "dtbo_b"), ("flash", "boot_b"), ("flash", "userdata")]),
        "erase first, then boot to the inactive slot, then the system image to userdata"
    );
    assert_eq!(active, "b");
    assert!(log.contains("erase:dtbo_a") && log.contains("flash:userdata"), "{log}");
}

#[test]
fn a_dry_run_says_what_the_flash_would_destroy() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let o = out.to_str().unwrap();
    let device = "oneplus-enchilada";
    build_phone(device, o);
    let phone = Phone::start(device, &out, &[]);
    let text = ok(&mobix(&["flash", "--device", device, "--out", o, "-s", &phone.serial(), "--dry-run"]));
    assert!(text.contains("would destroy: userdata is overwritten"), "{text}");
    assert!(text.contains("would destroy: dtbo_a and dtbo_b are erased"), "{text}");
    assert!(text.contains("would destroy: slot b's boot is replaced"), "{text}");
}

#[test]
fn a_phone_with_vbmeta_gets_it_with_verification_disabled() {
    // The Pixel 3a refuses unsigned images unless vbmeta says verification is off: its
    // plan flashes the build's vbmeta.img (flags 3) to the slot being written.
    let (steps, active, log, out, _tmp) = flash_a_real_phone("google-sargo");
    let vbmeta = std::fs::read(out.join("vbmeta.img")).unwrap();
    assert_eq!(&vbmeta[..4], b"AVB0");
    assert_eq!(vbmeta[123] & 3, 3, "verity and verification disabled in the image");
    assert_eq!(steps, pairs(&[("flash", "boot_b"), ("flash", "vbmeta_b"), ("flash", "userdata")]));
    assert_eq!(active, "b");
    assert!(log.contains("flash:vbmeta_b"), "{log}");
}

/// The phone's disk has one user at a time: booting it while it is still in fastboot mode
/// is refused with what to do, and a second fastboot-mode phone on it likewise.
#[test]
fn the_flashed_disk_is_not_booted_while_fastboot_mode_serves_it() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    build(&out, None);
    let phone = Phone::start("qemu-aarch64", &out, &[]);
    let o = mobix(&["test", "--device", "qemu-aarch64", "--flashed", "--out", out.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains(&format!(
            "is in use by another mobix process (pid {}: `mobix run --fastboot`); cannot boot it",
            phone.child.id()
        )) && err.contains("fastboot reboot"),
        "{err}"
    );
    let o = mobix(&["run", "--device", "qemu-aarch64", "--fastboot", "--port", "0", "--out", out.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1), "{}", String::from_utf8_lossy(&o.stderr));
    drop(phone);
}

#[test]
fn a_flash_that_moves_or_erases_the_state_after_the_system_image_says_the_state_is_lost() {
    // A store of its own: the record of what this host flashed lives in the store, and the
    // other tests flash this phone's minimal system (which keeps no state) meanwhile.
    let tmp = tempfile::tempdir().unwrap();
    let (out, small) = (tmp.path().join("out"), tmp.path().join("small.yaml"));
    let store = tmp.path().join("store");
    let repo = repo();
    let run = |args: &[&str]| {
        let mut all = args.to_vec();
        all.extend(["--repo", repo.to_str().unwrap(), "--store", store.to_str().unwrap()]);
        crate::common::mobix_in(tmp.path(), &all)
    };
    let o = out.to_str().unwrap();
    // The default (systemd) system of the Pixel 3a keeps its state on userdata, after the
    // profile's 2 GiB system image.
    ok(&run(&["build", "--device", "google-sargo", "--kernel-from", "substitute", "--out", o]));
    let phone = Phone::start("google-sargo", &out, &[]);
    let flash = |phone: &Phone, extra: &[&str]| {
        let mut args = vec!["flash", "--device", "google-sargo", "--out", o, "--json"];
        let serial = phone.serial();
        args.extend(["-s", &serial]);
        args.extend(extra);
        let r: serde_json::Value = serde_json::from_str(&ok(&run(&args))).unwrap();
        r["destroys"][0].as_str().unwrap().to_string()
    };
    let said = flash(&phone, &["--reboot"]);
    assert!(said.starts_with("userdata's first 2048 MiB are overwritten"), "{said}");
    phone.wait();
    // The same image size again keeps the state; another one moves it, and the flash
    // says so before it writes.
    let phone = Phone::start("google-sargo", &out, &[]);
    let said = flash(&phone, &["--dry-run"]);
    assert!(said.ends_with("mobix's own state after them (/home, /var) is kept"), "{said}");
    drop(phone);
    // --erase-state: 16 MiB of zeros over the state's start (here old bytes), not one more.
    let disk = out.join("phone/disk.img");
    let at = {
        let mut f = std::fs::File::open(&disk).unwrap();
        let t = mobix::format::gpt::read(&mut f, None).unwrap();
        let userdata = t.partitions.iter().find(|p| p.name == "userdata").unwrap();
        assert!(userdata.size(t.sector_size) > (2 << 30) + (17 << 20), "room for the state on the emulated disk");
        userdata.offset(t.sector_size) + (2 << 30)
    };
    let (head, next) = (vec![0xab_u8; 1 << 20], b"the state's 17th MiB");
    {
        use std::os::unix::fs::FileExt;
        let f = std::fs::OpenOptions::new().write(true).open(&disk).unwrap();
        f.write_all_at(&head, at).unwrap();
        f.write_all_at(&head, at + (15 << 20)).unwrap();
        f.write_all_at(next, at + (16 << 20)).unwrap();
    }
    let phone = Phone::start("google-sargo", &out, &[]);
    let said = flash(&phone, &["--erase-state"]);
    assert!(said.ends_with("the next boot makes a new, empty one (an encrypted one asks for a new PIN)"), "{said}");
    phone.stop();
    {
        use std::os::unix::fs::FileExt;
        let f = std::fs::File::open(&disk).unwrap();
        let mut got = vec![0u8; (16 << 20) + next.len()];
        f.read_exact_at(&mut got, at).unwrap();
        assert!(got[..16 << 20].iter().all(|&b| b == 0), "the state's first 16 MiB are zeros");
        assert_eq!(&got[16 << 20..], next, "what follows them is untouched");
    }
    let phone = Phone::start("google-sargo", &out, &[]);
    std::fs::write(&small, "device:\n  system: { size: 1GiB }\n").unwrap();
    ok(&run(&[
        "build",
        "--device",
        "google-sargo",
        "--kernel-from",
        "substitute",
        "--out",
        o,
        "--config",
        small.to_str().unwrap(),
    ]));
    let said = flash(&phone, &["--dry-run"]);
    assert!(
        said.ends_with(
            "and so is mobix's own state (/home, /var): it followed the 2048 MiB system image this host flashed \
             before, and `system.size` now ends the image at 1024 MiB"
        ),
        "{said}"
    );
}
