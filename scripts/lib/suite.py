#!/usr/bin/env python3
"""The test suite as CI runs it (scripts/test): checks, test binaries, a timing table.

Steps: formatting, lints, the fuzz targets' build, then every test binary of both crates,
each run on its own with libtest's per-test times. Around the tests, the suite's binary
cache (see tests/README.md, "The CI cache"): pulled into the shared test store before the
tests, filled from the suite's stores after them.

At the end: where the time went (each step, each test binary, the ten slowest tests), how
many emulated phones were powered on (every start of qemu-system-aarch64 counts), written to
target/test-report/timing.json beside the whole log (target/test-report/log.txt), and one
closing line: "summary: N passed, N failed, N skipped".

With a PATTERN (`scripts/test PATTERN`), only the tests whose names contain it run, and the
formatting, lint and fuzz steps are left out.
"""

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
REPORT = REPO / "target" / "test-report"
LOG = REPORT / "log.txt"
# Where every build of the run notes the store paths it needed (mobix's MOBIX_USED_PATHS).
USED = REPORT / "used-paths"
# The stores the tests keep for the length of a run (under the repo's target/, whatever
# CARGO_TARGET_DIR says): what the CI cache is filled from.
KEPT_STORES = ["mobix-test-store", "mobix-test-store-systemd", "mobix-test-caches/store"]

log_file = None


OUTPUT = threading.Lock()


def emit(text, stream=sys.stdout):
    """Writes text to the terminal and the log, whole (two lanes write at once)."""
    with OUTPUT:
        stream.write(text)
        stream.flush()
        if log_file:
            log_file.write(text)
            log_file.flush()


def say(msg):
    emit(f"test: {msg}\n", sys.stderr)


# tests/fast's longest modules (in the run of tests/README.md), each run as a part of its
# own, longest first; the other modules run together after them.
FAST_PARTS = ["store::", "caches::", "phones::"]

# What a whole run writes under target/ from a clean clone (the shared stores, with the CI
# cache pulled into one of them, and the cargo target when the CI cache has none): the
# summary's "disk:" line measures it (`DiskWatch`): 29 GiB at its fullest, in a run that
# unpacked every Debian package anew and in the warm run after it.
RUN_NEEDS_GIB = 32


def free_gib(path):
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize / 2**30


class DiskWatch:
    """The disk's free space under target/ every few seconds: the run's summary says how
    much it took at its fullest, the figure RUN_NEEDS_GIB must stay above. Says so first
    when the disk has less room than a run writes: a run that fills it fails in whichever
    step writes next, far from the cause."""

    def __init__(self):
        self.path = REPO / "target"
        self.path.mkdir(exist_ok=True)
        self.start = free_gib(self.path)
        if self.start < RUN_NEEDS_GIB:
            say(f"only {self.start:.1f} GiB free under {self.path}; a whole run writes about {RUN_NEEDS_GIB} GiB "
                "there: steps may fail with 'No space left on device' (free some: deleting target/mobix-test-store* "
                "only makes the run slower)")
        self.lowest = self.start
        self.done = threading.Event()
        threading.Thread(target=self._watch, daemon=True).start()

    def _watch(self):
        while not self.done.wait(5):
            self.lowest = min(self.lowest, free_gib(self.path))

    def stop(self):
        self.done.set()
        self.lowest = min(self.lowest, free_gib(self.path))
        return self


def step_banner(name):
    emit(f"\n== {name}\n", sys.stderr)


def run_logged(cmd, cwd=REPO, env=None, on_line=None, held=None):
    """Runs cmd, its output to the terminal and the log (or, with `held`, into that list, to
    be shown whole when it ends); returns its exit code."""
    p = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                         errors="replace", bufsize=1)
    for line in p.stdout:
        if held is None:
            emit(line)
        else:
            held.append(line)
        if on_line:
            on_line(line)
    return p.wait()


class Timer:
    def __init__(self):
        self.steps = []  # (name, seconds, ok)

    def step(self, name, fn):
        step_banner(name)
        t0 = time.monotonic()
        ok = fn()
        self.steps.append((name, time.monotonic() - t0, ok))
        return ok


# ---------------------------------------------------------------------------------------
# The CI cache: a signed directory binary cache of mobix's own, kept between runs.

class CiCache:
    def __init__(self, mobix):
        base = os.environ.get("MOBIX_CI_CACHE")
        if not base:
            xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.environ["HOME"], ".cache")
            base = os.path.join(xdg, "mobix", "ci")
        self.dir = Path(base)
        self.cache = self.dir / "cache"
        self.key = self.dir / "key"
        self.pub = self.dir / "key.pub"
        self.config = self.dir / "config.yaml"
        self.mobix = mobix
        self.state = "not used"

    def _mobix(self, args, store=None):
        cmd = [str(self.mobix)]
        if store is not None:
            cmd += ["--store", str(store)]
        none = self.dir / "none.yaml"
        none.write_text("substituters: []\n")
        return subprocess.run(cmd + args, cwd=REPO, capture_output=True, text=True, errors="replace",
                              env=dict(os.environ, MOBIX_CONFIG=str(none)))

    def _discard(self, why):
        say(f"CI cache: {why}; discarded (this run builds what it needs and fills a new one)")
        shutil.rmtree(self.cache, ignore_errors=True)
        self.state = f"discarded: {why}"

    def prepare(self):
        """Makes the key on first use, checks the cache by pulling it whole into the shared
        test store (every signature, archive hash and content hash checked), and returns the
        environment the tests get (MOBIX_CONFIG naming it) or {} when there is none."""
        self.dir.mkdir(parents=True, exist_ok=True)
        if not self.key.exists():
            name = f"ci-{socket.gethostname()}"
            r = self._mobix(["store", "keygen", name, "--key", str(self.key)])
            if r.returncode != 0:
                say(f"CI cache: cannot make a signing key: {r.stderr.strip()}")
                self.state = "no key"
                return self._env(None)
            say(f"CI cache: made the signing key {self.key} ({name}); it never leaves this machine")
            shutil.rmtree(self.cache, ignore_errors=True)  # a cache signed by a lost key
        if not (self.cache / "mobix-cache-info").exists():
            say(f"CI cache: none at {self.cache}: a cold run (filled at the end)")
            self.state = "cold: no cache"
            return self._env(None)
        store = REPO / "target" / KEPT_STORES[0]
        t0 = time.monotonic()
        r = self._mobix(["store", "pull", str(self.cache), "--trust", str(self.pub)], store=store)
        if r.returncode != 0:
            lines = [l.strip() for l in r.stderr.splitlines() if l.strip().startswith(("error:", "caused by:"))]
            why = " / ".join(lines) or r.stderr.strip()
            if r.returncode == 1:
                # A failed check (a signature, a hash): the cache is at fault.
                self._discard(why)
            else:
                # Not the cache's fault (a full disk, a read error here): kept for the next run.
                say(f"CI cache: pulling failed: {why}; not used this run, kept for the next")
                self.state = f"not used: {why}"
            return self._env(None)
        n = len(r.stdout.split())
        say(f"CI cache: pulled {n} new store paths into {store}, each checked, in {time.monotonic() - t0:.1f} s "
            "(paths the store had already are not fetched)")
        self.state = f"warm: {n} paths pulled"
        return self._env(self.cache)

    def _env(self, cache):
        """The tests' MOBIX_CONFIG: builds into their other stores substitute from the cache
        as a user's would; without one, no binary cache (not the user's own)."""
        if cache is None:
            self.config.write_text("substituters: []\n")
        else:
            self.config.write_text(f"substituters:\n  - {cache}\ntrusted_keys:\n  - {self.pub}\n")
        return {"MOBIX_CONFIG": str(self.config)}

    def fill(self, used=None):
        """Pushes every path of the suite's kept stores (what the cache lacks). Since the
        pull brings the whole cache into the shared store, the stores hold what earlier runs
        needed too: with `used` (the file in which every build of a whole, passing run
        noted the store paths it needed), the cache then keeps only those and their
        closures, so it does not grow from run to run. Past MOBIX_CI_CACHE_MAX_MIB (default
        8192) it is deleted and the next run is cold and makes a new one."""
        if not self.key.exists():
            return
        t0 = time.monotonic()
        kept = 0
        for name in KEPT_STORES:
            store = REPO / "target" / name
            if not store.is_dir():
                continue
            paths = sorted(p.name for p in store.iterdir() if not p.name.startswith("."))
            if not paths:
                continue
            kept += len(paths)
            r = self._mobix(["store", "push", *paths, "--to", str(self.cache), "--key", str(self.key)], store=store)
            if r.returncode != 0:
                say(f"CI cache: pushing {store} failed (the next run is colder): {r.stderr.strip()}")
        dropped = self._keep_only(used) if used else 0
        size = sum(f.stat().st_size for f in self.cache.rglob("*") if f.is_file()) / 2**20 if self.cache.is_dir() else 0
        cap = int(os.environ.get("MOBIX_CI_CACHE_MAX_MIB", "8192"))
        if size > cap:
            shutil.rmtree(self.cache, ignore_errors=True)
            say(f"CI cache: {size:.0f} MiB is over {cap} MiB; deleted: the next run is cold and makes a new one")
            return
        say(f"CI cache: {kept} store paths pushed to {self.cache} ({size:.0f} MiB) in {time.monotonic() - t0:.1f} s"
            + (f"; {dropped} that no build of this run needed dropped" if dropped else ""))

    def _keep_only(self, used):
        """Deletes from the cache the paths outside the closure of the names in `used`:
        their metadata first, then the archives no metadata names (an interrupted prune
        leaves only unnamed archives behind). Returns how many paths went."""
        names = {l.strip() for l in used.read_text().splitlines() if l.strip()} if used.exists() else set()
        if not names or not self.cache.is_dir():
            return 0
        meta = {}
        for f in self.cache.glob("*.json"):
            try:
                meta[f.name[:-5]] = json.loads(f.read_text())
            except ValueError:
                continue
        keep, todo = set(), [n for n in names if n in meta]
        while todo:
            n = todo.pop()
            if n in keep:
                continue
            keep.add(n)
            todo += [r.rsplit("/", 1)[-1] for r in meta[n].get("references", []) if r.rsplit("/", 1)[-1] in meta]
        for n in meta.keys() - keep:
            (self.cache / f"{n}.json").unlink()
        named = {meta[n].get("archive") for n in keep}
        archives = self.cache / "archives"
        for a in archives.iterdir() if archives.is_dir() else []:
            if f"archives/{a.name}" not in named:
                a.unlink()
        return len(meta.keys() - keep)


# ---------------------------------------------------------------------------------------
# Test binaries.

def test_binaries(manifest_dir, env):
    """Builds the test binaries of a workspace; returns [(name, executable)]."""
    cmd = ["cargo", "test", "--locked", "--no-run", "--message-format=json-render-diagnostics"]
    if manifest_dir != REPO:
        cmd.append("--workspace")
    else:
        cmd += ["--lib", "--bins", "--tests"]
    p = subprocess.Popen(cmd, cwd=manifest_dir, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out, err = p.communicate()
    sys.stderr.write(err)
    log_file.write(err)
    if p.returncode != 0:
        return None
    found = []
    for line in out.splitlines():
        try:
            m = json.loads(line)
        except ValueError:
            continue
        if m.get("reason") == "compiler-artifact" and m.get("executable") and m["profile"]["test"]:
            t = m["target"]
            kind = t["kind"][0]
            pkg = m["package_id"].split("#")[-1].split("@")[0].rsplit("/", 1)[-1]
            name = f"{pkg} {kind}" if kind in ("lib", "bin") else f"{pkg} tests/{t['name']}"
            found.append((name, m["executable"]))
    return found  # main() puts them in lanes


RESULT = re.compile(r"^test (\S+) \.\.\. (ok|FAILED|ignored)(?: <([0-9.]+)s>)?")
SUMMARY = re.compile(r"^test result: \w+\. (\d+) passed; (\d+) failed; (\d+) ignored")


class Results:
    def __init__(self):
        self.binaries = []  # {name, seconds, passed, failed, ignored}
        self.tests = []  # (seconds, binary, test, outcome)
        self.lock = threading.Lock()

    def run(self, name, exe, cwd, env, pattern, live=True, part=None):
        """Runs one test binary; with `live` false its output is shown whole at its end (it
        runs beside another binary whose output is shown as it comes). With `part` (a label
        and libtest arguments: filters or --skip), only those of its tests."""
        counts = {"passed": 0, "failed": 0, "ignored": 0}
        label = f"{name} ({part[0]})" if part else name
        held = None if live else []
        ran = []
        if live:
            step_banner(label)

        def on_line(line):
            m = RESULT.match(line)
            if m:
                ran.append(m.group(1))
                with self.lock:
                    self.tests.append((float(m.group(3) or 0), name, m.group(1), m.group(2)))
            m = SUMMARY.match(line)
            if m:
                counts["passed"], counts["failed"], counts["ignored"] = map(int, m.groups())

        args = [exe, "-Z", "unstable-options", "--report-time"]
        if pattern:
            args.append(pattern)
        if part:
            args += part[1]
        t0 = time.monotonic()
        code = run_logged(args, cwd=cwd, env=dict(env, RUSTC_BOOTSTRAP="1"), on_line=on_line, held=held)
        if held is not None:
            emit(f"\n== {label} (ran beside the phone tests; its output as a whole)\n" + "".join(held))
        if code != 0 and counts["failed"] == 0:
            counts["failed"] = 1  # it died outside a test (a crash, a signal)
        with self.lock:
            self.binaries.append(dict(name=label, seconds=time.monotonic() - t0, ran=ran, **counts))
        return code == 0


class Boots:
    """Counts emulated-phone power-ons: a qemu-system-aarch64 first on PATH that notes each
    start of a machine (not `--version`) in a file, then runs the real one."""

    def __init__(self):
        self.file = REPORT / "boots"
        self.file.write_text("")
        real = shutil.which("qemu-system-aarch64")
        self.bin = REPORT / "shim"
        self.bin.mkdir(exist_ok=True)
        shim = self.bin / "qemu-system-aarch64"
        shim.write_text(
            "#!/bin/sh\n"
            "# scripts/test: counts power-ons of the emulated phones, then runs QEMU.\n"
            "# A build's device-tree dump (-M virt,dumpdtb=…) starts no machine.\n"
            f'case " $* " in *dumpdtb=*) ;; *" -M "*|*" -machine "*) echo "${{MOBIX_TEST:-?}}" >> "{self.file}";; esac\n'
            f'exec "{real}" "$@"\n'
        )
        shim.chmod(0o755)
        self.ok = real is not None

    def env(self, env):
        return dict(env, PATH=f"{self.bin}:{env['PATH']}") if self.ok else env

    def by_test(self):
        """Power-ons by the test that asked for them (MOBIX_TEST, set by tests/common)."""
        counts = {}
        for name in self.file.read_text().split():
            counts[name] = counts.get(name, 0) + 1
        return counts


def fmt_time(s):
    # Rounded to tenths first, so that 599.96 s reads 10:00.0, not 9:60.0.
    t = round(s * 10)
    return f"{t // 600}:{t % 600 / 10:04.1f}" if t >= 600 else f"{t / 10:.1f} s"


def main():
    global log_file
    pattern = sys.argv[1] if len(sys.argv) > 1 else None
    REPORT.mkdir(parents=True, exist_ok=True)
    log_file = open(LOG, "w")
    t_start = time.monotonic()
    timer = Timer()
    # scripts/test set up the host first (packages, Rust targets, tools): part of the run.
    if os.environ.get("MOBIX_SUITE_STARTED"):
        setup = max(0.0, time.time() - float(os.environ["MOBIX_SUITE_STARTED"]))
        timer.steps.append(("setup (scripts/setup: packages, Rust targets, tools)", setup, True))
        t_start -= setup
    disk = DiskWatch()
    env = dict(os.environ)
    ok = True

    def cmd(*args, cwd=REPO):
        return lambda: run_logged(list(args), cwd=cwd, env=env) == 0

    # Lints run beside the phone tests (below), off the run's critical path.
    lints = []
    if not pattern:
        ok &= timer.step("formatting (cargo fmt --check)", cmd("cargo", "fmt", "--all", "--", "--check"))
        ok &= timer.step("formatting of init/", cmd("cargo", "fmt", "--all", "--", "--check", cwd=REPO / "init"))
        lints = [
            ("lints (cargo clippy -D warnings)", ["cargo", "clippy", "--locked", "--all-targets", "--", "-D", "warnings"],
             REPO),
            ("lints of init/", ["cargo", "clippy", "--locked", "--workspace", "--all-targets", "--", "-D", "warnings"],
             REPO / "init"),
            ("fuzz targets build (running them is opt-in: scripts/fuzz)",
             ["cargo", "check", "--locked", "--quiet", "--manifest-path", "fuzz/Cargo.toml", "--bins",
              "--no-default-features"], REPO),
        ]

    built = {}

    def build(where):
        def f():
            b = test_binaries(where, env)
            built[where] = b
            return b is not None
        return f

    ok &= timer.step("build the tests of init/ (the phone's program, for the host)", build(REPO / "init"))
    ok &= timer.step("build mobix and its tests", build(REPO))
    if built.get(REPO) is None:
        say("the tests did not build")
        finish(timer, Results(), None, t_start, False, {}, disk)
        return 1
    mobix = Path(next(e for n, e in built[REPO] if n == "mobix tests/fast")).parents[1] / "mobix"

    cache = CiCache(mobix)
    timer.step("CI cache: check and pull", lambda: (env.update(cache.prepare()), True)[1])

    boots = Boots()
    results = Results()
    tenv = dict(boots.env(env), MOBIX_USED_PATHS=str(USED))
    USED.write_text("")
    t0 = time.monotonic()
    # Two lanes: tests/phone starts in one, tests/systemd in the other. The phones of both
    # share the machine's cores through lock files (tests/common: three emulated CPUs at a
    # time, a systemd phone two of them, a small phone one), so a systemd phone runs beside
    # at most one small phone; builds go on beside them all. Whichever lane ends first takes
    # the rest, longest first: tests/fast (which builds), the lints, the unit tests.
    every = [(name, exe, where) for where, bins in built.items() for name, exe in bins]
    phone = [b for b in every if b[0].endswith("tests/phone")]
    systemd = [b for b in every if b[0].endswith("tests/systemd")]
    fast = [b for b in every if b[0].endswith("tests/fast")]
    units = [b for b in every if b not in phone + systemd + fast]
    # tests/fast goes in parts (its longest modules, then the others), so that both lanes
    # can take some: whole, it kept the lane that took it busy two minutes after the other
    # had run out of work. With a PATTERN it runs whole.
    if pattern:
        fast_jobs = [("tests", b) for b in fast]
    else:
        skips = [a for m in FAST_PARTS for a in ("--skip", m)]
        fast_jobs = [("tests", (*b, (m, [m]))) for b in fast for m in FAST_PARTS]
        fast_jobs += [("tests", (*b, ("the other modules", skips))) for b in fast]
    rest = fast_jobs + [("lint", l) for l in lints] + [("tests", b) for b in units]
    taking = threading.Lock()
    outcome = {}

    def lane(first, live):
        good = all([results.run(n, e, w, tenv, pattern, live=live) for n, e, w in first])
        while True:
            with taking:
                if not rest:
                    break
                kind, job = rest.pop(0)
            if kind == "tests":
                good &= results.run(*job[:3], tenv, pattern, live=False, part=job[3] if len(job) > 3 else None)
                continue
            name, args, cwd = job
            held = []
            t = time.monotonic()
            code = run_logged(args, cwd=cwd, env=env, held=held)
            emit(f"\n== {name} (ran beside the phone tests; its output as a whole)\n" + "".join(held))
            with taking:
                timer.steps.append((f"{name}, beside the phone tests", time.monotonic() - t, code == 0))
            good &= code == 0
        outcome[live] = good

    side = threading.Thread(target=lane, args=(systemd, False))
    side.start()
    lane(phone, True)
    side.join()
    ok &= all(outcome.values())
    timer.steps.append(("tests (each binary below)", time.monotonic() - t0, ok))
    # Only a whole run that passed says what the cache must keep (a failed or partial run
    # may not have built what the other tests need).
    whole = ok and not pattern
    timer.step("CI cache: fill", lambda: (cache.fill(USED if whole else None), True)[1])
    finish(timer, results, cache, t_start, ok, boots.by_test(), disk)
    return 0 if ok else 1


def finish(timer, results, cache, t_start, ok, boots_by_test, disk):
    total = time.monotonic() - t_start
    disk.stop()
    passed = sum(b["passed"] for b in results.binaries)
    failed = sum(b["failed"] for b in results.binaries)
    skipped = sum(b["ignored"] for b in results.binaries)
    for b in results.binaries:
        b["boots"] = sum(boots_by_test.get(t, 0) for t in b.pop("ran"))
    boots = sum(boots_by_test.values())
    slowest = sorted((t for t in results.tests if t[3] != "ignored"), reverse=True)[:10]
    lines = ["", "== where the time went", ""]
    lines.append(f"{'step':<64} {'time':>9}")
    for name, s, good in timer.steps:
        lines.append(f"{name[:64]:<64} {fmt_time(s):>9}{'' if good else '  FAILED'}")
    lines += ["", f"{'test binary':<40} {'time':>9} {'tests':>6} {'boots':>6}"]
    for b in results.binaries:
        lines.append(f"{b['name']:<40} {fmt_time(b['seconds']):>9} {b['passed'] + b['failed']:>6} {b['boots']:>6}"
                     + ("  FAILED" if b["failed"] else ""))
    # By module (a file of tests/fast, tests/phone, tests/systemd): the tests' own times
    # added up (they overlap where a binary runs two at once), and their power-ons.
    modules = {}
    for secs, binary, name, outcome in results.tests:
        if "tests/" not in binary or outcome == "ignored":
            continue
        key = f"{binary.rsplit('/', 1)[-1]}/{name.split('::')[0]}"
        m = modules.setdefault(key, [0.0, 0, 0])
        m[0] += secs
        m[1] += 1
        m[2] += boots_by_test.get(name, 0)
    lines += ["", f"{'module (tests/BINARY/MODULE.rs)':<40} {'time':>9} {'tests':>6} {'boots':>6}"]
    for key, (secs, n, b) in sorted(modules.items(), key=lambda kv: -kv[1][0]):
        lines.append(f"{key:<40} {fmt_time(secs):>9} {n:>6} {b:>6}")
    lines += ["", "the ten slowest tests (power-ons):"]
    for s, binary, name, outcome in slowest:
        lines.append(f"  {fmt_time(s):>9} {boots_by_test.get(name, 0):>3}  {binary.rsplit('/', 1)[-1]}: {name}"
                     f"{'' if outcome == 'ok' else '  ' + outcome}")
    lines += ["", f"emulated-phone power-ons (QEMU starts): {boots}"]
    if cache:
        lines.append(f"CI cache: {cache.state} ({cache.cache})")
    lines.append(f"disk: {disk.start:.1f} GiB free at the start, {disk.lowest:.1f} GiB at the fullest: the run took up to "
                 f"{disk.start - disk.lowest:.1f} GiB (it warns under {RUN_NEEDS_GIB} GiB free)")
    lines.append(f"total: {fmt_time(total)}; log {LOG}, timing {REPORT / 'timing.json'}")
    text = "\n".join(lines)
    print(text, file=sys.stderr)
    log_file.write(text + "\n")
    report = {
        "total_seconds": round(total, 1),
        "steps": [{"name": n, "seconds": round(s, 1), "ok": g} for n, s, g in timer.steps],
        "binaries": [dict(b, seconds=round(b["seconds"], 1)) for b in results.binaries],
        "slowest": [{"seconds": s, "binary": b, "test": n, "outcome": o} for s, b, n, o in slowest],
        "modules": {k: {"seconds": round(v[0], 1), "tests": v[1], "boots": v[2]} for k, v in modules.items()},
        "tests": [{"seconds": s, "binary": b, "test": n, "outcome": o, "boots": boots_by_test.get(n, 0)}
                  for s, b, n, o in sorted(results.tests)],
        "boots": boots,
        "ci_cache": cache.state if cache else None,
        "disk_gib": {"free_at_start": round(disk.start, 1), "free_at_fullest": round(disk.lowest, 1)},
        "passed": passed, "failed": failed, "skipped": skipped,
    }
    tmp = REPORT / "timing.json.tmp"
    tmp.write_text(json.dumps(report, indent=1) + "\n")
    tmp.rename(REPORT / "timing.json")
    if not ok and failed == 0:
        failed = 1  # a check before the tests failed
    summary = f"summary: {passed} passed, {failed} failed, {skipped} skipped"
    print(summary, flush=True)
    log_file.write(summary + "\n")


if __name__ == "__main__":
    sys.exit(main())
