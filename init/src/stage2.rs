//! Stage-2: the running system, set up from its generation's toplevel.

use crate::console::say;
use crate::generation::{booted, health_failed, link_generation, run_checks, success_point, watch_deadline, PATH};
use crate::sys::{self, Result};
use std::os::unix::fs::symlink;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// `/etc/mobix/system.json`: what the host's system config asks of stage-2 (the host
/// writes it with this very type).
use mobix_bootctl::contract::{BootMode, Restart, Service, SystemSpec as SystemJson};

static SUCCEEDED: AtomicBool = AtomicBool::new(false);

/// The minimal init: activation, the services, the health checks, then a shell on the
/// console while it supervises the services.
pub fn run(generation: u32, top: &Path, conf: &SystemJson) -> Result<()> {
    activate(top)?;
    let activated_ms = sys::uptime_ms();
    if let Ok(h) = std::fs::read_to_string("/etc/hostname") {
        let _ = sys::sethostname(h.trim());
    }
    let cmdline = sys::kernel_cmdline();
    let boot = booted();
    if boot.as_ref().is_some_and(|b| b.mode == BootMode::Trial) {
        let deadline = conf.trial_deadline;
        std::thread::spawn(move || {
            watch_deadline(generation, deadline, &|| SUCCEEDED.load(Ordering::SeqCst), sys::reboot)
        });
    }
    let _usb = usb_services();
    let mut services = Vec::new();
    for s in &conf.services {
        match spawn_service(s) {
            Ok(pid) => services.push((pid, s.clone())),
            Err(e) => say(&format!("service {}: {e}", s.name)),
        }
    }
    match run_checks(&conf.health_checks) {
        Ok(()) => {
            SUCCEEDED.store(true, Ordering::SeqCst);
            let complete_ms = sys::uptime_ms();
            success_point(generation, &top.to_string_lossy(), boot.as_ref());
            if let Some(b) = &boot {
                crate::generation::report_times(b, activated_ms, complete_ms, Vec::new());
            }
        }
        Err(why) => health_failed(generation, &why, boot.as_ref(), sys::reboot),
    }
    if sys::cmdline_has(&cmdline, "mobix.poweroff") {
        say("powering off (mobix.poweroff)");
        sys::power_off();
    }
    supervise(&console_tty(&cmdline), services)
}

/// When stage-1 made the USB network: the minimal system's way in over the cable, as its
/// console is over the serial port (DHCP for the host, telnet for a shell); a systemd
/// system has networkd and ssh instead.
fn usb_services() -> Option<crate::debugshell::UsbServices> {
    let busybox = Path::new("/run/current-system/sw/bin/busybox");
    let ifname = crate::usbnet::gadget_ifname().filter(|_| busybox.exists())?;
    Some(crate::debugshell::usb_services(busybox, &ifname))
}

fn spawn_service(s: &Service) -> Result<libc::pid_t> {
    let child = Command::new(&s.command[0])
        .args(&s.command[1..])
        .env("PATH", PATH)
        .spawn()
        .map_err(|e| format!("starting {}: {e}", s.command[0]))?;
    say(&format!("service {} started (pid {})", s.name, child.id()));
    Ok(child.id() as libc::pid_t)
}

/// The minimal init's activation: [`link_generation`], /usr as the software tree, and
/// /bin with busybox's applets and `mobix-bless`.
fn activate(top: &Path) -> Result<()> {
    let io = |what: &str, e: std::io::Error| format!("{what}: {e}");
    link_generation(top, &|_| false)?;
    if std::fs::symlink_metadata("/usr").is_err() {
        symlink("/run/current-system/sw", "/usr").map_err(|e| io("linking /usr", e))?;
    }
    std::fs::create_dir_all("/root").map_err(|e| io("creating /root", e))?;
    std::fs::create_dir_all("/bin").map_err(|e| io("creating /bin", e))?;
    let _ = std::fs::remove_file("/bin/mobix-bless");
    let _ = symlink(top.join("init"), "/bin/mobix-bless");
    let busybox = top.join("sw/bin/busybox");
    let _ = symlink(&busybox, "/bin/busybox");
    // Applet links: busybox knows its own applets.
    match Command::new(&busybox).args(["--install", "-s", "/bin"]).status() {
        Ok(s) if s.success() => {}
        other => say(&format!("warning: busybox --install failed ({other:?})")),
    }
    Ok(())
}

/// The console device the user types on: the last `console=` of the command line.
fn console_tty(cmdline: &str) -> String {
    cmdline
        .split_whitespace()
        .rev()
        .find_map(|a| a.strip_prefix("console="))
        .map(|c| format!("/dev/{}", c.split(',').next().unwrap_or(c)))
        .unwrap_or_else(|| "/dev/console".into())
}

/// Keeps a login shell on the console and the services running (each respawned when it
/// exits) and reaps orphans, as PID 1 must.
fn supervise(tty: &str, mut services: Vec<(libc::pid_t, Service)>) -> Result<()> {
    use std::os::unix::process::CommandExt;
    loop {
        let tty_owned = tty.to_string();
        let mut cmd = Command::new("/bin/sh");
        cmd.arg("-l").env_clear().env("HOME", "/root").env("TERM", "linux").env("PATH", PATH);
        // SAFETY: only async-signal-safe calls (setsid, open, ioctl, dup2) between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                libc::setsid();
                let c = std::ffi::CString::new(tty_owned.as_str()).unwrap();
                let fd = libc::open(c.as_ptr(), libc::O_RDWR);
                if fd >= 0 {
                    libc::ioctl(fd, libc::TIOCSCTTY, 0);
                    for t in 0..3 {
                        libc::dup2(fd, t);
                    }
                    if fd > 2 {
                        libc::close(fd);
                    }
                }
                Ok(())
            });
        }
        let child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) => return Err(format!("starting /bin/sh on {tty}: {e}")),
        };
        let shell = child.id() as libc::pid_t;
        loop {
            let mut status = 0;
            // SAFETY: waitpid with a valid status pointer.
            let pid = unsafe { libc::waitpid(-1, &mut status, 0) };
            if pid == shell || pid < 0 {
                break;
            }
            if let Some(i) = services.iter().position(|(p, _)| *p == pid) {
                let (_, s) = services.remove(i);
                let failed = !(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0);
                if s.restart == Restart::No || (s.restart == Restart::OnFailure && !failed) {
                    say(&format!("service {} exited (status {status:#x})", s.name));
                    continue;
                }
                say(&format!("service {} exited (status {status:#x}); restarting it", s.name));
                std::thread::sleep(Duration::from_secs(1));
                match spawn_service(&s) {
                    Ok(p) => services.push((p, s)),
                    Err(e) => say(&format!("service {}: {e}", s.name)),
                }
            }
        }
        std::thread::sleep(Duration::from_secs(1));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn console_from_cmdline() {
        assert_eq!(console_tty("console=tty0 console=ttyMSM0,115200 x"), "/dev/ttyMSM0");
        assert_eq!(console_tty("quiet"), "/dev/console");
    }
}
