//! `mobix test` and `mobix run`: the emulated phone, its scenarios and its fastboot mode.

use super::*;

#[derive(Args, Debug)]
pub(super) struct TestArgs {
    #[command(flatten)]
    target: DeviceOut,
    /// Seconds to wait for boot-complete.
    #[arg(long, default_value_t = 180)]
    timeout: u64,
    /// Print the outcome as JSON on stdout.
    #[arg(long)]
    json: bool,
    /// Run a fallback scenario instead (s0-s8, menu: see `mobix test --list-scenarios`):
    /// builds its generations, boots them power cycle after power cycle in `<out>/scenario-NAME/`
    /// and reports each boot.
    #[arg(long, value_name = "NAME")]
    scenario: Option<String>,
    /// List the fallback scenarios.
    #[arg(long)]
    list_scenarios: bool,
    /// Boot the emulated phone's own disk (`<out>/phone/`, as `mobix flash` left it)
    /// instead of a disk assembled fresh from the build.
    #[arg(long)]
    flashed: bool,
    /// What boots the phone: mobix's model of the A/B rules (fast), or the profile's U-Boot
    /// (`qemu.u_boot`, built by the store), checked against the model at every boot.
    #[arg(long, value_enum, default_value = "model")]
    bootloader: BootloaderArg,
    /// Forward 127.0.0.1:PORT to the phone's ssh (needs `ssh: {enable: true}`).
    #[arg(long, value_name = "PORT")]
    ssh_port: Option<u16>,
    /// Keep the state partition (/var, /home, host keys) of the last `mobix run` or `test`
    /// of this out directory, as flashing keeps a phone's data; without it the test
    /// starts from an empty phone.
    #[arg(long)]
    keep_state: bool,
    /// Keep a PNG of the phone's screen each time stage-1 shows another screen (boot
    /// screen, menu, notices) and at boot-complete, in DIR (per boot when there are several).
    #[arg(long, value_name = "DIR")]
    screenshots: Option<PathBuf>,
    /// The PIN of an encrypted state (`state.encryption`), read from FILE (its digits; a
    /// final newline is ignored) and typed on the phone's console whenever stage-1 asks for
    /// it: chosen at a first boot, to unlock at the others.
    #[arg(long, value_name = "FILE")]
    pin_file: Option<PathBuf>,
}

/// Where `mobix run` shows the phone's screen.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum ScreenArg {
    /// A window where the host has a display ($DISPLAY or $WAYLAND_DISPLAY), else none.
    Auto,
    Window,
    /// VNC on 127.0.0.1 (--vnc-port).
    Vnc,
    None,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum BootloaderArg {
    Model,
    UBoot,
}

#[derive(Args, Debug)]
pub(super) struct RunArgs {
    #[command(flatten)]
    target: DeviceOut,
    /// Extra kernel arguments, appended as a bootloader would (e.g. `mobix.poweroff`).
    #[arg(long, value_name = "ARGS", default_value = "")]
    append: String,
    /// What boots the phone (see `mobix test --help`).
    #[arg(long, value_enum, default_value = "model")]
    bootloader: BootloaderArg,
    /// Boot the emulated phone's own disk (`<out>/phone/`, as `mobix flash` left it) instead
    /// of a disk assembled fresh from the build.
    #[arg(long)]
    flashed: bool,
    /// Instead of booting, serve fastboot on TCP (loopback) and write into the emulated
    /// phone's disk (`<out>/phone/disk.img`, created empty the first time) until the host
    /// sends `reboot`.
    #[arg(long)]
    fastboot: bool,
    /// Start from an empty phone: drop the state partition (/var, /home, host keys) that
    /// `mobix run` otherwise keeps from its last run, as flashing keeps a phone's data.
    #[arg(long, conflicts_with = "flashed")]
    fresh: bool,
    /// With --fastboot: serve fastboot as a USB gadget (configfs and FunctionFS, on this
    /// machine's first USB device controller) instead of TCP, as a phone running Linux
    /// does. Needs root and the libcomposite and usb_f_fs modules.
    #[arg(long, requires = "fastboot")]
    usb: bool,
    /// Forward 127.0.0.1:PORT to the phone's ssh (needs `ssh: {enable: true}`) and print
    /// the ssh command that logs in.
    #[arg(long, value_name = "PORT", conflicts_with = "fastboot")]
    ssh_port: Option<u16>,
    /// The TCP port for --fastboot.
    #[arg(long, default_value_t = flash::tcp::DEFAULT_PORT)]
    port: u16,
    /// The max-download-size the emulated phone reports: 48 MiB by default, room for the
    /// boot image (`mobix boot` cannot split it) but small enough that a system image is
    /// split into pieces as on real phones.
    #[arg(long, value_name = "BYTES", default_value_t = 48 << 20)]
    max_download_size: u32,
    /// Where the phone's screen shows: a window (its keys: Up and Down for the volume keys,
    /// Enter for power), VNC, or nowhere (the console alone).
    #[arg(long, value_enum, default_value = "auto", conflicts_with = "fastboot")]
    screen: ScreenArg,
    /// The port of --screen vnc.
    #[arg(long, value_name = "PORT", default_value_t = 5900)]
    vnc_port: u16,
    /// Expose QEMU's QMP socket at PATH for scripts: `send-key` with `volumeup`,
    /// `volumedown` and `power` presses the phone's keys, `screendump` takes a screenshot.
    #[arg(long, value_name = "PATH", conflicts_with = "fastboot")]
    qmp: Option<PathBuf>,
    /// Tests: drop the fastboot connection after this many bytes of download data.
    #[arg(long, hide = true)]
    drop_after_bytes: Option<u64>,
}

pub(super) fn load_for_vm(
    g: &Global,
    t: &DeviceOut,
    bl: BootloaderArg,
    flashed: bool,
    keep_state: bool,
) -> Result<(Profile, vm::Prepared)> {
    let repo = find_repo(g)?;
    let out = t.out_dir(&repo);
    let profile = profile_of_build(&repo, t, &out)?;
    if profile.device.qemu.is_none() {
        return Err(Fail::new(format!(
            "device {} cannot be emulated: its profile has no qemu section",
            profile.codename
        ))
        .hint(format!(
            "flash it to the phone instead (`mobix flash --device {}`); `mobix test` and `run` boot profiles with \
                 a qemu section, such as qemu-aarch64",
            t.device
        ))
        .into());
    }
    let mut prepared =
        if flashed { vm::flashed_phone(&profile, &out)? } else { vm::prepare(&profile, &out, keep_state)? };
    prepared.firmware = firmware(g, &repo, &profile, bl)?;
    Ok((profile, prepared))
}

/// The emulated phone's bootloader; for U-Boot, built (or found) in the store first.
pub(super) fn firmware(g: &Global, repo: &Path, profile: &Profile, bl: BootloaderArg) -> Result<vm::Firmware> {
    if bl == BootloaderArg::Model {
        return Ok(vm::Firmware::Model);
    }
    let name = profile.device.qemu.as_ref().and_then(|q| q.u_boot.as_ref()).ok_or_else(|| {
        Fail::new(format!("device {} names no U-Boot to boot with", profile.codename))
            .hint("set `qemu.u_boot` in its profile to a bootloaders/ spec, or use --bootloader model")
    })?;
    let spec = profile::load_u_boot(repo, name)?;
    let lock = Lock::load(repo)?;
    let store = open_store(g)?;
    let (plan, bin) = plan::u_boot(&lock, &spec, &pipeline::cross_gcc_version(&store)?)?;
    build::realise(&builder_ctx(&store)?, &plan, std::slice::from_ref(&bin))?;
    Ok(vm::Firmware::UBoot { bin: store.host_path(&bin).join("u-boot.bin") })
}

pub(super) fn cmd_scenario(g: &Global, a: &TestArgs, name: &str) -> Result<ExitCode> {
    // The scenario builds its generations from this config: the lock must pin what it names.
    let SystemInputs { repo, profile, lock, store, inputs, caches } = system_inputs(g, &a.target, &Gather::default())?;
    let ctx = builder_ctx_with(&store, caches);
    let systems = pipeline::Pipeline { ctx: &ctx, profile: &profile, lock: &lock, inputs: &inputs };
    let dir = a.target.out_dir(&repo).join(format!("scenario-{name}"));
    let fw = firmware(g, &repo, &profile, a.bootloader)?;
    let report = vm::scenario::run(name, &profile, &systems, &fw, &dir, &progress)?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    }
    if report.passed {
        progress(&format!("scenario {name} passed ({} boots)", report.boots.len()));
        Ok(ExitCode::SUCCESS)
    } else {
        Err(Fail::new(format!("scenario {name} failed: {}", report.failures.join("; ")))
            .hint(format!("the whole serial log is in {}", report.serial_log.display()))
            .into())
    }
}

pub(super) fn cmd_test(g: &Global, a: &TestArgs) -> Result<ExitCode> {
    if a.list_scenarios {
        for (n, what) in vm::scenario::NAMES {
            println!("{n:6} {what}");
        }
        return Ok(ExitCode::SUCCESS);
    }
    if let Some(name) = &a.scenario {
        return cmd_scenario(g, a, name);
    }
    let (profile, mut prepared) = load_for_vm(g, &a.target, a.bootloader, a.flashed, a.keep_state)?;
    let pin = test_pin(&profile, a.pin_file.as_deref())?;
    if let Some(port) = a.ssh_port {
        prepared.net = ssh_forward(&profile, port)?;
    }
    prepared.say_user("mobix test", a.ssh_port);
    if let Some(d) = &a.screenshots {
        std::fs::create_dir_all(d).map_err(|e| anyhow::anyhow!("creating {}: {e}", d.display()))?;
    }
    let outcome = vm::test(
        &profile,
        &prepared,
        Duration::from_secs(a.timeout),
        a.screenshots.as_deref(),
        pin.as_deref(),
        &progress,
    )?;
    if let Some(d) = &a.screenshots {
        let kept: usize = outcome.boots.iter().map(|b| b.screenshots.len()).sum();
        progress(&format!("{kept} screenshots in {}", d.display()));
    }
    // What the phone learned (which generations are good or bad) goes into the next image.
    remember_state(g, &profile, &a.target, &prepared)?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&outcome)?);
    }
    if outcome.passed {
        progress(&format!(
            "boot-complete: generation {} ({}) after {:.1}s",
            outcome.generation.unwrap_or(0),
            outcome.toplevel.as_deref().unwrap_or("?"),
            outcome.seconds
        ));
        Ok(ExitCode::SUCCESS)
    } else {
        let hint = format!("the whole serial log is in {}", outcome.serial_log.display());
        let msg = match outcome.fell_back_to {
            Some(_) => format!(
                "generation {} of {} did not boot: {}",
                prepared.manifest.generation, profile.codename, outcome.reason
            ),
            None => format!("{} did not boot: {}", profile.codename, outcome.reason),
        };
        let hint = match outcome.fell_back_to {
            Some(g) => format!(
                "the phone keeps booting generation {g}; fix the system config and build again \
                 (`mobix generations list` shows each generation's standing); {hint}"
            ),
            None => hint,
        };
        Err(Fail::new(msg).hint(hint).into())
    }
}

/// The PIN `mobix test` types for an encrypted state, from `--pin-file`: needed exactly
/// when the system encrypts its state (else the boot would wait at the PIN screen until
/// the timeout), and one the phone's pad takes.
fn test_pin(profile: &Profile, file: Option<&Path>) -> Result<Option<String>> {
    let encrypted = profile.system.state.encrypted();
    let Some(file) = file else {
        if encrypted {
            return Err(Fail::new(format!(
                "{} encrypts its state (`state.encryption`): stage-1 waits for a PIN that mobix test was not given",
                profile.instance()
            ))
            .hint("put the PIN in a file and pass --pin-file FILE, or boot with `mobix run` and type it")
            .into());
        }
        return Ok(None);
    };
    if !encrypted {
        return Err(Fail::new(format!(
            "--pin-file {}: {} encrypts nothing, so no PIN is asked for",
            file.display(),
            profile.instance()
        ))
        .hint("leave --pin-file out, or set `state: { encryption: luks2 }` in the system config")
        .into());
    }
    read_pin_file(file).map(Some)
}

/// The PIN in `file` (`--pin-file` of `mobix test` and `mobix deploy`): digits the phone's
/// pad takes, a newline after them allowed.
pub(super) fn read_pin_file(file: &Path) -> Result<String> {
    let text = std::fs::read_to_string(file).map_err(|e| util::user_error(e, format!("reading {}", file.display())))?;
    let pin = text.strip_suffix('\n').unwrap_or(&text);
    if !mobix_bootctl::pin::pad_takes(pin) {
        return Err(Fail::new(format!(
            "{}: not a PIN the phone takes ({} to {} digits, nothing else)",
            file.display(),
            mobix_bootctl::pin::PIN_MIN,
            mobix_bootctl::pin::PIN_MAX
        ))
        .hint("write only the digits, e.g. `printf 1357 > pin`")
        .into());
    }
    Ok(pin.to_string())
}

pub(super) fn cmd_run(g: &Global, a: &RunArgs) -> Result<ExitCode> {
    if a.fastboot {
        return cmd_fastboot_mode(g, a);
    }
    let (profile, mut prepared) = load_for_vm(g, &a.target, a.bootloader, a.flashed, !a.fresh)?;
    if let Some(port) = a.ssh_port {
        prepared.net = ssh_forward(&profile, port)?;
        let login = profile.system.ssh_command("127.0.0.1", Some(port), ssh_identity(&profile.system).as_deref());
        progress(&format!(
            "ssh: `{login}` once the phone is up (its host key is made on the first boot and kept in its state \
             partition)"
        ));
        if profile.system.state.remote_unlock {
            progress(&format!(
                "remote unlock: while the phone asks for its PIN (not at the first boot, where it is chosen), \
                 `ssh -p {port} -o HostKeyAlias=mobix-unlock root@127.0.0.1` asks for it over ssh \
                 (docs/encryption.md)"
            ));
        }
    }
    prepared.display = screen_for_run(&profile, a)?;
    if let Some(sock) = &a.qmp {
        if sock.as_os_str().len() >= 108 {
            return Err(Fail::new(format!("{} is too long for a socket path (at most 107 bytes)", sock.display()))
                .hint("give a shorter --qmp path")
                .into());
        }
        prepared.qmp = Some(sock.clone());
        progress(&format!(
            "QMP on {}: `send-key` with volumeup, volumedown or power presses the phone's keys, `screendump` saves its screen",
            sock.display()
        ));
    }
    prepared.say_user("mobix run", a.ssh_port);
    let status = vm::run(&profile, &prepared, &a.append, &progress);
    // However the phone stopped (powered off, Ctrl-A X, a signal to mobix), what it
    // recorded about its generations is read back for the next build and `generations`.
    remember_state(g, &profile, &a.target, &prepared)?;
    let status = status?;
    if let Some(sig) = vm::interrupted() {
        progress(&format!("the emulated phone was stopped by signal {sig}; its boot-state record was read back"));
        return Ok(ExitCode::from(128 + sig as u8));
    }
    Ok(if status.success() { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

/// Where `mobix run` shows the screen, said to the user with the keys that press the
/// phone's buttons.
fn screen_for_run(profile: &Profile, a: &RunArgs) -> Result<vm::Display> {
    let has_screen = profile.device.qemu.as_ref().and_then(|q| q.screen).is_some();
    let desktop = std::env::var_os("DISPLAY").is_some() || std::env::var_os("WAYLAND_DISPLAY").is_some();
    if !has_screen && matches!(a.screen, ScreenArg::Window | ScreenArg::Vnc) {
        return Err(Fail::new(format!("the profile of {} gives the emulated phone no screen", profile.codename))
            .hint("set `qemu: { screen: { width: 720, height: 1440 } }` in the device profile (or leave it out for that default)")
            .into());
    }
    let keys = "its keys: Up and Down arrows for volume up and down, Enter for power";
    // QEMU draws its window with GTK, a module Debian ships apart (qemu-system-gui).
    let gtk = || {
        std::process::Command::new("qemu-system-aarch64")
            .args(["-display", "help"])
            .output()
            .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).lines().any(|l| l.trim() == "gtk"))
    };
    const NO_GTK: &str = "this QEMU cannot draw a window: its GTK display is not installed";
    const GTK_HINT: &str = "`apt-get install qemu-system-gui`, or `--screen vnc` to see the screen over VNC";
    Ok(match a.screen {
        ScreenArg::Window if !gtk() => return Err(Fail::new(NO_GTK).hint(GTK_HINT).into()),
        ScreenArg::Window => vm::Display::Window,
        ScreenArg::Auto if has_screen && desktop && !gtk() => {
            progress(&format!("{NO_GTK}, so the screen is not shown ({GTK_HINT})"));
            vm::Display::None
        }
        ScreenArg::Auto if has_screen && desktop => vm::Display::Window,
        ScreenArg::Vnc => vm::Display::Vnc(a.vnc_port),
        ScreenArg::Auto if has_screen => {
            progress("no desktop here ($DISPLAY): the screen is not shown (--screen vnc serves it over VNC)");
            vm::Display::None
        }
        ScreenArg::Auto | ScreenArg::None => vm::Display::None,
    })
    .inspect(|d| match d {
        vm::Display::Window => {
            progress(&format!("the phone's screen is in a QEMU window; {keys} (click into it first)"))
        }
        vm::Display::Vnc(port) => {
            progress(&format!("the phone's screen: VNC on 127.0.0.1:{port} (`vncviewer 127.0.0.1::{port}`); {keys}"))
        }
        vm::Display::None => {}
    })
}

/// Reads the emulated phone's boot-state record into the store's ledger of its lineage
/// (the out directory it was built into).
fn remember_state(g: &Global, profile: &Profile, t: &DeviceOut, prepared: &vm::Prepared) -> Result<()> {
    if let Some(state) = vm::read_state(profile, prepared)? {
        let store = open_store(g)?;
        let lin = generation::Lineage::of(&profile.instance(), &t.out_dir(&find_repo(g)?));
        generation::save_ledger(&store, &store.lock()?, &lin, &state)?;
    }
    Ok(())
}

/// The emulated phone's network with its ssh forwarded to 127.0.0.1:`port`.
fn ssh_forward(profile: &Profile, port: u16) -> Result<vm::Net> {
    if !profile.system.ssh.enable {
        return Err(Fail::new(format!("the system built for {} runs no ssh server", profile.codename))
            .hint("set `init: systemd` and `ssh: { enable: true }` in the system config, build, then run again")
            .into());
    }
    if std::net::TcpListener::bind(("127.0.0.1", port)).is_err() {
        return Err(Fail::new(format!("127.0.0.1:{port} is in use; --ssh-port needs a free port"))
            .hint("another program holds it, perhaps an earlier `mobix run --ssh-port` of yours still running: end it, or give another port")
            .into());
    }
    Ok(vm::Net::with_ssh(profile, port))
}

/// The profile as the build in `out` loaded it: with the system config it used (recorded
/// in its manifest) unless `--config` names one, which must then be that very config:
/// `test` and `run` boot what was built, they build nothing.
fn profile_of_build(repo: &Path, t: &DeviceOut, out: &Path) -> Result<Profile> {
    let used = publish::load_manifest(out).ok().and_then(|m| m.config);
    let Some(config) = t.config.as_ref().or(used.as_ref().map(|u| &u.path)) else {
        return t.load(repo);
    };
    let now =
        if t.config.is_some() { Some(publish::ConfigUsed::of(config)?) } else { publish::ConfigUsed::of(config).ok() };
    if now.map(|n| n.sha256) != used.as_ref().map(|u| u.sha256) {
        let said = match (&t.config, &used) {
            (Some(given), Some(u)) => format!(
                "the build in {} was made with {}, not with {}",
                out.display(),
                u.path.display(),
                given.display()
            ),
            (Some(given), None) => {
                format!("the build in {} was made without a system config, not with {}", out.display(), given.display())
            }
            (None, _) => format!(
                "the system config {} that the build in {} used has changed or is gone since",
                config.display(),
                out.display()
            ),
        };
        return Err(Fail::new(format!("{said}; `mobix test` and `run` boot what was built"))
            .hint(format!("build it first: `mobix build --device {} --config {}`", t.device, config.display()))
            .into());
    }
    DeviceOut { config: Some(config.clone()), ..t.clone() }.load(repo)
}

/// `mobix run --fastboot`: the emulated phone in fastboot mode.
pub(super) fn cmd_fastboot_mode(g: &Global, a: &RunArgs) -> Result<ExitCode> {
    let repo = find_repo(g)?;
    let profile = a.target.load(&repo)?;
    let in_use = vm::use_phone(&a.target.out_dir(&repo), "serve fastboot on it")?;
    vm::Holder::me(Some("mobix run --fastboot"), None).write(&in_use);
    let (disk, layout) = vm::phone_disk(&profile, &a.target.out_dir(&repo))?;
    if let vm::Firmware::UBoot { bin } = firmware(g, &repo, &profile, a.bootloader)? {
        let dir = a.target.out_dir(&repo).join("phone");
        let log = dir.join("u-boot-fastboot.log");
        progress(&format!(
            "{}: U-Boot in fastboot mode on udp:127.0.0.1:{} (disk {} as an SD card, console in {}); \
             `fastboot reboot` ends it",
            profile.codename,
            a.port,
            disk.display(),
            log.display()
        ));
        vm::u_boot_fastboot(&profile, &dir, &disk, &bin, a.port, &log)?;
        progress("U-Boot left fastboot mode");
        return Ok(ExitCode::SUCCESS);
    }
    let product =
        profile.device.identity.fastboot_products.first().cloned().unwrap_or_else(|| profile.codename.to_string());
    let device = vm::fastboot::Device {
        disk: disk.clone(),
        layout,
        product,
        // One serial number per emulated phone (its disk), as phones have.
        serialno: format!(
            "mobix-{}-{}",
            profile.codename,
            &crate::hash::Sha256Digest::of(disk.to_string_lossy().as_bytes()).hex()[..8]
        ),
        max_download: a.max_download_size,
        ab: profile.device.is_ab(),
        drop_after: a.drop_after_bytes,
    };
    if a.usb {
        let mut gadget = flash::usb::Gadget::start(&device.serialno, &profile.device.name)
            .map_err(|e| util::user_error(e, "making the USB fastboot gadget"))?;
        progress(&format!(
            "{} in fastboot mode on USB (controller {}, serial number {}, disk {}, max-download-size {} bytes); \
             `fastboot reboot` ends it",
            profile.codename,
            gadget.udc,
            device.serialno,
            disk.display(),
            a.max_download_size
        ));
        let left = device.serve_usb(&mut gadget, &|line| progress(&format!("fastboot: {line}")))?;
        progress(&format!("left fastboot mode ({left:?})"));
        return Ok(ExitCode::SUCCESS);
    }
    let listener = std::net::TcpListener::bind(("127.0.0.1", a.port))
        .map_err(|e| util::user_error(e, format!("listening on 127.0.0.1:{}", a.port)))?;
    progress(&format!(
        "{} in fastboot mode on tcp:127.0.0.1:{} (disk {}, max-download-size {} bytes); `fastboot reboot` ends it",
        profile.codename,
        listener.local_addr()?.port(),
        disk.display(),
        a.max_download_size
    ));
    let left = device.serve(&listener, &|line| progress(&format!("fastboot: {line}")))?;
    if let vm::fastboot::Left::BootRam { image, slot } = left {
        drop(listener);
        progress(&format!("booting the {} bytes sent from RAM", image.len()));
        let dir = a.target.out_dir(&repo).join("phone");
        let status = vm::boot_from_ram(&profile, &dir, &disk, &image, slot, &a.append, &progress)?;
        return Ok(if status.success() { ExitCode::SUCCESS } else { ExitCode::from(1) });
    }
    progress(&format!("left fastboot mode ({left:?})"));
    Ok(ExitCode::SUCCESS)
}
