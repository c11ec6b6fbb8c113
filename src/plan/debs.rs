//! Debian packages in the plan: pinned debs, source packages, the packages a system config
//! names (its own specs, lock entries, apt solutions) and the store paths they become.

use super::*;

/// The recipe of the lock's `debs` entry `name`, after those of what it depends on (inputs
/// `dep-<name>`).
pub(super) fn deb(plan: &mut Plan, lock: &Lock, name: &str) -> Result<StorePath> {
    let pin = lock.deb(name)?.clone();
    let mut inputs = BTreeMap::new();
    for d in &pin.depends {
        inputs.insert(format!("dep-{d}"), deb(plan, lock, d)?);
    }
    Ok(plan.add(Recipe { name: name_of(&pin), builder: Builder::Deb { pin }, inputs }))
}

/// The lock's `debs` entry `name` and everything it depends on, each once, dependencies
/// after what needs them.
pub(super) fn deb_closure(lock: &Lock, name: &str, out: &mut Vec<String>) -> Result<()> {
    if out.iter().any(|n| n == name) {
        return Ok(());
    }
    out.push(name.to_string());
    for d in &lock.deb(name)?.depends {
        deb_closure(lock, d, out)?;
    }
    Ok(())
}

/// The recipe of the lock's `sources` entry `name` (the source package's files).
pub(super) fn deb_source(plan: &mut Plan, lock: &Lock, name: &str) -> Result<StorePath> {
    let pin = lock.source(name)?.clone();
    Ok(plan.add(Recipe {
        name: format!("{}-{}-source", pin.package, without_epoch(&pin.version)),
        builder: Builder::DebSource { pin },
        inputs: BTreeMap::new(),
    }))
}

pub(super) fn without_epoch(version: &str) -> &str {
    version.rsplit_once(':').map(|(_, v)| v).unwrap_or(version)
}

/// The recipes of the system config's packages: each a store path, in order, with what
/// the `debs` among them depend on after them.
pub(super) fn packages(profile: &Profile, lock: &Lock, inp: &Inputs, plan: &mut Plan) -> Result<Vec<StorePath>> {
    let mut paths = Vec::new();
    let mut debs = Vec::new();
    let mut apt_roots = Vec::new();
    for name in &profile.system.packages {
        if let Some(p) = inp.packages.iter().find(|p| &p.name == name) {
            let src = deb_source(plan, lock, &p.spec.source)?;
            let version = without_epoch(&lock.source(&p.spec.source)?.version).replace('~', "_");
            let cross =
                inp.cross_gcc.clone().ok_or_else(|| anyhow::anyhow!("the cross compiler version was not gathered"))?;
            paths.push(plan.add(Recipe {
                name: format!("{name}-{version}"),
                builder: Builder::Cc {
                    make: p.spec.make.clone(),
                    cflags: p.spec.cflags.clone(),
                    install: p.spec.install.clone(),
                    cross,
                },
                inputs: inputs(&[("source", &src)]),
            }));
        } else if lock.debs.contains_key(name) {
            deb_closure(lock, name, &mut debs)?;
        } else {
            let r = crate::lock::apt::Request::parse(name)
                .with_context(|| format!("{name:?} is neither a packages/ spec, a debs entry nor a Debian name"))?;
            if !r.satisfied_by(&lock.apt) {
                return Err(Fail::new(format!("{} does not pin the Debian package {r}", lock.file.display()))
                    .hint("`mobix build` without --locked adds it to the lock (apt resolves it)")
                    .into());
            }
            apt_roots.push(r.name);
        }
    }
    for name in &debs {
        paths.push(deb(plan, lock, name)?);
    }
    paths.extend(apt_packages(plan, lock, &apt_roots));
    Ok(paths)
}

/// The recipes of `roots` and every apt-resolved package they depend on: one `deb` per
/// package, referring to what it depends on; packages in a dependency cycle share one
/// `deb-group`. Returns the store paths of all of them, dependencies first.
pub(super) fn apt_packages(plan: &mut Plan, lock: &Lock, roots: &[String]) -> Vec<StorePath> {
    let roots: Vec<&str> = roots.iter().map(String::as_str).collect();
    let nodes = crate::lock::apt::closure(&lock.apt, &roots);
    let edges = |n: &str| -> Vec<String> { lock.apt.packages.get(n).map(|p| p.depends.clone()).unwrap_or_default() };
    let mut path_of: BTreeMap<String, StorePath> = BTreeMap::new();
    let mut out = Vec::new();
    for group in strongly_connected(&nodes, &edges) {
        let mut inputs = BTreeMap::new();
        for member in &group {
            for d in edges(member).iter().filter(|d| !group.contains(*d)) {
                inputs.insert(format!("dep-{d}"), path_of[d].clone());
            }
        }
        let pins: Vec<DebPin> = group.iter().map(|n| lock.apt.packages[n].deb_pin(n)).collect();
        let recipe = if pins.len() == 1 {
            let pin = pins.into_iter().next().expect("one");
            Recipe { name: name_of(&pin), builder: Builder::Deb { pin }, inputs }
        } else {
            let name = format!("{}-and-{}-more", name_of(&pins[0]), pins.len() - 1);
            Recipe { name, builder: Builder::DebGroup { pins }, inputs }
        };
        let p = plan.add(recipe);
        for member in group {
            path_of.insert(member, p.clone());
        }
        out.push(p);
    }
    out
}

/// The strongly connected components of the graph on `nodes` (Tarjan's algorithm), each
/// sorted, in an order where a component comes after every component it reaches.
pub(super) fn strongly_connected(nodes: &BTreeSet<String>, edges: &dyn Fn(&str) -> Vec<String>) -> Vec<Vec<String>> {
    struct State<'a> {
        edges: &'a dyn Fn(&str) -> Vec<String>,
        nodes: &'a BTreeSet<String>,
        index: BTreeMap<String, usize>,
        low: BTreeMap<String, usize>,
        stack: Vec<String>,
        on_stack: BTreeSet<String>,
        out: Vec<Vec<String>>,
    }
    fn visit(s: &mut State, v: &str) {
        let i = s.index.len();
        s.index.insert(v.to_string(), i);
        s.low.insert(v.to_string(), i);
        s.stack.push(v.to_string());
        s.on_stack.insert(v.to_string());
        let mut next = (s.edges)(v);
        next.sort();
        for w in next.iter().filter(|w| s.nodes.contains(*w)) {
            if !s.index.contains_key(w) {
                visit(s, w);
                let lw = s.low[w];
                let lv = s.low.get_mut(v).expect("visited");
                *lv = (*lv).min(lw);
            } else if s.on_stack.contains(w) {
                let iw = s.index[w];
                let lv = s.low.get_mut(v).expect("visited");
                *lv = (*lv).min(iw);
            }
        }
        if s.low[v] == s.index[v] {
            let mut group = Vec::new();
            while let Some(w) = s.stack.pop() {
                s.on_stack.remove(&w);
                let done = w == v;
                group.push(w);
                if done {
                    break;
                }
            }
            group.sort();
            s.out.push(group);
        }
    }
    let mut s = State {
        edges,
        nodes,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        out: Vec::new(),
    };
    for n in nodes {
        if !s.index.contains_key(n) {
            visit(&mut s, n);
        }
    }
    s.out
}
