//! Stage-2 for `init: systemd`: mobix's activation (the generation's /etc, merged /usr,
//! the persistent state, the machine id), then Debian's systemd as PID 1. Health checks,
//! the success point and the trial deadline run as units (`mobix-init check NAME`,
//! `success`, `deadline`), with the same rules as the minimal init (stage2.rs).

use crate::console::say;
use crate::generation;
use crate::state;
use crate::sys::{self, Result};
use mobix_bootctl::contract::BootMode;
use mobix_bootctl::contract::{SystemSpec, MIN_STATE, STATE_DIR};
use std::os::unix::fs::symlink;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// Set once the success point is reached (the deadline watcher looks for it).
const SUCCESS_FLAG: &str = "/run/mobix/success";
/// Present on a trial boot: `mobix-deadline.service` runs only then.
const TRIAL_FLAG: &str = "/run/mobix/trial";

pub fn start(generation: u32, top: &Path, conf: &SystemSpec) -> Result<()> {
    let io = |what: &str, e: std::io::Error| format!("{what}: {e}");
    // systemd puts a tmpfs on /run unless one is there; mount it ourselves so that what
    // stage-1 left for this boot stays visible.
    let mut boot = state::booted()?;
    sys::mount("tmpfs", "/run", Some("tmpfs"), libc::MS_NOSUID | libc::MS_NODEV, Some("mode=0755"))?;
    std::fs::create_dir_all("/run/mobix").map_err(|e| io("creating /run/mobix", e))?;
    // Written again as soon as /run is there (activation's failures are reported with it),
    // and once more with the activation's mark before systemd starts.
    let write_boot = |b: &state::Boot| -> Result<()> {
        let json = serde_json::to_vec_pretty(b).map_err(|e| format!("writing boot.json: {e}"))?;
        std::fs::write(state::BOOT_FILE, json).map_err(|e| io("writing /run/mobix/boot.json", e))
    };
    write_boot(&boot)?;
    if boot.mode == BootMode::Trial {
        std::fs::write(TRIAL_FLAG, "").map_err(|e| io("writing the trial flag", e))?;
    }
    activate(top, conf)?;
    privileged(&conf.privileged);
    let persistent = mount_state(conf)?;
    machine_id(persistent)?;
    for d in ["/etc/.updated", "/var/.updated"] {
        // systemd's ConditionNeedsUpdate= would otherwise try to rebuild caches in the
        // read-only /etc (hwdb, sysusers, ldconfig) on every boot.
        std::fs::write(d, "").map_err(|e| io(&format!("writing {d}"), e))?;
    }
    if let Ok(h) = std::fs::read_to_string("/etc/hostname") {
        let _ = sys::sethostname(h.trim());
    }
    boot.clock.activated_ms = sys::uptime_ms();
    write_boot(&boot)?;
    say(&format!(
        "generation {generation} activated; starting systemd ({})",
        if persistent {
            format!("state on {STATE_DIR}")
        } else {
            "no persistent state: /var and /home in memory".into()
        }
    ));
    use std::os::unix::process::CommandExt;
    let err = Command::new("/lib/systemd/systemd").arg0("/sbin/init").exec();
    Err(format!("executing systemd: {err}"))
}

/// Where the privileged copies are: a tmpfs of its own, since /run does not honour
/// setuid bits.
const WRAPPERS: &str = "/run/wrappers";

/// Gives each program Debian installs setuid or setgid its mode for this boot: a copy in
/// [`WRAPPERS`] with the mode and group, mounted over the store's file (the store keeps no
/// such bits, and /usr is the read-only store). A program that cannot be given its mode
/// is said on the console and left as it is: the boot goes on without it.
fn privileged(list: &[mobix_bootctl::contract::Privileged]) {
    use std::os::unix::fs::PermissionsExt;
    if list.is_empty() {
        return;
    }
    let made = std::fs::create_dir_all(WRAPPERS)
        .map_err(|e| format!("creating {WRAPPERS}: {e}"))
        .and_then(|()| sys::mount("tmpfs", WRAPPERS, Some("tmpfs"), libc::MS_NODEV, Some("mode=0755")));
    if let Err(e) = made {
        say(&format!("no setuid or setgid programs this boot: {e}"));
        return;
    }
    for (i, p) in list.iter().enumerate() {
        let give = || -> std::result::Result<(), String> {
            let program = Path::new("/run/current-system/sw").join(&p.path);
            let file = std::fs::canonicalize(&program).map_err(|e| format!("{}: {e}", program.display()))?;
            let name = file.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            let copy = Path::new(WRAPPERS).join(format!("{i}-{name}"));
            std::fs::copy(&file, &copy).map_err(|e| format!("copying {}: {e}", file.display()))?;
            // chown first: it clears setuid and setgid bits.
            std::os::unix::fs::chown(&copy, Some(0), Some(p.gid)).map_err(|e| format!("chown: {e}"))?;
            std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(p.mode))
                .map_err(|e| format!("chmod: {e}"))?;
            let (from, to) = (copy.to_string_lossy().into_owned(), file.to_string_lossy().into_owned());
            sys::mount_at(&from, &to, None, libc::MS_BIND, None)
        };
        if let Err(e) = give() {
            say(&format!("/usr/{} keeps no mode {:o}: {e}", p.path, p.mode));
        }
    }
}

/// The generation made current ([`generation::link_generation`]), real copies of the /etc files
/// that need their own mode, merged /usr (/usr is the software tree; /bin and /sbin point
/// into it), the kernel's modules.
fn activate(top: &Path, conf: &SystemSpec) -> Result<()> {
    let io = |what: &str, e: std::io::Error| format!("{what}: {e}");
    generation::link_generation(top, &|name| conf.copies.iter().any(|c| std::ffi::OsStr::new(&c.path) == name))?;
    let etc = top.join("etc");
    for c in &conf.copies {
        use std::os::unix::fs::PermissionsExt;
        let dst = Path::new("/etc").join(&c.path);
        let data = std::fs::read(etc.join(&c.path)).map_err(|e| io(&format!("reading /etc/{}", c.path), e))?;
        let _ = std::fs::remove_file(&dst);
        std::fs::write(&dst, data).map_err(|e| io(&format!("writing /etc/{}", c.path), e))?;
        std::fs::set_permissions(&dst, std::fs::Permissions::from_mode(c.mode))
            .map_err(|e| io(&format!("chmod /etc/{}", c.path), e))?;
        std::os::unix::fs::chown(&dst, Some(0), Some(c.gid)).map_err(|e| io(&format!("chown /etc/{}", c.path), e))?;
    }
    let _ = std::fs::remove_file("/usr");
    symlink("/run/current-system/sw", "/usr").map_err(|e| io("linking /usr", e))?;
    for (link, target) in [("/bin", "usr/bin"), ("/sbin", "usr/sbin")] {
        let _ = std::fs::remove_dir_all(link);
        let _ = std::fs::remove_file(link);
        symlink(target, link).map_err(|e| io(&format!("linking {link}"), e))?;
    }
    // The kernel's modules beside the software tree's lib/ entries (for udev and kmod).
    if std::fs::symlink_metadata("/lib/modules").is_err() {
        symlink("/run/current-system/kernel-modules", "/lib/modules").map_err(|e| io("linking /lib/modules", e))?;
    }
    for (d, mode) in [("/root", 0o700), ("/tmp", 0o1777), ("/home", 0o755), ("/var", 0o755), ("/mnt", 0o755)] {
        use std::os::unix::fs::PermissionsExt;
        std::fs::create_dir_all(d).map_err(|e| io(&format!("creating {d}"), e))?;
        let _ = std::fs::set_permissions(d, std::fs::Permissions::from_mode(mode));
    }
    Ok(())
}

/// Mounts the persistent state and binds its var/ and home/ over /var and /home; a
/// partition holding no filesystem yet (the first boot) gets one that fills it, and a
/// filesystem smaller than its partition (flashed small, or the partition grew) grows to
/// fill it. Where the system image shares the partition, the state filesystem is what
/// follows the image, reached through a loop device. Returns whether there is persistent
/// state.
fn mount_state(conf: &SystemSpec) -> Result<bool> {
    let Some(st) = &conf.state else { return Ok(false) };
    let Ok(part) = sys::wait_for_partition(&st.partition, Duration::from_secs(5)) else {
        say(&format!("warning: no partition {:?} for the persistent state; /var and /home in memory", st.partition));
        return Ok(false);
    };
    let mapped = Path::new("/dev/mapper").join(mobix_bootctl::pin::MAPPER_NAME);
    // The loop device over the state after the system image, open until mounted.
    let mut _held = None;
    let dev = if st.encrypted && mapped.exists() {
        match header_device(&mapped) {
            Ok(header) => {
                let _ = std::fs::remove_file(mobix_bootctl::pin::ENCRYPTED_LINK);
                if let Err(e) = std::os::unix::fs::symlink(&header, mobix_bootctl::pin::ENCRYPTED_LINK) {
                    say(&format!("warning: linking {}: {e}", mobix_bootctl::pin::ENCRYPTED_LINK));
                }
            }
            Err(e) => say(&format!("warning: which device holds the encrypted state's header: {e}")),
        }
        mapped
    } else if st.offset == 0 {
        part
    } else {
        let size = sys::device_bytes(&part)?;
        if size < st.offset + MIN_STATE {
            say(&format!(
                "warning: {} ({}) has {} MiB after the system image, less than {} MiB; /var and /home in memory",
                part.display(),
                st.partition,
                size.saturating_sub(st.offset) >> 20,
                MIN_STATE >> 20
            ));
            return Ok(false);
        }
        let (lo, held) = loop_device(&part, st.offset)?;
        _held = Some(held);
        lo
    };
    let superblock = sys::read_at(&dev, 1024, 1024).unwrap_or_default();
    if let mobix_bootctl::pin::StateArea::Luks { .. } =
        mobix_bootctl::pin::classify(&sys::read_at(&dev, 0, mobix_bootctl::pin::PROBE_BYTES).unwrap_or_default())
    {
        // An encrypted state stage-1 did not open (a boot image without the PIN screen):
        // never a filesystem over it.
        say(&format!(
            "warning: {} ({}) holds an encrypted state that is not open; /var and /home in memory",
            dev.display(),
            st.partition
        ));
        return Ok(false);
    }
    if fs_bytes(&superblock).is_none() {
        say(&format!("first boot: making the state filesystem on {} ({})", dev.display(), st.partition));
        run_tool(
            Command::new("/run/current-system/sw/sbin/mke2fs")
                .args(["-q", "-F", "-t", "ext4", "-L", "mobix-state", "-E", "lazy_itable_init=1,lazy_journal_init=1"])
                .arg(&dev),
        )?;
    }
    sys::mount(&dev.to_string_lossy(), STATE_DIR, Some("ext4"), libc::MS_NOATIME, None)?;
    // A state filesystem that cannot grow is still the owner's data: boot with it as it is.
    if let Err(e) = grow(&dev) {
        say(&format!("warning: the state filesystem on {} was not grown: {e}", dev.display()));
    }
    for d in ["var", "home"] {
        let src = format!("{STATE_DIR}/{d}");
        std::fs::create_dir_all(&src).map_err(|e| format!("creating {src}: {e}"))?;
        sys::mount(&src, &format!("/{d}"), None, libc::MS_BIND, None)?;
    }
    Ok(true)
}

/// The device under the opened device-mapper device `mapped` (its one slave in sysfs, found
/// by its device number: stage-1's cryptsetup made `mapped` a node, not a link): the
/// partition, or the loop device stage-1 made over the part of it after the image.
fn header_device(mapped: &Path) -> Result<std::path::PathBuf> {
    use std::os::unix::fs::MetadataExt;
    let rdev = std::fs::metadata(mapped).map_err(|e| format!("reading {}: {e}", mapped.display()))?.rdev();
    let slaves = format!("/sys/dev/block/{}:{}/slaves", libc::major(rdev), libc::minor(rdev));
    let mut under = std::fs::read_dir(&slaves).map_err(|e| format!("reading {slaves}: {e}"))?;
    let first = under.next().ok_or_else(|| format!("{slaves} is empty"))?;
    let first = first.map_err(|e| format!("reading {slaves}: {e}"))?;
    Ok(Path::new("/dev").join(first.file_name()))
}

/// Grows the mounted state filesystem on `dev` to the device's size when the device is
/// larger by more than the slack resize2fs may leave (a last block group too small to keep).
fn grow(dev: &Path) -> Result<()> {
    const SLACK: u64 = 16 << 20;
    let have = fs_bytes(&sys::read_at(dev, 1024, 1024)?).ok_or("the state filesystem's superblock is unreadable")?;
    let room = sys::device_bytes(dev)?;
    if room <= have + SLACK {
        return Ok(());
    }
    say(&format!("growing the state filesystem on {} from {} MiB to {} MiB", dev.display(), have >> 20, room >> 20));
    run_tool(Command::new("/run/current-system/sw/sbin/resize2fs").arg(dev))
}

/// The size in bytes an ext2/3/4 superblock (the 1024 bytes at offset 1024) gives its
/// filesystem: blocks count (with its high half on 64-bit filesystems) times block size.
pub fn fs_bytes(sb: &[u8]) -> Option<u64> {
    let u32_at = |o: usize| sb.get(o..o + 4).map(|b| u32::from_le_bytes(b.try_into().unwrap()) as u64);
    if sb.get(56..58)? != [0x53, 0xef] {
        return None;
    }
    let log = u32_at(24)?;
    if log > 6 {
        return None;
    }
    let incompat_64bit = u32_at(0x60)? & 0x80 != 0;
    let hi = if incompat_64bit { u32_at(0x150)? } else { 0 };
    Some(((hi << 32) | u32_at(4)?) << (10 + log))
}

/// A loop device over `part` from `offset` to its end ([`sys::loop_device`], as stage-1
/// makes one), the loop module loaded first where the kernel has it as a module: its path,
/// and the device held open until the state is mounted on it.
fn loop_device(part: &Path, offset: u64) -> Result<(std::path::PathBuf, std::fs::File)> {
    if !Path::new("/dev/loop-control").exists() {
        let _ = Command::new("/run/current-system/sw/sbin/modprobe").arg("loop").env("PATH", generation::PATH).status();
    }
    sys::loop_device(part, offset)
}

fn run_tool(cmd: &mut Command) -> Result<()> {
    let what = format!("{:?}", cmd.get_program());
    let status = cmd.env("PATH", generation::PATH).status().map_err(|e| format!("running {what}: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{what} failed ({status})"))
    }
}

/// /etc/machine-id: the one kept in the persistent state (made on the first boot), so that
/// systemd never sees a first boot and the journal stays one machine's.
fn machine_id(persistent: bool) -> Result<()> {
    let kept = format!("{STATE_DIR}/machine-id");
    let id = match std::fs::read_to_string(&kept).ok().map(|s| s.trim().to_string()) {
        Some(id) if id.len() == 32 && id.bytes().all(|c| c.is_ascii_hexdigit()) => id,
        _ => {
            let uuid =
                std::fs::read_to_string("/proc/sys/kernel/random/uuid").map_err(|e| format!("a random id: {e}"))?;
            let id: String = uuid.trim().chars().filter(|c| *c != '-').collect();
            if persistent {
                let tmp = format!("{kept}.new");
                std::fs::write(&tmp, format!("{id}\n")).map_err(|e| format!("writing {tmp}: {e}"))?;
                std::fs::File::open(&tmp).and_then(|f| f.sync_all()).map_err(|e| format!("syncing {tmp}: {e}"))?;
                std::fs::rename(&tmp, &kept).map_err(|e| format!("renaming {tmp}: {e}"))?;
            }
            id
        }
    };
    let _ = std::fs::remove_file("/etc/machine-id");
    std::fs::write("/etc/machine-id", format!("{id}\n")).map_err(|e| format!("writing /etc/machine-id: {e}"))
}

/// Asks systemd to reboot cleanly; forces it if that does not happen within a minute.
fn reboot_via_systemd() -> ! {
    let _ = Command::new("/bin/systemctl").args(["--no-block", "reboot"]).status();
    std::thread::sleep(Duration::from_secs(60));
    sys::reboot()
}

fn conf_and_boot() -> Result<(SystemSpec, state::Boot)> {
    let conf = generation::read_conf(Path::new("/etc/mobix/system.json"))?;
    let boot = generation::booted().ok_or("stage-1 left no /run/mobix/boot.json")?;
    Ok((conf, boot))
}

/// `mobix-init check NAME` (a health-check unit): runs the check as the minimal init does.
pub fn check(args: &[String]) -> Result<()> {
    let name = args.first().ok_or("usage: mobix-init check NAME")?;
    let (conf, boot) = conf_and_boot()?;
    let c = conf.health_checks.iter().find(|c| &c.name == name).ok_or_else(|| format!("no health check {name}"))?;
    match generation::run_checks(std::slice::from_ref(c)) {
        Ok(()) => Ok(()),
        Err(why) => {
            generation::health_failed(boot.generation, &why, Some(&boot), reboot_via_systemd);
            Err(why)
        }
    }
}

/// `mobix-init notify-fallback` (a phone UI's session, once it is up): when this boot fell
/// back from a failed generation, shows stage-1's notice as a notification, through
/// GLib's `gdbus` on the session's bus; otherwise nothing. A lock screen shows a
/// notification's summary only, so the summary says both what failed and what runs; the
/// line printed (the session's journal) says which notification it was.
pub fn notify_fallback() -> Result<()> {
    let Some(boot) = generation::booted() else { return Ok(()) };
    let Some(notice) = boot.fallback else { return Ok(()) };
    let summary = format!("{}; this is generation {}", notice.title, boot.generation);
    let out = Command::new("gdbus")
        .args(["call", "--session", "--dest", "org.freedesktop.Notifications"])
        .args(["--object-path", "/org/freedesktop/Notifications"])
        .args(["--method", "org.freedesktop.Notifications.Notify", "mobix", "0", "dialog-warning"])
        .args([gvariant_string(&summary), gvariant_string(&notice.text)])
        // No actions, urgency critical (it stays until dismissed), no expiry.
        .args(["[]", "{'urgency': <byte 2>}", "0"])
        .output()
        .map_err(|e| format!("running gdbus: {e}"))?;
    if !out.status.success() {
        return Err(format!("gdbus: {}", String::from_utf8_lossy(&out.stderr).trim()));
    }
    // gdbus answers `(uint32 7,)`: the notification's id.
    say(&format!("notified ({}): {summary}", String::from_utf8_lossy(&out.stdout).trim()));
    Ok(())
}

/// `s` as a GVariant text-format string (gdbus parses each argument in that format).
fn gvariant_string(s: &str) -> String {
    let mut q = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => q.push_str("\\\""),
            '\\' => q.push_str("\\\\"),
            '\n' => q.push_str("\\n"),
            c if c.is_control() => q.push(' '),
            c => q.push(c),
        }
    }
    q.push('"');
    q
}

/// `mobix-init success` (after boot-complete.target): the success point.
pub fn success() -> Result<()> {
    let (_, boot) = conf_and_boot()?;
    let complete_ms = sys::uptime_ms();
    generation::success_point(boot.generation, &boot.toplevel, Some(&boot));
    let _ = std::fs::write(SUCCESS_FLAG, "");
    // Stage-1's last screen has stayed until now; the consoles are the system's again.
    crate::screen::give_back_console();
    generation::report_times(&boot, boot.clock.activated_ms, complete_ms, slowest_units());
    if sys::cmdline_has(&sys::kernel_cmdline(), "mobix.poweroff") {
        say("powering off (mobix.poweroff)");
        let _ = Command::new("/bin/systemctl").args(["--no-block", "poweroff"]).status();
    }
    Ok(())
}

/// The five slowest units so far, as `systemd-analyze blame` measures them (from leaving
/// the inactive state to entering the active one), read from systemd's properties: blame
/// itself refuses while the boot has jobs left, and the success point is one of them.
/// Devices are left out (their time is spent waiting for udev), and targets, slices and
/// scopes, which do no work; none where systemd cannot be asked. Only the loaded units of
/// the kinds that work are asked about, by name: `systemctl show '*'` loads every unit
/// file on disk too, which took 3 s of the emulated phone's CPU right after the success
/// point (0.2 s this way).
fn slowest_units() -> Vec<(String, u32)> {
    let listed = Command::new("/bin/systemctl")
        .args(["list-units", "--all", "--type=service,socket,mount,swap,path,timer", "--no-legend", "--plain"])
        .output();
    let names: Vec<String> = match listed {
        // `NAME LOAD ACTIVE SUB DESCRIPTION`; masked and missing units did no work.
        Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout)
            .lines()
            .filter_map(|l| {
                let mut f = l.split_whitespace();
                let name = f.next()?;
                (f.next() == Some("loaded")).then(|| name.to_string())
            })
            .collect(),
        _ => return Vec::new(),
    };
    if names.is_empty() {
        return Vec::new();
    }
    let out = Command::new("/bin/systemctl")
        // `--`: the root's mount unit is `-.mount`.
        .args(["show", "--property=Id,InactiveExitTimestampMonotonic,ActiveEnterTimestampMonotonic", "--"])
        .args(&names)
        .output();
    match out {
        Ok(o) if o.status.success() => slowest_of(&String::from_utf8_lossy(&o.stdout), 5),
        _ => Vec::new(),
    }
}

/// The `n` slowest units in `systemctl show` output (blocks of `Key=value` lines).
fn slowest_of(text: &str, n: usize) -> Vec<(String, u32)> {
    let mut units: Vec<(String, u32)> = text
        .split("\n\n")
        .filter_map(|block| {
            let get = |k: &str| block.lines().find_map(|l| l.strip_prefix(k)?.strip_prefix('='));
            let id = get("Id")?;
            let from: u64 = get("InactiveExitTimestampMonotonic")?.parse().ok()?;
            let to: u64 = get("ActiveEnterTimestampMonotonic")?.parse().ok()?;
            let work = !id.ends_with(".device") && ![".target", ".slice", ".scope"].iter().any(|k| id.ends_with(k));
            (work && from > 0 && to > from).then(|| (id.to_string(), ((to - from) / 1000).min(u32::MAX as u64) as u32))
        })
        .collect();
    units.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    units.truncate(n);
    units
}

/// `mobix-init deadline` (on trial boots): the trial deadline.
pub fn deadline() -> Result<()> {
    let (conf, boot) = conf_and_boot()?;
    generation::watch_deadline(
        boot.generation,
        conf.trial_deadline,
        &|| Path::new(SUCCESS_FLAG).exists(),
        reboot_via_systemd,
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::fs_bytes;

    /// What gdbus reads back as the same text: quotes and backslashes escaped, a line
    /// break written out.
    #[test]
    fn notification_texts_are_quoted_for_gdbus() {
        assert_eq!(super::gvariant_string("Generation 8 failed"), "\"Generation 8 failed\"");
        assert_eq!(super::gvariant_string("a \"b\" c\\d\ne"), "\"a \\\"b\\\" c\\\\d\\ne\"");
    }

    /// `systemctl show` of units as systemd 252 prints them.
    #[test]
    fn the_slowest_units_are_read_from_systemds_properties() {
        let text = "Id=systemd-networkd.service\nInactiveExitTimestampMonotonic=4733000\n\
                    ActiveEnterTimestampMonotonic=7107000\n\n\
                    Id=dev-vda4.device\nInactiveExitTimestampMonotonic=0\nActiveEnterTimestampMonotonic=5177000\n\n\
                    Id=multi-user.target\nInactiveExitTimestampMonotonic=1000\nActiveEnterTimestampMonotonic=7812000\n\n\
                    Id=ssh.service\nInactiveExitTimestampMonotonic=7195000\nActiveEnterTimestampMonotonic=7798000\n\n\
                    Id=mobix-success.service\nInactiveExitTimestampMonotonic=8100000\nActiveEnterTimestampMonotonic=0\n";
        let got = super::slowest_of(text, 5);
        assert_eq!(got, [("systemd-networkd.service".to_string(), 2374), ("ssh.service".to_string(), 603)]);
        assert_eq!(super::slowest_of(text, 1).len(), 1);
        assert!(super::slowest_of("", 5).is_empty());
    }

    /// The size read from superblocks mke2fs made: 32-bit and 64-bit layouts, 1 KiB and
    /// 4 KiB blocks.
    #[test]
    fn filesystem_size_from_the_superblock() {
        let dir = std::env::temp_dir().join(format!("mobix-sb-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for (mib, opts) in [(40u64, &["-b", "4096", "-O", "64bit"][..]), (24, &["-b", "1024", "-O", "^64bit"][..])] {
            let img = dir.join(format!("{mib}.img"));
            std::fs::File::create(&img).unwrap().set_len(mib << 20).unwrap();
            let st = std::process::Command::new("mke2fs")
                .args(["-q", "-F", "-t", "ext4"])
                .args(opts)
                .arg(&img)
                .status()
                .expect("mke2fs (e2fsprogs) runs");
            assert!(st.success());
            let sb = &std::fs::read(&img).unwrap()[1024..2048];
            assert_eq!(fs_bytes(sb), Some(mib << 20), "{opts:?}");
        }
        assert_eq!(fs_bytes(&[0u8; 1024]), None);
        assert_eq!(fs_bytes(&[0u8; 10]), None);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
