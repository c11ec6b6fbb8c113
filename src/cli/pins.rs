//! `mobix lock add|update`: pinning Debian packages and sources in mobix.lock.

use super::*;

#[derive(Subcommand, Debug)]
pub(super) enum LockCmd {
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
pub(super) enum LockKind {
    Deb,
    Source,
}

pub(super) fn cmd_lock_add(
    g: &Global,
    kind: LockKind,
    name: &str,
    package: Option<&str>,
    depends: &[String],
) -> Result<ExitCode> {
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
            let apt = crate::lock::apt::Apt::open(&cache_dir().join("apt"))?;
            apt.ensure_lists(&*term::TERMINAL)?;
            let (pin, apt_depends) = build::deb::candidate(&apt, &ask)?;
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
            let ctx = builder_ctx(&store)?;
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
pub(super) fn note_unlisted(name: &str, package: &str, apt_depends: &[String], listed: &[&str]) {
    let unlisted: Vec<&str> = apt_depends.iter().map(String::as_str).filter(|d| !listed.contains(d)).collect();
    if !unlisted.is_empty() {
        progress(&format!(
            "note: debs.{name}: apt says {package} depends on {}, which its `depends` does not list (fine if only its \
             maintainer scripts need them: mobix runs none; otherwise pin them and list them)",
            unlisted.join(", ")
        ));
    }
}

pub(super) fn cmd_lock_update(g: &Global, names: &[String], dry_run: bool) -> Result<ExitCode> {
    let repo = find_repo(g)?;
    let mut lock = Lock::load(&repo)?;
    for n in names {
        if !lock.debs.contains_key(n) && !lock.sources.contains_key(n) && !lock.apt.packages.contains_key(n) {
            let known: Vec<&str> = lock.debs.keys().chain(lock.sources.keys()).map(|s| s.as_str()).collect();
            return Err(Fail::new(format!("{} has no entry {n:?}", lock.file.display()))
                .hint(format!(
                    "hand-pinned entries: {}; and the {} packages apt resolved (apt.packages)",
                    known.join(", "),
                    lock.apt.packages.len()
                ))
                .into());
        }
    }
    let wanted = |n: &str| names.is_empty() || names.iter().any(|w| w == n);
    let mut changes: usize = 0;
    let apt_names: Vec<&str> =
        names.iter().map(String::as_str).filter(|n| lock.apt.packages.contains_key(*n)).collect();
    let apt = crate::lock::apt::Apt::open(&cache_dir().join("apt"))?;
    let needs_apt = !lock.apt.is_empty() && (names.is_empty() || !apt_names.is_empty());
    if needs_apt || lock.debs.keys().any(|n| wanted(n)) {
        // What the archive has now.
        apt.update(&*term::TERMINAL)?;
    }
    if needs_apt {
        // Re-resolve: everything (no names), or the named packages and what they depend
        // on, the rest held at their pins.
        let requests: Vec<crate::lock::apt::Request> =
            lock.apt.requested.iter().filter_map(|r| crate::lock::apt::Request::parse(r)).collect();
        let held: std::collections::BTreeSet<String> = if names.is_empty() {
            Default::default()
        } else {
            let free = crate::lock::apt::closure(&lock.apt, &apt_names);
            lock.apt.packages.keys().filter(|n| !free.contains(*n)).cloned().collect()
        };
        let r = crate::lock::apt::resolve(&apt, &lock.apt, &requests, &held)?;
        changes += report_resolution(&r);
        lock.apt = r.lock;
    }
    if !names.is_empty() && apt_names.len() == names.len() {
        return finish_update(&lock, changes, dry_run);
    }
    // Each entry's Debian package, to tell what a pin's `depends` already covers.
    let package_of: std::collections::BTreeMap<String, String> =
        lock.debs.iter().map(|(n, p)| (n.clone(), p.package.clone())).collect();
    for (name, pin) in lock.debs.iter_mut().filter(|(n, _)| wanted(n)) {
        let (new, apt_depends) =
            anyhow::Context::with_context(build::deb::candidate(&apt, pin), || format!("updating debs.{name}"))?;
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
        let ctx = builder_ctx(&store)?;
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
    finish_update(&lock, changes, dry_run)
}

fn finish_update(lock: &Lock, changes: usize, dry_run: bool) -> Result<ExitCode> {
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

/// Prints what a resolution changed (stdout: one line per package); returns how many.
fn report_resolution(r: &crate::lock::apt::Resolved) -> usize {
    for (n, v) in &r.added {
        println!("apt.{n}: added {v}");
    }
    for (n, old, new) in &r.changed {
        println!("apt.{n}: {old} -> {new}");
    }
    for n in &r.removed {
        println!("apt.{n}: removed (nothing needs it any more)");
    }
    r.added.len() + r.changed.len() + r.removed.len()
}
