//! `mobix flash` and `mobix boot`: a build onto a phone over fastboot.

use super::*;

/// `flash --slot`: the command line's words for [`flash::SlotChoice`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(super) enum SlotArg {
    /// The slot the phone is not running: what it boots now stays intact until the end.
    Inactive,
    /// Slot a.
    A,
    /// Slot b.
    B,
    /// Both slots.
    All,
}

impl From<SlotArg> for flash::SlotChoice {
    fn from(a: SlotArg) -> Self {
        match a {
            SlotArg::Inactive => flash::SlotChoice::Inactive,
            SlotArg::A => flash::SlotChoice::A,
            SlotArg::B => flash::SlotChoice::B,
            SlotArg::All => flash::SlotChoice::All,
        }
    }
}

#[derive(Args, Debug)]
pub(super) struct BootArgs {
    #[command(flatten)]
    target: DeviceOut,
    /// The phone: its USB serial number (default: the only USB fastboot device),
    /// `tcp:HOST[:PORT]` or `udp:HOST[:PORT]`.
    #[arg(long, short = 's', value_name = "SERIAL")]
    serial: Option<String>,
    /// Boot even if the device reports another product than the profile's.
    #[arg(long)]
    force: bool,
}

#[derive(Args, Debug)]
pub(super) struct FlashArgs {
    #[command(flatten)]
    target: DeviceOut,
    /// The phone: its USB serial number (default: the only USB fastboot device),
    /// `tcp:HOST[:PORT]` (the emulated phone: `tcp:127.0.0.1:5554`) or `udp:HOST[:PORT]`
    /// (U-Boot's `fastboot udp`).
    #[arg(long, short = 's', value_name = "SERIAL")]
    serial: Option<String>,
    /// Which slot to write on A/B phones.
    #[arg(long, value_enum, default_value = "inactive")]
    slot: SlotArg,
    /// Print the commands that would be sent (after reading the device's variables);
    /// with no phone connected (and no -s), a preview for a phone as the profile describes
    /// it, saying what it assumed.
    #[arg(long)]
    dry_run: bool,
    /// Flash only these partitions (comma-separated, without slot suffix).
    #[arg(long, value_delimiter = ',', value_name = "PARTS")]
    only: Vec<String>,
    /// Skip partitions whose image is the one this host last flashed there.
    #[arg(long)]
    skip_unchanged: bool,
    /// With --only: make the written slot active too (a whole flash does so by itself).
    #[arg(long)]
    set_active: bool,
    /// Flash even if the device reports another product than the profile's.
    #[arg(long)]
    force: bool,
    /// Reboot the phone when done.
    #[arg(long)]
    reboot: bool,
    /// Where the state (/home, /var) follows the system image on its partition (the real
    /// phones' userdata): write zeros over its start too, so the next boot makes a new,
    /// empty one. Needed for the first install of a system with `state.encryption`.
    #[arg(long)]
    erase_state: bool,
    /// Print the report as JSON on stdout.
    #[arg(long)]
    json: bool,
}

/// Loads the manifest and flash plan of the build in `out`, checking they are `profile`'s.
pub(super) fn load_build(profile: &Profile, out: &Path) -> Result<(publish::Manifest, publish::FlashPlan)> {
    let manifest = publish::load_manifest_for(profile, out)?;
    let plan_path = out.join(publish::FLASH_PLAN);
    let plan: publish::FlashPlan = serde_json::from_slice(
        &std::fs::read(&plan_path).map_err(|e| util::user_error(e, format!("reading {}", plan_path.display())))?,
    )
    .map_err(|e| util::user_error(e, format!("parsing {}", plan_path.display())))?;
    Ok((manifest, plan))
}

pub(super) fn cmd_boot(g: &Global, a: &BootArgs) -> Result<ExitCode> {
    let repo = find_repo(g)?;
    let profile = a.target.load(&repo)?;
    let out = a.target.out_dir(&repo);
    let (manifest, plan) = load_build(&profile, &out)?;
    let boot = publish::image_file(&out, &manifest, plan::ImageName::Boot.file_name())?;
    let mut client = flash::client::Client::new(flash::client::connect(a.serial.as_deref(), &*term::TERMINAL)?);
    client.on_info = Box::new(|m| progress(&format!("(bootloader) {m}")));
    flash::boot(&mut client, &plan, &boot, a.force, &progress)?;
    progress(&format!("booting generation {}'s boot.img from RAM on {}", manifest.generation, client.name()));
    Ok(ExitCode::SUCCESS)
}

pub(super) fn cmd_flash(g: &Global, a: &FlashArgs) -> Result<ExitCode> {
    let repo = find_repo(g)?;
    let profile = a.target.load(&repo)?;
    let out = a.target.out_dir(&repo);
    let (manifest, plan) = load_build(&profile, &out)?;
    let store = open_store(g)?;
    let mut images = std::collections::BTreeMap::new();
    for (name, info) in &manifest.images {
        let path = publish::image_file_linked(&store, &out, &manifest, name)?;
        images.insert(name.clone(), flash::Image { path, sha256: info.sha256.hex() });
    }
    let flashed = store.root().join(".mobix/flashed").join(profile.instance().as_str());
    let opts = flash::Options {
        slot: a.slot.into(),
        only: (!a.only.is_empty()).then_some(a.only.as_slice()),
        skip_unchanged: a.skip_unchanged,
        dry_run: a.dry_run,
        force: a.force,
        reboot: a.reboot,
        set_active: a.set_active,
        erase_state: a.erase_state,
    };
    let report = match flash::client::connect(a.serial.as_deref(), &*term::TERMINAL) {
        // A dry run needs no phone: the flash plan is on disk.
        Err(_) if a.dry_run && a.serial.is_none() => {
            progress(&format!(
                "no phone in fastboot mode on USB: previewing generation {} of {} for a phone as its profile \
                 describes it",
                manifest.generation,
                profile.shown()
            ));
            flash::preview(&plan, &images, &opts)?
        }
        transport => {
            let mut client = flash::client::Client::new(transport?);
            client.on_info = Box::new(|m| progress(&format!("(bootloader) {m}")));
            progress(&format!(
                "{} generation {} of {} over {}",
                if a.dry_run { "planning to flash" } else { "flashing" },
                manifest.generation,
                profile.shown(),
                client.name()
            ));
            flash::run(&mut client, &plan, &images, &opts, &flashed, &*term::TERMINAL)?
        }
    };
    for note in &report.assumed {
        progress(&format!("assumed: {note}"));
    }
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else if a.dry_run {
        for action in &report.actions {
            println!("would {action}");
        }
        if report.actions.is_empty() {
            println!("would write nothing");
        }
        for d in &report.destroys {
            println!("would destroy: {d}");
        }
    }
    if !a.dry_run {
        let sent: u64 = report.steps.iter().map(|s| s.bytes).sum();
        progress(&format!(
            "done: {} partition(s) written, {} skipped, {sent} bytes sent",
            report.steps.iter().filter(|s| !s.skipped).count(),
            report.steps.iter().filter(|s| s.skipped).count()
        ));
    }
    Ok(ExitCode::SUCCESS)
}
