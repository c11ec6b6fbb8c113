//! The specs beside the device profiles, each loaded with file, line and key errors:
//! kernels (`kernels/`), packages (`packages/`), overlays and U-Boot (`bootloaders/`).

use super::{deserialize_layer, Codename, Layer};
use crate::util::Fail;
use anyhow::Result;
use std::path::{Path, PathBuf};

/// A kernel built from source: `kernels/<name>/kernel.yaml`.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KernelSpec {
    /// A `debs` entry of `mobix.lock` holding the source tarball (Debian's linux-source-X.Y).
    pub source: String,
    /// The base configuration: a make target of the tree (`tinyconfig`, `defconfig`, ...).
    pub base: String,
    /// Config fragments in the spec's directory, applied in order after the base.
    #[serde(default)]
    pub fragments: Vec<String>,
}

/// A kernel spec with its fragments read.
#[derive(Debug, Clone)]
pub struct LoadedKernel {
    pub name: String,
    pub spec: KernelSpec,
    /// (file name, text) of each fragment, in order.
    pub fragments: Vec<(String, String)>,
}

/// Loads `kernels/<name>/kernel.yaml` and its fragments.
pub fn load_kernel(repo: &Path, name: &str) -> Result<LoadedKernel> {
    let dir = repo.join("kernels").join(name);
    let file = dir.join("kernel.yaml");
    if !file.is_file() {
        return Err(Fail::new(format!("no kernel spec {} (looked for {})", name, file.display())).into());
    }
    let layer = Layer::read(&file, "kernel spec")?;
    let spec: KernelSpec = deserialize_layer(&layer, layer.value.clone())?;
    let targets = ["tinyconfig", "allnoconfig", "defconfig", "allmodconfig", "allyesconfig"];
    if !targets.contains(&spec.base.as_str()) && !spec.base.ends_with("_defconfig") {
        return Err(layer.error(
            "base",
            format!("{:?} is not a config target (tinyconfig, allnoconfig, defconfig or *_defconfig)", spec.base),
        ));
    }
    let fragments = read_fragments(&layer, &dir, &spec.fragments)?;
    Ok(LoadedKernel { name: name.to_string(), spec, fragments })
}

/// Reads a spec's config fragments (file names in its directory), in order.
fn read_fragments(layer: &Layer, dir: &Path, names: &[String]) -> Result<Vec<(String, String)>> {
    let mut fragments = Vec::new();
    for (i, f) in names.iter().enumerate() {
        if f.contains('/') || f.starts_with('.') {
            return Err(
                layer.error(&format!("fragments[{i}]"), format!("{f:?} must be a file name in {}", dir.display()))
            );
        }
        let text = std::fs::read_to_string(dir.join(f)).map_err(|e| {
            anyhow::Error::new(e)
                .context(layer.error(&format!("fragments[{i}]"), format!("cannot read {}", dir.join(f).display())))
        })?;
        fragments.push((f.clone(), text));
    }
    Ok(fragments)
}

/// A C program built from a Debian source package with `aarch64-linux-gnu-gcc`:
/// `packages/<name>/package.yaml`.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PackageSpec {
    /// A `sources` entry of `mobix.lock`: the Debian source package (Debian's patches are
    /// applied).
    pub source: String,
    /// Arguments to `make` (targets, `VAR=value`), run in the unpacked tree with `CC`,
    /// `CFLAGS` and `LDFLAGS` set for a static aarch64 build.
    #[serde(default)]
    pub make: Vec<String>,
    /// Extra `CFLAGS` (after mobix's `-O2` and path remapping).
    #[serde(default)]
    pub cflags: Vec<String>,
    /// What the package holds: its path in the output (`bin/mmc`) to the file the build made
    /// (relative to the source tree). ELF files are stripped.
    pub install: std::collections::BTreeMap<String, String>,
}

/// A package spec, read.
#[derive(Debug, Clone)]
pub struct LoadedPackage {
    pub name: String,
    pub spec: PackageSpec,
}

/// Whether a relative path stays where it is put (no `..`, not absolute, not empty).
fn plain_rel(p: &str) -> bool {
    !p.is_empty() && !p.starts_with('/') && p.split('/').all(|c| !c.is_empty() && c != "." && c != "..")
}

/// What an overlay adds besides its files: `overlays/<name>/overlay.yaml`.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OverlaySpec {
    /// Packages the overlay needs, as in the system config's `packages`.
    #[serde(default)]
    pub packages: Vec<String>,
}

/// Where a package of the system was named: the layer (system config or overlay) and
/// its key, so that an error found later (apt knows no such package) points at it.
#[derive(Debug, Clone)]
pub struct PackageOrigin {
    pub name: String,
    pub layer: Layer,
    pub key: String,
}

/// Checks a `packages` list of `layer`: each a `packages/` spec, a `debs` entry of the
/// lock, or a Debian package name (`htop`, `vim=2:9.0.1378-2`) that apt resolves; no
/// package twice. Records where each was named.
pub(super) fn check_packages(layer: &Layer, packages: &[String], origins: &mut Vec<PackageOrigin>) -> Result<()> {
    let name_of = crate::lock::apt::Request::name_of;
    for (i, p) in packages.iter().enumerate() {
        let key = format!("packages[{i}]");
        if crate::lock::apt::Request::parse(p).is_none() && Codename::new(p).is_err() {
            return Err(layer.error_hinted(
                &key,
                format!("{p:?} is not a package name"),
                Some(
                    "a Debian package name (`htop`), optionally with a version (`vim=2:9.0.1378-2`), or a \
                      packages/ spec's name"
                        .into(),
                ),
            ));
        }
        if packages[..i].iter().any(|q| name_of(q) == name_of(p)) {
            return Err(layer.error(&key, format!("{} is listed twice", name_of(p))));
        }
        origins.push(PackageOrigin { name: p.clone(), layer: layer.clone(), key });
    }
    Ok(())
}

/// Where the spec of package `name` is: `packages/<name>/package.yaml` (a package without
/// one is a `debs` entry of the lock or a Debian package apt resolves).
pub fn package_spec(repo: &Path, name: &str) -> PathBuf {
    repo.join("packages").join(name).join("package.yaml")
}

/// Loads `packages/<name>/package.yaml`.
pub fn load_package(repo: &Path, name: &str) -> Result<LoadedPackage> {
    let file = package_spec(repo, name);
    if !file.is_file() {
        return Err(Fail::new(format!("no package spec {} (looked for {})", name, file.display())).into());
    }
    let layer = Layer::read(&file, "package spec")?;
    let spec: PackageSpec = deserialize_layer(&layer, layer.value.clone())?;
    if spec.install.is_empty() {
        return Err(layer.error("install", "a package must install at least one file"));
    }
    for (dest, built) in &spec.install {
        if !plain_rel(dest) || dest == "share/mobix" || dest.starts_with("share/mobix/") {
            return Err(layer.error(&format!("install.{dest}"), "must be a relative path inside the package"));
        }
        if !plain_rel(built) {
            return Err(
                layer.error(&format!("install.{dest}"), format!("{built:?} must be a path inside the source tree"))
            );
        }
    }
    for (i, a) in spec.make.iter().chain(&spec.cflags).enumerate() {
        if a.is_empty() || a.contains(char::is_whitespace) {
            let key =
                if i < spec.make.len() { format!("make[{i}]") } else { format!("cflags[{}]", i - spec.make.len()) };
            return Err(layer.error(&key, format!("{a:?} must be one argument without spaces")));
        }
    }
    Ok(LoadedPackage { name: name.to_string(), spec })
}

/// A U-Boot built from Debian's source package: `bootloaders/<name>/u-boot.yaml`.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UBootSpec {
    /// A `sources` entry of `mobix.lock` (Debian's `u-boot` source package).
    pub source: String,
    /// The board's defconfig (`qemu_arm64_defconfig`).
    pub defconfig: String,
    /// Config fragments in the spec's directory, applied in order after the defconfig.
    #[serde(default)]
    pub fragments: Vec<String>,
}

/// A U-Boot spec with its fragments read.
#[derive(Debug, Clone)]
pub struct LoadedUBoot {
    pub name: String,
    pub spec: UBootSpec,
    pub fragments: Vec<(String, String)>,
}

/// Loads `bootloaders/<name>/u-boot.yaml` and its fragments.
pub fn load_u_boot(repo: &Path, name: &str) -> Result<LoadedUBoot> {
    let dir = repo.join("bootloaders").join(name);
    let file = dir.join("u-boot.yaml");
    if !file.is_file() {
        return Err(Fail::new(format!("no U-Boot spec {} (looked for {})", name, file.display())).into());
    }
    let layer = Layer::read(&file, "U-Boot spec")?;
    let spec: UBootSpec = deserialize_layer(&layer, layer.value.clone())?;
    if !spec.defconfig.ends_with("_defconfig") || spec.defconfig.contains('/') {
        return Err(layer.error("defconfig", format!("{:?} is not a board defconfig (NAME_defconfig)", spec.defconfig)));
    }
    let fragments = read_fragments(&layer, &dir, &spec.fragments)?;
    Ok(LoadedUBoot { name: name.to_string(), spec, fragments })
}
