//! `mobix deploy`: a new generation onto a running phone over ssh, without flashing.
//!
//! The host asks the phone what it has (`mobix-init phone-status`, as
//! `contract::PhoneStatus`), decides what to send ([`plan`], pure), streams the missing
//! store paths and the generation's entry to `mobix-init receive` through the OpenSSH
//! client with its compression on, reboots the phone and reads the outcome back from the
//! phone's boot-state record ([`judge`], pure). The phone checks every path's content hash
//! and commits the generation only at the stream's end (init/src/deploy.rs), so a cut
//! connection leaves it booting what it booted before.

mod flow;

pub use flow::{collect_garbage, refuse, room, run, BootImage, Options, Report};

use crate::format::bootstate;
use crate::store::{archive, Store, StorePath};
use crate::util::Fail;
use anyhow::{Context, Result};
use mobix_bootctl::contract::{BootSpec, Generation, PhoneStatus, UnlockReply};
use mobix_bootctl::stream::{DeployFrame, GcLine, StoreName, DEPLOY_MAGIC};
use serde::Serialize;
use std::collections::BTreeSet;
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The phone's program, as every generation links it.
const PHONE_INIT: &str = "/run/current-system/init";

/// `ssh://USER@HOST[:PORT]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Target {
    pub user: String,
    pub host: String,
    pub port: Option<u16>,
}

impl Target {
    pub fn parse(s: &str) -> Result<Target> {
        let bad = |why: &str| -> anyhow::Error {
            Fail::new(format!("--to {s:?}: {why}"))
                .hint("write it as ssh://USER@HOST[:PORT], e.g. ssh://root@172.16.42.1")
                .into()
        };
        let rest = s.strip_prefix("ssh://").ok_or_else(|| bad("not an ssh:// address"))?;
        let (user, hostport) =
            rest.split_once('@').ok_or_else(|| bad("no user (the phone's root receives the paths)"))?;
        let hostport = hostport.trim_end_matches('/');
        let (host, port) = match hostport.rsplit_once(':') {
            Some((h, p)) if !h.contains(':') || h.starts_with('[') => (
                h.trim_start_matches('[').trim_end_matches(']'),
                Some(p.parse().map_err(|_| bad("the port is not a number"))?),
            ),
            _ => (hostport, None),
        };
        if user.is_empty() || host.is_empty() || host.contains('/') {
            return Err(bad("no user or host"));
        }
        Ok(Target { user: user.into(), host: host.into(), port })
    }
}

/// How to reach the phone: the system's OpenSSH client with these settings.
#[derive(Debug, Clone)]
pub struct Ssh {
    pub target: Target,
    pub identity: Option<std::path::PathBuf>,
    /// `-o` options, given first (ssh keeps the first value it sees).
    pub options: Vec<String>,
}

impl Ssh {
    pub fn command(&self, remote: &str) -> Command {
        self.command_with(remote, false)
    }

    /// With `compress`, OpenSSH compresses the session (zlib).
    fn command_with(&self, remote: &str, compress: bool) -> Command {
        let mut c = Command::new("ssh");
        if compress {
            c.arg("-C");
        }
        for o in &self.options {
            c.arg("-o").arg(o);
        }
        c.args([
            "-o",
            "BatchMode=yes",
            "-o",
            "ConnectTimeout=10",
            "-o",
            "ServerAliveInterval=5",
            "-o",
            "ServerAliveCountMax=3",
        ]);
        if let Some(i) = &self.identity {
            c.arg("-i").arg(i).args(["-o", "IdentitiesOnly=yes"]);
        }
        if let Some(p) = self.target.port {
            c.args(["-p", &p.to_string()]);
        }
        c.arg(format!("{}@{}", self.target.user, self.target.host)).arg("--").arg(remote);
        c
    }

    /// Runs `remote` on the phone; its stdout, or an error with its stderr.
    pub fn run(&self, remote: &str) -> Result<Vec<u8>> {
        let o = self
            .command(remote)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| crate::util::user_error(e, "running ssh (package openssh-client)"))?;
        if !o.status.success() {
            return Err(failure(&self.target, remote, o.status.code(), &String::from_utf8_lossy(&o.stderr)).into());
        }
        Ok(o.stdout)
    }

    /// What the phone has and how it booted.
    pub fn status(&self) -> Result<PhoneStatus> {
        let out = self.run(&format!("{PHONE_INIT} phone-status"))?;
        serde_json::from_slice(&out).with_context(|| format!("parsing what `{PHONE_INIT} phone-status` printed"))
    }
}

impl Target {
    /// `USER@HOST[:PORT]`, as a person would say it.
    pub fn shown(&self) -> String {
        match self.port {
            Some(p) => format!("{}@{}:{p}", self.user, self.host),
            None => format!("{}@{}", self.user, self.host),
        }
    }
}

/// What a failed ssh run of `remote` means (pure): ssh's own failures (exit 255: no
/// connection, a refused key, an unknown or changed host key) said in words with what to
/// do, or the phone's program failing.
pub fn failure(t: &Target, remote: &str, code: Option<i32>, stderr: &str) -> Fail {
    let said = stderr.trim();
    let last = said.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("").trim();
    let at = t.shown();
    let port = t.port.unwrap_or(22);
    let cannot = |why: &str| format!("cannot log in to {at} over ssh: {why}");
    if code != Some(255) {
        let program = remote.rsplit(' ').next().unwrap_or(remote);
        return Fail::new(format!("the phone's mobix program failed on {at} ({program}): {last}"))
            .hint("its generation may be older than this mobix; the phone's journal says more");
    }
    if said.contains("Connection refused") {
        Fail::new(cannot("connection refused")).hint(format!(
            "is the phone running, and its ssh server up? (on the emulated phone: `mobix run --ssh-port {port}` \
             forwards 127.0.0.1:{port}, and the system needs `ssh: {{ enable: true }}`)"
        ))
    } else if said.contains("REMOTE HOST IDENTIFICATION HAS CHANGED") {
        Fail::new(cannot("the phone's host key changed since ssh last saw it")).hint(format!(
            "a phone flashed or started anew makes a new key; if that is what happened, forget the old one with \
             `ssh-keygen -R '[{h}]:{port}'` and accept the new one with `ssh -p {port} {at_plain} true`",
            h = t.host,
            at_plain = format_args!("{}@{}", t.user, t.host),
        ))
    } else if said.contains("Host key verification failed") {
        Fail::new(cannot("the phone's host key is not known to ssh")).hint(format!(
            "deploy runs ssh without asking: accept the key once with `ssh -p {port} {}@{} true` (answer yes), \
             or pass `--ssh-option StrictHostKeyChecking=accept-new`",
            t.user, t.host
        ))
    } else if said.contains("Permission denied") {
        Fail::new(cannot("the phone refused the key")).hint(format!(
            "{} logs in with keys only: give the private key with -i, whose public half is in the system config \
             (`users: {}: authorized_keys`) of the generation the phone runs",
            t.user, t.user
        ))
    } else if said.contains("timed out") || said.contains("No route to host") || said.contains("Network is unreachable")
    {
        Fail::new(cannot(&last.rsplit(": ").next().unwrap_or(last).to_lowercase()))
            .hint("is the phone on this network (over USB: 172.16.42.1), and the address of --to right?")
    } else {
        Fail::new(cannot(last)).hint("ssh said the above; `ssh -v` with the same address tells more")
    }
}

/// Words for a deploy of `toplevel` that the phone already found bad: the generation it
/// had there, its reason, and why it failed where the phone recorded one (`s.failures`).
/// None when the phone has not seen that system fail.
pub fn failed_before(s: &PhoneStatus, toplevel: &StorePath) -> Option<String> {
    let rec = s.boot_record()?;
    let id = bootstate::id_of(toplevel.base_name().as_str());
    let e = rec.entries.iter().find(|e| e.id == id && e.status.is_bad())?;
    let bootstate::Status::Bad(reason) = e.status else { return None };
    let why = s.failures.get(&e.generation).map_or(String::new(), |w| format!(": {}", w.trim()));
    Some(format!(
        "this system already failed on the phone as generation {} (bad: {}{why}); deployed again it gets another \
         trial, and the phone falls back again if it fails",
        e.generation,
        reason.name()
    ))
}

/// What a deploy sends and does.
#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    pub generation: u32,
    pub toplevel: StorePath,
    /// The store paths the phone lacks, with their sizes on the host.
    pub send: Vec<(StorePath, u64)>,
    pub send_bytes: u64,
    /// Paths of the closure the phone has already.
    pub present: usize,
    /// Why the boot image would have to change (kernel, initramfs, command line); None
    /// when the running boot image runs the new generation.
    pub boot_image_change: Option<String>,
}

/// Why the phone's running boot image (`running`) cannot boot a system whose boot image
/// carries `kernel`, `initrd` and `cmdline` (pure; None: it can), in words.
pub fn boot_change(running: &BootSpec, kernel: &str, initrd: &str, cmdline: &str) -> Option<String> {
    let changed: Vec<String> = [
        ("kernel", &running.kernel, kernel),
        ("initramfs (stage-1)", &running.initrd, initrd),
        ("kernel command line", &running.cmdline, cmdline),
    ]
    .into_iter()
    .filter(|(_, a, b)| a != b)
    .map(|(what, a, b)| format!("its {what} ({a} -> {b})"))
    .collect();
    (!changed.is_empty()).then(|| changed.join("; "))
}

/// The pure decision: `closure` of `toplevel` against what the phone `has`. Paths are sent
/// references first (`refs` gives a path's references), so that a cut stream leaves no
/// path in the phone's store whose references are missing.
pub fn plan(
    generation: u32,
    toplevel: &StorePath,
    closure: &BTreeSet<StorePath>,
    refs: &dyn Fn(&StorePath) -> BTreeSet<StorePath>,
    sizes: &dyn Fn(&StorePath) -> u64,
    has: &[String],
    boot_image_change: Option<String>,
) -> Plan {
    let has: BTreeSet<&str> = has.iter().map(String::as_str).collect();
    let send: Vec<(StorePath, u64)> = references_first(closure, refs)
        .into_iter()
        .filter(|p| !has.contains(p.base_name().as_str()))
        .map(|p| (p.clone(), sizes(&p)))
        .collect();
    Plan {
        generation,
        toplevel: toplevel.clone(),
        send_bytes: send.iter().map(|s| s.1).sum(),
        present: closure.len() - send.len(),
        send,
        boot_image_change,
    }
}

/// `paths` ordered so that every path comes after the paths it refers to (references
/// outside `paths` are ignored; a path referring to itself is fine).
fn references_first(paths: &BTreeSet<StorePath>, refs: &dyn Fn(&StorePath) -> BTreeSet<StorePath>) -> Vec<StorePath> {
    fn visit(
        p: &StorePath,
        paths: &BTreeSet<StorePath>,
        refs: &dyn Fn(&StorePath) -> BTreeSet<StorePath>,
        seen: &mut BTreeSet<StorePath>,
        out: &mut Vec<StorePath>,
    ) {
        if !seen.insert(p.clone()) {
            return;
        }
        for r in refs(p) {
            if paths.contains(&r) {
                visit(&r, paths, refs, seen, out);
            }
        }
        out.push(p.clone());
    }
    let (mut seen, mut out) = (BTreeSet::new(), Vec::new());
    for p in paths {
        visit(p, paths, refs, &mut seen, &mut out);
    }
    out
}

/// What the stream carried.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Sent {
    pub paths: usize,
    /// Bytes of the stream before ssh compressed it.
    pub stream_bytes: u64,
    pub seconds: f64,
}

/// Streams the plan's paths, the new boot image if there is one (for the inactive slot, or
/// with `true` over the running one) and generation entry `entry` (with `tries` tries) to
/// the phone's receiver, and returns what the receiver said.
pub fn send(
    store: &Store,
    ssh: &Ssh,
    plan: &Plan,
    boot_image: Option<(&[u8], bool)>,
    entry: &Generation,
    tries: u8,
    progress: &dyn Fn(&str),
) -> Result<(Sent, String)> {
    let t0 = Instant::now();
    // OpenSSH compresses the stream: what crosses the network is smaller than
    // `stream_bytes`.
    let mut child = ssh
        .command_with(&format!("{PHONE_INIT} receive"), true)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| crate::util::user_error(e, "running ssh (package openssh-client)"))?;
    let mut stdin = std::io::BufWriter::with_capacity(1 << 20, child.stdin.take().expect("piped"));
    let mut bytes = 0u64;
    let written: Result<()> = (|| {
        writeln!(stdin, "{DEPLOY_MAGIC}")?;
        for (i, (p, _)) in plan.send.iter().enumerate() {
            let host = store.host_path(p);
            let tar = archive::pack(&host, Vec::new())?;
            let hash = match store.recorded_hash(p)? {
                Some(h) => h,
                None => crate::store::content_hash(&host)?,
            };
            let name = StoreName::parse(&p.base_name()).map_err(anyhow::Error::msg)?;
            let frame = DeployFrame::Path { name, content_hash: hash.hex(), bytes: tar.len() as u64 };
            writeln!(stdin, "{}", frame.line())?;
            stdin.write_all(&tar)?;
            bytes += tar.len() as u64;
            progress(&format!("sent {}/{} {}", i + 1, plan.send.len(), p.base_name()));
        }
        if let Some((img, in_place)) = boot_image {
            let sha256 = mobix_bootctl::content::hex(&mobix_bootctl::content::bytes(img));
            writeln!(stdin, "{}", DeployFrame::BootImage { bytes: img.len() as u64, sha256, in_place }.line())?;
            stdin.write_all(img)?;
            bytes += img.len() as u64;
            progress(&format!("sent the boot image ({} KiB)", img.len() >> 10));
        }
        let json = serde_json::to_vec_pretty(entry)?;
        writeln!(stdin, "{}", DeployFrame::Generation { bytes: json.len() as u64, tries }.line())?;
        stdin.write_all(&json)?;
        writeln!(stdin, "{}", DeployFrame::End.line())?;
        stdin.flush()?;
        Ok(())
    })();
    drop(stdin);
    let out = child.wait_with_output()?;
    let said = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let err = String::from_utf8_lossy(&out.stderr).trim().to_string();
    if !out.status.success() {
        return Err(Fail::new(format!(
            "the phone refused or did not finish receiving generation {}: {err}",
            plan.generation
        ))
        .hint("the phone still boots what it booted before; run the deploy again")
        .into());
    }
    written.context("writing the deploy stream to ssh")?;
    Ok((Sent { paths: plan.send.len(), stream_bytes: bytes, seconds: t0.elapsed().as_secs_f64() }, said))
}

/// How a deploy ended, from the record the phone reported after booting again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "outcome", rename_all = "kebab-case")]
pub enum Outcome {
    /// The new generation booted and reached its success point.
    Good { generation: u32 },
    /// It failed and the phone fell back to `booted` by itself.
    FellBack { generation: u32, booted: u32, reason: String },
    /// Still proving itself (booted as a trial, not yet blessed).
    Pending { generation: u32, booted: u32 },
}

/// Why the new system cannot be deployed onto the phone's partitions as they are, if so: a
/// deploy writes no partition table and no system image, so the boot-state record must stay
/// where the running stage-1 found it (`record_at`, from the profile's `system.size`), and
/// with it the state filesystem that follows the image. Another size would make the new
/// stage-1 miss the record and stage-2 make a state filesystem in the middle of the store
/// or the old state.
pub fn layout_change(phone: &PhoneStatus, record_at: u64) -> Option<String> {
    let running = phone.booted.state.as_ref()?.offset;
    (running != record_at).then(|| {
        let mib = |at: u64| (at + bootstate::AREA) as f64 / (1u64 << 20) as f64;
        format!(
            "the phone's system image is {} MiB and this system's is {} MiB (`system.size` changed): its boot-state \
             record and the state after it (/home, /var) would be looked for at byte {record_at} instead of {running}",
            mib(running),
            mib(record_at)
        )
    })
}

/// The outcome for `generation` from the phone's record, the generation it booted and
/// the reason its health check left, if it failed one.
pub fn judge(generation: u32, booted: u32, rec: Option<&bootstate::Record>, failure: Option<&str>) -> Outcome {
    let entry = rec.and_then(|r| r.entries.iter().find(|e| e.generation == generation));
    match entry.map(|e| e.status) {
        Some(bootstate::Status::Good) if booted == generation => Outcome::Good { generation },
        Some(bootstate::Status::Bad(r)) => Outcome::FellBack {
            generation,
            booted,
            reason: match r {
                bootstate::BadReason::Tries if failure.is_some() => {
                    format!("{}, on every one of its tries", failure.unwrap_or_default())
                }
                bootstate::BadReason::Tries => {
                    "its tries ran out without reaching its success point (a failed health check, a crash or a hang)"
                        .into()
                }
                bootstate::BadReason::Kernel => "its kernel did not come up".into(),
                bootstate::BadReason::User => "it was marked bad by hand".into(),
                bootstate::BadReason::Unspecified => "it was marked bad".into(),
            },
        },
        None if booted != generation => Outcome::FellBack {
            generation,
            booted,
            reason: "the phone no longer has it in its boot-state record".into(),
        },
        _ => Outcome::Pending { generation, booted },
    }
}

/// A PIN to send to stage-1's remote unlock after the reboot, to the server with this
/// host key (which the running system reported: nothing else is trusted with the PIN).
#[derive(Debug, Clone)]
pub struct UnlockWith {
    pub pin: String,
    pub host_key: String,
}

/// What came of the remote unlock during [`wait`].
#[derive(Debug, Clone, PartialEq, Eq)]
enum Unlocking {
    Trying { said: Option<String> },
    Done,
}

/// Sends `with.pin` to stage-1's remote unlock at the phone's ssh address: its answer, or
/// None where no server with `with.host_key` answered (the phone still starting, or its
/// system's own ssh server already up).
pub fn remote_unlock(ssh: &Ssh, with: &UnlockWith) -> Option<UnlockReply> {
    let known = std::env::temp_dir().join(format!("mobix-unlock-{}-known-hosts", std::process::id()));
    std::fs::write(&known, format!("{UNLOCK_HOST_ALIAS} {}\n", with.host_key)).ok()?;
    // First: ssh keeps the first value it sees, and the owner's own options must not let
    // another host key in.
    let mut options = vec![
        format!("UserKnownHostsFile={}", known.display()),
        "GlobalKnownHostsFile=/dev/null".into(),
        format!("HostKeyAlias={UNLOCK_HOST_ALIAS}"),
        "StrictHostKeyChecking=yes".into(),
        "LogLevel=ERROR".into(),
    ];
    options.extend(ssh.options.iter().cloned());
    let unlock = Ssh { options, ..ssh.clone() };
    let child = unlock
        .command("mobix-unlock")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .ok();
    let out = child.and_then(|mut c| {
        if let Some(mut i) = c.stdin.take() {
            let _ = i.write_all(format!("{}\n", with.pin).as_bytes());
        }
        c.wait_with_output().ok()
    });
    let _ = std::fs::remove_file(&known);
    UnlockReply::find(&String::from_utf8_lossy(&out?.stdout))
}

/// The name the remote unlock's host key is pinned under (not the phone's address, whose
/// key is its running system's).
const UNLOCK_HOST_ALIAS: &str = "mobix-remote-unlock";

/// One try of the remote unlock while the phone does not answer as a running system; what
/// came of it said once.
fn try_unlock(ssh: &Ssh, with: &UnlockWith, state: &mut Unlocking, progress: &dyn Fn(&str)) {
    let Unlocking::Trying { said } = state else { return };
    match remote_unlock(ssh, with) {
        None => {}
        Some(UnlockReply::Open) => {
            progress("the phone's data is unlocked: mobix sent the PIN to stage-1 over ssh (remote unlock)");
            *state = Unlocking::Done;
        }
        Some(UnlockReply::Wrong { failures, .. }) => {
            progress(&format!(
                "the phone refused the PIN of --pin-file ({failures} wrong in a row); mobix sends it no more: type the \
                 right one on the phone"
            ));
            *state = Unlocking::Done;
        }
        Some(UnlockReply::Refused(why)) if said.as_deref() != Some(why.as_str()) => {
            progress(&format!("remote unlock: the phone tried nothing ({why}); mobix tries again"));
            *said = Some(why);
        }
        Some(UnlockReply::Refused(_)) => {}
    }
}

/// Waits up to `timeout` for the phone to come back from the reboot (a boot id other
/// than `before`) and settle on `generation`'s outcome; the last status seen comes back
/// with it (None: the phone never answered; its boot id `before`: it never restarted).
/// With `unlock`, the PIN goes to stage-1's remote unlock while the system is not up.
pub fn wait(
    ssh: &Ssh,
    before: &str,
    generation: u32,
    timeout: Duration,
    unlock: Option<&UnlockWith>,
    progress: &dyn Fn(&str),
) -> (Outcome, Option<PhoneStatus>) {
    let t0 = Instant::now();
    let mut last = None;
    let mut outcome = Outcome::Pending { generation, booted: 0 };
    let mut said = String::new();
    let mut unlocking = Unlocking::Trying { said: None };
    while t0.elapsed() < timeout {
        std::thread::sleep(Duration::from_secs(3));
        let Ok(s) = ssh.status() else {
            if let Some(with) = unlock {
                try_unlock(ssh, with, &mut unlocking, progress);
            }
            continue;
        };
        if s.boot_id == before {
            // Not restarted yet (or never: the caller tells by the boot id).
            last = Some(s);
            continue;
        }
        let failure = s.failures.get(&generation).map(String::as_str);
        outcome = judge(generation, s.booted.generation, s.boot_record().as_ref(), failure);
        let now = format!("{:?}", outcome);
        if now != said {
            progress(&format!(
                "the phone is up ({:.0}s): generation {} booted ({})",
                t0.elapsed().as_secs_f64(),
                s.booted.generation,
                s.booted.mode
            ));
            said = now;
        }
        last = Some(s);
        if !matches!(outcome, Outcome::Pending { .. }) {
            break;
        }
    }
    (outcome, last)
}

/// What `mobix deploy --gc` removes from the phone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Gc {
    /// Generations whose entries go: failed ones, ones the boot-state record no longer
    /// holds, and (with a limit) older good ones.
    pub drop_generations: Vec<u32>,
    /// Generations that stay, with everything their closures need.
    pub keep_generations: Vec<u32>,
    /// Store paths (base names) no staying generation needs.
    pub remove: Vec<String>,
}

/// The pure decision of a garbage collection on the phone: `status` is what it reported,
/// `rec` its boot-state record (None: unreadable, and then nothing is removed),
/// `keep_newest` a limit on the good and trial generations kept besides the protected ones,
/// and `closure` gives a toplevel's closure (base names) from the host's store. The
/// booted, default, last good and pending generations always stay.
pub fn gc(
    status: &PhoneStatus,
    rec: Option<&bootstate::Record>,
    keep_newest: Option<usize>,
    closure: &dyn Fn(&str) -> Result<BTreeSet<String>>,
) -> Result<Gc> {
    let Some(rec) = rec else {
        return Err(Fail::new("the phone's boot-state record is unreadable, so what it may boot is unknown")
            .hint("boot the phone once (stage-1 rewrites the record), then collect again")
            .into());
    };
    let mut protected: BTreeSet<u32> = rec.protected().into_iter().collect();
    protected.insert(status.booted.generation);
    let usable = |g: u32| rec.entries.iter().any(|e| e.generation == g && !e.status.is_bad());
    let mut candidates: Vec<u32> =
        status.generations.iter().map(|g| g.generation).filter(|g| !protected.contains(g) && usable(*g)).collect();
    candidates.sort_unstable_by(|a, b| b.cmp(a));
    candidates.truncate(keep_newest.map_or(usize::MAX, |n| n.saturating_sub(protected.len())));
    let (mut keep, mut drop) = (Vec::new(), Vec::new());
    for g in &status.generations {
        if protected.contains(&g.generation) || candidates.contains(&g.generation) {
            keep.push(g);
        } else {
            drop.push(g.generation);
        }
    }
    let mut needed = BTreeSet::new();
    for g in &keep {
        needed.extend(closure(&g.toplevel).with_context(|| format!("generation {} of the phone", g.generation))?);
    }
    Ok(Gc {
        drop_generations: drop,
        keep_generations: keep.iter().map(|g| g.generation).collect(),
        remove: status.store.iter().filter(|n| !n.starts_with('.') && !needed.contains(*n)).cloned().collect(),
    })
}

/// Runs `gc` on the phone (`mobix-init gc`, which checks again that it removes nothing a
/// staying generation links to); what the phone said.
pub fn collect(ssh: &Ssh, gc: &Gc) -> Result<String> {
    let mut lines: Vec<GcLine> = gc.drop_generations.iter().map(|g| GcLine::Generation(*g)).collect();
    for p in &gc.remove {
        lines.push(GcLine::Path(StoreName::parse(p).map_err(anyhow::Error::msg)?));
    }
    lines.push(GcLine::End);
    let text: String = lines.iter().map(|l| l.line() + "\n").collect();
    let mut child = ssh
        .command(&format!("{PHONE_INIT} gc"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| crate::util::user_error(e, "running ssh (package openssh-client)"))?;
    let mut stdin = child.stdin.take().expect("piped");
    let written = stdin.write_all(text.as_bytes());
    drop(stdin);
    let out = child.wait_with_output()?;
    if !out.status.success() {
        return Err(Fail::new(format!(
            "the phone refused or did not finish collecting garbage: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
        .into());
    }
    written.context("writing the list to ssh")?;
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use mobix_bootctl::contract::Slot;

    /// ssh's own failures say what failed, on which phone, and what to do; the internal
    /// command is not the message (issue 30).
    #[test]
    fn ssh_failures_are_said_in_words() {
        let t = Target::parse("ssh://root@127.0.0.1:22239").unwrap();
        let said = |code, err: &str| {
            let f = failure(&t, "/run/current-system/init phone-status", code, err);
            (f.msg.clone(), f.hint.clone().unwrap_or_default())
        };
        let (m, h) = said(Some(255), "ssh: connect to host 127.0.0.1 port 22239: Connection refused\n");
        assert_eq!(m, "cannot log in to root@127.0.0.1:22239 over ssh: connection refused");
        assert!(h.contains("is the phone running") && h.contains("--ssh-port 22239"), "{h}");
        let (m, h) = said(Some(255), "root@127.0.0.1: Permission denied (publickey).\n");
        assert_eq!(m, "cannot log in to root@127.0.0.1:22239 over ssh: the phone refused the key");
        assert!(h.contains("users: root: authorized_keys") && h.contains("-i"), "{h}");
        let (m, h) = said(Some(255), "Host key verification failed.\n");
        assert!(m.ends_with("the phone's host key is not known to ssh"), "{m}");
        assert!(h.contains("ssh -p 22239 root@127.0.0.1 true"), "{h}");
        let changed =
            "@@@@\n@    WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED!     @\n@@@@\nHost key verification failed.\n";
        let (m, h) = said(Some(255), changed);
        assert!(m.ends_with("the phone's host key changed since ssh last saw it"), "{m}");
        assert!(h.contains("ssh-keygen -R '[127.0.0.1]:22239'"), "{h}");
        let (m, _) = said(Some(255), "ssh: connect to host 10.0.0.9 port 22: Connection timed out\n");
        assert!(m.ends_with("over ssh: connection timed out"), "{m}");
        let (m, _) = said(Some(1), "error: no such subcommand\n");
        assert_eq!(
            m,
            "the phone's mobix program failed on root@127.0.0.1:22239 (phone-status): error: no such subcommand"
        );
        assert!(!said(Some(255), "x\n").0.contains("/run/current-system"));
    }
    use bootstate::{BadReason, Entry, Record, Status};

    #[test]
    fn targets_are_ssh_addresses_with_a_user() {
        let t = Target::parse("ssh://root@127.0.0.1:2222").unwrap();
        assert_eq!((t.user.as_str(), t.host.as_str(), t.port), ("root", "127.0.0.1", Some(2222)));
        assert_eq!(Target::parse("ssh://root@phone.lan").unwrap().port, None);
        assert_eq!(Target::parse("ssh://root@[fe80::1]:22").unwrap().host, "fe80::1");
        for bad in ["root@phone", "ssh://phone", "ssh://root@phone:x", "ssh://@phone"] {
            let e = Target::parse(bad).unwrap_err().to_string();
            assert!(e.starts_with(&format!("--to {bad:?}")), "{e}");
        }
    }

    fn spec(kernel: &str, cmdline: &str) -> BootSpec {
        BootSpec {
            version: 1,
            label: "x".into(),
            kernel: kernel.into(),
            kernel_release: "6.1".into(),
            initrd: "/mobix/store/i-initramfs/initrd".into(),
            init: "/init".into(),
            cmdline: cmdline.into(),
            toplevel: "/mobix/store/t-system".into(),
        }
    }

    fn sp(h: &str, n: &str) -> StorePath {
        StorePath::new(h.repeat(32), n).unwrap()
    }

    #[test]
    fn only_what_the_phone_lacks_is_sent_and_a_boot_image_change_is_named_in_words() {
        // Named so that the name order (a, b, c) is not the references-first order.
        let (a, b, top) = (sp("c", "busybox"), sp("b", "tree"), sp("a", "system"));
        let closure: BTreeSet<StorePath> = [a.clone(), b.clone(), top.clone()].into();
        let has = vec![a.base_name(), "zzz-old".to_string()];
        // The toplevel ("c…") refers to tree ("b…"), which refers to itself and busybox.
        let refs = |p: &StorePath| -> BTreeSet<StorePath> {
            match p.name() {
                "system" => [b.clone()].into(),
                "tree" => [a.clone(), b.clone()].into(),
                _ => BTreeSet::new(),
            }
        };
        let sizes = |p: &StorePath| if p == &b { 100 } else { 7 };
        let p = plan(3, &top, &closure, &refs, &sizes, &has, None);
        assert_eq!(p.send.iter().map(|s| s.0.clone()).collect::<Vec<_>>(), [b.clone(), top.clone()]);
        assert_eq!((p.send_bytes, p.present, p.boot_image_change), (107, 1, None));
        let running = spec("k", "c");
        assert_eq!(boot_change(&running, "k", &running.initrd, "c"), None);
        assert_eq!(
            boot_change(&running, "k", &running.initrd, "c quiet").unwrap(),
            "its kernel command line (c -> c quiet)"
        );
        assert_eq!(
            boot_change(&running, "k2", "i2", "c").unwrap(),
            format!("its kernel (k -> k2); its initramfs (stage-1) ({} -> i2)", running.initrd)
        );
    }

    fn rec(status: Status, booted: u32) -> Record {
        let e = |g, status| Entry {
            generation: g,
            id: [0; 16],
            kernel_slot: Slot::A,
            tries_left: 0,
            tries_done: 0,
            status,
        };
        Record {
            seq: 3,
            default_gen: 2,
            booted_gen: booted,
            last_good: [2, 0],
            pending_slot: Default::default(),
            entries: vec![e(2, Status::Good), e(3, status)],
        }
    }

    #[test]
    fn the_outcome_is_read_from_the_phones_record() {
        assert_eq!(judge(3, 3, Some(&rec(Status::Good, 3)), None), Outcome::Good { generation: 3 });
        assert_eq!(judge(3, 3, Some(&rec(Status::Trial, 3)), None), Outcome::Pending { generation: 3, booted: 3 });
        let bad = rec(Status::Bad(BadReason::Tries), 2);
        match judge(3, 2, Some(&bad), None) {
            Outcome::FellBack { booted: 2, reason, .. } => assert!(reason.contains("health check"), "{reason}"),
            o => panic!("{o:?}"),
        }
        match judge(3, 2, Some(&bad), Some("health check doomed failed (exit status: 1)")) {
            Outcome::FellBack { reason, .. } => {
                assert_eq!(reason, "health check doomed failed (exit status: 1), on every one of its tries")
            }
            o => panic!("{o:?}"),
        }
        // A trial the phone has not booted yet (still starting) is pending, not a failure.
        assert_eq!(judge(3, 2, Some(&rec(Status::Trial, 2)), None), Outcome::Pending { generation: 3, booted: 2 });
    }

    fn phone(gens: &[u32], store: &[&str], booted: u32) -> PhoneStatus {
        PhoneStatus {
            boot_id: "b".into(),
            booted: mobix_bootctl::contract::Booted {
                generation: booted,
                toplevel: format!("/mobix/store/t{booted}"),
                mode: mobix_bootctl::contract::BootMode::Good,
                state: None,
                slot: None,
                clock: Default::default(),
                fallback: None,
                unlock_host_key: None,
            },
            boot_spec: spec("k", ""),
            generations: gens
                .iter()
                .map(|&g| Generation {
                    generation: g,
                    toplevel: format!("/mobix/store/t{g}"),
                    kernel: String::new(),
                    cmdline: String::new(),
                    created: 0,
                })
                .collect(),
            store: store.iter().map(|s| s.to_string()).collect(),
            filesystem: "ext4".into(),
            free_bytes: 0,
            record: None,
            failures: Default::default(),
            state: None,
        }
    }

    /// Issue 30 item 7: a system the phone already found bad is said so before it is sent.
    #[test]
    fn a_deploy_of_a_system_that_failed_on_the_phone_is_warned_of() {
        let (good, bad) = (sp("a", "mobix-system-x"), sp("b", "mobix-system-x"));
        let mut r = rec(Status::Bad(BadReason::Tries), 2);
        r.entries[0].id = bootstate::id_of(good.base_name().as_str());
        r.entries[1].id = bootstate::id_of(bad.base_name().as_str());
        let block = r.encode().unwrap();
        let mut p = phone(&[2, 3], &[], 2);
        p.record = Some(mobix_bootctl::contract::RecordCopies(block.iter().chain(block.iter()).copied().collect()));
        p.failures.insert(3, "health check ping failed\n".into());
        assert_eq!(failed_before(&p, &good), None, "a good one is not warned of");
        assert_eq!(
            failed_before(&p, &bad).unwrap(),
            "this system already failed on the phone as generation 3 (bad: tries: health check ping failed); \
             deployed again it gets another trial, and the phone falls back again if it fails"
        );
        p.record = None;
        assert_eq!(failed_before(&p, &bad), None, "no record, nothing known");
    }

    #[test]
    fn a_deploy_keeps_the_phones_layout() {
        let mut p = phone(&[1], &[], 1);
        // A phone that reports no record location (the minimal init) has nothing to keep.
        assert_eq!(layout_change(&p, 5 << 20), None);
        let at = (512 << 20) - bootstate::AREA;
        p.booted.state = Some(mobix_bootctl::contract::RecordLocation { device: "/dev/vda".into(), offset: at });
        assert_eq!(layout_change(&p, at), None);
        let why = layout_change(&p, (1024 << 20) - bootstate::AREA).unwrap();
        assert!(why.starts_with("the phone's system image is 512 MiB and this system's is 1024 MiB"), "{why}");
    }

    #[test]
    fn garbage_is_what_no_staying_generation_needs_and_the_fallbacks_stay() {
        // 1 good (last good of slot a), 2 good, 3 bad, 4 booted and the default; 5 gone
        // from the record; a path from a cut deploy.
        let mut r = rec(Status::Good, 4);
        r.entries = vec![
            Entry {
                generation: 1,
                id: [1; 16],
                kernel_slot: Slot::A,
                tries_left: 0,
                tries_done: 1,
                status: Status::Good,
            },
            Entry {
                generation: 2,
                id: [2; 16],
                kernel_slot: Slot::A,
                tries_left: 0,
                tries_done: 1,
                status: Status::Good,
            },
            Entry {
                generation: 3,
                id: [3; 16],
                kernel_slot: Slot::A,
                tries_left: 0,
                tries_done: 3,
                status: Status::Bad(BadReason::Tries),
            },
            Entry {
                generation: 4,
                id: [4; 16],
                kernel_slot: Slot::A,
                tries_left: 0,
                tries_done: 1,
                status: Status::Good,
            },
        ];
        r.default_gen = 4;
        r.last_good = [1, 0];
        let s = phone(&[1, 2, 3, 4, 5], &[".receiving", "half", "only3", "shared", "t1", "t2", "t3", "t4", "t5"], 4);
        let closure = |t: &str| -> Result<BTreeSet<String>> {
            let t = t.rsplit('/').next().unwrap().to_string();
            let mut c: BTreeSet<String> = [t.clone(), "shared".to_string()].into();
            if t == "t3" {
                c.insert("only3".into());
            }
            Ok(c)
        };
        let g = gc(&s, Some(&r), None, &closure).unwrap();
        assert_eq!(g.drop_generations, [3, 5]);
        assert_eq!(g.keep_generations, [1, 2, 4]);
        assert_eq!(g.remove, ["half", "only3", "t3", "t5"]);
        // Keeping two: the protected ones (4 booted and default, 1 last good) fill it.
        let g = gc(&s, Some(&r), Some(2), &closure).unwrap();
        assert_eq!((g.drop_generations, g.keep_generations), (vec![2, 3, 5], vec![1, 4]));
        // Keeping three: the newest other good one too.
        let g = gc(&s, Some(&r), Some(3), &closure).unwrap();
        assert_eq!(g.keep_generations, [1, 2, 4]);
        // No record, no collection; a closure the host cannot know, no collection.
        assert!(gc(&s, None, None, &closure).is_err());
        let unknown = |_: &str| -> Result<BTreeSet<String>> { anyhow::bail!("not in this host's store") };
        assert!(gc(&s, Some(&r), None, &unknown).is_err());
    }

    /// Issue 31: what the phone must refuse is decided before the build, from the phone's
    /// status, the profile and the planned boot image alone.
    #[test]
    fn refusals_need_nothing_built() {
        use mobix_bootctl::contract::{Filesystem, RecordLocation, Slot};
        let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let sel = crate::profile::Selection { variant: None, config: None };
        let profile = crate::profile::load_with(repo, "qemu-aarch64", sel).unwrap();
        let opts = |kernel_in_place| Options {
            no_reboot: false,
            dry_run: false,
            timeout: Duration::from_secs(1),
            kernel_in_place,
            pin: None,
        };
        let words = |r: Result<()>| format!("{:#}", r.unwrap_err());
        let mut p = phone(&[1], &[], 1);
        p.booted.state = Some(RecordLocation { device: "/dev/vda2".into(), offset: profile.device.state_offset() });
        p.booted.slot = Some(Slot::A);
        refuse(&p, &profile, &opts(false), None).unwrap();
        refuse(&p, &profile, &opts(false), Some("its kernel (k -> k2)")).unwrap();

        let mut moved = p.clone();
        moved.booted.state.as_mut().unwrap().offset += 1 << 20;
        assert!(words(refuse(&moved, &profile, &opts(false), None)).contains("`system.size` changed"));

        let mut erofs = p.clone();
        erofs.filesystem = Filesystem::Erofs;
        assert!(
            words(refuse(&erofs, &profile, &opts(false), None)).contains("is erofs, which cannot take new store paths")
        );

        let mut no_slots = p.clone();
        no_slots.booted.slot = None;
        refuse(&no_slots, &profile, &opts(false), None).unwrap();
        let w = words(refuse(&no_slots, &profile, &opts(false), Some("its kernel (k -> k2)")));
        assert!(w.contains("has no A/B slots to put it in"), "{w}");
        refuse(&no_slots, &profile, &opts(true), Some("its kernel (k -> k2)")).unwrap();

        // The state kept otherwise than the phone keeps it: never formatted over, never
        // left unopenable. A phone that does not say (older) is not refused.
        use mobix_bootctl::contract::StateKind;
        let mut encrypted = profile.clone();
        encrypted.system.state.encryption = crate::profile::Encryption::Luks2;
        let mut plain_phone = p.clone();
        plain_phone.state = Some(StateKind::Plain);
        refuse(&plain_phone, &profile, &opts(false), None).unwrap();
        let w = words(refuse(&plain_phone, &encrypted, &opts(false), None));
        assert!(w.contains("plain filesystem; this system wants it encrypted"), "{w}");
        let mut locked_phone = p.clone();
        locked_phone.state = Some(StateKind::Encrypted);
        refuse(&locked_phone, &encrypted, &opts(false), None).unwrap();
        assert!(words(refuse(&locked_phone, &profile, &opts(false), None)).contains("the phone's state is encrypted"));
        refuse(&p, &encrypted, &opts(false), None).unwrap();

        p.free_bytes = 3 << 20;
        let w = words(room(&p, 0));
        assert!(w.contains("has 3 MiB free, too little for 0 MiB of new store paths"), "{w}");
        p.free_bytes = 100 << 20;
        room(&p, 80 << 20).unwrap();
        assert!(words(room(&p, 95 << 20)).contains("too little for 95 MiB"));
    }
}
