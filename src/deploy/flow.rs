//! A deploy, whole: ask the phone what it has, refuse what it cannot take before anything
//! is built, build the system (and its boot image where it changed), send what the phone
//! lacks, reboot it and read back what booted. The CLI parses the arguments and prints the
//! [`Report`]; every decision is here or in the pure functions of [`super`].

use super::{boot_change, layout_change, plan, send, wait, Outcome, Plan, Sent, Ssh, Target, UnlockWith};
use crate::generation;
use crate::pipeline::Pipeline;
use crate::plan::ImageName;
use crate::profile::Profile;
use crate::store::{Store, StorePath};
use crate::util::{self, Fail};
use anyhow::Result;
use mobix_bootctl::contract::{slot_letter, Generation, PhoneStatus, Slot};
use serde::Serialize;
use std::path::Path;
use std::time::Duration;

/// What the owner asked of this deploy besides the system.
#[derive(Debug, Clone)]
pub struct Options {
    /// Send and make it the trial, but leave the reboot to the owner.
    pub no_reboot: bool,
    /// Build and say what would be sent and done; the phone is not changed.
    pub dry_run: bool,
    /// How long to wait for the phone to come back and settle.
    pub timeout: Duration,
    /// On a phone without A/B slots, write a changed boot image over the running one.
    pub kernel_in_place: bool,
    /// The PIN of the phone's encrypted state, sent to stage-1's remote unlock after the
    /// reboot (`--pin-file`).
    pub pin: Option<String>,
}

/// Where a new boot image goes, and its size.
#[derive(Debug, Clone, Serialize)]
pub struct BootImage {
    /// None: written over the running boot image (`kernel_in_place`). In the report its
    /// letter, as people and `fastboot` name it.
    #[serde(serialize_with = "slot_letter::option")]
    pub slot: Option<Slot>,
    pub bytes: usize,
}

/// What a deploy did: its plan, what it sent, how the phone came back.
#[derive(Debug, Serialize)]
pub struct Report {
    pub target: Target,
    pub plan: Plan,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sent: Option<Sent>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub boot_image: Option<BootImage>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outcome: Option<Outcome>,
}

/// The room a deploy leaves free on the phone's system filesystem beyond its new store
/// paths (and a tenth of them): the filesystem's own blocks.
const MARGIN: u64 = 4 << 20;

/// Deploys the system of `pipe` to the phone `ssh` reaches, as a generation of the out
/// directory `out`. Every refusal that does not depend on what the build makes comes
/// before the build: the phone's layout, its filesystem, a boot image it has no slot for,
/// a generation number that is another system there, and the room it has, as far as the
/// host's store knows the sizes already.
pub fn run(pipe: &Pipeline, ssh: &Ssh, out: &Path, opts: &Options) -> Result<Report> {
    let (store, progress) = (pipe.ctx.store, pipe.ctx.progress);
    let note = |m: &str| progress.note(m);
    let profile = pipe.profile;
    note(&format!("asking {} what it has", ssh.target.host));
    let phone = ssh.status()?;
    let sys = pipe.plan_system()?;
    let (kernel, initrd, cmdline) = sys.boots();
    let boot_change = boot_change(&phone.boot_spec, &kernel, &initrd, cmdline);
    let lineage = pipe.lineage(out);
    let number = pipe.next_generation(&lineage, &sys.toplevel)?;
    refuse(&phone, profile, opts, boot_change.as_deref())?;
    same_system(&phone, number, &sys.toplevel)?;
    // The room the new paths need, as far as this host's store knows them before the build:
    // all of them when the system was built before (`mobix build`), else none.
    let early = match store.contains(&sys.toplevel) {
        true => Some(plan_against(store, number, &sys.toplevel, &phone, boot_change.clone())?),
        false => None,
    };
    room(&phone, early.as_ref().map_or(0, |p| p.send_bytes))?;

    let built = pipe.build_system(&sys, lineage.out(), !opts.dry_run)?;
    // Another build may have taken the planned number meanwhile: checked again for the one
    // this build got.
    same_system(&phone, built.generation, &built.toplevel)?;
    let plan = match early {
        // The system was in the store before: the same closure, sized already.
        Some(p) if p.generation == built.generation => p,
        _ => plan_against(store, built.generation, &built.toplevel, &phone, boot_change)?,
    };
    if let Some(words) = super::failed_before(&phone, &built.toplevel) {
        note(&format!("warning: {words}"));
    }
    note(&format!(
        "generation {}: {} of {} store paths to send ({:.1} MiB before compression); the phone is running \
         generation {} ({} MiB free on its system filesystem)",
        plan.generation,
        plan.send.len(),
        plan.send.len() + plan.present,
        plan.send_bytes as f64 / (1u64 << 20) as f64,
        phone.booted.generation,
        phone.free_bytes >> 20
    ));
    room(&phone, plan.send_bytes)?;
    // A new boot image goes to the inactive A/B slot, or over the running one where the
    // owner accepted that (`refuse` let nothing else through).
    let boot_image = match &plan.boot_image_change {
        None => None,
        Some(why) => {
            let slot = phone.booted.slot.map(|running| running.other());
            let img = boot_image(pipe)?;
            note(&match slot {
                Some(other) => format!(
                    "generation {} needs a new boot image ({why}): {} KiB for slot {other} (the phone runs slot {}), \
                     tried by the bootloader as after a flash",
                    plan.generation,
                    img.len() >> 10,
                    other.other()
                ),
                None => format!(
                    "generation {} needs a new boot image ({why}): {} KiB written over the running one \
                     (--kernel-in-place: if its kernel does not come up, nothing falls back)",
                    plan.generation,
                    img.len() >> 10
                ),
            });
            Some((slot, img))
        }
    };
    let mut report = Report {
        target: ssh.target.clone(),
        boot_image: boot_image.as_ref().map(|(slot, img)| BootImage { slot: *slot, bytes: img.len() }),
        plan,
        sent: None,
        outcome: None,
    };
    let plan = &report.plan;
    if opts.dry_run {
        for (p, size) in &plan.send {
            note(&format!("  would send {p} ({} KiB)", size >> 10));
        }
        note(&format!(
            "would make generation {} the phone's trial and default{}",
            plan.generation,
            if opts.no_reboot { "" } else { ", then reboot it" }
        ));
        match &report.boot_image {
            Some(BootImage { slot: Some(slot), .. }) => {
                note(&format!("would write the boot image to boot_{} and make slot {slot} active", slot.letter()))
            }
            Some(BootImage { slot: None, .. }) => note("would write the boot image over the running one (boot)"),
            None => {}
        }
        return Ok(report);
    }
    let entry = Generation {
        generation: plan.generation,
        toplevel: built.toplevel.phone_path(),
        kernel,
        cmdline: cmdline.to_string(),
        // For the phone's screen (its generation menu); nothing is hashed from it.
        created: std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs()),
    };
    let image = boot_image.as_ref().map(|(slot, img)| (&img[..], slot.is_none()));
    let (sent, said) = send(store, ssh, plan, image, &entry, profile.system.boot.tries, &note)?;
    note(&format!("phone: {said} ({:.1}s)", sent.seconds));
    report.sent = Some(sent);
    let generation = report.plan.generation;
    if opts.no_reboot {
        note(&format!(
            "generation {generation} boots at the phone's next reboot, as a trial: if it fails, the phone falls \
             back by itself"
        ));
        return Ok(report);
    }
    let unlock = match (&opts.pin, &phone.booted.unlock_host_key) {
        (Some(pin), Some(key)) => Some(UnlockWith { pin: pin.clone(), host_key: key.clone() }),
        _ => None,
    };
    if profile.system.state.encrypted() {
        note(&unlock_words(opts, &phone, &ssh.target));
    }
    note("rebooting the phone");
    // The connection ends with the reboot: its exit status says nothing.
    let _ = ssh.run("systemctl reboot 2>/dev/null || reboot");
    let (outcome, last) = wait(ssh, &phone.boot_id, generation, opts.timeout, unlock.as_ref(), &note);
    if let Some(rec) = last.as_ref().and_then(PhoneStatus::boot_record) {
        generation::save_ledger(store, &store.lock()?, &lineage, &rec)?;
    }
    note(&match &outcome {
        Outcome::Good { generation } => format!("generation {generation} booted and is good"),
        Outcome::FellBack { generation, booted, reason } => {
            format!("generation {generation} failed ({reason}); the phone fell back to generation {booted} by itself")
        }
        Outcome::Pending { generation, booted } => {
            let seen = match &last {
                Some(s) if s.boot_id == phone.boot_id => {
                    "the phone answers but has not restarted since the deploy (does `systemctl reboot` work on it?)"
                        .into()
                }
                Some(s) => format!("the phone last booted generation {booted} ({})", s.booted.mode),
                None => "the phone did not answer after the reboot".into(),
            };
            format!(
                "generation {generation} has not settled within {}s: {seen}; look with `ssh {} \
                 /run/current-system/init bless status`",
                opts.timeout.as_secs(),
                ssh.target.shown()
            )
        }
    });
    report.outcome = Some(outcome);
    Ok(report)
}

/// What the owner of an encrypted phone is told before the reboot (pure): who types the
/// PIN, and how long mobix waits.
pub(super) fn unlock_words(opts: &Options, phone: &PhoneStatus, target: &Target) -> String {
    let waits = format!("mobix waits up to {}s", opts.timeout.as_secs());
    match (&opts.pin, &phone.booted.unlock_host_key) {
        (Some(_), Some(_)) => format!(
            "the phone asks for its PIN after the reboot (its data is encrypted): mobix sends the PIN of --pin-file \
             to its stage-1 over ssh (remote unlock, to the host key the running phone reported); {waits}"
        ),
        (Some(_), None) => format!(
            "the phone asks for its PIN after the reboot (its data is encrypted), and its stage-1 made no remote \
             unlock known (the system it runs has no `state: {{ remote_unlock: true }}`): --pin-file cannot be sent, \
             type the PIN on the phone; {waits}"
        ),
        (None, Some(_)) => format!(
            "the phone asks for its PIN after the reboot (its data is encrypted): type it there, or over ssh \
             (`ssh {}`, remote unlock), or give mobix deploy --pin-file; {waits}",
            target.shown()
        ),
        (None, None) => format!(
            "the phone asks for its PIN on its screen after the reboot (its data is encrypted): type it there; {waits}"
        ),
    }
}

/// A system that keeps the state otherwise than the phone does: encrypting a plain state
/// would format over the owner's data, and a system without encryption could not open an
/// encrypted one.
fn state_change(phone: &PhoneStatus, profile: &Profile) -> Option<Fail> {
    use mobix_bootctl::contract::StateKind;
    let wants = profile.system.state.encrypted();
    match (phone.state?, wants) {
        (StateKind::Plain, true) => Some(
            Fail::new("the phone keeps its state (/home, /var) as a plain filesystem; this system wants it encrypted")
                .hint(
                    "encrypting it in place would format over the owner's data, which mobix never does. Copy off \
                     what /home and /var hold, then flash the system with the state erased (`mobix flash \
                     --erase-state` where it follows the system image, `fastboot erase` of its partition where it \
                     has one: docs/encryption.md), or keep `state: { encryption: none }`",
                ),
        ),
        (StateKind::Encrypted, false) => Some(
            Fail::new("the phone's state is encrypted; this system has no `state: { encryption: luks2 }`")
                .hint("without it the phone could not open its data at boot: keep `state: { encryption: luks2 }`"),
        ),
        _ => None,
    }
}

/// What the phone refuses whatever the build makes (pure): another layout, a filesystem
/// that takes no new paths, a new boot image with nowhere safe to go.
pub fn refuse(phone: &PhoneStatus, profile: &Profile, opts: &Options, boot_change: Option<&str>) -> Result<()> {
    let device = &profile.codename;
    if let Some(why) = layout_change(phone, profile.device.state_offset()) {
        return Err(Fail::new(format!("the phone cannot take this system by a deploy: {why}"))
            .hint(format!(
                "a deploy leaves the phone's partitions as they are. Set `system.size` back to what the phone was \
                 flashed with, or flash the new size (`mobix build --device {device}`, then `mobix flash --device \
                 {device}`; where the state shares the system partition, the flash starts /home and /var afresh)"
            ))
            .into());
    }
    if let Some(e) = state_change(phone, profile) {
        return Err(e.into());
    }
    if !phone.filesystem.takes_new_paths() {
        return Err(Fail::new(format!(
            "the phone's system filesystem is {}, which cannot take new store paths",
            phone.filesystem
        ))
        .hint("deploys need `system: { filesystem: ext4 }`; flash this generation instead")
        .into());
    }
    let Some(why) = boot_change else { return Ok(()) };
    if phone.booted.slot.is_none() && !opts.kernel_in_place {
        return Err(Fail::new(format!(
            "this generation needs a new boot image ({why}), and {device} has no A/B slots to put it in beside the \
             running one"
        ))
        .hint(format!(
            "overwriting the only boot image leaves nothing to fall back to: if the new kernel does not come up, \
             or no generation runs under it, the phone stays in a boot loop or a rescue shell until you flash it \
             with a cable. Flash instead (`mobix build --device {device}`, then `mobix flash --device {device}` in \
             fastboot mode), or accept that with --kernel-in-place"
        ))
        .into());
    }
    let v = profile.device.bootimg.header_version;
    if v >= 3 {
        return Err(Fail::new(format!(
            "this generation needs a new boot image ({why}), and {}'s header version {v} splits it over boot and \
             vendor_boot, which a deploy does not write yet",
            profile.shown()
        ))
        .hint(format!(
            "flash it: `mobix build {a}`, then `mobix flash {a}` in fastboot mode",
            a = profile.selection_args()
        ))
        .into());
    }
    Ok(())
}

/// Refuses a deploy of `bytes` of new store paths to a phone with too little room (pure).
pub fn room(phone: &PhoneStatus, bytes: u64) -> Result<()> {
    if bytes + bytes / 10 + MARGIN <= phone.free_bytes {
        return Ok(());
    }
    Err(Fail::new(format!(
        "the phone's system filesystem has {} MiB free, too little for {} MiB of new store paths and {} MiB for \
         the filesystem's own blocks",
        phone.free_bytes >> 20,
        bytes >> 20,
        (bytes / 10 + MARGIN) >> 20
    ))
    .hint("remove old generations from the phone (`mobix deploy --gc`), or flash a larger `system.size`")
    .into())
}

/// Refuses generation `number` when the phone has a generation of that number that is
/// another system (pure): the phone was flashed or deployed from another store.
fn same_system(phone: &PhoneStatus, number: u32, toplevel: &StorePath) -> Result<()> {
    match phone.generations.iter().find(|e| e.generation == number) {
        Some(g) if g.toplevel != toplevel.phone_path() => Err(Fail::new(format!(
            "the phone's generation {number} is another system ({}) than this host's ({toplevel})",
            g.toplevel
        ))
        .hint("the phone was flashed or deployed from another store; flash it from this one first")
        .into()),
        _ => Ok(()),
    }
}

fn plan_against(
    store: &Store,
    number: u32,
    toplevel: &StorePath,
    phone: &PhoneStatus,
    boot_change: Option<String>,
) -> Result<Plan> {
    let closure = store.closure(std::slice::from_ref(toplevel))?;
    let sizes = |p: &StorePath| generation::path_size(store, p);
    let refs = |p: &StorePath| store.references(p).unwrap_or_default();
    Ok(plan(number, toplevel, &closure, &refs, &sizes, &phone.store, boot_change))
}

/// The boot image of the system being deployed, built alone.
fn boot_image(pipe: &Pipeline) -> Result<Vec<u8>> {
    let path = pipe.build_boot_image()?;
    let file = pipe.ctx.store.host_path(&path).join(ImageName::Boot.file_name());
    std::fs::read(&file).map_err(|e| util::user_error(e, format!("reading {}", file.display())))
}

/// `mobix deploy --gc`: asks the phone what it has, decides its garbage from what this
/// host's store knows of the closures of the generations that stay ([`super::gc`], pure),
/// and has the phone remove it (unless `dry_run`). The plan comes back either way.
pub fn collect_garbage(
    store: &Store,
    ssh: &Ssh,
    keep: Option<usize>,
    dry_run: bool,
    progress: &dyn crate::report::Reporter,
) -> Result<super::Gc> {
    progress.note(&format!("asking {} what it has", ssh.target.host));
    let phone = ssh.status()?;
    let closure = |toplevel: &str| -> Result<std::collections::BTreeSet<String>> {
        let path = StorePath::parse(toplevel).ok().filter(|p| store.contains(p)).ok_or_else(|| {
            Fail::new(format!("{toplevel} is not in this host's store, so what it needs is unknown here"))
                .hint("collect from the host that built it, or deploy from this one first")
        })?;
        Ok(store.closure(&[path])?.iter().map(|p| p.base_name()).collect())
    };
    let plan = super::gc(&phone, phone.boot_record().as_ref(), keep, &closure)?;
    progress.note(&format!(
        "generations kept: {:?}; dropped: {:?}; {} of {} store paths to remove",
        plan.keep_generations,
        plan.drop_generations,
        plan.remove.len(),
        phone.store.len()
    ));
    for p in &plan.remove {
        progress.note(&format!("  {} {p}", if dry_run { "would remove" } else { "removing" }));
    }
    if !dry_run && (!plan.remove.is_empty() || !plan.drop_generations.is_empty()) {
        let said = super::collect(ssh, &plan)?;
        progress.note(&format!("phone: {said}"));
    }
    Ok(plan)
}
