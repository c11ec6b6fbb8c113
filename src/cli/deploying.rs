//! `mobix deploy`: a new generation onto a running phone over ssh.

use super::*;
use crate::deploy::{self, Outcome, Ssh, Target};
use mobix_bootctl::contract::{BootSpec, Generation};

#[derive(Args, Debug)]
pub(super) struct DeployArgs {
    #[command(flatten)]
    target: DeviceOut,
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
}

#[derive(serde::Serialize)]
struct Report<'a> {
    target: &'a Target,
    plan: &'a deploy::Plan,
    #[serde(skip_serializing_if = "Option::is_none")]
    sent: Option<deploy::Sent>,
    #[serde(skip_serializing_if = "Option::is_none")]
    outcome: Option<Outcome>,
}

pub(super) fn cmd_deploy(g: &Global, a: &DeployArgs) -> Result<ExitCode> {
    let target = Target::parse(&a.to)?;
    let ssh = Ssh { target: target.clone(), identity: a.identity.clone(), options: a.ssh_option.clone() };
    let super::emulator::SystemInputs { profile, lock, store, inputs, .. } =
        super::emulator::system_inputs(g, &a.target, a.dry_run)?;
    let ctx = builder_ctx(&store);
    progress(&format!("asking {} what it has", target.host));
    let phone = ssh.status()?;
    let pipe = pipeline::Pipeline { ctx: &ctx, profile: &profile, lock: &lock, inputs: &inputs };
    let built = pipe.build_system(!a.dry_run)?;
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
    if let Some(why) = &plan.boot_image_change {
        return Err(Fail::new(format!(
            "generation {} needs a new boot image ({why}), and deploying boot images is not supported yet",
            plan.generation
        ))
        .hint(format!(
            "build and flash it: `mobix build --device {d}` and `mobix flash --device {d}`",
            d = a.target.device
        ))
        .into());
    }
    if phone.filesystem != "ext4" {
        return Err(Fail::new(format!(
            "the phone's system filesystem is {}, which cannot take new store paths",
            phone.filesystem
        ))
        .hint("deploys need `system: { filesystem: ext4 }`; flash this generation instead")
        .into());
    }
    // Room for the paths plus a margin for the filesystem's own blocks.
    if plan.send_bytes + plan.send_bytes / 10 + (4 << 20) > phone.free_bytes {
        return Err(Fail::new(format!(
            "the phone's system filesystem has {} MiB free, too little for {} MiB of new store paths",
            phone.free_bytes >> 20,
            plan.send_bytes >> 20
        ))
        .hint("remove old generations from the phone by flashing a new system image, or make `system.size` larger")
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
        return finish(a, &Report { target: &target, plan: &plan, sent: None, outcome: None }, ExitCode::SUCCESS);
    }
    let entry = Generation {
        generation: plan.generation,
        toplevel: built.toplevel.phone_path(),
        kernel: new.kernel.clone(),
        cmdline: new.cmdline.clone(),
    };
    let (sent, said) =
        deploy::send(&store, &ssh, &plan, &entry, profile.system.boot.tries, &|m| term::TERMINAL.note(m))?;
    progress(&format!("phone: {said} ({:.1}s)", sent.seconds));
    if a.no_reboot {
        progress(&format!(
            "generation {} boots at the phone's next reboot, as a trial: if it fails, the phone falls back by itself",
            plan.generation
        ));
        return finish(a, &Report { target: &target, plan: &plan, sent: Some(sent), outcome: None }, ExitCode::SUCCESS);
    }
    progress("rebooting the phone");
    // The connection ends with the reboot: its exit status says nothing.
    let _ = ssh.run("systemctl reboot 2>/dev/null || reboot");
    let (outcome, last) =
        deploy::wait(&ssh, &phone.boot_id, plan.generation, Duration::from_secs(a.timeout), &progress);
    if let Some(rec) = last.as_ref().and_then(deploy::record_of) {
        generation::save_ledger(&store, &profile.instance(), &rec)?;
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
    finish(a, &Report { target: &target, plan: &plan, sent: Some(sent), outcome: Some(outcome) }, code)
}

fn finish(a: &DeployArgs, r: &Report, code: ExitCode) -> Result<ExitCode> {
    if a.json {
        println!("{}", serde_json::to_string_pretty(r)?);
    }
    Ok(code)
}
