//! `mobix run`, the emulated phone on the terminal: one run of a build at a time (a second
//! one would take the disk from under the first), and what the phone recorded is read back
//! however the run ends, a signal to mobix included.

use crate::common::{mobix_cmd, mobix_shared, ok, small_phone};
use std::io::{BufRead, BufReader};
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::process::Stdio;
use std::time::{Duration, Instant};

#[test]
fn a_second_run_is_refused_and_a_stopped_run_reads_the_phones_record_back() {
    let _one = small_phone();
    let t = tempfile::tempdir().unwrap();
    // A system of its own (the hostname), so that no other test's boot of it is what the
    // shared store's ledger shows.
    let config = t.path().join("signalled.yaml");
    std::fs::write(&config, "hostname: signalled\ninit: minimal\n").unwrap();
    let (c, out) = (config.to_str().unwrap(), t.path().join("out"));
    let o = out.to_str().unwrap();
    let built: serde_json::Value = serde_json::from_str(&ok(&mobix_shared(&[
        "build",
        "--device",
        "qemu-aarch64",
        "--config",
        c,
        "--out",
        o,
        "--json",
    ])))
    .unwrap();
    let name = |v: &serde_json::Value| v.as_str().and_then(|s| s.rsplit('/').next()).map(str::to_string);
    let toplevel = name(&built["toplevel"]).unwrap();

    let err = t.path().join("run.err");
    let mut first = mobix_cmd()
        .args(["run", "--device", "qemu-aarch64", "--out", o, "--repo"])
        .arg(crate::common::repo())
        .arg("--store")
        .arg(crate::common::shared_store())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&err).unwrap())
        .process_group(0)
        .spawn()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let stdout = first.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).split(b'\n').map_while(|l| l.ok()) {
            let _ = tx.send(String::from_utf8_lossy(&line).into_owned());
        }
    });
    let (mut console, t0) = (String::new(), Instant::now());
    while let Ok(line) = rx.recv_timeout(Duration::from_secs(240).saturating_sub(t0.elapsed())) {
        console.push_str(&line);
        console.push('\n');
        if line.contains("mobix: boot-complete") {
            break;
        }
    }
    assert!(console.contains("mobix: boot-complete"), "the first run booted: {console}");
    let disk = out.join("vm/disk.img");
    let inode = std::fs::metadata(&disk).unwrap().ino();

    // A second run of the same build is refused, naming the first; the disk stays.
    let second = mobix_shared(&["run", "--device", "qemu-aarch64", "--out", o]);
    let said = String::from_utf8_lossy(&second.stderr);
    assert_eq!(second.status.code(), Some(1), "{said}");
    let who = format!("is in use by another mobix process (pid {}: `mobix run`); cannot boot it", first.id());
    assert!(said.contains(&who), "{said}");
    assert!(said.contains("hint: end that one first"), "{said}");
    assert_eq!(std::fs::metadata(&disk).unwrap().ino(), inode, "the running phone's disk is the same file");

    // A signal to mobix (not to QEMU) stops the phone, and its record is read back.
    // SAFETY: a signal to the child process this test started.
    unsafe { libc::kill(first.id() as i32, libc::SIGTERM) };
    let status = first.wait().unwrap();
    crate::common::kill_group(&mut first);
    let said = std::fs::read_to_string(&err).unwrap();
    assert_eq!(status.code(), Some(128 + libc::SIGTERM), "{said}");
    assert!(said.contains("stopped by signal 15; its boot-state record was read back"), "{said}");
    let list: serde_json::Value = serde_json::from_str(&ok(&mobix_shared(&[
        "generations",
        "list",
        "--device",
        "qemu-aarch64",
        "--json",
        "--out",
        o,
    ])))
    .unwrap();
    let ours =
        list["generations"].as_array().unwrap().iter().find(|g| name(&g["toplevel"]).as_ref() == Some(&toplevel));
    let ours = ours.unwrap_or_else(|| panic!("{toplevel} in {list:#}"));
    assert_eq!(ours["phone"]["status"], "good", "{ours:#}");

    // A window asked for where QEMU cannot draw one (Debian ships its GTK display apart, in
    // qemu-system-gui, which the setup does not install) is refused before QEMU starts,
    // saying what to install; with a desktop but no GTK the default shows no screen.
    let help = std::process::Command::new("qemu-system-aarch64").args(["-display", "help"]).output().unwrap();
    if !String::from_utf8_lossy(&help.stdout).lines().any(|l| l.trim() == "gtk") {
        let window = mobix_shared(&["run", "--device", "qemu-aarch64", "--out", o, "--screen", "window"]);
        let said = String::from_utf8_lossy(&window.stderr);
        assert_eq!(window.status.code(), Some(1), "{said}");
        assert!(said.contains("error: this QEMU cannot draw a window: its GTK display is not installed"), "{said}");
        assert!(said.contains("hint: `apt-get install qemu-system-gui`"), "{said}");
    }
}
