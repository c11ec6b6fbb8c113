//! Kernels from source: assembling the configuration and cross-compiling, from Debian's
//! `linux-source-X.Y` package (a tarball of the kernel tree).
//!
//! `kernel-config` writes `config` and `report.json` (every option a fragment or mobix
//! asked for that `olddefconfig` dropped, with the unmet dependency); it does not fail, so
//! `mobix kernel check` can show the report. `kernel-build` refuses a configuration whose
//! report has dropped options, then builds `Image` (and dtbs and modules when configured)
//! with `aarch64-linux-gnu-gcc`, laid out like Debian's kernel packages.

use super::Ctx;
use crate::plan::kconfig::{self, Config, Dropped};
use crate::plan::Planned;
use crate::util::{self, Fail};
use anyhow::{Context, Result};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

pub const CROSS_COMPILE: &str = "aarch64-linux-gnu-";

/// What `kernel-config` found.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Report {
    pub base: String,
    pub asked: usize,
    pub dropped: Vec<DroppedJson>,
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct DroppedJson {
    pub option: String,
    pub wanted: String,
    pub got: String,
    pub from: String,
    pub because: Vec<String>,
}

impl Report {
    /// One line per dropped option, for people.
    pub fn describe(&self) -> String {
        self.dropped
            .iter()
            .map(|d| {
                let why =
                    if d.because.is_empty() { "no unmet dependency found".to_string() } else { d.because.join("; ") };
                format!("CONFIG_{}={} (from {}) became {}: {why}", d.option, d.wanted, d.from, d.got)
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// Unpacks the kernel tree of a linux-source package into `dest`; returns the tree's path.
fn unpack_source(pkg: &Path, dest: &Path) -> Result<PathBuf> {
    let src = pkg.join("usr/src");
    let tarball = fs::read_dir(&src)
        .with_context(|| format!("reading {}", src.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| {
            p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("linux-source") && n.contains(".tar"))
        })
        .ok_or_else(|| Fail::new(format!("no linux-source tarball in {}", src.display())))?;
    fs::create_dir_all(dest)?;
    util::run(Command::new("tar").arg("-xf").arg(&tarball).arg("-C").arg(dest))?;
    let tree = fs::read_dir(dest)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.join("Makefile").is_file())
        .ok_or_else(|| Fail::new(format!("{} holds no kernel tree", tarball.display())))?;
    Ok(tree)
}

fn make(tree: &Path, build: &Path, arch: &str, args: &[&str]) -> Command {
    let mut c = Command::new("make");
    c.arg("-C").arg(tree).arg(format!("O={}", build.display())).arg(format!("ARCH={arch}"));
    c.arg(format!("CROSS_COMPILE={CROSS_COMPILE}")).args(args);
    // Fixed build identity, so the same inputs give the same kernel.
    c.env("KBUILD_BUILD_TIMESTAMP", "Thu Jan  1 00:00:01 UTC 1970")
        .env("KBUILD_BUILD_USER", "mobix")
        .env("KBUILD_BUILD_HOST", "mobix")
        .env("KBUILD_BUILD_VERSION", "1")
        .env("SOURCE_DATE_EPOCH", "1")
        .env("LC_ALL", "C");
    c
}

/// Runs a kernel `make`, telling `progress` how many objects it has compiled so far (from
/// Kbuild's short log lines) every so often; fails as [`util::run`] does, with the tail
/// of its output.
fn compile_counting(cmd: &mut Command, estimate: usize, progress: &dyn crate::report::Reporter) -> Result<()> {
    use std::io::BufRead;
    let shown = util::show_command(cmd);
    let mut child = cmd
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .with_context(|| format!("starting `{shown}`"))?;
    let stderr = child.stderr.take().expect("piped");
    let err_tail = std::thread::spawn(move || {
        let mut tail = std::collections::VecDeque::new();
        for line in std::io::BufReader::new(stderr).lines().map_while(Result::ok) {
            if tail.len() == 15 {
                tail.pop_front();
            }
            tail.push_back(line);
        }
        tail.into_iter().collect::<Vec<_>>().join("\n")
    });
    let t0 = std::time::Instant::now();
    let (mut objects, mut last_said) = (0usize, std::time::Instant::now());
    for line in std::io::BufReader::new(child.stdout.take().expect("piped")).lines().map_while(Result::ok) {
        // `  CC      fs/open.o`, `  CC [M]  fs/ext4/inode.o`, `  AS      arch/…/head.o`
        if matches!(line.split_whitespace().next(), Some("CC" | "AS")) {
            objects += 1;
        }
        if last_said.elapsed().as_secs() >= 30 {
            last_said = std::time::Instant::now();
            let secs = t0.elapsed().as_secs_f64();
            let rate = objects as f64 / secs.max(1.0);
            let left = match estimate.checked_sub(objects) {
                Some(n) if objects > 0 => format!(", about {:.0} min left", n as f64 / rate / 60.0),
                _ => String::new(),
            };
            progress.note(&format!(
                "kernel: {objects} of about {estimate} objects compiled ({:.0}%) in {:.0} min{left}",
                100.0 * objects as f64 / estimate.max(1) as f64,
                secs / 60.0,
            ));
        }
    }
    let status = child.wait()?;
    let tail = err_tail.join().unwrap_or_default();
    if !status.success() {
        anyhow::bail!("`{shown}` failed ({status}); its stderr ends with:\n{tail}");
    }
    progress.note(&format!(
        "kernel: {objects} objects compiled (about {estimate} estimated) in {:.1} min",
        t0.elapsed().as_secs_f64() / 60.0
    ));
    Ok(())
}

/// Base target, fragments in order, then `required`; `olddefconfig`; what was dropped.
pub fn assemble(
    tree: &Path,
    build: &Path,
    arch: &str,
    base: &str,
    fragments: &[(String, String)],
    required: &str,
) -> Result<(String, Report)> {
    fs::create_dir_all(build)?;
    util::run(&mut make(tree, build, arch, &[base]))?;
    let cfg_path = build.join(".config");
    let mut config = kconfig::parse(&fs::read_to_string(&cfg_path)?);
    let mut asked: Vec<(String, Config)> = fragments.iter().map(|(n, t)| (n.clone(), kconfig::parse(t))).collect();
    asked.push(("mobix".into(), kconfig::parse(required)));
    for (_, frag) in &asked {
        for (k, v) in frag {
            config.insert(k.clone(), v.clone());
        }
    }
    fs::write(&cfg_path, kconfig::render(&config))?;
    util::run(&mut make(tree, build, arch, &["olddefconfig"]))?;
    let final_text = fs::read_to_string(&cfg_path)?;
    let final_ = kconfig::parse(&final_text);
    let mut dropped: Vec<Dropped> = kconfig::dropped(&asked, &final_);
    if !dropped.is_empty() {
        let names: Vec<String> = dropped.iter().map(|d| d.option.clone()).collect();
        let deps = kconfig::dependencies(tree, arch, &names)?;
        for d in &mut dropped {
            if !deps.get(&d.option).is_some_and(|s| s.defined) {
                d.because.push("no Kconfig of this kernel defines it (a misspelt or renamed option?)".into());
                continue;
            }
            for cond in deps.get(&d.option).map(|s| s.conditions.as_slice()).unwrap_or_default() {
                let flat = cond.split_whitespace().collect::<Vec<_>>().join(" ");
                if kconfig::eval(&flat, &final_) == 0 {
                    let syms = kconfig::unmet_symbols(&flat, &final_);
                    d.because.push(if syms.is_empty() {
                        format!("depends on {flat}")
                    } else {
                        format!("depends on {flat} ({})", syms.join(", "))
                    });
                }
            }
        }
    }
    let report = Report {
        base: base.to_string(),
        asked: asked.iter().map(|(_, f)| f.len()).sum(),
        dropped: dropped
            .into_iter()
            .map(|d| DroppedJson { option: d.option, wanted: d.wanted, got: d.got, from: d.from, because: d.because })
            .collect(),
    };
    Ok((final_text, report))
}

pub fn config(
    ctx: &Ctx,
    planned: &Planned,
    arch: &str,
    base: &str,
    fragments: &[(String, String)],
    required: &str,
    out: &Path,
) -> Result<()> {
    let pkg = ctx.input(planned, "source")?;
    let work = out.parent().context("output has a parent")?.join("work");
    ctx.progress.note("unpacking the kernel source");
    let tree = unpack_source(&pkg, &work)?;
    ctx.progress.note(&format!(
        "assembling the kernel configuration ({base} + {} fragments + mobix's options)",
        fragments.len()
    ));
    let (text, report) = assemble(&tree, &work.join("build"), arch, base, fragments, required)?;
    fs::create_dir(out)?;
    fs::write(out.join("config"), text)?;
    fs::write(out.join("report.json"), serde_json::to_string_pretty(&report)? + "\n")?;
    util::remove_tree(&work)?;
    Ok(())
}

pub fn read_report(config_dir: &Path) -> Result<Report> {
    let p = config_dir.join("report.json");
    serde_json::from_str(&fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))?)
        .with_context(|| format!("parsing {}", p.display()))
}

pub fn build(ctx: &Ctx, planned: &Planned, arch: &str, out: &Path) -> Result<()> {
    let cfg_dir = ctx.input(planned, "config")?;
    let report = read_report(&cfg_dir)?;
    if !report.dropped.is_empty() {
        return Err(Fail::new(format!(
            "the kernel configuration dropped {} option(s) asked for:\n{}",
            report.dropped.len(),
            report.describe()
        ))
        .hint(
            "fix the fragment (enable the dependency too), then `mobix kernel check` shows the result without building",
        )
        .into());
    }
    let pkg = ctx.input(planned, "source")?;
    let work = out.parent().context("output has a parent")?.join("work");
    ctx.progress.note("unpacking the kernel source");
    let tree = unpack_source(&pkg, &work)?;
    let build = work.join("build");
    fs::create_dir_all(&build)?;
    fs::copy(cfg_dir.join("config"), build.join(".config"))?;
    util::run(&mut make(&tree, &build, arch, &["olddefconfig"]))?;
    let config = kconfig::parse(&fs::read_to_string(build.join(".config"))?);
    let on = |k: &str| config.get(k).is_some_and(|v| v == "y");
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let jobs = cores.to_string();
    let mut targets = vec!["Image"];
    if on("MODULES") {
        targets.push("modules");
    }
    let has_dtbs = fs::read_dir(tree.join("arch").join(arch).join("boot/dts")).is_ok();
    if has_dtbs {
        targets.push("dtbs");
    }
    let enabled = config.values().filter(|v| *v == "y" || *v == "m").count();
    let estimate = super::kbuild::estimate_objects(&tree, arch, &config);
    // Cross-compiling a kernel object takes a core about 0.7 to 2 seconds.
    let minutes = |secs_per_object: f64| estimate as f64 * secs_per_object / cores as f64 / 60.0;
    let (lo, hi) = (minutes(0.7), minutes(2.0));
    ctx.progress.note(&format!(
        "compiling the kernel ({}; {enabled} options enabled): about {estimate} objects, which takes roughly \
         {lo:.0} to {hi:.0} minutes with -j{jobs}",
        targets.join(", ")
    ));
    let mut args = vec!["-j", jobs.as_str()];
    args.extend(&targets);
    compile_counting(&mut make(&tree, &build, arch, &args), estimate, ctx.progress)?;
    let release = String::from_utf8(util::run(&mut make(&tree, &build, arch, &["-s", "kernelrelease"]))?.stdout)?
        .trim()
        .to_string();
    anyhow::ensure!(!release.is_empty() && !release.contains('/'), "odd kernel release {release:?}");
    fs::create_dir_all(out.join("boot"))?;
    fs::copy(build.join("arch").join(arch).join("boot/Image"), out.join("boot").join(format!("vmlinuz-{release}")))?;
    fs::copy(build.join(".config"), out.join("boot").join(format!("config-{release}")))?;
    let moddir = out.join("lib/modules").join(&release);
    if on("MODULES") {
        let mut args =
            vec![format!("INSTALL_MOD_PATH={}", out.display()), "INSTALL_MOD_STRIP=1".into(), "modules_install".into()];
        args.push("DEPMOD=true".into());
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        util::run(&mut make(&tree, &build, arch, &args))?;
        // modules_install links back into the build tree: host paths, not for the store.
        for l in ["build", "source"] {
            let _ = fs::remove_file(moddir.join(l));
        }
    } else {
        fs::create_dir_all(&moddir)?;
        for f in ["modules.builtin", "modules.builtin.modinfo"] {
            if build.join(f).is_file() {
                fs::copy(build.join(f), moddir.join(f))?;
            }
        }
    }
    if has_dtbs {
        let dtbs = out.join("usr/lib").join(format!("linux-image-{release}"));
        let arg = format!("INSTALL_DTBS_PATH={}", dtbs.display());
        util::run(&mut make(&tree, &build, arch, &[&arg, "dtbs_install"]))?;
    }
    util::remove_tree(&work)?;
    Ok(())
}

/// A kernel the user supplies (`kernel.prebuilt`), laid out as Debian's kernel packages
/// are, so the `kernel` and `kernel-modules` steps take it as they take a package: the
/// `Image` (a gzip-compressed one unpacked), its embedded configuration when it carries
/// one (empty otherwise), an empty module tree, the device trees. The release is the one
/// the Image's banner announces (`0.0.0-prebuilt` when it has none: depmod wants a version). Both inputs are hashed
/// again: a file changed since planning fails the step.
pub fn prebuilt(image: &Path, image_sha256: &str, dtbs: Option<(&Path, &str)>, out: &Path) -> Result<()> {
    let raw = fs::read(image).map_err(|e| util::user_error(e, format!("reading {}", image.display())))?;
    let got = crate::hash::Sha256Digest::of(&raw).hex();
    if got != image_sha256 {
        anyhow::bail!("{} changed while building (sha256 {got}, planned {image_sha256})", image.display());
    }
    let what = || format!("the prebuilt kernel {}", image.display());
    let (head, appended) = crate::format::arm64::split_appended_dtbs(&raw).map_err(|e| util::user_error(e, what()))?;
    if !appended.is_empty() {
        return Err(Fail::new(format!(
            "{} has {} device tree(s) appended to it (an Image.gz-dtb)",
            image.display(),
            appended.len()
        ))
        .hint("give the plain Image (or Image.gz) as `image` and the device trees as `dtbs`")
        .into());
    }
    let data = crate::format::compress::decompress(&head, 512 << 20).map_err(|e| util::user_error(e, what()))?;
    super::check_kernel(&data).with_context(what)?;
    let release = crate::format::arm64::release(&data).unwrap_or_else(|| "0.0.0-prebuilt".into());
    fs::create_dir_all(out.join("boot"))?;
    fs::write(out.join("boot").join(format!("vmlinuz-{release}")), &data)?;
    let config = crate::format::arm64::embedded_config(&data).unwrap_or_default();
    fs::write(out.join("boot").join(format!("config-{release}")), config)?;
    fs::create_dir_all(out.join("lib/modules").join(&release))?;
    if let Some((dir, sha)) = dtbs {
        let got = crate::hash::sha256_tree(dir, &|_| false)
            .map_err(|e| util::user_error(e, format!("hashing {}", dir.display())))?;
        if got.hex() != sha {
            anyhow::bail!("{} changed while building (its files hash to {got}, planned {sha})", dir.display());
        }
        fs::create_dir_all(out.join("usr/lib"))?;
        util::copy_tree(dir, &out.join("usr/lib").join(format!("linux-image-{release}")))?;
    }
    Ok(())
}
