//! A system to log in to and keep: the system config of the README (`init: systemd`, a
//! user with a key, ssh, a service, a health check) built and run with `mobix run
//! --ssh-port`, logged into with the OpenSSH client; its host key, /home and the
//! service's log survive a power cycle and a new generation; under systemd a failing
//! health check falls back by itself (a deploy of one); and USB networking: with dummy_hcd the
//! phone's own kernel is both the USB gadget stage-1 makes and the host, whose end (moved
//! into a network namespace of its own) gets 172.16.42.2 from the phone's DHCP server and
//! logs in with ssh. `mobix.debug-shell` gives a shell in stage-1 and serves the USB
//! network (DHCP, telnet), as the minimal system does once it runs.

use crate::common::{mobix_in, ok, phone, repo, repo_copy, ssh_keygen, Group, Story};
use std::fs;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The store these tests share: not the suite's shared store, whose default system would
/// otherwise carry these systemd generations (and flash them in the tests after this one).
fn store() -> PathBuf {
    repo().join("target/mobix-test-store-systemd")
}

/// The issue's config as written, with a real key, and two CPUs for the emulated phone.
fn config(key: &str, extra: &str) -> String {
    format!(
        "hostname: pocket\ninit: systemd\nusers:\n  alice:\n    groups: [wheel]\n    authorized_keys: [\"{key}\"]\n\
         ssh: {{ enable: true }}\nservices:\n  - name: hello\n    command: [/bin/sh, -c, \"date >> /var/lib/hello.log\"]\n\
         health_checks:\n  - {{ name: sshd, command: [systemctl, is-active, ssh.service] }}\n\
         device:\n  qemu: {{ smp: 2 }}\n{extra}"
    )
}

struct Phone {
    repo: PathBuf,
    out: PathBuf,
    keys: PathBuf,
    port: u16,
}

impl Phone {
    /// A copy of the tree under `t` whose `pocket.yaml` is the README's config (with `extra`)
    /// for a key of alice's made in `t/keys`; returns the phone and alice's public key.
    fn with_config(t: &Path, extra: &str) -> (Phone, String) {
        let repo = t.join("tree");
        repo_copy(&repo);
        let keys = t.join("keys");
        fs::create_dir_all(&keys).unwrap();
        let alice = ssh_keygen(&keys, "alice");
        fs::write(repo.join("pocket.yaml"), config(&alice, extra)).unwrap();
        (Phone { repo, out: t.join("out"), keys, port: crate::common::free_port() }, alice)
    }

    fn mobix(&self, args: &[&str]) -> std::process::Output {
        let mut all: Vec<&str> = args.to_vec();
        let (store, out) = (store(), self.out.clone());
        let (s, o) = (store.to_str().unwrap().to_string(), out.to_str().unwrap().to_string());
        all.extend(["--store", &s, "--out", &o]);
        mobix_in(&self.repo, &all)
    }

    /// `mobix run --ssh-port` with nothing on its stdin, in its own process group.
    fn power_on(&self) -> (Group, PathBuf) {
        self.power_on_with(&[])
    }

    fn power_on_with(&self, extra: &[&str]) -> (Group, PathBuf) {
        let log = self.out.join(format!("run-{}.log", Instant::now().elapsed().as_nanos()));
        let run = Group::spawn_logged(
            crate::common::mobix_cmd()
                .args(["run", "--device", "qemu-aarch64", "--ssh-port", &self.port.to_string(), "--store"])
                .arg(store())
                .args(extra)
                .arg("--out")
                .arg(&self.out)
                .current_dir(&self.repo),
            &log,
        );
        (run, log)
    }

    fn power_off(&self, run: Group) {
        drop(run);
    }

    fn ssh(&self, key: &str, user: &str, extra: &[&str], command: &str) -> std::process::Output {
        // ssh takes the first value given for an option: `extra` comes first.
        Command::new("ssh")
            .args(extra)
            .arg("-i")
            .arg(self.keys.join(key))
            .args(["-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes", "-o", "ConnectTimeout=10"])
            .args(["-o", "StrictHostKeyChecking=yes", "-o"])
            .arg(format!("UserKnownHostsFile={}", self.keys.join("known_hosts").display()))
            .args(["-p", &self.port.to_string()])
            .arg(format!("{user}@127.0.0.1"))
            .arg(command)
            .output()
            .unwrap()
    }

    /// The store paths `mobix build --dry-run` says a build of `pocket.yaml` would build.
    fn planned_builds(&self) -> Vec<String> {
        let args = ["build", "--device", "qemu-aarch64", "--config", "pocket.yaml", "--dry-run", "--json", "--store"];
        let out = self.out.to_str().unwrap();
        let o = mobix_in(&self.repo, &[&args[..], &[store().to_str().unwrap(), "--out", out]].concat());
        let plan: serde_json::Value = serde_json::from_str(&ok(&o)).unwrap();
        plan["recipes"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["will"] == "build")
            .map(|r| r["path"].as_str().unwrap().trim_start_matches("/mobix/store/").to_string())
            .collect()
    }

    /// None of `paths` (store base names) is in the store: nothing of them was built.
    fn assert_none_built(&self, paths: &[String], said: &str) {
        let built: Vec<&String> = paths.iter().filter(|p| store().join(p).exists()).collect();
        assert!(built.is_empty(), "built before refusing: {built:?}\n{said}");
    }

    /// `mobix deploy --json` of `pocket.yaml` to this phone as root; its output and report.
    fn deploy(&self, extra: &[&str]) -> (std::process::Output, serde_json::Value) {
        let mut args = vec!["deploy".to_string()];
        args.extend(self.deploy_args());
        args.extend(extra.iter().map(|s| s.to_string()));
        let o = mobix_in(&self.repo, &args.iter().map(String::as_str).collect::<Vec<_>>());
        let report = serde_json::from_slice(&o.stdout).unwrap_or(serde_json::Value::Null);
        (o, report)
    }

    fn deploy_args(&self) -> Vec<String> {
        [
            "--device",
            "qemu-aarch64",
            "--config",
            "pocket.yaml",
            "--timeout",
            "400",
            "--json",
            "--to",
            &format!("ssh://root@127.0.0.1:{}", self.port),
            "-i",
            self.keys.join("root").to_str().unwrap(),
            // No host key option: as the README writes it, mobix knows the host key of the
            // emulated phone its `mobix run --ssh-port` serves (issue 30: it failed as written).
            "--store",
            store().to_str().unwrap(),
            "--out",
            self.out.to_str().unwrap(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    }

    /// A deploy killed (with its ssh) `delay` after it said it sent `lines` store paths;
    /// says where it was cut.
    fn deploy_cut(&self, lines: usize, delay: Duration) -> String {
        use std::io::BufRead;
        let mut child = crate::common::mobix_cmd()
            .arg("deploy")
            .args(self.deploy_args())
            .current_dir(&self.repo)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .process_group(0)
            .spawn()
            .unwrap();
        let mut err = std::io::BufReader::new(child.stderr.take().unwrap());
        let mut seen = 0;
        let mut last = String::new();
        while seen < lines {
            last.clear();
            if err.read_line(&mut last).unwrap() == 0 || last.contains("phone: received") {
                break;
            }
            if last.starts_with("mobix: sent ") {
                seen += 1;
            }
        }
        if lines == 0 {
            // Cut while it plans or while the stream starts.
            while err.read_line(&mut last).unwrap() > 0 && !last.contains("store paths to send") {}
        }
        std::thread::sleep(delay);
        crate::common::kill_group(&mut child); // ssh is in its group
                                               // The phone's receiver sees the end of its input and stops.
        std::thread::sleep(Duration::from_secs(2));
        format!("{delay:?} after {seen} paths sent, last said {:?}", last.trim())
    }

    /// The phone's `phone-status`, asked as root.
    fn root_status(&self) -> serde_json::Value {
        let o = self.ssh("root", "root", &[], "/run/current-system/init phone-status");
        assert!(o.status.success(), "phone-status: {}", String::from_utf8_lossy(&o.stderr));
        serde_json::from_slice(&o.stdout).unwrap()
    }

    /// Each of `names` the phone's store has hashes to what the host's store recorded (the
    /// paths a deploy was sending: the only ones that could be partial).
    fn store_is_whole(&self, names: &[String], when: &str) {
        let o = self.ssh("root", "root", &[], "ls /mobix/store");
        let there: Vec<String> = text(&o).lines().filter(|n| names.iter().any(|s| s == n)).map(String::from).collect();
        if there.is_empty() {
            return;
        }
        let o = self.ssh("root", "root", &[], &format!("/run/current-system/init store-hash {}", there.join(" ")));
        assert!(o.status.success(), "store-hash {when}: {}", String::from_utf8_lossy(&o.stderr));
        let listing = text(&o);
        assert_eq!(listing.lines().count(), there.len(), "{listing}");
        for l in listing.lines() {
            let (hash, name) = l.split_once(' ').unwrap();
            let host = mobix::store::content_hash(&store().join(name)).unwrap();
            assert_eq!(hash, host.hex(), "{name} on the phone {when}");
        }
        let o = self.ssh("root", "root", &[], "ls -a /mobix");
        assert!(!text(&o).contains(".receiving"), "nothing half-received is left {when}: {}", text(&o));
    }

    /// Waits for the phone's ssh to answer alice (with `extra` ssh options); returns how
    /// long that took.
    fn wait_for_login(&self, log: &Path, extra: &[&str]) -> Duration {
        let t0 = Instant::now();
        loop {
            let o = self.ssh("alice", "alice", extra, "true");
            if o.status.success() {
                return t0.elapsed();
            }
            let so_far = fs::read_to_string(log).unwrap_or_default();
            assert!(
                t0.elapsed() < Duration::from_secs(300),
                "no ssh login within 300 s: {}\n--- console:\n{}",
                String::from_utf8_lossy(&o.stderr),
                &so_far[so_far.len().saturating_sub(4000)..]
            );
            std::thread::sleep(Duration::from_secs(2));
        }
    }
}

fn text(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn log_in_over_ssh_and_keep_the_data_across_power_cycles_and_generations() {
    let _one = phone();
    let mut story = Story::new("log_in_over_ssh");
    let t = tempfile::tempdir().unwrap();
    // With a mount point of its own (as NixOS's fileSystems).
    let scratch = "filesystems:\n  - { mount_point: /srv/scratch, device: tmpfs, type: tmpfs, options: [size=16m] }\n";
    let (phone, alice) = Phone::with_config(t.path(), scratch);
    let (repo, keys) = (phone.repo.clone(), phone.keys.clone());
    ssh_keygen(&keys, "stranger");
    // Root logs in with a key of its own: `mobix deploy` needs it.
    let root = ssh_keygen(&keys, "root");
    // Two tries for a trial rather than three: each try of a failing systemd generation is a
    // boot of half a minute; counting over three tries is the fallback scenarios' (fallback::).
    let with_root = |extra: &str| {
        config(&alice, &format!("boot: {{ tries: 2 }}\n{extra}"))
            .replace("users:\n", &format!("users:\n  root:\n    authorized_keys: [\"{root}\"]\n"))
    };
    fs::write(repo.join("pocket.yaml"), with_root(scratch)).unwrap();
    // The number of the generation a build made (the shared store numbers them for all
    // the tests that build this device).
    let build = || -> u32 {
        let o = phone.mobix(&["build", "--device", "qemu-aarch64", "--config", "pocket.yaml"]);
        ok(&o);
        let said = String::from_utf8_lossy(&o.stderr);
        assert!(said.contains("--ssh-port 2222`, then `ssh -p 2222 alice@127.0.0.1`"), "how to log in: {said}");
        let n = said.split("new generation ").nth(1).and_then(|r| r.split_whitespace().next());
        n.and_then(|n| n.parse().ok()).unwrap_or_else(|| panic!("no new generation: {said}"))
    };
    let Some(first_generation) = story.step("1 build generation 1", || {
        let first_generation = build();
        let lock: serde_json::Value = serde_json::from_slice(&fs::read(repo.join("mobix.lock")).unwrap()).unwrap();
        assert_eq!(lock["ids"]["users"]["alice"], 1000, "alice's uid is recorded in the lock: {}", lock["ids"]);
        first_generation
    }) else {
        return story.end();
    };

    // First boot: the host key is made; the first login records it.
    let (run, log) = phone.power_on();
    story.log(&log);
    story.step("2 first boot: log in, others refused, write ~/notes", || {
        let first = phone.wait_for_login(&log, &["-o", "StrictHostKeyChecking=accept-new"]);
        eprintln!("first ssh login {:.1}s after power-on", first.as_secs_f64());
        let said = fs::read_to_string(&log).unwrap();
        assert!(said.contains(&format!("`ssh -p {} alice@127.0.0.1`", phone.port)), "the ssh command is printed: {said}");
        let o = phone.ssh(
            "alice",
            "alice",
            &[],
            "id; hostname; systemctl is-system-running --wait; grep -c ' /srv/scratch tmpfs rw,.*size=16384k' /proc/mounts",
        );
        let out = text(&o);
        assert!(o.status.success(), "{out}{}", String::from_utf8_lossy(&o.stderr));
        assert!(out.contains("uid=1000(alice) gid=1000(alice)") && out.contains("(wheel)"), "{out}");
        assert!(out.lines().any(|l| l == "pocket"), "{out}");
        assert!(out.lines().any(|l| l == "running"), "systemd says running: {out}");
        assert_eq!(out.lines().last(), Some("1"), "the mount point is mounted: {out}");
        // Refused: another key, a password, root.
        for (key, user, extra) in [
            ("stranger", "alice", vec![]),
            (
                "alice",
                "alice",
                vec!["-o", "PubkeyAuthentication=no", "-o", "PreferredAuthentications=password,keyboard-interactive"],
            ),
            ("alice", "root", vec![]),
        ] {
            let o = phone.ssh(key, user, &extra, "true");
            let err = String::from_utf8_lossy(&o.stderr);
            assert!(!o.status.success() && err.contains("Permission denied"), "{user} with {key} {extra:?}: {err}");
        }
        let o = phone.ssh("alice", "alice", &[], "echo kept > ~/notes && sync");
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    });

    phone.power_off(run);

    // A power cycle: same host key (strict checking), same files.
    let look = |boots: usize| {
        let o = phone.ssh(
            "alice",
            "alice",
            &[],
            "cat ~/notes; wc -l < /var/lib/hello.log; systemctl is-system-running --wait",
        );
        let out = text(&o);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines, ["kept", &boots.to_string(), "running"], "file, hello's log ({boots} boots), state");
    };
    let (run, log) = phone.power_on();
    story.log(&log);
    story.step("3 a power cycle keeps the host key and the files", || {
        phone.wait_for_login(&log, &[]);
        look(2);
    });

    // A new generation (a package added) deployed over ssh, without flashing: it boots,
    // the package runs, the phone keeps its key and its data.
    let Some(second) = story.step("4 deploy a package: it boots good, the data stays", || {
        fs::write(repo.join("pocket.yaml"), with_root("packages: [tree]\n")).unwrap();
        let (o, report) = phone.deploy(&[]);
        assert!(o.status.success(), "deploy: {}", String::from_utf8_lossy(&o.stderr));
        let second = report["plan"]["generation"].as_u64().unwrap() as u32;
        assert!(second > first_generation, "a new generation: {report}");
        assert_eq!(report["outcome"]["outcome"], "good", "{report}");
        assert!(String::from_utf8_lossy(&o.stderr).contains(&format!("generation {second} booted and is good")));
        look(3);
        let o = phone.ssh("alice", "alice", &[], "tree --version");
        assert!(o.status.success() && text(&o).starts_with("tree v"), "{}", String::from_utf8_lossy(&o.stderr));
        second
    }) else {
        return story.end();
    };

    // A generation whose health check fails: the phone falls back to the one before by
    // itself, and the deploy says so and fails.
    story.step("5 deploy a failing health check: the phone falls back by itself", || {
        let doomed = with_root("packages: [tree]\n")
            .replace("ssh.service] }\n", "ssh.service] }\n  - { name: doomed, command: [/bin/false] }\n");
        fs::write(repo.join("pocket.yaml"), doomed).unwrap();
        let (o, report) = phone.deploy(&[]);
        let said = String::from_utf8_lossy(&o.stderr);
        let third = report["plan"]["generation"].as_u64().unwrap();
        assert_eq!(o.status.code(), Some(1), "{said}");
        assert!(
            said.contains(&format!("generation {third} failed (health check doomed failed (exit status: 1)"))
                && said.contains(&format!("the phone fell back to generation {second} by itself")),
            "{said}"
        );
        assert_eq!(phone.root_status()["booted"]["generation"], second, "the phone runs generation {second}");
    });

    // What the phone must refuse is refused before anything is built: another
    // `system.size` (the boot-state record would move) and too little room on its system
    // filesystem. Measured: none of the store paths `mobix build --dry-run` says this system
    // would build appears in the store.
    // (Host names of this run's own, so that no earlier run's CI cache holds these systems.)
    story.step("6 another system.size and a full phone are refused before anything is built", || {
        let nonce = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64;
        let named =
            |n: &str| with_root("packages: [tree]\n").replace("hostname: pocket", &format!("hostname: {n}{nonce}"));
        let resized =
            named("resized").replace("  qemu: { smp: 2 }\n", "  qemu: { smp: 2 }\n  system: { size: 768MiB }\n");
        fs::write(repo.join("pocket.yaml"), resized).unwrap();
        let unbuilt = phone.planned_builds();
        assert!(unbuilt.iter().any(|p| p.ends_with("-etc")), "a new host name needs a new /etc: {unbuilt:?}");
        let (o, _) = phone.deploy(&[]);
        let said = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{said}");
        assert!(said.contains("the phone's system image is 1024 MiB and this system's is 768 MiB"), "{said}");
        phone.assert_none_built(&unbuilt, &said);

        // The phone's system filesystem filled to below the room any deploy needs.
        fs::write(repo.join("pocket.yaml"), named("full")).unwrap();
        let unbuilt = phone.planned_builds();
        assert!(unbuilt.iter().any(|p| p.ends_with("-etc")), "a new hostname needs a new /etc: {unbuilt:?}");
        let fill = "mount -o remount,rw /mobix && fallocate -l $(( $(stat -f -c '%a*%S' /mobix) - (2 << 20) )) \
                    /mobix/.test-fill && mount -o remount,ro /mobix";
        let o = phone.ssh("root", "root", &[], fill);
        assert!(o.status.success(), "filling the phone: {}", String::from_utf8_lossy(&o.stderr));
        let (o, _) = phone.deploy(&[]);
        let said = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{said}");
        assert!(said.contains("MiB free, too little for 0 MiB of new store paths"), "{said}");
        phone.assert_none_built(&unbuilt, &said);
        let o = phone.ssh(
            "root",
            "root",
            &[],
            "mount -o remount,rw /mobix && rm /mobix/.test-fill && mount -o remount,ro /mobix",
        );
        assert!(o.status.success(), "emptying the phone: {}", String::from_utf8_lossy(&o.stderr));
        assert_eq!(phone.root_status()["booted"]["generation"], second, "the phone runs generation {second}");
    });

    // The connection cut at points all through the stream: the phone keeps booting
    // generation `second`, every path in its store is whole, and a generation is either
    // not there at all or there with its trial.
    // (A host name of this run's own: the store is shared with earlier runs, whose
    // generations the phone's system image carries.)
    story.step("7 deploys cut mid-stream leave the phone whole; a reboot boots what it should", || {
        let nonce = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64;
        let cut_config =
            with_root("packages: [tree, file]\n").replace("hostname: pocket", &format!("hostname: pocket{nonce}"));
        fs::write(repo.join("pocket.yaml"), cut_config).unwrap();
        let (o, dry) = phone.deploy(&["--dry-run"]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let fourth = dry["plan"]["generation"].as_u64().unwrap();
        let sent: Vec<String> = dry["plan"]["send"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p[0].as_str().unwrap().rsplit('/').next().unwrap().to_string())
            .collect();
        let paths = sent.len();
        assert!(paths >= 2, "at least /etc and the toplevel: {dry}");
        let before = phone.root_status();
        let t0 = Instant::now();
        let mut seed = nonce;
        eprintln!("kill points from seed {seed}");
        for i in 0..10 {
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            let after_lines = i % paths;
            let delay = Duration::from_millis((seed >> 33) % 200);
            let cut = phone.deploy_cut(after_lines, delay);
            let now = phone.root_status();
            assert_eq!(now["boot_id"], before["boot_id"], "no reboot at cut {i} ({cut})");
            let has = now["generations"].as_array().unwrap().iter().any(|g| g["generation"] == fourth);
            let now: mobix_bootctl::contract::PhoneStatus = serde_json::from_value(now.clone()).unwrap();
            let rec = now.boot_record().expect("a valid record");
            let entry = rec.entries.iter().find(|e| u64::from(e.generation) == fourth);
            assert_eq!(has, entry.is_some(), "entry and record agree at cut {i} ({cut})");
            assert_eq!(
                rec.default_gen as u64,
                if has { fourth } else { second as u64 },
                "the default at cut {i} ({cut})"
            );
            phone.store_is_whole(&sent, &format!("cut {i} ({cut})"));
            eprintln!("cut {i}: {cut}; checked at {:.0}s", t0.elapsed().as_secs_f64());
        }
        eprintln!("10 cut deploys in {:.0}s", t0.elapsed().as_secs_f64());
        // Rebooted, the phone boots what it booted before (or, when a cut came after the end
        // of the stream, the new trial).
        let committed =
            phone.root_status()["generations"].as_array().unwrap().iter().any(|g| g["generation"] == fourth);
        let _ = phone.ssh("root", "root", &[], "systemctl reboot");
        std::thread::sleep(Duration::from_secs(5));
        phone.wait_for_login(&log, &[]);
        let after = phone.root_status();
        assert_ne!(after["boot_id"], before["boot_id"]);
        assert_eq!(after["booted"]["generation"], if committed { fourth } else { second as u64 }, "{after}");
    });

    // A new boot image (a kernel argument added) deployed over ssh: the phone writes it to
    // its inactive slot and makes that slot active; the bootloader tries it, the
    // generation proves itself, the data stays.
    let Some(fifth) = story.step("8 deploy a new boot image to slot b", || {
        fs::write(repo.join("pocket.yaml"), with_root("packages: [tree]\ncmdline: [mobix.deployed=1]\n")).unwrap();
        let (o, report) = phone.deploy(&[]);
        let said = String::from_utf8_lossy(&o.stderr);
        assert!(o.status.success(), "deploy of a boot image: {said}");
        assert_eq!(report["boot_image"]["slot"], "b", "{report}");
        let fifth = report["plan"]["generation"].as_u64().unwrap();
        assert!(said.contains(&format!("generation {fifth} booted and is good")), "{said}");
        let o = phone.ssh("alice", "alice", &[], "cat ~/notes /proc/cmdline");
        let out = text(&o);
        assert!(
            out.starts_with("kept\n") && out.contains("mobix.deployed=1") && out.contains("androidboot.slot_suffix=_b"),
            "slot b's boot image runs, the data is kept: {out}{}",
            String::from_utf8_lossy(&o.stderr)
        );
        fifth
    }) else {
        return story.end();
    };

    // A boot image whose kernel panics, to slot a: the bootloader's tries run out, it
    // returns to slot b, stage-1 marks the generation bad, and the deploy says so.
    let Some((sixth, failed_toplevel)) = story.step("9 deploy a panicking kernel: back to slot b", || {
        fs::write(repo.join("pocket.yaml"), with_root("packages: [tree]\ncmdline: [rdinit=/no-such-init, panic=1]\n")).unwrap();
        let (o, report) = phone.deploy(&[]);
        let said = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{said}");
        assert_eq!(report["boot_image"]["slot"], "a", "{report}");
        let sixth = report["plan"]["generation"].as_u64().unwrap();
        assert!(
            said.contains(&format!(
                "generation {sixth} failed (its kernel did not come up); the phone fell back to generation {fifth} by itself"
            )),
            "{said}"
        );
        let o = phone.ssh("alice", "alice", &[], "cat ~/notes /proc/cmdline");
        let out = text(&o);
        assert!(out.starts_with("kept\n") && out.contains("androidboot.slot_suffix=_b"), "back on slot b: {out}");
        assert_eq!(phone.root_status()["booted"]["generation"], fifth);
        let failed_toplevel = report["plan"]["toplevel"].as_str().unwrap().rsplit('/').next().unwrap().to_string();
        (sixth, failed_toplevel)
    }) else {
        return story.end();
    };

    // Garbage: keeping one generation, everything but the booted one goes, the failed
    // one's own paths with it; the phone refuses to drop what it boots, and boots as before.
    story.step("10 gc keeps one generation, refuses the booted one, boots after", || {
        let o = phone.ssh(
            "root",
            "root",
            &[],
            &format!("printf 'generation {fifth}\\nend\\n' | /run/current-system/init gc"),
        );
        assert!(!o.status.success() && String::from_utf8_lossy(&o.stderr).contains("it stays"), "{}", text(&o));
        let (o, dry) = phone.deploy(&["--gc", "--keep", "1", "--dry-run"]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        assert_eq!(dry["gc"]["keep_generations"], serde_json::json!([fifth]), "{dry}");
        assert!(dry["gc"]["drop_generations"].as_array().unwrap().contains(&sixth.into()), "{dry}");
        let gone: Vec<String> =
            dry["gc"]["remove"].as_array().unwrap().iter().map(|p| p.as_str().unwrap().to_string()).collect();
        assert!(gone.contains(&failed_toplevel), "{dry}");
        assert!(phone.root_status()["generations"].as_array().unwrap().len() > 1, "a dry run changes nothing");
        let (o, _) = phone.deploy(&["--gc", "--keep", "1"]);
        assert!(o.status.success(), "gc: {}", String::from_utf8_lossy(&o.stderr));
        let now = phone.root_status();
        let gens: Vec<u64> =
            now["generations"].as_array().unwrap().iter().map(|g| g["generation"].as_u64().unwrap()).collect();
        assert_eq!(gens, [fifth], "{now}");
        let store: Vec<&str> = now["store"].as_array().unwrap().iter().map(|n| n.as_str().unwrap()).collect();
        assert!(gone.iter().all(|g| !store.contains(&g.as_str())), "removed: {gone:?}; left: {store:?}");
        phone.store_is_whole(&store.iter().map(|s| s.to_string()).collect::<Vec<_>>(), "after gc");
        let _ = phone.ssh("root", "root", &[], "systemctl reboot");
        std::thread::sleep(Duration::from_secs(5));
        phone.wait_for_login(&log, &[]);
        assert_eq!(phone.root_status()["booted"]["generation"], fifth, "the kept generation boots after gc");
    });

    phone.power_off(run);

    // `mobix run` boots what was built, with the config it was built with.
    fs::write(repo.join("pocket.yaml"), with_root(scratch)).unwrap();
    // `--fresh`: an empty phone, with a new host key and no data.
    let (run, log) = phone.power_on_with(&["--fresh"]);
    story.log(&log);
    story.step("11 mobix run --fresh: an empty phone with a new host key", || {
        let fresh_hosts = format!("UserKnownHostsFile={}", keys.join("known_hosts.fresh").display());
        let new_key = ["-o", "StrictHostKeyChecking=accept-new", "-o", &fresh_hosts];
        phone.wait_for_login(&log, &new_key);
        let o = phone.ssh("alice", "alice", &new_key, "ls ~; wc -l < /var/lib/hello.log");
        assert_eq!(text(&o).trim(), "1", "nothing kept: {}", String::from_utf8_lossy(&o.stderr));
        let o = phone.ssh("alice", "alice", &[], "true");
        assert!(String::from_utf8_lossy(&o.stderr).contains("HOST IDENTIFICATION HAS CHANGED"), "a new host key");
    });

    phone.power_off(run);
    story.end();
}

/// The device keys of a phone whose store lives on userdata (as the real phones' does),
/// with the state beside it: the 1 GiB system image, then 256 MiB of state; and, as many
/// older phones, no A/B slots.
pub(crate) const STORE_ON_USERDATA: &str = "  storage:\n    partitions:\n      - { name: misc, size: 1MiB }\n\
     \x20     - { name: boot, size: 64MiB }\n      - { name: userdata, size: 1280MiB }\n\
     \x20 system: { partition: userdata, size: 1GiB }\n";

/// `cfg` with root logging in by the key `root` (as `mobix deploy` needs).
fn add_root(cfg: &str, root: &str) -> String {
    cfg.replace("users:\n", &format!("users:\n  root:\n    authorized_keys: [\"{root}\"]\n"))
}

/// The first byte of a GPT partition of a disk image, from `sgdisk -p`.
fn partition_start(disk: &Path, name: &str) -> u64 {
    let o = Command::new("sgdisk").arg("-p").arg(disk).output().unwrap();
    let table = text(&o);
    let line = table.lines().find(|l| l.split_whitespace().last() == Some(name)).unwrap_or_else(|| panic!("{table}"));
    line.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap() * 512
}

/// Phones whose store is on userdata keep their state after the system image: the data
/// survives a new generation's system image written over the first (as flashing it
/// does), and a state filesystem smaller than its room (here shrunk on the host) grows to
/// fill it on the next boot, keeping its files.
#[test]
fn the_state_beside_the_store_survives_a_new_system_image_and_grows() {
    let _one = phone();
    let t = tempfile::tempdir().unwrap();
    let (phone, alice) = Phone::with_config(t.path(), STORE_ON_USERDATA);
    let repo = phone.repo.clone();
    let root = ssh_keygen(&phone.keys, "root");
    let pocket = |extra: &str| add_root(&config(&alice, &format!("{STORE_ON_USERDATA}{extra}")), &root);
    fs::write(repo.join("pocket.yaml"), pocket("")).unwrap();
    ok(&phone.mobix(&["build", "--device", "qemu-aarch64", "--config", "pocket.yaml"]));
    let state_mib = "df -m /mobix-state | tail -n 1 | awk '{ print $2 }'";

    let (run, log) = phone.power_on();
    phone.wait_for_login(&log, &["-o", "StrictHostKeyChecking=accept-new"]);
    let o = phone.ssh("alice", "alice", &[], &format!("echo kept > ~/notes && sync && {state_mib}"));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let mib: u64 = text(&o).trim().parse().unwrap();
    assert!((200..=256).contains(&mib), "the state fills the 256 MiB after the image: {mib} MiB");
    let said = fs::read_to_string(&log).unwrap();
    assert!(said.contains("first boot: making the state filesystem on /dev/loop"), "{said}");
    phone.power_off(run);

    // A new generation: `mobix run` writes its system image over the first.
    fs::write(repo.join("pocket.yaml"), pocket("packages: [tree]\n")).unwrap();
    ok(&phone.mobix(&["build", "--device", "qemu-aarch64", "--config", "pocket.yaml"]));
    // The state filesystem shrunk to 96 MiB on the host (as if flashed small): it grows.
    let disk = phone.out.join("vm/disk.img");
    let at = partition_start(&disk, "userdata") + (1 << 30);
    let state = t.path().join("state.img");
    let st = Command::new("dd")
        .arg(format!("if={}", disk.display()))
        .arg(format!("of={}", state.display()))
        .args(["bs=1M", "count=256", "status=none", "iflag=skip_bytes"])
        .arg(format!("skip={at}"))
        .status()
        .unwrap();
    assert!(st.success());
    // e2fsck replays the journal of the powered-off phone (exit 1: it corrected something).
    let o = Command::new("e2fsck").arg("-fy").arg(&state).output().unwrap();
    assert!(o.status.code().is_some_and(|c| c <= 1), "e2fsck: {}", text(&o));
    let o = Command::new("resize2fs").arg(&state).arg("96M").output().unwrap();
    assert!(o.status.success(), "resize2fs: {}", String::from_utf8_lossy(&o.stderr));
    let st = Command::new("dd")
        .arg(format!("if={}", state.display()))
        .arg(format!("of={}", disk.display()))
        .args(["bs=1M", "count=96", "status=none", "conv=notrunc", "oflag=seek_bytes"])
        .arg(format!("seek={at}"))
        .status()
        .unwrap();
    assert!(st.success());
    let (run, log) = phone.power_on();
    phone.wait_for_login(&log, &[]);
    let o = phone.ssh("alice", "alice", &[], &format!("cat ~/notes; tree --version | cut -c1-6; {state_mib}"));
    let out = text(&o);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[..2], ["kept", "tree v"], "the data and the new generation: {out}");
    let mib: u64 = lines[2].parse().unwrap();
    assert!(mib >= 200, "the state filesystem grew back: {mib} MiB");
    let said = fs::read_to_string(&log).unwrap();
    assert!(said.contains("growing the state filesystem on /dev/loop0 from 96 MiB to 256 MiB"), "{said}");

    // Without A/B slots a deploy that changes the boot image is refused, saying why, unless
    // the owner accepts writing it over the running one.
    fs::write(repo.join("pocket.yaml"), pocket("packages: [tree]\ncmdline: [mobix.in-place=1]\n")).unwrap();
    let (o, _) = phone.deploy(&[]);
    let said = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{said}");
    assert!(said.contains("has no A/B slots") && said.contains("--kernel-in-place"), "{said}");
    let (o, report) = phone.deploy(&["--kernel-in-place"]);
    let said = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "deploy --kernel-in-place: {said}");
    assert_eq!(report["boot_image"]["slot"], serde_json::Value::Null, "{report}");
    assert_eq!(report["outcome"]["outcome"], "good", "{report}");
    let o = phone.ssh("alice", "alice", &[], "cat ~/notes /proc/cmdline");
    let out = text(&o);
    assert!(out.starts_with("kept\n") && out.contains("mobix.in-place=1"), "the new boot image runs: {out}");
    phone.power_off(run);
}

/// Run by a health check on the phone: the host's end of the USB link into a namespace of
/// its own, an address from the phone's DHCP server, an ssh login over USB. (`/bin/ip`:
/// busybox's sh prefers its own applets, and its `ip` has no `netns`.) A host end that got
/// no answer in 45 s is unplugged and plugged in again (the host's USB device deauthorised
/// and authorised): in about one full test run in four, a first boot's host end got no
/// answer for 150 s, through three rounds of taking it down and up, while the same
/// generation's later boots got a lease at once. Both ends' status and packet counters are
/// printed then, to tell which end lost the packets.
const USB_CHECK: &str = r#"set -e
# The host's end: cdc_ncm's interface, once udev is done with it (renamed), into its own
# namespace.
host_end() {
  i=0
  until ls /sys/bus/usb/drivers/cdc_ncm/*/net >/dev/null 2>&1; do
    i=$((i+1)); [ $i -lt 300 ] || { echo "no host-side USB network interface"; exit 1; }; sleep 0.2
  done
  udevadm settle --timeout=30 || true
  IF=$(basename /sys/bus/usb/drivers/cdc_ncm/*/net/*)
  /bin/ip link set "$IF" netns host
  /bin/ip netns exec host /bin/ip link set "$IF" up
}
/bin/ip netns add host
/bin/ip netns exec host /bin/ip link set lo up
host_end
lease=
for round in 1 2 3; do
  /bin/ip netns exec host busybox udhcpc -i "$IF" -n -q -t 15 -s /bin/true > /run/udhcpc.log 2>&1 || true
  cat /run/udhcpc.log
  if busybox grep -q "lease of 172.16.42.2 obtained" /run/udhcpc.log; then lease=1; break; fi
  echo "no DHCP lease of 172.16.42.2 in round $round"
  networkctl --no-pager status usb0 -n 20 || true
  # Which end lost the packets: the counters and flags of both ends.
  /bin/ip -s link show usb0 || true
  /bin/ip netns exec host /bin/ip -s link show "$IF" || true
  [ $round -lt 3 ] || break
  # As a user would plug the cable in again: the host forgets the device and finds it anew.
  dev=$(dirname "$(busybox readlink -f /sys/bus/usb/drivers/cdc_ncm/*:1.0)")
  echo 0 > "$dev/authorized"; sleep 1; echo 1 > "$dev/authorized"
  host_end
done
[ -n "$lease" ] || { echo "no DHCP lease of 172.16.42.2"; exit 1; }
/bin/ip netns exec host /bin/ip addr add 172.16.42.2/24 dev "$IF"
install -m 600 /etc/usbtest/key /run/usbtest-key
timeout 100 /bin/ip netns exec host ssh -i /run/usbtest-key -o StrictHostKeyChecking=no \
  -o UserKnownHostsFile=/dev/null -o BatchMode=yes -o GSSAPIAuthentication=no -o ConnectTimeout=30 \
  alice@172.16.42.1 'echo "USB-LOGIN $(id -un)@$(hostname)"' || { echo "ssh over USB failed ($?)"; exit 1; }
"#;

/// A tree whose `usb.yaml` is the README's config with USB networking: the gadget's
/// modules and dummy_hcd in stage-1 (the phone's kernel is also the USB host), cdc_ncm for
/// the host's end, iproute2, and [`USB_CHECK`] as a health check.
fn usb_tree(t: &Path) -> PathBuf {
    let repo = t.join("tree");
    repo_copy(&repo);
    let alice = ssh_keygen(t, "alice");
    // The private key reaches the phone in an overlay (a test key: the store is world-readable).
    let files = repo.join("overlays/usbtest/files/etc");
    fs::create_dir_all(files.join("usbtest")).unwrap();
    fs::copy(t.join("alice"), files.join("usbtest/key")).unwrap();
    // The host's end lives in this same kernel: networkd must leave it alone (its DHCP
    // client would take the one address the phone hands out).
    fs::create_dir_all(files.join("systemd/network")).unwrap();
    fs::write(
        files.join("systemd/network/10-usb-host-end.network"),
        "[Match]\nDriver=cdc_ncm\n\n[Link]\nUnmanaged=yes\n",
    )
    .unwrap();
    let check = serde_json::to_string(USB_CHECK).unwrap();
    let extra = format!(
        "overlays: [usbtest]\npackages: [iproute2]\n\
         health_checks:\n  - {{ name: usb, command: [/bin/sh, -c, {check}], timeout: 260 }}\n\
         device:\n  qemu: {{ smp: 2 }}\n  usb_network: {{}}\n\
         \x20 stage1: {{ modules: [virtio_pci, virtio_mmio, virtio_blk, ext4, virtio_input, evdev, dummy_hcd, usb_f_ncm] }}\n\
         \x20 kernel: {{ modules: [virtio_net, virtio-rng, virtio_console, virtio_input, erofs, vfat, cdc_ncm] }}\n"
    );
    // The README's config without its own health check and device keys (given above).
    let base = config(&alice, "");
    let base = &base[..base.find("health_checks:").unwrap()];
    fs::write(repo.join("usb.yaml"), format!("{base}{extra}")).unwrap();
    repo
}

/// Scenario s0 on the USB system: generation 1 reaches boot-complete only when its USB check
/// passes, then shuts down cleanly. (It ran s2 before, whose failing generation 2 cost five
/// more systemd boots; a failing health check falling back under systemd is shown by the
/// deploy of `log_in_over_ssh…` above.)
#[test]
fn usb_networking_works_under_systemd() {
    let _one = phone();
    let t = tempfile::tempdir().unwrap();
    let repo = usb_tree(t.path());
    let (store, out) = (store(), t.path().join("out"));
    let (s, o) = (store.to_str().unwrap(), out.to_str().unwrap());
    let args = ["test", "--device", "qemu-aarch64", "--config", "usb.yaml", "--scenario", "s0", "--json"];
    let run = mobix_in(&repo, &[&args[..], &["--store", s, "--out", o]].concat());
    if !run.status.success() {
        // What the checks and mobix's programs said on the console, to tell why.
        let log = fs::read_to_string(out.join("scenario-s0/serial.log")).unwrap_or_default();
        let said: Vec<&str> = log
            .lines()
            .filter(|l| {
                l.starts_with("# power cycle") || l.contains("init[") || l.contains("usb0") || l.contains("networkd")
            })
            .collect();
        let _ = fs::copy(out.join("scenario-s0/serial.log"), std::env::temp_dir().join("mobix-usb-failed-serial.log"));
        eprintln!("the phone's programs said:\n{}", said.join("\n"));
    }
    let report: serde_json::Value = serde_json::from_str(&ok(&run)).unwrap();
    let log = fs::read_to_string(report["serial_log"].as_str().unwrap()).unwrap();
    let tail = &log[log.len().saturating_sub(6000)..];
    assert_eq!(report["passed"], true, "{report}");
    assert!(log.contains("systemd[1]: systemd 252"), "the generation ran systemd");
    assert!(log.contains("Stopped target") && !log.contains("Failed unmounting"), "clean shutdowns: {tail}");
    assert!(log.contains("mobix: USB network on usb0: this phone is 172.16.42.1"), "stage-1 made the gadget: {tail}");
    assert!(log.contains("lease of 172.16.42.2 obtained"), "the host's end got its address by DHCP: {tail}");
    assert!(log.contains("USB-LOGIN alice@pocket"), "ssh over USB: {tail}");
    // Where the boot's time went, by the phone's clock: systemd's five slowest units (the
    // root's `-.mount` among the names asked about once made systemctl refuse them all).
    let times = &report["boots"][0]["times"];
    let slowest: Vec<&str> = times["slowest"].as_array().unwrap().iter().map(|u| u[0].as_str().unwrap()).collect();
    assert_eq!(slowest.len(), 5, "{times}");
    assert!(slowest.iter().all(|u| [".service", ".socket", ".mount"].iter().any(|k| u.ends_with(k))), "{times}");
    assert!(times["complete_ms"].as_u64() > times["stage1_ms"].as_u64(), "{times}");
}
