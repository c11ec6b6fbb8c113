//! Thin, checked wrappers over the system calls init needs.

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

pub type Result<T> = std::result::Result<T, String>;

fn cstr(p: &Path) -> Result<CString> {
    CString::new(p.as_os_str().as_bytes()).map_err(|_| format!("path {} has a NUL byte", p.display()))
}

fn check(r: libc::c_int, what: impl FnOnce() -> String) -> Result<()> {
    if r != 0 {
        Err(format!("{}: {}", what(), io::Error::last_os_error()))
    } else {
        Ok(())
    }
}

pub fn mount(src: &str, target: &str, fstype: Option<&str>, flags: libc::c_ulong, data: Option<&str>) -> Result<()> {
    std::fs::create_dir_all(target).map_err(|e| format!("creating {target}: {e}"))?;
    let s = CString::new(src).unwrap();
    let t = CString::new(target).unwrap();
    let f = fstype.map(|f| CString::new(f).unwrap());
    let d = data.map(|d| CString::new(d).unwrap());
    // SAFETY: all pointers are valid NUL-terminated strings or null for the call's duration.
    let r = unsafe {
        libc::mount(
            s.as_ptr(),
            t.as_ptr(),
            f.as_ref().map_or(std::ptr::null(), |f| f.as_ptr()),
            flags,
            d.as_ref().map_or(std::ptr::null(), |d| d.as_ptr() as *const libc::c_void),
        )
    };
    check(r, || format!("mounting {src} on {target} ({})", fstype.unwrap_or("bind/move")))
}

pub fn is_mountpoint(path: &str) -> bool {
    std::fs::read_to_string("/proc/self/mounts")
        .map(|m| m.lines().any(|l| l.split_whitespace().nth(1) == Some(path)))
        .unwrap_or(false)
}

/// Loads a kernel module from a file. An already loaded module is not an error.
pub fn load_module(path: &Path) -> Result<bool> {
    let f = std::fs::File::open(path).map_err(|e| format!("opening {}: {e}", path.display()))?;
    use std::os::unix::io::AsRawFd;
    let empty = CString::new("").unwrap();
    // SAFETY: a valid fd and an empty parameter string.
    let r = unsafe { libc::syscall(libc::SYS_finit_module, f.as_raw_fd(), empty.as_ptr(), 0) };
    if r == 0 {
        return Ok(true);
    }
    let e = io::Error::last_os_error();
    if e.raw_os_error() == Some(libc::EEXIST) {
        return Ok(false);
    }
    Err(format!("loading module {}: {e}", path.display()))
}

pub fn chroot(p: &Path) -> Result<()> {
    let c = cstr(p)?;
    // SAFETY: valid path string.
    check(unsafe { libc::chroot(c.as_ptr()) }, || format!("chroot {}", p.display()))
}

pub fn sethostname(name: &str) -> Result<()> {
    // SAFETY: pointer and length describe `name`.
    check(unsafe { libc::sethostname(name.as_ptr() as *const libc::c_char, name.len()) }, || "sethostname".into())
}

/// Makes fds 0, 1 and 2 the console (the kernel leaves them closed if the initramfs has no
/// /dev/console node).
pub fn attach_console(path: &str) -> Result<()> {
    let c = CString::new(path).unwrap();
    // SAFETY: valid path; dup2 on descriptors we own.
    unsafe {
        let fd = libc::open(c.as_ptr(), libc::O_RDWR | libc::O_NOCTTY);
        if fd < 0 {
            return Err(format!("opening {path}: {}", io::Error::last_os_error()));
        }
        for t in 0..3 {
            if fd != t {
                libc::dup2(fd, t);
            }
        }
        if fd > 2 {
            libc::close(fd);
        }
    }
    Ok(())
}

pub fn power_off() -> ! {
    // SAFETY: sync and reboot take no pointers; as PID 1 we may power off.
    unsafe {
        libc::sync();
        libc::reboot(libc::RB_POWER_OFF);
    }
    loop {
        std::thread::sleep(std::time::Duration::from_secs(60));
    }
}

/// Restarts the machine (a guest reboot is a power cycle to the emulated phone).
pub fn reboot() -> ! {
    // SAFETY: sync and reboot take no pointers.
    unsafe {
        libc::sync();
        libc::reboot(libc::RB_AUTOBOOT);
    }
    loop {
        std::thread::sleep(std::time::Duration::from_secs(60));
    }
}

/// The value of `key=value` on the kernel command line (the last one wins).
pub fn cmdline_value<'a>(cmdline: &'a str, key: &str) -> Option<&'a str> {
    cmdline.split_whitespace().rev().find_map(|a| a.strip_prefix(key).and_then(|r| r.strip_prefix('=')))
}

/// The running A/B slot (0 = a, 1 = b) from `androidboot.slot_suffix` (or
/// `androidboot.slot`), if the bootloader passed one.
pub fn running_slot(cmdline: &str) -> Option<u8> {
    let v = cmdline_value(cmdline, "androidboot.slot_suffix").or_else(|| cmdline_value(cmdline, "androidboot.slot"))?;
    match v.trim_start_matches('_') {
        "a" => Some(0),
        "b" => Some(1),
        _ => None,
    }
}

/// `/dev/<name>` of the partition whose GPT name is `partname`, if the kernel has it.
pub fn find_partition(partname: &str) -> Option<std::path::PathBuf> {
    for e in std::fs::read_dir("/sys/class/block").ok()?.flatten() {
        let uevent = std::fs::read_to_string(e.path().join("uevent")).unwrap_or_default();
        let field = |k: &str| uevent.lines().find_map(|l| l.strip_prefix(k)).map(str::to_string);
        if field("PARTNAME=").as_deref() == Some(partname) {
            if let Some(d) = field("DEVNAME=") {
                let p = Path::new("/dev").join(d);
                if p.exists() {
                    return Some(p);
                }
            }
        }
    }
    None
}

/// Reads `len` bytes at `offset` of a block device.
pub fn read_at(dev: &Path, offset: u64, len: usize) -> Result<Vec<u8>> {
    use std::os::unix::fs::FileExt;
    let f = std::fs::File::open(dev).map_err(|e| format!("opening {}: {e}", dev.display()))?;
    let mut buf = vec![0u8; len];
    f.read_exact_at(&mut buf, offset).map_err(|e| format!("reading {} at {offset}: {e}", dev.display()))?;
    Ok(buf)
}

/// Writes `data` at `offset` of a block device and waits until it is on the medium.
pub fn write_at(dev: &Path, offset: u64, data: &[u8]) -> Result<()> {
    use std::os::unix::fs::{FileExt, OpenOptionsExt};
    let f = std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_DSYNC)
        .open(dev)
        .map_err(|e| format!("opening {} for writing: {e}", dev.display()))?;
    f.write_all_at(data, offset).map_err(|e| format!("writing {} at {offset}: {e}", dev.display()))?;
    f.sync_all().map_err(|e| format!("syncing {}: {e}", dev.display()))
}

/// Waits up to `timeout` for one key on stdin (the console), without waiting for Enter.
pub fn key_within(timeout: std::time::Duration) -> bool {
    // SAFETY: termios calls on fd 0 with a valid struct; poll with one valid pollfd.
    unsafe {
        let mut old: libc::termios = std::mem::zeroed();
        let is_tty = libc::tcgetattr(0, &mut old) == 0;
        if is_tty {
            let mut raw = old;
            raw.c_lflag &= !(libc::ICANON | libc::ECHO);
            libc::tcsetattr(0, libc::TCSANOW, &raw);
        }
        let mut p = libc::pollfd { fd: 0, events: libc::POLLIN, revents: 0 };
        let got = libc::poll(&mut p, 1, timeout.as_millis() as libc::c_int) > 0 && p.revents & libc::POLLIN != 0;
        if got {
            let mut b = [0u8; 16];
            libc::read(0, b.as_mut_ptr() as *mut libc::c_void, b.len());
        }
        if is_tty {
            libc::tcsetattr(0, libc::TCSANOW, &old);
        }
        got
    }
}

pub fn kernel_cmdline() -> String {
    std::fs::read_to_string("/proc/cmdline").unwrap_or_default()
}

/// Whether the kernel command line holds `word` (alone or as `word=...`).
pub fn cmdline_has(cmdline: &str, word: &str) -> bool {
    cmdline.split_whitespace().any(|a| a == word || a.strip_prefix(word).is_some_and(|r| r.starts_with('=')))
}

#[cfg(test)]
mod tests {
    #[test]
    fn cmdline_words() {
        let c = "console=ttyAMA0 panic=5 mobix.poweroff";
        assert!(super::cmdline_has(c, "mobix.poweroff"));
        assert!(super::cmdline_has(c, "panic"));
        assert!(!super::cmdline_has(c, "mobix"));
    }

    #[test]
    fn slot_from_cmdline() {
        assert_eq!(super::running_slot("x androidboot.slot_suffix=_b y"), Some(1));
        assert_eq!(super::running_slot("androidboot.slot=a"), Some(0));
        assert_eq!(super::running_slot("console=ttyAMA0"), None);
        assert_eq!(super::cmdline_value("a=1 b=2 a=3", "a"), Some("3"));
    }
}
