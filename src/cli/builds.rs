//! `mobix build` and `mobix kernel check|config`: the pipeline's results, printed.

use super::*;
use crate::profile::Init;
use mobix_bootctl::contract::{USB_HOST_ADDRESS, USB_PHONE_ADDRESS};

#[derive(Args, Debug)]
pub(super) struct BuildArgs {
    #[command(flatten)]
    target: DeviceOut,
    /// Print the manifest as JSON on stdout.
    #[arg(long)]
    json: bool,
    /// Print the plan (every recipe, its store path, whether it is built) as JSON and stop.
    #[arg(long)]
    dry_run: bool,
    /// For profiles naming both a kernel source and a package: build the kernel from
    /// source, or use the prebuilt package (the substitute) [default: the package where
    /// the profile names one, else the source].
    #[arg(long, value_enum, value_name = "source|substitute")]
    kernel_from: Option<KernelFromArg>,
    #[command(flatten)]
    caches: super::settings::CacheArgs,
    /// Also copy the images, flash plan, flash.sh and manifest to DIR as real files (the out
    /// directory links into the store), to flash from another machine.
    #[arg(long, value_name = "DIR", conflicts_with = "dry_run")]
    export: Option<PathBuf>,
    /// Refuse to change mobix.lock: fail when the config names a Debian package the lock
    /// does not pin yet (for CI).
    #[arg(long)]
    locked: bool,
}

/// `--kernel-from`: the command line's words for [`plan::KernelFrom`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(super) enum KernelFromArg {
    /// Build the `kernels/` spec from source.
    Source,
    /// Use the prebuilt package the profile names as substitute.
    Substitute,
}

impl From<KernelFromArg> for plan::KernelFrom {
    fn from(a: KernelFromArg) -> Self {
        match a {
            KernelFromArg::Source => plan::KernelFrom::Source,
            KernelFromArg::Substitute => plan::KernelFrom::Substitute,
        }
    }
}

#[derive(Subcommand, Debug)]
pub(super) enum KernelCmd {
    /// Assemble the configuration (base, fragments, mobix's options, olddefconfig) and
    /// write the final .config; reports options that were dropped (exit 1).
    Config {
        #[command(flatten)]
        target: DeviceOut,
        /// Where to write the .config [default: <out>/kernel.config].
        #[arg(long, value_name = "FILE")]
        config_out: Option<PathBuf>,
    },
    /// Report, without building, whether every option asked for survives, and if not,
    /// which dependency dropped it (exit 1).
    Check {
        #[command(flatten)]
        target: DeviceOut,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
}

pub(super) fn cmd_build(g: &Global, a: &BuildArgs) -> Result<ExitCode> {
    let t0 = Instant::now();
    let repo = find_repo(g)?;
    let profile = a.target.load(&repo)?;
    for source in &profile.sources {
        let n = std::fs::read_to_string(source).ok().as_deref().and_then(profile::import::imported_notes);
        if let Some(n) = n {
            progress(&format!(
                "{} was written by `mobix device import`: {n} of its values are guesses or were not mapped (the \
                 notes at its end say which); check them before flashing, and delete a note once checked",
                source.display()
            ));
        }
    }
    let gather = Gather {
        kernel_from: a.kernel_from.map(Into::into),
        locked: a.locked,
        dry_run: a.dry_run,
        caches: Some(&a.caches),
    };
    let SystemInputs { repo, profile, lock, store, inputs, caches } = system_inputs_of(g, repo, profile, &gather)?;
    let ctx = builder_ctx_with(&store, caches);
    let pipe = pipeline::Pipeline { ctx: &ctx, profile: &profile, lock: &lock, inputs: &inputs };
    if a.dry_run {
        let d = pipe.dry_run(&a.target.out_dir(&repo))?;
        let count = |w: &str| d.recipes.iter().filter(|r| r.will == w).count();
        let substitute = match count("substitute") {
            0 => String::new(),
            n => format!(
                ", {n} to substitute ({:.1} MiB from binary caches)",
                d.substitute_bytes as f64 / (1u64 << 20) as f64
            ),
        };
        progress(&format!(
            "{} of {} recipes to build{substitute}; {} generation {}",
            count("build"),
            d.recipes.len(),
            if d.new_generation { "new" } else { "unchanged" },
            d.generation
        ));
        println!("{}", serde_json::to_string_pretty(&d)?);
        return Ok(ExitCode::SUCCESS);
    }
    let out = a.target.out_dir(&repo);
    let b = pipe.build(&out)?;
    let c = b.counts;
    if c.built + c.substituted == 0 {
        progress(&format!(
            "nothing to build: every store path was already present ({:.2}s)",
            t0.elapsed().as_secs_f64()
        ));
    } else {
        let downloads = match c.downloads {
            0 => String::new(),
            1 => " (1 download)".to_string(),
            n => format!(" ({n} downloads)"),
        };
        let from_caches = match c.substituted {
            0 => String::new(),
            _ => format!(" ({:.1} MiB from binary caches)", c.substituted_bytes as f64 / (1 << 20) as f64),
        };
        progress(&format!(
            "built {} store paths{downloads}, substituted {}{from_caches}, {} already present, in {:.1}s",
            c.built,
            c.substituted,
            c.present,
            t0.elapsed().as_secs_f64()
        ));
    }
    progress(&format!(
        "{} generation {} ({}) -> {}",
        if b.new_generation { "new" } else { "unchanged" },
        b.generation,
        b.images.toplevel,
        out.display()
    ));
    if let Some(dest) = &a.export {
        let bytes = publish::export(&store, &out, dest)?;
        progress(&format!(
            "exported the images and flash plan to {} as files ({:.1} MiB): copy that directory to another \
             machine and flash it there with `./flash.sh` or `mobix flash {} --out DIR`",
            dest.display(),
            bytes as f64 / (1u64 << 20) as f64,
            profile.selection_args()
        ));
    }
    for line in next_steps(&profile, a.target.out.as_deref()) {
        progress(&line);
    }
    if a.json {
        println!("{}", serde_json::to_string_pretty(&b.manifest)?);
    }
    Ok(ExitCode::SUCCESS)
}

/// Said of a systemd system no one can log in to.
const NO_LOGIN: &str = "no account can log in yet (root is locked): give a user `authorized_keys` and \
                        `ssh: { enable: true }`, or a `hashed_password`, in a system config (docs/system-config.md)";

/// What to do with a build next, for the device it is for: on a real phone unlocking,
/// fastboot mode and the flash command (with what flashing overwrites); on the emulated
/// phone `mobix test`.
fn next_steps(profile: &Profile, out: Option<&Path>) -> Vec<String> {
    let mut args = profile.selection_args();
    if let Some(o) = out {
        args.push_str(&format!(" --out {}", o.display()));
    }
    if profile.device.qemu.is_some() {
        let mut lines =
            vec![format!("next: `mobix test {args}` boots it in QEMU; `mobix run {args}` gives you its console")];
        if profile.system.ssh.enable {
            lines.push(format!(
                "  to log in: `mobix run {args} --ssh-port 2222`, then `{}`",
                profile.system.ssh_command("127.0.0.1", Some(2222), ssh_identity(&profile.system).as_deref())
            ));
        } else if profile.system.init == Init::Systemd && !profile.system.can_log_in() {
            lines.push(format!("  {NO_LOGIN}"));
        }
        if !profile.system.ssh.enable && profile.system.users.values().any(|u| !u.authorized_keys.is_empty()) {
            lines.push(
                "  note: the config gives users `authorized_keys` but runs no ssh server: \
                 `ssh: { enable: true }` lets them log in with them"
                    .to_string(),
            );
        }
        return lines;
    }
    let plan = publish::flash_plan(profile, false);
    let userdata =
        plan.steps.iter().any(|s| matches!(s, publish::Step::Flash { partition, .. } if partition == "userdata"));
    let mut lines = vec![
        format!("next, to put it on the {}:", profile.device.name),
        "  1. unlock its bootloader, once: allow OEM unlocking in Android's developer options, then \
         `fastboot flashing unlock` (older phones: `fastboot oem unlock`); unlocking erases the phone"
            .to_string(),
        match &profile.device.identity.fastboot_keys {
            Some(keys) => {
                format!("  2. put it in fastboot mode: power it off, then hold {keys}, and connect it by USB")
            }
            None => "  2. put it in fastboot mode (the keys held at power-on differ between phones and its profile \
                     does not name them: `identity.fastboot_keys`), and connect it by USB"
                .to_string(),
        },
        format!(
            "  3. `mobix flash {args} --dry-run` says what would be written{}; then `mobix flash {args} --reboot`",
            match (userdata, plan.state_after) {
                (true, Some(at)) => format!(
                    " and that userdata's first {} MiB (Android's data) are overwritten, the state after them kept",
                    at >> 20
                ),
                (true, None) => " and that userdata (the phone's data) is overwritten".into(),
                (false, _) => String::new(),
            }
        ),
    ];
    if plan.ab {
        lines.push(
            "     it writes the inactive slot and switches to it last; the other slot keeps what the phone booted"
                .to_string(),
        );
    }
    if plan.state_after.is_some() && profile.system.state.encrypted() {
        lines.push(
            "     the first install of this encrypted state adds `--erase-state` (the first boot makes the state only \
             where it is blank; Android left data there); later flashes leave it out, or the state is erased"
                .to_string(),
        );
    }
    // tty0..tty63 are the screen's virtual terminals; the rest are serial ports.
    let c = &profile.device.console;
    let console = match c.strip_prefix("tty") {
        Some(n) if !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) => format!("the screen ({c})"),
        _ => format!("the serial port {c}"),
    };
    lines.push(match (&profile.device.usb_network, profile.system.init, profile.system.ssh.enable) {
        (Some(_), Init::Systemd, true) => format!(
            "  4. to log in, over the USB cable once it boots (your computer gets {USB_HOST_ADDRESS} by DHCP): \
             `{}`",
            profile.system.ssh_command(USB_PHONE_ADDRESS, None, ssh_identity(&profile.system).as_deref())
        ),
        (Some(_), Init::Systemd, false) => format!(
            "  4. it answers at {USB_PHONE_ADDRESS} over the USB cable, but runs no ssh server: set `ssh: {{ enable: true }}` \
             and a user with `authorized_keys` in the system config to log in"
        ),
        (None, Init::Systemd, _) if !profile.system.can_log_in() => {
            format!("  4. its console is {console}; {NO_LOGIN}")
        }
        (Some(_), Init::Minimal, _) => format!(
            "  4. for a shell, over the USB cable once it boots (your computer gets {USB_HOST_ADDRESS} by DHCP): \
             `telnet {USB_PHONE_ADDRESS}`"
        ),
        (None, _, _) => format!("  4. its console is {console}"),
    });
    lines
}

pub(super) fn cmd_kernel(g: &Global, k: &KernelCmd) -> Result<ExitCode> {
    let (target, json) = match k {
        KernelCmd::Config { target, .. } => (target, false),
        KernelCmd::Check { target, json } => (target, *json),
    };
    let repo = find_repo(g)?;
    let profile = target.load(&repo)?;
    if profile.device.kernel.source.is_none() {
        return Err(Fail::new(format!(
            "{} uses a prebuilt kernel package; it has no kernel to configure",
            profile.shown()
        ))
        .hint("a profile's `kernel.source` names a kernels/ spec")
        .into());
    }
    let lock = Lock::load(&repo)?;
    let store = open_store(g)?;
    let inputs = pipeline::host_facts(&repo, &profile, plan::KernelFrom::Source, &store)?;
    let sys = plan::system(&profile, &lock, &inputs)?;
    let cfg = plan::kernel_config_recipe(&sys.plan).expect("a source kernel has a config recipe").path.clone();
    let ctx = builder_ctx(&store)?;
    build::realise(&ctx, &sys.plan, std::slice::from_ref(&cfg))?;
    let dir = store.host_path(&cfg);
    let report = build::kernel::read_report(&dir)?;
    if let KernelCmd::Config { config_out, .. } = k {
        let dest = config_out.clone().unwrap_or_else(|| target.out_dir(&repo).join("kernel.config"));
        util::write_atomic(&dest, &std::fs::read(dir.join("config"))?)?;
        progress(&format!("wrote {}", dest.display()));
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&serde_json::json!({"version": 1, "report": report}))?);
    }
    if report.dropped.is_empty() {
        progress(&format!("all {} options asked for are in the configuration ({})", report.asked, sys.kernel_origin));
        Ok(ExitCode::SUCCESS)
    } else {
        Err(Fail::new(format!(
            "{} of {} options asked for were dropped by olddefconfig:\n{}",
            report.dropped.len(),
            report.asked,
            report.describe()
        ))
        .hint("enable what each one depends on in its fragment")
        .into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn steps(device: &str, config: Option<&str>) -> String {
        let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("system.yaml");
        if let Some(c) = config {
            std::fs::write(&file, c).unwrap();
        }
        let sel = crate::profile::Selection { variant: None, config: config.map(|_| file.as_path()) };
        next_steps(&crate::profile::load_with(repo, device, sel).unwrap(), None).join("\n")
    }

    /// The fastboot keys are the profile's, said only where known (issue 30: Volume Down +
    /// Power was stated for the OnePlus 6, whose fastboot keys are Volume Up + Power).
    #[test]
    fn next_steps_name_the_phones_own_fastboot_keys() {
        let said = steps("oneplus-enchilada", None);
        assert!(said.contains("power it off, then hold Volume Up + Power, and connect it by USB"), "{said}");
        assert!(steps("google-sargo", None).contains("hold Volume Down + Power"));
        let mut profile = crate::profile::load_with(
            Path::new(env!("CARGO_MANIFEST_DIR")),
            "oneplus-enchilada",
            crate::profile::Selection { variant: None, config: None },
        )
        .unwrap();
        profile.device.identity.fastboot_keys = None;
        let said = next_steps(&profile, None).join("\n");
        assert!(said.contains("its profile does not name them: `identity.fastboot_keys`"), "{said}");
        assert!(!said.contains("Volume"), "{said}");
    }

    /// Keys without an ssh server is a silent mistake no more.
    #[test]
    fn keys_without_an_ssh_server_are_said() {
        let keyed = "users:\n  alice:\n    authorized_keys: [\"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJ5f alice\"]\n";
        let said = steps("qemu-aarch64", Some(keyed));
        assert!(said.contains("runs no ssh server: `ssh: { enable: true }`"), "{said}");
        let said = steps("qemu-aarch64", Some(&format!("{keyed}ssh: {{ enable: true }}\n")));
        assert!(!said.contains("runs no ssh server"), "{said}");
    }
}
