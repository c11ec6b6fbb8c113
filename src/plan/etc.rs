//! The generated part of a systemd system's /etc (pure): accounts, PAM, OpenSSH, the
//! units of the config's services and health checks, mobix's own units (success point,
//! trial deadline, ssh host key), what maintainer scripts would have enabled, and the
//! network. Debian's packages' own /etc files are merged underneath by the etc builder.

use crate::lock::ids::{self, Ids, SystemUser, STATIC_GROUPS, STATIC_USERS};
use crate::lock::Lock;
use crate::profile::{Profile, Service, SystemConfig};
use crate::util::Fail;
use anyhow::Result;
use mobix_bootctl::contract::{EtcCopy, Privileged};
use std::collections::{BTreeMap, BTreeSet};

/// What the etc recipe writes: files, symlinks (path → target) and the files stage-2
/// copies out with their modes.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EtcPlan {
    pub files: BTreeMap<String, String>,
    pub links: BTreeMap<String, String>,
    pub copies: Vec<EtcCopy>,
    pub privileged: Vec<Privileged>,
}

/// The programs Debian installs setuid or setgid, by package (package, path in the
/// software tree, mode, group), as its packages ship them: the password check behind
/// every PAM login that is not root's (a lock screen's among them), su and the password
/// tools, mount for users, polkit's and D-Bus's helpers, FUSE.
pub const PRIVILEGED: &[(&str, &str, u32, &str)] = &[
    ("libpam-modules-bin", "sbin/unix_chkpwd", 0o2755, "shadow"),
    ("util-linux", "bin/su", 0o4755, "root"),
    ("mount", "bin/mount", 0o4755, "root"),
    ("mount", "bin/umount", 0o4755, "root"),
    ("passwd", "bin/passwd", 0o4755, "root"),
    ("login", "bin/newgrp", 0o4755, "root"),
    ("polkitd", "lib/polkit-1/polkit-agent-helper-1", 0o4755, "root"),
    ("dbus", "lib/dbus-1.0/dbus-daemon-launch-helper", 0o4754, "messagebus"),
    ("fuse3", "bin/fusermount3", 0o4755, "root"),
];

/// Where the running generation's init is (a link in the toplevel), for units.
const INIT: &str = "/run/current-system/init";
/// Where the ssh host key is kept: the persistent state's /var.
pub const HOST_KEY: &str = "/var/lib/mobix/ssh/ssh_host_ed25519_key";
const UNITS: &str = "systemd/system";

/// Generators of Debian's systemd that a mobix system does not run (each is a program
/// systemd starts before any unit), with why.
pub const GENERATORS_NOT_RUN: &[(&str, &str)] = &[
    ("systemd-gpt-auto-generator", "looks for the root's disk, and fails on a root in memory"),
    (
        "systemd-sysv-generator",
        "makes units of /etc/init.d scripts, which nothing on a mobix system starts (no rc.d links; `enable_units` \
         names native units)",
    ),
    ("systemd-rc-local-generator", "runs /etc/rc.local, which a mobix system does not have"),
    ("systemd-hibernate-resume-generator", "resumes from hibernation, which phones do not do"),
    ("systemd-system-update-generator", "offline updates; mobix updates by generations"),
    ("systemd-cryptsetup-generator", "opens /etc/crypttab's volumes; a mobix system has no crypttab"),
    ("systemd-integritysetup-generator", "opens /etc/integritytab's volumes, which a mobix system does not have"),
    ("systemd-veritysetup-generator", "opens /etc/veritytab's volumes, which a mobix system does not have"),
];

/// Units of Debian's systemd that a mobix system masks, with why it does without them.
pub const NOT_STARTED: &[(&str, &str)] = &[
    (
        "modprobe@configfs.service",
        "loads a module the kernel loads by itself when configfs is mounted (stage-1 mounts it for USB)",
    ),
    ("modprobe@dm_mod.service", "loads device-mapper, which the kernel loads when /dev/mapper/control is opened"),
    ("modprobe@drm.service", "loads the DRM core, which a GPU driver's module pulls in when udev loads it"),
    ("modprobe@fuse.service", "loads fuse, which the kernel loads when /dev/fuse is opened"),
    ("modprobe@loop.service", "loads loop, which the kernel loads when /dev/loop-control is opened"),
    ("dev-hugepages.mount", "huge pages, which no phone program asks for"),
    ("sys-kernel-tracing.mount", "the tracing filesystem, also reachable as /sys/kernel/debug/tracing"),
    ("systemd-update-utmp.service", "boot and shutdown records in wtmp (`last reboot`); sessions still write theirs"),
    ("systemd-update-utmp-runlevel.service", "SysV runlevel records in utmp (`who -r`)"),
];

/// The units every other waits for on the way to boot-complete (journald, the journal's
/// flush, tmpfiles, then D-Bus and logind, which multi-user.target waits for), which get ten
/// times the default share of the CPU while the system starts (`StartupCPUWeight=`): on the
/// two emulated CPUs everything else started at once (udev's coldplug, networkd, the mounts)
/// held them back by seconds. Afterwards every unit has the same share again.
pub const STARTUP_FIRST: &[&str] = &[
    "systemd-journald.service",
    "systemd-journal-flush.service",
    "systemd-tmpfiles-setup.service",
    "dbus.service",
    "systemd-logind.service",
];

/// The accounts the system needs and their ids (from the lock): the users and groups
/// that must have ids, as `lock::ids::Ids::complete` takes them.
pub fn wanted_ids(system: &SystemConfig, packages: &BTreeSet<String>) -> (ids::Wanted, ids::Wanted) {
    let (sys_users, sys_groups) = ids::system_accounts(&|p| packages.contains(p));
    let mut users: ids::Wanted = sys_users.iter().map(|u| (u.name.to_string(), ids::Kind::System)).collect();
    let mut groups: ids::Wanted = sys_groups.iter().map(|g| (g.to_string(), ids::Kind::System)).collect();
    for u in sys_users.iter().filter(|u| u.group.is_none()) {
        groups.push((u.name.to_string(), ids::Kind::System));
    }
    for name in system.users.keys().filter(|n| *n != "root") {
        users.push((name.clone(), ids::Kind::Person));
        groups.push((name.clone(), ids::Kind::Person));
    }
    for g in &system.groups {
        groups.push((g.clone(), ids::Kind::Person));
    }
    (users, groups)
}

/// The names of every apt-resolved package of the lock the system config reaches.
pub fn package_names(profile: &Profile, lock: &Lock) -> BTreeSet<String> {
    let roots: Vec<&str> = profile
        .system
        .packages
        .iter()
        .map(|p| crate::lock::apt::Request::name_of(p))
        .filter(|n| lock.apt.packages.contains_key(*n))
        .collect();
    crate::lock::apt::closure(&lock.apt, &roots)
}

/// The generated /etc of a systemd system.
pub fn systemd(profile: &Profile, lock: &Lock) -> Result<EtcPlan> {
    let s = &profile.system;
    let packages = package_names(profile, lock);
    let mut e = EtcPlan::default();
    accounts(s, &packages, &lock.ids, &mut e).map_err(|missing| {
        Fail::new(format!("{} has no id for {missing}", lock.file.display()))
            .hint("`mobix build` without --locked hands out ids and records them in mobix.lock")
    })?;
    pam(&mut e);
    let unit = |e: &mut EtcPlan, name: &str, text: String| {
        e.files.insert(format!("{UNITS}/{name}"), text);
    };
    for (generator, _why) in GENERATORS_NOT_RUN {
        e.links.insert(format!("systemd/system-generators/{generator}"), "/dev/null".into());
    }
    // Work every boot would repeat for nothing on a phone (docs/system-config.md, "What the
    // default system runs"): each is a process started in the busiest second of the boot.
    for (unit, _why) in NOT_STARTED {
        e.links.insert(format!("{UNITS}/{unit}"), "/dev/null".into());
    }
    for u in STARTUP_FIRST {
        unit(&mut e, &format!("{u}.d/mobix-startup.conf"), "[Service]\nStartupCPUWeight=1000\n".into());
    }
    // Mount points, as NixOS writes them: /etc/fstab, which systemd's fstab generator
    // turns into mount units wanted by local-fs.target.
    if !s.filesystems.is_empty() {
        let mut fstab = String::from("# Written by mobix from the system config's `filesystems`.\n");
        for f in &s.filesystems {
            let options = if f.options.is_empty() { "defaults".to_string() } else { f.options.join(",") };
            fstab.push_str(&format!("{} {} {} {options} 0 0\n", f.device, f.mount_point, f.fstype));
        }
        e.files.insert("fstab".into(), fstab);
    }
    // The store (read-only, its programs running to the end) and the system partition
    // under it stay mounted until systemd-shutdown remounts everything read-only; stopping
    // them with the other mounts only fails, in red, at every shutdown.
    for m in ["mobix.mount", "run-mobix-system.mount"] {
        unit(&mut e, &format!("{m}.d/mobix.conf"), "[Unit]\nDefaultDependencies=no\n".into());
    }
    // So do the privileged copies stage-2 mounts over store files (every mount below the
    // store, by systemd's drop-ins for a unit name's prefix): stopping them at shutdown
    // unmounts /bin/umount with /bin/umount, which fails.
    if !e.privileged.is_empty() {
        unit(&mut e, "mobix-store-.mount.d/mobix.conf", "[Unit]\nDefaultDependencies=no\n".into());
    }
    // systemd's own unit allows logins (the console's too, and multi-user.target behind
    // it) only after network.target, which waits for networkd's start.
    unit(
        &mut e,
        "systemd-user-sessions.service",
        "[Unit]\nDescription=Permit User Sessions (as mobix starts it: not after network.target)\n\
         Documentation=man:systemd-user-sessions.service(8)\n\
         After=remote-fs.target nss-user-lookup.target home.mount\n\n\
         [Service]\nType=oneshot\nRemainAfterExit=yes\nExecStart=/lib/systemd/systemd-user-sessions start\n\
         ExecStop=/lib/systemd/systemd-user-sessions stop\n"
            .into(),
    );
    let want = |e: &mut EtcPlan, by: &str, name: &str, target: &str| {
        e.links.insert(format!("{UNITS}/{by}.wants/{name}"), target.to_string());
    };
    // The success point and the health checks before it (systemd's boot assessment).
    for c in &s.health_checks {
        let name = format!("mobix-check-{}.service", c.name);
        unit(
            &mut e,
            &name,
            format!(
                "[Unit]\nDescription=mobix health check {n}\nDefaultDependencies=no\n\
                 After=default.target multi-user.target\nBefore=boot-complete.target shutdown.target\n\
                 Conflicts=shutdown.target\n\n[Service]\nType=oneshot\nRemainAfterExit=yes\n\
                 ExecStart={INIT} check {n}\nTimeoutStartSec=infinity\nStandardOutput=journal+console\n",
                n = c.name
            ),
        );
        e.links.insert(format!("{UNITS}/boot-complete.target.requires/{name}"), format!("../{name}"));
    }
    unit(
        &mut e,
        "mobix-success.service",
        format!(
            "[Unit]\nDescription=mobix: this generation reached its success point\nDefaultDependencies=no\n\
             Requires=boot-complete.target\nAfter=boot-complete.target default.target multi-user.target\n\
             Before=shutdown.target\nConflicts=shutdown.target\n\n[Service]\nType=oneshot\nRemainAfterExit=yes\n\
             ExecStart={INIT} success\nStandardOutput=journal+console\n"
        ),
    );
    want(&mut e, "multi-user.target", "mobix-success.service", "../mobix-success.service");
    unit(
        &mut e,
        "mobix-deadline.service",
        format!(
            "[Unit]\nDescription=mobix: the trial generation's deadline\nDefaultDependencies=no\n\
             ConditionPathExists=/run/mobix/trial\nBefore=shutdown.target\nConflicts=shutdown.target\n\n\
             [Service]\nExecStart={INIT} deadline\nStandardOutput=journal+console\n"
        ),
    );
    want(&mut e, "sysinit.target", "mobix-deadline.service", "../mobix-deadline.service");
    // The config's services.
    for sv in &s.services {
        let name = format!("{}.service", sv.name);
        unit(&mut e, &name, service_unit(sv));
        want(&mut e, &sv.wanted_by, &name, &format!("../{name}"));
    }
    // What Debian's maintainer scripts would have enabled.
    let lib = |u: &str| format!("/lib/systemd/system/{u}");
    for u in &s.enable_units {
        let target = match u.rsplit('.').next() {
            Some("socket") => "sockets.target",
            Some("timer") => "timers.target",
            Some("path") => "paths.target",
            _ => "multi-user.target",
        };
        // An instance (`getty@tty2.service`) links to its template (`getty@.service`).
        let file = match (u.split_once('@'), u.rsplit_once('.')) {
            (Some((unit, _)), Some((_, kind))) => format!("{unit}@.{kind}"),
            _ => u.clone(),
        };
        want(&mut e, target, u, &lib(&file));
    }
    if packages.contains("systemd") {
        want(&mut e, "multi-user.target", "systemd-networkd.service", &lib("systemd-networkd.service"));
        want(&mut e, "sockets.target", "systemd-networkd.socket", &lib("systemd-networkd.socket"));
        e.links.insert(format!("{UNITS}/dbus-org.freedesktop.network1.service"), lib("systemd-networkd.service"));
        e.files.insert(
            "systemd/network/50-mobix-wired.network".into(),
            "# Wired and emulated network interfaces: an address by DHCP.\n[Match]\nName=en* eth*\n\n\
             [Network]\nDHCP=ipv4\n"
                .into(),
        );
    }
    if let (Some(_), true) = (&profile.device.usb_network, packages.contains("systemd")) {
        use mobix_bootctl::contract::{USB_HOST_ADDRESS, USB_PHONE_ADDRESS};
        e.files.insert(
            "systemd/network/40-mobix-usb.network".into(),
            format!(
                "# The phone's end of USB networking (stage-1 made the gadget): the host gets\n\
                 # {USB_HOST_ADDRESS} by DHCP.\n[Match]\nName=usb0\n\n[Network]\nAddress={USB_PHONE_ADDRESS}/24\n\
                 DHCPServer=yes\n\n[DHCPServer]\nPoolOffset=2\nPoolSize=1\nEmitDNS=no\nEmitRouter=no\n"
            ),
        );
    }
    if packages.contains("dbus") {
        want(&mut e, "sockets.target", "dbus.socket", &lib("dbus.socket"));
    }
    if s.ssh.enable {
        ssh(profile, &mut e);
        // Debian's unit waits for network.target (networkd's start, in the boot's busiest
        // seconds) and tests the configuration with a second sshd first; sshd listens on
        // every address as it comes, and mobix wrote and checked the configuration.
        unit(
            &mut e,
            "ssh.service",
            "[Unit]\nDescription=OpenBSD Secure Shell server (as mobix starts it: not after network.target)\n\
             Documentation=man:sshd(8) man:sshd_config(5)\nConditionPathExists=!/etc/ssh/sshd_not_to_be_run\n\n\
             [Service]\nEnvironmentFile=-/etc/default/ssh\nExecStart=/usr/sbin/sshd -D $SSHD_OPTS\n\
             ExecReload=/usr/sbin/sshd -t\nExecReload=/bin/kill -HUP $MAINPID\nKillMode=process\n\
             Restart=on-failure\nRestartPreventExitStatus=255\nType=notify\nRuntimeDirectory=sshd\n\
             RuntimeDirectoryMode=0755\n"
                .into(),
        );
        want(&mut e, "multi-user.target", "ssh.service", "../ssh.service");
        e.links.insert(format!("{UNITS}/sshd.service"), "ssh.service".into());
        unit(
            &mut e,
            "mobix-ssh-host-key.service",
            format!(
                "[Unit]\nDescription=mobix: make the ssh host key once (kept in the persistent state)\n\
                 Before=ssh.service\nConditionPathExists=!{HOST_KEY}\n\n[Service]\nType=oneshot\n\
                 ExecStart=/bin/sh -c 'rm -rf /var/lib/mobix/ssh.new && mkdir -p /var/lib/mobix/ssh.new && \
                 ssh-keygen -q -t ed25519 -N \"\" -C root@{host} -f /var/lib/mobix/ssh.new/ssh_host_ed25519_key && \
                 sync && rm -rf /var/lib/mobix/ssh && mv /var/lib/mobix/ssh.new /var/lib/mobix/ssh && sync'\n",
                host = hostname(profile)
            ),
        );
        want(&mut e, "ssh.service", "mobix-ssh-host-key.service", "../mobix-ssh-host-key.service");
    }
    if s.ui == crate::profile::Ui::Phosh {
        phosh(profile, &packages, &mut e);
    }
    // Home directories, made on the persistent state at boot.
    let mut tmp = String::from("# Home directories of the system config's users and of packages' system users.\n");
    for (name, u) in &s.users {
        if name != "root" {
            tmp.push_str(&format!("d {} 0700 {name} {name} -\n", home(name, u)));
        }
    }
    // And those of the packages' system users that keep their state there (colord's).
    let (sys_users, _) = ids::system_accounts(&|p| packages.contains(p));
    for u in sys_users.iter().filter(|u| u.home.starts_with("/var/lib/")) {
        let group = u.group.unwrap_or(u.name);
        tmp.push_str(&format!("d {} 0755 {} {group} -\n", u.home, u.name));
    }
    e.files.insert("tmpfiles.d/mobix-users.conf".into(), tmp);
    // The login shells (phosh's session asks whether the user's is one).
    let mut shells: BTreeSet<String> = ["/bin/sh".to_string()].into();
    shells.extend(s.users.values().filter_map(|u| u.shell.clone()));
    if packages.contains("bash") {
        shells.extend(["/bin/bash".to_string(), "/usr/bin/bash".to_string()]);
    }
    e.files.insert("shells".into(), shells.into_iter().map(|l| l + "\n").collect());
    e.files.insert(
        "profile".into(),
        "export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\nexport PS1='\\u@\\h:\\w\\$ '\n"
            .into(),
    );
    Ok(e)
}

/// Phosh, as Debian's `phosh.service` starts it (without a greeter, on tty7), for the UI's
/// user; graphical.target the default; NetworkManager for the radios, leaving the cable
/// and USB interfaces to networkd.
fn phosh(profile: &Profile, packages: &BTreeSet<String>, e: &mut EtcPlan) {
    let s = &profile.system;
    let user = s.ui_user().expect("checked: a UI has its user");
    let lib = |u: &str| format!("/lib/systemd/system/{u}");
    // Debian's unit runs the session as uid 1000; the lock may have given the user another.
    // And stage-1's screen, which stays until the success point on a phone without a UI,
    // gives way (as root: `+`) before the compositor takes the screen.
    let mut dropin = format!(
        "# The phone UI's user (the system config's `ui_user`).\n[Service]\nUser={user}\n\
         ExecStartPre=+{INIT} give-back-console\n"
    );
    if profile.device.renderer == crate::profile::Renderer::Software {
        dropin.push_str("# The device has no GPU driver (`renderer: software`): phoc draws with pixman.\n");
        dropin.push_str("Environment=WLR_RENDERER=pixman\n");
    }
    e.files.insert(format!("{UNITS}/phosh.service.d/mobix.conf"), dropin);
    e.links.insert(format!("{UNITS}/graphical.target.wants/phosh.service"), lib("phosh.service"));
    e.links.insert(format!("{UNITS}/default.target"), lib("graphical.target"));
    // After a fallback, the session shows what failed (once the shell is up to show it).
    e.files.insert(
        "xdg/autostart/mobix-fallback-notice.desktop".into(),
        format!(
            "[Desktop Entry]\nType=Application\nName=mobix fallback notice\n\
             Comment=Says so when this boot fell back from a failed generation\n\
             Exec={INIT} notify-fallback\nNoDisplay=true\nX-GNOME-Autostart-Phase=Applications\n"
        ),
    );
    // It waits for an answer from a keyboard the phone has not got.
    e.links.insert(format!("{UNITS}/systemd-firstboot.service"), "/dev/null".into());
    if packages.contains("network-manager") {
        e.links
            .insert(format!("{UNITS}/multi-user.target.wants/NetworkManager.service"), lib("NetworkManager.service"));
        e.links.insert(
            format!("{UNITS}/dbus-org.freedesktop.nm-dispatcher.service"),
            lib("NetworkManager-dispatcher.service"),
        );
        e.files.insert(
            "NetworkManager/conf.d/50-mobix.conf".into(),
            "# Written by mobix: networkd owns the wired, emulated and USB interfaces (ssh over the\n\
             # cable keeps working); NetworkManager the rest (Wi-Fi, the modem).\n\
             [keyfile]\nunmanaged-devices=interface-name:en*;interface-name:eth*;interface-name:usb*\n"
                .into(),
        );
    }
    if packages.contains("modemmanager") {
        e.links.insert(format!("{UNITS}/multi-user.target.wants/ModemManager.service"), lib("ModemManager.service"));
        e.links.insert(format!("{UNITS}/dbus-org.freedesktop.ModemManager1.service"), lib("ModemManager.service"));
    }
}

fn home(name: &str, u: &crate::profile::User) -> String {
    u.home.clone().unwrap_or_else(|| if name == "root" { "/root".into() } else { format!("/home/{name}") })
}

/// passwd, group and shadow: Debian's fixed accounts, the packages' system accounts and
/// the config's users, each with the id the lock gives it. Err: the name without an id.
fn accounts(s: &SystemConfig, packages: &BTreeSet<String>, ids: &Ids, e: &mut EtcPlan) -> Result<(), String> {
    let (sys_users, _) = ids::system_accounts(&|p| packages.contains(p));
    let uid = |n: &str| ids.users.get(n).copied().ok_or_else(|| format!("user {n}"));
    let gid = |n: &str| ids.groups.get(n).copied().ok_or_else(|| format!("group {n}"));
    let static_gid = |n: &str| STATIC_GROUPS.iter().find(|g| g.0 == n).map(|g| g.1);
    // (name, uid, gid, gecos, home, shell, password hash)
    let mut users: Vec<(String, u32, u32, String, String, String, String)> = Vec::new();
    let root = s.users.get("root");
    for (name, u, g, home, shell) in STATIC_USERS {
        let (shell, hash) = match (*name, root) {
            ("root", Some(r)) => (
                r.shell.clone().unwrap_or_else(|| shell.to_string()),
                r.hashed_password.clone().unwrap_or_else(|| "!".into()),
            ),
            _ => (shell.to_string(), if *name == "root" { "!".to_string() } else { "*".to_string() }),
        };
        users.push((name.to_string(), *u, *g, name.to_string(), home.to_string(), shell, hash));
    }
    for SystemUser { name, group, home } in &sys_users {
        let g = match group {
            Some(g) => static_gid(g).map_or_else(|| gid(g), Ok)?,
            None => gid(name)?,
        };
        users.push((
            name.to_string(),
            uid(name)?,
            g,
            String::new(),
            home.to_string(),
            "/usr/sbin/nologin".into(),
            "!".into(),
        ));
    }
    for (name, u) in s.users.iter().filter(|(n, _)| *n != "root") {
        users.push((
            name.clone(),
            uid(name)?,
            gid(name)?,
            String::new(),
            home(name, u),
            u.shell.clone().unwrap_or_else(|| "/bin/sh".into()),
            u.hashed_password.clone().unwrap_or_else(|| "!".into()),
        ));
    }
    // Groups with their members (supplementary memberships).
    let mut members: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (name, u) in &s.users {
        for g in &u.groups {
            members.entry(g.clone()).or_default().push(name.clone());
        }
    }
    let mut groups: Vec<(String, u32)> = STATIC_GROUPS.iter().map(|(n, g)| (n.to_string(), *g)).collect();
    // The groups that have ids: those the lock was asked to give ids to.
    for (g, _) in wanted_ids(s, packages).1 {
        let id = gid(&g)?;
        if !groups.iter().any(|(n, _)| *n == g) {
            groups.push((g, id));
        }
    }
    groups.sort_by_key(|(n, g)| (*g, n.clone()));
    users.sort_by_key(|u| (u.1, u.0.clone()));
    let mut passwd = String::new();
    let mut shadow = String::new();
    for (name, uid, gid, gecos, home, shell, hash) in &users {
        passwd.push_str(&format!("{name}:x:{uid}:{gid}:{gecos}:{home}:{shell}\n"));
        shadow.push_str(&format!("{name}:{hash}:1:0:99999:7:::\n"));
    }
    let mut group = String::new();
    for (name, id) in &groups {
        let m = members.get(name).map(|v| v.join(",")).unwrap_or_default();
        group.push_str(&format!("{name}:x:{id}:{m}\n"));
    }
    e.files.insert("passwd".into(), passwd);
    e.files.insert("group".into(), group);
    e.files.insert("shadow".into(), shadow);
    let shadow_gid = static_gid("shadow").expect("a static group");
    e.copies.push(EtcCopy { path: "shadow".into(), mode: 0o640, gid: shadow_gid });
    for (_, path, mode, group) in PRIVILEGED.iter().filter(|p| packages.contains(p.0)) {
        let gid = static_gid(group).map_or_else(|| gid(group), Ok)?;
        e.privileged.push(Privileged { path: path.to_string(), mode: *mode, gid });
    }
    Ok(())
}

/// The PAM stacks Debian's pam-auth-update writes (unix accounts, and logind sessions).
fn pam(e: &mut EtcPlan) {
    let f = |body: &str| format!("# Written by mobix, as Debian's pam-auth-update writes it.\n{body}");
    e.files.insert(
        "pam.d/common-auth".into(),
        f("auth\t[success=1 default=ignore]\tpam_unix.so nullok\nauth\trequisite\tpam_deny.so\nauth\trequired\tpam_permit.so\n"),
    );
    e.files.insert(
        "pam.d/common-account".into(),
        f("account\t[success=1 new_authtok_reqd=done default=ignore]\tpam_unix.so\naccount\trequisite\tpam_deny.so\n\
           account\trequired\tpam_permit.so\n"),
    );
    e.files.insert(
        "pam.d/common-password".into(),
        f("password\t[success=1 default=ignore]\tpam_unix.so obscure yescrypt\npassword\trequisite\tpam_deny.so\n\
           password\trequired\tpam_permit.so\n"),
    );
    let session =
        "session\t[default=1]\tpam_permit.so\nsession\trequisite\tpam_deny.so\nsession\trequired\tpam_permit.so\n\
                   session\trequired\tpam_unix.so\n";
    e.files.insert("pam.d/common-session".into(), f(&format!("{session}session\toptional\tpam_systemd.so\n")));
    e.files.insert("pam.d/common-session-noninteractive".into(), f(session));
}

/// sshd_config and the users' keys.
fn ssh(profile: &Profile, e: &mut EtcPlan) {
    let s = &profile.system.ssh;
    let yes = |b: bool| if b { "yes" } else { "no" };
    e.files.insert(
        "ssh/sshd_config".into(),
        format!(
            "# Written by mobix from the system config's `ssh`.\nPort {}\nHostKey {HOST_KEY}\nPermitRootLogin {}\n\
             PasswordAuthentication {}\nKbdInteractiveAuthentication no\nUsePAM yes\n\
             AuthorizedKeysFile .ssh/authorized_keys /etc/ssh/authorized_keys.d/%u\nPrintMotd no\n\
             AcceptEnv LANG LC_*\nSubsystem sftp /usr/lib/openssh/sftp-server\n",
            s.port,
            s.permit_root_login,
            yes(s.password_authentication)
        ),
    );
    for (name, u) in &profile.system.users {
        if !u.authorized_keys.is_empty() {
            e.files.insert(format!("ssh/authorized_keys.d/{name}"), u.authorized_keys.join("\n") + "\n");
        }
    }
}

/// A unit of the config's `services`.
fn service_unit(sv: &Service) -> String {
    let mut u = format!("[Unit]\nDescription={} (from the system config)\n", sv.name);
    if !sv.after.is_empty() {
        u.push_str(&format!("After={}\n", sv.after.join(" ")));
    }
    if !sv.wants.is_empty() {
        u.push_str(&format!("Wants={}\n", sv.wants.join(" ")));
    }
    u.push_str(&format!("\n[Service]\nExecStart={}\nRestart={}\n", exec_line(&sv.command), sv.restart.name()));
    if let Some(user) = &sv.user {
        u.push_str(&format!("User={user}\n"));
    }
    for (k, v) in &sv.environment {
        u.push_str(&format!("Environment=\"{k}={}\"\n", quote_inner(v)));
    }
    u
}

/// A command as systemd's ExecStart= reads it: each word quoted, `$` and `%` escaped.
pub fn exec_line(command: &[String]) -> String {
    command.iter().map(|w| format!("\"{}\"", quote_inner(w))).collect::<Vec<_>>().join(" ")
}

fn quote_inner(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"").replace('%', "%%").replace('$', "$$").replace('\n', "\\n")
}

/// The system's hostname: the config's, or the device's codename.
fn hostname(profile: &Profile) -> String {
    profile.system.hostname.clone().unwrap_or_else(|| profile.codename.to_string())
}

/// `/etc` of the system: hostname, users and groups (a systemd system's are replaced by
/// [`systemd`]'s).
pub(super) fn etc_files(profile: &Profile, gen: &EtcPlan) -> BTreeMap<String, String> {
    let host = hostname(profile);
    BTreeMap::from([
        ("hostname".into(), format!("{host}\n")),
        ("hosts".into(), format!("127.0.0.1 localhost\n127.0.1.1 {host}\n")),
        (
            "passwd".into(),
            "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n".into(),
        ),
        ("group".into(), "root:x:0:\nnogroup:x:65534:\n".into()),
        ("shadow".into(), "root::1::::::\nnobody:!:1::::::\n".into()),
        (
            "profile".into(),
            "export PATH=/run/current-system/sw/bin:/run/current-system/sw/sbin:/bin\nexport PS1='\\h:\\w\\$ '\n"
                .into(),
        ),
        ("os-release".into(), "NAME=mobix\nID=mobix\nPRETTY_NAME=\"mobix\"\n".into()),
        ("mobix/system.json".into(), system_json(profile, gen)),
    ])
}

/// `/etc/mobix/system.json`: what stage-2 runs, checks and waits for.
fn system_json(profile: &Profile, gen: &EtcPlan) -> String {
    use mobix_bootctl::contract::{HealthCheck, Service, StateSpec, SystemSpec};
    let s = &profile.system;
    let systemd = s.init == crate::profile::Init::Systemd;
    let v = SystemSpec {
        copies: gen.copies.clone(),
        privileged: gen.privileged.clone(),
        init: s.init,
        // The minimal init keeps everything in memory, as it always has.
        state: (profile.device.state.as_ref()).filter(|_| systemd).map(|st| StateSpec {
            partition: st.partition.to_string(),
            offset: profile.device.persistent_state_start(),
            encrypted: s.state.encrypted(),
        }),
        trial_deadline: s.boot.trial_deadline,
        services: (s.services.iter())
            .map(|x| Service { name: x.name.clone(), command: x.command.clone(), restart: x.restart })
            .collect(),
        health_checks: (s.health_checks.iter())
            .map(|c| HealthCheck { name: c.name.clone(), command: c.command.clone(), timeout: c.timeout })
            .collect(),
    };
    serde_json::to_string_pretty(&v).expect("serialisable") + "\n"
}

#[cfg(test)]
mod tests {
    use super::*;

    /// docs/system-config.md says what a mobix system does without; every masked unit and
    /// generator must be named there.
    #[test]
    fn the_manual_names_every_unit_and_generator_left_out() {
        let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/system-config.md")).unwrap();
        for (name, why) in NOT_STARTED.iter().chain(GENERATORS_NOT_RUN) {
            assert!(doc.contains(&format!("`{name}`")), "docs/system-config.md does not name {name} ({why})");
        }
        for name in STARTUP_FIRST {
            assert!(doc.contains(&format!("`{name}`")), "docs/system-config.md does not name {name} (started first)");
        }
    }

    use std::path::Path;

    #[test]
    fn enabled_units_go_to_their_kinds_target_and_instances_to_their_template() {
        let mut p = crate::profile::load(Path::new(env!("CARGO_MANIFEST_DIR")), "qemu-aarch64").unwrap();
        p.system.init = crate::profile::Init::Systemd;
        p.system.enable_units = vec!["fstrim.timer".into(), "getty@tty2.service".into()];
        let mut lock = Lock::load(Path::new(env!("CARGO_MANIFEST_DIR"))).unwrap();
        let (u, g) = wanted_ids(&p.system, &package_names(&p, &lock));
        lock.ids.complete(&u, &g).unwrap();
        let e = systemd(&p, &lock).unwrap();
        assert_eq!(e.links["systemd/system/timers.target.wants/fstrim.timer"], "/lib/systemd/system/fstrim.timer");
        assert_eq!(
            e.links["systemd/system/multi-user.target.wants/getty@tty2.service"],
            "/lib/systemd/system/getty@.service"
        );
    }

    #[test]
    fn filesystems_become_fstab_lines() {
        let mut p = crate::profile::load(Path::new(env!("CARGO_MANIFEST_DIR")), "qemu-aarch64").unwrap();
        p.system.init = crate::profile::Init::Systemd;
        let mut lock = Lock::load(Path::new(env!("CARGO_MANIFEST_DIR"))).unwrap();
        let (u, g) = wanted_ids(&p.system, &package_names(&p, &lock));
        lock.ids.complete(&u, &g).unwrap();
        assert!(!systemd(&p, &lock).unwrap().files.contains_key("fstab"), "no filesystems, no fstab");
        p.system.filesystems = vec![
            crate::profile::FileSystem {
                mount_point: "/srv/scratch".into(),
                device: "tmpfs".into(),
                fstype: "tmpfs".into(),
                options: vec!["size=16m".into(), "mode=1777".into()],
            },
            crate::profile::FileSystem {
                mount_point: "/media/sd".into(),
                device: "PARTLABEL=sdcard".into(),
                fstype: "vfat".into(),
                options: vec![],
            },
        ];
        let fstab = systemd(&p, &lock).unwrap().files["fstab"].clone();
        let lines: Vec<&str> = fstab.lines().skip(1).collect();
        assert_eq!(
            lines,
            ["tmpfs /srv/scratch tmpfs size=16m,mode=1777 0 0", "PARTLABEL=sdcard /media/sd vfat defaults 0 0"]
        );
    }

    #[test]
    fn exec_lines_keep_each_word_whole() {
        let c = vec!["/bin/sh".to_string(), "-c".into(), "date >> /var/lib/hello.log; echo \"$HOME\" 100%".into()];
        assert_eq!(exec_line(&c), r#""/bin/sh" "-c" "date >> /var/lib/hello.log; echo \"$$HOME\" 100%%""#);
    }
}
