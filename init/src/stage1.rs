//! Stage-1: from the initramfs to the chosen generation's init.

use crate::say;
use crate::sys::{self, Result};
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// `etc/mobix/stage1.json`, written by the host's initramfs builder.
#[derive(Deserialize)]
pub struct Config {
    pub system_partition: String,
    pub filesystem: String,
    pub console: String,
    pub kernel_release: String,
    pub modules: Vec<String>,
}

/// `/mobix/generations/<n>.json` on the system partition.
#[derive(Deserialize, Debug, Clone, PartialEq)]
pub struct Generation {
    pub generation: u32,
    pub toplevel: String,
}

const SYSROOT: &str = "/sysroot";
const SYSTEM_MOUNT: &str = "/sysroot/run/mobix/system";
const STORE_PREFIX: &str = "/mobix/store/";

pub fn run() -> Result<()> {
    sys::mount("proc", "/proc", Some("proc"), 0, None)?;
    sys::mount("sysfs", "/sys", Some("sysfs"), 0, None)?;
    sys::mount("devtmpfs", "/dev", Some("devtmpfs"), 0, Some("mode=0755"))?;
    sys::attach_console("/dev/console")?;
    let t0 = Instant::now();
    let cfg: Config = serde_json::from_slice(
        &std::fs::read("/etc/mobix/stage1.json").map_err(|e| format!("reading /etc/mobix/stage1.json: {e}"))?,
    )
    .map_err(|e| format!("parsing /etc/mobix/stage1.json: {e}"))?;
    say(&format!("stage-1 on kernel {} (console {})", cfg.kernel_release, cfg.console));
    let mut loaded = 0;
    for m in &cfg.modules {
        if sys::load_module(Path::new(m))? {
            loaded += 1;
        }
    }
    say(&format!("loaded {loaded} modules"));
    let dev = wait_for_partition(&cfg.system_partition, Duration::from_secs(15))?;
    sys::mount("tmpfs", SYSROOT, Some("tmpfs"), 0, Some("mode=0755"))?;
    sys::mount(&dev.to_string_lossy(), SYSTEM_MOUNT, Some(&cfg.filesystem), libc::MS_RDONLY, None)?;
    say(&format!("mounted {} ({}) read-only", dev.display(), cfg.system_partition));
    let gens = read_generations(Path::new(SYSTEM_MOUNT).join("mobix/generations").as_path())?;
    let chosen = choose(&gens).ok_or_else(|| "the system partition holds no generation".to_string())?;
    say(&format!("booting generation {} ({})", chosen.generation, chosen.toplevel));
    sys::mount(&format!("{SYSTEM_MOUNT}/mobix"), &format!("{SYSROOT}/mobix"), None, libc::MS_BIND, None)?;
    let init = format!("{}/init", chosen.toplevel);
    if !exists_in(Path::new(SYSROOT), &init) {
        return Err(format!("generation {} has no init at {init}", chosen.generation));
    }
    for d in ["/dev", "/proc", "/sys"] {
        sys::mount(d, &format!("{SYSROOT}{d}"), None, libc::MS_MOVE, None)?;
    }
    say(&format!("stage-1 done in {:.2}s", t0.elapsed().as_secs_f64()));
    switch_root(&init, chosen)
}

/// Finds `/dev/<name>` of the partition whose GPT name is `partname`, waiting for the
/// block driver to probe.
fn wait_for_partition(partname: &str, timeout: Duration) -> Result<PathBuf> {
    let t0 = Instant::now();
    loop {
        if let Ok(rd) = std::fs::read_dir("/sys/class/block") {
            for e in rd.flatten() {
                let uevent = std::fs::read_to_string(e.path().join("uevent")).unwrap_or_default();
                let mut name = None;
                let mut devname = None;
                for l in uevent.lines() {
                    if let Some(v) = l.strip_prefix("PARTNAME=") {
                        name = Some(v.to_string());
                    }
                    if let Some(v) = l.strip_prefix("DEVNAME=") {
                        devname = Some(v.to_string());
                    }
                }
                if name.as_deref() == Some(partname) {
                    if let Some(d) = devname {
                        let p = PathBuf::from("/dev").join(d);
                        if p.exists() {
                            return Ok(p);
                        }
                    }
                }
            }
        }
        if t0.elapsed() > timeout {
            return Err(format!("no partition named {partname:?} appeared within {}s", timeout.as_secs()));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn read_generations(dir: &Path) -> Result<Vec<Generation>> {
    let rd = std::fs::read_dir(dir).map_err(|e| format!("reading {}: {e}", dir.display()))?;
    let mut out = Vec::new();
    for e in rd.flatten() {
        let p = e.path();
        if p.extension().and_then(|x| x.to_str()) != Some("json") {
            continue;
        }
        match std::fs::read(&p).ok().and_then(|b| serde_json::from_slice::<Generation>(&b).ok()) {
            Some(g) if g.toplevel.starts_with(STORE_PREFIX) && !g.toplevel.contains("..") => out.push(g),
            _ => say(&format!("ignoring unreadable generation entry {}", p.display())),
        }
    }
    Ok(out)
}

/// The generation to boot: the newest one.
pub fn choose(gens: &[Generation]) -> Option<&Generation> {
    gens.iter().max_by_key(|g| g.generation)
}

/// Whether `path` exists inside the tree at `root`, following symlinks (absolute ones
/// relative to `root`, as they will resolve after switch_root).
fn exists_in(root: &Path, path: &str) -> bool {
    let mut p = PathBuf::from(path);
    for _ in 0..16 {
        let host = root.join(p.strip_prefix("/").unwrap_or(&p));
        match std::fs::symlink_metadata(&host) {
            Ok(m) if m.file_type().is_symlink() => match std::fs::read_link(&host) {
                Ok(t) if t.is_absolute() => p = t,
                Ok(t) => p = p.parent().unwrap_or(Path::new("/")).join(t),
                Err(_) => return false,
            },
            Ok(_) => return true,
            Err(_) => return false,
        }
    }
    false
}

/// Frees the initramfs, makes /sysroot the root and executes the generation's init.
fn switch_root(init: &str, g: &Generation) -> Result<()> {
    std::env::set_current_dir(SYSROOT).map_err(|e| format!("chdir {SYSROOT}: {e}"))?;
    free_initramfs();
    sys::mount(".", "/", None, libc::MS_MOVE, None)?;
    sys::chroot(Path::new("."))?;
    std::env::set_current_dir("/").map_err(|e| format!("chdir /: {e}"))?;
    use std::os::unix::process::CommandExt;
    let err = std::process::Command::new(init)
        .arg0(init)
        .args(["stage2", "--generation", &g.generation.to_string(), "--toplevel", &g.toplevel])
        .exec();
    Err(format!("executing {init}: {err}"))
}

/// Deletes the initramfs's files (everything but the new root) so its memory is returned.
fn free_initramfs() {
    if let Ok(rd) = std::fs::read_dir("/") {
        for e in rd.flatten() {
            let p = e.path();
            if p == Path::new(SYSROOT) {
                continue;
            }
            let _ = if p.is_dir() { std::fs::remove_dir_all(&p) } else { std::fs::remove_file(&p) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chooses_the_newest_generation() {
        let g = |n, t: &str| Generation { generation: n, toplevel: t.into() };
        let gens = vec![g(1, "/mobix/store/a"), g(3, "/mobix/store/c"), g(2, "/mobix/store/b")];
        assert_eq!(choose(&gens).unwrap().generation, 3);
        assert!(choose(&[]).is_none());
    }
}
