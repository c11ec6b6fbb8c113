//! Debian packages by name, resolved by apt itself in a private root.
//!
//! mobix never solves dependencies by hand: it runs apt with its own configuration
//! (`APT_CONFIG`): arm64 only, bookworm + bookworm-updates + bookworm-security, Release
//! files checked against debian-archive-keyring, Recommends off, its own lists, cache and
//! dpkg status under `~/.cache/mobix/apt`. It needs no root and never reads or writes the
//! host's apt or dpkg state.
//!
//! **The base.** Debian packages assume the Essential set and never declare it. mobix's
//! base is not Essential: it is busybox (the shell and core tools, in every system) and
//! mobix's own init, laid out merged-/usr. apt resolves against a dpkg status that holds
//! exactly one package, `usr-is-merged` (the package that asserts a merged-/usr system),
//! and nothing else, every time; so every library a package declares is pinned and
//! installed, and an Essential package is there only when something declares it or a
//! config names it (`util-linux`, `login`, …).
//!
//! The solution is what `apt-get install --simulate` prints for the requested names;
//! `apt-cache show` gives each package's file, size and the sha256 of the signed index,
//! and its `Depends`/`Pre-Depends` give the edges between the pinned packages (for an
//! alternative `a | b`, the one in the solution: the one apt chose).

use super::{AptLock, AptPin};
use crate::report::Reporter;
use crate::util::{self, Fail};
use anyhow::{Context, Result};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The suites mobix resolves from, as `sources.list` lines.
const SOURCES: &str = "\
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian bookworm main
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian bookworm-updates main
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian-security bookworm-security main
";

/// The base every resolution starts from: the dpkg status of the private root.
pub const BASE_STATUS: &str = "\
Package: usr-is-merged
Status: install ok installed
Version: 37~deb12u1
Architecture: all
Multi-Arch: foreign

";

/// A package a system config asks for: a name, and optionally the exact version.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Request {
    pub name: String,
    pub version: Option<String>,
}

impl Request {
    /// The package a `packages` entry names: what comes before `=VERSION`.
    pub fn name_of(entry: &str) -> &str {
        entry.split_once('=').map_or(entry, |(n, _)| n)
    }

    /// `htop` or `vim=2:9.0.1378-2`; None when it is not a Debian package name (letters,
    /// digits, `+ - .`, starting with a letter or digit) with an optional version.
    pub fn parse(s: &str) -> Option<Request> {
        let name = Self::name_of(s);
        let version = s.split_once('=').map(|(_, v)| v);
        let name_ok = name.len() >= 2
            && name.bytes().next().is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
            && name.bytes().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || b"+-.".contains(&c));
        let version_ok = version
            .is_none_or(|v| !v.is_empty() && v.bytes().all(|c| c.is_ascii_alphanumeric() || b".+-:~".contains(&c)));
        (name_ok && version_ok).then(|| Request { name: name.into(), version: version.map(Into::into) })
    }

    /// Whether `apt` pins a package that answers this request.
    pub fn satisfied_by(&self, apt: &AptLock) -> bool {
        apt.packages.get(&self.name).is_some_and(|p| self.version.as_ref().is_none_or(|v| *v == p.version))
    }
}

impl std::fmt::Display for Request {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        match &self.version {
            Some(v) => write!(f, "{}={v}", self.name),
            None => f.write_str(&self.name),
        }
    }
}

/// The private apt root under `dir`, locked against other mobix processes while this
/// value lives (apt itself is told not to lock: it would want root).
pub struct Apt {
    dir: PathBuf,
    _lock: util::FileLock,
}

impl Apt {
    /// The root in `dir`, its configuration and base written (idempotently). Waits while
    /// another mobix process uses it; one process opens it once at a time.
    pub fn open(dir: &Path) -> Result<Apt> {
        for d in ["etc/apt/apt.conf.d", "etc/apt/preferences.d", "etc/apt/sources.list.d", "etc/apt/trusted.gpg.d"] {
            std::fs::create_dir_all(dir.join(d)).with_context(|| format!("creating {}", dir.join(d).display()))?;
        }
        for d in ["var/lib/apt/lists/partial", "var/cache/apt/archives/partial", "var/lib/dpkg", "log"] {
            std::fs::create_dir_all(dir.join(d)).with_context(|| format!("creating {}", dir.join(d).display()))?;
        }
        let root = dir.canonicalize().with_context(|| format!("resolving {}", dir.display()))?;
        let lock = util::FileLock::take(&root.join("lock"), || {})?;
        let q = |p: &Path| p.display().to_string().replace('"', "");
        // As root, apt would hand downloads to the `_apt` user, who cannot write here.
        let sandbox = if unsafe { libc::geteuid() } == 0 { "APT::Sandbox::User \"root\";\n" } else { "" };
        let conf = format!(
            "Dir \"{root}/\";\nDir::State \"var/lib/apt/\";\nDir::State::status \"{status}\";\n\
             Dir::Cache \"var/cache/apt/\";\nDir::Etc \"etc/apt/\";\nDir::Log \"log/\";\n\
             APT::Architecture \"arm64\";\nAPT::Architectures {{ \"arm64\"; }};\n\
             APT::Install-Recommends \"false\";\nAPT::Install-Suggests \"false\";\n\
             Acquire::Languages \"none\";\nDebug::NoLocking \"true\";\n{sandbox}",
            root = q(&root),
            status = q(&root.join("var/lib/dpkg/status")),
        );
        let write_if_changed = |p: PathBuf, text: &str| -> Result<()> {
            if std::fs::read_to_string(&p).ok().as_deref() != Some(text) {
                util::write_atomic(&p, text.as_bytes())?;
            }
            Ok(())
        };
        write_if_changed(root.join("apt.conf"), &conf)?;
        write_if_changed(root.join("etc/apt/sources.list"), SOURCES)?;
        write_if_changed(root.join("var/lib/dpkg/status"), BASE_STATUS)?;
        Ok(Apt { dir: root, _lock: lock })
    }

    fn cmd(&self, program: &str) -> Command {
        let mut c = Command::new(program);
        c.env("APT_CONFIG", self.dir.join("apt.conf")).env("LC_ALL", "C").env("DEBIAN_FRONTEND", "noninteractive");
        c
    }

    /// Whether the root has package lists.
    pub fn has_lists(&self) -> bool {
        std::fs::read_dir(self.dir.join("var/lib/apt/lists"))
            .into_iter()
            .flatten()
            .flatten()
            .any(|e| e.file_name().to_string_lossy().ends_with("_Packages"))
    }

    /// `apt-get update`: fetches the suites' signed indexes.
    pub fn update(&self, progress: &dyn Reporter) -> Result<()> {
        progress.note("apt: fetching Debian's arm64 package lists (bookworm, -updates, -security)");
        util::run(self.cmd("apt-get").args(["update", "-q"])).map_err(|e| {
            e.context(Fail::new("fetching Debian's package lists failed").hint(
                "mobix reaches deb.debian.org with apt; check the network (a build with a complete mobix.lock and \
                 its packages in the download cache needs none)",
            ))
        })?;
        Ok(())
    }

    /// Lists, fetched if there are none yet.
    pub fn ensure_lists(&self, progress: &dyn Reporter) -> Result<()> {
        if self.has_lists() {
            Ok(())
        } else {
            self.update(progress)
        }
    }

    /// apt's solution for `requests` (`name` or `name=version`): every package it would
    /// install into the base, as (name, version).
    pub fn solve(&self, requests: &[String]) -> Result<Vec<(String, String)>> {
        let out = self
            .cmd("apt-get")
            .args(["install", "--simulate", "-q", "--no-install-recommends"])
            .args(requests)
            .output()
            .context("running apt-get (is apt installed?)")?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        if !out.status.success() {
            return Err(self.explain(&stdout, &stderr));
        }
        Ok(parse_simulate(&stdout))
    }

    /// apt's refusal as mobix's error: unknown names (with a did-you-mean), versions the
    /// archive does not have, or apt's own explanation of a conflict.
    fn explain(&self, stdout: &str, stderr: &str) -> anyhow::Error {
        let unknown: Vec<&str> =
            stderr.lines().filter_map(|l| l.strip_prefix("E: Unable to locate package ")).map(str::trim).collect();
        if !unknown.is_empty() {
            let names = self.names().unwrap_or_default();
            let hints: Vec<String> = unknown
                .iter()
                .filter_map(|u| {
                    let c = util::closest(u, names.iter().map(String::as_str), 1)?;
                    Some(if unknown.len() == 1 { format!("did you mean `{c}`?") } else { format!("`{c}` for `{u}`?") })
                })
                .collect();
            let hint = if hints.is_empty() {
                "check the name at packages.debian.org (suite bookworm, arm64)".to_string()
            } else {
                hints.join(" ")
            };
            let names: Vec<String> = unknown.iter().map(|u| u.to_string()).collect();
            return anyhow::Error::new(UnknownPackages { names }).context(
                Fail::new(format!(
                    "Debian's arm64 archive (bookworm, -updates, -security) has no package {}",
                    unknown.join(", ")
                ))
                .hint(hint),
            );
        }
        if let Some(fail) = vanished(stderr) {
            return fail.into();
        }
        let mut why: Vec<&str> = stdout
            .lines()
            .skip_while(|l| !l.contains("unmet dependencies") && !l.starts_with("The following packages have"))
            .collect();
        why.extend(stderr.lines().filter(|l| l.starts_with("E: ")));
        anyhow::anyhow!("{}", why.join("\n")).context(Fail::new("apt cannot install these packages together").hint(
            "apt's explanation is above: drop or replace one of the packages it names, or ask for another \
             version; when a new package needs a newer version of one mobix.lock already pins, `mobix lock update` \
             moves the pins",
        ))
    }

    /// Every package name the archive knows (for did-you-mean).
    pub fn names(&self) -> Result<Vec<String>> {
        let out = util::run(self.cmd("apt-cache").arg("pkgnames"))?;
        Ok(String::from_utf8_lossy(&out.stdout).lines().map(str::to_string).collect())
    }

    /// The index stanzas of `name=version` specs.
    pub fn show(&self, specs: &[String]) -> Result<Vec<Stanza>> {
        let mut all = Vec::new();
        for chunk in specs.chunks(200) {
            let out = util::run(self.cmd("apt-cache").arg("show").args(chunk))?;
            all.extend(parse_stanzas(&String::from_utf8_lossy(&out.stdout)));
        }
        Ok(all)
    }

    /// The index stanza of the version apt would install of `spec` (`name:arch`).
    pub fn show_candidate(&self, spec: &str) -> Result<String> {
        let out = util::run(self.cmd("apt-cache").args(["show", "--no-all-versions", spec]))?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// `apt-get download` of `specs` (`name:arch=version`) into `dir`. A version the
    /// archive no longer has is said as such, with the command that re-pins it.
    pub fn download(&self, specs: &[String], dir: &Path) -> Result<()> {
        util::run(self.cmd("apt-get").arg("download").arg("-q").args(specs).current_dir(dir)).map_err(|e| {
            match vanished(&format!("{e:#}")) {
                Some(fail) => e.context(fail),
                None => e,
            }
        })?;
        Ok(())
    }
}

/// apt's `E: Version '9.9-1' for 'htop' was not found` lines in `text`, as the failure that
/// says which pins outlived the archive and how to move them; None without such lines.
fn vanished(text: &str) -> Option<Fail> {
    let gone: Vec<(&str, &str)> = text
        .lines()
        .filter_map(|l| {
            let (version, rest) = l.split_once("E: Version '")?.1.split_once("' for '")?;
            Some((rest.split('\'').next()?, version))
        })
        .collect();
    if gone.is_empty() {
        return None;
    }
    let what: Vec<String> = gone.iter().map(|(n, v)| format!("{n} {v}")).collect();
    let names: Vec<&str> = gone.iter().map(|(n, _)| *n).collect();
    Some(
        Fail::new(format!("the archive no longer has {} (pinned in mobix.lock or asked for)", what.join(", ")))
            .hint(format!("`mobix lock update {}` pins what the archive has now", names.join(" "))),
    )
}

/// The packages `apt-get install --simulate` would install: its `Inst` lines, as
/// (name, version). Pure.
pub fn parse_simulate(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("Inst ") else { continue };
        let Some((name, rest)) = rest.split_once(' ') else { continue };
        // `Inst name [old version] (version release [arch])`
        let Some(open) = rest.find('(') else { continue };
        let Some(version) = rest[open + 1..].split_whitespace().next() else { continue };
        out.push((name.to_string(), version.to_string()));
    }
    out
}

/// One package's stanza of the index.
pub type Stanza = BTreeMap<String, String>;

/// RFC 822-style stanzas (`apt-cache show`), continuation lines folded in. Pure.
pub fn parse_stanzas(text: &str) -> Vec<Stanza> {
    let mut all = Vec::new();
    let mut cur = Stanza::new();
    let mut last: Option<String> = None;
    for line in text.lines() {
        if line.trim().is_empty() {
            if !cur.is_empty() {
                all.push(std::mem::take(&mut cur));
            }
            last = None;
        } else if line.starts_with([' ', '\t']) {
            if let Some(v) = last.as_ref().and_then(|k| cur.get_mut(k)) {
                v.push('\n');
                v.push_str(line.trim());
            }
        } else if let Some((k, v)) = line.split_once(':') {
            cur.insert(k.to_string(), v.trim().to_string());
            last = Some(k.to_string());
        }
    }
    if !cur.is_empty() {
        all.push(cur);
    }
    all
}

/// The packages of `solution` each package depends on: per `Depends`/`Pre-Depends`
/// clause, the first alternative the solution holds, by name or as a provider of a
/// virtual package. Clauses no package of the solution satisfies are the base's. Pure.
pub fn edges(stanzas: &[Stanza]) -> BTreeMap<String, Vec<String>> {
    let names: BTreeSet<&str> = stanzas.iter().filter_map(|s| s.get("Package").map(String::as_str)).collect();
    let mut providers: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for s in stanzas {
        let Some(p) = s.get("Package") else { continue };
        for v in s.get("Provides").map(String::as_str).unwrap_or("").split(',') {
            let v = bare_name(v);
            if !v.is_empty() {
                providers.entry(v).or_default().push(p);
            }
        }
    }
    let mut out = BTreeMap::new();
    for s in stanzas {
        let Some(p) = s.get("Package") else { continue };
        let mut deps = BTreeSet::new();
        for field in ["Pre-Depends", "Depends"] {
            for clause in s.get(field).map(String::as_str).unwrap_or("").split(',') {
                let chosen = clause.split('|').map(bare_name).find_map(|alt| {
                    if names.contains(alt) {
                        Some(alt)
                    } else {
                        providers.get(alt).and_then(|ps| ps.iter().min().copied())
                    }
                });
                if let Some(c) = chosen.filter(|c| c != p) {
                    deps.insert(c.to_string());
                }
            }
        }
        out.insert(p.clone(), deps.into_iter().collect());
    }
    out
}

/// `libc6 (>= 2.34)`, `python3:any` → `libc6`, `python3`.
fn bare_name(dep: &str) -> &str {
    let name = dep.trim().split([' ', '(']).next().unwrap_or("");
    name.split(':').next().unwrap_or("")
}

/// What came of completing the lock.
#[derive(Debug, Default)]
pub struct Resolved {
    pub lock: AptLock,
    /// Packages new to the lock, with their versions.
    pub added: Vec<(String, String)>,
    /// Packages whose pinned version changed: name, old, new.
    pub changed: Vec<(String, String, String)>,
    /// Packages the new solution no longer holds.
    pub removed: Vec<String>,
}

/// apt's word that it knows no package of these names (the cause under the error
/// [`resolve`] returns for them), so that a caller can say where the names came from.
#[derive(Debug, thiserror::Error)]
#[error("apt: unable to locate package {}", .names.join(", "))]
pub struct UnknownPackages {
    pub names: Vec<String>,
}

/// Resolves `requested` with apt, holding every package of `held` at its pinned version,
/// and pins the solution. Fails (changing nothing) on an unknown name, a version the
/// archive lacks, or a set apt cannot install.
pub fn resolve(apt: &Apt, old: &AptLock, requested: &[Request], held: &BTreeSet<String>) -> Result<Resolved> {
    // Held packages go in at their pinned versions, requests without a version included.
    let held_pin = |name: &str| old.packages.get(name).filter(|_| held.contains(name));
    let asked: BTreeSet<&str> = requested.iter().map(|r| r.name.as_str()).collect();
    let mut specs: Vec<String> = requested
        .iter()
        .map(|r| match (&r.version, held_pin(&r.name)) {
            (None, Some(pin)) => format!("{}={}", r.name, pin.version),
            _ => r.to_string(),
        })
        .collect();
    specs.extend(
        (old.packages.iter())
            .filter(|(n, _)| held.contains(*n) && !asked.contains(n.as_str()))
            .map(|(n, pin)| format!("{n}={}", pin.version)),
    );
    let solution = apt.solve(&specs)?;
    let show: Vec<String> = solution.iter().map(|(n, v)| format!("{n}={v}")).collect();
    let chosen: BTreeSet<(&str, &str)> = solution.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
    let mut by_name: BTreeMap<String, Stanza> = BTreeMap::new();
    for s in apt.show(&show)? {
        let (Some(n), Some(v)) = (s.get("Package"), s.get("Version")) else { continue };
        if chosen.contains(&(n.as_str(), v.as_str())) && !by_name.contains_key(n) {
            by_name.insert(n.clone(), s);
        }
    }
    let edges = edges(&by_name.values().cloned().collect::<Vec<_>>());
    let mut packages = BTreeMap::new();
    for (name, version) in &solution {
        let s = by_name.get(name).with_context(|| format!("apt-cache show {name}={version} gave no stanza"))?;
        let field = |k: &str| s.get(k).cloned().with_context(|| format!("{name} {version}: the index has no {k}"));
        packages.insert(
            name.clone(),
            AptPin {
                version: version.clone(),
                arch: field("Architecture")?,
                file: field("Filename")?,
                size: field("Size")?.parse().with_context(|| format!("{name}: Size is not a number"))?,
                sha256: field("SHA256")?,
                depends: edges.get(name).cloned().unwrap_or_default(),
            },
        );
    }
    let mut r = Resolved::default();
    for (n, p) in &packages {
        match old.packages.get(n) {
            None => r.added.push((n.clone(), p.version.clone())),
            Some(o) if o.version != p.version => r.changed.push((n.clone(), o.version.clone(), p.version.clone())),
            Some(_) => {}
        }
    }
    r.removed = old.packages.keys().filter(|n| !packages.contains_key(*n)).cloned().collect();
    let mut req: Vec<String> = requested.iter().map(Request::to_string).collect();
    req.sort();
    req.dedup();
    r.lock = AptLock { requested: req, packages };
    Ok(r)
}

/// The requests of `lock` with `wanted` merged in (a wanted name replaces a request of
/// the same name), sorted.
pub fn merge_requests(lock: &AptLock, wanted: &[Request]) -> Vec<Request> {
    let mut all: BTreeMap<String, Request> = BTreeMap::new();
    for r in lock.requested.iter().filter_map(|s| Request::parse(s)) {
        all.insert(r.name.clone(), r);
    }
    for r in wanted {
        all.insert(r.name.clone(), r.clone());
    }
    all.into_values().collect()
}

/// `names` and every package of `lock` they depend on, transitively.
pub fn closure(lock: &AptLock, names: &[&str]) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    let mut todo: Vec<&str> = names.to_vec();
    while let Some(n) = todo.pop() {
        if seen.insert(n.to_string()) {
            if let Some(p) = lock.packages.get(n) {
                todo.extend(p.depends.iter().map(String::as_str));
            }
        }
    }
    seen
}

/// What a package's maintainer scripts (and conffiles) would do that mobix does not do
/// for it: read from its control area (`dpkg-deb -e`). Empty for a quiet package.
/// `scratch` is a directory it may create and removes again.
pub fn script_effects(deb: &Path, scratch: &Path) -> Result<Vec<&'static str>> {
    let _ = std::fs::remove_dir_all(scratch);
    let dir = scratch.join("control");
    std::fs::create_dir_all(scratch).with_context(|| format!("creating {}", scratch.display()))?;
    let res = script_effects_in(deb, &dir);
    let _ = std::fs::remove_dir_all(scratch);
    res
}

fn script_effects_in(deb: &Path, dir: &Path) -> Result<Vec<&'static str>> {
    util::run(Command::new("dpkg-deb").arg("-e").arg(deb).arg(dir))?;
    let mut text = String::new();
    for f in ["preinst", "postinst", "prerm", "postrm", "config"] {
        text.push_str(&std::fs::read_to_string(dir.join(f)).unwrap_or_default());
    }
    let mut out = Vec::new();
    let has = |words: &[&str]| words.iter().any(|w| text.contains(w));
    if has(&["adduser", "useradd", "addgroup", "groupadd", "systemd-sysusers"]) {
        out.push("creates users or groups");
    }
    if has(&["ssh-keygen", "openssl req", "openssl genrsa", "make-ssl-cert"]) {
        out.push("generates keys");
    }
    if has(&["update-alternatives"]) {
        out.push("registers alternatives");
    }
    let conffiles = std::fs::read_to_string(dir.join("conffiles")).unwrap_or_default();
    if !conffiles.trim().is_empty() || has(&["ucf ", "ucfr "]) {
        out.push("installs config files in /etc");
    }
    if has(&["deb-systemd-helper", "systemctl enable", "update-rc.d"]) {
        out.push("enables services");
    }
    if has(&["db_get", "db_input"]) {
        out.push("asks debconf questions");
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_parse_names_and_versions() {
        assert_eq!(Request::parse("htop"), Some(Request { name: "htop".into(), version: None }));
        let v = Request::parse("vim=2:9.0.1378-2").unwrap();
        assert_eq!((v.name.as_str(), v.version.as_deref()), ("vim", Some("2:9.0.1378-2")));
        assert_eq!(v.to_string(), "vim=2:9.0.1378-2");
        for bad in ["", "x", "Htop", "../etc", "htop=", "a b", "-x"] {
            assert_eq!(Request::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn simulate_output_gives_names_and_versions() {
        let text = "Reading package lists...\nInst libc6 (2.36-9+deb12u14 Debian:12.15/oldstable [arm64]) []\n\
                    Inst usr-is-merged [37~deb12u1] (38 Debian:13/stable [all])\nConf libc6 (2.36-9 Debian [arm64])\n";
        assert_eq!(
            parse_simulate(text),
            [("libc6".to_string(), "2.36-9+deb12u14".to_string()), ("usr-is-merged".into(), "38".into())]
        );
    }

    #[test]
    fn edges_follow_the_chosen_alternative_and_providers() {
        let text = "Package: a\nVersion: 1\nDepends: libc6 (>= 2.34), b | c, mta, python3:any, base-thing\n\n\
                    Package: c\nVersion: 1\nPre-Depends: libc6\n\nPackage: libc6\nVersion: 2\nDepends: libgcc-s1\n\n\
                    Package: libgcc-s1\nVersion: 3\nDepends: libc6,\n libgcc-s1\n\n\
                    Package: exim\nVersion: 4\nProvides: mta (= 1), other\n\nPackage: python3\nVersion: 3\n";
        let e = edges(&parse_stanzas(text));
        assert_eq!(e["a"], ["c", "exim", "libc6", "python3"]);
        assert_eq!(e["c"], ["libc6"]);
        // A cycle stays a cycle (libc6 <-> libgcc-s1); no package depends on itself.
        assert_eq!(
            (e["libc6"].as_slice(), e["libgcc-s1"].as_slice()),
            (&["libgcc-s1".to_string()][..], &["libc6".to_string()][..])
        );
    }

    #[test]
    fn versions_the_archive_dropped_are_named_with_their_fix() {
        let text = "`apt-get download` failed; its stderr ends with:\nE: Version '9.9-1' for 'htop' was not found\n\
                    E: Version '1:2' for 'vim' was not found";
        let f = vanished(text).unwrap();
        assert_eq!(f.msg, "the archive no longer has htop 9.9-1, vim 1:2 (pinned in mobix.lock or asked for)");
        assert_eq!(f.hint.as_deref(), Some("`mobix lock update htop vim` pins what the archive has now"));
        assert!(vanished("E: Unable to locate package htpo").is_none());
    }

    #[test]
    fn a_typo_finds_its_package() {
        let names = ["htop", "btop", "openssh-server"];
        assert_eq!(util::closest("htpo", names, 1), Some("htop"));
        assert_eq!(util::closest("opnssh-server", names, 1), Some("openssh-server"));
        assert_eq!(util::closest("zzzzqqq", names, 1), None);
    }
}
