//! Helpers shared by the three test binaries (`fast`, `phone`, `systemd`): running mobix,
//! one emulated phone at a time, processes killed by group, ports, keys, stores.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};
use std::sync::{Condvar, Mutex};
use std::thread::ThreadId;

/// The mobix binary, as every test runs it. `RUSTC_BOOTSTRAP` (set by `scripts/test` only so
/// that libtest reports each test's time) stays out of the builds mobix starts; `MOBIX_TEST`
/// names the test, so that `scripts/test` counts the phones each test powers on.
pub fn mobix_cmd() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_mobix"));
    c.env_remove("RUSTC_BOOTSTRAP");
    named(&mut c);
    c
}

/// Names the running test in `MOBIX_TEST` for the programs `cmd` starts (libtest names each
/// test's thread after the test).
pub fn named(cmd: &mut Command) -> &mut Command {
    if let Some(name) = std::thread::current().name().filter(|n| *n != "main") {
        cmd.env("MOBIX_TEST", name);
    }
    cmd
}

/// The phone a mobix command line powers on (`mobix test`, `mobix run`), if any: a small one
/// of one emulated CPU (the qemu-aarch64 profile's), or a big one where the system config
/// asks for more (`device: qemu: { smp: 2 }`, as the systemd tests' configs do).
fn powers_on(cmd: &Command) -> Option<fn() -> PhoneGuard> {
    if !cmd.get_args().any(|a| a == "test" || a == "run") {
        return None;
    }
    Some(if emulated_cpus(cmd) >= BIG { phone } else { small_phone })
}

/// The emulated CPUs the system config of `cmd` asks for: `--config FILE`, else the config
/// the build in `--out DIR` used (its manifest says), else the profile's one.
fn emulated_cpus(cmd: &Command) -> u32 {
    let args: Vec<String> = cmd.get_args().map(|a| a.to_string_lossy().into_owned()).collect();
    let after = |flag: &str| args.iter().position(|a| a == flag).and_then(|i| args.get(i + 1));
    let here = |p: &str| cmd.get_current_dir().map_or_else(|| PathBuf::from(p), |d| d.join(p));
    let config = after("--config").map(|c| here(c)).or_else(|| {
        let manifest = std::fs::read(here(after("--out")?).join("manifest.json")).ok()?;
        let m: serde_json::Value = serde_json::from_slice(&manifest).ok()?;
        m["config"]["path"].as_str().map(PathBuf::from)
    });
    let text = config.and_then(|c| std::fs::read_to_string(c).ok()).unwrap_or_default();
    text.split("smp:")
        .nth(1)
        .and_then(|rest| rest.trim_start().split(|c: char| !c.is_ascii_digit()).next()?.parse().ok())
        .unwrap_or(1)
}

/// Runs a mobix command to its end, echoing its stderr into the test's output; a command
/// that powers on an emulated phone waits for its emulated CPUs first ([`phone`], [`small_phone`]).
pub fn run(cmd: &mut Command) -> Output {
    let _phone = powers_on(cmd).map(|take| take());
    let o = cmd.output().unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    let args: Vec<String> = cmd.get_args().map(|a| a.to_string_lossy().into_owned()).collect();
    eprintln!("$ mobix {}\n{}", args.join(" "), String::from_utf8_lossy(&o.stderr));
    o
}

/// Emulated CPUs handed out to phones, as they take them: the threads that hold phones
/// now, each with the CPUs its phone has, the lock files of those, and how many times the
/// thread took it (re-entrant).
static PHONES: Mutex<Vec<Holder>> = Mutex::new(Vec::new());
/// A thread holding a phone: its CPUs, their lock files, how many times it took them.
type Holder = (ThreadId, u32, Vec<std::fs::File>, usize);
static PHONE_FREE: Condvar = Condvar::new();
/// Emulated CPUs running at once on the machine's two cores: a phone of two CPUs beside a
/// small phone of one, or three small ones, but never two phones of two CPUs.
const CPUS: u32 = 3;
/// The CPUs of a phone that is not small (the systemd phones).
const BIG: u32 = 2;

/// Held while an emulated phone runs: [`phone`] takes two CPUs (two guests of two CPUs on a
/// 2-core machine slow each other past their boot and health-check timeouts: the systemd
/// phones), [`small_phone`] one (a phone of one emulated CPU, the profile's default, whose
/// boots fit their timeouts of minutes beside another phone). Builds need none and run beside. Re-entrant: a
/// test holding a phone may run `mobix test` on the same thread.
///
/// The CPUs are the run's, not one binary's: each is also a lock file under
/// `target/test-cores/`, so that `scripts/test` runs the phone and systemd binaries side by
/// side and their phones together stay within [`CPUS`].
pub struct PhoneGuard;

pub fn phone() -> PhoneGuard {
    take(BIG)
}

pub fn small_phone() -> PhoneGuard {
    take(1)
}

fn take(cores: u32) -> PhoneGuard {
    let me = std::thread::current().id();
    let mut s = PHONES.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(h) = s.iter_mut().find(|h| h.0 == me) {
        h.3 += 1;
        return PhoneGuard;
    }
    while s.iter().map(|h| h.1).sum::<u32>() + cores > CPUS {
        s = PHONE_FREE.wait(s).unwrap_or_else(|e| e.into_inner());
    }
    // Counted here before the files are locked, so that no other thread of this process
    // asks for a core this one is about to wait for.
    s.push((me, cores, Vec::new(), 1));
    drop(s);
    let files = lock_cores(cores);
    let mut s = PHONES.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(h) = s.iter_mut().find(|h| h.0 == me) {
        h.2 = files;
    }
    PhoneGuard
}

/// Locks `cpus` of the run's CPU files (flock, released when the files close). A big phone
/// first takes the file `big` (so that big phones queue), then the first [`BIG`] CPU files
/// in order; while one holds `big` (waiting or running), small phones take only the last
/// file, so that a stream of small phones cannot keep a waiting big one from two CPUs.
/// Otherwise a small phone takes any free file, the last one first.
fn lock_cores(cpus: u32) -> Vec<std::fs::File> {
    use std::os::fd::AsRawFd;
    let dir = repo().join("target/test-cores");
    std::fs::create_dir_all(&dir).unwrap();
    let open =
        |name: &str| std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(dir.join(name)).unwrap();
    let flock = |f: &std::fs::File, how: libc::c_int| unsafe { libc::flock(f.as_raw_fd(), how) } == 0;
    let wait = |f: std::fs::File| {
        assert!(flock(&f, libc::LOCK_EX), "locking {}: {}", dir.display(), std::io::Error::last_os_error());
        f
    };
    if cpus == BIG {
        let mut held = vec![wait(open("big"))];
        held.extend((0..BIG).map(|i| wait(open(&i.to_string()))));
        return held;
    }
    let big = open("big");
    loop {
        let big_wanted = !flock(&big, libc::LOCK_SH | libc::LOCK_NB) || !flock(&big, libc::LOCK_UN);
        // The last file first: the one a big phone never takes.
        for i in (0..CPUS).rev().filter(|i| *i >= BIG || !big_wanted) {
            let f = open(&i.to_string());
            if flock(&f, libc::LOCK_EX | libc::LOCK_NB) {
                return vec![f];
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

impl Drop for PhoneGuard {
    fn drop(&mut self) {
        let me = std::thread::current().id();
        let mut s = PHONES.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(i) = s.iter().position(|h| h.0 == me) {
            s[i].3 -= 1;
            if s[i].3 == 0 {
                s.remove(i); // closes its core files, which unlocks them
                PHONE_FREE.notify_all();
            }
        }
    }
}

/// A child that leads its own process group (`process_group(0)`), killed with all of it
/// (QEMU, ssh, servers) when dropped, also when a test fails.
pub struct Group(pub Child);

impl Group {
    /// Spawns `cmd` leading its own process group, nothing on its stdin, its stdout and
    /// stderr into the file `log` (made anew).
    pub fn spawn_logged(cmd: &mut Command, log: &Path) -> Group {
        use std::os::unix::process::CommandExt;
        let f = std::fs::File::create(log).unwrap();
        let child = cmd
            .stdin(std::process::Stdio::null())
            .stdout(f.try_clone().unwrap())
            .stderr(f)
            .process_group(0)
            .spawn()
            .unwrap();
        Group(child)
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        kill_group(&mut self.0);
    }
}

/// Kills a child's whole process group (it must lead one) and reaps it.
pub fn kill_group(child: &mut Child) {
    // SAFETY: killpg has no memory effects; the child leads its own process group.
    unsafe {
        libc::killpg(child.id() as i32, libc::SIGKILL);
    }
    let _ = child.wait();
}

/// A TCP port on loopback nothing listens on now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// An ed25519 key pair `dir/name` (no passphrase); returns the public key's line.
pub fn ssh_keygen(dir: &Path, name: &str) -> String {
    let comment = format!("{name}@laptop");
    tool(Command::new("ssh-keygen").args(["-q", "-t", "ed25519", "-N", "", "-C", &comment, "-f"]).arg(dir.join(name)));
    std::fs::read_to_string(dir.join(format!("{name}.pub"))).unwrap().trim().to_string()
}

/// Where the mobix binary keeps its download, apt and cargo caches (as `cli` decides it).
pub fn cache_dir() -> PathBuf {
    std::env::var_os("MOBIX_CACHE").map(PathBuf::from).unwrap_or_else(|| {
        let base = std::env::var_os("XDG_CACHE_HOME")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").expect("HOME")).join(".cache"));
        base.join("mobix")
    })
}

/// The configuration of mobix's private arm64 apt root: `APT_CONFIG` for an `apt-cache`
/// that sees what mobix sees, whatever architectures the host has.
pub fn apt_conf() -> PathBuf {
    cache_dir().join("apt/apt.conf")
}

/// Runs a reference tool and returns its stdout and stderr; a failure fails the test with
/// the tool's output.
pub fn tool(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("running {cmd:?}: {e} (run scripts/setup)"));
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
}

/// Copies a directory tree (leaving out `target/`), for tests that edit a copy of the repo.
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dst = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            if e.file_name() != "target" {
                copy_dir(&e.path(), &dst);
            }
        } else {
            std::fs::copy(e.path(), dst).unwrap();
        }
    }
}

/// The names of a store's paths (its `.mobix` state left out), sorted.
pub fn store_names(store: &Path) -> std::collections::BTreeSet<String> {
    std::fs::read_dir(store)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with('.'))
        .collect()
}

/// The store entry whose name ends with `suffix` (`-etc`, `-firmware`).
pub fn store_entry(store: &Path, suffix: &str) -> PathBuf {
    std::fs::read_dir(store)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.to_string_lossy().ends_with(suffix))
        .unwrap_or_else(|| panic!("no store entry *{suffix} in {}", store.display()))
}

/// Runs the mobix binary in `cwd`, echoing its stderr into the test's output.
pub fn mobix_in(cwd: &Path, args: &[&str]) -> Output {
    run(mobix_cmd().args(args).current_dir(cwd))
}

/// A copy of the mobix tree a build needs (devices, init, mobix.lock) in `dest`, to edit.
pub fn repo_copy(dest: &Path) {
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    for d in ["devices", "init"] {
        copy_dir(&repo.join(d), &dest.join(d));
    }
    std::fs::copy(repo.join("mobix.lock"), dest.join("mobix.lock")).unwrap();
}

/// The stdout of a mobix run that must have succeeded (else the test fails with its stderr).
pub fn ok(o: &std::process::Output) -> String {
    assert!(o.status.success(), "mobix failed ({}):\n{}", o.status, String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// The mobix tree these tests run from.
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The system config of the tests that are not about systemd (`init: minimal`), as an
/// absolute path.
pub fn minimal() -> String {
    repo().join("tests/fixtures/systems/minimal.yaml").to_str().unwrap().to_string()
}

/// The store the integration tests share (builds of the same inputs are reused).
pub fn shared_store() -> PathBuf {
    repo().join("target/mobix-test-store")
}

/// Runs mobix with `--repo` this tree and `--store` the shared store, echoing its stderr.
pub fn mobix_shared(args: &[&str]) -> Output {
    run(mobix_cmd().args(args).arg("--repo").arg(repo()).arg("--store").arg(shared_store()))
}

/// `mobix build --device qemu-aarch64 --config CONFIG --out OUT` into the shared store.
pub fn build_shared(config: &Path, out: &Path) -> Output {
    mobix_shared(&[
        "build",
        "--device",
        "qemu-aarch64",
        "--config",
        config.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ])
}

/// A long test on one booted phone, told as numbered steps: a failing step names itself,
/// the story goes on with the next step (so that a failure in step 5 does not hide whether
/// steps 6-11 work), and at the end the test fails listing every failed step, with the
/// phone's serial logs kept under `target/test-report/failed/TEST/`. A step whose result
/// later steps need ends the story when it fails (`let Some(x) = story.step(…) else …`).
pub struct Story {
    test: String,
    failed: Vec<String>,
    logs: Vec<PathBuf>,
}

impl Story {
    pub fn new(test: &str) -> Story {
        Story { test: test.to_string(), failed: Vec::new(), logs: Vec::new() }
    }

    /// A serial log to keep if a step fails.
    pub fn log(&mut self, path: &Path) {
        self.logs.push(path.to_path_buf());
    }

    pub fn step<T>(&mut self, name: &str, f: impl FnOnce() -> T) -> Option<T> {
        eprintln!("\n== step {name}");
        let t0 = std::time::Instant::now();
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
            Ok(v) => {
                eprintln!("== step {name}: passed in {:.0} s", t0.elapsed().as_secs_f64());
                Some(v)
            }
            Err(e) => {
                let why = e
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                eprintln!("== step {name}: FAILED after {:.0} s", t0.elapsed().as_secs_f64());
                self.failed.push(format!("step {name}: {why}"));
                None
            }
        }
    }

    /// Fails the test if a step failed, keeping the serial logs.
    pub fn end(self) {
        if self.failed.is_empty() {
            return;
        }
        let dir = repo().join("target/test-report/failed").join(&self.test);
        let _ = std::fs::create_dir_all(&dir);
        for (i, log) in self.logs.iter().enumerate() {
            let name = log.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            let _ = std::fs::copy(log, dir.join(format!("{i:02}-{name}")));
        }
        panic!(
            "{} of the steps failed (serial logs kept in {}):\n{}",
            self.failed.len(),
            dir.display(),
            self.failed.join("\n")
        );
    }
}
