//! Small helpers every stage shares: running external tools with useful errors, atomic
//! writes, walking and normalising file trees, and the marker that makes an error a
//! user's mistake (exit 1) rather than an internal failure (exit 2). Nothing here prints.

use anyhow::{Context, Result};
use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// An error the user can fix (bad input, a failed check, a missing tool): exit code 1.
/// Anything without this marker in its chain is an internal error: exit code 2.
#[derive(Debug, thiserror::Error)]
#[error("{msg}")]
pub struct Fail {
    pub msg: String,
    pub hint: Option<String>,
}

impl Fail {
    pub fn new(msg: impl Into<String>) -> Self {
        Fail { msg: msg.into(), hint: None }
    }
    pub fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }
}

/// Shorthand: `return Err(fail!("..."))`.
#[macro_export]
macro_rules! fail {
    ($($arg:tt)*) => { anyhow::Error::new($crate::util::Fail::new(format!($($arg)*))) };
}

/// The [`Fail`] marker of an error, wherever it sits in the context chain.
pub fn find_fail(e: &anyhow::Error) -> Option<&Fail> {
    e.downcast_ref::<Fail>().or_else(|| e.chain().find_map(|c| c.downcast_ref::<Fail>()))
}

/// Marks an error (and its causes) as the user's to fix, under a message saying what failed.
pub fn user_error<E: Into<anyhow::Error>>(e: E, msg: impl Into<String>) -> anyhow::Error {
    e.into().context(Fail::new(msg))
}

/// Whether `e` says a program or file was not there (an [`io::ErrorKind::NotFound`] in its chain).
pub fn is_not_found(e: &anyhow::Error) -> bool {
    e.chain().any(|c| c.downcast_ref::<io::Error>().is_some_and(|io| io.kind() == io::ErrorKind::NotFound))
}

/// Quotes a command line for messages (not for a shell).
pub fn show_command(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        let a = a.to_string_lossy();
        if a.is_empty() || a.contains(|c: char| c.is_whitespace() || c == '\'') {
            s.push_str(&format!(" '{}'", a.replace('\'', "'\\''")));
        } else {
            s.push(' ');
            s.push_str(&a);
        }
    }
    s
}

fn tail(bytes: &[u8], lines: usize) -> String {
    let text = String::from_utf8_lossy(bytes);
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Runs an external tool to completion, capturing its output. On failure the error holds
/// the command line and the tail of its stderr; a missing program is the user's to fix
/// and names the Debian package from `mobix doctor`.
pub fn run(cmd: &mut Command) -> Result<Output> {
    let shown = show_command(cmd);
    let out = match cmd.stdin(Stdio::null()).output() {
        Ok(o) => o,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let prog = cmd.get_program().to_string_lossy().into_owned();
            let hint = match crate::host::package_for(&prog) {
                Some(pkg) => format!(
                    "install it with `apt-get install {pkg}` or run `scripts/setup`; `mobix doctor` lists every tool"
                ),
                None => "`mobix doctor` lists the tools mobix needs".to_string(),
            };
            return Err(anyhow::Error::new(e)
                .context(Fail::new(format!("{prog} is not installed (needed to run `{shown}`)")).hint(hint)));
        }
        Err(e) => return Err(anyhow::Error::new(e).context(format!("starting `{shown}`"))),
    };
    if !out.status.success() {
        let mut msg = format!("`{shown}` failed ({})", out.status);
        let err = tail(&out.stderr, 15);
        if !err.trim().is_empty() {
            msg.push_str(&format!("; its stderr ends with:\n{err}"));
        } else {
            let o = tail(&out.stdout, 15);
            if !o.trim().is_empty() {
                msg.push_str(&format!("; its output ends with:\n{o}"));
            }
        }
        anyhow::bail!(msg);
    }
    Ok(out)
}

/// A file's bytes, memory-mapped (read-only). The file must not change while mapped;
/// mobix maps only files it owns (store paths, images it is converting).
pub enum Mapped {
    Map(memmap2::Mmap),
    Empty,
}

impl std::ops::Deref for Mapped {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            Mapped::Map(m) => m,
            Mapped::Empty => &[],
        }
    }
}

/// The stretches of `f` between `start` and `end` that hold data, as `(start, end)`, by
/// `SEEK_DATA`/`SEEK_HOLE`: what lies between them is a hole, which reads as zeros. Where the
/// filesystem cannot say, all of it is data.
pub fn data_ranges(f: &fs::File, start: u64, end: u64) -> Vec<(u64, u64)> {
    use std::os::fd::AsRawFd;
    let seek = |off: u64, whence| {
        // SAFETY: lseek on a file descriptor borrowed for the call; no memory is passed.
        let r = unsafe { libc::lseek(f.as_raw_fd(), off as libc::off_t, whence) };
        if r >= 0 {
            Ok(r as u64)
        } else {
            Err(io::Error::last_os_error())
        }
    };
    let mut out = Vec::new();
    let mut at = start;
    while at < end {
        let data = match seek(at, libc::SEEK_DATA) {
            Ok(d) => d,
            // ENXIO: no data after `at`.
            Err(e) if e.raw_os_error() == Some(libc::ENXIO) => break,
            Err(_) => return vec![(start, end)],
        };
        if data >= end {
            break;
        }
        let hole = seek(data, libc::SEEK_HOLE).unwrap_or(end).min(end);
        out.push((data, hole));
        at = hole;
    }
    out
}

/// The holes of `f` between `start` and `end`: the complement of [`data_ranges`].
pub fn hole_ranges(f: &fs::File, start: u64, end: u64) -> Vec<(u64, u64)> {
    let mut holes = Vec::new();
    let mut at = start;
    for (a, b) in data_ranges(f, start, end) {
        if a > at {
            holes.push((at, a));
        }
        at = b;
    }
    if at < end {
        holes.push((at, end));
    }
    holes
}

pub fn map_file(path: &Path) -> Result<Mapped> {
    let f = fs::File::open(path).map_err(|e| user_error(e, format!("opening {}", path.display())))?;
    if f.metadata()?.len() == 0 {
        return Ok(Mapped::Empty);
    }
    // SAFETY: read-only private mapping of a file the caller does not modify meanwhile.
    let m = unsafe { memmap2::Mmap::map(&f) }.with_context(|| format!("mapping {}", path.display()))?;
    Ok(Mapped::Map(m))
}

/// Writes a file atomically: a temporary file in the same directory, fsync, rename.
pub fn write_atomic(path: &Path, data: &[u8]) -> Result<()> {
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    fs::create_dir_all(dir).with_context(|| format!("creating directory {}", dir.display()))?;
    let tmp = tmp_sibling(path);
    let res = (|| -> io::Result<()> {
        let mut f = fs::File::create(&tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
        fs::rename(&tmp, path)
    })();
    if res.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    res.with_context(|| format!("writing {}", path.display()))
}

/// Copies `from` to `to` atomically (a temporary file beside `to`, fsync, rename), with
/// permissions `mode`. Returns the bytes copied.
pub fn copy_atomic(from: &Path, to: &Path, mode: u32) -> Result<u64> {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tmp_sibling(to);
    let res = (|| -> io::Result<u64> {
        let n = fs::copy(from, &tmp)?;
        fs::set_permissions(&tmp, fs::Permissions::from_mode(mode))?;
        fs::File::open(&tmp)?.sync_all()?;
        fs::rename(&tmp, to)?;
        Ok(n)
    })();
    if res.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    res.map_err(|e| user_error(e, format!("copying {} to {}", from.display(), to.display())))
}

/// A temporary name beside `path`, unique to this process.
pub fn tmp_sibling(path: &Path) -> PathBuf {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    path.with_file_name(format!(".{name}.tmp-{}", std::process::id()))
}

/// Replaces `link` with a symlink to `target`, atomically.
pub fn symlink_atomic(target: &Path, link: &Path) -> Result<()> {
    let tmp = tmp_sibling(link);
    let _ = fs::remove_file(&tmp);
    std::os::unix::fs::symlink(target, &tmp)
        .and_then(|_| fs::rename(&tmp, link))
        .with_context(|| format!("linking {} to {}", link.display(), target.display()))
}

/// Visits every entry below `root` (not `root` itself) in sorted order, depth first,
/// without following symlinks. `f` gets the path relative to `root` and returns whether to
/// descend into a directory.
pub fn walk(root: &Path, f: &mut dyn FnMut(&str, &fs::Metadata) -> io::Result<bool>) -> io::Result<()> {
    fn inner(root: &Path, rel: &str, f: &mut dyn FnMut(&str, &fs::Metadata) -> io::Result<bool>) -> io::Result<()> {
        let dir = if rel.is_empty() { root.to_path_buf() } else { root.join(rel) };
        let mut names: Vec<_> = fs::read_dir(&dir)?.map(|e| e.map(|e| e.file_name())).collect::<Result<_, _>>()?;
        names.sort();
        for name in names {
            let name = name.to_str().ok_or_else(|| {
                io::Error::new(io::ErrorKind::InvalidData, format!("non-UTF-8 file name in {}", dir.display()))
            })?;
            let child = if rel.is_empty() { name.to_string() } else { format!("{rel}/{name}") };
            let meta = fs::symlink_metadata(root.join(&child))?;
            if f(&child, &meta)? && meta.is_dir() {
                inner(root, &child, f)?;
            }
        }
        Ok(())
    }
    inner(root, "", f)
}

/// The fixed mtime of everything in the store (as Nix uses 1: "not the epoch, not now").
pub const STORE_MTIME: i64 = 1;

fn set_times(path: &Path, secs: i64) -> io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in path"))?;
    let ts = libc::timespec { tv_sec: secs as libc::time_t, tv_nsec: 0 };
    let times = [ts, ts];
    // SAFETY: `c` is a valid NUL-terminated path and `times` lives across the call.
    let r = unsafe { libc::utimensat(libc::AT_FDCWD, c.as_ptr(), times.as_ptr(), libc::AT_SYMLINK_NOFOLLOW) };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Normalises a finished build output: files read-only (0444, or 0555 if any execute bit
/// was set), directories 0555, every mtime [`STORE_MTIME`]. Refuses what a store path may
/// not hold (device nodes, sockets, FIFOs) and hard links between its files.
pub fn normalize_tree(path: &Path) -> Result<()> {
    let meta = fs::symlink_metadata(path).with_context(|| format!("reading {}", path.display()))?;
    let mut entries: Vec<(PathBuf, fs::Metadata)> = vec![(path.to_path_buf(), meta.clone())];
    if meta.is_dir() {
        walk(path, &mut |rel, m| {
            entries.push((path.join(rel), m.clone()));
            Ok(true)
        })
        .with_context(|| format!("walking {}", path.display()))?;
    }
    // Children before parents, so a directory is made read-only after its contents.
    for (p, m) in entries.iter().rev() {
        let ft = m.file_type();
        if ft.is_symlink() {
        } else if ft.is_dir() {
            fs::set_permissions(p, fs::Permissions::from_mode(0o555))
                .with_context(|| format!("setting permissions of {}", p.display()))?;
        } else if ft.is_file() {
            use std::os::unix::fs::MetadataExt;
            if m.nlink() > 1 {
                anyhow::bail!("{} is hard-linked; store paths must not contain hard links", p.display());
            }
            let mode = if m.permissions().mode() & 0o111 != 0 { 0o555 } else { 0o444 };
            fs::set_permissions(p, fs::Permissions::from_mode(mode))
                .with_context(|| format!("setting permissions of {}", p.display()))?;
        } else {
            anyhow::bail!("{} is a special file; store paths hold only files, directories and symlinks", p.display());
        }
        set_times(p, STORE_MTIME).with_context(|| format!("setting times of {}", p.display()))?;
    }
    Ok(())
}

/// Removes a tree even if it was made read-only.
pub fn remove_tree(path: &Path) -> io::Result<()> {
    match fs::symlink_metadata(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
        Ok(m) if !m.is_dir() => return fs::remove_file(path),
        Ok(_) => {}
    }
    fs::set_permissions(path, fs::Permissions::from_mode(0o755))?;
    walk(path, &mut |rel, m| {
        if m.is_dir() {
            fs::set_permissions(path.join(rel), fs::Permissions::from_mode(0o755))?;
        }
        Ok(true)
    })?;
    fs::remove_dir_all(path)
}

/// Copies a file, directory tree or symlink (symlinks copied as links, never followed);
/// the copies are owner-writable.
pub fn copy_tree(src: &Path, dst: &Path) -> Result<()> {
    tree_like(src, dst, false)
}

/// [`copy_tree`] for a tree only read from until it is removed: regular files are hard
/// links to `src`'s (a copy where a file has other links already, so that no two files
/// of the new tree share one, or across filesystems), directories and symlinks made anew
/// as `copy_tree` makes them. Files keep `src`'s modes, which `copy_tree` would have made
/// owner-writable.
pub fn link_tree(src: &Path, dst: &Path) -> Result<()> {
    tree_like(src, dst, true)
}

fn tree_like(src: &Path, dst: &Path, link: bool) -> Result<()> {
    use std::os::unix::fs::MetadataExt;
    let m = fs::symlink_metadata(src).with_context(|| format!("reading {}", src.display()))?;
    let one = |s: &Path, d: &Path, m: &fs::Metadata| -> io::Result<()> {
        let ft = m.file_type();
        if ft.is_symlink() {
            std::os::unix::fs::symlink(fs::read_link(s)?, d)
        } else if ft.is_dir() {
            fs::create_dir(d)?;
            fs::set_permissions(d, fs::Permissions::from_mode(0o755))
        } else if link && m.nlink() == 1 && fs::hard_link(s, d).is_ok() {
            Ok(())
        } else {
            fs::copy(s, d)?;
            let writable = if link { 0 } else { 0o200 };
            fs::set_permissions(d, fs::Permissions::from_mode(m.permissions().mode() | writable))
        }
    };
    let what = if link { "linking" } else { "copying" };
    one(src, dst, &m).with_context(|| format!("{what} {} to {}", src.display(), dst.display()))?;
    if m.is_dir() {
        walk(src, &mut |rel, m| {
            one(&src.join(rel), &dst.join(rel), m)?;
            Ok(true)
        })
        .with_context(|| format!("{what} {} to {}", src.display(), dst.display()))?;
    }
    Ok(())
}

/// An exclusive advisory lock (flock) on a file, held until dropped. Another process
/// holding it makes [`FileLock::take`] call `waiting` once, then wait.
pub struct FileLock {
    _file: fs::File,
}

impl FileLock {
    /// The lock if nobody holds it; None if another process does.
    pub fn try_take(path: &Path) -> Result<Option<FileLock>> {
        use std::os::fd::AsRawFd;
        let file = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
            .map_err(|e| user_error(e, format!("opening the lock file {}", path.display())))?;
        // SAFETY: flock on a file descriptor we own.
        let got = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0;
        Ok(got.then_some(FileLock { _file: file }))
    }

    pub fn take(path: &Path, waiting: impl FnOnce()) -> Result<FileLock> {
        use std::os::fd::AsRawFd;
        let file = fs::OpenOptions::new().create(true).truncate(false).write(true).open(path).map_err(|e| {
            let read_only = matches!(e.raw_os_error(), Some(libc::EROFS) | Some(libc::EACCES) | Some(libc::EPERM));
            let err = user_error(e, format!("opening the lock file {}", path.display()));
            match read_only {
                true => {
                    err.context(Fail::new(format!("{} is not writable", path.parent().unwrap_or(path).display())).hint(
                        "a build that has something to do writes to the store: give a writable one with --store DIR",
                    ))
                }
                false => err,
            }
        })?;
        // SAFETY: flock on a file descriptor we own.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            waiting();
            // SAFETY: as above.
            if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } != 0 {
                return Err(io::Error::last_os_error()).with_context(|| format!("locking {}", path.display()));
            }
        }
        Ok(FileLock { _file: file })
    }

    /// Says in the lock file who holds it (for [`FileLock::holder`] in a process that is
    /// refused); best effort: the lock holds either way.
    pub fn note(&self, who: &str) {
        use std::io::{Seek, Write};
        let mut f = &self._file;
        let _ = f.set_len(0).and_then(|_| f.seek(io::SeekFrom::Start(0))).and_then(|_| f.write_all(who.as_bytes()));
    }

    /// What the holder of the lock at `path` said about itself ([`FileLock::note`]).
    pub fn holder(path: &Path) -> Option<String> {
        fs::read_to_string(path).ok().map(|s| s.trim().to_string()).filter(|s| !s.is_empty())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_reports_command_and_stderr() {
        let err = run(Command::new("sh").args(["-c", "echo boom >&2; exit 3"])).unwrap_err();
        let s = format!("{err:#}");
        assert!(s.contains("sh -c"), "{s}");
        assert!(s.contains("boom"), "{s}");
        let err = run(&mut Command::new("mobix-no-such-tool")).unwrap_err();
        assert!(find_fail(&err).is_some(), "a missing tool is the user's to fix");
    }

    /// The system image's staging tree (`build::images`): files are links to the store's,
    /// except a file linked already (a package's hard links stay separate files, as copies
    /// made them); directories and symlinks are made anew.
    #[test]
    fn link_tree_links_what_it_can_and_copies_what_is_linked_already() {
        use std::os::unix::fs::MetadataExt;
        let d = tempfile::tempdir().unwrap();
        let src = d.path().join("src");
        fs::create_dir_all(src.join("bin")).unwrap();
        fs::write(src.join("bin/tool"), "tool").unwrap();
        fs::set_permissions(src.join("bin/tool"), fs::Permissions::from_mode(0o555)).unwrap();
        fs::write(src.join("a"), "shared").unwrap();
        fs::hard_link(src.join("a"), src.join("b")).unwrap();
        std::os::unix::fs::symlink("bin/tool", src.join("link")).unwrap();
        let dst = d.path().join("dst");
        link_tree(&src, &dst).unwrap();
        let ino = |p: &Path| fs::symlink_metadata(p).unwrap().ino();
        assert_eq!(ino(&dst.join("bin/tool")), ino(&src.join("bin/tool")), "a file of its own is linked");
        assert_eq!(fs::metadata(dst.join("bin/tool")).unwrap().mode() & 0o777, 0o555, "with its mode");
        assert_ne!(ino(&dst.join("a")), ino(&src.join("a")), "a file linked already is copied");
        assert_ne!(ino(&dst.join("a")), ino(&dst.join("b")), "and its links become two files");
        assert_eq!(fs::read_to_string(dst.join("b")).unwrap(), "shared");
        assert_eq!(fs::read_link(dst.join("link")).unwrap(), Path::new("bin/tool"));
        assert_ne!(ino(&dst.join("bin")), ino(&src.join("bin")));
    }

    #[test]
    fn normalize_makes_read_only_and_fixed_time() {
        let d = tempfile::tempdir().unwrap();
        let t = d.path().join("t");
        fs::create_dir_all(t.join("sub")).unwrap();
        fs::write(t.join("sub/f"), b"x").unwrap();
        fs::write(t.join("x"), b"y").unwrap();
        fs::set_permissions(t.join("x"), fs::Permissions::from_mode(0o700)).unwrap();
        std::os::unix::fs::symlink("sub/f", t.join("l")).unwrap();
        normalize_tree(&t).unwrap();
        use std::os::unix::fs::MetadataExt;
        let m = fs::metadata(t.join("sub/f")).unwrap();
        assert_eq!(m.mode() & 0o777, 0o444);
        assert_eq!(m.mtime(), STORE_MTIME);
        assert_eq!(fs::metadata(t.join("x")).unwrap().mode() & 0o777, 0o555);
        assert_eq!(fs::symlink_metadata(t.join("l")).unwrap().mtime(), STORE_MTIME);
        assert_eq!(fs::metadata(&t).unwrap().mode() & 0o777, 0o555);
        remove_tree(&t).unwrap();
        assert!(!t.exists());
    }
}

/// The candidate closest to `to`, when it is close enough to be a typo of it: within a
/// third of the longer name's length, and at least `floor` edits.
pub fn closest<'a>(to: &str, candidates: impl IntoIterator<Item = &'a str>, floor: usize) -> Option<&'a str> {
    candidates
        .into_iter()
        .map(|c| (edit_distance(to, c), c))
        .filter(|(d, c)| *d <= (c.len().max(to.len()) / 3).max(floor))
        .min()
        .map(|(_, c)| c)
}

/// The edit distance between two names, a swap of neighbours counting as one edit (what
/// typos are made of): the optimal string alignment distance.
pub fn edit_distance(a: &str, b: &str) -> usize {
    let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut v = (d[i - 1][j] + 1).min(d[i][j - 1] + 1).min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                v = v.min(d[i - 2][j - 2] + 1);
            }
            d[i][j] = v;
        }
    }
    d[a.len()][b.len()]
}

#[cfg(test)]
mod edit_distance_tests {
    #[test]
    fn a_swap_is_one_edit() {
        assert_eq!(crate::util::edit_distance("htpo", "htop"), 1);
        assert_eq!(crate::util::edit_distance("kitten", "sitting"), 3);
        assert_eq!(crate::util::edit_distance("", "abc"), 3);
    }
}
