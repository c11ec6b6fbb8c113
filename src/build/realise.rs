//! Realisation: the store paths a plan's targets need, walked from the targets down;
//! each path the store lacks is substituted from a binary cache (signatures checked) or
//! built by [`super::build_one`], inputs first, and noted for `MOBIX_USED_PATHS`.

use super::{build_one, Ctx};
use crate::plan::Plan;
use crate::store::{Store, StorePath};
use crate::util::Fail;
use anyhow::{Context, Result};
use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::Path;
use std::time::Instant;

/// What a realisation did.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct Report {
    pub built: Vec<StorePath>,
    /// Taken from a binary cache instead of built.
    pub substituted: Vec<StorePath>,
    /// Archive bytes downloaded from binary caches.
    pub downloaded: u64,
    /// Paths a cache had but could not deliver (it stopped answering): built instead.
    pub built_instead: Vec<StorePath>,
    /// Planned paths that were in the store already (not those substituted here).
    pub present: BTreeSet<StorePath>,
}

/// The variable naming a file to which every realisation appends the base names of the
/// store paths it needed, one per line: `scripts/test` keeps its CI cache to what a run
/// used with it. Unset, nothing is written.
pub const USED_PATHS_ENV: &str = "MOBIX_USED_PATHS";

/// Appends `needed` to the [`USED_PATHS_ENV`] file, in one write (builds running at once
/// append whole lists). A failure to write is said and ignored: it only makes a cache keep
/// less.
fn note_used(ctx: &Ctx, needed: &BTreeSet<StorePath>) {
    let Some(file) = std::env::var_os(USED_PATHS_ENV) else { return };
    let text: String = needed.iter().map(|p| p.base_name() + "\n").collect();
    let wrote = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&file)
        .and_then(|mut f| std::io::Write::write_all(&mut f, text.as_bytes()));
    if let Err(e) = wrote {
        ctx.progress.note(&format!("warning: {USED_PATHS_ENV}={}: {e}", Path::new(&file).display()));
    }
}

/// What [`walk`] found: every path the targets need, and those a cache will give.
struct Walk {
    needed: BTreeSet<StorePath>,
    found: BTreeMap<StorePath, crate::store::cache::Found>,
}

/// From the targets down: a path in the store needs what it refers to; a path a cache has
/// (unless in `build_anyway`) needs what its metadata says it refers to; any other path
/// needs its recipe's inputs. Caches are asked one level of the walk at a time.
fn walk(
    store: &Store,
    plan: &Plan,
    targets: &[StorePath],
    caches: Option<&crate::store::cache::Caches>,
    build_anyway: &BTreeSet<StorePath>,
) -> Result<Walk> {
    let mut w = Walk { needed: BTreeSet::new(), found: BTreeMap::new() };
    let mut level: Vec<StorePath> = targets.to_vec();
    while !level.is_empty() {
        let new: Vec<StorePath> = level.into_iter().filter(|p| w.needed.insert(p.clone())).collect();
        let ask: Vec<StorePath> =
            new.iter().filter(|p| !store.contains(p) && !build_anyway.contains(*p)).cloned().collect();
        let mut answers = match caches {
            Some(c) if !ask.is_empty() => c.query(&ask)?,
            _ => BTreeMap::new(),
        };
        level = Vec::new();
        for p in new {
            if store.contains(&p) {
                // Present, but its whole closure must be too (a damaged path deleted for
                // repair is realised again, under whatever refers to it).
                level.extend(store.references(&p).unwrap_or_default());
            } else if let Some(f) = answers.remove(&p) {
                level.extend(f.info.references.iter().filter(|r| **r != p).cloned());
                w.found.insert(p, f);
            } else if let Some(r) = plan.get(&p) {
                level.extend(r.recipe.inputs.values().cloned());
            }
        }
    }
    Ok(w)
}

/// Realises `targets` and everything they need, in plan order. From the targets down,
/// a path already in the store or in a binary cache ([`Ctx::substituters`]) needs none of
/// its recipe's inputs: only those recipes run that nothing can stand in for. What caches
/// have is fetched first, several downloads at once; a path the network fails to
/// deliver is built instead, and the run says so.
pub fn realise(ctx: &Ctx, plan: &Plan, targets: &[StorePath]) -> Result<Report> {
    let mut report = Report::default();
    let mut w = walk(ctx.store, plan, targets, None, &BTreeSet::new())?;
    note_used(ctx, &w.needed);
    if w.needed.iter().all(|p| ctx.store.contains(p)) {
        report.present = w.needed.into_iter().filter(|p| plan.get(p).is_some()).collect();
        return Ok(report);
    }
    let lock = ctx.store.lock()?;
    if let Some(caches) = open_caches(ctx)? {
        let done = substitute(ctx, plan, targets, &caches, &lock, &mut report);
        remember_down(ctx, &caches);
        done?;
        w = walk(ctx.store, plan, targets, None, &BTreeSet::new())?;
        note_used(ctx, &w.needed);
    }
    for p in w.needed.iter().filter(|p| plan.get(p).is_none()) {
        if !ctx.store.contains(p) {
            let hint = if plan.existing.contains(p) {
                "it belongs to an older generation: build that generation again, or drop it"
            } else {
                "a present store path refers to it: `mobix store verify` names what is damaged"
            };
            return Err(Fail::new(format!("{p} is needed but not in the store, and this plan cannot build it"))
                .hint(hint)
                .into());
        }
    }
    let order: Vec<&StorePath> = plan.recipes.iter().map(|r| &r.path).filter(|p| w.needed.contains(*p)).collect();
    // The bar counts what is left to do: paths to build.
    let total = order.iter().filter(|p| !ctx.store.contains(p)).count();
    for path in order {
        let done = report.built.len();
        if ctx.store.contains(path) {
            if !report.substituted.contains(path) {
                report.present.insert(path.clone());
            }
            continue;
        }
        let planned = plan.get(path).expect("only planned paths are in the order");
        let candidates = plan.input_closure(&planned.path);
        let t0 = Instant::now();
        let mut announced = false;
        let built = ctx
            .store
            .realise(&lock, &planned.path, &candidates, |out| {
                ctx.progress.note(&format!("building {} ({})", planned.path, planned.recipe.builder.kind()));
                announced = true;
                let label = format!("building {} ({})", planned.recipe.name, planned.recipe.builder.kind());
                let _step = crate::report::step(ctx.progress, &label, done, total);
                build_one(ctx, planned, out)
            })
            .with_context(|| format!("building {}", planned.path))?;
        if built {
            if announced {
                ctx.progress.note(&format!("built {} in {:.1}s", planned.recipe.name, t0.elapsed().as_secs_f64()));
            }
            report.built.push(planned.path.clone());
        } else {
            report.present.insert(planned.path.clone());
        }
    }
    if !report.built_instead.is_empty() {
        let names: Vec<&str> =
            report.built_instead.iter().filter(|p| report.built.contains(p)).map(|p| p.name()).collect();
        ctx.progress.note(&format!(
            "built {} store paths a binary cache had but could not deliver: {}",
            names.len(),
            names.join(", ")
        ));
    }
    Ok(report)
}

/// Splits what the caches have into what they can deliver and what they cannot: a path can
/// only come from a cache with everything it refers to (in the store, or delivered too).
fn deliverable(
    store: &Store,
    mut found: BTreeMap<StorePath, crate::store::cache::Found>,
) -> (BTreeMap<StorePath, crate::store::cache::Found>, Vec<StorePath>) {
    let mut dropped = Vec::new();
    loop {
        let lacking: Vec<StorePath> = found
            .iter()
            .filter(|(p, f)| f.info.references.iter().any(|r| r != *p && !store.contains(r) && !found.contains_key(r)))
            .map(|(p, _)| p.clone())
            .collect();
        if lacking.is_empty() {
            return (found, dropped);
        }
        for p in lacking {
            found.remove(&p);
            dropped.push(p);
        }
    }
}

/// The command's binary caches that can be used (those that did not answer earlier in the
/// command left out); None when there are none.
fn open_caches<'a>(ctx: &'a Ctx) -> Result<Option<crate::store::cache::Caches<'a>>> {
    let subs: Vec<_> = {
        let down = ctx.caches_down.lock().unwrap_or_else(|e| e.into_inner());
        ctx.substituters.iter().filter(|s| !down.contains(&s.text)).cloned().collect()
    };
    if subs.is_empty() {
        return Ok(None);
    }
    let caches = crate::store::cache::Caches::open(&subs, &ctx.trusted, ctx.progress)?;
    if caches.is_empty() {
        remember_down(ctx, &caches);
        return Ok(None);
    }
    Ok(Some(caches))
}

/// Keeps the caches that did not answer out of the command's later realisations.
fn remember_down(ctx: &Ctx, caches: &crate::store::cache::Caches) {
    ctx.caches_down.lock().unwrap_or_else(|e| e.into_inner()).extend(caches.unreachable());
}

/// What [`realise`] would do, from asking the binary caches (nothing is fetched or built).
#[derive(Debug, Default)]
pub struct Preview {
    /// Paths a cache would give, with their archives' sizes.
    pub substitute: BTreeMap<StorePath, u64>,
    /// Planned paths that would be built.
    pub build: BTreeSet<StorePath>,
    /// Planned paths the store has.
    pub present: BTreeSet<StorePath>,
}

/// What realising `targets` would substitute, build and find present: the walk [`realise`]
/// makes, asking the caches as it would (a cache that does not answer is left out).
pub fn preview(ctx: &Ctx, plan: &Plan, targets: &[StorePath]) -> Result<Preview> {
    let caches = open_caches(ctx)?;
    let mut build_anyway = BTreeSet::new();
    loop {
        let w = walk(ctx.store, plan, targets, caches.as_ref(), &build_anyway)?;
        let (found, lacking) = deliverable(ctx.store, w.found);
        if !lacking.is_empty() {
            build_anyway.extend(lacking);
            continue;
        }
        if let Some(c) = &caches {
            remember_down(ctx, c);
        }
        let planned = |p: &&StorePath| plan.get(p).is_some();
        return Ok(Preview {
            build: w
                .needed
                .iter()
                .filter(planned)
                .filter(|p| !ctx.store.contains(p) && !found.contains_key(*p))
                .cloned()
                .collect(),
            present: w.needed.iter().filter(planned).filter(|p| ctx.store.contains(p)).cloned().collect(),
            substitute: found.into_iter().map(|(p, f)| (p, f.info.archive_size)).collect(),
        });
    }
}

/// Takes from the caches every needed path they have (under the store lock). A path the
/// network fails to deliver is built instead: the walk goes again with it (and what refers
/// to it) left to the plan, and asks the caches for its inputs in turn.
fn substitute(
    ctx: &Ctx,
    plan: &Plan,
    targets: &[StorePath],
    caches: &crate::store::cache::Caches,
    lock: &crate::store::StoreLock,
    report: &mut Report,
) -> Result<()> {
    let mut build_anyway = BTreeSet::new();
    loop {
        let w = walk(ctx.store, plan, targets, Some(caches), &build_anyway)?;
        let (found, lacking) = deliverable(ctx.store, w.found);
        if !lacking.is_empty() {
            // Built instead: walk again, asking the caches for their inputs.
            build_anyway.extend(lacking);
            continue;
        }
        if found.is_empty() {
            return Ok(());
        }
        let t0 = Instant::now();
        let f = caches.fetch(ctx.store, lock, &found)?;
        if !f.imported.is_empty() {
            let mut from: BTreeMap<&str, usize> = BTreeMap::new();
            for p in &f.imported {
                *from.entry(caches.name(found[p].cache)).or_default() += 1;
            }
            let from: Vec<String> = from.iter().map(|(c, n)| format!("{n} from {c}")).collect();
            ctx.progress.note(&format!(
                "substituted {} store paths ({}; {:.1} MiB in {:.1}s)",
                f.imported.len(),
                from.join(", "),
                f.bytes as f64 / (1 << 20) as f64,
                t0.elapsed().as_secs_f64()
            ));
        }
        report.substituted.extend(f.imported);
        report.downloaded += f.bytes;
        if f.failed.is_empty() {
            return Ok(());
        }
        if let Some((p, why)) = f.failed.iter().find(|(p, _)| plan.get(p).is_none()) {
            return Err(Fail::new(format!("{p} could not be substituted ({why}), and this plan cannot build it"))
                .hint("it belongs to an older generation: try again when the cache answers")
                .into());
        }
        let names: Vec<&str> = f.failed.iter().map(|(p, _)| p.name()).collect();
        ctx.progress.note(&format!(
            "could not substitute {} store paths ({}): building them: {}",
            names.len(),
            f.failed[0].1,
            names.join(", ")
        ));
        for (p, _) in f.failed {
            report.built_instead.push(p.clone());
            build_anyway.insert(p);
        }
    }
}
