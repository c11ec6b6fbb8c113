//! The phone on the desk: the built images booted in QEMU aarch64.
//!
//! Pipeline stage: vm. Input: the out directory of a build (manifest, boot.img,
//! system.img) and the device profile; output: a GPT disk laid out as the profile says,
//! and a QEMU run on it. The kernel, ramdisk, dtb and command line come out of boot.img
//! through mobix's own boot image reader, as a bootloader would take them; the system
//! partition is written from the sparse image through mobix's own sparse reader.
//!
//! [`disk`] is the phone's GPT disk, [`prepare`] lays out its files in the out directory
//! (and locks them while a phone runs), [`qemu`] its machine and bootloaders (mobix's A/B
//! model and U-Boot); this file boots it power cycle after power cycle and judges what the
//! console says; [`scenario`] runs the fallback scenarios; [`fastboot`] is the phone in
//! fastboot mode.

use crate::format::bootimg::BootImage;
use crate::format::gpt;
use crate::format::misc;
use crate::format::sparse;
use crate::profile::Profile;
use crate::util::{self, Fail};
use anyhow::{Context, Result};
use mobix_bootctl::contract::{slot_letter, Slot};
use std::fs;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

mod disk;
pub mod fastboot;
mod prepare;
mod qemu;
mod qmp;
pub mod scenario;

pub use disk::*;
pub use prepare::*;
pub use qemu::*;
pub use qmp::*;

/// Kernel argument asking stage-2 to power off after boot-complete.
pub const POWEROFF_ARG: &str = "mobix.poweroff";

/// How one boot of the emulated phone ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Ending {
    /// Reached boot-complete and powered off (or was stopped there).
    Complete,
    /// The guest restarted (a failed trial, a kernel panic): the next power cycle follows.
    Rebooted,
    /// The guest powered off without reaching boot-complete.
    PoweredOff,
    /// Stage-1 found nothing to boot and dropped to its rescue shell.
    Rescue,
    /// The bootloader found nothing to boot.
    NoBoot,
    /// Nothing happened within the time allowed: the battery is pulled.
    Timeout,
    /// QEMU ended on its own (crashed, or quit by the user).
    Exited,
}

/// One power cycle of the emulated phone, as the serial console told it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Boot {
    /// The slot U-Boot (or the emulated bootloader) chose; its letter in reports.
    #[serde(serialize_with = "slot_letter::option")]
    pub slot: Option<Slot>,
    pub generation: Option<u32>,
    /// trial, good, degraded or manual: how stage-1 chose the generation.
    pub status: Option<String>,
    pub tries_left: Option<u8>,
    pub toplevel: Option<String>,
    pub health_failed: bool,
    pub trial_timeout: bool,
    pub kernel_panic: bool,
    pub ending: Ending,
    /// What the running system's boot record says this boot fell back from (stage-2 reads
    /// `/run/mobix/boot.json` at its success point and says so on the console).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fell_back_from: Option<u32>,
    /// The reason for the ending in words (the bootloader's or stage-1's message).
    pub note: String,
    pub seconds: f64,
    /// Where the boot's time went, by the phone's clock (after a success point).
    pub times: Option<mobix_bootctl::console::BootTimes>,
    /// What stage-1 showed on the screen, in order.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub scenes: Vec<mobix_bootctl::screen::Scene>,
    /// The screenshots kept of this boot (`mobix test --screenshots`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub screenshots: Vec<PathBuf>,
}

impl Boot {
    /// A boot nothing is known of yet (it ends in a timeout unless the console says more).
    pub fn unseen() -> Boot {
        Boot {
            slot: None,
            generation: None,
            status: None,
            tries_left: None,
            toplevel: None,
            health_failed: false,
            trial_timeout: false,
            kernel_panic: false,
            ending: Ending::Timeout,
            fell_back_from: None,
            note: String::new(),
            seconds: 0.0,
            times: None,
            scenes: Vec::new(),
            screenshots: Vec::new(),
        }
    }

    /// "health check failed (health check usb failed (exit status: 1))", from the console.
    fn health_words(&self) -> String {
        match self.note.as_str() {
            "" => "health check failed".into(),
            why => format!("health check failed ({why})"),
        }
    }

    /// One line for the user: slot, generation, tries, outcome.
    pub fn summary(&self) -> String {
        let slot = self.slot.map(|c| format!("slot {c}, ")).unwrap_or_default();
        let generation = match (self.generation, &self.status) {
            (Some(g), Some(st)) if st == "trial" => {
                format!("generation {g} (trial, {} tries left)", self.tries_left.unwrap_or(0))
            }
            (Some(g), Some(st)) => format!("generation {g} ({st})"),
            _ => "no generation".into(),
        };
        let outcome = match self.ending {
            Ending::Complete => "boot-complete".to_string(),
            Ending::Rebooted if self.health_failed => format!("{}, rebooted", self.health_words()),
            _ if self.health_failed => {
                let why = match self.status.as_deref() {
                    Some("manual") => "it was chosen by hand",
                    Some("degraded") => "nothing is counted",
                    _ => "the generation was already good",
                };
                format!("{}; not rebooted ({why}), no boot-complete", self.health_words())
            }
            _ if self.trial_timeout => "no success point in time, rebooted".into(),
            _ if self.kernel_panic => "kernel panic, rebooted".into(),
            Ending::Rebooted if self.note.starts_with("SLOT-SWITCH") => {
                "nothing to boot with this slot's kernel: back to the other slot, rebooted".into()
            }
            Ending::Rescue => format!("rescue shell: {}", self.note),
            Ending::NoBoot => format!("bootloader: {}", self.note),
            e => format!("{e:?}").to_lowercase(),
        };
        format!("{slot}{generation}: {outcome} ({:.1}s)", self.seconds)
    }
}

/// Runs one power cycle: the bootloader, then QEMU with the serial console captured into
/// `log` until the guest powers off or restarts, or `timeout` passes.
pub fn boot_once(
    profile: &Profile,
    p: &Prepared,
    extra: &str,
    timeout: Duration,
    answers: &[Answer],
    screenshots: Option<&Path>,
    log: &mut fs::File,
) -> Result<Boot> {
    let t0 = Instant::now();
    let mut boot = Boot::unseen();
    let (mut cmd, expect) = match &p.firmware {
        Firmware::Model => {
            let loaded = match bootloader(profile, p)? {
                Ok(l) => l,
                Err(why) => {
                    writeln!(log, "# bootloader: {why}")?;
                    boot.ending = Ending::NoBoot;
                    boot.note = why;
                    return Ok(boot);
                }
            };
            boot.slot = loaded.slot;
            (qemu_command(profile, p, &loaded, &loaded.cmdline_with(extra))?, None)
        }
        Firmware::UBoot { bin } => {
            let expect = if profile.device.is_ab() { Some(model_choice(p)?) } else { None };
            (qemu_u_boot(profile, p, bin, extra)?, expect)
        }
    };
    let mut seen = UBootSaw::default();
    let wants_qmp = screenshots.is_some() || answers.iter().any(|a| !matches!(a.act, Act::Type(_)));
    let sock = p.dir.join("qmp.sock");
    if wants_qmp {
        // QMP, to press the phone's keys and look at its screen (a socket path has at most
        // 107 bytes).
        anyhow::ensure!(sock.as_os_str().len() < 108, "{} is too long for a socket path", sock.display());
        let _ = fs::remove_file(&sock);
        cmd.arg("-qmp").arg(format!("unix:{},server=on,wait=off", sock.display()));
    }
    cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).process_group(0);
    writeln!(log, "# {}", util::show_command(&cmd))?;
    let mut child =
        cmd.spawn().map_err(|e| util::user_error(e, "starting qemu-system-aarch64 (package qemu-system-arm)"))?;
    // QEMU has its own process group (so a timeout can kill all of it); if mobix itself is
    // interrupted, take that group down too instead of leaving QEMU running.
    let _guard = interrupt::KillGroupOnSignal::new(child.id());
    let mut stdin = child.stdin.take();
    let rx = lines_of(&mut child);
    let mut answered = vec![false; answers.len()];
    let mut qmp: Option<Qmp> = None;
    let mut with_qmp = |f: &mut dyn FnMut(&mut Qmp) -> Result<()>| -> Result<()> {
        if qmp.is_none() {
            qmp = Some(Qmp::connect(&sock)?);
        }
        f(qmp.as_mut().expect("connected above"))
    };
    let mut tail: Vec<String> = Vec::new();
    let deadline = t0 + timeout;
    loop {
        let now = Instant::now();
        if now >= deadline {
            boot.note = format!("nothing more within {}s", timeout.as_secs());
            if boot.ending != Ending::Complete {
                boot.ending = Ending::Timeout;
            }
            break;
        }
        match rx.recv_timeout(deadline - now) {
            Ok(line) => {
                writeln!(log, "{line}")?;
                tail.push(line.clone());
                if tail.len() > 30 {
                    tail.remove(0);
                }
                scan(&line, &mut boot);
                if let (Some(dir), Some(what)) = (screenshots, screen_moment(&line)) {
                    // Numbered on from the boots before in the same directory.
                    let n = fs::read_dir(dir).map(|d| d.count()).unwrap_or(0) + 1;
                    let to = dir.join(format!("{n:02}-{what}.png"));
                    // At boot-complete the screen has long held still (and with
                    // mobix.poweroff QEMU is about to end): one dump.
                    let settle = what != "complete";
                    match with_qmp(&mut |q| {
                        if settle {
                            q.settled_screendump(&to, "png")
                        } else {
                            q.screendump(&to, "png")
                        }
                    }) {
                        Ok(()) => boot.screenshots.push(to),
                        Err(e) => writeln!(log, "# screenshot {} failed: {e:#}", to.display())?,
                    }
                }
                for (i, a) in answers.iter().enumerate() {
                    if answered[i] || !line.contains(&a.when) {
                        continue;
                    }
                    answered[i] = true;
                    let done = match &a.act {
                        Act::Type(text) => {
                            if let Some(w) = stdin.as_mut() {
                                let _ = w.write_all(text.as_bytes());
                                let _ = w.flush();
                            }
                            Ok(())
                        }
                        Act::Press(k) => with_qmp(&mut |q| {
                            q.press(k, 200)?;
                            // The next press is another one, not the same held longer.
                            std::thread::sleep(Duration::from_millis(400));
                            Ok(())
                        }),
                        Act::Hold(k) => with_qmp(&mut |q| q.key(k, true)),
                        Act::Release(k) => with_qmp(&mut |q| q.key(k, false)),
                        // The PPM to compare; a PNG of the same moment beside it to look at.
                        Act::Screenshot(to) => with_qmp(&mut |q| {
                            q.settled_screendump(to, "ppm")?;
                            q.screendump(&to.with_extension("png"), "png")
                        }),
                    };
                    if let Err(e) = done {
                        writeln!(log, "# {} failed: {e:#}", a.act.words())?;
                    }
                }
                if !matches!(p.firmware, Firmware::Model) {
                    seen.scan(&line, &mut boot);
                }
                if RESTART_LINES.iter().any(|l| line.contains(l)) {
                    boot.ending = Ending::Rebooted;
                } else if line.contains("reboot: Power down") && boot.ending != Ending::Complete {
                    boot.ending = Ending::PoweredOff;
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                let status = child.wait()?;
                if boot.kernel_panic && boot.ending == Ending::Timeout {
                    // panic=N restarts without a "reboot:" line; -no-reboot makes that an exit.
                    boot.ending = Ending::Rebooted;
                } else if boot.ending == Ending::Timeout {
                    // (A rescue ends the loop as soon as it is seen.)
                    boot.ending = Ending::Exited;
                    boot.note = format!("QEMU exited ({status})");
                }
                break;
            }
        }
        if boot.ending == Ending::Rescue {
            break;
        }
    }
    kill_group(&mut child);
    boot.seconds = t0.elapsed().as_secs_f64();
    if let Some(want) = expect {
        if let Err(why) = seen.agrees_with(&want) {
            writeln!(log, "# U-Boot and the model disagree: {why}")?;
            return Err(Fail::new(format!("U-Boot and mobix's model of its A/B rules disagree: {why}"))
                .hint("the model (src/vm, init/bootctl misc.rs) must follow U-Boot's ab_select; see the serial log")
                .into());
        }
    }
    if matches!(boot.ending, Ending::Timeout | Ending::Exited | Ending::Rescue | Ending::PoweredOff) {
        boot.note = format!("{}; the serial log ends with:\n{}", boot.note, tail.join("\n"));
    }
    Ok(boot)
}

/// What U-Boot's boot command printed (see [`u_boot_command`]).
#[derive(Default)]
struct UBootSaw {
    slot: Option<Slot>,
    no_slot: bool,
    /// The A/B metadata read back right after `ab_select`, as `md.b` printed it.
    misc: Vec<u8>,
    reading_misc: bool,
}

impl UBootSaw {
    fn scan(&mut self, line: &str, boot: &mut Boot) {
        if let Some(i) = line.find(UBOOT_MARK) {
            let rest = line[i + UBOOT_MARK.len()..].trim();
            if let Some(letter) = rest.strip_prefix("slot=") {
                self.slot = Slot::parse(letter.trim());
                boot.slot = self.slot;
            } else if rest == "no-slot" {
                self.no_slot = true;
                boot.ending = Ending::NoBoot;
                boot.note = "U-Boot's ab_select found no bootable slot".into();
            } else if rest == "misc:" {
                self.reading_misc = true;
            } else if rest == "bootm-failed" {
                boot.ending = Ending::NoBoot;
                boot.note = "U-Boot could not boot the slot's boot image".into();
            }
        } else if self.reading_misc {
            // `47000800: 61 00 00 00 42 43 41 42 01 02 00 00 9f 00 7f 00  a...BCAB........`
            let Some((_, bytes)) = line.split_once(": ") else { return };
            let hex = bytes.split("  ").next().unwrap_or("");
            self.misc.extend(hex.split_whitespace().filter_map(|b| u8::from_str_radix(b, 16).ok()));
            if self.misc.len() >= misc::CONTROL_SIZE {
                self.reading_misc = false;
            }
        }
    }

    /// Whether U-Boot chose what the model chose and left the same bytes in misc.
    fn agrees_with(
        &self,
        want: &(std::result::Result<Slot, String>, [u8; misc::CONTROL_SIZE]),
    ) -> std::result::Result<(), String> {
        match (&want.0, self.slot, self.no_slot) {
            (Ok(m), Some(u), _) if *m == u => {}
            (Err(_), None, true) => return Ok(()),
            (m, u, _) => {
                let m = m.as_ref().map(|c| format!("slot {c}")).unwrap_or_else(|e| format!("no slot ({e})"));
                let u = u.map(|c| format!("slot {c}")).unwrap_or_else(|| "no slot".into());
                return Err(format!("U-Boot chose {u}, the model {m}"));
            }
        }
        if self.misc.len() < misc::CONTROL_SIZE {
            return Err("U-Boot did not print the A/B metadata it left in misc".into());
        }
        if self.misc[..misc::CONTROL_SIZE] != want.1[..] {
            let show = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<Vec<_>>().join(" ");
            return Err(format!(
                "misc after U-Boot: {}; after the model: {}",
                show(&self.misc[..misc::CONTROL_SIZE]),
                show(&want.1)
            ));
        }
        Ok(())
    }
}

/// What one serial line says about the boot: an event of the phone's init (one format,
/// `mobix_bootctl::console`), or the kernel's panic.
fn scan(line: &str, boot: &mut Boot) {
    use mobix_bootctl::console::{Event, Unlock};
    match Event::find(line) {
        Some(Event::Chosen { generation, status, tries_left }) => {
            boot.generation = Some(generation);
            boot.status = Some(status.name().to_string());
            boot.tries_left = Some(tries_left);
        }
        Some(Event::Complete { generation, toplevel, fell_back_from }) => {
            boot.generation = Some(generation);
            boot.toplevel = Some(toplevel);
            boot.fell_back_from = fell_back_from;
            boot.ending = Ending::Complete;
        }
        Some(Event::HealthFailed { why, .. }) => {
            boot.health_failed = true;
            // The first failure is the reason.
            if boot.note.is_empty() {
                boot.note = why.trim().to_string();
            }
        }
        Some(Event::TrialTimeout { .. }) => boot.trial_timeout = true,
        Some(e @ Event::SlotSwitch { .. }) => boot.note = e.line(),
        Some(Event::Rescue { why }) => {
            boot.note = format!("RESCUE: {why}");
            boot.ending = Ending::Rescue;
        }
        Some(Event::BootTimes(t)) => boot.times = Some(t),
        Some(Event::Screen(scene)) => boot.scenes.push(scene),
        // A boot that ends at the PIN screen says why it went no further.
        Some(Event::Unlock(Unlock::Ask(_))) => {
            boot.note =
                "stage-1 waits for the PIN of the encrypted state (type it on the phone's screen or console)".into()
        }
        Some(Event::Unlock(Unlock::Open { .. })) => boot.note.clear(),
        Some(Event::Unlock(Unlock::Wrong { failures, .. })) => {
            boot.note = format!("stage-1 refused the PIN ({failures} wrong in a row) and waits for the right one")
        }
        Some(Event::Unlock(_)) => {}
        None if line.contains("Kernel panic") => boot.kernel_panic = true,
        None => {}
    }
}

/// The serial console (QEMU's stdout and stderr), line by line.
fn lines_of(child: &mut Child) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel::<String>();
    for stream in [
        child.stdout.take().map(|s| Box::new(s) as Box<dyn Read + Send>),
        child.stderr.take().map(|s| Box::new(s) as Box<dyn Read + Send>),
    ]
    .into_iter()
    .flatten()
    {
        let tx = tx.clone();
        std::thread::spawn(move || {
            let mut r = BufReader::new(stream);
            let mut buf = Vec::new();
            while r.read_until(b'\n', &mut buf).map(|n| n > 0).unwrap_or(false) {
                let line = String::from_utf8_lossy(&buf).trim_end_matches(['\r', '\n']).to_string();
                if tx.send(line).is_err() {
                    break;
                }
                buf.clear();
            }
        });
    }
    rx
}

/// How a series of power cycles runs: what to append to every command line, how long one
/// boot may take, at most how many, what to type on the console, and the number the
/// first boot is reported with (boots before it in the same log).
pub struct Cycles<'a> {
    pub extra: &'a str,
    pub per_boot: Duration,
    pub max_boots: usize,
    pub answers: &'a [Answer],
    pub numbered_from: usize,
    /// Where to keep a PNG of each screen stage-1 draws and of boot-complete (numbered
    /// on across the boots).
    pub screenshots: Option<&'a Path>,
}

/// Power-cycles the phone until a boot completes, nothing is bootable, or the power
/// cycles are spent; a boot that restarts or hangs is followed by the next one.
pub fn boot_until_complete(
    profile: &Profile,
    p: &Prepared,
    c: &Cycles,
    log: &mut fs::File,
    progress: &dyn Fn(&str),
) -> Result<Vec<Boot>> {
    let mut boots = Vec::new();
    while boots.len() < c.max_boots {
        let n = c.numbered_from + boots.len() + 1;
        writeln!(log, "# power cycle {n}")?;
        let b = boot_once(profile, p, c.extra, c.per_boot, c.answers, c.screenshots, log)?;
        progress(&format!("boot {n}: {}", b.summary()));
        let again = matches!(b.ending, Ending::Rebooted | Ending::Timeout);
        boots.push(b);
        if !again {
            break;
        }
    }
    Ok(boots)
}

/// What `mobix test` saw.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TestOutcome {
    pub version: u32,
    pub passed: bool,
    pub generation: Option<u32>,
    pub toplevel: Option<String>,
    pub seconds: f64,
    pub serial_log: PathBuf,
    pub reason: String,
    /// The generation the phone fell back to by itself when the build's did not boot.
    pub fell_back_to: Option<u32>,
    /// Every power cycle, in order.
    pub boots: Vec<Boot>,
}

/// What became of generation `g` in `boots`, in words: "failed its health check 3 times".
pub fn failures_of(boots: &[Boot], g: u32) -> String {
    let mine: Vec<&Boot> = boots.iter().filter(|b| b.generation == Some(g)).collect();
    let count = |f: &dyn Fn(&Boot) -> bool| mine.iter().filter(|b| f(b)).count();
    let times = |n: usize| if n == 1 { "once".to_string() } else { format!("{n} times") };
    let mut what = Vec::new();
    for (n, words) in [
        (count(&|b| b.health_failed), "failed its health check"),
        (count(&|b| b.trial_timeout), "missed its success point"),
        (count(&|b| b.kernel_panic), "ended in a kernel panic"),
    ] {
        if n > 0 {
            what.push(format!("{words} {}", times(n)));
        }
    }
    match (mine.len(), what.is_empty()) {
        (0, _) => "never booted".into(),
        (n, true) => format!("booted {} without reaching boot-complete", times(n)),
        _ => what.join(" and "),
    }
}

/// The signal that ended the last [`run`] (SIGINT, SIGTERM, SIGHUP), if one did.
pub fn interrupted() -> Option<i32> {
    interrupt::caught()
}

mod interrupt {
    use std::sync::atomic::{AtomicI32, Ordering};

    static GROUP: AtomicI32 = AtomicI32::new(0);
    static CHILD: AtomicI32 = AtomicI32::new(0);
    static CAUGHT: AtomicI32 = AtomicI32::new(0);

    const SIGNALS: [libc::c_int; 3] = [libc::SIGINT, libc::SIGTERM, libc::SIGHUP];

    extern "C" fn on_signal_stop(sig: libc::c_int) {
        CAUGHT.store(sig, Ordering::SeqCst);
        let c = CHILD.load(Ordering::SeqCst);
        // SAFETY: kill is async-signal-safe.
        unsafe {
            if c > 0 {
                libc::kill(c, libc::SIGTERM);
            }
        }
    }

    /// Sets the disposition of SIGINT, SIGTERM and SIGHUP: a handler that only calls
    /// async-signal-safe functions, or SIG_DFL.
    fn on_signals(handler: libc::sighandler_t) {
        for s in SIGNALS {
            // SAFETY: the handler is async-signal-safe (or the default disposition).
            unsafe {
                libc::signal(s, handler);
            }
        }
    }

    pub fn caught() -> Option<i32> {
        Some(CAUGHT.load(Ordering::SeqCst)).filter(|s| *s != 0)
    }

    /// While alive, SIGINT, SIGTERM and SIGHUP end the process `pid` (QEMU quits cleanly on
    /// SIGTERM) and are remembered ([`caught`]) instead of ending mobix, so that what
    /// comes after the phone stopped (reading its record back) still runs.
    pub struct StopOnSignal;

    impl StopOnSignal {
        pub fn new(pid: u32) -> Self {
            CHILD.store(pid as i32, Ordering::SeqCst);
            on_signals(on_signal_stop as *const () as libc::sighandler_t);
            StopOnSignal
        }
    }

    impl Drop for StopOnSignal {
        fn drop(&mut self) {
            CHILD.store(0, Ordering::SeqCst);
            on_signals(libc::SIG_DFL);
        }
    }

    extern "C" fn on_signal(sig: libc::c_int) {
        let g = GROUP.load(Ordering::SeqCst);
        // SAFETY: killpg and _exit are async-signal-safe.
        unsafe {
            if g > 0 {
                libc::killpg(g, libc::SIGKILL);
            }
            libc::_exit(128 + sig);
        }
    }

    /// While alive, SIGINT, SIGTERM and SIGHUP kill the process group `pgid` and end mobix.
    pub struct KillGroupOnSignal;

    impl KillGroupOnSignal {
        pub fn new(pgid: u32) -> Self {
            GROUP.store(pgid as i32, Ordering::SeqCst);
            on_signals(on_signal as *const () as libc::sighandler_t);
            KillGroupOnSignal
        }
    }

    impl Drop for KillGroupOnSignal {
        fn drop(&mut self) {
            GROUP.store(0, Ordering::SeqCst);
            on_signals(libc::SIG_DFL);
        }
    }
}

/// Kills a child's whole process group (QEMU and anything it started).
fn kill_group(child: &mut Child) {
    // SAFETY: the child was started in its own process group (process_group(0)), whose id
    // is its pid; signalling it cannot reach mobix itself.
    unsafe {
        libc::killpg(child.id() as libc::pid_t, libc::SIGKILL);
    }
    let _ = child.wait();
}

/// Boots the prepared phone (power cycling it while it restarts by itself) and checks
/// that the build's generation reaches boot-complete.
pub fn test(
    profile: &Profile,
    p: &Prepared,
    timeout: Duration,
    screenshots: Option<&Path>,
    pin: Option<&str>,
    progress: &dyn Fn(&str),
) -> Result<TestOutcome> {
    let log_path = p.dir.join("serial.log");
    let mut log = fs::File::create(&log_path).with_context(|| format!("creating {}", log_path.display()))?;
    progress(&format!(
        "booting {} in QEMU (timeout {}s per boot, serial log {})",
        profile.codename,
        timeout.as_secs(),
        log_path.display()
    ));
    // The encrypted state's PIN, typed on the console whenever stage-1 asks for it (stage-1
    // does not echo it, and nothing here logs it).
    use mobix_bootctl::console::{Event, PinFor, Unlock};
    let answers: Vec<Answer> = (pin.iter())
        .flat_map(|pin| {
            [PinFor::Choose, PinFor::Again, PinFor::Unlock]
                .map(|f| Answer::new(Event::Unlock(Unlock::Ask(f)).line(), Act::Type(format!("{pin}\n"))))
        })
        .collect();
    let cycles = Cycles {
        extra: POWEROFF_ARG,
        per_boot: timeout,
        max_boots: 8,
        answers: &answers,
        numbered_from: 0,
        screenshots,
    };
    let boots = boot_until_complete(profile, p, &cycles, &mut log, progress)?;
    let last = boots.last().expect("at least one boot");
    let want_top = p.manifest.toplevel.phone_path();
    let mut outcome = TestOutcome {
        version: 2,
        passed: false,
        generation: last.generation,
        toplevel: last.toplevel.clone(),
        seconds: boots.iter().map(|b| b.seconds).sum(),
        serial_log: log_path,
        reason: String::new(),
        fell_back_to: None,
        boots: boots.clone(),
    };
    let want = p.manifest.generation;
    if last.ending == Ending::Complete && last.generation == Some(want) && last.toplevel.as_deref() == Some(&want_top) {
        outcome.passed = true;
        outcome.reason = "boot-complete".into();
    } else if let (Ending::Complete, Some(other)) = (last.ending, last.generation.filter(|g| *g != want)) {
        outcome.fell_back_to = Some(other);
        outcome.reason = format!(
            "generation {want} {}; the phone fell back to generation {other}, which is good",
            failures_of(&boots, want)
        );
    } else if last.ending != Ending::Complete {
        outcome.reason = format!("no boot-complete after {} power cycles; last: {}", boots.len(), last.note);
    } else {
        outcome.reason = format!(
            "booted generation {:?} toplevel {:?}, expected generation {want} toplevel {want_top}",
            last.generation, last.toplevel
        );
    }
    Ok(outcome)
}

/// What the kernel says as it restarts the machine: an orderly reboot, and a reset by
/// SysRq-B (Alt+SysRq+B on the emulated keyboard: the phone reset with no shutdown, as a
/// watchdog or a held power key resets one).
const RESTART_LINES: [&str; 2] = ["reboot: Restarting system", "sysrq: Resetting"];

/// Boots the prepared phone with the console on this terminal; a guest restart is a power
/// cycle through the bootloader again, a power-off (or quitting QEMU) ends it.
pub fn run(
    profile: &Profile,
    p: &Prepared,
    extra_cmdline: &str,
    progress: &dyn Fn(&str),
) -> Result<std::process::ExitStatus> {
    // More than an A/B bootloader's tries: a phone without slots would boot-loop forever.
    const MAX_PANICS: u32 = 10;
    let mut panics = 0;
    loop {
        let mut cmd = match &p.firmware {
            Firmware::Model => {
                let loaded = match bootloader(profile, p)? {
                    Ok(l) => l,
                    Err(why) => return Err(Fail::new(format!("the emulated bootloader cannot boot: {why}")).into()),
                };
                qemu_command(profile, p, &loaded, &loaded.cmdline_with(extra_cmdline))?
            }
            Firmware::UBoot { bin } => qemu_u_boot(profile, p, bin, extra_cmdline)?,
        };
        progress(&format!("{} (quit with Ctrl-A X)", util::show_command(&cmd)));
        cmd.stdout(Stdio::piped());
        let mut child =
            cmd.spawn().map_err(|e| util::user_error(e, "starting qemu-system-aarch64 (package qemu-system-arm)"))?;
        // QEMU stays in the terminal's process group (its console is the terminal); a
        // signal to mobix ends QEMU, and the caller still reads the phone's record back.
        let _guard = interrupt::StopOnSignal::new(child.id());
        // Pass the console through while watching for a restart.
        let mut out = child.stdout.take().expect("piped");
        let (mut restarted, mut panicked) = (false, false);
        let mut window: Vec<u8> = Vec::new();
        let mut buf = [0u8; 4096];
        let mut stdout = std::io::stdout();
        loop {
            let n = out.read(&mut buf).unwrap_or(0);
            if n == 0 {
                break;
            }
            stdout.write_all(&buf[..n])?;
            stdout.flush()?;
            window.extend_from_slice(&buf[..n]);
            // A panicking kernel restarts after `panic=N` seconds without a "reboot:" line
            // (and -no-reboot makes that an exit): a phone would come back through its
            // bootloader, so the emulated one does too.
            if memchr::memmem::find(&window, b"Kernel panic").is_some() {
                (restarted, panicked) = (true, true);
            }
            if RESTART_LINES.iter().any(|l| memchr::memmem::find(&window, l.as_bytes()).is_some()) {
                restarted = true;
            }
            let keep = window.len().saturating_sub(64);
            window.drain(..keep);
        }
        let status = child.wait()?;
        if !restarted || interrupted().is_some() {
            return Ok(status);
        }
        panics = if panicked { panics + 1 } else { 0 };
        if panics >= MAX_PANICS {
            return Err(Fail::new(format!(
                "the kernel panicked {panics} times in a row; the emulated phone stays off"
            ))
            .hint("the console above says why; boot another generation or build a working boot image")
            .into());
        }
        progress(if panicked {
            "the kernel panicked and the phone restarted: power cycle through the bootloader"
        } else {
            "the phone restarted: power cycle through the bootloader"
        });
    }
}

#[cfg(test)]
mod tests;
