//! Stage-2 for `init: systemd`: mobix's activation (the generation's /etc, merged /usr,
//! the persistent state, the machine id), then Debian's systemd as PID 1. Health checks,
//! the success point and the trial deadline run as units (`mobix-init check NAME`,
//! `success`, `deadline`), with the same rules as the minimal init (stage2.rs).

use crate::say;
use crate::stage2;
use crate::state;
use crate::sys::{self, Result};
use mobix_bootctl::contract::{SystemSpec, STATE_DIR};
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
    let booted = std::fs::read(state::BOOT_FILE).map_err(|e| io("reading stage-1's boot.json", e))?;
    sys::mount("tmpfs", "/run", Some("tmpfs"), libc::MS_NOSUID | libc::MS_NODEV, Some("mode=0755"))?;
    std::fs::create_dir_all("/run/mobix").map_err(|e| io("creating /run/mobix", e))?;
    std::fs::write(state::BOOT_FILE, &booted).map_err(|e| io("writing /run/mobix/boot.json", e))?;
    let boot: state::Boot = serde_json::from_slice(&booted).map_err(|e| format!("parsing boot.json: {e}"))?;
    if boot.mode == "trial" {
        std::fs::write(TRIAL_FLAG, "").map_err(|e| io("writing the trial flag", e))?;
    }
    activate(top, conf)?;
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

/// The generation made current ([`stage2::link_generation`]), real copies of the /etc files
/// that need their own mode, merged /usr (/usr is the software tree; /bin and /sbin point
/// into it), the kernel's modules.
fn activate(top: &Path, conf: &SystemSpec) -> Result<()> {
    let io = |what: &str, e: std::io::Error| format!("{what}: {e}");
    stage2::link_generation(top, &|name| conf.copies.iter().any(|c| std::ffi::OsStr::new(&c.path) == name))?;
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
/// partition holding no filesystem yet (the first boot) gets one that fills it. Returns
/// whether there is persistent state.
fn mount_state(conf: &SystemSpec) -> Result<bool> {
    let Some(st) = &conf.state else { return Ok(false) };
    let Some(dev) = wait_for(&st.partition, Duration::from_secs(5)) else {
        say(&format!("warning: no partition {:?} for the persistent state; /var and /home in memory", st.partition));
        return Ok(false);
    };
    let magic = sys::read_at(&dev, 1080, 2).unwrap_or_default();
    if magic != [0x53, 0xef] {
        say(&format!("first boot: making the state filesystem on {} ({})", dev.display(), st.partition));
        let status = Command::new("/run/current-system/sw/sbin/mke2fs")
            .args(["-q", "-F", "-t", "ext4", "-L", "mobix-state", "-E", "lazy_itable_init=1,lazy_journal_init=1"])
            .arg(&dev)
            .env("PATH", stage2::PATH)
            .status()
            .map_err(|e| format!("running mke2fs: {e}"))?;
        if !status.success() {
            return Err(format!("mke2fs on {} failed ({status})", dev.display()));
        }
    }
    sys::mount(&dev.to_string_lossy(), STATE_DIR, Some("ext4"), libc::MS_NOATIME, None)?;
    for d in ["var", "home"] {
        let src = format!("{STATE_DIR}/{d}");
        std::fs::create_dir_all(&src).map_err(|e| format!("creating {src}: {e}"))?;
        sys::mount(&src, &format!("/{d}"), None, libc::MS_BIND, None)?;
    }
    Ok(true)
}

fn wait_for(partname: &str, timeout: Duration) -> Option<std::path::PathBuf> {
    let t0 = std::time::Instant::now();
    loop {
        if let Some(p) = sys::find_partition(partname) {
            return Some(p);
        }
        if t0.elapsed() > timeout {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
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
    let conf = stage2::read_conf(Path::new("/etc/mobix/system.json"))?;
    let boot = stage2::booted().ok_or("stage-1 left no /run/mobix/boot.json")?;
    Ok((conf, boot))
}

/// `mobix-init check NAME` (a health-check unit): runs the check as the minimal init does.
pub fn check(args: &[String]) -> Result<()> {
    let name = args.first().ok_or("usage: mobix-init check NAME")?;
    let (conf, boot) = conf_and_boot()?;
    let c = conf.health_checks.iter().find(|c| &c.name == name).ok_or_else(|| format!("no health check {name}"))?;
    match stage2::run_checks(std::slice::from_ref(c)) {
        Ok(()) => Ok(()),
        Err(why) => {
            stage2::health_failed(boot.generation, &why, Some(&boot), reboot_via_systemd);
            Err(why)
        }
    }
}

/// `mobix-init success` (after boot-complete.target): the success point.
pub fn success() -> Result<()> {
    let (_, boot) = conf_and_boot()?;
    stage2::success_point(boot.generation, &boot.toplevel, Some(&boot));
    let _ = std::fs::write(SUCCESS_FLAG, "");
    if sys::cmdline_has(&sys::kernel_cmdline(), "mobix.poweroff") {
        say("powering off (mobix.poweroff)");
        let _ = Command::new("/bin/systemctl").args(["--no-block", "poweroff"]).status();
    }
    Ok(())
}

/// `mobix-init deadline` (on trial boots): the trial deadline.
pub fn deadline() -> Result<()> {
    let (conf, boot) = conf_and_boot()?;
    stage2::watch_deadline(
        boot.generation,
        conf.trial_deadline,
        &|| Path::new(SUCCESS_FLAG).exists(),
        reboot_via_systemd,
    );
    Ok(())
}
