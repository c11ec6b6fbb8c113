//! User and group ids: Debian's fixed ones (base-passwd), the system accounts packages
//! need (what their maintainer scripts would have added), and ids handed out to the
//! system config's users and groups and to those system accounts, kept in mobix.lock's
//! `ids` so that a name keeps its id in every later generation and no id is ever given
//! to another name. Pure: no files.

use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// The ids handed out so far. Entries are never removed: an id once given stays taken.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Ids {
    #[serde(default)]
    pub users: BTreeMap<String, u32>,
    #[serde(default)]
    pub groups: BTreeMap<String, u32>,
}

/// Debian's statically allocated users (base-passwd): name, uid, gid, home, shell.
pub const STATIC_USERS: &[(&str, u32, u32, &str, &str)] = &[
    ("root", 0, 0, "/root", "/bin/sh"),
    ("daemon", 1, 1, "/usr/sbin", "/usr/sbin/nologin"),
    ("bin", 2, 2, "/bin", "/usr/sbin/nologin"),
    ("sys", 3, 3, "/dev", "/usr/sbin/nologin"),
    ("sync", 4, 65534, "/bin", "/bin/sync"),
    ("man", 6, 12, "/var/cache/man", "/usr/sbin/nologin"),
    ("lp", 7, 7, "/var/spool/lpd", "/usr/sbin/nologin"),
    ("mail", 8, 8, "/var/mail", "/usr/sbin/nologin"),
    ("news", 9, 9, "/var/spool/news", "/usr/sbin/nologin"),
    ("uucp", 10, 10, "/var/spool/uucp", "/usr/sbin/nologin"),
    ("proxy", 13, 13, "/bin", "/usr/sbin/nologin"),
    ("www-data", 33, 33, "/var/www", "/usr/sbin/nologin"),
    ("backup", 34, 34, "/var/backups", "/usr/sbin/nologin"),
    ("list", 38, 38, "/var/list", "/usr/sbin/nologin"),
    ("irc", 39, 39, "/run/ircd", "/usr/sbin/nologin"),
    ("_apt", 42, 65534, "/nonexistent", "/usr/sbin/nologin"),
    ("nobody", 65534, 65534, "/nonexistent", "/usr/sbin/nologin"),
];

/// Debian's statically allocated groups (base-passwd).
pub const STATIC_GROUPS: &[(&str, u32)] = &[
    ("root", 0),
    ("daemon", 1),
    ("bin", 2),
    ("sys", 3),
    ("adm", 4),
    ("tty", 5),
    ("disk", 6),
    ("lp", 7),
    ("mail", 8),
    ("news", 9),
    ("uucp", 10),
    ("man", 12),
    ("proxy", 13),
    ("kmem", 15),
    ("dialout", 20),
    ("fax", 21),
    ("voice", 22),
    ("cdrom", 24),
    ("floppy", 25),
    ("tape", 26),
    ("sudo", 27),
    ("audio", 29),
    ("dip", 30),
    ("www-data", 33),
    ("backup", 34),
    ("operator", 37),
    ("list", 38),
    ("irc", 39),
    ("src", 40),
    ("shadow", 42),
    ("utmp", 43),
    ("video", 44),
    ("sasl", 45),
    ("plugdev", 46),
    ("staff", 50),
    ("games", 60),
    ("users", 100),
    ("nogroup", 65534),
];

/// A system account a package needs: made by its maintainer script on Debian.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SystemUser {
    pub name: &'static str,
    /// Its own group of the same name, or a static group (`nogroup`).
    pub group: Option<&'static str>,
    pub home: &'static str,
}

/// The system users and groups each package needs (its postinst or sysusers.d file),
/// and the groups mobix itself provides (`wheel`, as NixOS has it), for a system whose
/// packages are those `has` says yes to.
pub fn system_accounts(has: &dyn Fn(&str) -> bool) -> (Vec<SystemUser>, Vec<&'static str>) {
    let mut users = Vec::new();
    let mut groups = vec!["wheel"];
    if has("systemd") {
        users.push(SystemUser { name: "systemd-network", group: None, home: "/" });
        groups.push("systemd-journal");
    }
    if has("udev") || has("systemd") {
        groups.extend(["input", "kvm", "render", "sgx"]);
    }
    if has("dbus") || has("dbus-system-bus-common") {
        users.push(SystemUser { name: "messagebus", group: None, home: "/nonexistent" });
    }
    if has("openssh-server") {
        users.push(SystemUser { name: "sshd", group: Some("nogroup"), home: "/run/sshd" });
    }
    // A phone UI's daemons (bookworm's postinst scripts and sysusers.d files).
    if has("polkitd") {
        users.push(SystemUser { name: "polkitd", group: None, home: "/nonexistent" });
    }
    if has("colord") {
        users.push(SystemUser { name: "colord", group: None, home: "/var/lib/colord" });
    }
    for (package, group) in [
        ("colord", "scanner"),
        ("libsane1", "scanner"),
        ("feedbackd", "feedbackd"),
        ("network-manager", "netdev"),
        ("pipewire", "pipewire"),
    ] {
        if has(package) && !groups.contains(&group) {
            groups.push(group);
        }
    }
    (users, groups)
}

/// The packages whose system accounts [`system_accounts`] makes (a test keeps the two
/// in step); a package outside it that creates accounts in its maintainer scripts gets
/// none.
pub const ACCOUNT_PACKAGES: [&str; 11] = [
    "systemd",
    "udev",
    "dbus",
    "dbus-system-bus-common",
    "openssh-server",
    "polkitd",
    "colord",
    "libsane1",
    "feedbackd",
    "network-manager",
    "pipewire",
];

/// Whether mobix makes the system accounts `package`'s maintainer scripts would create.
pub fn makes_accounts_of(package: &str) -> bool {
    ACCOUNT_PACKAGES.contains(&package)
}

/// Whether `name` is a group a system can have without declaring it: Debian's fixed ones,
/// or one that mobix or a package provides.
pub fn is_system_group(name: &str) -> bool {
    STATIC_GROUPS.iter().any(|(g, _)| *g == name) || system_accounts(&|_| true).1.contains(&name)
}

/// Whether `name` is one of Debian's fixed users or a system account of a package.
pub fn is_system_user(name: &str) -> bool {
    STATIC_USERS.iter().any(|(u, ..)| *u == name) || system_accounts(&|_| true).0.iter().any(|u| u.name == name)
}

/// Where ids come from: people from 1000 up, system accounts from 999 down to 100 (as
/// systemd-sysusers hands them out).
pub const FIRST_PERSON: u32 = 1000;
pub const LAST_SYSTEM: u32 = 999;
pub const FIRST_SYSTEM: u32 = 100;

/// What an account wants: a person (from 1000 up) or a system account.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    Person,
    System,
}

/// Accounts that must have ids: (name, kind).
pub type Wanted = Vec<(String, Kind)>;

/// What [`Ids::complete`] handed out: (name, id), users then groups.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Added {
    pub users: Vec<(String, u32)>,
    pub groups: Vec<(String, u32)>,
}

impl Added {
    pub fn is_empty(&self) -> bool {
        self.users.is_empty() && self.groups.is_empty()
    }
}

impl Ids {
    pub fn is_empty(&self) -> bool {
        self.users.is_empty() && self.groups.is_empty()
    }

    /// Hands out ids to the users and groups that have none yet, each kind in name order
    /// (so the result does not depend on the order of the config). A person's own group
    /// gets the person's uid as its gid where that gid is free. Returns what it added, or
    /// an error when a range is full.
    pub fn complete(&mut self, users: &[(String, Kind)], groups: &[(String, Kind)]) -> Result<Added, String> {
        let mut added = Added::default();
        let mut users: Vec<&(String, Kind)> = users.iter().filter(|(n, _)| !self.users.contains_key(n)).collect();
        users.sort();
        users.dedup();
        for (name, kind) in users {
            let taken: BTreeSet<u32> = self.users.values().copied().chain(STATIC_USERS.iter().map(|u| u.1)).collect();
            let id = free(&taken, *kind).ok_or_else(|| format!("no free uid left for {name}"))?;
            self.users.insert(name.clone(), id);
            added.users.push((name.clone(), id));
        }
        let mut groups: Vec<&(String, Kind)> = groups.iter().filter(|(n, _)| !self.groups.contains_key(n)).collect();
        groups.sort();
        groups.dedup();
        for (name, kind) in groups {
            let taken: BTreeSet<u32> = self.groups.values().copied().chain(STATIC_GROUPS.iter().map(|g| g.1)).collect();
            let id = match self.users.get(name) {
                Some(uid) if !taken.contains(uid) => *uid,
                _ => free(&taken, *kind).ok_or_else(|| format!("no free gid left for {name}"))?,
            };
            self.groups.insert(name.clone(), id);
            added.groups.push((name.clone(), id));
        }
        Ok(added)
    }
}

fn free(taken: &BTreeSet<u32>, kind: Kind) -> Option<u32> {
    match kind {
        Kind::Person => (FIRST_PERSON..60000).find(|i| !taken.contains(i)),
        Kind::System => (FIRST_SYSTEM..=LAST_SYSTEM).rev().find(|i| !taken.contains(i)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_packages_whose_accounts_mobix_makes_are_those_system_accounts_knows() {
        let only = |name: &'static str| move |p: &str| p == name;
        for p in ACCOUNT_PACKAGES {
            let (users, groups) = system_accounts(&only(p));
            assert!(!users.is_empty() || groups.len() > 1, "{p} gets no accounts");
        }
        let (users, groups) = system_accounts(&|p: &str| !ACCOUNT_PACKAGES.contains(&p));
        assert!(users.is_empty() && groups == ["wheel"], "{users:?} {groups:?}");
        assert!(
            makes_accounts_of("openssh-server") && makes_accounts_of("polkitd") && !makes_accounts_of("geoclue-2.0")
        );
        // A group two packages need is made once.
        let (_, groups) = system_accounts(&|p: &str| p == "colord" || p == "libsane1");
        assert_eq!(groups, ["wheel", "scanner"]);
    }

    fn person(n: &str) -> (String, Kind) {
        (n.to_string(), Kind::Person)
    }

    #[test]
    fn a_user_added_before_an_existing_one_changes_no_id() {
        let mut ids = Ids::default();
        ids.complete(&[person("bob")], &[person("bob")]).unwrap();
        assert_eq!((ids.users["bob"], ids.groups["bob"]), (1000, 1000));
        let added = ids.complete(&[person("alice"), person("bob")], &[person("alice"), person("bob")]).unwrap();
        assert_eq!(added.users, vec![("alice".to_string(), 1001)]);
        assert_eq!((ids.users["bob"], ids.users["alice"], ids.groups["alice"]), (1000, 1001, 1001));
    }

    #[test]
    fn an_id_once_given_is_never_given_again() {
        let mut ids = Ids::default();
        ids.complete(&[person("carol")], &[]).unwrap();
        // carol leaves the config; dave comes: carol's uid stays hers.
        ids.complete(&[person("dave")], &[]).unwrap();
        assert_eq!((ids.users["carol"], ids.users["dave"]), (1000, 1001));
    }

    #[test]
    fn the_same_request_in_any_order_gives_the_same_ids() {
        let (mut a, mut b) = (Ids::default(), Ids::default());
        let sys = |n: &str| (n.to_string(), Kind::System);
        a.complete(&[person("x"), person("y"), sys("sshd")], &[sys("wheel"), person("x")]).unwrap();
        b.complete(&[sys("sshd"), person("y"), person("x")], &[person("x"), sys("wheel")]).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.users["sshd"], 999);
        assert_eq!(a.groups["wheel"], 999);
    }

    #[test]
    fn a_private_group_takes_another_gid_when_the_uid_is_taken_as_a_gid() {
        let mut ids = Ids::default();
        ids.complete(&[], &[person("friends")]).unwrap();
        ids.complete(&[person("erin")], &[person("erin")]).unwrap();
        assert_eq!((ids.groups["friends"], ids.users["erin"], ids.groups["erin"]), (1000, 1000, 1001));
    }
}
