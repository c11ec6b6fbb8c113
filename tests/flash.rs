//! Flashing with fastboot, end to end: the emulated phone in fastboot mode (`mobix run
//! --fastboot`, TCP on loopback, writing into its GPT disk) flashed by the stock AOSP
//! client and by `mobix flash`, then booted from that disk (`mobix test --flashed`).
//! Also: a second build to the inactive slot, an interrupted flash, a wrong product, an
//! image too large for its partition.

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

mod common;
use common::tool;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn store() -> PathBuf {
    repo().join("target/mobix-test-store")
}

fn mobix(args: &[&str]) -> Output {
    let o = Command::new(env!("CARGO_BIN_EXE_mobix"))
        .args(args)
        .arg("--repo")
        .arg(repo())
        .arg("--store")
        .arg(store())
        .output()
        .expect("running mobix");
    eprintln!("$ mobix {}\n{}", args.join(" "), String::from_utf8_lossy(&o.stderr));
    o
}

fn ok(o: &Output) -> String {
    assert!(o.status.success(), "mobix failed ({}):\n{}", o.status, String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// The emulated phone in fastboot mode, killed when dropped.
struct Phone {
    child: Child,
    port: u16,
}

impl Phone {
    fn start(device: &str, out: &Path, extra: &[&str]) -> Phone {
        let port = free_port();
        let child = Command::new(env!("CARGO_BIN_EXE_mobix"))
            .args(["run", "--device", device, "--fastboot", "--port", &port.to_string()])
            .arg("--out")
            .arg(out)
            .args(extra)
            .arg("--repo")
            .arg(repo())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let t0 = Instant::now();
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(t0.elapsed() < Duration::from_secs(20), "the emulated phone did not listen on {port}");
            std::thread::sleep(Duration::from_millis(50));
        }
        Phone { child, port }
    }

    fn serial(&self) -> String {
        format!("tcp:127.0.0.1:{}", self.port)
    }

    /// Waits until the phone leaves fastboot mode; returns what it logged.
    fn wait(mut self) -> String {
        let status = self.child.wait().unwrap();
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
        use std::io::Read;
        let mut log = String::new();
        self.child.stderr.take().unwrap().read_to_string(&mut log).unwrap();
        log
    }
}

impl Drop for Phone {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn build(out: &Path, config: Option<&Path>) {
    let o = out.to_str().unwrap();
    let mut a = vec!["build", "--device", "qemu-aarch64", "--out", o];
    if let Some(c) = config {
        a.extend(["--config", c.to_str().unwrap()]);
    }
    ok(&mobix(&a));
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
    build(&out, None);
    let phone = Phone::start("qemu-aarch64", &out, &[]);
    let s = phone.serial();
    let fb = |args: &[&str]| {
        tool(Command::new("timeout").args(["120", "fastboot", "-s", &s]).args(args));
    };
    fb(&["flash", "boot_a", out.join("boot.img").to_str().unwrap()]);
    // Larger than the phone's 16 MiB max-download-size: the client splits it.
    fb(&["flash", "system", out.join("system.img").to_str().unwrap()]);
    fb(&["--set-active=a"]);
    fb(&["reboot"]);
    let log = phone.wait();
    assert!(log.matches("flash:system").count() > 1, "system went in several pieces:\n{log}");
    let t = test_flashed(&out, None);
    assert_eq!(t["passed"], true, "{t}");
    assert_eq!(t["boots"][0]["slot"], "a");
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

    // The same build again with --skip-unchanged sends nothing.
    let phone = Phone::start("qemu-aarch64", &out, &[]);
    let r: serde_json::Value =
        serde_json::from_str(&ok(&flash(&out, &phone, &["--skip-unchanged", "--slot", "b"]))).unwrap();
    assert!(r["steps"].as_array().unwrap().iter().all(|s| s["skipped"] == true), "{r}");
    drop(phone);

    // An update (a new command line: a new boot image) goes to slot a, the inactive one.
    let cfg = tmp.path().join("update.yaml");
    std::fs::write(&cfg, "cmdline: [quiet]\n").unwrap();
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
        "device:\n  storage:\n    sector_size: 512\n    partitions:\n      - { name: misc, size: 1MiB }\n      \
         - { name: boot, size: 8MiB, slotted: true }\n      - { name: system, size: 1GiB }\n",
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
