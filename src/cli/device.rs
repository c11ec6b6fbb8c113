//! `mobix device list|show|check|udev-rules|import` and `mobix doctor`.

use super::*;
use anyhow::Context;

#[derive(Subcommand, Debug)]
pub(super) enum DeviceCmd {
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
    /// Validate every profile (or one device, all its variants) without building, and say
    /// whether each one's device tree describes the bootloader's framebuffer (a
    /// `simple-framebuffer` node), which stage-1 draws its screens on; without one nothing
    /// shows before the system's own display driver. Device trees are read from kernels
    /// already in the store; `--device-trees` fetches the rest.
    Check {
        /// The device [default: all].
        name: Option<String>,
        /// Fetch each profile's kernel package to read its device trees (a kernel built
        /// from source is read when it is in the store; otherwise its substitute package).
        #[arg(long)]
        device_trees: bool,
    },
    /// Print udev rules that let a logged-in user (and the plugdev group) flash the
    /// profiles' phones over USB without root: one rule per USB id the profiles name
    /// (`identity.usb`). udev/51-mobix-fastboot.rules is this output for the shipped profiles.
    UdevRules,
    /// Profile keys from what another tool or the phone itself knows.
    #[command(subcommand)]
    Import(ImportCmd),
}

#[derive(Subcommand, Debug)]
pub(super) enum ImportCmd {
    /// The boot image keys of a phone's stock boot.img (read natively): header version,
    /// page size, base and offsets, command line, where the device tree is. Printed as
    /// profile YAML, with what a profile cannot say listed after it.
    Bootimg {
        /// The stock boot.img (from the phone's boot partition or a firmware package).
        image: PathBuf,
        /// Its vendor_boot.img, which holds the addresses of header versions 3 and 4.
        #[arg(long, value_name = "FILE")]
        vendor_boot: Option<PathBuf>,
        /// Write devices/CODENAME/device.yaml: a whole profile booting the stock kernel
        /// (taken out of the image, with its device trees, into devices/CODENAME/stock/).
        #[arg(long, value_name = "CODENAME")]
        name: Option<String>,
        /// With --name: replace an existing profile.
        #[arg(long, requires = "name")]
        force: bool,
        /// Print JSON (`keys`, `unmapped`).
        #[arg(long, conflicts_with = "name")]
        json: bool,
    },
    /// A device profile from a postmarketOS `deviceinfo` file (pmaports' device packages),
    /// with the boot image as boot-deploy hands it to mkbootimg: identity, partitions, boot
    /// image header, device trees (suffixed `deviceinfo_dtb_<variant>` keys become
    /// variants), console and command line, stage-1 modules. Writes
    /// devices/<codename>/device.yaml, with every key it read but could not map (and every
    /// value it assumed) listed at its end, and checks it; `--print` or `--json` only print.
    Deviceinfo {
        /// The deviceinfo file.
        file: PathBuf,
        /// The device package's kernel-cmdline.conf (deviceinfo's own cmdline keys are
        /// obsolete and read only without it).
        #[arg(long, value_name = "FILE")]
        kernel_cmdline: Option<PathBuf>,
        /// The profile's name (a directory under devices/) [default: the deviceinfo's codename].
        #[arg(long, value_name = "CODENAME")]
        name: Option<String>,
        /// Your kernel Image for the phone (`kernel.prebuilt.image`) [default: Debian's
        /// generic arm64 kernel package from mobix.lock as a stand-in].
        #[arg(long, value_name = "FILE", requires = "dtbs")]
        kernel_image: Option<PathBuf>,
        /// The directory of your kernel's device trees (`kernel.prebuilt.dtbs`).
        #[arg(long, value_name = "DIR", requires = "kernel_image")]
        dtbs: Option<PathBuf>,
        /// Replace an existing devices/<codename>/device.yaml.
        #[arg(long)]
        force: bool,
        /// Print the profile instead of writing it.
        #[arg(long)]
        print: bool,
        /// Print JSON (`codename`, `keys`, `unmapped`) instead of writing.
        #[arg(long, conflicts_with = "print")]
        json: bool,
    },
}

#[derive(Args, Debug)]
pub(super) struct DoctorArgs {
    /// Print the checks as JSON on stdout.
    #[arg(long)]
    json: bool,
}

pub(super) fn cmd_device(g: &Global, d: &DeviceCmd) -> Result<ExitCode> {
    if let DeviceCmd::Import(i) = d {
        return cmd_import(g, i);
    }
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
                print!("{}", hex_addresses(&serde_norway::to_string(&v)?));
            }
            Ok(ExitCode::SUCCESS)
        }
        DeviceCmd::Check { name, device_trees } => {
            let all = profile::load_all(&repo)?;
            let mut checked = 0;
            let mut first_err = None;
            let mut unread = Vec::new();
            for (c, v, r) in all {
                if name.as_deref().is_some_and(|n| n != c.as_str()) {
                    continue;
                }
                checked += 1;
                let id = v.as_ref().map_or(c.to_string(), |v| format!("{c} --variant {v}"));
                match r {
                    Ok(p) => {
                        progress(&format!("ok: {id}"));
                        // The profile is valid either way: what keeps its device trees from
                        // being read (a missing host tool, no network) is said, not fatal.
                        match screen_check(g, &repo, &p, *device_trees) {
                            Ok(ScreenCheck::Said(lines)) => lines.iter().for_each(|l| progress(&format!("  {l}"))),
                            Ok(ScreenCheck::NotAtHand) => unread.push(id),
                            Err(e) => progress(&format!("  screen: not checked: {e:#}")),
                        }
                    }
                    Err(e) => {
                        progress(&format!("FAILED: {id}"));
                        first_err.get_or_insert(e);
                    }
                }
            }
            if !unread.is_empty() {
                progress(&format!(
                    "the screens of {} were not checked, their kernels not being in the store: \
                     `--device-trees` fetches kernel packages; a kernel built from source is read once \
                     `mobix build` has built it",
                    unread.join(", ")
                ));
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
        DeviceCmd::UdevRules => {
            print!("{}", udev_rules(&repo)?);
            Ok(ExitCode::SUCCESS)
        }
        DeviceCmd::Import(i) => cmd_import(g, i),
    }
}

fn cmd_import(g: &Global, i: &ImportCmd) -> Result<ExitCode> {
    use crate::format::{bootimg::BootImage, stockimg, vendor_boot::VendorBootImage};
    use profile::deviceinfo::KernelChoice;
    let read = |p: &Path| std::fs::read(p).with_context(|| format!("reading {}", p.display()));
    let (image, vendor_boot, name, force, json) = match i {
        ImportCmd::Bootimg { image, vendor_boot, name, force, json } => (image, vendor_boot, name, force, json),
        ImportCmd::Deviceinfo { file, kernel_cmdline, name, kernel_image, dtbs, force, print, json } => {
            let text = |p: &Path| {
                std::fs::read_to_string(p).map_err(|e| util::user_error(e, format!("reading {}", p.display())))
            };
            let di = profile::deviceinfo::parse(&text(file)?, &file.display().to_string())?;
            let cmdline = kernel_cmdline.as_deref().map(text).transpose()?;
            // The tree is needed only to write; a missing one is reported after the
            // deviceinfo's own errors, which stand wherever mobix runs.
            let write = !*print && !*json;
            let found = write.then(|| find_repo(g));
            let repo = found.as_ref().and_then(|r| r.as_ref().ok());
            let codename = match name {
                Some(n) => n.clone(),
                None => di.required("codename")?.to_string(),
            };
            let codename = profile::Codename::new(&codename).map_err(|e| {
                let fail = Fail::new(format!("{codename:?} cannot name a profile: {e}"));
                match suggested_codename(&codename) {
                    Some(s) => fail.hint(format!("--name {s} imports it under that name")),
                    None => fail,
                }
            })?;
            let kernel = match (kernel_image, dtbs, &repo) {
                (Some(img), Some(d), Some(repo)) => KernelChoice::Prebuilt {
                    image: path_from(repo, img, "--kernel-image", false)?,
                    dtbs: Some(path_from(repo, d, "--dtbs", true)?),
                },
                (Some(img), d, None) => KernelChoice::Prebuilt {
                    image: img.display().to_string(),
                    dtbs: d.as_ref().map(|d| d.display().to_string()),
                },
                (_, _, Some(repo)) => match stand_in_kernel(repo)? {
                    Some(p) => KernelChoice::Package(p),
                    None => KernelChoice::Unknown,
                },
                _ => KernelChoice::Unknown,
            };
            let mut got = profile::deviceinfo::profile_keys(&di, cmdline.as_deref(), &kernel)?;
            // The tree's families, where there is a tree (also for --print and --json).
            let tree = repo.cloned().or_else(|| find_repo(g).ok());
            let families = tree.as_deref().map(family_hints).unwrap_or_default();
            profile::deviceinfo::infer(&mut got, &di, &families, &kernel);
            if let Some(repo) = found.transpose()? {
                let sources = std::iter::once(file).chain(kernel_cmdline).map(|p| p.display().to_string());
                let from = format!(
                    "`mobix device import deviceinfo` from postmarketOS's {}",
                    sources.collect::<Vec<_>>().join(" and ")
                );
                return write_profile(&repo, &codename, &from, &got.keys, &got.notes, *force);
            }
            if *json {
                let unmapped: Vec<_> =
                    got.notes.iter().map(|(k, why)| serde_json::json!({"key": k, "why": why})).collect();
                let out =
                    serde_json::json!({"version": 1, "codename": got.codename, "keys": got.keys, "unmapped": unmapped});
                println!("{}", serde_json::to_string_pretty(&out)?);
                return Ok(ExitCode::SUCCESS);
            }
            println!("# from {}: keys for devices/{}/device.yaml", file.display(), got.codename);
            print!("{}", hex_addresses(&serde_norway::to_string(&got.keys)?));
            for (k, why) in &got.notes {
                println!("# not mapped: {k}: {why}");
            }
            return Ok(ExitCode::SUCCESS);
        }
    };
    let bytes = read(image)?;
    let boot = BootImage::parse(&bytes).map_err(|e| util::user_error(e, format!("reading {}", image.display())))?;
    let vendor = match vendor_boot {
        Some(v) => Some(
            VendorBootImage::parse(&read(v)?).map_err(|e| util::user_error(e, format!("reading {}", v.display())))?,
        ),
        None => None,
    };
    let analysis = stockimg::analyze(&boot, vendor.as_ref());
    if let Some(name) = name {
        let repo = find_repo(g)?;
        let codename =
            profile::Codename::new(name).map_err(|e| Fail::new(format!("{name:?} cannot name a profile: {e}")))?;
        let file = profile_file(&repo, &codename, *force)?;
        // The stock kernel and its device trees, beside the profile.
        let (kernel, dtbs) = stockimg::stock_kernel(&boot, vendor.as_ref(), &analysis);
        let dtb_files: Vec<String> = (0..dtbs.len()).map(|i| format!("stock-{i}.dtb")).collect();
        let (keys, notes) = profile::import::bootimg_profile(
            &analysis,
            boot.os_version,
            codename.as_str(),
            "stock/Image",
            "stock/dtbs",
            &dtb_files,
        )
        .map_err(|e| Fail::new(format!("{}: {e}", image.display())))?;
        let stock = file.parent().expect("a directory").join("stock");
        util::remove_tree(&stock.join("dtbs"))?;
        std::fs::create_dir_all(stock.join("dtbs"))?;
        util::write_atomic(&stock.join("Image"), &kernel)?;
        for (f, d) in dtb_files.iter().zip(&dtbs) {
            util::write_atomic(&stock.join("dtbs").join(f), d)?;
        }
        progress(&format!("wrote the stock kernel and {} device tree(s) to {}", dtbs.len(), stock.display()));
        let mut from = format!("`mobix device import bootimg` from {}", image.display());
        if let Some(v) = vendor_boot {
            from.push_str(&format!(" and {}", v.display()));
        }
        return write_profile(&repo, &codename, &from, &keys, &notes, *force);
    }
    let (keys, unmapped) = profile::import::bootimg_keys(&analysis, boot.os_version);
    if *json {
        let unmapped: Vec<_> = unmapped.iter().map(|(k, why)| serde_json::json!({"key": k, "why": why})).collect();
        let out = serde_json::json!({"version": 1, "keys": keys, "unmapped": unmapped});
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "# from {} (boot image header version {}): keys for devices/<codename>/device.yaml",
        image.display(),
        boot.header_version
    );
    print!("{}", hex_addresses(&serde_norway::to_string(&keys)?));
    for (k, why) in &unmapped {
        println!("# not mapped: {k}: {why}");
    }
    Ok(ExitCode::SUCCESS)
}

/// What `device check` says about a profile's screen.
enum ScreenCheck {
    Said(Vec<String>),
    /// Its kernel's device trees are not in the store (and were not to be fetched).
    NotAtHand,
}

/// Whether stage-1 will have a framebuffer to draw on: the emulated phone's GPU with its
/// driver in the kernel, or a `simple-framebuffer` node in each device tree of the kernel's
/// that the boot image carries.
fn screen_check(g: &Global, repo: &Path, p: &profile::Profile, fetch: bool) -> Result<ScreenCheck> {
    use profile::DtbSource;
    let screen = p.device.qemu.as_ref().and_then(|q| q.screen.as_ref());
    let dtb_files = match &p.device.bootimg.dtb {
        Some(d) if d.source == DtbSource::Kernel => d.files.clone(),
        _ => Vec::new(),
    };
    if screen.is_none() && dtb_files.is_empty() {
        return Ok(ScreenCheck::Said(vec![
            "screen: not known (the boot image carries none of the kernel's device trees to read)".into(),
        ]));
    }
    let store = open_store(g)?;
    let lock = Lock::load(repo)?;
    // The kernel the build would use; a source kernel not built yet gives way to its
    // substitute package, which is read instead (and said so).
    let mut from = plan::KernelFrom::Source;
    let mut sys = plan::system(p, &lock, &pipeline::host_facts(repo, p, from, &store)?)?;
    if !store.contains(&sys.kernel) && p.device.kernel.source.is_some() && p.device.kernel.package.is_some() {
        let alt = plan::system(p, &lock, &pipeline::host_facts(repo, p, plan::KernelFrom::Substitute, &store)?)?;
        if store.contains(&alt.kernel) || fetch {
            (sys, from) = (alt, plan::KernelFrom::Substitute);
        }
    }
    if !store.contains(&sys.kernel) {
        if !fetch || p.device.kernel.source.is_some() && from == plan::KernelFrom::Source {
            // Compiling a kernel is a build's work, not a check's.
            return Ok(ScreenCheck::NotAtHand);
        }
        let ctx = builder_ctx(&store)?;
        build::realise(&ctx, &sys.plan, std::slice::from_ref(&sys.kernel))?;
    }
    let kernel = store.host_path(&sys.kernel);
    let whose = match from {
        plan::KernelFrom::Substitute => format!(
            " of {} (the substitute for kernels/{}, which is not in the store)",
            p.device.kernel.package.as_deref().unwrap_or_default(),
            p.device.kernel.source.as_deref().unwrap_or_default()
        ),
        plan::KernelFrom::Source => String::new(),
    };
    if let Some(q) = screen {
        let config = std::fs::read_to_string(kernel.join("config")).unwrap_or_default();
        let option = |v: &str| config.lines().any(|l| l == format!("CONFIG_DRM_VIRTIO_GPU={v}"));
        let modules = &p.device.stage1.screen_modules;
        let said = if option("y") {
            format!(
                "screen: the emulated phone's virtio GPU, {}x{} (its driver built into the kernel)",
                q.width, q.height
            )
        } else if option("m") && !modules.is_empty() {
            format!(
                "screen: the emulated phone's virtio GPU, {}x{} (its driver loaded by stage-1: {})",
                q.width,
                q.height,
                modules.join(", ")
            )
        } else {
            format!(
                "warning: the kernel{whose} has no virtio GPU driver {} (CONFIG_DRM_VIRTIO_GPU): the emulated \
                 phone's screen stays dark; stage-1 speaks on the serial console",
                if option("m") { "that stage-1 loads (`stage1.screen_modules`)" } else { "built in or as a module" }
            )
        };
        return Ok(ScreenCheck::Said(vec![said]));
    }
    let mut said = Vec::new();
    for f in dtb_files {
        let path = kernel.join("dtbs").join(&f);
        let data = std::fs::read(&path).with_context(|| format!("reading device tree {}", path.display()))?;
        let nodes = crate::format::fdt::find_compatible(&data, "simple-framebuffer")
            .map_err(|e| util::user_error(e, format!("device tree {}", path.display())))?;
        said.push(match nodes.iter().find(|n| n.enabled) {
            Some(n) => {
                format!("screen: {f}{whose} describes the bootloader's framebuffer ({}): stage-1 draws on it", n.path)
            }
            None => format!(
                "warning: {f}{whose} has no {}simple-framebuffer node: nothing shows on the screen before the \
                 system's own display driver; stage-1 speaks on the serial console and over USB only",
                if nodes.is_empty() { "" } else { "enabled " }
            ),
        });
    }
    Ok(ScreenCheck::Said(said))
}

/// A name that can name a profile for one that cannot (`xiaomi-jasmine_sprout`:
/// `xiaomi-jasmine-sprout`), if lowercasing and dashes make one.
fn suggested_codename(name: &str) -> Option<String> {
    let s: String =
        name.to_lowercase().chars().map(|c| if c == '_' || c == '.' || c == ' ' { '-' } else { c }).collect();
    profile::Codename::new(&s).ok().map(|c| c.to_string()).filter(|c| c != name)
}

/// The families under `devices/families/` with their stage-1 modules; a file that does not
/// read is left out (`mobix device check` reports it).
fn family_hints(repo: &Path) -> Vec<profile::deviceinfo::FamilyHint> {
    let Ok(rd) = std::fs::read_dir(repo.join("devices/families")) else { return Vec::new() };
    let mut out: Vec<profile::deviceinfo::FamilyHint> = rd
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().strip_suffix(".yaml")?.to_string();
            let v: serde_norway::Value = serde_norway::from_str(&std::fs::read_to_string(e.path()).ok()?).ok()?;
            let modules = v.get("stage1").and_then(|s| s.get("modules")).and_then(|m| m.as_sequence());
            let modules = modules.map(|m| m.iter().filter_map(|x| x.as_str().map(str::to_string)).collect());
            Some(profile::deviceinfo::FamilyHint { name, modules: modules.unwrap_or_default() })
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

/// A path given on the command line as a profile writes it: relative to the device's
/// directory (`devices/<codename>/`, two levels down) when it lies in the tree `repo`,
/// else absolute. It must exist.
fn path_from(repo: &Path, p: &Path, flag: &str, is_dir: bool) -> Result<String> {
    let abs = p.canonicalize().map_err(|e| util::user_error(e, format!("{flag} {}", p.display())))?;
    if is_dir != abs.is_dir() {
        let want = if is_dir { "a directory" } else { "a file" };
        return Err(Fail::new(format!("{flag} {}: not {want}", p.display())).into());
    }
    Ok(match abs.strip_prefix(repo.canonicalize()?) {
        Ok(rel) => Path::new("../..").join(rel).display().to_string(),
        Err(_) => abs.display().to_string(),
    })
}

/// Debian's generic arm64 kernel package `mobix.lock` pins, to stand in for a phone's own:
/// the newest `linux-image-X.Y` entry, else `linux-image`.
fn stand_in_kernel(repo: &Path) -> Result<Option<String>> {
    let lock = crate::lock::Lock::load(repo)?;
    let mut named: Vec<(Vec<u32>, &String)> = lock
        .debs
        .keys()
        .filter_map(|k| {
            let v = k.strip_prefix("linux-image-")?;
            Some((v.split('.').map(|n| n.parse().ok()).collect::<Option<Vec<u32>>>()?, k))
        })
        .collect();
    named.sort();
    Ok(named
        .last()
        .map(|(_, k)| (*k).clone())
        .or_else(|| lock.debs.contains_key("linux-image").then(|| "linux-image".into())))
}

/// `devices/<codename>/device.yaml`, refused where it exists unless `force`.
fn profile_file(repo: &Path, codename: &profile::Codename, force: bool) -> Result<PathBuf> {
    let file = repo.join("devices").join(codename.as_str()).join("device.yaml");
    if file.exists() && !force {
        return Err(Fail::new(format!("{} exists", file.display()))
            .hint("--force replaces it (or --name gives the import another name)")
            .into());
    }
    Ok(file)
}

/// Writes `devices/<codename>/device.yaml` from imported keys: a comment naming where they
/// came from, the keys, then what was not mapped. Refuses to replace a profile without
/// `force`; checks the written profile (and every variant) as `mobix device check` does.
fn write_profile(
    repo: &Path,
    codename: &profile::Codename,
    from: &str,
    keys: &profile::imported::DeviceKeys,
    notes: &[(String, String)],
    force: bool,
) -> Result<ExitCode> {
    let file = profile_file(repo, codename, force)?;
    let mut text = format!("# Written by {from}.\n# Check the notes at the end before flashing.\n");
    text.push_str(&hex_addresses(&serde_norway::to_string(keys)?));
    if !notes.is_empty() {
        text.push_str(&format!("\n{}\n", profile::import::NOTES_HEADING));
        for (k, why) in notes {
            text.push_str(&format!("# - {k}: {why}\n"));
        }
    }
    std::fs::create_dir_all(file.parent().expect("a directory"))?;
    util::write_atomic(&file, text.as_bytes())?;
    progress(&format!("wrote {}", file.display()));
    for (k, why) in notes {
        progress(&format!("  {k}: {why}"));
    }
    let mut variants = Vec::new();
    for (c, v, r) in profile::load_all(repo)?.into_iter().filter(|(c, _, _)| c == codename) {
        let id = v.as_ref().map_or(c.to_string(), |v| format!("{c} --variant {v}"));
        r.map_err(|e| e.context(Fail::new(format!("the written profile {id} does not pass its check"))))?;
        variants.extend(v);
    }
    let next = match variants.as_slice() {
        [] => format!("`mobix build --device {codename}`"),
        vs => format!("`mobix build --device {codename} --variant V` (V one of {})", vs.join(", ")),
    };
    progress(&format!("checked {} profile(s) of {codename}: next, {next}", variants.len().max(1)));
    Ok(ExitCode::SUCCESS)
}

/// The udev rules for every USB id the profiles under `repo` name, sorted and without
/// duplicates, each with the profiles that use it.
fn udev_rules(repo: &Path) -> Result<String> {
    let mut ids: std::collections::BTreeMap<(u16, u16), std::collections::BTreeSet<String>> = Default::default();
    for (c, _, r) in profile::load_all(repo)? {
        let p = r.with_context(|| format!("reading the profile of {c}"))?;
        if let Some(u) = &p.device.identity.usb {
            ids.entry((u.vendor_id, u.product_id)).or_default().insert(c.to_string());
        }
    }
    let mut out = String::from(
        "# udev rules for flashing phones with mobix over USB without root, made by\n\
         # `mobix device udev-rules` from the device profiles' identity.usb ids.\n\
         # Install: sudo install -m 644 THIS_FILE /etc/udev/rules.d/51-mobix-fastboot.rules\n\
         #          sudo udevadm control --reload-rules && sudo udevadm trigger\n\
         # then unplug and replug the phone. `uaccess` gives the user logged in at the seat\n\
         # access; members of the plugdev group have it on any login.\n",
    );
    for ((vendor, product), devices) in ids {
        let names: Vec<&str> = devices.iter().map(String::as_str).collect();
        out.push_str(&format!(
            "# {}\nSUBSYSTEM==\"usb\", ATTR{{idVendor}}==\"{vendor:04x}\", ATTR{{idProduct}}==\"{product:04x}\", \
             MODE=\"0660\", GROUP=\"plugdev\", TAG+=\"uaccess\"\n",
            names.join(", ")
        ));
    }
    Ok(out)
}

pub(super) fn cmd_doctor(a: &DoctorArgs) -> Result<ExitCode> {
    let checks = doctor::checks();
    let missing: Vec<&doctor::Check> = checks.iter().filter(|c| c.found.is_none()).collect();
    if a.json {
        println!("{}", serde_json::to_string_pretty(&serde_json::json!({"version": 1, "checks": checks}))?);
    } else {
        // Columns as wide as their longest entry, so long names never push the next one.
        let tool_w = checks.iter().map(|c| c.tool.len()).max().unwrap_or(0);
        let pkg_w = checks.iter().map(|c| c.package.len()).max().unwrap_or(0);
        for c in &checks {
            let state = if c.found.is_some() { "ok" } else { "missing" };
            println!("{:<tool_w$}  {state:<7}  {:<pkg_w$}  {}", c.tool, c.package, c.used_by);
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

/// Addresses and USB ids as profiles and deviceinfo files write them: in hex
/// (`kernel_offset: 0x00008000`, `vendor_id: 0x18d1`). A YAML integer either way.
fn hex_addresses(yaml: &str) -> String {
    let mut out = String::with_capacity(yaml.len());
    for line in yaml.lines() {
        let hexed = line.split_once(": ").and_then(|(key, value)| {
            let name = key.trim_start().trim_start_matches("- ");
            let n: u64 = value.trim().parse().ok()?;
            if name == "base" || name.ends_with("_offset") {
                Some(format!("{key}: 0x{n:08x}"))
            } else if name == "vendor_id" || name == "product_id" {
                Some(format!("{key}: 0x{n:04x}"))
            } else {
                None
            }
        });
        out.push_str(hexed.as_deref().unwrap_or(line));
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn addresses_and_usb_ids_print_in_hex() {
        let yaml =
            "bootimg:\n  base: 0\n  kernel_offset: 32768\n  page_size: 4096\nidentity:\n  usb:\n    vendor_id: 6353\n";
        assert_eq!(
            super::hex_addresses(yaml),
            "bootimg:\n  base: 0x00000000\n  kernel_offset: 0x00008000\n  page_size: 4096\nidentity:\n  usb:\n    vendor_id: 0x18d1\n"
        );
    }
}
