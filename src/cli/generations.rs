//! `mobix generations list|show|diff|delete|rollback`.

use super::*;

#[derive(Args, Debug)]
pub(super) struct GenTarget {
    /// The device.
    #[arg(long, value_name = "NAME")]
    device: String,
    /// Its variant.
    #[arg(long, value_name = "NAME")]
    variant: Option<String>,
    /// The out directory whose phone's generations these are (each out directory numbers
    /// its own) [default: out/<device>/ in the mobix tree].
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// Print JSON (with a `version` field).
    #[arg(long)]
    json: bool,
}

impl GenTarget {
    fn out_dir(&self, repo: &Path) -> PathBuf {
        DeviceOut { device: self.device.clone(), variant: self.variant.clone(), config: None, out: self.out.clone() }
            .out_dir(repo)
    }
}

#[derive(Subcommand, Debug)]
pub(super) enum GenCmd {
    /// Every generation of the phone built into the out directory (--out), with its
    /// standing as the phone last reported it.
    List(GenTarget),
    /// One generation: its record, boot entry and closure size.
    Show {
        #[command(flatten)]
        target: GenTarget,
        /// The generation number.
        number: u32,
    },
    /// What changed from generation A to generation B: store paths added, removed and
    /// changed, with sizes.
    Diff {
        #[command(flatten)]
        target: GenTarget,
        /// The older generation.
        a: u32,
        /// The newer generation.
        b: u32,
    },
    /// Forget generation N: later system images no longer carry it (its store paths stay
    /// until garbage collection). The newest generation cannot be deleted; one the phone
    /// needs (booted, default, last good, as the host last saw it) only with --force.
    Delete {
        #[command(flatten)]
        target: GenTarget,
        /// The generation to forget.
        number: u32,
        /// Delete it even if the phone still needs it (booted, default or last good).
        #[arg(long)]
        force: bool,
    },
    /// Write images into the out directory that boot an older generation by default (the
    /// newest older one the phone has not found bad, or --generation N): its boot.img, and a system
    /// image carrying the usual generations with N as the default. Flash them, or `mobix test`.
    Rollback {
        #[command(flatten)]
        target: DeviceOut,
        /// The generation to roll back to.
        #[arg(long, value_name = "N", alias = "to")]
        generation: Option<u32>,
        /// Print the manifest as JSON on stdout.
        #[arg(long)]
        json: bool,
    },
}

pub(super) fn cmd_generations(g: &Global, c: &GenCmd) -> Result<ExitCode> {
    let t = match c {
        GenCmd::Rollback { target, generation, json } => return cmd_rollback(g, target, *generation, *json),
        GenCmd::List(t)
        | GenCmd::Show { target: t, .. }
        | GenCmd::Diff { target: t, .. }
        | GenCmd::Delete { target: t, .. } => t,
    };
    let repo = find_repo(g)?;
    let profile =
        profile::load_with(&repo, &t.device, profile::Selection { variant: t.variant.as_deref(), config: None })?;
    let store = open_store(g)?;
    let lin = generation::Lineage::of(&profile.instance(), &t.out_dir(&repo));
    let all = generation::list(&store, &lin)?;
    // Where else this device's generations are, for a user looking in the wrong out directory.
    let elsewhere = |otherwise: &str| -> String {
        let others: Vec<String> = generation::lineages(&store, &profile.instance())
            .unwrap_or_default()
            .into_iter()
            .filter(|(o, n)| o != lin.out() && *n > 0 && o.exists())
            .map(|(o, n)| format!("{} ({n})", o.display()))
            .collect();
        if others.is_empty() {
            otherwise.to_string()
        } else {
            format!(
                "each out directory numbers its own generations; {} has some in: {} (give --out)",
                profile.shown(),
                others.join(", ")
            )
        }
    };
    let get = |n: u32| -> Result<&generation::Record> {
        all.get(&n).ok_or_else(|| {
            let known: Vec<String> = all.keys().map(|k| k.to_string()).collect();
            Fail::new(format!("{} built into {} has no generation {n}", profile.shown(), lin.out().display()))
                .hint(if known.is_empty() {
                    elsewhere("build it first with `mobix build`")
                } else {
                    format!("its generations: {}", known.join(", "))
                })
                .into()
        })
    };
    let print_json = |v: serde_json::Value| -> Result<()> {
        let mut v = v;
        v["version"] = serde_json::json!(1);
        println!("{}", serde_json::to_string_pretty(&v)?);
        Ok(())
    };
    let human_time = generation::utc_minutes;
    match c {
        GenCmd::List(_) => {
            // As the phone last reported (what `mobix test` read back off it).
            let known = generation::ledger(&store, &lin)?;
            let standing =
                |n: u32, r: &generation::Record| known.as_ref().and_then(|k| generation::standing(k, n, &r.toplevel));
            if t.json {
                let gens: Vec<serde_json::Value> = (all.iter())
                    .map(|(n, r)| {
                        let mut v = serde_json::to_value(r).expect("serialisable");
                        v["phone"] = serde_json::to_value(standing(*n, r)).expect("serialisable");
                        v
                    })
                    .collect();
                let fallback = generation::fell_back(known.as_ref(), all.keys().next_back().copied());
                return print_json(
                    serde_json::json!({"device": profile.instance(), "generations": gens, "fallback": fallback}),
                )
                .map(|_| ExitCode::SUCCESS);
            }
            let newest = all.keys().next_back().copied();
            let words: Vec<String> = all
                .iter()
                .map(|(n, r)| standing(*n, r).map_or("not seen on the phone".into(), |s| s.words()))
                .collect();
            let width = words.iter().map(|w| w.len()).max().unwrap_or(0);
            if all.is_empty() {
                progress(&format!("no generations of {} built into {}", profile.shown(), lin.out().display()));
                progress(&format!("hint: {}", elsewhere("build one with `mobix build`")));
            }
            for ((n, r), w) in all.iter().zip(&words) {
                let mark = if Some(*n) == newest { "  (newest)" } else { "" };
                println!("{n:>4}  {}  {w:width$}  {}{mark}", human_time(r.created), r.toplevel);
            }
            if let Some(words) = generation::fell_back(known.as_ref(), newest) {
                progress(&words);
            }
            Ok(ExitCode::SUCCESS)
        }
        GenCmd::Delete { number, force, .. } => {
            let known = generation::ledger(&store, &lin)?;
            let protected = known.as_ref().map(generation::protected).unwrap_or_default();
            if let Some(why) = generation::refuse_delete(&all, *number, &protected, *force) {
                let hint = if protected.contains(number) && all.keys().next_back() != Some(number) {
                    "--force deletes it anyway; the phone keeps it until an image without it is flashed"
                } else {
                    "`mobix generations list` shows the generations"
                };
                return Err(Fail::new(format!("not deleting generation {number} of {}: {why}", profile.shown()))
                    .hint(hint)
                    .into());
            }
            generation::delete(&store, &store.lock()?, &lin, *number)?;
            progress(&format!(
                "deleted generation {number} of {}; system images built from now on do not carry it",
                profile.shown()
            ));
            Ok(ExitCode::SUCCESS)
        }
        GenCmd::Rollback { .. } => unreachable!("handled above"),
        GenCmd::Show { number, .. } => {
            let r = get(*number)?;
            let closure = store.closure(std::slice::from_ref(&r.toplevel))?;
            let size: u64 = closure.iter().map(|p| generation::path_size(&store, p)).sum();
            let boot: serde_json::Value = std::fs::read_to_string(store.host_path(&r.toplevel).join("boot.json"))
                .ok()
                .and_then(|t| serde_json::from_str(&t).ok())
                .unwrap_or(serde_json::Value::Null);
            let v =
                serde_json::json!({"record": r, "boot": boot, "closure_paths": closure.len(), "closure_bytes": size});
            if t.json {
                return print_json(v).map(|_| ExitCode::SUCCESS);
            }
            println!("generation {} of {} ({})", r.generation, r.device, human_time(r.created));
            println!("toplevel   {}", r.toplevel);
            println!("label      {}", r.label);
            println!("kernel     {}", boot["kernel_release"].as_str().unwrap_or("?"));
            println!("cmdline    {}", boot["cmdline"].as_str().unwrap_or("?"));
            println!("closure    {} store paths, {} bytes", closure.len(), size);
            Ok(ExitCode::SUCCESS)
        }
        GenCmd::Diff { a, b, .. } => {
            let (ra, rb) = (get(*a)?, get(*b)?);
            let ca = store.closure(std::slice::from_ref(&ra.toplevel))?;
            let cb = store.closure(std::slice::from_ref(&rb.toplevel))?;
            let changes = generation::diff(&ca, &cb, &|p| generation::path_size(&store, p));
            if t.json {
                return print_json(serde_json::json!({"from": a, "to": b, "changes": changes}))
                    .map(|_| ExitCode::SUCCESS);
            }
            for ch in &changes {
                match (&ch.before, &ch.after) {
                    (None, Some(p)) => println!("+ {:<28} {:>12}  {p}", ch.name, ch.after_size),
                    (Some(p), None) => println!("- {:<28} {:>12}  {p}", ch.name, ch.before_size),
                    (Some(_), Some(p)) => println!(
                        "~ {:<28} {:>12}  {p} ({:+} bytes)",
                        ch.name,
                        ch.after_size,
                        ch.after_size as i64 - ch.before_size as i64
                    ),
                    (None, None) => {}
                }
            }
            if changes.is_empty() {
                progress(&format!("generations {a} and {b} have the same closure"));
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// `mobix generations rollback`: images that boot an older generation by default.
pub(super) fn cmd_rollback(g: &Global, t: &DeviceOut, to: Option<u32>, json: bool) -> Result<ExitCode> {
    let repo = find_repo(g)?;
    let profile = t.load(&repo)?;
    let lock = Lock::load(&repo)?;
    let store = open_store(g)?;
    let ctx = builder_ctx(&store)?;
    let inputs = pipeline::image_facts(&repo, &profile, &store)?;
    let pipe = pipeline::Pipeline { ctx: &ctx, profile: &profile, lock: &lock, inputs: &inputs };
    let out = t.out_dir(&repo);
    let r = pipe.rollback(&out, to)?;
    progress(&format!(
        "rolled back from generation {} ({}) to {}: {} now boots generation {} by default \
         (carrying {}); flash it, or try it with `mobix test`",
        r.from,
        r.from_what,
        r.to,
        out.display(),
        r.to,
        r.carried.iter().map(|n| n.to_string()).collect::<Vec<_>>().join(", ")
    ));
    if json {
        println!("{}", serde_json::to_string_pretty(&r.manifest)?);
    }
    Ok(ExitCode::SUCCESS)
}
