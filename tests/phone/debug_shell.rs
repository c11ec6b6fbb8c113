//! `mobix.debug-shell` on the emulated phone: a shell in stage-1 that serves the USB network
//! (DHCP, telnet), as the minimal system does once it runs. (A minimal system: it ran with
//! the systemd tests before, for the USB network they share.)

use crate::common::{mobix_in, ok, repo, shared_store as store, small_phone};
use std::fs;
use std::os::unix::process::CommandExt;
use std::process::Stdio;
use std::time::{Duration, Instant};

/// `mobix.debug-shell`: before it picks a generation, stage-1 gives a shell on the console
/// (busybox from the system partition) with a DHCP server and telnetd on the USB network;
/// leaving the shell goes on booting, and the minimal system serves the USB network the
/// same way once it runs.
#[test]
fn the_debug_shell_and_the_minimal_system_serve_the_usb_network() {
    use std::io::{BufRead, BufReader, Write};
    // A minimal system on the profile's one emulated CPU.
    let _one = small_phone();
    let t = tempfile::tempdir().unwrap();
    let config = t.path().join("debug.yaml");
    fs::write(
        &config,
        "init: minimal\ndevice:\n  usb_network: {}\n  stage1: { modules: [virtio_pci, virtio_mmio, virtio_blk, ext4, erofs, dummy_hcd, usb_f_ncm] }\n",
    )
    .unwrap();
    let (store, out) = (store(), t.path().join("out"));
    let c = config.to_str().unwrap();
    let common =
        ["--device", "qemu-aarch64", "--config", c, "--store", store.to_str().unwrap(), "--out", out.to_str().unwrap()];
    ok(&mobix_in(&repo(), &[&["build"][..], &common].concat()));
    let mut child = crate::common::mobix_cmd()
        .args(["run", "--append", "mobix.debug-shell"])
        .args(common)
        .current_dir(repo())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(|l| l.ok()) {
            let _ = tx.send(line);
        }
    });
    let mut stdin = child.stdin.take().unwrap();
    let (mut console, t0) = (String::new(), Instant::now());
    while let Ok(line) = rx.recv_timeout(Duration::from_secs(180).saturating_sub(t0.elapsed())) {
        if line.contains("mobix: debug shell (mobix.debug-shell)") {
            stdin.write_all(b"echo DEBUG-$((6*7)); netstat -ltun; exit\n").unwrap();
        }
        if line.contains("mobix: boot-complete") {
            stdin.write_all(b"netstat -ltun; echo STAGE2-$((6*7))\n").unwrap();
        }
        console.push_str(&line);
        console.push('\n');
        if line.trim() == "STAGE2-42" {
            break;
        }
    }
    crate::common::kill_group(&mut child); // QEMU is in its group
    let tail = &console[console.len().saturating_sub(5000)..];
    let listening = |text: &str, what: &str| {
        text.lines().any(|l| l.contains(what) && (l.contains("LISTEN") || l.starts_with("udp")))
    };
    // The debug shell, in stage-1.
    let Some(shell_ended) = console.find("\nDEBUG-42\n") else { panic!("the shell ran no command: {tail}") };
    let (stage1, rest) = console.split_at(shell_ended);
    assert!(stage1.contains("over USB: the host gets 172.16.42.2 by DHCP"), "{tail}");
    // Leaving it went on booting; the minimal system serves the USB network.
    let Some(booted) = rest.find("mobix: boot-complete") else { panic!("leaving the shell went on booting: {tail}") };
    let (shell_and_stage2, stage2) = rest.split_at(booted);
    assert!(listening(shell_and_stage2, "172.16.42.1:23"), "telnetd listens on the phone's USB address: {tail}");
    assert!(listening(shell_and_stage2, ":67 "), "udhcpd listens: {tail}");
    assert!(shell_and_stage2.contains("over USB: the host gets 172.16.42.2"), "stage-2 started its own: {tail}");
    assert!(stage2.lines().any(|l| l.trim() == "STAGE2-42"), "the console shell of stage-2 answered: {tail}");
    assert!(listening(stage2, "172.16.42.1:23") && listening(stage2, ":67 "), "stage-2's telnetd and udhcpd: {tail}");
}
