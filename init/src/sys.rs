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
    mount_at(src, target, fstype, flags, data)
}

/// [`mount`] onto what `target` already is (a file, for a bind mount of one).
pub fn mount_at(src: &str, target: &str, fstype: Option<&str>, flags: libc::c_ulong, data: Option<&str>) -> Result<()> {
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

/// The running A/B slot from `androidboot.slot_suffix` (or `androidboot.slot`), if the
/// bootloader passed one.
pub fn running_slot(cmdline: &str) -> Option<mobix_bootctl::contract::Slot> {
    let v = cmdline_value(cmdline, "androidboot.slot_suffix").or_else(|| cmdline_value(cmdline, "androidboot.slot"))?;
    mobix_bootctl::contract::Slot::parse(v)
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

/// Finds `/dev/<name>` of the partition whose GPT name is `partname`, waiting up to
/// `timeout` for the block driver to probe it.
pub fn wait_for_partition(partname: &str, timeout: std::time::Duration) -> Result<std::path::PathBuf> {
    let t0 = std::time::Instant::now();
    loop {
        if let Some(p) = find_partition(partname) {
            return Ok(p);
        }
        if t0.elapsed() > timeout {
            return Err(format!("no partition named {partname:?} appeared within {}s", timeout.as_secs()));
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// The size of a block device in bytes.
pub fn device_bytes(dev: &Path) -> Result<u64> {
    use std::io::{Seek, SeekFrom};
    let mut f = std::fs::File::open(dev).map_err(|e| format!("opening {}: {e}", dev.display()))?;
    f.seek(SeekFrom::End(0)).map_err(|e| format!("sizing {}: {e}", dev.display()))
}

/// Reads `len` bytes at `offset` of a block device.
pub fn read_at(dev: &Path, offset: u64, len: usize) -> Result<Vec<u8>> {
    use std::os::unix::fs::FileExt;
    let f = std::fs::File::open(dev).map_err(|e| format!("opening {}: {e}", dev.display()))?;
    let mut buf = vec![0u8; len];
    f.read_exact_at(&mut buf, offset).map_err(|e| format!("reading {} at {offset}: {e}", dev.display()))?;
    Ok(buf)
}

/// The kernel's loop device interface (linux/loop.h): the ioctls and `struct loop_info64`.
mod loopdev {
    pub const LOOP_SET_FD: libc::c_ulong = 0x4C00;
    pub const LOOP_CLR_FD: libc::c_ulong = 0x4C01;
    pub const LOOP_SET_STATUS64: libc::c_ulong = 0x4C04;
    pub const LOOP_CTL_GET_FREE: libc::c_ulong = 0x4C82;
    /// The loop device goes away when the last one holding it open closes it.
    pub const LO_FLAGS_AUTOCLEAR: u32 = 4;

    #[repr(C)]
    pub struct Info64 {
        pub device: u64,
        pub inode: u64,
        pub rdevice: u64,
        pub offset: u64,
        pub sizelimit: u64,
        pub number: u32,
        pub encrypt_type: u32,
        pub encrypt_key_size: u32,
        pub flags: u32,
        pub file_name: [u8; 64],
        pub crypt_name: [u8; 64],
        pub encrypt_key: [u8; 32],
        pub init: [u64; 2],
    }
}

/// A loop device over `dev` from byte `offset` to its end, made with the kernel's loop
/// ioctls (stage-1 has no losetup): its path, and the device held open. It goes away
/// when the last holder closes it (the returned file, then whatever opened it since: the
/// device mapper holds it while the state is open).
pub fn loop_device(dev: &Path, offset: u64) -> Result<(std::path::PathBuf, std::fs::File)> {
    use std::os::fd::AsRawFd;
    let rw = |p: &Path| {
        std::fs::OpenOptions::new().read(true).write(true).open(p).map_err(|e| format!("opening {}: {e}", p.display()))
    };
    let control = rw(Path::new("/dev/loop-control"))?;
    // SAFETY: LOOP_CTL_GET_FREE takes no argument and returns a number or -1.
    let n = unsafe { libc::ioctl(control.as_raw_fd(), loopdev::LOOP_CTL_GET_FREE as _) };
    if n < 0 {
        return Err(format!("no free loop device: {}", io::Error::last_os_error()));
    }
    let path = std::path::PathBuf::from(format!("/dev/loop{n}"));
    let lo = rw(&path)?;
    let backing = rw(dev)?;
    // SAFETY: LOOP_SET_FD takes the backing file's descriptor, open for the call.
    if unsafe { libc::ioctl(lo.as_raw_fd(), loopdev::LOOP_SET_FD as _, backing.as_raw_fd()) } < 0 {
        return Err(format!("attaching {} to {}: {}", dev.display(), path.display(), io::Error::last_os_error()));
    }
    let mut info = loopdev::Info64 {
        device: 0,
        inode: 0,
        rdevice: 0,
        offset,
        sizelimit: 0,
        number: 0,
        encrypt_type: 0,
        encrypt_key_size: 0,
        flags: loopdev::LO_FLAGS_AUTOCLEAR,
        file_name: [0; 64],
        crypt_name: [0; 64],
        encrypt_key: [0; 32],
        init: [0; 2],
    };
    let name = dev.as_os_str().as_bytes();
    let len = name.len().min(63);
    info.file_name[..len].copy_from_slice(&name[..len]);
    // SAFETY: LOOP_SET_STATUS64 reads a `struct loop_info64`, which Info64 lays out.
    if unsafe { libc::ioctl(lo.as_raw_fd(), loopdev::LOOP_SET_STATUS64 as _, &info as *const loopdev::Info64) } < 0 {
        let e = io::Error::last_os_error();
        // SAFETY: LOOP_CLR_FD takes no argument.
        unsafe { libc::ioctl(lo.as_raw_fd(), loopdev::LOOP_CLR_FD as _) };
        return Err(format!("setting {}'s offset to {offset}: {e}", path.display()));
    }
    Ok((path, lo))
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

/// Waits up to `timeout` for one key on stdin (the console), without waiting for Enter,
/// or one of the phone's keys.
pub fn key_within(timeout: std::time::Duration, keys: &[std::fs::File]) -> bool {
    let deadline = std::time::Instant::now() + timeout;
    let _raw = RawConsole::new();
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            return false;
        }
        if next_input(left, keys).is_some() {
            return true;
        }
    }
}

/// The console in raw mode (each key as it is typed, no echo) while this lives.
pub struct RawConsole(Option<libc::termios>);

impl RawConsole {
    pub fn new() -> RawConsole {
        RawConsole::without(libc::ICANON | libc::ECHO)
    }

    /// Standard input's terminal with these local modes (`c_lflag`) off while this lives:
    /// `ECHO` alone keeps whole lines but shows nothing typed (a PIN asked for over ssh).
    pub fn without(modes: libc::tcflag_t) -> RawConsole {
        // SAFETY: termios calls on fd 0 with a valid struct.
        unsafe {
            let mut old: libc::termios = std::mem::zeroed();
            if libc::tcgetattr(0, &mut old) != 0 {
                return RawConsole(None);
            }
            let mut raw = old;
            raw.c_lflag &= !modes;
            libc::tcsetattr(0, libc::TCSANOW, &raw);
            RawConsole(Some(old))
        }
    }
}

impl Drop for RawConsole {
    fn drop(&mut self) {
        if let Some(old) = &self.0 {
            // SAFETY: restoring the settings read in `new`.
            unsafe { libc::tcsetattr(0, libc::TCSANOW, old) };
        }
    }
}

/// What came in: bytes typed on the console, or a key of the phone pressed (its Linux key
/// code).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    Console(Vec<u8>),
    Key(u16),
    /// A tap on a touch device, x and y as fractions of its width and height (0..=65535).
    Tap(u32, u32),
    /// Bytes from the remote unlock's pipe (`remote::Server`).
    Remote(Vec<u8>),
}

/// Waits up to `timeout` for input on the console or a key press (not a release or an
/// autorepeat) on one of `keys`; None when the time passed or only other events came.
pub fn next_input(timeout: std::time::Duration, keys: &[std::fs::File]) -> Option<Input> {
    next_input_or_tap(timeout, keys, &mut [], None)
}

/// [`next_input`], taps on `touch` devices ([`Input::Tap`]) and what comes through the
/// `remote` pipe ([`Input::Remote`]).
pub fn next_input_or_tap(
    timeout: std::time::Duration,
    keys: &[std::fs::File],
    touch: &mut [Touch],
    remote: Option<&std::fs::File>,
) -> Option<Input> {
    use std::os::fd::AsRawFd;
    let mut fds: Vec<libc::pollfd> = std::iter::once(0)
        .chain(keys.iter().map(|k| k.as_raw_fd()))
        .chain(touch.iter().map(|t| t.file.as_raw_fd()))
        .chain(remote.map(|r| r.as_raw_fd()))
        .map(|fd| libc::pollfd { fd, events: libc::POLLIN, revents: 0 })
        .collect();
    // SAFETY: poll on valid pollfds; reads into buffers of the given sizes.
    unsafe {
        if libc::poll(
            fds.as_mut_ptr(),
            fds.len() as libc::nfds_t,
            timeout.as_millis().min(i32::MAX as u128) as libc::c_int,
        ) <= 0
        {
            return None;
        }
        if fds[0].revents & libc::POLLIN != 0 {
            let mut b = [0u8; 64];
            let n = libc::read(0, b.as_mut_ptr() as *mut libc::c_void, b.len());
            if n > 0 {
                return Some(Input::Console(b[..n as usize].to_vec()));
            }
        }
        for f in &fds[1..=keys.len()] {
            if f.revents & libc::POLLIN == 0 {
                continue;
            }
            // One event a read (struct input_event on 64-bit: timeval (16), type u16, code
            // u16, value i32), so that the presses after the first stay queued for the next
            // call instead of being read and lost; the device is non-blocking.
            let mut e = [0u8; 24];
            while libc::read(f.fd, e.as_mut_ptr() as *mut libc::c_void, e.len()) == 24 {
                let (kind, code, value) = event_of(&e);
                if kind == EV_KEY && value == 1 && (PHONE_KEYS.contains(&code) || pin_key(code).is_some()) {
                    return Some(Input::Key(code));
                }
            }
        }
        for (f, t) in fds[keys.len() + 1..].iter().zip(touch.iter_mut()) {
            if f.revents & libc::POLLIN == 0 {
                continue;
            }
            let mut e = [0u8; 24];
            while libc::read(f.fd, e.as_mut_ptr() as *mut libc::c_void, e.len()) == 24 {
                if let Some(tap) = t.event(event_of(&e)) {
                    return Some(tap);
                }
            }
        }
        if let Some(f) = fds.get(keys.len() + touch.len() + 1).filter(|f| f.revents & libc::POLLIN != 0) {
            let mut b = [0u8; 64];
            let n = libc::read(f.fd, b.as_mut_ptr() as *mut libc::c_void, b.len());
            if n > 0 {
                return Some(Input::Remote(b[..n as usize].to_vec()));
            }
        }
    }
    None
}

fn event_of(e: &[u8; 24]) -> (u16, u16, i32) {
    (
        u16::from_ne_bytes([e[16], e[17]]),
        u16::from_ne_bytes([e[18], e[19]]),
        i32::from_ne_bytes([e[20], e[21], e[22], e[23]]),
    )
}

/// A key of a keyboard that types a PIN: its digit (0-9), or 10 for Backspace.
pub fn pin_key(code: u16) -> Option<u8> {
    match code {
        // KEY_1..KEY_9, KEY_0.
        2..=10 => Some(code as u8 - 1),
        11 => Some(0),
        // The keypad's digits.
        71..=73 => Some(code as u8 - 71 + 7),
        75..=77 => Some(code as u8 - 75 + 4),
        79..=81 => Some(code as u8 - 79 + 1),
        82 => Some(0),
        KEY_BACKSPACE => Some(10),
        _ => None,
    }
}

pub const KEY_BACKSPACE: u16 = 14;
pub const KEY_KPENTER: u16 = 96;

/// A touch device (a touchscreen, or the emulated phone's tablet): where the finger is, on
/// the device's own scale, and whether it is down.
pub struct Touch {
    file: std::fs::File,
    x: (i32, i32, i32),
    y: (i32, i32, i32),
    pressed: bool,
}

const EV_SYN: u16 = 0;
const EV_ABS: u16 = 3;
const ABS_X: u16 = 0;
const ABS_Y: u16 = 1;
const ABS_MT_POSITION_X: u16 = 0x35;
const ABS_MT_POSITION_Y: u16 = 0x36;
const BTN_LEFT: u16 = 0x110;
const BTN_TOUCH: u16 = 0x14a;

impl Touch {
    /// Takes one event; at the end of a report in which the finger went down, the tap at
    /// its place, as fractions of the device's range scaled to 0..=65535.
    fn event(&mut self, (kind, code, value): (u16, u16, i32)) -> Option<Input> {
        match (kind, code) {
            (EV_ABS, ABS_X | ABS_MT_POSITION_X) => self.x.2 = value,
            (EV_ABS, ABS_Y | ABS_MT_POSITION_Y) => self.y.2 = value,
            (EV_KEY, BTN_LEFT | BTN_TOUCH) if value == 1 => self.pressed = true,
            (EV_SYN, 0) if self.pressed => {
                self.pressed = false;
                let f = |(min, max, v): (i32, i32, i32)| {
                    ((i64::from(v.clamp(min, max)) - i64::from(min)) * 65535 / i64::from((max - min).max(1))) as u32
                };
                return Some(Input::Tap(f(self.x), f(self.y)));
            }
            _ => {}
        }
        None
    }
}

/// The touch devices: evdev devices with absolute X and Y and a touch or left button,
/// opened non-blocking.
pub fn touch_devices() -> Vec<Touch> {
    use std::os::fd::AsRawFd;
    let mut out = Vec::new();
    for f in event_devices() {
        let fd = f.as_raw_fd();
        let mut keys = [0u8; KEY_BYTES];
        let mut abs = [0u8; 8];
        // SAFETY: EVIOCGBIT fills at most the given number of bytes.
        let ok = unsafe {
            libc::ioctl(fd, eviocg(0x20 + EV_KEY as u32, KEY_BYTES), keys.as_mut_ptr()) >= 0
                && libc::ioctl(fd, eviocg(0x20 + EV_ABS as u32, 8), abs.as_mut_ptr()) >= 0
        };
        if !ok || !(has_bit(&keys, BTN_TOUCH) || has_bit(&keys, BTN_LEFT)) {
            continue;
        }
        let axes = if has_bit(&abs, ABS_X) && has_bit(&abs, ABS_Y) {
            (ABS_X, ABS_Y)
        } else if has_bit(&abs, ABS_MT_POSITION_X) && has_bit(&abs, ABS_MT_POSITION_Y) {
            (ABS_MT_POSITION_X, ABS_MT_POSITION_Y)
        } else {
            continue;
        };
        let range = |axis: u16| {
            let mut info = [0i32; 6];
            // SAFETY: EVIOCGABS fills a struct input_absinfo (six i32).
            let ok = unsafe { libc::ioctl(fd, eviocg(0x40 + axis as u32, 24), info.as_mut_ptr()) } >= 0;
            ok.then_some((info[1], info[2], info[0]))
        };
        if let (Some(x), Some(y)) = (range(axes.0), range(axes.1)) {
            out.push(Touch { file: f, x, y, pressed: false });
        }
    }
    out
}

const EV_KEY: u16 = 1;
pub const KEY_VOLUMEDOWN: u16 = 114;
pub const KEY_VOLUMEUP: u16 = 115;
pub const KEY_POWER: u16 = 116;
pub const KEY_UP: u16 = 103;
pub const KEY_DOWN: u16 = 108;
pub const KEY_ENTER: u16 = 28;
/// KEY_VOLUMEDOWN and KEY_VOLUMEUP.
const VOLUME_KEYS: [u16; 2] = [KEY_VOLUMEDOWN, KEY_VOLUMEUP];
/// The keys stage-1 listens to: a phone's buttons, and a keyboard's arrows and Enter.
const PHONE_KEYS: [u16; 6] = [KEY_VOLUMEDOWN, KEY_VOLUMEUP, KEY_POWER, KEY_UP, KEY_DOWN, KEY_ENTER];
/// Bytes of a key bitmap (KEY_MAX 0x2ff).
const KEY_BYTES: usize = 0x300 / 8;

/// `_IOC(_IOC_READ, 'E', nr, len)`.
fn eviocg(nr: u32, len: usize) -> libc::Ioctl {
    // (The request is an int on musl, an unsigned long on glibc: the same 32 bits.)
    ((2u32 << 30) | ((len as u32) << 16) | ((b'E' as u32) << 8) | nr) as libc::Ioctl
}

fn has_bit(bits: &[u8], n: u16) -> bool {
    bits.get(n as usize / 8).is_some_and(|b| b >> (n % 8) & 1 == 1)
}

/// Every evdev device under /dev/input that opens, non-blocking.
fn event_devices() -> impl Iterator<Item = std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    let entries = std::fs::read_dir("/dev/input").into_iter().flatten().flatten();
    entries
        .filter(|e| e.file_name().to_string_lossy().starts_with("event"))
        .filter_map(|e| std::fs::OpenOptions::new().read(true).custom_flags(libc::O_NONBLOCK).open(e.path()).ok())
}

/// The input devices (evdev) that have one of the phone's keys, opened non-blocking: on
/// phones the buttons (gpio-keys, the PMIC's power key), on the emulated phone its virtio
/// keyboard and the virt machine's gpio power button.
pub fn key_devices() -> Vec<std::fs::File> {
    use std::os::fd::AsRawFd;
    let mut out = Vec::new();
    for f in event_devices() {
        let mut bits = [0u8; KEY_BYTES];
        // SAFETY: EVIOCGBIT(EV_KEY) fills at most KEY_BYTES bytes of `bits`.
        let ok = unsafe { libc::ioctl(f.as_raw_fd(), eviocg(0x20 + EV_KEY as u32, KEY_BYTES), bits.as_mut_ptr()) } >= 0;
        if ok && PHONE_KEYS.iter().any(|&k| has_bit(&bits, k)) {
            out.push(f);
        }
    }
    out
}

/// Whether one of `keys` has a volume key.
pub fn has_volume_key(keys: &[std::fs::File]) -> bool {
    use std::os::fd::AsRawFd;
    keys.iter().any(|f| {
        let mut bits = [0u8; KEY_BYTES];
        // SAFETY: EVIOCGBIT(EV_KEY) fills at most KEY_BYTES bytes of `bits`.
        let ok = unsafe { libc::ioctl(f.as_raw_fd(), eviocg(0x20 + EV_KEY as u32, KEY_BYTES), bits.as_mut_ptr()) } >= 0;
        ok && VOLUME_KEYS.iter().any(|&k| has_bit(&bits, k))
    })
}

/// Whether the key `code` is held down now (as a phone user holds it while powering on).
pub fn key_held(keys: &[std::fs::File], code: u16) -> bool {
    use std::os::fd::AsRawFd;
    keys.iter().any(|f| {
        let mut bits = [0u8; KEY_BYTES];
        // SAFETY: EVIOCGKEY fills at most KEY_BYTES bytes of `bits`.
        let ok = unsafe { libc::ioctl(f.as_raw_fd(), eviocg(0x18, KEY_BYTES), bits.as_mut_ptr()) } >= 0;
        ok && has_bit(&bits, code)
    })
}

/// Milliseconds since the kernel started (`CLOCK_BOOTTIME`, as the kernel's log stamps).
pub fn uptime_ms() -> u32 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes the timespec it is given.
    if unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts) } != 0 {
        return 0;
    }
    (ts.tv_sec as u64 * 1000 + ts.tv_nsec as u64 / 1_000_000).min(u32::MAX as u64) as u32
}

pub fn kernel_cmdline() -> String {
    std::fs::read_to_string("/proc/cmdline").unwrap_or_default()
}

/// Whether the kernel command line holds `word` (alone or as `word=...`).
pub fn cmdline_has(cmdline: &str, word: &str) -> bool {
    cmdline.split_whitespace().any(|a| a == word || a.strip_prefix(word).is_some_and(|r| r.starts_with('=')))
}

/// Gives the network interface `ifname` an IPv4 address and netmask and brings it up
/// (the SIOCSIFADDR, SIOCSIFNETMASK and SIOCSIFFLAGS ioctls, as `ifconfig` does).
pub fn set_ipv4(ifname: &str, address: &str, netmask: &str) -> Result<()> {
    let parse = |a: &str| a.parse::<std::net::Ipv4Addr>().map_err(|e| format!("{a:?}: {e}"));
    configure_ipv4(ifname, Some((parse(address)?, parse(netmask)?)))
}

/// Takes `ifname`'s address away and the interface down, as it was before [`set_ipv4`] (so
/// that udev may rename it and the system's network manager configure it afresh).
pub fn clear_ipv4(ifname: &str) -> Result<()> {
    configure_ipv4(ifname, None)
}

/// With an address and netmask: sets them and brings the interface up; without: sets
/// 0.0.0.0 (which removes the address) and takes it down.
fn configure_ipv4(ifname: &str, set: Option<(std::net::Ipv4Addr, std::net::Ipv4Addr)>) -> Result<()> {
    if ifname.is_empty() || ifname.len() >= libc::IFNAMSIZ {
        return Err(format!("{ifname:?} is not an interface name"));
    }
    // SAFETY: a plain socket for the ioctls, closed below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(format!("socket: {}", io::Error::last_os_error()));
    }
    let request = || {
        // SAFETY: ifreq is plain old data; all zeroes is a valid value.
        let mut r: libc::ifreq = unsafe { std::mem::zeroed() };
        for (d, s) in r.ifr_name.iter_mut().zip(ifname.bytes()) {
            *d = s as libc::c_char;
        }
        r
    };
    let with_addr = |a: std::net::Ipv4Addr| {
        let mut r = request();
        let sin = libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: 0,
            sin_addr: libc::in_addr { s_addr: u32::from_ne_bytes(a.octets()) },
            sin_zero: [0; 8],
        };
        // SAFETY: sockaddr_in fits in the union's sockaddr and is what these ioctls read.
        unsafe { std::ptr::write(&mut r.ifr_ifru.ifru_addr as *mut libc::sockaddr as *mut libc::sockaddr_in, sin) };
        r
    };
    let result = (|| {
        let settings = match set {
            Some((addr, mask)) => {
                vec![
                    (libc::SIOCSIFADDR, with_addr(addr), "address"),
                    (libc::SIOCSIFNETMASK, with_addr(mask), "netmask"),
                ]
            }
            None => vec![(libc::SIOCSIFADDR, with_addr(std::net::Ipv4Addr::UNSPECIFIED), "address")],
        };
        for (req, r, what) in settings {
            // SAFETY: a valid socket and ifreq for the call's duration.
            let rc = unsafe { libc::ioctl(fd, req as _, &r) };
            if rc < 0 {
                return Err(format!("setting the {what} of {ifname}: {}", io::Error::last_os_error()));
            }
        }
        let mut r = request();
        // SAFETY: as above; SIOCGIFFLAGS fills ifru_flags.
        if unsafe { libc::ioctl(fd, libc::SIOCGIFFLAGS as _, &mut r) } < 0 {
            return Err(format!("reading the flags of {ifname}: {}", io::Error::last_os_error()));
        }
        // SAFETY: the union holds the flags SIOCGIFFLAGS wrote.
        unsafe {
            if set.is_some() {
                r.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
            } else {
                r.ifr_ifru.ifru_flags &= !(libc::IFF_UP as libc::c_short);
            }
        }
        // SAFETY: as above.
        if unsafe { libc::ioctl(fd, libc::SIOCSIFFLAGS as _, &r) } < 0 {
            return Err(format!(
                "bringing {ifname} {}: {}",
                if set.is_some() { "up" } else { "down" },
                io::Error::last_os_error()
            ));
        }
        Ok(())
    })();
    // SAFETY: closing the socket made above.
    unsafe { libc::close(fd) };
    result
}

#[cfg(test)]
mod tests {
    #[test]
    fn ioctl_numbers_are_linux_ones() {
        // EVIOCGKEY(96) and EVIOCGBIT(EV_KEY, 96) as <linux/input.h> computes them.
        assert_eq!(super::eviocg(0x18, 96) as u32, 0x8060_4518);
        assert_eq!(super::eviocg(0x21, 96) as u32, 0x8060_4521);
        assert!(super::has_bit(&[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0b1000], 115));
    }

    #[test]
    fn loop_info64_has_the_kernels_layout() {
        // struct loop_info64: five u64, four u32, 64 + 64 + 32 bytes of names and key, two u64.
        assert_eq!(std::mem::size_of::<super::loopdev::Info64>(), 232);
        assert_eq!(std::mem::offset_of!(super::loopdev::Info64, offset), 24);
        assert_eq!(std::mem::offset_of!(super::loopdev::Info64, flags), 52);
        assert_eq!(std::mem::offset_of!(super::loopdev::Info64, file_name), 56);
    }

    #[test]
    fn cmdline_words() {
        let c = "console=ttyAMA0 panic=5 mobix.poweroff";
        assert!(super::cmdline_has(c, "mobix.poweroff"));
        assert!(super::cmdline_has(c, "panic"));
        assert!(!super::cmdline_has(c, "mobix"));
    }

    #[test]
    fn slot_from_cmdline() {
        use mobix_bootctl::contract::Slot;
        assert_eq!(super::running_slot("x androidboot.slot_suffix=_b y"), Some(Slot::B));
        assert_eq!(super::running_slot("androidboot.slot=a"), Some(Slot::A));
        assert_eq!(super::running_slot("console=ttyAMA0"), None);
        assert_eq!(super::cmdline_value("a=1 b=2 a=3", "a"), Some("3"));
    }
}
