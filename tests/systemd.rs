//! A system to log in to and keep: the system config of the README (`init: systemd`, a
//! user with a key, ssh, a service, a health check) built and run with `mobix run
//! --ssh-port`, logged into with the OpenSSH client; its host key, /home and the
//! service's log survive a power cycle and a new generation; and under systemd a failing
//! health check falls back by itself (scenario s2).

mod common;
use common::{mobix_in, ok, repo, repo_copy};
use std::fs;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The store these tests share: not the suite's shared store, whose default system would
/// otherwise carry these systemd generations (and flash them in the tests after this one).
fn store() -> PathBuf {
    repo().join("target/mobix-test-store-systemd")
}

/// The config as written, with a real key, and two CPUs for the emulated phone.
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
    fn mobix(&self, args: &[&str]) -> std::process::Output {
        let mut all: Vec<&str> = args.to_vec();
        let (store, out) = (store(), self.out.clone());
        let (s, o) = (store.to_str().unwrap().to_string(), out.to_str().unwrap().to_string());
        all.extend(["--store", &s, "--out", &o]);
        mobix_in(&self.repo, &all)
    }

    /// `mobix run --ssh-port` with nothing on its stdin, in its own process group.
    fn power_on(&self) -> (Child, PathBuf) {
        let log = self.out.join(format!("run-{}.log", Instant::now().elapsed().as_nanos()));
        let f = fs::File::create(&log).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_mobix"))
            .args(["run", "--device", "qemu-aarch64", "--ssh-port", &self.port.to_string(), "--store"])
            .arg(store())
            .arg("--out")
            .arg(&self.out)
            .current_dir(&self.repo)
            .stdin(Stdio::null())
            .stdout(f.try_clone().unwrap())
            .stderr(f)
            .process_group(0)
            .spawn()
            .unwrap();
        (child, log)
    }

    fn power_off(&self, mut child: Child) {
        // SAFETY: the child leads its own process group (QEMU is in it).
        unsafe {
            libc::killpg(child.id() as i32, libc::SIGKILL);
        }
        let _ = child.wait();
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

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn keygen(dir: &Path, name: &str) -> String {
    let st = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", &format!("{name}@laptop"), "-f"])
        .arg(dir.join(name))
        .status()
        .unwrap();
    assert!(st.success());
    fs::read_to_string(dir.join(format!("{name}.pub"))).unwrap().trim().to_string()
}

fn text(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn log_in_over_ssh_and_keep_the_data_across_power_cycles_and_generations() {
    let t = tempfile::tempdir().unwrap();
    let repo = t.path().join("tree");
    repo_copy(&repo);
    let keys = t.path().join("keys");
    fs::create_dir_all(&keys).unwrap();
    let alice = keygen(&keys, "alice");
    keygen(&keys, "stranger");
    fs::write(repo.join("pocket.yaml"), config(&alice, "")).unwrap();
    let phone = Phone { repo: repo.clone(), out: t.path().join("out"), keys: keys.clone(), port: free_port() };
    // The number of the generation a build made (the shared store numbers them for all
    // the tests that build this device).
    let build = || -> u32 {
        let o = phone.mobix(&["build", "--device", "qemu-aarch64", "--config", "pocket.yaml"]);
        ok(&o);
        let said = String::from_utf8_lossy(&o.stderr);
        let n = said.split("new generation ").nth(1).and_then(|r| r.split_whitespace().next());
        n.and_then(|n| n.parse().ok()).unwrap_or_else(|| panic!("no new generation: {said}"))
    };
    let first_generation = build();
    let lock: serde_json::Value = serde_json::from_slice(&fs::read(repo.join("mobix.lock")).unwrap()).unwrap();
    assert_eq!(lock["ids"]["users"]["alice"], 1000, "alice's uid is recorded in the lock: {}", lock["ids"]);

    // First boot: the host key is made; the first login records it.
    let (run, log) = phone.power_on();
    let first = phone.wait_for_login(&log, &["-o", "StrictHostKeyChecking=accept-new"]);
    eprintln!("first ssh login {:.1}s after power-on", first.as_secs_f64());
    let said = fs::read_to_string(&log).unwrap();
    assert!(said.contains(&format!("`ssh -p {} alice@127.0.0.1`", phone.port)), "the ssh command is printed: {said}");
    let o = phone.ssh("alice", "alice", &[], "id; hostname; systemctl is-system-running --wait");
    let out = text(&o);
    assert!(o.status.success(), "{out}{}", String::from_utf8_lossy(&o.stderr));
    assert!(out.contains("uid=1000(alice) gid=1000(alice)") && out.contains("(wheel)"), "{out}");
    assert!(out.lines().any(|l| l == "pocket"), "{out}");
    assert!(out.lines().any(|l| l == "running"), "systemd says running: {out}");
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
    phone.power_off(run);

    // A power cycle: same host key (strict checking), same files.
    let check = |boots: usize| {
        let (run, log) = phone.power_on();
        phone.wait_for_login(&log, &[]);
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
        run
    };
    let run = check(2);
    phone.power_off(run);

    // A new generation (a package added): the phone keeps its key and its data.
    fs::write(repo.join("pocket.yaml"), config(&alice, "packages: [tree]\n")).unwrap();
    assert!(build() > first_generation, "a new generation");
    let run = check(3);
    let o = phone.ssh("alice", "alice", &[], "tree --version");
    assert!(o.status.success() && text(&o).starts_with("tree v"), "{}", String::from_utf8_lossy(&o.stderr));
    phone.power_off(run);
}

#[test]
fn a_failing_health_check_under_systemd_falls_back_by_itself() {
    let t = tempfile::tempdir().unwrap();
    let repo = t.path().join("tree");
    repo_copy(&repo);
    let alice = keygen(t.path(), "alice");
    fs::write(repo.join("pocket.yaml"), config(&alice, "")).unwrap();
    let (store, out) = (store(), t.path().join("out"));
    let o = mobix_in(
        &repo,
        &[
            "test",
            "--device",
            "qemu-aarch64",
            "--config",
            "pocket.yaml",
            "--scenario",
            "s2",
            "--json",
            "--store",
            store.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ],
    );
    let report: serde_json::Value = serde_json::from_str(&ok(&o)).unwrap();
    assert_eq!(report["passed"], true, "{report}");
    let log = fs::read_to_string(report["serial_log"].as_str().unwrap()).unwrap();
    assert!(log.contains("systemd[1]: systemd 252"), "the generations ran systemd");
    assert!(log.contains("HEALTH-FAILED generation=2"), "the check failed as a unit");
}
