//! Lock completion, as Cargo completes Cargo.lock: the Debian package names a profile has
//! that mobix.lock does not pin yet are resolved by apt in mobix's own root, and the
//! accounts of a systemd system get their ids. `mobix build`, `run` and `test` call it before
//! the pipeline, which takes the lock as given.

use crate::build::{self, Ctx};
use crate::lock::Lock;
use crate::plan;
use crate::profile::{self, Profile};
use crate::util::{self, Fail};
use anyhow::Result;

/// Makes the lock pin every Debian package the profile names, as Cargo completes
/// Cargo.lock: nothing when it does already; else apt resolves the new names with every
/// pinned package held, the result is written (unless `dry_run`), and the build says what
/// it added and what the new packages' maintainer scripts would have done. `--locked`
/// refuses any change. Errors (an unknown name, a conflict, a vanished version) leave the
/// lock as it was.
/// `specs` are the profile's `packages/` specs, as the pipeline loaded them.
pub fn complete_lock(
    profile: &Profile,
    specs: &[profile::LoadedPackage],
    lock: &mut Lock,
    ctx: &Ctx,
    locked: bool,
    dry_run: bool,
) -> Result<()> {
    complete_apt(profile, specs, lock, ctx, locked, dry_run)?;
    complete_ids(profile, lock, ctx, locked, dry_run)
}

/// Hands out uids and gids to the accounts a systemd system has that the lock gives none
/// yet (`lock::ids`): the config's users and groups and the packages' system accounts.
fn complete_ids(profile: &Profile, lock: &mut Lock, ctx: &Ctx, locked: bool, dry_run: bool) -> Result<()> {
    if profile.system.init != profile::Init::Systemd {
        return Ok(());
    }
    let names = plan::etc::package_names(profile, lock);
    let (users, groups) = plan::etc::wanted_ids(&profile.system, &names);
    let mut ids = lock.ids.clone();
    let added = ids.complete(&users, &groups).map_err(Fail::new)?;
    if added.is_empty() {
        return Ok(());
    }
    let shown: Vec<String> = (added.users.iter().map(|(n, i)| format!("user {n} {i}")))
        .chain(added.groups.iter().map(|(n, i)| format!("group {n} {i}")))
        .collect();
    if locked {
        return Err(refused(lock, &format!("gives no id to {}", shown.join(", ")), "it hands them out"));
    }
    ctx.progress.note(&format!(
        "mobix.lock: {} ids: {}",
        if dry_run { "would hand out" } else { "handed out" },
        shown.join(", ")
    ));
    lock.ids = ids;
    if !dry_run {
        lock.save()?;
    }
    Ok(())
}

/// What `--locked` says when the lock would have to change: the lock `lacks` something,
/// and a build without --locked would do `what`.
fn refused(lock: &Lock, lacks: &str, what: &str) -> anyhow::Error {
    Fail::new(format!("{} {lacks} and --locked forbids changing it", lock.file.display()))
        .hint(format!("build once without --locked ({what}), and commit mobix.lock"))
        .into()
}

/// Resolves the Debian package names of the system config the lock does not pin yet.
fn complete_apt(
    profile: &Profile,
    specs: &[profile::LoadedPackage],
    lock: &mut Lock,
    ctx: &Ctx,
    locked: bool,
    dry_run: bool,
) -> Result<()> {
    use crate::lock::apt::{self, Request};
    let wanted: Vec<Request> = (profile.system.packages.iter())
        .filter(|p| !lock.debs.contains_key(*p) && !specs.iter().any(|s| s.name == **p))
        .filter_map(|p| Request::parse(p))
        .collect();
    let missing: Vec<&Request> = wanted.iter().filter(|r| !r.satisfied_by(&lock.apt)).collect();
    if missing.is_empty() {
        return Ok(());
    }
    let shown: Vec<String> = missing.iter().map(|r| r.to_string()).collect();
    if locked {
        return Err(refused(
            lock,
            &format!("does not pin {}", shown.join(", ")),
            "it adds them; so does `mobix lock update`",
        ));
    }
    ctx.progress.note(&format!("resolving {} with apt (Debian bookworm, arm64)", shown.join(", ")));
    let requests = apt::merge_requests(&lock.apt, &wanted);
    let held: std::collections::BTreeSet<String> = lock.apt.packages.keys().cloned().collect();
    let r = {
        let root = apt::Apt::open(&ctx.apt_root)?;
        root.ensure_lists(ctx.progress)?;
        apt::resolve(&root, &lock.apt, &requests, &held).map_err(|e| locate_unknown(profile, e))?
    };
    // The new packages' files (the build needs them anyway), and what their maintainer
    // scripts would have done: mobix runs none of them.
    let new_names = r.added.iter().map(|(n, _)| n).chain(r.changed.iter().map(|(n, _, _)| n));
    let new_pins: Vec<crate::lock::DebPin> = new_names.map(|n| r.lock.packages[n].deb_pin(n)).collect();
    let files = build::deb::fetch_all(ctx, &new_pins)?;
    let mut effects: std::collections::BTreeMap<&'static str, Vec<String>> = Default::default();
    let scratch = ctx.apt_root.join(format!("scripts-{}", std::process::id()));
    for (pin, file) in new_pins.iter().zip(&files) {
        for e in apt::script_effects(file, &scratch)? {
            effects.entry(e).or_default().push(pin.package.clone());
        }
    }
    let added: Vec<String> = r.added.iter().map(|(n, v)| format!("{n} {v}")).collect();
    ctx.progress.note(&format!(
        "mobix.lock: {} {} package(s) for {}: {}",
        if dry_run { "would add" } else { "added" },
        r.added.len(),
        shown.join(", "),
        added.join(", ")
    ));
    for (n, old, new) in &r.changed {
        ctx.progress.note(&format!("mobix.lock: {n} {old} -> {new}"));
    }
    for (what, pkgs) in &effects {
        for line in script_notes(what, pkgs, &profile.system) {
            ctx.progress.note(&line);
        }
    }
    lock.apt = r.lock;
    if !dry_run {
        lock.save()?;
    }
    Ok(())
}

/// The build's notes on what a kind of maintainer script would have done for `pkgs`, each
/// with what mobix does instead for this system (docs/packages.md).
fn script_notes(what: &str, pkgs: &[String], system: &profile::SystemConfig) -> Vec<String> {
    use crate::lock::ids;
    use profile::Init;
    let systemd = system.init == Init::Systemd;
    let note = |pkgs: &[&String], instead: &str| {
        let names: Vec<&str> = pkgs.iter().map(|p| p.as_str()).collect();
        format!("note: maintainer scripts mobix does not run: {} {what} ({instead})", names.join(", "))
    };
    let all: Vec<&String> = pkgs.iter().collect();
    match what {
        "creates users or groups" if !systemd => vec![note(&all, "an `init: minimal` system has root only")],
        "creates users or groups" => {
            let (made, not): (Vec<&String>, Vec<&String>) = pkgs.iter().partition(|p| ids::makes_accounts_of(p));
            let mut out = Vec::new();
            if !made.is_empty() {
                out.push(note(&made, "mobix makes their system accounts itself, the ids kept in mobix.lock"));
            }
            if !not.is_empty() {
                out.push(note(
                    &not,
                    &format!(
                        "mobix does not make their accounts: a program of theirs that runs as its own user or \
                         group will not find it; mobix makes the system accounts of {} only, and more groups \
                         can be declared under `groups:`",
                        ids::ACCOUNT_PACKAGES.join(", ")
                    ),
                ));
            }
            out
        }
        "generates keys" => {
            let (ssh, other): (Vec<&String>, Vec<&String>) = pkgs.iter().partition(|p| *p == "openssh-server");
            let mut out = Vec::new();
            if !ssh.is_empty() {
                out.push(note(
                    &ssh,
                    if systemd && system.ssh.enable {
                        "mobix makes the ssh host key on the phone at its first boot and keeps it in the state"
                    } else {
                        "no host key is made: mobix makes one only where the config says `ssh: { enable: true }`"
                    },
                ));
            }
            if !other.is_empty() {
                out.push(note(
                    &other,
                    "no keys are made for them (a store is world-readable): a service that needs one makes it \
                     on the phone at first boot",
                ));
            }
            out
        }
        "registers alternatives" => {
            vec![note(&all, "no /etc/alternatives links: each program is in the software tree under its own name")]
        }
        "installs config files in /etc" if systemd => {
            vec![note(
                &all,
                "their /etc files are installed as shipped, and overlays and the system config win over them",
            )]
        }
        "installs config files in /etc" => {
            vec![note(&all, "not installed: an `init: minimal` system's /etc comes from overlays only")]
        }
        "enables services" if systemd => vec![note(
            &all,
            "their units start only when the config's `enable_units:` lists them; mobix itself enables \
             networkd, dbus and ssh where the system uses them",
        )],
        "enables services" => vec![note(&all, "an `init: minimal` system runs only the config's `services:`")],
        "asks debconf questions" => {
            vec![note(&all, "no questions are asked: the package's defaults hold, and overlays change its files")]
        }
        _ => vec![note(&all, "see docs/packages.md")],
    }
}

/// An apt "no such package" error, located where the profile named the (first) package.
fn locate_unknown(profile: &Profile, e: anyhow::Error) -> anyhow::Error {
    let Some(unknown) = e.chain().find_map(|c| c.downcast_ref::<crate::lock::apt::UnknownPackages>()) else {
        return e;
    };
    let (Some(first), Some(fail)) = (unknown.names.first(), util::find_fail(&e)) else { return e };
    profile.package_error(first, fail.msg.clone(), fail.hint.clone()).unwrap_or(e)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn notes(what: &str, pkgs: &[&str], system: &profile::SystemConfig) -> String {
        let pkgs: Vec<String> = pkgs.iter().map(|p| p.to_string()).collect();
        script_notes(what, &pkgs, system).join("\n")
    }

    /// Each note says what mobix does today instead of the script, for the kind of system
    /// the config makes (the notes once promised `users:` and host keys "in the next wave").
    #[test]
    fn maintainer_script_notes_say_what_mobix_does_instead() {
        let systemd = profile::SystemConfig::default();
        let said = notes("creates users or groups", &["openssh-server", "ssl-cert", "dbus"], &systemd);
        let lines: Vec<&str> = said.lines().collect();
        assert_eq!(lines.len(), 2, "{said}");
        assert!(lines[0]
            .contains(": openssh-server, dbus creates users or groups (mobix makes their system accounts itself"));
        assert!(lines[1].contains(": ssl-cert creates users or groups (mobix does not make their accounts"), "{said}");
        assert!(
            lines[1].contains(
                "of systemd, udev, dbus, dbus-system-bus-common, openssh-server, polkitd, colord, libsane1, feedbackd, \
                 network-manager, pipewire only"
            ),
            "{said}"
        );
        assert!(!said.contains("until `users:`") && !said.contains("next wave"), "{said}");
        let minimal: profile::SystemConfig = serde_norway::from_str("init: minimal").unwrap();
        assert!(notes("creates users or groups", &["ssl-cert"], &minimal).contains("has root only"));

        let mut ssh = systemd.clone();
        ssh.ssh.enable = true;
        let said = notes("generates keys", &["openssh-server", "ssl-cert"], &ssh);
        assert!(
            said.contains("openssh-server generates keys (mobix makes the ssh host key on the phone at its first boot")
        );
        assert!(said.contains("ssl-cert generates keys (no keys are made for them"), "{said}");
        assert!(notes("generates keys", &["openssh-server"], &systemd).contains("no host key is made"));

        assert!(notes("installs config files in /etc", &["iproute2"], &systemd).contains("installed as shipped"));
        assert!(notes("installs config files in /etc", &["iproute2"], &minimal).contains("not installed"));
        assert!(notes("enables services", &["chrony"], &systemd).contains("`enable_units:`"));
        assert!(notes("enables services", &["chrony"], &minimal).contains("only the config's `services:`"));
    }
}
