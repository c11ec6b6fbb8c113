//! Binary caches on real servers: the qemu-aarch64 system's closure pushed to an S3 server
//! (s3s-fs, which checks request signatures) and to a directory Debian's nginx serves,
//! then built into empty stores from them alone, at once, with the wrong secret, an
//! untrusted key, a tampered archive and a server killed mid-download.

use crate::common::{ok, store_names};

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

const ACCESS_KEY: &str = "mobix-test";
const SECRET: &str = "correct-horse-battery";

/// A server started by a test, killed with its whole process group when dropped.
struct Server {
    child: Child,
    port: u16,
}

impl Server {
    fn start(cmd: &mut Command, port: u16) -> Server {
        let child = cmd
            .process_group(0)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {cmd:?}: {e} (run scripts/setup)"));
        let s = Server { child, port };
        let t0 = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(t0.elapsed() < Duration::from_secs(20), "{cmd:?} does not listen on {port}");
            std::thread::sleep(Duration::from_millis(50));
        }
        s
    }

    fn kill(&mut self) {
        crate::common::kill_group(&mut self.child);
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Debian's nginx serving `root` on loopback; `rate` limits each download (bytes/s).
fn nginx(dir: &Path, root: &Path, rate: Option<&str>) -> Server {
    nginx_with(dir, root, rate, None, None)
}

/// nginx as [`nginx`], with TLS when given a certificate and key (PEM files), and asking for
/// a login (HTTP Basic) when given a password file.
fn nginx_with(
    dir: &Path,
    root: &Path,
    rate: Option<&str>,
    tls: Option<(&Path, &Path)>,
    users: Option<&Path>,
) -> Server {
    let port = crate::common::free_port();
    fs::create_dir_all(dir.join("tmp")).unwrap();
    // As root, nginx's workers would otherwise run as nobody, who cannot read a test's
    // private temporary directory.
    let user = if unsafe { libc::geteuid() } == 0 { "user root;" } else { "" };
    let limit = rate.map(|r| format!("limit_rate {r};")).unwrap_or_default();
    let auth =
        users.map(|f| format!("auth_basic \"mobix cache\"; auth_basic_user_file {};", f.display())).unwrap_or_default();
    let ssl = tls
        .map(|(cert, key)| format!(" ssl; ssl_certificate {}; ssl_certificate_key {}", cert.display(), key.display()))
        .unwrap_or_default();
    let d = dir.display();
    fs::write(
        dir.join("nginx.conf"),
        format!(
            "daemon off; {user} worker_processes 2; pid {d}/nginx.pid; error_log {d}/error.log;\n\
             events {{ worker_connections 256; }}\n\
             http {{ access_log {d}/access.log; client_body_temp_path {d}/tmp; proxy_temp_path {d}/tmp;\n\
             fastcgi_temp_path {d}/tmp; uwsgi_temp_path {d}/tmp; scgi_temp_path {d}/tmp;\n\
             server {{ listen 127.0.0.1:{port}{ssl}; root {}; {limit} {auth} }} }}\n",
            root.display()
        ),
    )
    .unwrap();
    let mut cmd = Command::new("nginx");
    cmd.arg("-p").arg(dir).arg("-e").arg(dir.join("error.log")).arg("-c").arg(dir.join("nginx.conf"));
    Server::start(&mut cmd, port)
}

/// s3s-fs on loopback with one bucket, `team`, checking signatures by the test's key.
fn s3(root: &Path) -> Server {
    let port = crate::common::free_port();
    fs::create_dir_all(root.join("team")).unwrap();
    let mut cmd = Command::new("s3s-fs");
    cmd.args(["--host", "127.0.0.1", "--port", &port.to_string(), "--access-key", ACCESS_KEY, "--secret-key", SECRET])
        .arg(root);
    Server::start(&mut cmd, port)
}

/// mobix in `t` with the shared tree, AWS credentials `secret`, and no user config but `config`.
fn mobix(t: &Path, secret: &str, config: Option<&Path>, args: &[&str]) -> Output {
    let mut c = crate::common::mobix_cmd();
    c.args(args);
    // The store's commands use no mobix tree (and refuse --repo): the command is the first
    // word that is not an option or its value.
    let mut words = args.iter();
    let mut command = None;
    while let Some(a) = words.next() {
        if a.starts_with("--") {
            words.next();
        } else {
            command = Some(*a);
            break;
        }
    }
    if !matches!(command, Some("store" | "gc")) {
        c.arg("--repo").arg(crate::common::repo());
    }
    c.current_dir(t)
        .env("AWS_ACCESS_KEY_ID", ACCESS_KEY)
        .env("AWS_SECRET_ACCESS_KEY", secret)
        .env("MOBIX_CONFIG", config.map(Path::to_path_buf).unwrap_or_else(|| t.join("no-config.yaml")));
    let o = c.output().expect("running mobix");
    eprintln!("$ mobix {}\n{}", args.join(" "), String::from_utf8_lossy(&o.stderr));
    o
}

fn build(t: &Path, store: &str, extra: &[&str]) -> Output {
    let out = format!("out-{store}");
    let mut a = vec!["build", "--device", "qemu-aarch64", "--store", store, "--out", &out];
    a.extend(extra);
    mobix(t, SECRET, None, &a)
}

/// The sha256 of every image a build wrote, by name (read from the files, not the manifest).
fn images(out: &Path) -> Vec<(String, String)> {
    let m: serde_json::Value = serde_json::from_slice(&fs::read(out.join("manifest.json")).unwrap()).unwrap();
    let mut v: Vec<(String, String)> = m["images"]
        .as_object()
        .unwrap()
        .keys()
        .map(|k| {
            let bytes = fs::read(out.join(k)).unwrap_or_else(|e| panic!("{}/{k}: {e}", out.display()));
            (k.clone(), mobix::hash::Sha256Digest::of(&bytes).hex())
        })
        .collect();
    v.sort();
    assert!(v.iter().any(|(k, _)| k == "system.img"), "{v:?}");
    v
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The qemu-aarch64 system the tests push, built once per run into a store of its own (the
/// images carry the store's generations: a fresh store's are generation 1's, as the
/// substituted builds' are). Kept between runs, where the build is a no-op; substituted
/// from the binary caches of the user's configuration (`scripts/test`'s CI cache), if any.
fn reference() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = crate::common::repo().join("target/mobix-test-caches");
        // Its store is kept between runs for its paths; its generations are not: an older
        // mobix's generation would ride along as generation 1 and change the system image.
        let _ = std::fs::remove_dir_all(dir.join("store/.mobix/generations"));
        let users = std::env::var_os("MOBIX_CONFIG").map(PathBuf::from);
        let o = mobix(
            &crate::common::repo(),
            SECRET,
            users.as_deref(),
            &[
                "build",
                "--device",
                "qemu-aarch64",
                "--store",
                dir.join("store").to_str().unwrap(),
                "--out",
                dir.join("out").to_str().unwrap(),
            ],
        );
        ok(&o);
        dir
    })
}

fn keygen(t: &Path, name: &str) {
    ok(&mobix(t, SECRET, None, &["store", "keygen", name, "--key", &format!("{name}.key")]));
}

/// Pushes the reference system to `to`.
fn push(t: &Path, to: &str, secret: &str) -> Output {
    let r = reference();
    let (store, out) = (r.join("store"), r.join("out"));
    mobix(
        t,
        secret,
        None,
        &["--store", store.to_str().unwrap(), "store", "push", out.to_str().unwrap(), "--to", to, "--key", "team.key"],
    )
}

#[test]
fn a_closure_pushed_to_s3_builds_an_empty_store_from_s3_alone_and_a_wrong_secret_is_named() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let reference = reference().join("out");
    keygen(t, "team");
    let server = s3(&t.join("s3"));
    let url = format!("s3://team/phones/ci?endpoint=http://127.0.0.1:{}&region=us-east-1", server.port);

    let o = push(t, &url, SECRET);
    let pushed = ok(&o);
    assert!(pushed.lines().count() > 20 && pushed.contains("-mobix-system-qemu-aarch64"), "{pushed}");
    // Again: everything is there, nothing is sent.
    let again = push(t, &url, SECRET);
    assert!(ok(&again).is_empty() && stderr(&again).contains("pushed 0 store paths"), "{}", stderr(&again));

    let o = build(t, "b", &["--substituter", &url, "--trust", "team.key.pub"]);
    ok(&o);
    // Every path pushed came down, and an empty store had none of them already (the
    // system's paths are not counted again when the images are realised).
    let n = pushed.lines().count();
    let summary = format!("built 0 store paths, substituted {n} (");
    assert!(stderr(&o).contains(&summary) && stderr(&o).contains(", 0 already present, "), "{}", stderr(&o));
    assert_eq!(images(&t.join("out-b")), images(&reference), "the same images, byte for byte");
    ok(&mobix(t, SECRET, None, &["--store", "b", "store", "verify"]));

    // A bucket can be listed: `store pull` with no paths takes every path it has.
    let o = mobix(t, SECRET, None, &["--store", "p", "store", "pull", &url, "--trust", "team.key.pub"]);
    let pulled: BTreeSet<String> = ok(&o).lines().map(str::to_string).collect();
    let want: BTreeSet<String> = pushed.lines().map(str::to_string).collect();
    assert_eq!(pulled, want, "every pushed path pulled");
    ok(&mobix(t, SECRET, None, &["--store", "p", "store", "verify"]));
    let _ = mobix::util::remove_tree(&t.join("p"));

    // The wrong secret: the server refuses the signature, and the user is told so, for a
    // build and for a push. Nothing is built behind their back.
    let o = mobix(
        t,
        "not-the-secret",
        None,
        &[
            "build",
            "--device",
            "qemu-aarch64",
            "--store",
            "c",
            "--out",
            "out-c",
            "--substituter",
            &url,
            "--trust",
            "team.key.pub",
        ],
    );
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("SignatureDoesNotMatch")
            && stderr(&o).contains(&format!("the secret key for access key {ACCESS_KEY}")),
        "{}",
        stderr(&o)
    );
    assert!(!t.join("c").exists() || store_names(&t.join("c")).is_empty());
    let o = push(t, &url, "not-the-secret");
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("SignatureDoesNotMatch"), "{}", stderr(&o));
    // No credentials at all: refused by the server, said as much.
    let toplevel = reference_toplevel(&reference);
    let o = pull_without_env_keys(t, "d", &url, &toplevel, &[("HOME", t.as_os_str())]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("no AWS credentials were found"), "{}", stderr(&o));
    // The credentials file, at a profile AWS_PROFILE names, as the AWS tools read it.
    fs::write(
        t.join("credentials"),
        format!("[default]\naws_access_key_id = nobody\naws_secret_access_key = x\n\n[ci]\naws_access_key_id = {ACCESS_KEY}\naws_secret_access_key = {SECRET}\n"),
    )
    .unwrap();
    let file = t.join("credentials");
    let env = [("AWS_SHARED_CREDENTIALS_FILE", file.as_os_str()), ("AWS_PROFILE", "ci".as_ref())];
    let o = pull_without_env_keys(t, "e", &url, &toplevel, &env);
    ok(&o);
    assert!(String::from_utf8_lossy(&o.stdout).contains("-mobix-system-qemu-aarch64"), "{}", stderr(&o));
    ok(&mobix(t, SECRET, None, &["--store", "e", "store", "verify"]));
    for s in ["b", "c", "d", "e"] {
        let _ = mobix::util::remove_tree(&t.join(s));
    }
}

/// `mobix store pull URL TOPLEVEL` into `store` with no AWS keys in the environment, but `env`.
fn pull_without_env_keys(t: &Path, store: &str, url: &str, toplevel: &str, env: &[(&str, &std::ffi::OsStr)]) -> Output {
    let o = crate::common::mobix_cmd()
        .args(["--store", store, "store", "pull", url, toplevel, "--trust", "team.key.pub"])
        .current_dir(t)
        .env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .env("MOBIX_CONFIG", t.join("none.yaml"))
        .envs(env.iter().copied())
        .output()
        .unwrap();
    eprintln!("$ mobix --store {store} store pull {url} {toplevel}\n{}", stderr(&o));
    o
}

fn reference_toplevel(out: &Path) -> String {
    let m: serde_json::Value = serde_json::from_slice(&fs::read(out.join("manifest.json")).unwrap()).unwrap();
    m["toplevel"].as_str().unwrap().to_string()
}

#[test]
fn a_cache_served_by_nginx_feeds_four_builds_at_once_and_refuses_what_it_must() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let reference = reference().join("out");
    keygen(t, "team");
    keygen(t, "stranger");
    ok(&push(t, t.join("cache").to_str().unwrap(), SECRET));
    let server = nginx(&t.join("nginx"), &t.join("cache"), None);
    let url = format!("http://127.0.0.1:{}", server.port);

    // The user's configuration file names the cache and its key: four builds at once, each
    // into its own empty store, with no cache options at all.
    let config = t.join("config.yaml");
    let public = fs::read_to_string(t.join("team.key.pub")).unwrap();
    fs::write(&config, format!("substituters:\n  - {url}\ntrusted_keys:\n  - {}\n", public.trim())).unwrap();
    // A dry run says beforehand that all of it would come from the cache, and how much.
    let o = mobix(t, SECRET, Some(&config), &["build", "--device", "qemu-aarch64", "--store", "dry", "--dry-run"]);
    let plan: serde_json::Value = serde_json::from_str(&ok(&o)).unwrap();
    let recipes = plan["recipes"].as_array().unwrap();
    let will = |w: &str| recipes.iter().filter(|r| r["will"] == w).count();
    assert_eq!((will("build"), will("present")), (0, 0), "{plan:#}");
    assert!(will("substitute") > 20 && will("substitute") + will("unneeded") == recipes.len(), "{plan:#}");
    let mib = plan["substitute_bytes"].as_u64().unwrap() as f64 / (1u64 << 20) as f64;
    let said = format!("0 of {} recipes to build, {} to substitute ({mib:.1} MiB", recipes.len(), will("substitute"));
    assert!(stderr(&o).contains(&said), "{said}\n{}", stderr(&o));
    assert!(!t.join("dry").exists() || store_names(&t.join("dry")).is_empty(), "a dry run fetches nothing");
    let children: Vec<_> = (0..4)
        .map(|i| {
            crate::common::mobix_cmd()
                .args(["build", "--device", "qemu-aarch64", "--store", &format!("s{i}"), "--out", &format!("out-s{i}")])
                .arg("--repo")
                .arg(crate::common::repo())
                .current_dir(t)
                .env("MOBIX_CONFIG", &config)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let want = images(&reference);
    for (i, c) in children.into_iter().enumerate() {
        let o = c.wait_with_output().unwrap();
        ok(&o);
        assert!(stderr(&o).contains("built 0 store paths, substituted"), "build {i}: {}", stderr(&o));
        assert!(stderr(&o).contains(&format!("from {url}")), "{}", stderr(&o));
        assert!(images(&t.join(format!("out-s{i}"))) == want, "build {i} wrote other images");
        let _ = mobix::util::remove_tree(&t.join(format!("s{i}")));
    }

    // A static server cannot be listed: pulling from it needs the paths named.
    let o = mobix(t, SECRET, None, &["--store", "p", "store", "pull", &url, "--trust", "team.key.pub"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("name the store paths to pull"), "{}", stderr(&o));

    // `store caches` lists them as builds ask them, saying which answer.
    let dead = format!("http://127.0.0.1:{}/gone", crate::common::free_port());
    fs::write(
        &config,
        format!("substituters:\n  - {dead}\n  - {url}?priority=10\ntrusted_keys:\n  - {}\n", public.trim()),
    )
    .unwrap();
    let o = mobix(t, SECRET, Some(&config), &["store", "caches", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&ok(&o)).unwrap();
    assert_eq!(v["substituters"][0]["substituter"], format!("{url}?priority=10"), "{v}");
    assert_eq!((&v["substituters"][0]["priority"], &v["substituters"][0]["state"]), (&10.into(), &"ok".into()), "{v}");
    assert_eq!(v["substituters"][1]["substituter"], dead.as_str(), "{v}");
    assert!(v["substituters"][1]["state"].as_str().unwrap().starts_with("not used: "), "{v}");
    assert_eq!(v["trusted_keys"], serde_json::json!(["team"]));

    // A key nobody trusts: refused, named.
    let o = build(t, "u", &["--substituter", &url, "--trust", "stranger.key.pub"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("not signed by a trusted key (signed by: team)"), "{}", stderr(&o));
    assert!(stderr(&o).contains(&url), "the cache is named: {}", stderr(&o));

    // A configuration file with a mistake: the file, line and key.
    fs::write(&config, format!("substituters:\n  - {url}\n  - ftp://elsewhere/x\n")).unwrap();
    let o = mobix(t, SECRET, Some(&config), &["build", "--device", "qemu-aarch64", "--store", "v", "--out", "out-v"]);
    assert_eq!(o.status.code(), Some(1));
    let e = stderr(&o);
    assert!(
        e.contains(&format!("{}:3: key `substituters[1]`", config.display())) && e.contains("unknown scheme ftp://"),
        "{e}"
    );

    // One archive changed on the server: refused, named, and nothing of it in the store.
    let sw = fs::read_dir(t.join("cache"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.to_string_lossy().ends_with("-sw.json"))
        .unwrap();
    let sw: serde_json::Value = serde_json::from_slice(&fs::read(sw).unwrap()).unwrap();
    let archive = sw["archive"].as_str().unwrap();
    let victim = t.join("cache").join(archive);
    let original = fs::read(&victim).unwrap();
    let mut bytes = original.clone();
    let n = bytes.len();
    bytes[n / 2] ^= 0x20;
    fs::write(&victim, &bytes).unwrap();
    let o = build(t, "w", &["--substituter", &url, "--trust", "team.key.pub"]);
    assert_eq!(o.status.code(), Some(1));
    let e = stderr(&o);
    assert!(
        e.contains(&format!("{url}/{archive} (the archive of ")) && e.contains("-sw) was tampered with or damaged"),
        "{e}"
    );
    assert!(!store_names(&t.join("w")).iter().any(|p| p.ends_with("-sw")), "the tampered path is not in the store");
    fs::write(&victim, &original).unwrap();
    for s in ["u", "v", "w"] {
        let _ = mobix::util::remove_tree(&t.join(s));
    }
}

#[test]
fn a_server_killed_mid_download_leaves_the_build_to_build_what_did_not_arrive() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let reference = reference().join("out");
    keygen(t, "team");
    ok(&push(t, t.join("cache").to_str().unwrap(), SECRET));
    // Slow downloads (8 MiB/s each) so the server can die in the middle of them.
    let mut server = nginx(&t.join("nginx"), &t.join("cache"), Some("8m"));
    let url = format!("http://127.0.0.1:{}", server.port);
    let child = crate::common::mobix_cmd()
        .args([
            "build",
            "--device",
            "qemu-aarch64",
            "--store",
            "k",
            "--out",
            "out-k",
            "--substituter",
            &url,
            "--trust",
            "team.key.pub",
        ])
        .arg("--repo")
        .arg(crate::common::repo())
        .current_dir(t)
        .env("MOBIX_CONFIG", t.join("none.yaml"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Kill it once the first paths are in the store and the rest still downloading.
    let t0 = Instant::now();
    while !t.join("k").exists() || store_names(&t.join("k")).len() < 3 {
        assert!(t0.elapsed() < Duration::from_secs(120), "nothing arrived from {url}");
        std::thread::sleep(Duration::from_millis(20));
    }
    server.kill();
    let o = child.wait_with_output().unwrap();
    let e = stderr(&o);
    eprintln!("$ mobix build … --substituter {url} (killed)\n{e}");
    ok(&o);
    assert!(e.contains(&format!("the binary cache {url} stopped answering")), "{e}");
    // Once down, the cache is not waited for again when the build goes on to its images.
    assert!(!e.contains(&format!("not using the binary cache {url}")), "{e}");
    assert!(e.contains("could not substitute ") && e.contains("): building them: "), "{e}");
    let said =
        e.lines().find(|l| l.contains("a binary cache had but could not deliver: ")).unwrap_or_else(|| panic!("{e}"));
    let names = said.split(": ").last().unwrap();
    assert!(names.split(", ").count() >= 1 && names.contains("mobix-system-qemu-aarch64"), "{said}");
    assert_eq!(images(&t.join("out-k")), images(&reference), "built or substituted, the same images");
    let verify = mobix(t, SECRET, None, &["--store", "k", "store", "verify"]);
    ok(&verify);
    let _ = mobix::util::remove_tree(&t.join("k"));
}

/// A certificate authority and a certificate it signed for 127.0.0.1, made with openssl.
fn certificates(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    fs::create_dir_all(dir).unwrap();
    let f = |n: &str| dir.join(n).to_str().unwrap().to_string();
    let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
    crate::common::tool(Command::new("openssl").args(["req", "-x509"]).args(ec).args([
        "-days",
        "2",
        "-subj",
        "/CN=mobix test CA",
        "-keyout",
        &f("ca.key"),
        "-out",
        &f("ca.pem"),
    ]));
    crate::common::tool(Command::new("openssl").arg("req").args(ec).args([
        "-subj",
        "/CN=127.0.0.1",
        "-keyout",
        &f("server.key"),
        "-out",
        &f("server.csr"),
    ]));
    fs::write(dir.join("ext"), "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n")
        .unwrap();
    crate::common::tool(Command::new("openssl").args([
        "x509",
        "-req",
        "-in",
        &f("server.csr"),
        "-CA",
        &f("ca.pem"),
        "-CAkey",
        &f("ca.key"),
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        &f("ext"),
        "-out",
        &f("server.pem"),
    ]));
    (dir.join("ca.pem"), dir.join("server.pem"), dir.join("server.key"))
}

#[test]
fn an_https_cache_with_a_login_is_checked_against_the_hosts_certificate_authorities() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let reference = reference().join("out");
    keygen(t, "team");
    ok(&push(t, t.join("cache").to_str().unwrap(), SECRET));
    let (ca, cert, key) = certificates(&t.join("tls"));
    // A team's private cache: https, and a login (nginx reads {PLAIN} passwords).
    fs::write(t.join("users"), "team:{PLAIN}s3cr3t\n").unwrap();
    let server = nginx_with(&t.join("nginx"), &t.join("cache"), None, Some((&cert, &key)), Some(&t.join("users")));
    let url = format!("https://127.0.0.1:{}", server.port);
    fs::write(t.join("netrc"), "machine 127.0.0.1\n  login team\n  password s3cr3t\n").unwrap();
    fs::write(t.join("wrong-netrc"), "machine 127.0.0.1 login team password guess\n").unwrap();
    fs::write(t.join("no-netrc"), "").unwrap();
    let build_with = |store: &str, ca: Option<&Path>, netrc: &str| {
        let mut c = crate::common::mobix_cmd();
        c.args(["build", "--device", "qemu-aarch64", "--store", store, "--out", &format!("out-{store}")])
            .args(["--substituter", &url, "--trust", "team.key.pub", "--repo"])
            .arg(crate::common::repo())
            .current_dir(t)
            .env("MOBIX_CONFIG", t.join("none.yaml"))
            .env("NETRC", t.join(netrc));
        match ca {
            Some(ca) => c.env("SSL_CERT_FILE", ca),
            None => c.env_remove("SSL_CERT_FILE"),
        };
        let o = c.output().unwrap();
        eprintln!("$ mobix build --store {store} --substituter {url} (NETRC={netrc})\n{}", stderr(&o));
        o
    };
    // The team's CA named in SSL_CERT_FILE and the login in the netrc file: everything from
    // the https cache.
    let o = build_with("a", Some(&ca), "netrc");
    ok(&o);
    assert!(stderr(&o).contains("built 0 store paths, substituted"), "{}", stderr(&o));
    assert_eq!(images(&t.join("out-a")), images(&reference));
    // Without a login, or with a wrong one: refused, saying which.
    let o = build_with("c", Some(&ca), "no-netrc");
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("answered 401: the server wants a login") && stderr(&o).contains("~/.netrc"));
    let o = build_with("d", Some(&ca), "wrong-netrc");
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let refused = format!(
        "the server refused the login from {} (machine 127.0.0.1, login team)",
        t.join("wrong-netrc").display()
    );
    assert!(stderr(&o).contains(&refused), "{}", stderr(&o));
    // Without the CA, the server's certificate is not trusted: refused, saying how to trust it.
    let o = build_with("b", None, "netrc");
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("certificate") && stderr(&o).contains("SSL_CERT_FILE"), "{}", stderr(&o));
    for s in ["a", "b", "c", "d"] {
        let _ = mobix::util::remove_tree(&t.join(s));
    }
}
