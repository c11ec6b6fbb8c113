//! `mobix deploy`: a new generation onto a running phone over ssh.

use super::*;
use crate::deploy::{self, Outcome, Ssh, Target};

#[derive(Args, Debug)]
#[command(
    mut_arg("config", |a| a.help("The system config to build and deploy (YAML; `mobix config reference` lists its keys)")),
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
    /// A file holding the PIN of the phone's encrypted state: after the reboot mobix sends it
    /// to the phone's stage-1 over ssh (`state: { remote_unlock: true }`), to the host key
    /// the running phone reported.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["gc", "no_reboot"])]
    pin_file: Option<PathBuf>,
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
    let gather = Gather { dry_run: a.dry_run, caches: Some(&a.caches), ..Gather::default() };
    let SystemInputs { repo, profile, lock, store, inputs, caches } = system_inputs(g, &a.target, &gather)?;
    let pin = match &a.pin_file {
        Some(file) if !profile.system.state.encrypted() => {
            return Err(Fail::new(format!(
                "--pin-file {}: {} encrypts nothing, so the phone asks for no PIN",
                file.display(),
                profile.instance()
            ))
            .hint("leave --pin-file out, or deploy a system with `state: { encryption: luks2, remote_unlock: true }`")
            .into())
        }
        Some(file) => Some(super::emulator::read_pin_file(file)?),
        None => None,
    };
    let ctx = builder_ctx_with(&store, caches);
    let pipe = pipeline::Pipeline { ctx: &ctx, profile: &profile, lock: &lock, inputs: &inputs };
    let opts = deploy::Options {
        no_reboot: a.no_reboot,
        dry_run: a.dry_run,
        timeout: Duration::from_secs(a.timeout),
        kernel_in_place: a.kernel_in_place,
        pin,
    };
    let report = deploy::run(&pipe, &ssh, &a.target.out_dir(&repo), &opts)?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    }
    Ok(match report.outcome {
        None | Some(Outcome::Good { .. }) => ExitCode::SUCCESS,
        Some(Outcome::FellBack { .. } | Outcome::Pending { .. }) => ExitCode::from(1),
    })
}

/// `mobix deploy --gc` (`deploy::collect_garbage`).
fn cmd_gc(g: &Global, a: &DeployArgs, ssh: &Ssh) -> Result<ExitCode> {
    let store = open_store(g)?;
    let plan = deploy::collect_garbage(&store, ssh, a.keep.map(|k| k as usize), a.dry_run, &*term::TERMINAL)?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&serde_json::json!({ "target": ssh.target, "gc": plan }))?);
    }
    Ok(ExitCode::SUCCESS)
}
