//! Fallback scenarios on the emulated phone: generations that pass, fail their health
//! check, hang, or come with a kernel that panics, installed the way a host re-flash does,
//! booted power cycle after power cycle, with each boot's slot, generation, tries and
//! outcome reported and the end state checked.
//!
//! Pipeline stage: vm. The scenario asks its [`Systems`] to build each generation (the
//! device's system with one change to its system config) and installs the images itself:
//! the system partition, boot_b and misc for a kernel update.

use super::{boot_until_complete, patch_partition, read_partition, write_partition, write_sparse_partition};
use super::{Act, Answer, Boot, Cycles, Ending, Prepared, POWEROFF_ARG};
use crate::format::bootstate::{self, BadReason, Record, Status};
use crate::format::misc;
use crate::profile::{HealthCheck, Profile, SystemConfig};
use crate::store::StorePath;
use crate::util::Fail;
use anyhow::{Context, Result};
use mobix_bootctl::contract::Slot;
use mobix_bootctl::screen::Scene;
use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A generation built for a scenario.
pub struct Built {
    pub toplevel: StorePath,
    pub boot_img: PathBuf,
    pub system_img: PathBuf,
}

/// How a scenario gets its generations built.
pub trait Systems {
    /// Builds generation `number`: the device's system with `tweak` applied to its system
    /// config, and images whose system partition carries `carried` (toplevels by number)
    /// with `number` added, and starts with `state(all carried)`.
    fn build(
        &self,
        number: u32,
        tweak: &dyn Fn(&mut SystemConfig),
        carried: &BTreeMap<u32, StorePath>,
        state: &dyn Fn(&BTreeMap<u32, StorePath>) -> Record,
    ) -> Result<Built>;
}

/// The fallback scenarios build their generations through the same pipeline.
impl Systems for crate::pipeline::Pipeline<'_> {
    fn build(
        &self,
        number: u32,
        tweak: &dyn Fn(&mut SystemConfig),
        carried: &BTreeMap<u32, StorePath>,
        state: &dyn Fn(&BTreeMap<u32, StorePath>) -> Record,
    ) -> Result<Built> {
        let imgs = self.build_unrecorded(number, tweak, carried, state)?;
        let store = self.ctx.store;
        Ok(Built {
            boot_img: store.host_path(&imgs.boot).join(crate::plan::ImageName::Boot.file_name()),
            system_img: store.host_path(&imgs.system).join(crate::plan::ImageName::System.file_name()),
            toplevel: imgs.toplevel,
        })
    }
}

pub const NAMES: &[(&str, &str)] = &[
    ("s0", "a good generation boots, is marked good, its slot successful"),
    ("s1", "an update to a good generation 2 boots once as a trial and is marked good"),
    ("s2", "generation 2's health check fails: tried N times, then generation 1 boots and stays the default"),
    ("s3", "generation 2 hangs before its success point: same outcome as s2"),
    ("s4", "a new kernel in the inactive slot panics: the bootloader returns, stage-1 marks generation 2 bad"),
    ("s5", "one copy of the state record corrupt: the other is used; both corrupt: degraded boot of the newest"),
    ("s6", "ten updates with keep=3: the booted, default and last good generations survive"),
    ("s7", "good reboots in a row never leave the slot unbootable (two here; the rule over many is a unit test)"),
    ("s8", "a new kernel boots but all its generations fail: stage-1 switches back to the old slot"),
    ("menu", "an older generation picked by hand in the menu (typed on the console; then on the screen, volume-down held at power-on, two rows down, power) boots"),
];

/// What a scenario did: every boot, and whether its expectations held.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Report {
    pub scenario: String,
    pub passed: bool,
    pub boots: Vec<Boot>,
    /// The expectations that failed (empty when passed).
    pub failures: Vec<String>,
    pub serial_log: PathBuf,
}

const TRIES: u8 = 3;
/// How long one boot may take before the battery is pulled: room for the trial deadline
/// (and, under systemd, for the clean shutdown after it).
fn per_boot(profile: &Profile) -> Duration {
    match profile.system.init {
        crate::profile::Init::Systemd => Duration::from_secs(240),
        crate::profile::Init::Minimal => Duration::from_secs(120),
    }
}

struct Run<'a> {
    profile: &'a Profile,
    systems: &'a dyn Systems,
    phone: Prepared,
    log: fs::File,
    boots: Vec<Boot>,
    failures: Vec<String>,
    progress: &'a dyn Fn(&str),
    gens: BTreeMap<u32, StorePath>,
}

pub fn run(
    name: &str,
    profile: &Profile,
    systems: &dyn Systems,
    firmware: &super::Firmware,
    dir: &Path,
    progress: &dyn Fn(&str),
) -> Result<Report> {
    if !NAMES.iter().any(|(n, _)| *n == name) {
        let known: Vec<&str> = NAMES.iter().map(|(n, _)| *n).collect();
        return Err(Fail::new(format!("no scenario {name:?}")).hint(format!("scenarios: {}", known.join(", "))).into());
    }
    if !profile.device.is_ab() {
        return Err(Fail::new(format!("{} is not an A/B device; the scenarios need slots", profile.codename)).into());
    }
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let log_path = dir.join("serial.log");
    let log = fs::File::create(&log_path).with_context(|| format!("creating {}", log_path.display()))?;
    // Generation 1, freshly flashed.
    let g1 = systems.build(1, &|_| {}, &BTreeMap::new(), &|g| fresh(g, 1))?;
    let manifest = crate::publish::Manifest {
        version: 1,
        device: profile.codename.to_string(),
        variant: profile.variant.clone(),
        generation: 1,
        toplevel: g1.toplevel.clone(),
        images: BTreeMap::new(),
        config: None,
    };
    let boot_bytes = fs::read(&g1.boot_img).with_context(|| format!("reading {}", g1.boot_img.display()))?;
    let mut phone = super::prepare_from(profile, dir, &boot_bytes, &g1.system_img, manifest)?;
    phone.firmware = firmware.clone();
    let mut r = Run {
        profile,
        systems,
        phone,
        log,
        boots: Vec::new(),
        failures: Vec::new(),
        progress,
        gens: BTreeMap::from([(1, g1.toplevel)]),
    };
    match name {
        "s0" => s0(&mut r)?,
        "s1" => s1(&mut r)?,
        "s2" => failing_update(&mut r, false)?,
        "s3" => failing_update(&mut r, true)?,
        "s4" => s4(&mut r)?,
        "s5" => s5(&mut r)?,
        "s6" => s6(&mut r)?,
        "s7" => s7(&mut r)?,
        "s8" => s8(&mut r)?,
        "menu" => menu(&mut r)?,
        _ => unreachable!("checked above"),
    }
    Ok(Report {
        scenario: name.to_string(),
        passed: r.failures.is_empty(),
        boots: r.boots,
        failures: r.failures,
        serial_log: log_path,
    })
}

/// The record of a freshly flashed image: `current` a trial with all its tries.
fn fresh(gens: &BTreeMap<u32, StorePath>, current: u32) -> Record {
    crate::generation::initial_state(gens, current, TRIES, None)
}

impl Run<'_> {
    fn check(&mut self, ok: bool, what: impl Into<String>) {
        if !ok {
            let w = what.into();
            (self.progress)(&format!("FAILED: {w}"));
            self.failures.push(w);
        }
    }

    /// Power-cycles until a boot completes (or `max` boots); returns those boots.
    fn boot(&mut self, max: usize, extra: &str, answers: &[Answer]) -> Result<Vec<Boot>> {
        let extra = if extra.is_empty() { POWEROFF_ARG.to_string() } else { format!("{POWEROFF_ARG} {extra}") };
        let cycles = Cycles {
            extra: &extra,
            per_boot: per_boot(self.profile),
            max_boots: max,
            answers,
            numbered_from: self.boots.len(),
            screenshots: None,
        };
        let out = boot_until_complete(self.profile, &self.phone, &cycles, &mut self.log, self.progress)?;
        self.boots.extend(out.iter().cloned());
        Ok(out)
    }

    fn state(&self) -> Result<Option<Record>> {
        super::read_state(self.profile, &self.phone)
    }

    fn system(&self) -> String {
        self.profile.device.system.partition.to_string()
    }

    fn misc(&self) -> Result<misc::BootloaderControl> {
        let raw = read_partition(
            &self.phone.disk,
            &self.phone.layout,
            "misc",
            misc::CONTROL_OFFSET as u64,
            misc::CONTROL_SIZE,
        )?;
        Ok(misc::BootloaderControl::decode(raw[..].try_into().expect("32 bytes")))
    }

    fn entry(&self, state: &Record, g: u32) -> Option<bootstate::Entry> {
        state.entries.iter().find(|e| e.generation == g).copied()
    }

    /// A userspace update, as a host re-flash of the system partition does it: the new
    /// image carries the newest `keep` generations plus what the phone's record protects,
    /// and its record keeps what the phone learned.
    fn update(&mut self, number: u32, keep: u32, tweak: &dyn Fn(&mut SystemConfig)) -> Result<Built> {
        let known = self.state()?;
        let protected = known.as_ref().map(crate::generation::protected).unwrap_or_default();
        // The new generation is the newest of the `keep`.
        let carried = crate::generation::carried(&self.gens, keep.saturating_sub(1), &[], &protected);
        let built = self
            .systems
            .build(number, tweak, &carried, &|g| crate::generation::initial_state(g, number, TRIES, known.as_ref()))?;
        self.gens.insert(number, built.toplevel.clone());
        let sys = self.system();
        write_sparse_partition(&self.phone.disk, &self.phone.layout, &sys, &built.system_img)?;
        (self.progress)(&format!("installed generation {number} on the system partition"));
        Ok(built)
    }

    /// Checks that the screenshot `shot` is, pixel for pixel, `scene` as the host draws it
    /// with stage-1's own drawing code (where the profile gives the phone a screen).
    fn screen_shows(&mut self, shot: &Path, scene: &Scene, what: &str) {
        if self.profile.device.qemu.as_ref().and_then(|q| q.screen).is_none() {
            return;
        }
        let got = match fs::read(shot).map_err(anyhow::Error::from).and_then(|b| {
            let (w, h, rgb) = super::read_ppm(&b)?;
            Ok((w, h, rgb.to_vec()))
        }) {
            Ok(g) => g,
            Err(e) => return self.check(false, format!("{what}: no screenshot {}: {e:#}", shot.display())),
        };
        let (w, h, rgb) = got;
        let want = mobix_screen::render(scene, w, h).rgb_bytes();
        let differ = rgb.chunks(3).zip(want.chunks(3)).filter(|(a, b)| a != b).count();
        self.check(
            differ == 0,
            format!(
                "{what}: the screen ({}) differs from the scene drawn on the host in {differ} of {} pixels",
                shot.display(),
                w * h
            ),
        );
    }

    fn expect_chosen(&mut self, boots: &[Boot], want: &[(Option<u32>, Option<Slot>)]) {
        let got: Vec<(Option<u32>, Option<Slot>)> = boots.iter().map(|b| (b.generation, b.slot)).collect();
        self.check(got == want, format!("boots went {got:?}, expected {want:?}"));
    }
}

fn s0(r: &mut Run) -> Result<()> {
    // With no key held and nothing failed, the boot screen names the device and the
    // generation as stage-1 hands over to it.
    let shot = r.phone.dir.join("boot-screen.ppm");
    let answers = [Answer::new(r#""doing":"starting generation 1""#, Act::Screenshot(shot.clone()))];
    let boots = r.boot(1, "", &answers)?;
    r.expect_chosen(&boots, &[(Some(1), Some(Slot::A))]);
    r.check(boots[0].ending == Ending::Complete, "generation 1 reached boot-complete");
    r.check(boots[0].fell_back_from.is_none(), "nothing to fall back from");
    let last = boots[0].scenes.iter().rev().find(|s| matches!(s, Scene::Boot { .. }));
    match last {
        Some(scene @ Scene::Boot { device, generation: Some(g), .. }) if g.number == 1 && !device.is_empty() => {
            r.screen_shows(&shot, &scene.clone(), "the boot screen")
        }
        _ if r.profile.device.qemu.as_ref().and_then(|q| q.screen).is_none() => {}
        other => r.check(false, format!("the boot screen named the device and generation 1: {other:?}")),
    }
    let st = r.state()?.context("no valid boot-state record after the boot")?;
    let e = r.entry(&st, 1);
    r.check(e.is_some_and(|e| e.status == Status::Good), format!("generation 1 is good: {e:?}"));
    r.check(st.last_good[0] == 1, format!("last good of slot a is 1: {:?}", st.last_good));
    let m = r.misc()?;
    r.check(m.slot_info[0].successful_boot, "slot a is marked successful in misc");
    Ok(())
}

fn s1(r: &mut Run) -> Result<()> {
    s0(r)?;
    r.update(2, 3, &|c| c.hostname = Some("generation-2".into()))?;
    let boots = r.boot(2, "", &[])?;
    r.expect_chosen(&boots, &[(Some(2), Some(Slot::A))]);
    r.check(boots[0].status.as_deref() == Some("trial"), "generation 2 boots as a trial");
    let st = r.state()?.context("no valid boot-state record")?;
    let e = r.entry(&st, 2);
    r.check(
        e.is_some_and(|e| e.status == Status::Good && e.tries_done == 1),
        format!("generation 2 is good after one try: {e:?}"),
    );
    r.check(st.default_gen == 2, format!("generation 2 is the default: {}", st.default_gen));
    Ok(())
}

/// S2 (`hang` false: its health check fails) and S3 (`hang`: it never gets to its success
/// point; the trial deadline reboots it).
fn failing_update(r: &mut Run, hang: bool) -> Result<()> {
    s0(r)?;
    r.update(2, 3, &|c| {
        let command = if hang { "sleep 100000" } else { "echo 'this update is broken'; exit 1" };
        c.health_checks.push(HealthCheck {
            name: if hang { "hangs".into() } else { "fails".into() },
            command: vec!["/bin/sh".into(), "-c".into(), command.into()],
            timeout: 100_000,
        });
        // Short, so that a hang costs little: counted from stage-2 under the minimal init,
        // from systemd's start under systemd (whose default target takes longer to reach).
        c.boot.trial_deadline = if c.init == crate::profile::Init::Systemd { 100 } else { 8 };
    })?;
    let shot = r.phone.dir.join("notice.ppm");
    let answers = [Answer::new(NOTICE_LINE, Act::Screenshot(shot.clone()))];
    let boots = r.boot(TRIES as usize + 2, "", &answers)?;
    let mut want = vec![(Some(2), Some(Slot::A)); TRIES as usize];
    want.push((Some(1), Some(Slot::A)));
    r.expect_chosen(&boots, &want);
    // The fallback boot says so on the screen, naming both generations.
    match boots.last().and_then(|b| b.scenes.iter().find(|s| matches!(s, Scene::Notice { .. }))) {
        Some(notice @ Scene::Notice { text, .. }) => {
            r.check(
                text.to_lowercase().contains("generation 2") && text.to_lowercase().contains("generation 1"),
                format!("the notice names both generations: {text:?}"),
            );
            r.screen_shows(&shot, notice, "the fallback notice");
        }
        _ => r.check(false, "the fallback boot showed a notice"),
    }
    // And the running system's record (/run/mobix/boot.json, read by stage-2 at its
    // success point) says what it fell back from.
    let from = boots.last().and_then(|b| b.fell_back_from);
    r.check(from == Some(2), format!("the running system's boot record says it fell back from 2: {from:?}"));
    for b in &boots[..boots.len().min(TRIES as usize)] {
        let how = if hang { b.trial_timeout } else { b.health_failed };
        r.check(how && b.ending == Ending::Rebooted, format!("trial boot failed as planned and rebooted: {b:?}"));
    }
    let st = r.state()?.context("no valid boot-state record")?;
    let e2 = r.entry(&st, 2);
    r.check(
        e2.is_some_and(|e| e.status == Status::Bad(BadReason::Tries) && e.tries_done == TRIES),
        format!("generation 2 is bad after {TRIES} tries: {e2:?}"),
    );
    r.check(st.default_gen == 1, format!("generation 1 is the default again: {}", st.default_gen));
    // And it stays so.
    let again = r.boot(1, "", &[])?;
    r.expect_chosen(&again, &[(Some(1), Some(Slot::A))]);
    Ok(())
}

/// Installs generation 2 as a kernel update: its boot image into boot_b, a system image
/// whose record says slot a is switching to b for it, and slot b active in misc with
/// `slot_tries` (as the boot_control HAL's setActiveBootSlot leaves it).
fn kernel_update(r: &mut Run, tweak: &dyn Fn(&mut SystemConfig), slot_tries: u8) -> Result<()> {
    let known = r.state()?;
    let carried = r.gens.clone();
    let built = r.systems.build(2, tweak, &carried, &|g| {
        let mut s = crate::generation::initial_state(g, 2, TRIES, known.as_ref());
        if let Some(e) = s.entries.iter_mut().find(|e| e.generation == 2) {
            e.kernel_slot = Slot::B;
        }
        s.pending_slot = bootstate::PendingSlot { from: Slot::A, to: Slot::B, generation: 2, valid: true };
        s
    })?;
    r.gens.insert(2, built.toplevel.clone());
    let sys = r.system();
    write_sparse_partition(&r.phone.disk, &r.phone.layout, &sys, &built.system_img)?;
    let boot_b = fs::read(&built.boot_img)?;
    write_partition(&r.phone.disk, &r.phone.layout, "boot_b", &boot_b)?;
    let mut m = r.misc()?;
    m.set_active(Slot::B).map_err(|e| anyhow::anyhow!("{e}"))?;
    m.slot_info[1].tries_remaining = slot_tries;
    patch_partition(&r.phone.disk, &r.phone.layout, "misc", misc::CONTROL_OFFSET as u64, &m.encode())?;
    (r.progress)(&format!(
        "installed generation 2 with a new boot image in boot_b; slot b active with {slot_tries} tries"
    ));
    Ok(())
}

fn s4(r: &mut Run) -> Result<()> {
    s0(r)?;
    // Generation 2 comes with a boot image whose kernel cannot start its init: it panics.
    // panic=1: the bootloader's tries are what is tested, not the panic's wait (5 s).
    kernel_update(r, &|c| c.cmdline.extend(["rdinit=/no-such-init".into(), "panic=1".into()]), TRIES)?;
    let boots = r.boot(TRIES as usize + 2, "", &[])?;
    let mut want = vec![(None, Some(Slot::B)); TRIES as usize];
    want.push((Some(1), Some(Slot::A)));
    r.expect_chosen(&boots, &want);
    for b in &boots[..boots.len().min(TRIES as usize)] {
        r.check(b.kernel_panic && b.ending == Ending::Rebooted, format!("slot b's kernel panicked: {b:?}"));
    }
    let st = r.state()?.context("no valid boot-state record")?;
    let e2 = r.entry(&st, 2);
    r.check(
        e2.is_some_and(|e| e.status == Status::Bad(BadReason::Kernel)),
        format!("stage-1 marked generation 2 bad for its kernel: {e2:?}"),
    );
    r.check(!st.pending_slot.valid, "the pending slot switch is cleared");
    let m = r.misc()?;
    r.check(m.slot_info[1].tries_remaining == 0, "slot b has no tries left");
    Ok(())
}

fn s8(r: &mut Run) -> Result<()> {
    s0(r)?;
    // Generation 2 comes with a new boot image (its command line differs, so generation 1
    // cannot run under it) that boots, but generation 2 fails its health check; slot b
    // has the 7 tries Android's setActiveBootSlot gives, more than the generation's.
    kernel_update(
        r,
        &|c| {
            c.cmdline.push("mobix.test-kernel=2".into());
            c.health_checks.push(HealthCheck {
                name: "fails".into(),
                command: vec!["/bin/sh".into(), "-c".into(), "exit 1".into()],
                timeout: 60,
            });
        },
        7,
    )?;
    let boots = r.boot(TRIES as usize + 3, "", &[])?;
    let mut want = vec![(Some(2), Some(Slot::B)); TRIES as usize];
    want.push((None, Some(Slot::B)));
    want.push((Some(1), Some(Slot::A)));
    r.expect_chosen(&boots, &want);
    if let Some(b) = boots.get(TRIES as usize) {
        r.check(
            b.note.contains("SLOT-SWITCH") && b.ending == Ending::Rebooted,
            format!("stage-1 on slot b found nothing to boot and switched back to slot a: {b:?}"),
        );
    }
    let st = r.state()?.context("no valid boot-state record")?;
    let e2 = r.entry(&st, 2);
    r.check(
        e2.is_some_and(|e| e.status == Status::Bad(BadReason::Tries)),
        format!("generation 2 is bad after its tries: {e2:?}"),
    );
    r.check(!st.pending_slot.valid, "the pending slot switch is cleared");
    let m = r.misc()?;
    r.check(
        m.slot_info[0].priority > m.slot_info[1].priority && m.slot_info[0].successful_boot,
        format!("slot a is active again and marked successful: {:?}", m.slot_info),
    );
    Ok(())
}

fn s5(r: &mut Run) -> Result<()> {
    s1(r)?;
    let at = r.profile.device.state_offset();
    let sys = r.system();
    let before = r.state()?.context("no valid boot-state record")?;
    // One copy torn.
    patch_partition(&r.phone.disk, &r.phone.layout, &sys, at + 100, b"torn write")?;
    let boots = r.boot(1, "", &[])?;
    r.expect_chosen(&boots, &[(Some(2), Some(Slot::A))]);
    r.check(boots[0].status.as_deref() == Some("good"), "the intact copy says generation 2 is good");
    let st = r.state()?.context("no valid boot-state record")?;
    let same = |a: &Record, b: &Record| {
        a.entries.iter().map(|e| (e.generation, e.status)).eq(b.entries.iter().map(|e| (e.generation, e.status)))
    };
    r.check(same(&before, &st), format!("nothing lost: {:?} then {:?}", before.entries, st.entries));
    // Both copies corrupt.
    patch_partition(&r.phone.disk, &r.phone.layout, &sys, at + 100, b"torn write")?;
    patch_partition(&r.phone.disk, &r.phone.layout, &sys, at + bootstate::BLOCK as u64 + 100, b"torn write")?;
    let boots = r.boot(1, "", &[])?;
    r.expect_chosen(&boots, &[(Some(2), Some(Slot::A))]);
    r.check(boots[0].status.as_deref() == Some("degraded"), "a degraded boot of the newest generation");
    let st = r.state()?.context("stage-2 wrote no fresh record after the degraded boot")?;
    r.check(st.entries.iter().all(|e| !e.status.is_bad()), format!("nothing marked bad: {:?}", st.entries));
    Ok(())
}

fn s6(r: &mut Run) -> Result<()> {
    s0(r)?;
    for n in 2..=10 {
        let host = format!("generation-{n}");
        r.update(n, 3, &move |c| c.hostname = Some(host.clone()))?;
    }
    let st = r.state()?.context("no valid boot-state record")?;
    let carried: Vec<u32> = st.entries.iter().map(|e| e.generation).collect();
    r.check(carried == [1, 8, 9, 10], format!("the partition carries 1 (booted, last good) and 8-10: {carried:?}"));
    let boots = r.boot(2, "", &[])?;
    r.expect_chosen(&boots, &[(Some(10), Some(Slot::A))]);
    // Generation 1 is still there to be picked by hand.
    let boots = r.boot(1, "mobix.menu", &[Answer::new("choose a generation", Act::Type("1\n".into()))])?;
    r.expect_chosen(&boots, &[(Some(1), Some(Slot::A))]);
    Ok(())
}

/// Two real reboots, each checked against the bootloader's choice; the same rule over a
/// hundred boots is `misc`'s unit test `good_reboots_never_use_up_a_successful_slot`.
fn s7(r: &mut Run) -> Result<()> {
    for i in 0..2 {
        let boots = r.boot(1, "", &[])?;
        r.expect_chosen(&boots, &[(Some(1), Some(Slot::A))]);
        let m = r.misc()?;
        let sel = misc::select_slot(&m.clone().encode(), false).map_err(|e| anyhow::anyhow!("{e}"))?;
        r.check(
            sel.slot == Some(0) && m.slot_info[0].tries_remaining > 0,
            format!("after good boot {}: slot a still bootable ({:?})", i + 1, m.slot_info[0]),
        );
    }
    Ok(())
}

/// The console lines of stage-1's screens.
const MENU_LINE: &str = r#"SCREEN {"screen":"menu""#;
const NOTICE_LINE: &str = r#"SCREEN {"screen":"notice""#;

fn menu(r: &mut Run) -> Result<()> {
    s1(r)?;
    // On the serial console, as a UART user does.
    let answers = [Answer::new("choose a generation", Act::Type("1\n".into()))];
    let boots = r.boot(1, "mobix.menu", &answers)?;
    r.expect_chosen(&boots, &[(Some(1), Some(Slot::A))]);
    r.check(boots[0].status.as_deref() == Some("manual"), "generation 1 was chosen by hand");
    r.check(boots[0].ending == Ending::Complete, "generation 1 reached boot-complete");
    // As on a phone: volume-down held at power-on opens the menu on the screen; twice
    // down and power boot the generation two rows below the default (3, an untried update).
    r.update(3, 3, &|c| c.hostname = Some("generation-3".into()))?;
    let shot = r.phone.dir.join("menu.ppm");
    let answers = [
        // Once stage-1 has loaded the keyboard's driver (a key held before is not seen).
        Answer::new("mobix: loaded ", Act::Hold("volumedown".into())),
        Answer::new(MENU_LINE, Act::Screenshot(shot.clone())),
        Answer::new(MENU_LINE, Act::Release("volumedown".into())),
        Answer::new(MENU_LINE, Act::Press("volumedown".into())),
        Answer::new(MENU_LINE, Act::Press("volumedown".into())),
        Answer::new(MENU_LINE, Act::Press("power".into())),
    ];
    let boots = r.boot(1, "", &answers)?;
    r.expect_chosen(&boots, &[(Some(1), Some(Slot::A))]);
    r.check(boots[0].status.as_deref() == Some("manual"), "the keys chose generation 1 by hand");
    r.check(boots[0].ending == Ending::Complete, "generation 1 reached boot-complete");
    let menus: Vec<&Scene> = boots[0].scenes.iter().filter(|s| matches!(s, Scene::Menu { .. })).collect();
    let rows_and_selection = |s: &Scene| match s {
        Scene::Menu { rows, selected, .. } => {
            (rows.iter().map(|r| r.generation.number).collect::<Vec<u32>>(), *selected)
        }
        _ => (Vec::new(), 0),
    };
    let drawn: Vec<(Vec<u32>, usize)> = menus.iter().map(|s| rows_and_selection(s)).collect();
    r.check(
        drawn == [(vec![3, 2, 1], 0), (vec![3, 2, 1], 1), (vec![3, 2, 1], 2)],
        format!("the menu opened on the default (3) and moved down twice: {drawn:?}"),
    );
    if let Some(first) = menus.first() {
        r.screen_shows(&shot, first, "the generation menu");
    }
    let st = r.state()?.context("no valid boot-state record")?;
    let e3 = r.entry(&st, 3);
    r.check(
        e3.is_some_and(|e| e.status == Status::Trial && e.tries_done == 0),
        format!("generation 3, passed over by hand, keeps all its tries: {e3:?}"),
    );
    Ok(())
}
