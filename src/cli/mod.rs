//! The command line: clap types and their handlers. The only module that knows about the
//! terminal: stdout carries data (JSON with `--json`), stderr carries progress, warnings
//! and errors. Exit codes: 0 success, 1 bad input or a failed check, 2 internal error.

pub mod doctor;
pub mod inspect;
mod store;
mod term;

use crate::build::{self, Ctx};
use crate::lock::Lock;
use crate::plan;
use crate::profile::{self, Profile};
use crate::report::Reporter;
use crate::store::Store;
use crate::util::{self, Fail};
use crate::{flash, generation, pipeline, publish, vm};
use anyhow::Result;
use clap::{Args, Parser, Subcommand};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

/// Build bootable, NixOS-style system images for aarch64 Android phones.
#[derive(Parser, Debug)]
#[command(name = "mobix", version, propagate_version = true)]
pub struct Cli {
    #[command(flatten)]
    global: Global,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Args, Debug)]
struct Global {
    /// The store directory [default: $XDG_DATA_HOME/mobix/store or ~/.local/share/mobix/store].
    #[arg(long, global = true, env = "MOBIX_STORE", value_name = "DIR")]
    store: Option<PathBuf>,
    /// The mobix tree holding devices/ and mobix.lock [default: the nearest parent of the
    /// current directory that has both].
    #[arg(long, global = true, env = "MOBIX_REPO", value_name = "DIR")]
    repo: Option<PathBuf>,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Build a device's images: boot.img, system.img (Android sparse) and, where the profile
    /// says, vbmeta.img, with manifest.json, into the out directory. Every build with a new system is a new
    /// generation.
    Build(BuildArgs),
    /// Boot the built images in QEMU and wait for the system to report boot-complete.
    Test(TestArgs),
    /// Boot the built images in QEMU with the console on this terminal, or (--fastboot) put
    /// the emulated phone in fastboot mode.
    Run(RunArgs),
    /// Flash the last build onto a phone in fastboot mode, following its flash plan; on A/B
    /// phones the inactive slot, made active only once every image is written.
    Flash(FlashArgs),
    /// Boot the last build's boot.img from RAM (`fastboot boot`) without flashing anything.
    Boot(BootArgs),
    /// List the host tools each command needs, which are missing, and their packages.
    Doctor(DoctorArgs),
    /// The generations built for a device: list, show, diff, rollback, delete.
    #[command(subcommand)]
    Generations(GenCmd),
    /// Assemble and check a device's kernel configuration (kernels built from source).
    #[command(subcommand)]
    Kernel(KernelCmd),
    /// List, show and check device profiles.
    #[command(subcommand)]
    Device(DeviceCmd),
    /// Read, unpack and repack the image formats phones use.
    #[command(subcommand)]
    Inspect(inspect::Format),
    /// The store: closures, why one path depends on another, verification, binary caches.
    #[command(subcommand)]
    Store(store::StoreCmd),
    /// Remove store paths no generation and no out directory needs.
    Gc(store::GcArgs),
    /// mobix.lock: move pins to what the Debian mirror has now.
    #[command(subcommand)]
    Lock(LockCmd),
}

#[derive(Subcommand, Debug)]
enum LockCmd {
    /// Re-pin packages (default: all) to apt's candidate version, with the sha256 from apt's
    /// signed index; print what changed.
    Update {
        /// Lock entries (`debs` or `sources` names) to update.
        names: Vec<String>,
        /// Print the changes without writing mobix.lock.
        #[arg(long)]
        dry_run: bool,
    },
    /// Pin a new package at apt's candidate version: an arm64 binary package (`deb`, for
    /// `packages:` and profiles) or a source package (`source`, for `packages/` specs).
    Add {
        /// `deb`: an arm64 binary package; `source`: a Debian source package.
        #[arg(value_enum)]
        kind: LockKind,
        /// The entry's name in mobix.lock.
        name: String,
        /// The Debian package [default: NAME].
        #[arg(long)]
        package: Option<String>,
        /// Other `debs` entries this one needs (comma-separated).
        #[arg(long, value_delimiter = ',')]
        depends: Vec<String>,
    },
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum LockKind {
    Deb,
    Source,
}

#[derive(Args, Debug)]
struct DeviceOut {
    /// The device profile (a directory name under devices/).
    #[arg(long, value_name = "NAME")]
    device: String,
    /// The device variant (for profiles with `variants:`).
    #[arg(long, value_name = "NAME")]
    variant: Option<String>,
    /// The system configuration (YAML: hostname, cmdline, and `device:` overrides).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Where the build's images go [default: out/<device>/].
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
}

impl DeviceOut {
    fn out_dir(&self) -> PathBuf {
        let name = match &self.variant {
            Some(v) => format!("{}-{v}", self.device),
            None => self.device.clone(),
        };
        self.out.clone().unwrap_or_else(|| PathBuf::from("out").join(name))
    }

    fn load(&self, repo: &Path) -> Result<Profile> {
        profile::load_with(
            repo,
            &self.device,
            profile::Selection { variant: self.variant.as_deref(), config: self.config.as_deref() },
        )
    }
}

#[derive(Args, Debug)]
struct BuildArgs {
    #[command(flatten)]
    target: DeviceOut,
    /// Print the manifest as JSON on stdout.
    #[arg(long)]
    json: bool,
    /// Print the plan (every recipe, its store path, whether it is built) as JSON and stop.
    #[arg(long)]
    dry_run: bool,
    /// For profiles naming both a kernel source and a package: build the kernel from
    /// source, or use the prebuilt package (the substitute).
    #[arg(long, value_enum, default_value = "source")]
    kernel_from: KernelFromArg,
    /// A binary cache directory (`mobix store export`) to take store paths from before
    /// building them; repeatable. Needs --trust.
    #[arg(long, value_name = "DIR", requires = "trust")]
    substituter: Vec<PathBuf>,
    /// A public key whose signatures on cache entries are trusted; repeatable.
    #[arg(long, value_name = "FILE")]
    trust: Vec<PathBuf>,
}

/// `--kernel-from`: the command line's words for [`plan::KernelFrom`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum KernelFromArg {
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

/// `flash --slot`: the command line's words for [`flash::SlotChoice`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum SlotArg {
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
struct TestArgs {
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
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum BootloaderArg {
    Model,
    UBoot,
}

#[derive(Args, Debug)]
struct RunArgs {
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
    /// With --fastboot: serve fastboot as a USB gadget (configfs and FunctionFS, on this
    /// machine's first USB device controller) instead of TCP, as a phone running Linux
    /// does. Needs root and the libcomposite and usb_f_fs modules.
    #[arg(long, requires = "fastboot")]
    usb: bool,
    /// The TCP port for --fastboot.
    #[arg(long, default_value_t = flash::tcp::DEFAULT_PORT)]
    port: u16,
    /// The max-download-size the emulated phone reports (small, so images are split).
    #[arg(long, default_value_t = 16 << 20)]
    max_download_size: u32,
    /// Tests: drop the fastboot connection after this many bytes of download data.
    #[arg(long, hide = true)]
    drop_after_bytes: Option<u64>,
}

#[derive(Args, Debug)]
struct BootArgs {
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
struct FlashArgs {
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
    /// Print the commands that would be sent (after reading the device's variables).
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
    /// Print the report as JSON on stdout.
    #[arg(long)]
    json: bool,
}

#[derive(Args, Debug)]
struct GenTarget {
    /// The device.
    #[arg(long, value_name = "NAME")]
    device: String,
    /// Its variant.
    #[arg(long, value_name = "NAME")]
    variant: Option<String>,
    /// Print JSON (with a `version` field).
    #[arg(long)]
    json: bool,
}

#[derive(Subcommand, Debug)]
enum GenCmd {
    /// Every generation recorded for the device in this store.
    List(GenTarget),
    /// One generation: its record, boot entry and closure size.
    Show {
        #[command(flatten)]
        target: GenTarget,
        /// The generation number.
        number: u32,
    },
    /// What changed from generation A to generation B: store paths added, removed and
    /// changed, with sizes.
    Diff {
        #[command(flatten)]
        target: GenTarget,
        /// The older generation.
        a: u32,
        /// The newer generation.
        b: u32,
    },
    /// Forget generation N: later system images no longer carry it (its store paths stay
    /// until garbage collection). The newest generation cannot be deleted; one the phone
    /// needs (booted, default, last good, as the host last saw it) only with --force.
    Delete {
        #[command(flatten)]
        target: GenTarget,
        /// The generation to forget.
        number: u32,
        /// Delete it even if the phone still needs it (booted, default or last good).
        #[arg(long)]
        force: bool,
    },
    /// Write images into the out directory that boot an older generation by default (the
    /// newest older one the phone has not found bad, or --to N): its boot.img, and a system
    /// image carrying the usual generations with N as the default. Flash them, or `mobix test`.
    Rollback {
        #[command(flatten)]
        target: DeviceOut,
        /// The generation to roll back to.
        #[arg(long, value_name = "N")]
        to: Option<u32>,
        /// Print the manifest as JSON on stdout.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand, Debug)]
enum KernelCmd {
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

#[derive(Subcommand, Debug)]
enum DeviceCmd {
    /// The devices (and their variants) under devices/.
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// The fully merged profile of a device (family, device, variant, config).
    Show {
        /// The device.
        name: String,
        /// Its variant.
        #[arg(long)]
        variant: Option<String>,
        /// A system configuration to merge last.
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// Print JSON (with a `version` field).
        #[arg(long)]
        json: bool,
    },
    /// Validate every profile (or one device, all its variants) without building.
    Check {
        /// The device [default: all].
        name: Option<String>,
    },
}

#[derive(Args, Debug)]
struct DoctorArgs {
    /// Print the checks as JSON on stdout.
    #[arg(long)]
    json: bool,
}

/// Entry point of the binary: runs the command and turns errors into exit codes.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = std::panic::catch_unwind(|| dispatch(cli));
    match result {
        Ok(Ok(code)) => code,
        Ok(Err(e)) => report(&e),
        Err(_) => {
            eprintln!("error: internal error (a panic); this is a bug in mobix");
            ExitCode::from(2)
        }
    }
}

/// Prints `error: …`, the `caused by:` chain and a hint; returns the exit code.
fn report(e: &anyhow::Error) -> ExitCode {
    let mut chain = e.chain();
    if let Some(top) = chain.next() {
        eprintln!("error: {top}");
    }
    for c in chain {
        eprintln!("  caused by: {c}");
    }
    let fail = util::find_fail(e);
    if let Some(h) = fail.and_then(|f| f.hint.as_ref()) {
        eprintln!("hint: {h}");
    }
    ExitCode::from(if fail.is_some() { 1 } else { 2 })
}

fn progress(msg: &str) {
    term::TERMINAL.note(msg);
}

fn dispatch(cli: Cli) -> Result<ExitCode> {
    match &cli.command {
        Cmd::Build(a) => cmd_build(&cli.global, a),
        Cmd::Test(a) => cmd_test(&cli.global, a),
        Cmd::Run(a) => cmd_run(&cli.global, a),
        Cmd::Flash(a) => cmd_flash(&cli.global, a),
        Cmd::Boot(a) => cmd_boot(&cli.global, a),
        Cmd::Doctor(a) => cmd_doctor(a),
        Cmd::Inspect(f) => inspect::run(f).map(|_| ExitCode::SUCCESS),
        Cmd::Device(d) => cmd_device(&cli.global, d),
        Cmd::Kernel(k) => cmd_kernel(&cli.global, k),
        Cmd::Generations(c) => cmd_generations(&cli.global, c),
        Cmd::Store(c) => store::cmd_store(&cli.global, c),
        Cmd::Gc(a) => store::cmd_gc(&cli.global, a),
        Cmd::Lock(LockCmd::Update { names, dry_run }) => cmd_lock_update(&cli.global, names, *dry_run),
        Cmd::Lock(LockCmd::Add { kind, name, package, depends }) => {
            cmd_lock_add(&cli.global, *kind, name, package.as_deref(), depends)
        }
    }
}

fn find_repo(g: &Global) -> Result<PathBuf> {
    if let Some(r) = &g.repo {
        return Ok(r.clone());
    }
    let cwd = std::env::current_dir()?;
    for d in cwd.ancestors() {
        if d.join("mobix.lock").is_file() && d.join("devices").is_dir() {
            return Ok(d.to_path_buf());
        }
    }
    Err(Fail::new(format!("no mobix tree (devices/ and mobix.lock) in {} or its parents", cwd.display()))
        .hint("run mobix inside its repository, or pass --repo DIR")
        .into())
}

fn home_dir(env: &str, fallback: &str) -> PathBuf {
    std::env::var_os(env)
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(fallback)))
        .unwrap_or_else(|| PathBuf::from("/tmp"))
}

/// The store, telling the terminal when it waits for another mobix process.
fn open_store(g: &Global) -> Result<Store> {
    Ok(Store::open(&store_dir(g))?.with_reporter(&*term::TERMINAL))
}

fn store_dir(g: &Global) -> PathBuf {
    g.store.clone().unwrap_or_else(|| home_dir("XDG_DATA_HOME", ".local/share").join("mobix/store"))
}

fn cache_dir() -> PathBuf {
    std::env::var_os("MOBIX_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| home_dir("XDG_CACHE_HOME", ".cache").join("mobix"))
}

/// What builders share, for a store: the host's download and cargo caches, progress on stderr.
fn builder_ctx(store: &Store) -> Ctx<'_> {
    Ctx {
        store,
        downloads: cache_dir().join("downloads"),
        cargo_cache: cache_dir().join("cargo-target"),
        progress: &*term::TERMINAL,
        substituters: Vec::new(),
        trusted: Vec::new(),
        fetched: Default::default(),
    }
}

fn cmd_lock_add(g: &Global, kind: LockKind, name: &str, package: Option<&str>, depends: &[String]) -> Result<ExitCode> {
    let repo = find_repo(g)?;
    let mut lock = Lock::load(&repo)?;
    if lock.debs.contains_key(name) || lock.sources.contains_key(name) {
        return Err(Fail::new(format!("{} already has an entry {name:?}", lock.file.display()))
            .hint(format!("`mobix lock update {name}` re-pins it"))
            .into());
    }
    let ok = |s: &str| !s.is_empty() && s.bytes().all(|c| c.is_ascii_alphanumeric() || b"+-._".contains(&c));
    let package = package.unwrap_or(name);
    if !ok(name) || !ok(package) {
        return Err(Fail::new(format!("{name:?} / {package:?}: names are letters, digits and + - . _")).into());
    }
    match kind {
        LockKind::Deb => {
            for d in depends {
                if !lock.debs.contains_key(d) {
                    return Err(Fail::new(format!("--depends {d}: {} has no debs entry {d:?}", lock.file.display()))
                        .hint(format!("add it first: `mobix lock add deb {d}`"))
                        .into());
                }
            }
            let ask = crate::lock::DebPin {
                package: package.to_string(),
                version: String::new(),
                arch: "arm64".into(),
                sha256: String::new(),
                depends: depends.to_vec(),
            };
            let (pin, apt_depends) = build::deb::candidate(&ask)?;
            println!("debs.{name}: {} {} (sha256 {})", pin.package, pin.version, pin.sha256);
            let listed: Vec<&str> = depends.iter().map(|d| lock.debs[d].package.as_str()).collect();
            note_unlisted(name, package, &apt_depends, &listed);
            lock.debs.insert(name.to_string(), pin);
        }
        LockKind::Source => {
            if !depends.is_empty() {
                return Err(Fail::new("--depends is for debs entries; a source package's build needs none").into());
            }
            let store = open_store(g)?;
            let ctx = builder_ctx(&store);
            let ask = crate::lock::SourcePin {
                package: package.to_string(),
                version: String::new(),
                files: Default::default(),
            };
            let pin = build::source::candidate(&ctx, &ask)?;
            println!("sources.{name}: {} {} ({} files)", pin.package, pin.version, pin.files.len());
            lock.sources.insert(name.to_string(), pin);
        }
    }
    lock.save()?;
    progress(&format!("wrote {}; the next build that uses {name} fetches and checks it", lock.file.display()));
    Ok(ExitCode::SUCCESS)
}

/// Says which of the packages apt lists as `package`'s dependencies the `debs.<name>` entry
/// does not cover (`listed`: the Debian packages of the entries its `depends` names).
fn note_unlisted(name: &str, package: &str, apt_depends: &[String], listed: &[&str]) {
    let unlisted: Vec<&str> = apt_depends.iter().map(String::as_str).filter(|d| !listed.contains(d)).collect();
    if !unlisted.is_empty() {
        progress(&format!(
            "note: debs.{name}: apt says {package} depends on {}, which its `depends` does not list (fine if only its \
             maintainer scripts need them: mobix runs none; otherwise pin them and list them)",
            unlisted.join(", ")
        ));
    }
}

fn cmd_lock_update(g: &Global, names: &[String], dry_run: bool) -> Result<ExitCode> {
    let repo = find_repo(g)?;
    let mut lock = Lock::load(&repo)?;
    for n in names {
        if !lock.debs.contains_key(n) && !lock.sources.contains_key(n) {
            let known: Vec<&str> = lock.debs.keys().chain(lock.sources.keys()).map(|s| s.as_str()).collect();
            return Err(Fail::new(format!("{} has no entry {n:?}", lock.file.display()))
                .hint(format!("entries: {}", known.join(", ")))
                .into());
        }
    }
    let wanted = |n: &str| names.is_empty() || names.iter().any(|w| w == n);
    let mut changes = 0;
    // Each entry's Debian package, to tell what a pin's `depends` already covers.
    let package_of: std::collections::BTreeMap<String, String> =
        lock.debs.iter().map(|(n, p)| (n.clone(), p.package.clone())).collect();
    for (name, pin) in lock.debs.iter_mut().filter(|(n, _)| wanted(n)) {
        let (new, apt_depends) =
            anyhow::Context::with_context(build::deb::candidate(pin), || format!("updating debs.{name}"))?;
        let listed: Vec<&str> = pin.depends.iter().filter_map(|d| package_of.get(d)).map(String::as_str).collect();
        note_unlisted(name, &pin.package, &apt_depends, &listed);
        if new == *pin {
            progress(&format!("debs.{name}: {} {} is current", pin.package, pin.version));
        } else {
            println!("debs.{name}: {} {} -> {} (sha256 {})", pin.package, pin.version, new.version, new.sha256);
            *pin = new;
            changes += 1;
        }
    }
    if lock.sources.keys().any(|n| wanted(n)) {
        let store = open_store(g)?;
        let ctx = builder_ctx(&store);
        for (name, pin) in lock.sources.iter_mut().filter(|(n, _)| wanted(n)) {
            let new = anyhow::Context::with_context(build::source::candidate(&ctx, pin), || {
                format!("updating sources.{name}")
            })?;
            if new == *pin {
                progress(&format!("sources.{name}: {} {} is current", pin.package, pin.version));
            } else {
                println!("sources.{name}: {} {} -> {}", pin.package, pin.version, new.version);
                *pin = new;
                changes += 1;
            }
        }
    }
    if changes > 0 && !dry_run {
        lock.save()?;
        progress(&format!(
            "wrote {} ({changes} pins changed); the next build fetches and checks them",
            lock.file.display()
        ));
    } else if changes > 0 {
        progress(&format!("{changes} pins would change (--dry-run: {} left alone)", lock.file.display()));
    }
    Ok(ExitCode::SUCCESS)
}

fn cmd_build(g: &Global, a: &BuildArgs) -> Result<ExitCode> {
    let t0 = Instant::now();
    let repo = find_repo(g)?;
    let profile = a.target.load(&repo)?;
    let lock = Lock::load(&repo)?;
    let inputs = pipeline::host_facts(&repo, &profile, a.kernel_from.into())?;
    let store = open_store(g)?;
    let mut ctx = builder_ctx(&store);
    ctx.substituters = a.substituter.clone();
    ctx.trusted = a.trust.iter().map(|f| crate::store::cache::PublicKey::load(f)).collect::<Result<_>>()?;
    let pipe = pipeline::Pipeline { ctx: &ctx, profile: &profile, lock: &lock, inputs: &inputs };
    if a.dry_run {
        let d = pipe.dry_run()?;
        let todo = d.recipes.iter().filter(|r| !r.built).count();
        progress(&format!(
            "{todo} of {} recipes to build; {} generation {}",
            d.recipes.len(),
            if d.new_generation { "new" } else { "unchanged" },
            d.generation
        ));
        println!("{}", serde_json::to_string_pretty(&d)?);
        return Ok(ExitCode::SUCCESS);
    }
    let out = a.target.out_dir();
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
        progress(&format!(
            "built {} store paths{downloads}, substituted {}, {} already present, in {:.1}s",
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
    if a.json {
        println!("{}", serde_json::to_string_pretty(&b.manifest)?);
    }
    Ok(ExitCode::SUCCESS)
}

fn load_for_vm(g: &Global, t: &DeviceOut, bl: BootloaderArg, flashed: bool) -> Result<(Profile, vm::Prepared)> {
    let repo = find_repo(g)?;
    let profile = t.load(&repo)?;
    let mut prepared =
        if flashed { vm::flashed_phone(&profile, &t.out_dir())? } else { vm::prepare(&profile, &t.out_dir())? };
    prepared.firmware = firmware(g, &repo, &profile, bl)?;
    Ok((profile, prepared))
}

/// The emulated phone's bootloader; for U-Boot, built (or found) in the store first.
fn firmware(g: &Global, repo: &Path, profile: &Profile, bl: BootloaderArg) -> Result<vm::Firmware> {
    if bl == BootloaderArg::Model {
        return Ok(vm::Firmware::Model);
    }
    let name = profile.device.qemu.as_ref().and_then(|q| q.u_boot.as_ref()).ok_or_else(|| {
        Fail::new(format!("device {} names no U-Boot to boot with", profile.codename))
            .hint("set `qemu.u_boot` in its profile to a bootloaders/ spec, or use --bootloader model")
    })?;
    let spec = profile::load_u_boot(repo, name)?;
    let lock = Lock::load(repo)?;
    let (plan, bin) = plan::u_boot(&lock, &spec, &pipeline::cross_gcc_version()?)?;
    let store = open_store(g)?;
    build::realise(&builder_ctx(&store), &plan, std::slice::from_ref(&bin))?;
    Ok(vm::Firmware::UBoot { bin: store.host_path(&bin).join("u-boot.bin") })
}

fn cmd_scenario(g: &Global, a: &TestArgs, name: &str) -> Result<ExitCode> {
    let repo = find_repo(g)?;
    let profile = a.target.load(&repo)?;
    let lock = Lock::load(&repo)?;
    let inputs = pipeline::host_facts(&repo, &profile, plan::KernelFrom::Source)?;
    let store = open_store(g)?;
    let ctx = builder_ctx(&store);
    let systems = pipeline::Pipeline { ctx: &ctx, profile: &profile, lock: &lock, inputs: &inputs };
    let dir = a.target.out_dir().join(format!("scenario-{name}"));
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

fn cmd_test(g: &Global, a: &TestArgs) -> Result<ExitCode> {
    if a.list_scenarios {
        for (n, what) in vm::scenario::NAMES {
            println!("{n:6} {what}");
        }
        return Ok(ExitCode::SUCCESS);
    }
    if let Some(name) = &a.scenario {
        return cmd_scenario(g, a, name);
    }
    let (profile, prepared) = load_for_vm(g, &a.target, a.bootloader, a.flashed)?;
    let outcome = vm::test(&profile, &prepared, Duration::from_secs(a.timeout), &progress)?;
    // What the phone learned (which generations are good or bad) goes into the next image.
    if let Some(state) = vm::read_state(&profile, &prepared)? {
        let store = open_store(g)?;
        generation::save_ledger(&store, &profile.instance(), &state)?;
    }
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

fn cmd_run(g: &Global, a: &RunArgs) -> Result<ExitCode> {
    if a.fastboot {
        return cmd_fastboot_mode(g, a);
    }
    let (profile, prepared) = load_for_vm(g, &a.target, a.bootloader, a.flashed)?;
    let status = vm::run(&profile, &prepared, &a.append, &progress)?;
    Ok(if status.success() { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

/// `mobix run --fastboot`: the emulated phone in fastboot mode.
fn cmd_fastboot_mode(g: &Global, a: &RunArgs) -> Result<ExitCode> {
    let repo = find_repo(g)?;
    let profile = a.target.load(&repo)?;
    let (disk, layout) = vm::phone_disk(&profile, &a.target.out_dir())?;
    if let vm::Firmware::UBoot { bin } = firmware(g, &repo, &profile, a.bootloader)? {
        let dir = a.target.out_dir().join("phone");
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
        let dir = a.target.out_dir().join("phone");
        let status = vm::boot_from_ram(&profile, &dir, &disk, &image, slot, &a.append, &progress)?;
        return Ok(if status.success() { ExitCode::SUCCESS } else { ExitCode::from(1) });
    }
    progress(&format!("left fastboot mode ({left:?})"));
    Ok(ExitCode::SUCCESS)
}

/// Loads the manifest and flash plan of the build in `out`, checking they are `profile`'s.
fn load_build(profile: &Profile, out: &Path) -> Result<(publish::Manifest, publish::FlashPlan)> {
    let manifest = publish::load_manifest_for(profile, out)?;
    let plan_path = out.join(publish::FLASH_PLAN);
    let plan: publish::FlashPlan = serde_json::from_slice(
        &std::fs::read(&plan_path).map_err(|e| util::user_error(e, format!("reading {}", plan_path.display())))?,
    )
    .map_err(|e| util::user_error(e, format!("parsing {}", plan_path.display())))?;
    Ok((manifest, plan))
}

fn cmd_boot(g: &Global, a: &BootArgs) -> Result<ExitCode> {
    let repo = find_repo(g)?;
    let profile = a.target.load(&repo)?;
    let out = a.target.out_dir();
    let (manifest, plan) = load_build(&profile, &out)?;
    let boot = publish::image_file(&out, &manifest, plan::ImageName::Boot.file_name())?;
    let mut client = flash::client::Client::new(flash::client::connect(a.serial.as_deref())?);
    client.on_info = Box::new(|m| progress(&format!("(bootloader) {m}")));
    flash::boot(&mut client, &plan, &boot, a.force, &progress)?;
    progress(&format!("booting generation {}'s boot.img from RAM on {}", manifest.generation, client.name()));
    Ok(ExitCode::SUCCESS)
}

fn cmd_flash(g: &Global, a: &FlashArgs) -> Result<ExitCode> {
    let repo = find_repo(g)?;
    let profile = a.target.load(&repo)?;
    let out = a.target.out_dir();
    let (manifest, plan) = load_build(&profile, &out)?;
    let store = open_store(g)?;
    let mut images = std::collections::BTreeMap::new();
    for (name, info) in &manifest.images {
        let path = publish::image_file_linked(&store, &out, &manifest, name)?;
        images.insert(name.clone(), flash::Image { path, sha256: info.sha256.hex() });
    }
    let flashed = store.root().join(".mobix/flashed").join(profile.instance().as_str());
    let mut client = flash::client::Client::new(flash::client::connect(a.serial.as_deref())?);
    client.on_info = Box::new(|m| progress(&format!("(bootloader) {m}")));
    progress(&format!(
        "{} generation {} of {} over {}",
        if a.dry_run { "planning to flash" } else { "flashing" },
        manifest.generation,
        profile.instance(),
        client.name()
    ));
    let opts = flash::Options {
        slot: a.slot.into(),
        only: (!a.only.is_empty()).then_some(a.only.as_slice()),
        skip_unchanged: a.skip_unchanged,
        dry_run: a.dry_run,
        force: a.force,
        reboot: a.reboot,
        set_active: a.set_active,
    };
    let report = flash::run(&mut client, &plan, &images, &opts, &flashed, &*term::TERMINAL)?;
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

fn cmd_generations(g: &Global, c: &GenCmd) -> Result<ExitCode> {
    let t = match c {
        GenCmd::Rollback { target, to, json } => return cmd_rollback(g, target, *to, *json),
        GenCmd::List(t)
        | GenCmd::Show { target: t, .. }
        | GenCmd::Diff { target: t, .. }
        | GenCmd::Delete { target: t, .. } => t,
    };
    let repo = find_repo(g)?;
    let profile =
        profile::load_with(&repo, &t.device, profile::Selection { variant: t.variant.as_deref(), config: None })?;
    let store = open_store(g)?;
    let all = generation::list(&store, &profile.instance())?;
    let get = |n: u32| -> Result<&generation::Record> {
        all.get(&n).ok_or_else(|| {
            let known: Vec<String> = all.keys().map(|k| k.to_string()).collect();
            Fail::new(format!("{} has no generation {n} in {}", profile.instance(), store.root().display()))
                .hint(if known.is_empty() {
                    "build it first with `mobix build`".into()
                } else {
                    format!("generations: {}", known.join(", "))
                })
                .into()
        })
    };
    let print_json = |v: serde_json::Value| -> Result<()> {
        let mut v = v;
        v["version"] = serde_json::json!(1);
        println!("{}", serde_json::to_string_pretty(&v)?);
        Ok(())
    };
    let human_time = generation::utc_minutes;
    match c {
        GenCmd::List(_) => {
            if t.json {
                return print_json(
                    serde_json::json!({"device": profile.instance(), "generations": all.values().collect::<Vec<_>>()}),
                )
                .map(|_| ExitCode::SUCCESS);
            }
            let newest = all.keys().next_back().copied();
            for (n, r) in &all {
                let mark = if Some(*n) == newest { "  (newest)" } else { "" };
                println!("{n:>4}  {}  {}{mark}", human_time(r.created), r.toplevel);
            }
            Ok(ExitCode::SUCCESS)
        }
        GenCmd::Delete { number, force, .. } => {
            let known = generation::ledger(&store, &profile.instance())?;
            let protected = known.as_ref().map(generation::protected).unwrap_or_default();
            if let Some(why) = generation::refuse_delete(&all, *number, &protected, *force) {
                let hint = if protected.contains(number) && all.keys().next_back() != Some(number) {
                    "--force deletes it anyway; the phone keeps it until an image without it is flashed"
                } else {
                    "`mobix generations list` shows the generations"
                };
                return Err(Fail::new(format!("not deleting generation {number} of {}: {why}", profile.instance()))
                    .hint(hint)
                    .into());
            }
            generation::delete(&store, &profile.instance(), *number)?;
            progress(&format!(
                "deleted generation {number} of {}; system images built from now on do not carry it",
                profile.instance()
            ));
            Ok(ExitCode::SUCCESS)
        }
        GenCmd::Rollback { .. } => unreachable!("handled above"),
        GenCmd::Show { number, .. } => {
            let r = get(*number)?;
            let closure = store.closure(std::slice::from_ref(&r.toplevel))?;
            let size: u64 = closure.iter().map(|p| generation::path_size(&store, p)).sum();
            let boot: serde_json::Value = std::fs::read_to_string(store.host_path(&r.toplevel).join("boot.json"))
                .ok()
                .and_then(|t| serde_json::from_str(&t).ok())
                .unwrap_or(serde_json::Value::Null);
            let v =
                serde_json::json!({"record": r, "boot": boot, "closure_paths": closure.len(), "closure_bytes": size});
            if t.json {
                return print_json(v).map(|_| ExitCode::SUCCESS);
            }
            println!("generation {} of {} ({})", r.generation, r.device, human_time(r.created));
            println!("toplevel   {}", r.toplevel);
            println!("label      {}", r.label);
            println!("kernel     {}", boot["kernel_release"].as_str().unwrap_or("?"));
            println!("cmdline    {}", boot["cmdline"].as_str().unwrap_or("?"));
            println!("closure    {} store paths, {} bytes", closure.len(), size);
            Ok(ExitCode::SUCCESS)
        }
        GenCmd::Diff { a, b, .. } => {
            let (ra, rb) = (get(*a)?, get(*b)?);
            let ca = store.closure(std::slice::from_ref(&ra.toplevel))?;
            let cb = store.closure(std::slice::from_ref(&rb.toplevel))?;
            let changes = generation::diff(&ca, &cb, &|p| generation::path_size(&store, p));
            if t.json {
                return print_json(serde_json::json!({"from": a, "to": b, "changes": changes}))
                    .map(|_| ExitCode::SUCCESS);
            }
            for ch in &changes {
                match (&ch.before, &ch.after) {
                    (None, Some(p)) => println!("+ {:<28} {:>12}  {p}", ch.name, ch.after_size),
                    (Some(p), None) => println!("- {:<28} {:>12}  {p}", ch.name, ch.before_size),
                    (Some(_), Some(p)) => println!(
                        "~ {:<28} {:>12}  {p} ({:+} bytes)",
                        ch.name,
                        ch.after_size,
                        ch.after_size as i64 - ch.before_size as i64
                    ),
                    (None, None) => {}
                }
            }
            if changes.is_empty() {
                progress(&format!("generations {a} and {b} have the same closure"));
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// `mobix generations rollback`: images that boot an older generation by default.
fn cmd_rollback(g: &Global, t: &DeviceOut, to: Option<u32>, json: bool) -> Result<ExitCode> {
    let repo = find_repo(g)?;
    let profile = t.load(&repo)?;
    let lock = Lock::load(&repo)?;
    let store = open_store(g)?;
    let ctx = builder_ctx(&store);
    let inputs = pipeline::image_facts(&repo, &profile)?;
    let pipe = pipeline::Pipeline { ctx: &ctx, profile: &profile, lock: &lock, inputs: &inputs };
    let out = t.out_dir();
    let r = pipe.rollback(&out, to)?;
    progress(&format!(
        "rolled back from generation {} to {}: {} now boots generation {} by default \
         (carrying {}); flash it, or try it with `mobix test`",
        r.from,
        r.to,
        out.display(),
        r.to,
        r.carried.iter().map(|n| n.to_string()).collect::<Vec<_>>().join(", ")
    ));
    if json {
        println!("{}", serde_json::to_string_pretty(&r.manifest)?);
    }
    Ok(ExitCode::SUCCESS)
}

fn cmd_kernel(g: &Global, k: &KernelCmd) -> Result<ExitCode> {
    let (target, json) = match k {
        KernelCmd::Config { target, .. } => (target, false),
        KernelCmd::Check { target, json } => (target, *json),
    };
    let repo = find_repo(g)?;
    let profile = target.load(&repo)?;
    if profile.device.kernel.source.is_none() {
        return Err(Fail::new(format!(
            "{} uses a prebuilt kernel package; it has no kernel to configure",
            profile.instance()
        ))
        .hint("a profile's `kernel.source` names a kernels/ spec")
        .into());
    }
    let lock = Lock::load(&repo)?;
    let inputs = pipeline::host_facts(&repo, &profile, plan::KernelFrom::Source)?;
    let sys = plan::system(&profile, &lock, &inputs)?;
    let cfg = plan::kernel_config_recipe(&sys.plan).expect("a source kernel has a config recipe").path.clone();
    let store = open_store(g)?;
    let ctx = builder_ctx(&store);
    build::realise(&ctx, &sys.plan, std::slice::from_ref(&cfg))?;
    let dir = store.host_path(&cfg);
    let report = build::kernel::read_report(&dir)?;
    if let KernelCmd::Config { config_out, .. } = k {
        let dest = config_out.clone().unwrap_or_else(|| target.out_dir().join("kernel.config"));
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

fn cmd_device(g: &Global, d: &DeviceCmd) -> Result<ExitCode> {
    let repo = find_repo(g)?;
    match d {
        DeviceCmd::List { json } => {
            let mut rows = Vec::new();
            for (c, v, r) in profile::load_all(&repo)? {
                let name = r.as_ref().map(|p| p.device.name.clone()).unwrap_or_else(|e| format!("(invalid: {e})"));
                rows.push(serde_json::json!({"device": c, "variant": v, "name": name}));
            }
            if *json {
                println!("{}", serde_json::to_string_pretty(&serde_json::json!({"version": 1, "devices": rows}))?);
            } else {
                for r in rows {
                    let id = match r["variant"].as_str() {
                        Some(v) => format!("{} --variant {v}", r["device"].as_str().unwrap_or("")),
                        None => r["device"].as_str().unwrap_or("").to_string(),
                    };
                    println!("{id:<40} {}", r["name"].as_str().unwrap_or(""));
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        DeviceCmd::Show { name, variant, config, json } => {
            let p = profile::load_with(
                &repo,
                name,
                profile::Selection { variant: variant.as_deref(), config: config.as_deref() },
            )?;
            let mut v = serde_json::to_value(&p)?;
            v["version"] = serde_json::json!(1);
            if *json {
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                v.as_object_mut().map(|m| m.remove("version"));
                print!("{}", serde_norway::to_string(&v)?);
            }
            Ok(ExitCode::SUCCESS)
        }
        DeviceCmd::Check { name } => {
            let all = profile::load_all(&repo)?;
            let mut checked = 0;
            let mut first_err = None;
            for (c, v, r) in all {
                if name.as_deref().is_some_and(|n| n != c.as_str()) {
                    continue;
                }
                checked += 1;
                let id = v.as_ref().map_or(c.to_string(), |v| format!("{c} --variant {v}"));
                match r {
                    Ok(_) => progress(&format!("ok: {id}")),
                    Err(e) => {
                        progress(&format!("FAILED: {id}"));
                        first_err.get_or_insert(e);
                    }
                }
            }
            if checked == 0 {
                if let Some(n) = name {
                    profile::load(&repo, n)?; // says why (unknown device)
                }
            }
            match first_err {
                Some(e) => Err(e),
                None => {
                    progress(&format!("{checked} profiles are valid"));
                    Ok(ExitCode::SUCCESS)
                }
            }
        }
    }
}

fn cmd_doctor(a: &DoctorArgs) -> Result<ExitCode> {
    let checks = doctor::checks();
    let missing: Vec<&doctor::Check> = checks.iter().filter(|c| c.found.is_none()).collect();
    if a.json {
        println!("{}", serde_json::to_string_pretty(&serde_json::json!({"version": 1, "checks": checks}))?);
    } else {
        for c in &checks {
            let state = c.found.as_deref().unwrap_or("MISSING");
            println!(
                "{:<28} {:<10} {:<40} {}",
                c.tool,
                if c.found.is_some() { "ok" } else { "missing" },
                c.package,
                c.used_by
            );
            let _ = state;
        }
    }
    if missing.is_empty() {
        Ok(ExitCode::SUCCESS)
    } else {
        let pkgs: Vec<&str> = missing.iter().map(|c| c.package.as_str()).collect();
        Err(Fail::new(format!("{} of {} host requirements are missing", missing.len(), checks.len()))
            .hint(format!("install: {} (or run scripts/setup)", pkgs.join(", ")))
            .into())
    }
}
