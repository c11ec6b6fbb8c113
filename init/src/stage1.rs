//! Stage-1: from the initramfs to the chosen generation's init.

use crate::console::say;
use crate::debugshell;
use crate::screen::Painter;
use crate::state;
use crate::sys::{self, Result};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// `etc/mobix/stage1.json` and `/mobix/generations/<n>.json`: the host writes them with
/// these very types.
use mobix_bootctl::console::Event;
use mobix_bootctl::contract::{BootMode, Generation, Slot, Stage1 as Config, STAGE1_FILE};
use mobix_bootctl::screen::{Label, Scene};

const SYSROOT: &str = "/sysroot";
const SYSTEM_MOUNT: &str = "/sysroot/run/mobix/system";

pub fn run() -> Result<()> {
    sys::mount("proc", "/proc", Some("proc"), 0, None)?;
    sys::mount("sysfs", "/sys", Some("sysfs"), 0, None)?;
    sys::mount("devtmpfs", "/dev", Some("devtmpfs"), 0, Some("mode=0755"))?;
    sys::attach_console("/dev/console")?;
    let t0 = Instant::now();
    let started_ms = sys::uptime_ms();
    let cfg: Config =
        serde_json::from_slice(&std::fs::read(STAGE1_FILE).map_err(|e| format!("reading {STAGE1_FILE}: {e}"))?)
            .map_err(|e| format!("parsing {STAGE1_FILE}: {e}"))?;
    let cmdline = sys::kernel_cmdline();
    let slot = sys::running_slot(&cmdline);
    say(&format!(
        "stage-1 on kernel {} (console {}, slot {})",
        cfg.kernel_release,
        cfg.config.console,
        slot.map_or("-".to_string(), |s| s.to_string())
    ));
    let mut loaded = 0;
    for m in &cfg.modules {
        if sys::load_module(Path::new(m))? {
            loaded += 1;
        }
    }
    say(&format!("loaded {loaded} modules"));
    let device = if cfg.config.device.is_empty() { "this phone" } else { cfg.config.device.as_str() };
    let screen = Painter::start(device, cfg.screen_modules.clone());
    let boot_screen = |generation: Option<Label>, doing: &str| Scene::Boot {
        device: device.to_string(),
        generation,
        doing: doing.to_string(),
    };
    screen.show(boot_screen(None, "looking for the system partition"));
    let mut usb_if = None;
    if let Some(u) = &cfg.config.usb_network {
        // Before anything that can fail: a phone whose system does not come up can still
        // be reached over USB.
        match crate::usbnet::start(u) {
            Ok(Some(ifname)) => {
                say(&format!("USB network on {ifname}: this phone is {}", mobix_bootctl::contract::USB_PHONE_ADDRESS));
                usb_if = Some(ifname);
            }
            Ok(None) => {
                say(&format!("no USB device controller within {}s: no USB network", crate::usbnet::UDC_WAIT.as_secs()))
            }
            Err(e) => say(&format!("warning: no USB network: {e}")),
        }
    }
    let dev = sys::wait_for_partition(&cfg.config.system_partition, Duration::from_secs(15))?;
    sys::mount("tmpfs", SYSROOT, Some("tmpfs"), 0, Some("mode=0755"))?;
    sys::mount(&dev.to_string_lossy(), SYSTEM_MOUNT, Some(cfg.config.filesystem.name()), libc::MS_RDONLY, None)?;
    say(&format!("mounted {} ({}) read-only", dev.display(), cfg.config.system_partition));
    let gens = state::read_generations(Path::new(SYSTEM_MOUNT).join("mobix/generations").as_path())?;
    if sys::cmdline_has(&cmdline, "mobix.debug-shell") {
        say("debug shell (mobix.debug-shell): `exit` goes on booting");
        let why = "mobix.debug-shell is on the kernel command line; `exit` in the shell goes on booting";
        screen.show(shell_scene(device, "Debug shell", why, usb_if.as_deref()));
        shell(&gens, usb_if.as_deref());
    }
    // The PIN before the choice: a phone left at the PIN screen has spent no trial's try.
    let mut unlock_host_key = None;
    if let Some(enc) = &cfg.config.encryption {
        let remote = cfg.config.remote_unlock.as_ref().map(|r| crate::unlock::Remote {
            cfg: r,
            usb_if: usb_if.as_deref(),
            busybox: usb_if.as_ref().and_then(|_| busybox(&gens)),
        });
        match crate::unlock::open_state(enc, &cfg.crypt_modules, &screen, remote) {
            Ok(key) => unlock_host_key = key,
            Err(why) => {
                screen.show(shell_scene(device, "Your data cannot be opened", &why, usb_if.as_deref()));
                rescue_with_system(&why, &gens, usb_if.as_deref())
            }
        }
    }
    let loc = state::Location { device: dev.clone(), offset: cfg.config.state_offset };
    let (mut boot, notice) = match pick(&cfg, &gens, &loc, slot, &cmdline, &screen) {
        Ok(b) => b,
        Err(why) => {
            screen.show(shell_scene(device, "Nothing bootable", &why, usb_if.as_deref()));
            rescue_with_system(&why, &gens, usb_if.as_deref())
        }
    };
    boot.clock.stage1_start_ms = started_ms;
    boot.unlock_host_key = unlock_host_key;
    let chosen = gens.iter().find(|g| g.generation == boot.generation).expect("picked from gens").clone();
    let label = label(&chosen);
    screen.show(match notice {
        Some((title, text)) => Scene::Notice { device: device.to_string(), title, text, generation: Some(label) },
        None => boot_screen(Some(label), &format!("starting generation {}", chosen.generation)),
    });
    sys::mount(&format!("{SYSTEM_MOUNT}/mobix"), &format!("{SYSROOT}/mobix"), None, libc::MS_BIND, None)?;
    let init = format!("{}/init", chosen.toplevel);
    if !exists_in(Path::new(SYSROOT), &init) {
        return Err(format!("generation {} has no init at {init}", chosen.generation));
    }
    std::fs::create_dir_all(format!("{SYSROOT}/run/mobix")).map_err(|e| format!("creating /run/mobix: {e}"))?;
    // The last screen drawn before the generation's init replaces this program.
    screen.finish(Duration::from_secs(3));
    boot.clock.stage1_done_ms = sys::uptime_ms();
    let json = serde_json::to_vec_pretty(&boot).map_err(|e| e.to_string())?;
    std::fs::write(format!("{SYSROOT}{}", state::BOOT_FILE), json).map_err(|e| format!("writing boot.json: {e}"))?;
    for d in ["/dev", "/proc", "/sys"] {
        sys::mount(d, &format!("{SYSROOT}{d}"), None, libc::MS_MOVE, None)?;
    }
    say(&format!("stage-1 done in {:.2}s", t0.elapsed().as_secs_f64()));
    switch_root(&init, &chosen)
}

/// Chooses the generation to boot and persists what that costs (a trial's try) before
/// anything of it runs.
fn pick(
    cfg: &Config,
    gens: &[Generation],
    loc: &state::Location,
    slot: Option<Slot>,
    cmdline: &str,
    screen: &Painter,
) -> std::result::Result<(state::Boot, Option<(String, String)>), String> {
    use mobix_bootctl::console::Chosen;
    use mobix_bootctl::counting::{self, Decision};
    let compatible: Vec<u32> = gens.iter().filter(|g| g.runs_under(&cfg.config)).map(|g| g.generation).collect();
    let record = match state::read(loc) {
        Ok(r) => Some(r),
        Err(why) => {
            say(&format!("warning: boot-state record unreadable: {why}"));
            None
        }
    };
    let boot = |generation: u32, mode: BootMode| state::Boot {
        generation,
        toplevel: gens.iter().find(|g| g.generation == generation).map(|g| g.toplevel.clone()).unwrap_or_default(),
        mode,
        state: Some(loc.clone()),
        slot,
        clock: Default::default(),
        fallback: None,
        unlock_host_key: None,
    };
    let keys = sys::key_devices();
    let menu_key = cfg.config.menu_key;
    let held = sys::key_held(&keys, menu_key.code());
    if held {
        let name = match menu_key {
            mobix_bootctl::contract::MenuKey::VolumeDown => "volume down",
            mobix_bootctl::contract::MenuKey::VolumeUp => "volume up",
        };
        say(&format!("{name} is held: generation menu"));
    }
    let wants_menu = sys::cmdline_has(cmdline, "mobix.menu")
        || held
        || (cfg.config.menu_timeout_ms > 0 && {
            let volume = if sys::has_volume_key(&keys) { " (or a volume key)" } else { "" };
            say(&format!(
                "press a key{volume} within {:.1}s for the generation menu",
                cfg.config.menu_timeout_ms as f64 / 1000.0
            ));
            sys::key_within(Duration::from_millis(cfg.config.menu_timeout_ms as u64), &keys)
        });
    if wants_menu {
        let idle = std::time::Duration::from_secs(cfg.config.menu_idle_s.into());
        if let Some(g) = menu(gens, &compatible, record.as_ref(), &keys, idle, screen) {
            say(&format!("generation {g} chosen by hand (its status is left as it is)"));
            crate::console::report(&Event::Chosen { generation: g, status: Chosen::Manual, tries_left: 0 });
            return Ok((boot(g, BootMode::Manual), None));
        }
    }
    let (decision, next) = counting::select(record.as_ref(), &compatible, slot.unwrap_or(Slot::A));
    if let (Some(before), Some(after)) = (&record, &next) {
        for (b, a) in before.entries.iter().zip(&after.entries) {
            if let (false, mobix_bootctl::record::Status::Bad(why)) = (b.status.is_bad(), a.status) {
                say(&format!("generation {} is now bad ({})", a.generation, why.name()));
            }
        }
    }
    match decision {
        Decision::Boot { generation, trial } => {
            let tries_left = next
                .as_ref()
                .or(record.as_ref())
                .and_then(|r| r.entries.iter().find(|e| e.generation == generation))
                .map_or(0, |e| e.tries_left);
            if let Some(n) = &next {
                if let Err(e) = state::write(loc, n) {
                    if trial {
                        return Err(format!("cannot record the try of trial generation {generation}: {e}"));
                    }
                    say(&format!("warning: cannot update the boot-state record: {e}"));
                }
            }
            let latest = next.as_ref().or(record.as_ref());
            let notice = latest.and_then(|r| {
                say(&counting::fallback_words(r, generation)?);
                let (title, text) = counting::fallback_notice(r, generation)?;
                Some(mobix_bootctl::contract::FallbackNotice { from: r.default_gen, title, text })
            });
            let status = if trial { Chosen::Trial } else { Chosen::Good };
            crate::console::report(&Event::Chosen { generation, status, tries_left });
            let mut b = boot(generation, if trial { BootMode::Trial } else { BootMode::Good });
            // The running system's record of the fallback (/run/mobix/boot.json).
            b.fallback = notice.clone();
            Ok((b, notice.map(|n| (n.title, n.text))))
        }
        Decision::Degraded { generation } => {
            let words = "the boot-state record is unreadable: the newest generation boots, nothing is counted";
            say(words);
            crate::console::report(&Event::Chosen { generation, status: Chosen::Degraded, tries_left: 0 });
            let notice = ("Boot-state record unreadable".to_string(), words.to_string());
            Ok((boot(generation, BootMode::Degraded), Some(notice)))
        }
        Decision::Rescue { why } => {
            let latest = next.as_ref().or(record.as_ref());
            if let (Some(s), Some(r)) = (slot, latest) {
                if let Some(other) = counting::slot_to_return_to(r, s) {
                    return Err(return_to_slot(loc, next.as_ref(), other, &why));
                }
            }
            Err(why)
        }
    }
}

/// Undoes a kernel update whose generations all failed: records what was learned, makes
/// `other` the active slot in misc and restarts into it. Returns only on failure, with
/// the reason for the rescue shell.
fn return_to_slot(
    loc: &state::Location,
    next: Option<&mobix_bootctl::record::Record>,
    other: Slot,
    why: &str,
) -> String {
    let letter = other.letter();
    if let Some(n) = next {
        if let Err(e) = state::write(loc, n) {
            say(&format!("warning: cannot update the boot-state record: {e}"));
        }
    }
    let Some(misc) = sys::find_partition("misc") else {
        return format!("{why}; no misc partition to switch back to slot {letter}");
    };
    if let Err(e) = state::switch_slot(&misc, other) {
        return format!("{why}; switching back to slot {letter} failed: {e}");
    }
    let why = format!("{why}; its kernel booted a good generation before");
    crate::console::report(&Event::SlotSwitch { slot: other, why });
    sys::reboot()
}

/// The generation menu, on the screen and the console: every generation on the partition
/// with its status, newest first. Volume keys (or arrows) move, power (or Enter) boots the
/// selected one; on the console a number and Enter boots that one, Enter alone leaves it to
/// the automatic choice, as does `idle` without a key. Returns the generation chosen by hand.
fn menu(
    gens: &[Generation],
    compatible: &[u32],
    record: Option<&mobix_bootctl::record::Record>,
    keys: &[std::fs::File],
    idle: Duration,
    screen: &Painter,
) -> Option<u32> {
    use mobix_bootctl::record::Status;
    use mobix_bootctl::screen::{Input, Menu, MenuRow, Step};
    let rows = gens
        .iter()
        .map(|g| {
            let e = record.and_then(|r| r.entries.iter().find(|e| e.generation == g.generation));
            let state = match e.map(|e| e.status) {
                Some(Status::Trial) => format!("trial, {} tries left", e.map_or(0, |e| e.tries_left)),
                Some(Status::Bad(why)) => format!("bad ({})", why.name()),
                Some(s) => s.name().to_string(),
                None => "unknown".into(),
            };
            let selectable = compatible.contains(&g.generation);
            MenuRow {
                generation: label(g),
                state,
                selectable,
                note: if selectable { String::new() } else { "other kernel".into() },
                default: record.is_some_and(|r| r.default_gen == g.generation),
            }
        })
        .collect();
    let mut m = Menu::new(rows);
    let device = screen.device();
    say("generations on this phone:");
    for r in m.rows() {
        let kernel = if r.selectable { "" } else { ", other kernel" };
        let g = gens.iter().find(|g| g.generation == r.generation.number).map_or("", |g| g.toplevel.as_str());
        say(&format!("  {:>3}  {g}  ({}{kernel})", r.generation.number, r.state));
    }
    say("choose a generation (number, Enter for the automatic choice; volume keys move, power boots):");
    let idle_s = idle.as_secs() as u32;
    screen.show(m.scene(device, idle_s));
    let _raw = sys::RawConsole::new();
    let mut typed = String::new();
    let mut last = Instant::now();
    loop {
        let left = idle.saturating_sub(last.elapsed());
        let input = if left.is_zero() {
            say(&format!("nothing pressed for {idle_s}s: the automatic choice"));
            Input::Idle
        } else {
            match sys::next_input(left, keys) {
                None => continue,
                Some(sys::Input::Key(code)) => match code {
                    sys::KEY_VOLUMEUP | sys::KEY_UP => Input::Up,
                    sys::KEY_VOLUMEDOWN | sys::KEY_DOWN => Input::Down,
                    sys::KEY_POWER | sys::KEY_ENTER => Input::Select,
                    _ => continue,
                },
                Some(sys::Input::Tap(..) | sys::Input::Remote(_)) => continue,
                Some(sys::Input::Console(bytes)) => {
                    last = Instant::now();
                    let mut line = None;
                    for b in bytes {
                        match b {
                            b'\r' | b'\n' => line = Some(std::mem::take(&mut typed)),
                            b'0'..=b'9' => typed.push(b as char),
                            _ => {}
                        }
                    }
                    match line {
                        None => continue,
                        Some(l) if l.is_empty() => return None,
                        Some(l) => match l.parse() {
                            Ok(n) => Input::Number(n),
                            Err(_) => return None,
                        },
                    }
                }
            }
        };
        last = Instant::now();
        let before = m.selected();
        match m.press(input) {
            Step::Boot(g) => return Some(g),
            Step::Automatic => return None,
            Step::Stay => {
                if let Input::Number(n) = input {
                    say(&format!("no generation {n} to boot with this kernel; taking the automatic choice"));
                    return None;
                }
                if m.selected() != before {
                    screen.show(m.scene(device, idle_s));
                }
            }
        }
    }
}

/// A generation as the screen names it.
fn label(g: &Generation) -> Label {
    Label { number: g.generation, date: mobix_bootctl::screen::date(g.created) }
}

/// The debug or rescue shell's screen: why, and how to reach the phone.
fn shell_scene(device: &str, title: &str, why: &str, usb_if: Option<&str>) -> Scene {
    let mut reach = vec!["A shell is on the serial console.".to_string()];
    if usb_if.is_some() {
        let phone = mobix_bootctl::contract::USB_PHONE_ADDRESS;
        reach.push(format!("Over USB this phone is {phone}: on the host, telnet {phone}"));
    }
    reach.push("Type reboot -f in the shell to try again.".into());
    Scene::Shell { device: device.to_string(), title: title.to_string(), why: why.to_string(), reach }
}

/// Nothing bootable: say why and give the user a shell (on the console, and over USB
/// where the USB network is up) with a generation's busybox.
fn rescue_with_system(why: &str, gens: &[Generation], usb_if: Option<&str>) -> ! {
    crate::console::report(&Event::Rescue { why: why.to_string() });
    say("rescue shell (type `reboot -f` to try again)");
    shell(gens, usb_if);
    crate::console::rescue(why)
}

/// The debug or rescue shell: busybox from the newest generation that has one (else from
/// any store path), on the console until it exits; udhcpd and telnetd on the USB network
/// meanwhile.
fn shell(gens: &[Generation], usb_if: Option<&str>) {
    let Some(busybox) = busybox(gens) else {
        say("no busybox on the system partition: no shell");
        return;
    };
    let _servers = usb_if.map(|i| debugshell::usb_services(&busybox, i));
    debugshell::console_shell(&busybox);
}

/// A busybox on the system partition: the newest generation's that has one, else any
/// store path's.
fn busybox(gens: &[Generation]) -> Option<PathBuf> {
    // A generation's `sw` is an absolute link as the booted system sees it.
    let sw = |g: &Generation| {
        let link = std::fs::read_link(format!("{SYSTEM_MOUNT}{}/sw", g.toplevel)).ok()?;
        Some(Path::new(SYSTEM_MOUNT).join(link.strip_prefix("/").ok()?))
    };
    let mut newest_first: Vec<&Generation> = gens.iter().collect();
    newest_first.sort_by_key(|g| std::cmp::Reverse(g.generation));
    let trees: Vec<PathBuf> = newest_first.into_iter().filter_map(sw).collect();
    debugshell::find_busybox(&Path::new(SYSTEM_MOUNT).join("mobix/store"), &trees)
}

/// Whether `path` exists inside the tree at `root`, following symlinks (absolute ones
/// relative to `root`, as they will resolve after switch_root).
fn exists_in(root: &Path, path: &str) -> bool {
    let mut p = PathBuf::from(path);
    for _ in 0..16 {
        let host = root.join(p.strip_prefix("/").unwrap_or(&p));
        match std::fs::symlink_metadata(&host) {
            Ok(m) if m.file_type().is_symlink() => match std::fs::read_link(&host) {
                Ok(t) if t.is_absolute() => p = t,
                Ok(t) => p = p.parent().unwrap_or(Path::new("/")).join(t),
                Err(_) => return false,
            },
            Ok(_) => return true,
            Err(_) => return false,
        }
    }
    false
}

/// Frees the initramfs, makes /sysroot the root and executes the generation's init.
fn switch_root(init: &str, g: &Generation) -> Result<()> {
    std::env::set_current_dir(SYSROOT).map_err(|e| format!("chdir {SYSROOT}: {e}"))?;
    free_initramfs();
    sys::mount(".", "/", None, libc::MS_MOVE, None)?;
    sys::chroot(Path::new("."))?;
    std::env::set_current_dir("/").map_err(|e| format!("chdir /: {e}"))?;
    use std::os::unix::process::CommandExt;
    let err = std::process::Command::new(init)
        .arg0(init)
        .args(["stage2", "--generation", &g.generation.to_string(), "--toplevel", &g.toplevel])
        .exec();
    Err(format!("executing {init}: {err}"))
}

/// Deletes the initramfs's files (everything but the new root) so its memory is returned.
fn free_initramfs() {
    if let Ok(rd) = std::fs::read_dir("/") {
        for e in rd.flatten() {
            let p = e.path();
            if p == Path::new(SYSROOT) {
                continue;
            }
            let _ = if p.is_dir() { std::fs::remove_dir_all(&p) } else { std::fs::remove_file(&p) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifests_without_a_kernel_still_parse() {
        let g: Generation = serde_json::from_str(r#"{"generation": 2, "toplevel": "/mobix/store/x"}"#).unwrap();
        assert_eq!((g.generation, g.kernel.as_str()), (2, ""));
    }

    #[test]
    fn the_phone_reads_the_entries_the_host_writes() {
        let dir = std::env::temp_dir().join(format!("mobix-gens-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let good = Generation {
            generation: 4,
            toplevel: "/mobix/store/0123456789abcdfghijklmnpqrsvwxyz-mobix-system".into(),
            kernel: "/mobix/store/k-kernel/Image".into(),
            cmdline: "console=ttyAMA0".into(),
            created: 0,
        };
        // As the host's system-image builder writes them: pretty JSON and a newline.
        std::fs::write(dir.join("4.json"), serde_json::to_string_pretty(&good).unwrap() + "\n").unwrap();
        let escaping = Generation { generation: 5, toplevel: "/mobix/store/../../etc".into(), ..good.clone() };
        std::fs::write(dir.join("5.json"), serde_json::to_string_pretty(&escaping).unwrap()).unwrap();
        std::fs::write(dir.join("6.json"), "{not json").unwrap();
        let got = crate::state::read_generations(&dir).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(got, vec![good]);
    }
}
