//! `mobix deploy`: a new generation onto a running phone over ssh.

use super::*;
use crate::deploy::{self, Outcome, Ssh, Target};
use mobix_bootctl::contract::{BootSpec, Generation};

#[derive(Args, Debug)]
#[command(
    mut_arg("config", |a| a.help("The system config to build and deploy (YAML; devices/README.md lists its keys)")),
    mut_arg("out", |a| a.help(
        "The out directory whose generations the deployed one joins (its numbering, the phone's last known \
         record, the emulated phone's host key) [default: out/<device>/ in the mobix tree]"
    ))
)]
pub(super) struct DeployArgs {
    #[command(flatten)]
    target: DeviceOut,
    #[command(flatten)]
    caches: super::settings::CacheArgs,
    /// The running phone: `ssh://USER@HOST[:PORT]` (USER must be root on the phone; the
    /// emulated phone of `mobix run --ssh-port P`: `ssh://root@127.0.0.1:P`).
    #[arg(long, value_name = "URL")]
    to: String,
    /// The ssh key to log in with (default: ssh's own choice, ~/.ssh/config included).
    #[arg(long, short = 'i', value_name = "FILE")]
    identity: Option<PathBuf>,
    /// An option for ssh (`-o`), e.g. `UserKnownHostsFile=FILE`; repeatable.
    #[arg(long, value_name = "OPTION")]
    ssh_option: Vec<String>,
    /// Send the generation and make it the trial, but leave the reboot to the owner.
    #[arg(long)]
    no_reboot: bool,
    /// Build the system and print what would be sent and done; the phone is not changed.
    #[arg(long)]
    dry_run: bool,
    /// How long to wait for the phone to come back and settle after the reboot, in seconds.
    #[arg(long, default_value = "600", value_name = "SECONDS")]
    timeout: u64,
    /// Print the report as JSON on stdout.
    #[arg(long)]
    json: bool,
    /// On a phone without A/B slots, write a changed boot image over the running one. If
    /// the new kernel does not come up, nothing falls back: the phone needs a cable.
    #[arg(long)]
    kernel_in_place: bool,
    /// Build and send nothing: remove from the phone the generations that failed or that
    /// its boot-state record no longer holds, and every store path no remaining
    /// generation needs (never the booted, default or last good generation's).
    #[arg(long, conflicts_with = "no_reboot")]
    gc: bool,
    /// With --gc: keep at most N generations (the booted, default and last good ones
    /// always stay, then the newest).
    #[arg(long, value_name = "N", requires = "gc", value_parser = clap::value_parser!(u32).range(1..))]
    keep: Option<u32>,
}

#[derive(serde::Serialize)]
struct BootImage {
    /// None: written over the running boot image (--kernel-in-place).
    slot: Option<char>,
    bytes: usize,
}

#[derive(serde::Serialize)]
struct Report<'a> {
    target: &'a Target,
    plan: &'a deploy::Plan,
    #[serde(skip_serializing_if = "Option::is_none")]
    sent: Option<deploy::Sent>,
    /// The slot a new boot image goes to, and its size.
    #[serde(skip_serializing_if = "Option::is_none")]
    boot_image: Option<BootImage>,
    #[serde(skip_serializing_if = "Option::is_none")]
    outcome: Option<Outcome>,
}

pub(super) fn cmd_deploy(g: &Global, a: &DeployArgs) -> Result<ExitCode> {
    let target = Target::parse(&a.to)?;
    if let Some(key) = &a.identity {
        if !key.is_file() {
            return Err(Fail::new(format!("-i {}: no such key file", key.display()))
                .hint("give the private key whose public half root has in the system config (`users: root: authorized_keys`)")
                .into());
        }
    }
    let mut options = a.ssh_option.clone();
    // The emulated phone that `mobix run --ssh-port` serves on this port: its host key is
    // kept beside its disk (made at its first boot, forgotten with its state), so a deploy
    // to it needs no key accepted by hand. The user's own -o options come first and win.
    if let Ok(repo) = find_repo(g) {
        if let Some(known) = crate::vm::emulated_known_hosts(&a.target.out_dir(&repo), &target.host, target.port) {
            options.push(format!("UserKnownHostsFile={}", known.display()));
            options.push("StrictHostKeyChecking=accept-new".into());
        }
    }
    let ssh = Ssh { target: target.clone(), identity: a.identity.clone(), options };
    if a.gc {
        return cmd_gc(g, a, &ssh);
    }
    let super::emulator::SystemInputs { repo, profile, lock, store, inputs } =
        super::emulator::system_inputs(g, &a.target, a.dry_run)?;
    let mut ctx = builder_ctx(&store)?;
    a.caches.apply(&mut ctx)?;
    progress(&format!("asking {} what it has", target.host));
    let phone = ssh.status()?;
    if let Some(why) = deploy::layout_change(&phone, profile.device.state_offset()) {
        return Err(Fail::new(format!("{} cannot take this system by a deploy: {why}", target.host))
            .hint(format!(
                "a deploy leaves the phone's partitions as they are. Set `system.size` back to what the phone was \
                 flashed with, or flash the new size (`mobix build --device {d}`, then `mobix flash --device {d}`; \
                 where the state shares the system partition, the flash starts /home and /var afresh)",
                d = a.target.device
            ))
            .into());
    }
    // What the phone refuses whatever the system is: said before anything is built.
    if phone.filesystem != "ext4" {
        return Err(Fail::new(format!(
            "the phone's system filesystem is {}, which cannot take new store paths",
            phone.filesystem
        ))
        .hint("deploys need `system: { filesystem: ext4 }`; flash this generation instead")
        .into());
    }
    let pipe = pipeline::Pipeline { ctx: &ctx, profile: &profile, lock: &lock, inputs: &inputs };
    let lineage = pipe.lineage(&a.target.out_dir(&repo));
    let built = pipe.build_system(lineage.out(), !a.dry_run)?;
    let boot_json = store.host_path(&built.toplevel).join("boot.json");
    let new: BootSpec = serde_json::from_slice(&std::fs::read(&boot_json)?)?;
    let closure = store.closure(std::slice::from_ref(&built.toplevel))?;
    let sizes = |p: &crate::store::StorePath| generation::path_size(&store, p);
    let refs = |p: &crate::store::StorePath| store.references(p).unwrap_or_default();
    let plan =
        deploy::plan(built.generation, &built.toplevel, &closure, &refs, &sizes, &phone.store, &phone.boot_spec, &new);
    if let Some(g) = phone.generations.iter().find(|e| e.generation == plan.generation) {
        if g.toplevel != built.toplevel.phone_path() {
            return Err(Fail::new(format!(
                "the phone's generation {} is another system ({}) than this host's ({})",
                plan.generation, g.toplevel, built.toplevel
            ))
            .hint("the phone was flashed or deployed from another store; flash it from this one first")
            .into());
        }
    }
    if let Some(words) = deploy::failed_before(&phone, &built.toplevel) {
        progress(&format!("warning: {words}"));
    }
    progress(&format!(
        "generation {}: {} of {} store paths to send ({:.1} MiB before compression); the phone is running \
         generation {} ({} MiB free on its system filesystem)",
        plan.generation,
        plan.send.len(),
        closure.len(),
        plan.send_bytes as f64 / (1u64 << 20) as f64,
        phone.booted.generation,
        phone.free_bytes >> 20
    ));
    // A new boot image goes to the inactive A/B slot; a phone without slots would have to
    // overwrite the boot image it runs, and nothing could fall back from that.
    let boot_image = match (&plan.boot_image_change, phone.booted.slot) {
        (None, _) => None,
        (Some(why), None) if !a.kernel_in_place => {
            return Err(Fail::new(format!(
                "generation {} needs a new boot image ({why}), and {} has no A/B slots to put it in beside the \
                 running one",
                plan.generation, a.target.device
            ))
            .hint(format!(
                "overwriting the only boot image leaves nothing to fall back to: if the new kernel does not come up, \
                 or no generation runs under it, the phone stays in a boot loop or a rescue shell until you flash it \
                 with a cable. Flash instead (`mobix build --device {d}`, then `mobix flash --device {d}` in fastboot \
                 mode), or accept that with --kernel-in-place",
                d = a.target.device
            ))
            .into());
        }
        (Some(why), None) => {
            let img = pipe_boot_image(&pipe, &store)?;
            progress(&format!(
                "generation {} needs a new boot image ({why}): {} KiB written over the running one \
                 (--kernel-in-place: if its kernel does not come up, nothing falls back)",
                plan.generation,
                img.len() >> 10
            ));
            Some((None, img))
        }
        (Some(why), Some(running)) => {
            let other = mobix_bootctl::contract::Slot::from_index(1 - running.index()).expect("two slots");
            let img = pipe_boot_image(&pipe, &store)?;
            progress(&format!(
                "generation {} needs a new boot image ({why}): {} KiB for slot {other} (the phone runs slot {running}), \
                 tried by the bootloader as after a flash",
                plan.generation,
                img.len() >> 10
            ));
            Some((Some(other), img))
        }
    };
    // Room for the paths plus a margin for the filesystem's own blocks.
    if plan.send_bytes + plan.send_bytes / 10 + (4 << 20) > phone.free_bytes {
        return Err(Fail::new(format!(
            "the phone's system filesystem has {} MiB free, too little for {} MiB of new store paths",
            phone.free_bytes >> 20,
            plan.send_bytes >> 20
        ))
        .hint("remove old generations from the phone (`mobix deploy --gc`), or flash a larger `system.size`")
        .into());
    }
    if a.dry_run {
        for (p, size) in &plan.send {
            progress(&format!("  would send {p} ({} KiB)", size >> 10));
        }
        progress(&format!(
            "would make generation {} the phone's trial and default{}",
            plan.generation,
            if a.no_reboot { "" } else { ", then reboot it" }
        ));
        match &boot_image {
            Some((Some(slot), _)) => {
                progress(&format!("would write the boot image to boot_{} and make slot {slot} active", slot.letter()))
            }
            Some((None, _)) => progress("would write the boot image over the running one (boot)"),
            None => {}
        }
        return finish(
            a,
            &Report {
                target: &target,
                plan: &plan,
                boot_image: boot_image.as_ref().map(|(s, b)| BootImage { slot: s.map(|s| s.letter()), bytes: b.len() }),
                sent: None,
                outcome: None,
            },
            ExitCode::SUCCESS,
        );
    }
    let entry = Generation {
        generation: plan.generation,
        toplevel: built.toplevel.phone_path(),
        kernel: new.kernel.clone(),
        cmdline: new.cmdline.clone(),
    };
    let (sent, said) = deploy::send(
        &store,
        &ssh,
        &plan,
        boot_image.as_ref().map(|b| (&b.1[..], b.0.is_none())),
        &entry,
        profile.system.boot.tries,
        &|m| term::TERMINAL.note(m),
    )?;
    progress(&format!("phone: {said} ({:.1}s)", sent.seconds));
    if a.no_reboot {
        progress(&format!(
            "generation {} boots at the phone's next reboot, as a trial: if it fails, the phone falls back by itself",
            plan.generation
        ));
        return finish(
            a,
            &Report {
                target: &target,
                plan: &plan,
                boot_image: boot_image.as_ref().map(|(s, b)| BootImage { slot: s.map(|s| s.letter()), bytes: b.len() }),
                sent: Some(sent),
                outcome: None,
            },
            ExitCode::SUCCESS,
        );
    }
    progress("rebooting the phone");
    // The connection ends with the reboot: its exit status says nothing.
    let _ = ssh.run("systemctl reboot 2>/dev/null || reboot");
    let (outcome, last) =
        deploy::wait(&ssh, &phone.boot_id, plan.generation, Duration::from_secs(a.timeout), &progress);
    if let Some(rec) = last.as_ref().and_then(deploy::record_of) {
        generation::save_ledger(&store, &store.lock()?, &lineage, &rec)?;
    }
    let code = match &outcome {
        Outcome::Good { generation } => {
            progress(&format!("generation {generation} booted and is good"));
            ExitCode::SUCCESS
        }
        Outcome::FellBack { generation, booted, reason } => {
            progress(&format!(
                "generation {generation} failed ({reason}); the phone fell back to generation {booted} by itself"
            ));
            ExitCode::from(1)
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
            progress(&format!(
                "generation {generation} has not settled within {}s: {seen}; look with `ssh {}@{} /run/current-system/init bless status`",
                a.timeout, target.user, target.host
            ));
            ExitCode::from(1)
        }
    };
    finish(
        a,
        &Report {
            target: &target,
            plan: &plan,
            boot_image: boot_image.as_ref().map(|(s, b)| BootImage { slot: s.map(|s| s.letter()), bytes: b.len() }),
            sent: Some(sent),
            outcome: Some(outcome),
        },
        code,
    )
}

/// `mobix deploy --gc`: the phone's garbage, decided from what this host's store knows of
/// the closures of the generations that stay.
fn cmd_gc(g: &Global, a: &DeployArgs, ssh: &Ssh) -> Result<ExitCode> {
    let store = open_store(g)?;
    progress(&format!("asking {} what it has", ssh.target.host));
    let phone = ssh.status()?;
    let rec = deploy::record_of(&phone);
    let closure = |toplevel: &str| -> Result<std::collections::BTreeSet<String>> {
        let path = crate::store::StorePath::parse(toplevel).ok().filter(|p| store.contains(p)).ok_or_else(|| {
            Fail::new(format!("{toplevel} is not in this host's store, so what it needs is unknown here"))
                .hint("collect from the host that built it, or deploy from this one first")
        })?;
        Ok(store.closure(&[path])?.iter().map(|p| p.base_name()).collect())
    };
    let plan = deploy::gc(&phone, rec.as_ref(), a.keep.map(|k| k as usize), &closure)?;
    progress(&format!(
        "generations kept: {:?}; dropped: {:?}; {} of {} store paths to remove",
        plan.keep_generations,
        plan.drop_generations,
        plan.remove.len(),
        phone.store.len()
    ));
    for p in &plan.remove {
        progress(&format!("  {} {p}", if a.dry_run { "would remove" } else { "removing" }));
    }
    if !a.dry_run && (!plan.remove.is_empty() || !plan.drop_generations.is_empty()) {
        let said = deploy::collect(ssh, &plan)?;
        progress(&format!("phone: {said}"));
    }
    if a.json {
        println!("{}", serde_json::to_string_pretty(&serde_json::json!({ "target": ssh.target, "gc": plan }))?);
    }
    Ok(ExitCode::SUCCESS)
}

/// The boot image of the system being deployed, built alone.
fn pipe_boot_image(pipe: &pipeline::Pipeline, store: &crate::store::Store) -> Result<Vec<u8>> {
    let v = pipe.profile.device.bootimg.header_version;
    if v >= 3 {
        return Err(Fail::new(format!(
            "this generation needs a new boot image, and {}'s header version {v} splits it over boot and \
             vendor_boot, which a deploy does not write yet",
            pipe.profile.shown()
        ))
        .hint(format!(
            "flash it: `mobix build {a}`, then `mobix flash {a}` in fastboot mode",
            a = pipe.profile.selection_args()
        ))
        .into());
    }
    let path = pipe.build_boot_image()?;
    let file = store.host_path(&path).join(crate::plan::ImageName::Boot.file_name());
    std::fs::read(&file).map_err(|e| util::user_error(e, format!("reading {}", file.display())))
}

fn finish(a: &DeployArgs, r: &Report, code: ExitCode) -> Result<ExitCode> {
    if a.json {
        println!("{}", serde_json::to_string_pretty(r)?);
    }
    Ok(code)
}
