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
    let child =
        unlock.command("mobix-unlock").stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().ok();
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
mod tests;
