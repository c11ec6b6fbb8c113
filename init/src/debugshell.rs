//! `mobix.debug-shell` on the kernel command line, and the rescue shell: a shell on the
//! console and, when stage-1 brought the USB network up, a DHCP server handing the host
//! its one address and a telnet server at the phone's address, so a phone whose screen
//! and serial port are out of reach can still be looked into. The minimal init serves
//! the USB network the same way for as long as it runs.
//!
//! The initramfs carries no shell: busybox comes from a generation on the system
//! partition (the newest that has one), which is why these shells exist only once that
//! partition is mounted.

use crate::console::say;
use mobix_bootctl::contract::{USB_HOST_ADDRESS, USB_PHONE_ADDRESS};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};

/// Where the shells' busybox is linked under the names its applets answer to.
const TOOLS: &str = "/debug-shell";

/// A busybox: the first of the `preferred` trees (generations' software, newest first)
/// that has one, else the first store path under `store` with a `bin/busybox`.
pub fn find_busybox(store: &Path, preferred: &[PathBuf]) -> Option<PathBuf> {
    preferred.iter().map(|p| p.join("bin/busybox")).find(|p| p.exists()).or_else(|| {
        let mut found: Vec<PathBuf> = std::fs::read_dir(store)
            .ok()?
            .flatten()
            .map(|e| e.path().join("bin/busybox"))
            .filter(|p| p.exists())
            .collect();
        found.sort();
        found.into_iter().next()
    })
}

/// The servers on the USB network; stopped when dropped.
pub struct UsbServices(Vec<Child>);

impl Drop for UsbServices {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The busybox `udhcpd` configuration: one lease, the host's address, on `ifname`.
pub fn udhcpd_conf(ifname: &str, leases: &str) -> String {
    format!(
        "start {USB_HOST_ADDRESS}\nend {USB_HOST_ADDRESS}\ninterface {ifname}\nmax_leases 1\n\
         lease_file {leases}\noption subnet 255.255.255.0\n"
    )
}

/// Starts udhcpd and telnetd (a shell for anyone on the USB link: the link is the cable
/// in the owner's hand) on `ifname`. What cannot start is said, not fatal.
pub fn usb_services(busybox: &Path, ifname: &str) -> UsbServices {
    if let Err(e) = link_tools(busybox) {
        say(&format!("warning: debug shell: {e}"));
        return UsbServices(Vec::new());
    }
    let mut up = dhcp_server(busybox, ifname);
    match Command::new(busybox).args(["telnetd", "-F", "-b", USB_PHONE_ADDRESS, "-l", &format!("{TOOLS}/sh")]).spawn() {
        Ok(c) => up.0.push(c),
        Err(e) => say(&format!("warning: debug shell: starting telnetd: {e}")),
    }
    if !up.0.is_empty() {
        say(&format!("over USB: the host gets {USB_HOST_ADDRESS} by DHCP; `telnet {USB_PHONE_ADDRESS}` for a shell"));
    }
    up
}

/// Starts udhcpd on `ifname` alone (stage-1's remote unlock: no shell). What cannot start
/// is said, not fatal.
pub fn dhcp_server(busybox: &Path, ifname: &str) -> UsbServices {
    if let Err(e) = link_tools(busybox) {
        say(&format!("warning: USB network: {e}"));
        return UsbServices(Vec::new());
    }
    let conf = format!("{TOOLS}/udhcpd.conf");
    let written = std::fs::write(&conf, udhcpd_conf(ifname, &format!("{TOOLS}/udhcpd.leases")))
        .and_then(|()| std::fs::write(format!("{TOOLS}/udhcpd.leases"), ""));
    if let Err(e) = written {
        say(&format!("warning: USB network: writing {conf}: {e}"));
        return UsbServices(Vec::new());
    }
    match Command::new(busybox).args(["udhcpd", "-f", &conf]).spawn() {
        Ok(c) => UsbServices(vec![c]),
        Err(e) => {
            say(&format!("warning: USB network: starting udhcpd: {e}"));
            UsbServices(Vec::new())
        }
    }
}

/// `/debug-shell/sh` and friends: links to busybox, so that telnetd's login program and
/// the shell's PATH find its applets.
fn link_tools(busybox: &Path) -> Result<(), String> {
    std::fs::create_dir_all(TOOLS).map_err(|e| format!("creating {TOOLS}: {e}"))?;
    for name in ["sh", "ls", "cat", "dmesg", "mount", "ps", "netstat", "ip", "reboot"] {
        let link = Path::new(TOOLS).join(name);
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(busybox, &link).map_err(|e| format!("linking {}: {e}", link.display()))?;
    }
    Ok(())
}

/// A shell on the console until the user leaves it (busybox `sh`, its applets first).
pub fn console_shell(busybox: &Path) {
    let status = Command::new(busybox)
        .arg("sh")
        .env("PATH", format!("{TOOLS}:/bin:/sbin"))
        .env("ENV", "")
        .env("PS1", "mobix-debug# ")
        .status();
    if let Err(e) = status {
        say(&format!("warning: debug shell: running {}: {e}", busybox.display()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_dhcp_server_hands_out_the_hosts_one_address() {
        let c = udhcpd_conf("usb0", "/x/leases");
        assert!(c.contains("start 172.16.42.2\nend 172.16.42.2\n"));
        assert!(c.contains("interface usb0\n") && c.contains("max_leases 1\n") && c.contains("lease_file /x/leases\n"));
    }

    #[test]
    fn a_generations_busybox_is_taken_before_any_other() {
        let t = std::env::temp_dir().join(format!("mobix-bb-{}", std::process::id()));
        for p in ["aaa-sw/bin", "zzz-sw/bin", "mmm-other"] {
            std::fs::create_dir_all(t.join(p)).unwrap();
        }
        for p in ["aaa-sw/bin/busybox", "zzz-sw/bin/busybox"] {
            std::fs::write(t.join(p), "").unwrap();
        }
        assert_eq!(find_busybox(&t, &[t.join("mmm-other")]), Some(t.join("aaa-sw/bin/busybox")));
        assert_eq!(find_busybox(&t, &[t.join("mmm-other"), t.join("zzz-sw")]), Some(t.join("zzz-sw/bin/busybox")));
        assert_eq!(find_busybox(&t.join("none"), &[]), None);
        std::fs::remove_dir_all(&t).unwrap();
    }
}
