//! Stage-2: the running system, set up from its generation's toplevel.

use crate::say;
use crate::sys::{self, Result};
use std::os::unix::fs::symlink;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

struct Args {
    generation: u32,
    toplevel: String,
}

fn parse(args: &[String]) -> Result<Args> {
    let mut generation = None;
    let mut toplevel = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--generation" => generation = it.next().and_then(|v| v.parse().ok()),
            "--toplevel" => toplevel = it.next().cloned(),
            other => return Err(format!("stage2: unknown argument {other:?}")),
        }
    }
    Ok(Args {
        generation: generation.ok_or("stage2: --generation N is required")?,
        toplevel: toplevel.ok_or("stage2: --toplevel PATH is required")?,
    })
}

pub fn run(args: &[String]) -> Result<()> {
    let a = parse(args)?;
    if std::process::id() != 1 {
        return Err("stage2 must run as PID 1".into());
    }
    for (src, target, fstype, data) in [
        ("proc", "/proc", "proc", None),
        ("sysfs", "/sys", "sysfs", None),
        ("devtmpfs", "/dev", "devtmpfs", Some("mode=0755")),
        ("devpts", "/dev/pts", "devpts", Some("gid=5,mode=620,ptmxmode=666")),
        ("tmpfs", "/dev/shm", "tmpfs", Some("mode=1777")),
        ("tmpfs", "/tmp", "tmpfs", Some("mode=1777")),
    ] {
        if !sys::is_mountpoint(target) {
            sys::mount(src, target, Some(fstype), libc::MS_NOSUID, data)?;
        }
    }
    let top = Path::new(&a.toplevel);
    activate(top)?;
    if let Ok(h) = std::fs::read_to_string("/etc/hostname") {
        let _ = sys::sethostname(h.trim());
    }
    let cmdline = sys::kernel_cmdline();
    // The success point: everything stage-2 sets up is in place.
    say(&format!("boot-complete generation={} toplevel={}", a.generation, a.toplevel));
    if sys::cmdline_has(&cmdline, "mobix.poweroff") {
        say("powering off (mobix.poweroff)");
        sys::power_off();
    }
    supervise_shell(&console_tty(&cmdline))
}

/// Makes the generation current: /run/current-system, /etc and /bin from the toplevel.
fn activate(top: &Path) -> Result<()> {
    let io = |what: &str, e: std::io::Error| format!("{what}: {e}");
    std::fs::create_dir_all("/run").map_err(|e| io("creating /run", e))?;
    let _ = std::fs::remove_file("/run/current-system");
    symlink(top, "/run/current-system").map_err(|e| io("linking /run/current-system", e))?;
    std::fs::create_dir_all("/etc").map_err(|e| io("creating /etc", e))?;
    let etc = top.join("etc");
    let rd = std::fs::read_dir(&etc).map_err(|e| io(&format!("reading {}", etc.display()), e))?;
    for e in rd.flatten() {
        let dst = Path::new("/etc").join(e.file_name());
        let _ = std::fs::remove_file(&dst);
        symlink(Path::new("/run/current-system/etc").join(e.file_name()), &dst)
            .map_err(|e| io("populating /etc", e))?;
    }
    let _ = symlink("/proc/mounts", "/etc/mtab");
    // The kernel's firmware loader looks in /lib/firmware.
    if top.join("firmware").exists() {
        std::fs::create_dir_all("/lib").map_err(|e| io("creating /lib", e))?;
        let _ = std::fs::remove_file("/lib/firmware");
        symlink("/run/current-system/firmware", "/lib/firmware").map_err(|e| io("linking /lib/firmware", e))?;
    }
    std::fs::create_dir_all("/root").map_err(|e| io("creating /root", e))?;
    std::fs::create_dir_all("/bin").map_err(|e| io("creating /bin", e))?;
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

/// Keeps a login shell on the console (respawned when it exits) and reaps orphans, as
/// PID 1 must.
fn supervise_shell(tty: &str) -> Result<()> {
    use std::os::unix::process::CommandExt;
    loop {
        let tty_owned = tty.to_string();
        let mut cmd = Command::new("/bin/sh");
        cmd.arg("-l")
            .env_clear()
            .env("HOME", "/root")
            .env("TERM", "linux")
            .env("PATH", "/run/current-system/sw/bin:/bin");
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

    #[test]
    fn args_are_checked() {
        let a = |v: &[&str]| parse(&v.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        assert!(a(&["--generation", "3", "--toplevel", "/mobix/store/x"]).is_ok());
        assert!(a(&["--generation", "x", "--toplevel", "/t"]).is_err());
        assert!(a(&["--bogus"]).is_err());
    }
}
