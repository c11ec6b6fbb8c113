//! The running generation, under either init: what stage-1 decided, the generation's
//! system.json, its activation links, the health checks, the success point (blessing) and
//! the trial deadline. Stage-2 (the minimal init) and the systemd units both call these;
//! `main.rs` chooses the init.

use crate::console::say;
use crate::state;
use crate::sys::{self, Result};
use mobix_bootctl::contract::{BootMode, HealthCheck as Check, SystemSpec as SystemJson};
use std::os::unix::fs::symlink;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// `mobix-init stage2 --generation N --toplevel PATH`, as stage-1 executes it: the
/// generation, its toplevel and its system.json, once the kernel's filesystems are mounted.
pub fn enter(args: &[String]) -> Result<(u32, std::path::PathBuf, SystemJson)> {
    let (generation, toplevel) = parse(args)?;
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
    let conf = read_conf(&toplevel.join("etc/mobix/system.json"))?;
    Ok((generation, toplevel, conf))
}

/// `--generation N --toplevel PATH`.
fn parse(args: &[String]) -> Result<(u32, std::path::PathBuf)> {
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
    let generation = generation.ok_or("stage2: --generation N is required")?;
    let toplevel = std::path::PathBuf::from(toplevel.ok_or("stage2: --toplevel PATH is required")?);
    Ok((generation, toplevel))
}

/// The generation's system.json (a generation without one asks for nothing).
pub fn read_conf(path: &Path) -> Result<SystemJson> {
    match std::fs::read(path) {
        Ok(b) => serde_json::from_slice(&b).map_err(|e| format!("parsing {}: {e}", path.display())),
        Err(_) => Ok(SystemJson::default()),
    }
}

/// What stage-1 decided for this boot, if it said.
pub fn booted() -> Option<state::Boot> {
    state::booted().ok()
}

/// The trial deadline, under either init: a trial that has not `reached` its success
/// point `deadline` seconds from now reboots, which spends one of its tries (a hang is a
/// failure).
pub fn watch_deadline(generation: u32, deadline: u32, reached: &dyn Fn() -> bool, reboot: fn() -> !) {
    std::thread::sleep(Duration::from_secs(deadline.into()));
    if !reached() {
        let why = format!("no success point within {deadline}s; rebooting");
        crate::console::report(&mobix_bootctl::console::Event::TrialTimeout { generation, why });
        reboot();
    }
}

/// The success point, under either init: every health check passed. Blesses the running
/// generation and says so on the console.
pub fn success_point(generation: u32, toplevel: &str, boot: Option<&state::Boot>) {
    let status = match boot {
        Some(b) => bless(b),
        None => "no boot-state information from stage-1; nothing recorded".into(),
    };
    say(&format!("BLESSED generation={generation}: {status}"));
    crate::console::report(&mobix_bootctl::console::Event::Complete {
        generation,
        toplevel: toplevel.to_string(),
        fell_back_from: boot.and_then(|b| b.fallback.as_ref()).map(|f| f.from),
    });
}

/// After the success point, under either init: where this boot's time went, on the
/// console (`BOOT-TIMES`); `activated_ms` is when the generation's init started,
/// `complete_ms` when it reached the success point.
pub fn report_times(boot: &state::Boot, activated_ms: u32, complete_ms: u32, slowest: Vec<(String, u32)>) {
    let c = boot.clock;
    let times = mobix_bootctl::console::BootTimes {
        generation: boot.generation,
        kernel_ms: c.stage1_start_ms,
        stage1_ms: c.stage1_done_ms.saturating_sub(c.stage1_start_ms),
        activation_ms: activated_ms.saturating_sub(c.stage1_done_ms),
        complete_ms,
        slowest,
    };
    crate::console::report(&mobix_bootctl::console::Event::BootTimes(times));
}

/// A failed health check, under either init: a trial reboots (one try spent); a
/// generation already good does not (a flaky check must not boot-loop it), nor one chosen by
/// hand or booted while nothing is counted; each says which.
pub fn health_failed(generation: u32, why: &str, boot: Option<&state::Boot>, reboot: fn() -> !) {
    crate::console::report(&mobix_bootctl::console::Event::HealthFailed { generation, why: why.to_string() });
    // For `mobix deploy`'s report after the fallback (best effort: the reboot matters more).
    let dir = std::path::Path::new(mobix_bootctl::contract::FAILURES_DIR);
    if std::fs::create_dir_all(dir).is_ok() {
        if let Ok(f) = std::fs::File::create(dir.join(generation.to_string())) {
            use std::io::Write;
            let mut f = f;
            let _ = f.write_all(why.as_bytes()).and_then(|_| f.sync_all());
        }
    }
    if boot.is_some_and(|b| b.mode == BootMode::Trial) {
        say("the trial generation failed its health checks; rebooting (one try spent)");
        reboot();
    }
    say(match boot.map(|b| b.mode) {
        Some(BootMode::Manual) => {
            "not rebooting: this generation was chosen by hand in the menu (its tries are left as they are)"
        }
        Some(BootMode::Degraded) => "not rebooting: nothing is counted while the boot-state record is unreadable",
        _ => "not rebooting: this generation was already good (a flaky check must not boot-loop it)",
    });
}

/// Runs the health checks in order; the first failure (exit status or timeout) is the
/// reason the boot does not count.
pub fn run_checks(checks: &[Check]) -> Result<()> {
    for c in checks {
        let mut child = Command::new(&c.command[0])
            .args(&c.command[1..])
            .env("PATH", PATH)
            .spawn()
            .map_err(|e| format!("health check {}: starting {}: {e}", c.name, c.command[0]))?;
        let t0 = std::time::Instant::now();
        loop {
            match child.try_wait() {
                Ok(Some(st)) if st.success() => break,
                Ok(Some(st)) => return Err(format!("health check {} failed ({st})", c.name)),
                Ok(None) if t0.elapsed() > Duration::from_secs(c.timeout.into()) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(format!("health check {} did not finish within {}s", c.name, c.timeout));
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(50)),
                Err(e) => return Err(format!("health check {}: {e}", c.name)),
            }
        }
        say(&format!("health check {} passed", c.name));
    }
    Ok(())
}

/// Marks the running generation good (and the last good one of its slot) and the running
/// A/B slot successful. In degraded mode (the record was unreadable) writes a fresh
/// record in which the running generation is the good default.
pub fn bless(boot: &state::Boot) -> String {
    use mobix_bootctl::record::{self, Entry, Record, Status};
    let Some(loc) = &boot.state else { return "no boot-state record location".into() };
    let _turn = state::lock_record();
    let mut notes = Vec::new();
    let next = match (boot.mode, state::read(loc)) {
        (BootMode::Degraded, _) | (_, Err(_)) => {
            let present = crate::state::read_generations(Path::new("/mobix/generations")).unwrap_or_default();
            let mut entries: Vec<Entry> = present
                .into_iter()
                .map(|g| Entry {
                    generation: g.generation,
                    id: record::id_of(g.toplevel.rsplit('/').next().unwrap_or("")),
                    kernel_slot: boot.slot.unwrap_or_default(),
                    tries_left: if g.generation == boot.generation { 0 } else { 1 },
                    tries_done: 0,
                    status: if g.generation == boot.generation { Status::Good } else { Status::Trial },
                })
                .collect();
            entries.sort_by_key(|e| e.generation);
            entries.truncate(record::MAX_ENTRIES);
            notes.push("wrote a fresh boot-state record".to_string());
            let mut last_good = [0, 0];
            last_good[boot.slot.map_or(0, |s| s.index())] = boot.generation;
            Record {
                seq: 1,
                default_gen: boot.generation,
                booted_gen: boot.generation,
                last_good,
                pending_slot: Default::default(),
                entries,
            }
        }
        (_, Ok(mut r)) => {
            r.booted_gen = boot.generation;
            mobix_bootctl::counting::bless(&r)
        }
    };
    match state::write(loc, &next) {
        Ok(()) => notes.insert(0, format!("generation {} is good", boot.generation)),
        Err(e) => notes.insert(0, format!("could not record it: {e}")),
    }
    if let Some(slot) = boot.slot {
        match sys::find_partition("misc") {
            Some(misc) => notes.push(state::mark_slot_successful(&misc, slot).unwrap_or_else(|e| e)),
            None => notes.push("no misc partition".into()),
        }
    }
    notes.join("; ")
}

/// Where programs are found: the software tree (packages and overlays), then busybox.
pub const PATH: &str = "/run/current-system/sw/bin:/run/current-system/sw/sbin:/bin";

/// Makes the generation current, under either init: /run/current-system; each entry of
/// its /etc linked into /etc (but those `keep_out` names, which the caller writes); /etc/mtab;
/// the entries of the software tree's lib/ linked into /lib, so that Debian's programs find
/// their loader (/lib/ld-linux-aarch64.so.1) and libraries where they expect them; and
/// /lib/firmware, where the kernel's firmware loader looks.
pub fn link_generation(top: &Path, keep_out: &dyn Fn(&std::ffi::OsStr) -> bool) -> Result<()> {
    let io = |what: &str, e: std::io::Error| format!("{what}: {e}");
    std::fs::create_dir_all("/run").map_err(|e| io("creating /run", e))?;
    let _ = std::fs::remove_file("/run/current-system");
    symlink(top, "/run/current-system").map_err(|e| io("linking /run/current-system", e))?;
    std::fs::create_dir_all("/etc").map_err(|e| io("creating /etc", e))?;
    let etc = top.join("etc");
    let rd = std::fs::read_dir(&etc).map_err(|e| io(&format!("reading {}", etc.display()), e))?;
    for e in rd.flatten().filter(|e| !keep_out(&e.file_name())) {
        let dst = Path::new("/etc").join(e.file_name());
        let _ = std::fs::remove_file(&dst);
        symlink(Path::new("/run/current-system/etc").join(e.file_name()), &dst)
            .map_err(|e| io("populating /etc", e))?;
    }
    let _ = std::fs::remove_file("/etc/mtab");
    let _ = symlink("../proc/self/mounts", "/etc/mtab");
    std::fs::create_dir_all("/lib").map_err(|e| io("creating /lib", e))?;
    if top.join("firmware").exists() {
        let _ = std::fs::remove_file("/lib/firmware");
        symlink("/run/current-system/firmware", "/lib/firmware").map_err(|e| io("linking /lib/firmware", e))?;
    }
    if let Ok(rd) = std::fs::read_dir(top.join("sw/lib")) {
        for e in rd.flatten() {
            let dst = Path::new("/lib").join(e.file_name());
            if e.file_name() != "firmware" && std::fs::symlink_metadata(&dst).is_err() {
                symlink(Path::new("/run/current-system/sw/lib").join(e.file_name()), &dst)
                    .map_err(|e| io("populating /lib", e))?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn args_are_checked() {
        let a = |v: &[&str]| parse(&v.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        assert!(a(&["--generation", "3", "--toplevel", "/mobix/store/x"]).is_ok());
        assert!(a(&["--generation", "x", "--toplevel", "/t"]).is_err());
        assert!(a(&["--bogus"]).is_err());
    }
}
