//! The pipeline, wired once: host facts → plan the system → realise it → plan the images →
//! realise them → record the generation → publish the out directory.
//!
//! Pipeline stage: all of them, in order. Every caller that turns a profile into images
//! goes through here (`mobix build` and its dry run, `generations rollback`, the fallback
//! scenarios), so they cannot drift apart. Each step's result is a plain value that prints
//! as JSON. I/O: runs the builders through [`build::realise`], records generations and
//! writes the out directory; it prints nothing (progress goes to the context's reporter).

pub mod lock;

use crate::build::{self, Ctx};
use crate::format::bootstate;
use crate::generation;
use crate::hash;
use crate::lock::Lock;
use crate::plan::{self, ImageName, Inputs, KernelFrom, SystemPlan};
use crate::profile::{self, Profile};
use crate::publish::{self, Manifest};
use crate::report::Reporter;
use crate::store::{Store, StorePath};
use crate::util::{self, Fail};
use anyhow::Result;
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::Path;
use std::process::Command;

/// `prog args…`'s output (stdout, else stderr): a tool's version, which recipes hash.
///
/// Every answer is remembered in the store (`.mobix/host-tools.json`), so that a build whose
/// store paths are all present plans without the tool: when `prog` is not installed, the
/// version the last run saw stands in (and the reporter says so); a builder that needs the
/// tool then fails with the usual "not installed" error. With nothing remembered, a missing
/// tool is that error (exit 1, with the package to install).
pub fn tool_version(store: &Store, prog: &str, args: &[&str]) -> Result<String> {
    let memo_file = store.root().join(".mobix/host-tools.json");
    let mut memo: BTreeMap<String, String> =
        fs::read(&memo_file).ok().and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or_default();
    let key = format!("{prog} {}", args.join(" "));
    match util::run(Command::new(prog).args(args)) {
        Ok(out) => {
            let text = if out.stdout.is_empty() { out.stderr } else { out.stdout };
            let version = String::from_utf8_lossy(&text).trim().to_string();
            if memo.get(&key) != Some(&version) {
                memo.insert(key, version.clone());
                // Best effort: a read-only store still plans, it only remembers nothing.
                let _ = fs::create_dir_all(store.root().join(".mobix"))
                    .map_err(anyhow::Error::from)
                    .and_then(|()| util::write_atomic(&memo_file, &serde_json::to_vec_pretty(&memo)?));
            }
            Ok(version)
        }
        Err(e) if util::is_not_found(&e) => match memo.get(&key) {
            Some(v) => {
                store.reporter().note(&format!(
                    "{prog} is not installed: planning with the version the last build saw ({}); \
                     anything that must be built with it will fail",
                    first_line(v.clone())
                ));
                Ok(v.clone())
            }
            None => Err(e),
        },
        Err(e) => Err(e),
    }
}

fn first_line(s: String) -> String {
    s.lines().next().unwrap_or("").to_string()
}

/// The version line of the cross compiler, which C builds (kernels, `packages/`) hash.
pub fn cross_gcc_version(store: &Store) -> Result<String> {
    tool_version(store, &format!("{}gcc", build::kernel::CROSS_COMPILE), &["--version"]).map(first_line)
}

/// The host facts a system plan depends on: the init crate's hashes, the host tools'
/// versions, the overlays' and packages' specs, where the kernel comes from.
pub fn host_facts(repo: &Path, profile: &Profile, kernel_from: KernelFrom, store: &Store) -> Result<Inputs> {
    let k = &profile.device.kernel;
    let from_source = k.source.is_some() && (kernel_from == KernelFrom::Source || k.package.is_none());
    let kernel_spec =
        if from_source { Some(profile::load_kernel(repo, k.source.as_deref().expect("checked"))?) } else { None };
    let packages: Vec<profile::LoadedPackage> = (profile.system.packages.iter())
        .filter(|n| profile::package_spec(repo, n).is_file())
        .map(|n| profile::load_package(repo, n))
        .collect::<Result<_>>()?;
    let cross_gcc = if from_source || !packages.is_empty() { Some(cross_gcc_version(store)?) } else { None };
    let mut inputs = image_facts(repo, profile, store)?;
    for name in &profile.system.overlays {
        let dir = repo.join("overlays").join(name);
        let sha = hash::sha256_tree(&dir.join("files"), &|_| false)
            .map_err(|e| util::user_error(e, format!("hashing overlay {}", dir.display())))?;
        inputs.overlays.push((name.clone(), sha, dir));
    }
    inputs.prebuilt_kernel = prebuilt_kernel(profile)?;
    inputs.kernel_from = kernel_from;
    inputs.kernel_spec = kernel_spec;
    inputs.cross_gcc = cross_gcc;
    inputs.packages = packages;
    Ok(inputs)
}

/// `kernel.prebuilt` of a profile: its files found (relative to the device's directory)
/// and hashed.
pub fn prebuilt_kernel(profile: &Profile) -> Result<Option<plan::PrebuiltKernelFiles>> {
    let Some(p) = &profile.device.kernel.prebuilt else { return Ok(None) };
    let base = profile.file.parent().unwrap_or(Path::new("."));
    let at = |s: &str| base.join(s);
    let missing = |key: &str, path: &Path, e: anyhow::Error| {
        e.context(
            util::Fail::new(format!(
                "kernel.prebuilt.{key} of {}: cannot read {}",
                profile.file.display(),
                path.display()
            ))
            .hint("relative paths are relative to the device's directory (where `mobix device import` put the files)"),
        )
    };
    let image = at(&p.image);
    if !image.is_file() {
        return Err(missing("image", &image, anyhow::anyhow!("no such file")));
    }
    let image_sha256 = hash::sha256_file(&image).map_err(|e| missing("image", &image, e.into()))?;
    let dtbs = match &p.dtbs {
        None => None,
        Some(d) => {
            let dir = at(d);
            if !dir.is_dir() {
                return Err(missing("dtbs", &dir, anyhow::anyhow!("no such directory")));
            }
            let sha = hash::sha256_tree(&dir, &|_| false).map_err(|e| missing("dtbs", &dir, e.into()))?;
            Some((dir, sha))
        }
    };
    Ok(Some(plan::PrebuiltKernelFiles { image, image_sha256, dtbs }))
}

/// What every plan needs, images included: the init crate's hashes and the host tools'
/// versions (the filesystem tool of the profile's system partition only).
pub fn image_facts(repo: &Path, profile: &Profile, store: &Store) -> Result<Inputs> {
    let init_dir = repo.join("init");
    let init_source = hash::sha256_tree(&init_dir, &|rel| rel == "target" || rel.starts_with("target/"))
        .map_err(|e| util::user_error(e, format!("hashing the init sources in {}", init_dir.display())))?;
    let lock_file = init_dir.join("Cargo.lock");
    let init_lock =
        hash::sha256_file(&lock_file).map_err(|e| util::user_error(e, format!("reading {}", lock_file.display())))?;
    Ok(Inputs {
        overlays: Vec::new(),
        kernel_from: KernelFrom::Source,
        kernel_spec: None,
        cross_gcc: None,
        prebuilt_kernel: None,
        packages: Vec::new(),
        repo: repo.to_path_buf(),
        init_source,
        init_lock,
        rustc_version: tool_version(store, "rustc", &["-vV"])?,
        qemu_version: first_line(tool_version(store, "qemu-system-aarch64", &["--version"])?),
        mke2fs_version: first_line(tool_version(store, "mke2fs", &["-V"])?),
        mkfs_erofs_version: match profile.device.system.filesystem {
            profile::Filesystem::Erofs => Some(first_line(tool_version(store, "fsck.erofs", &["-V"])?)),
            profile::Filesystem::Ext4 => None,
        },
        glib_schemas_version: tool_version(store, "glib-compile-schemas", &["--version"]).ok().map(first_line),
        aarch64_emulator_version: tool_version(store, "qemu-aarch64-static", &["--version"]).ok().map(first_line),
        mime_database_version: tool_version(store, "update-mime-database", &["-v"]).ok().map(first_line),
    })
}

/// One device's pipeline: its profile, the pins, the host facts, and the builders' context.
pub struct Pipeline<'a> {
    pub ctx: &'a Ctx<'a>,
    pub profile: &'a Profile,
    pub lock: &'a Lock,
    pub inputs: &'a Inputs,
}

/// How many store paths a run built, substituted and found present.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq, Eq)]
pub struct Counts {
    pub built: usize,
    pub substituted: usize,
    pub present: usize,
    /// Files downloaded for what was built (packages, sources).
    pub downloads: usize,
    /// Archive bytes downloaded from binary caches.
    pub substituted_bytes: u64,
    /// Paths a binary cache had but could not deliver, built instead.
    pub built_instead: usize,
}

/// The realisations of one command, counted once per path: what the system's realisation
/// built or substituted is not "already present" again for the images'.
#[derive(Default)]
struct Tally(Vec<build::Report>);

impl Tally {
    fn add(&mut self, r: build::Report) {
        self.0.push(r);
    }

    fn counts(&self, downloads: usize) -> Counts {
        let made: BTreeSet<&StorePath> = self.0.iter().flat_map(|r| r.built.iter().chain(&r.substituted)).collect();
        let present: BTreeSet<&StorePath> =
            self.0.iter().flat_map(|r| &r.present).filter(|p| !made.contains(p)).collect();
        Counts {
            built: self.0.iter().map(|r| r.built.len()).sum(),
            substituted: self.0.iter().map(|r| r.substituted.len()).sum(),
            present: present.len(),
            downloads,
            substituted_bytes: self.0.iter().map(|r| r.downloaded).sum(),
            built_instead: self.0.iter().map(|r| r.built_instead.len()).sum(),
        }
    }
}

/// The images of one generation, realised in the store.
#[derive(Debug, Clone, Serialize)]
pub struct Images {
    pub toplevel: StorePath,
    pub boot: StorePath,
    pub system: StorePath,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vbmeta: Option<StorePath>,
}

impl Images {
    pub fn all(&self) -> Vec<StorePath> {
        [Some(self.boot.clone()), Some(self.system.clone()), self.vbmeta.clone()].into_iter().flatten().collect()
    }
}

/// `mobix build`: the generation, its images, what the run did, and the out directory's
/// manifest.
#[derive(Debug, Clone, Serialize)]
pub struct Built {
    pub generation: u32,
    /// Whether this build recorded a new generation (false: the toplevel is the newest's).
    pub new_generation: bool,
    pub kernel_origin: String,
    pub images: Images,
    pub counts: Counts,
    pub manifest: Manifest,
}

/// `mobix deploy`'s build: a generation's system without images.
#[derive(Debug, Clone, Serialize)]
pub struct SystemBuilt {
    pub generation: u32,
    pub new_generation: bool,
    pub toplevel: StorePath,
    pub counts: Counts,
}

/// One recipe of a dry run.
#[derive(Debug, Clone, Serialize)]
pub struct PlannedRecipe {
    pub path: StorePath,
    pub name: String,
    pub builder: &'static str,
    /// Whether the store has it already.
    pub built: bool,
    /// What the build would do with it: `present`, `substitute` (from a binary cache),
    /// `build`, or `unneeded` (what needs it comes from a cache).
    pub will: &'static str,
}

/// `mobix build --dry-run`: what a build would build and which generation it would be.
#[derive(Debug, Clone, Serialize)]
pub struct DryRun {
    pub version: u32,
    pub toplevel: StorePath,
    pub generation: u32,
    pub new_generation: bool,
    pub images: Vec<StorePath>,
    pub recipes: Vec<PlannedRecipe>,
    /// The archive bytes the build would download from binary caches.
    pub substitute_bytes: u64,
}

/// `generations rollback`: the out directory now boots `to` by default.
#[derive(Debug, Clone, Serialize)]
pub struct RolledBack {
    pub from: u32,
    /// Why the rollback started from `from`: the phone's booted generation, or the last build.
    pub from_what: &'static str,
    pub to: u32,
    /// The generations the new system image carries.
    pub carried: Vec<u32>,
    pub manifest: Manifest,
}

impl Pipeline<'_> {
    fn store(&self) -> &Store {
        self.ctx.store
    }

    fn label(&self) -> String {
        format!("mobix on {}", self.profile.device.name)
    }

    /// The generations of the phone built into `out`.
    pub fn lineage(&self, out: &Path) -> generation::Lineage {
        generation::Lineage::of(&self.profile.instance(), out)
    }

    /// The system config as the user named it, for the generation's record.
    fn config_name(&self) -> Option<String> {
        self.profile.config.as_ref().map(|c| c.display().to_string())
    }

    /// Plans the system (pure: nothing is built).
    pub fn plan_system(&self) -> Result<SystemPlan> {
        plan::system(self.profile, self.lock, self.inputs)
    }

    /// The whole build: realise the system, record its generation, realise the images that
    /// carry it, publish them to `out`.
    pub fn build(&self, out: &Path) -> Result<Built> {
        let store = self.store();
        // One build at a time writes an out directory: a second waits for the first, so
        // the out directory always ends with the later build's generation.
        std::fs::create_dir_all(out).map_err(|e| util::user_error(e, format!("creating {}", out.display())))?;
        let _out_lock = util::FileLock::take(&out.join(".mobix-build.lock"), || {
            self.ctx.progress.note(&format!("another mobix build is writing {}; waiting for it", out.display()))
        })?;
        let sys = self.plan_system()?;
        self.ctx.progress.note(&format!("kernel: {}", sys.kernel_origin));
        let mut tally = Tally::default();
        tally.add(build::realise(self.ctx, &sys.plan, std::slice::from_ref(&sys.toplevel))?);
        check_health_programs(store, self.profile, &sys.toplevel)?;
        let lin = self.lineage(out);
        let config = self.config_name();
        // The generation is recorded only once its images are built: a failed build leaves
        // no generation behind. Its number is taken under the store lock; if another build
        // took it meanwhile, the images are planned again for the number this one got.
        let (mut rec, planned_new) = generation::next(store, &lin, &sys.toplevel, &self.label(), config.as_deref())?;
        if planned_new {
            if let Some(words) = generation::config_change(&generation::list(store, &lin)?, &rec) {
                self.ctx.progress.note(&words);
            }
        }
        let (imgs, new) = loop {
            let (gens, state) = carried_generations(store, self.profile, &lin, &rec, self.ctx.progress)?;
            let (plan, imgs) = plan::images(self.profile, &sys, &gens, &state, self.inputs)?;
            if !store.contains(&imgs.system) {
                let words = check_fits(store, self.profile, &gens)?;
                self.ctx.progress.note(&words);
            }
            tally.add(build::realise(self.ctx, &plan, &imgs.all())?);
            if !planned_new && rec.boot_image.as_ref() == Some(&imgs.boot) {
                // The newest generation already, with this boot image: nothing to record,
                // so a build with nothing to do needs no writable store.
                break (imgs, false);
            }
            let (got, wrote) =
                generation::record(store, &store.lock()?, &lin, &sys.toplevel, &self.label(), config.as_deref())?;
            let planned = rec.generation;
            rec = got;
            if rec.generation == planned {
                break (imgs, wrote);
            }
            self.ctx.progress.note(&format!(
                "another build took generation {planned} meanwhile; this one is generation {}",
                rec.generation
            ));
        };
        let manifest = publish::publish(store, out, self.profile, rec.generation, &sys.toplevel, &imgs.all())?;
        if rec.boot_image.as_ref() != Some(&imgs.boot) {
            generation::set_boot_image(store, &store.lock()?, &lin, &rec, &imgs.boot)?;
        }
        let counts = tally.counts(self.ctx.downloads());
        Ok(Built {
            generation: rec.generation,
            new_generation: new,
            kernel_origin: sys.kernel_origin,
            images: Images { toplevel: sys.toplevel, boot: imgs.boot, system: imgs.system, vbmeta: imgs.vbmeta },
            counts,
            manifest,
        })
    }

    /// `mobix deploy`'s build: the system alone, without images, recorded as a generation
    /// of the phone built into `out` (the newest one again when its toplevel is unchanged).
    /// With `record` false nothing is recorded and the number is the one a build would take.
    pub fn build_system(&self, sys: &SystemPlan, out: &Path, record: bool) -> Result<SystemBuilt> {
        let store = self.store();
        self.ctx.progress.note(&format!("kernel: {}", sys.kernel_origin));
        let mut tally = Tally::default();
        tally.add(build::realise(self.ctx, &sys.plan, std::slice::from_ref(&sys.toplevel))?);
        check_health_programs(store, self.profile, &sys.toplevel)?;
        let (lin, config) = (self.lineage(out), self.config_name());
        let (rec, new) = if record {
            generation::record(store, &store.lock()?, &lin, &sys.toplevel, &self.label(), config.as_deref())?
        } else {
            generation::next(store, &lin, &sys.toplevel, &self.label(), config.as_deref())?
        };
        let counts = tally.counts(self.ctx.downloads());
        Ok(SystemBuilt { generation: rec.generation, new_generation: new, toplevel: sys.toplevel.clone(), counts })
    }

    /// The number a build of `toplevel` into `lin` would record (nothing is recorded): the
    /// newest generation's when its toplevel is the same, else the next one.
    pub fn next_generation(&self, lin: &generation::Lineage, toplevel: &StorePath) -> Result<u32> {
        let config = self.config_name();
        Ok(generation::next(self.store(), lin, toplevel, &self.label(), config.as_deref())?.0.generation)
    }

    /// The boot image of this system alone (for a deploy whose boot image changed); its
    /// path in the store.
    pub fn build_boot_image(&self) -> Result<StorePath> {
        let mut sys = self.plan_system()?;
        let mut plan = std::mem::take(&mut sys.plan);
        let boot = plan::boot_image(&mut plan, self.profile, &sys);
        build::realise(self.ctx, &plan, std::slice::from_ref(&boot))?;
        Ok(boot)
    }

    /// What [`Pipeline::build`] would do, system and images, without building or recording
    /// anything. The images' recipes hold the generation number, which is the newest
    /// generation's if the toplevel is unchanged and the next one otherwise.
    pub fn dry_run(&self, out: &Path) -> Result<DryRun> {
        let store = self.store();
        let sys = self.plan_system()?;
        let lin = self.lineage(out);
        let (rec, new) = generation::next(store, &lin, &sys.toplevel, &self.label(), self.config_name().as_deref())?;
        let (gens, state) = carried_generations(store, self.profile, &lin, &rec, self.ctx.progress)?;
        let (images, imgs) = plan::images(self.profile, &sys, &gens, &state, self.inputs)?;
        let targets: Vec<StorePath> = std::iter::once(sys.toplevel.clone()).chain(imgs.all()).collect();
        let will = build::preview(self.ctx, &images, &targets)?;
        let mut seen = std::collections::BTreeSet::new();
        let recipes = (sys.plan.recipes.iter().chain(&images.recipes))
            .filter(|r| seen.insert(r.path.clone()))
            .map(|r| PlannedRecipe {
                path: r.path.clone(),
                name: r.recipe.name.clone(),
                builder: r.recipe.builder.kind(),
                built: store.contains(&r.path),
                will: if will.present.contains(&r.path) {
                    "present"
                } else if will.substitute.contains_key(&r.path) {
                    "substitute"
                } else if will.build.contains(&r.path) {
                    "build"
                } else {
                    "unneeded"
                },
            })
            .collect();
        Ok(DryRun {
            version: 1,
            toplevel: sys.toplevel,
            generation: rec.generation,
            new_generation: new,
            images: imgs.all(),
            recipes,
            substitute_bytes: will.substitute.values().sum(),
        })
    }

    /// Builds generation `number` of a scenario: this device's system with `tweak` applied
    /// to its config, and images carrying `carried` plus it, starting with `state`. Records
    /// nothing (the scenario keeps its own phone and numbering).
    pub fn build_unrecorded(
        &self,
        number: u32,
        tweak: &dyn Fn(&mut profile::SystemConfig),
        carried: &BTreeMap<u32, StorePath>,
        state: &dyn Fn(&BTreeMap<u32, StorePath>) -> bootstate::Record,
    ) -> Result<Images> {
        let mut profile = self.profile.clone();
        tweak(&mut profile.system);
        let sys = plan::system(&profile, self.lock, self.inputs)?;
        build::realise(self.ctx, &sys.plan, std::slice::from_ref(&sys.toplevel))?;
        let mut gens = carried.clone();
        gens.insert(number, sys.toplevel.clone());
        let (plan, imgs) = plan::images(&profile, &sys, &gens, &state(&gens), self.inputs)?;
        build::realise(self.ctx, &plan, &imgs.all())?;
        Ok(Images { toplevel: sys.toplevel, boot: imgs.boot, system: imgs.system, vbmeta: imgs.vbmeta })
    }

    /// Writes images into `out` that boot generation `to` by default (default: the newest
    /// older one the phone has not found bad, as far as the host knows): its boot.img as
    /// its build made it, and a system image carrying the usual generations with `to` as
    /// the default. Needs no system plan: `self.inputs` may be [`image_facts`] alone.
    pub fn rollback(&self, out: &Path, to: Option<u32>) -> Result<RolledBack> {
        let (store, profile) = (self.store(), self.profile);
        let device = profile.shown();
        let lin = self.lineage(out);
        let all = generation::list(store, &lin)?;
        let built = publish::load_manifest(out)
            .ok()
            .filter(|m| m.device == profile.codename.as_str() && m.variant == profile.variant)
            .map(|m| m.generation)
            .or_else(|| all.keys().next_back().copied())
            .ok_or_else(|| {
                Fail::new(format!("{device} has no generations yet")).hint("build one with `mobix build`")
            })?;
        let known = generation::ledger(store, &lin)?;
        let (current, from_what) = generation::rollback_from(&all, built, known.as_ref());
        let target = match to {
            Some(n) => n,
            None => generation::rollback_target(&all, current, known.as_ref()).ok_or_else(|| {
                Fail::new(format!("{device} has no generation older than {current} to roll back to"))
                    .hint("`mobix generations list` shows the generations; --generation N picks one")
            })?,
        };
        let rec = all.get(&target).ok_or_else(|| {
            Fail::new(format!("{device} has no generation {target}"))
                .hint("`mobix generations list` shows the generations")
        })?;
        let missing = |what: &str| {
            Fail::new(format!("cannot roll back to generation {target}: its {what} is no longer in the store"))
                .hint("build that system again (same configuration) with `mobix build`, then roll back")
        };
        if !store.contains(&rec.toplevel) {
            return Err(missing("toplevel").into());
        }
        let boot =
            rec.boot_image.clone().filter(|b| store.contains(b)).ok_or_else(|| missing(ImageName::Boot.file_name()))?;
        let (mut gens, _) = carried_generations(store, profile, &lin, rec, self.ctx.progress)?;
        gens.insert(target, rec.toplevel.clone());
        let state = generation::initial_state(&gens, target, profile.system.boot.tries, known.as_ref());
        let mut plan = plan::Plan::default();
        let system = plan::system_image(&mut plan, profile, &gens, &state, self.inputs)?;
        if !store.contains(&system) {
            check_fits(store, profile, &gens)?;
        }
        let vbmeta = plan::vbmeta(&mut plan, profile);
        let wanted: Vec<_> = std::iter::once(system.clone()).chain(vbmeta.clone()).collect();
        build::realise(self.ctx, &plan, &wanted)?;
        let images: Vec<_> = [boot, system].into_iter().chain(vbmeta).collect();
        let manifest = publish::publish(store, out, profile, target, &rec.toplevel, &images)?;
        Ok(RolledBack { from: current, from_what, to: target, carried: gens.keys().copied().collect(), manifest })
    }
}

/// Refuses a system whose health checks name a program it does not have (they would fail
/// only on the phone, every boot a trial spent): a bare name is looked for where the phone's
/// PATH looks (the software tree's `bin` and `sbin`), a path in the software tree (`/usr`,
/// `/bin`, `/sbin`), the generation (`/run/current-system`) or the store where it points.
/// Paths elsewhere (the state partition) cannot be known at build time and are left.
fn check_health_programs(store: &Store, profile: &Profile, toplevel: &StorePath) -> Result<()> {
    if profile.system.health_checks.is_empty() {
        return Ok(());
    }
    let current = toplevel.phone_path();
    // The minimal init links busybox's applets and mobix-bless into /bin, where PATH ends.
    let in_bin: Vec<String> = match profile.system.init {
        profile::Init::Minimal => {
            let busybox = format!("{current}/sw/bin/busybox");
            let host = phone_has(store, &busybox)
                .then(|| resolve_on_host(store, &busybox))
                .flatten()
                .and_then(|p| std::fs::read(p).ok())
                .unwrap_or_default();
            crate::format::busybox::applets(&host).into_iter().chain(["mobix-bless".to_string()]).collect()
        }
        profile::Init::Systemd => Vec::new(),
    };
    for (i, check) in profile.system.health_checks.iter().enumerate() {
        let Some(program) = check.command.first() else { continue };
        if in_bin.contains(program) || program.strip_prefix("/bin/").is_some_and(|p| in_bin.iter().any(|b| b == p)) {
            continue;
        }
        let on_phone: Vec<String> = if !program.contains('/') {
            ["bin", "sbin"].iter().map(|d| format!("{current}/sw/{d}/{program}")).collect()
        } else if let Some(rest) = program.strip_prefix("/run/current-system/") {
            vec![format!("{current}/{rest}")]
        } else if let Some(rest) = program.strip_prefix("/usr/") {
            vec![format!("{current}/sw/{rest}")]
        } else if let Some(rest) = program.strip_prefix("/bin/") {
            vec![format!("{current}/sw/bin/{rest}")]
        } else if let Some(rest) = program.strip_prefix("/sbin/") {
            vec![format!("{current}/sw/sbin/{rest}")]
        } else if program.starts_with(&format!("{}/", crate::store::PHONE_STORE)) {
            vec![program.clone()]
        } else {
            continue;
        };
        if on_phone.iter().any(|p| phone_has(store, p)) {
            continue;
        }
        let looked = match (program.contains('/'), profile.system.init) {
            (true, _) => "",
            (false, profile::Init::Minimal) => {
                " (on the phone's PATH: the software tree's bin and sbin, busybox's applets)"
            }
            (false, profile::Init::Systemd) => " (on the phone's PATH: the software tree's bin and sbin)",
        };
        return Err(profile.system_error(
            &format!("health_checks[{i}].command"),
            format!("health check {:?} runs {program:?}, which this system does not have{looked}", check.name),
            Some(
                "add the package that has it to `packages` (Debian's name), or give the command's path as the \
                 phone sees it"
                    .into(),
            ),
        ));
    }
    Ok(())
}

/// Whether `path` (absolute, in the phone's store) names something in the store, following
/// the links on the way as the phone would (the last one is not followed: a link into the
/// closure is there on the phone).
fn phone_has(store: &Store, path: &str) -> bool {
    walk_on_host(store, path, false).is_some()
}

/// The host file `path` (absolute, in the phone's store) is, every link followed.
fn resolve_on_host(store: &Store, path: &str) -> Option<std::path::PathBuf> {
    walk_on_host(store, path, true)
}

fn walk_on_host(store: &Store, path: &str, follow_last: bool) -> Option<std::path::PathBuf> {
    let prefix = format!("{}/", crate::store::PHONE_STORE);
    let parts = |p: &str| -> Vec<String> { p.split('/').filter(|c| !c.is_empty()).rev().map(str::to_string).collect() };
    let mut todo = parts(path);
    let mut at = std::path::PathBuf::from("/");
    let mut host = std::path::PathBuf::new();
    for _ in 0..256 {
        let Some(c) = todo.pop() else { return Some(host) };
        let next = at.join(&c);
        if prefix.starts_with(&format!("{}/", next.to_str()?)) {
            // `/mobix`, `/mobix/store`: on the way into the store.
            at = next;
            continue;
        }
        host = store.root().join(next.to_str()?.strip_prefix(&prefix)?);
        let meta = host.symlink_metadata().ok()?;
        if meta.file_type().is_symlink() && (follow_last || !todo.is_empty()) {
            let target = std::fs::read_link(&host).ok()?;
            if target.is_absolute() {
                at = std::path::PathBuf::from("/");
            }
            todo.extend(parts(&target.to_string_lossy()));
            continue;
        }
        at = next;
    }
    None
}

/// Refuses, before a system image is made (one already in the store fitted), a system
/// partition whose filesystem cannot hold the closure of the generations it is to carry:
/// their files alone, each rounded up to the filesystem's 4 KiB blocks, need more than it
/// has (the filesystem's own tables need more still, so a closure just under the size can
/// still fail in mke2fs). Says how much of the image the closure fills when it fits.
fn check_fits(store: &Store, profile: &Profile, gens: &BTreeMap<u32, StorePath>) -> Result<String> {
    let size = profile.device.system_image_size();
    let room = size.saturating_sub(bootstate::AREA);
    let roots: Vec<StorePath> = gens.values().cloned().collect();
    let closure = store.closure(&roots)?;
    let need: u64 = closure.iter().map(|p| generation::path_blocks(store, p, 4096) * 4096).sum();
    let mib = |b: u64| b.div_ceil(1 << 20);
    let numbers: Vec<String> = gens.keys().map(|n| n.to_string()).collect();
    if need <= room {
        return Ok(format!(
            "the system: {} MiB in {} store paths (generations {}), in a system image of {} MiB",
            mib(need),
            closure.len(),
            numbers.join(", "),
            mib(size)
        ));
    }
    let wanted = mib(need + need / 4);
    let partition = profile.device.partition(&profile.device.system.partition).and_then(|p| p.size).map(|s| s.0);
    let also = match partition {
        Some(p) if wanted << 20 > p => format!(
            " (and a `{}` partition of at least that in `storage.partitions`: it has {} MiB)",
            profile.device.system.partition,
            mib(p)
        ),
        _ => String::new(),
    };
    Err(profile.device_error(
        "system.size",
        format!(
            "the system image of {} MiB leaves {} MiB for its filesystem, and the closure of the generations it \
             carries ({}: {} store paths) needs {} MiB",
            mib(size),
            room >> 20,
            numbers.join(", "),
            closure.len(),
            mib(need)
        ),
        Some(format!(
            "give `system.size` at least {wanted} MiB (a quarter more than the closure, for the filesystem's own \
             tables){also}, or carry fewer generations (`generations.keep`)"
        )),
    ))
}

/// The generations the system image of `rec` carries (from its lineage alone), and the
/// boot-state record it starts with (what the host last learned from the lineage's phone
/// kept). A generation whose toplevel left the store is not carried, and `progress` says so.
pub fn carried_generations(
    store: &Store,
    profile: &Profile,
    lin: &generation::Lineage,
    rec: &generation::Record,
    progress: &dyn Reporter,
) -> Result<(BTreeMap<u32, StorePath>, bootstate::Record)> {
    let current = rec.generation;
    let mut all = generation::list(store, lin)?;
    // A dry run's generation is not recorded.
    all.entry(current).or_insert_with(|| rec.clone());
    let known = generation::ledger(store, lin)?;
    let protected = known.as_ref().map(generation::protected).unwrap_or_default();
    let g = &profile.system.generations;
    let mut gens = generation::carried(&generation::toplevels(&all), g.keep, &g.pinned, &protected);
    gens.retain(|n, top| {
        let present = store.contains(top);
        if !present && *n != current {
            progress.note(&format!("generation {n} is not carried: its toplevel {top} is no longer in the store"));
        }
        present || *n == current
    });
    let state = generation::initial_state(&gens, current, profile.system.boot.tries, known.as_ref());
    Ok((gens, state))
}
