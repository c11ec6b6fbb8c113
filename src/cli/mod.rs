//! The command line: clap types and their handlers. The only module that knows about the
//! terminal: stdout carries data (JSON with `--json`), stderr carries progress, warnings
//! and errors. Exit codes: 0 success, 1 bad input or a failed check, 2 internal error.

mod builds;
mod deploying;
mod device;
pub mod doctor;
mod emulator;
mod flashing;
mod generations;
pub mod inspect;
mod pin;
mod pins;
mod settings;
mod store;
mod term;

use builds::{cmd_build, cmd_kernel, BuildArgs, KernelCmd};
use deploying::{cmd_deploy, DeployArgs};
use device::{cmd_device, cmd_doctor, DeviceCmd, DoctorArgs};
use emulator::{cmd_run, cmd_test, RunArgs, TestArgs};
use flashing::{cmd_boot, cmd_flash, BootArgs, FlashArgs};
use generations::{cmd_generations, GenCmd};
use pins::{cmd_lock_add, cmd_lock_update, LockCmd};

use crate::build::{self, Ctx};
use crate::lock::Lock;
use crate::plan;
use crate::profile::{self, Profile};
use crate::report::Reporter;
use crate::store::Store;
use crate::util::{self, Fail};
use crate::{flash, generation, pipeline, publish, vm};
use anyhow::Result;
use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand};
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
    /// Update a running phone over ssh: send the store paths of a new generation it lacks,
    /// make that generation its trial, reboot it and report whether it booted and is good
    /// or the phone fell back by itself. Keeps the phone's data; needs no cable.
    Deploy(DeployArgs),
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
    /// Device profiles: list, show, check, import (from postmarketOS or a stock boot image),
    /// udev-rules (USB flashing without root).
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
    /// mobix.lock: update pins to what the Debian mirror has now, or add a package.
    #[command(subcommand)]
    Lock(LockCmd),
    /// The system config: `reference` prints every key with its type, default and what it
    /// does (docs/config-reference.md).
    #[command(subcommand)]
    Config(ConfigCmd),
}

#[derive(Subcommand, Debug)]
enum ConfigCmd {
    /// Print every system-config key (type, default, what it does, an example) as Markdown,
    /// generated from mobix's own types.
    Reference,
    /// Print the hash of a PIN for a user's `hashed_password` (the phone UI's lock screen
    /// unlocks with it): asked twice on a terminal, else one line of standard input.
    HashPin,
}

#[derive(Args, Debug, Clone)]
struct DeviceOut {
    /// The device profile (a directory name under devices/).
    #[arg(long, value_name = "NAME")]
    device: String,
    /// The device variant (for profiles with `variants:`).
    #[arg(long, value_name = "NAME")]
    variant: Option<String>,
    /// The system config (YAML: hostname, cmdline, packages, overlays, services,
    /// health checks, generations, boot counting, `device:` overrides; `mobix config reference`).
    /// `test` and `run` take the one the build used and refuse another.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Where the build's images go [default: out/<device>/ in the mobix tree, wherever in it
    /// mobix runs].
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
}

impl DeviceOut {
    /// The out directory: `--out` as given (relative to the working directory, as paths
    /// on a command line are), else `out/<device>[-<variant>]` in the mobix tree, so that
    /// running from a subdirectory finds the build the tree's root made.
    fn out_dir(&self, repo: &Path) -> PathBuf {
        let name = match &self.variant {
            Some(v) => format!("{}-{v}", self.device),
            None => self.device.clone(),
        };
        self.out.clone().unwrap_or_else(|| repo.join("out").join(name))
    }

    fn load(&self, repo: &Path) -> Result<Profile> {
        profile::load_with(
            repo,
            &self.device,
            profile::Selection { variant: self.variant.as_deref(), config: self.config.as_deref() },
        )
    }
}

/// Entry point of the binary: runs the command and turns errors into exit codes.
pub fn main() -> ExitCode {
    // A reader that goes away (`mobix … | head`) ends mobix quietly, as it ends other
    // command-line tools, instead of a write error turning into a panic.
    // SAFETY: restoring the default disposition of a signal; no handler runs.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let cli = match command().try_get_matches().and_then(|m| Cli::from_arg_matches(&m)) {
        Ok(c) => c,
        // --help and --version print to stdout and succeed; a command line clap cannot
        // parse is bad input, exit 1 as for every other bad input (clap's own is 2).
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { 1 } else { 0 });
        }
    };
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

/// The command line as clap parses it: the derived commands, with `--store` and `--repo`
/// taken away from the commands that use neither (`inspect` reads only the files it is
/// given, `doctor` only the host; of the `device` commands only `check` reads the store,
/// for kernels' device trees), so their help does not offer them and giving them is an
/// error instead of being ignored.
pub fn command() -> clap::Command {
    let mut cmd = Cli::command();
    // Which of --store and --repo each family of commands (or one command of a family)
    // does not use.
    let unused_by: [(&[&str], &[&'static str]); 9] = [
        (&["inspect"], &["store", "repo"]),
        (&["doctor"], &["store", "repo"]),
        (&["device", "list"], &["store"]),
        (&["device", "show"], &["store"]),
        (&["device", "udev-rules"], &["store"]),
        (&["device", "import"], &["store"]),
        (&["store"], &["repo"]),
        (&["gc"], &["repo"]),
        (&["config"], &["store", "repo"]),
    ];
    fn refuse(sub: clap::Command, path: &[&str], ids: &[&'static str], shown: String) -> clap::Command {
        match path {
            [] => ids.iter().fold(sub, |sub, &id| {
                let shown = shown.clone();
                sub.arg(clap::Arg::new(id).long(id).hide(true).help("Not used by this command (refused)").value_parser(
                    move |_: &str| {
                        Err::<String, String>(format!(
                            "`mobix {shown}` uses no {}",
                            if id == "store" { "store" } else { "mobix tree" }
                        ))
                    },
                ))
            }),
            [first, rest @ ..] => sub.mut_subcommand(*first, |s| refuse(s, rest, ids, shown)),
        }
    }
    for (path, ids) in unused_by {
        cmd = refuse(cmd, path, ids, path.join(" "));
    }
    cmd
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

/// What a command that builds a target's system asks of [`system_inputs`].
#[derive(Default)]
struct Gather<'a> {
    /// The kernel to build with (default: the profile's own).
    kernel_from: Option<plan::KernelFrom>,
    /// `--locked`: refuse to complete the lock.
    locked: bool,
    /// Complete the lock in memory only.
    dry_run: bool,
    /// The command's cache options, for the downloads of lock completion.
    caches: Option<&'a settings::CacheArgs>,
}

/// What building a target's system needs, gathered in one place for every command that
/// builds one (`build`, `deploy`, `test --scenario`): the tree, the profile, the lock
/// completed for what the config names, the store and the host facts.
struct SystemInputs {
    repo: PathBuf,
    profile: Profile,
    lock: Lock,
    store: Store,
    inputs: plan::Inputs,
    /// The binary caches and trusted keys, the command's options resolved once.
    caches: settings::Settings,
}

fn system_inputs(g: &Global, target: &DeviceOut, want: &Gather) -> Result<SystemInputs> {
    let repo = find_repo(g)?;
    let profile = target.load(&repo)?;
    system_inputs_of(g, repo, profile, want)
}

/// [`system_inputs`] for a profile the command loaded already.
fn system_inputs_of(g: &Global, repo: PathBuf, profile: Profile, want: &Gather) -> Result<SystemInputs> {
    let mut lock = Lock::load(&repo)?;
    let store = open_store(g)?;
    let kernel_from = want.kernel_from.unwrap_or_else(|| plan::KernelFrom::default_for(&profile));
    let inputs = pipeline::host_facts(&repo, &profile, kernel_from, &store)?;
    let caches = match want.caches {
        Some(c) => c.resolve()?,
        None => settings::load()?,
    };
    let ctx = builder_ctx_with(&store, caches.clone());
    pipeline::lock::complete_lock(&profile, &inputs.packages, &mut lock, &ctx, want.locked, want.dry_run)?;
    drop(ctx);
    Ok(SystemInputs { repo, profile, lock, store, inputs, caches })
}

fn dispatch(cli: Cli) -> Result<ExitCode> {
    match &cli.command {
        Cmd::Build(a) => cmd_build(&cli.global, a),
        Cmd::Test(a) => cmd_test(&cli.global, a),
        Cmd::Run(a) => cmd_run(&cli.global, a),
        Cmd::Flash(a) => cmd_flash(&cli.global, a),
        Cmd::Boot(a) => cmd_boot(&cli.global, a),
        Cmd::Deploy(a) => cmd_deploy(&cli.global, a),
        Cmd::Doctor(a) => cmd_doctor(a),
        Cmd::Inspect(f) => inspect::run(f).map(|_| ExitCode::SUCCESS),
        Cmd::Device(d) => cmd_device(&cli.global, d),
        Cmd::Kernel(k) => cmd_kernel(&cli.global, k),
        Cmd::Generations(c) => cmd_generations(&cli.global, c),
        Cmd::Store(c) => store::cmd_store(&cli.global, c),
        Cmd::Gc(a) => store::cmd_gc(&cli.global, a),
        Cmd::Config(ConfigCmd::Reference) => {
            print!("{}", crate::profile::reference::document());
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Config(ConfigCmd::HashPin) => pin::cmd_hash_pin(),
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

/// The names ssh(1) offers by itself from `~/.ssh` when no `-i` is given.
const DEFAULT_IDENTITIES: [&str; 6] = ["id_rsa", "id_ecdsa", "id_ecdsa_sk", "id_ed25519", "id_ed25519_sk", "id_dsa"];

/// The `-i` a printed ssh line needs: the private key in `~/.ssh` whose public half
/// (`NAME.pub`) is one of the login user's keys, when ssh would not offer it by itself.
/// None when it would, or when no such key is in `~/.ssh` (it may be on another machine).
fn ssh_identity(system: &profile::SystemConfig) -> Option<String> {
    let home = PathBuf::from(std::env::var_os("HOME")?);
    let pubs: Vec<(String, String)> = std::fs::read_dir(home.join(".ssh"))
        .ok()?
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().strip_suffix(".pub")?.to_string();
            e.path().with_extension("").is_file().then_some(())?;
            Some((name, std::fs::read_to_string(e.path()).ok()?))
        })
        .collect();
    identity_for(system.login_keys(), &pubs).map(|name| format!("~/.ssh/{name}"))
}

/// Of the `(name, contents of name.pub)` key pairs, the one whose public key is among
/// `keys` (compared by type and key, not comment), unless ssh offers it by itself.
fn identity_for(keys: &[String], pubs: &[(String, String)]) -> Option<String> {
    let core = |k: &str| k.split_whitespace().take(2).collect::<Vec<_>>().join(" ");
    let wanted: Vec<String> = keys.iter().map(|k| core(k)).collect();
    let mut found: Vec<&String> = pubs.iter().filter(|(_, p)| wanted.contains(&core(p))).map(|(n, _)| n).collect();
    found.sort();
    if found.iter().any(|n| DEFAULT_IDENTITIES.contains(&n.as_str())) {
        return None;
    }
    found.first().map(|n| n.to_string())
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

/// What builders share, for a store: the host's download and cargo caches, progress on
/// stderr, and the binary caches of the user's configuration file.
fn builder_ctx(store: &Store) -> Result<Ctx<'_>> {
    Ok(builder_ctx_with(store, settings::load()?))
}

/// A builder context taking paths from `caches`.
fn builder_ctx_with(store: &Store, settings: settings::Settings) -> Ctx<'_> {
    Ctx {
        store,
        downloads: cache_dir().join("downloads"),
        apt_root: cache_dir().join("apt"),
        cargo_cache: cache_dir().join("cargo-target"),
        progress: &*term::TERMINAL,
        substituters: settings.substituters,
        trusted: settings.trusted,
        fetched: Default::default(),
        caches_down: Default::default(),
    }
}

#[cfg(test)]
mod tests {
    use crate::cli::identity_for;

    /// Issue 30 item 7: a printed ssh line names the key when ssh would not find it.
    #[test]
    fn the_printed_ssh_line_names_a_key_ssh_would_not_offer_by_itself() {
        let keys = vec!["ssh-ed25519 AAAApocket owner@laptop".to_string()];
        let pair = |name: &str, key: &str| (name.to_string(), format!("{key} comment\n"));
        let pubs = vec![pair("other", "ssh-ed25519 AAAAother"), pair("pocket", "ssh-ed25519 AAAApocket")];
        assert_eq!(identity_for(&keys, &pubs).as_deref(), Some("pocket"), "matched by key, not comment");
        let mut default = pubs.clone();
        default.push(pair("id_ed25519", "ssh-ed25519 AAAApocket"));
        assert_eq!(identity_for(&keys, &default), None, "ssh offers id_ed25519 by itself");
        assert_eq!(identity_for(&keys, &pubs[..1]), None, "the key is not on this machine");
        assert_eq!(identity_for(&[], &pubs), None);
    }
}
