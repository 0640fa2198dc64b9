//! Tidy: the architecture invariants of `docs/ARCHITECTURE.md` that a
//! reading of the tree can hold, checked on every run (as rust-analyzer's
//! tidy tests do): which crate may depend on which, who touches the
//! runtime, where processes are spawned, no module cycles, a `//!` line
//! on every file.
//!
//! Each check names the file and the rule it broke; none runs anything.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Every `.rs` file below `dir`, sorted.
fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(dir) = todo.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                todo.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

fn crates() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(workspace().join("crates"))
        .unwrap()
        .flatten()
        .filter(|e| e.path().join("Cargo.toml").is_file())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// `text` without `//` comments (doc comments included) and string
/// literals' contents are left alone: good enough for `crate::` paths.
fn code(text: &str) -> String {
    text.lines()
        .map(|line| match line.find("//") {
            Some(at) => &line[..at],
            None => line,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The part of a file before its `#[cfg(test)]` module.
fn without_tests(text: &str) -> &str {
    match text.find("#[cfg(test)]\nmod tests") {
        Some(at) => &text[..at],
        None => text,
    }
}

fn relative(path: &Path) -> String {
    path.strip_prefix(workspace())
        .unwrap_or(path)
        .display()
        .to_string()
}

/// The crates each crate may depend on (any section): the arrows of
/// ARCHITECTURE's bird's-eye view, all pointing one way. The harness
/// (`hive-agent`) runs inside a sandbox and never links core, the store or
/// a runtime.
const ALLOWED_DEPENDENCIES: &[(&str, &[&str])] = &[
    ("hive-proto", &[]),
    ("hive-web", &[]),
    ("hive-store", &["hive-proto"]),
    ("hive-runtime", &["hive-proto"]),
    ("hive-config", &["hive-proto"]),
    ("hive-agent", &["hive-proto", "hive-web"]),
    (
        "hive-core",
        &[
            "hive-proto",
            "hive-store",
            "hive-runtime",
            "hive-config",
            "hive-web",
        ],
    ),
    (
        "hive",
        &[
            "hive-proto",
            "hive-core",
            "hive-config",
            "hive-agent",
            // dev-dependencies: fixtures of the integration tests
            "hive-runtime",
            "hive-store",
        ],
    ),
];

/// The workspace crates a manifest names, in any dependency section.
fn hive_dependencies(manifest: &str) -> BTreeSet<String> {
    let mut section = "";
    let mut out = BTreeSet::new();
    for line in manifest.lines().map(str::trim) {
        if line.starts_with('[') {
            section = line;
            continue;
        }
        if !section.contains("dependencies") {
            continue;
        }
        let name: String = line
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
            .collect();
        if name == "hive" || name.starts_with("hive-") {
            out.insert(name);
        }
    }
    out
}

#[test]
fn crates_depend_only_along_the_arrows() {
    let allowed: BTreeMap<&str, &[&str]> = ALLOWED_DEPENDENCIES.iter().copied().collect();
    let mut wrong = Vec::new();
    for krate in crates() {
        let Some(may) = allowed.get(krate.as_str()) else {
            wrong.push(format!(
                "{krate}: a new crate; give it its arrows in ALLOWED_DEPENDENCIES"
            ));
            continue;
        };
        let manifest =
            std::fs::read_to_string(workspace().join("crates").join(&krate).join("Cargo.toml"))
                .unwrap();
        for dep in hive_dependencies(&manifest) {
            if !may.contains(&dep.as_str()) {
                wrong.push(format!("{krate} depends on {dep}"));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "dependencies against the arrows: {wrong:#?}"
    );
}

#[test]
fn the_manifest_reader_sees_what_tidy_checks() {
    // The check above would pass on a reader that finds nothing.
    let manifest = "[package]\nname = \"x\"\n\n[dependencies]\nhive-proto.workspace = true\n\
                    serde = \"1\"\nhive-store = { path = \"../hive-store\" }\n\n\
                    [dev-dependencies]\nhive-core.workspace = true\n";
    let found: Vec<String> = hive_dependencies(manifest).into_iter().collect();
    assert_eq!(found, ["hive-core", "hive-proto", "hive-store"]);
}

/// Files of hive-core allowed to reach the runtime: lifecycle holds and
/// uses it, serve (the daemon's assembly) selects it. The coordinator
/// hands it to lifecycle as a `lifecycle::Backend` without naming it.
const RUNTIME_HOLDERS: &[&str] = &["lifecycle.rs", "serve.rs"];

/// Whether `text` holds `word` not followed by more of an identifier
/// (`coord.runtime`, not `coord.runtime_name`).
fn mentions(text: &str, word: &str) -> bool {
    text.match_indices(word).any(|(at, _)| {
        !text[at + word.len()..].starts_with(|c: char| c.is_alphanumeric() || c == '_')
    })
}

/// The ways a file can reach the runtime, in `flat` (whitespace folded).
fn runtime_uses(flat: &str) -> Vec<&'static str> {
    [
        "dyn Runtime",
        "hive_runtime::Runtime",
        "coord.runtime",
        "self.runtime",
        "coordinator.runtime",
        "hive_runtime::restart",
        "impl Runtime",
        ": Runtime",
    ]
    .into_iter()
    .filter(|needle| mentions(flat, needle) || mentions(&flat.replace(". ", "."), needle))
    .collect()
}

#[test]
fn only_lifecycle_touches_the_runtime() {
    let src = workspace().join("crates/hive-core/src");
    let files = rust_files(&src);
    assert!(files.len() > 10, "no sources read under {}", src.display());
    let mut wrong = Vec::new();
    for file in files {
        let name = file.strip_prefix(&src).unwrap().display().to_string();
        if RUNTIME_HOLDERS.contains(&name.as_str()) {
            continue;
        }
        let text = code(&std::fs::read_to_string(&file).unwrap());
        let flat: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
        for needle in runtime_uses(&flat) {
            wrong.push(format!("{}: `{needle}`", relative(&file)));
        }
    }
    assert!(
        wrong.is_empty(),
        "only hive-core's lifecycle calls a Runtime (ask it through a Lifecycle method): {wrong:#?}"
    );
}

/// The structs of `text` whose fields name `what`, by struct name.
fn structs_holding(text: &str, what: &str) -> Vec<String> {
    let mut out = Vec::new();
    for (at, _) in text.match_indices("struct ") {
        let rest = &text[at + "struct ".len()..];
        let name: String = rest
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect();
        let Some(open) = rest.find(['{', ';']) else {
            continue;
        };
        if !rest[open..].starts_with('{') {
            continue;
        }
        let body = &rest[open..rest[open..].find('}').map_or(rest.len(), |end| open + end)];
        if mentions(body, what) {
            out.push(name);
        }
    }
    out
}

/// The component structs allowed to hold the runtime: `Lifecycle` and
/// the parts it is built from.
const RUNTIME_FIELDS: &[&str] = &["lifecycle.rs: Lifecycle", "lifecycle.rs: Parts"];

#[test]
fn only_the_lifecycle_component_holds_the_runtime() {
    let src = workspace().join("crates/hive-core/src");
    let mut found = Vec::new();
    for file in rust_files(&src) {
        let name = file.strip_prefix(&src).unwrap().display().to_string();
        let text = code(without_tests(&std::fs::read_to_string(&file).unwrap()));
        for what in ["Runtime", "Backend"] {
            for holder in structs_holding(&text, what) {
                found.push(format!("{name}: {holder}"));
            }
        }
    }
    found.sort();
    found.dedup();
    assert_eq!(
        found, RUNTIME_FIELDS,
        "a component other than Lifecycle holds the runtime (give it what it needs \
         from Lifecycle instead)"
    );
}

#[test]
fn the_struct_reader_sees_a_field() {
    // The check above would pass on a reader that finds nothing.
    let text = "pub struct A {\n    x: u8,\n}\nstruct Unit;\n\
                pub struct B {\n    runtime: Option<Arc<dyn Runtime>>,\n}\n\
                struct C { runtime_name: String }\n";
    assert_eq!(structs_holding(text, "Runtime"), ["B"]);
}

/// Every `#[allow]`ed raw spawn outside tests, by file: the one place
/// the harness starts an engine, the one place a container is started
/// (and its unit test's throwaway child), the backends' host probes, the
/// benchmark that re-executes itself as the daemon and the one that starts
/// the daemon beside `redis-server`, and the one that starts the daemon
/// on a swarm and drives the docker CLI.
const SPAWN_SITES: &[(&str, usize)] = &[
    ("crates/hive-agent/src/process.rs", 1),
    ("crates/hive-core/benches/socket_pressure.rs", 1),
    ("crates/hive/benches/broker_vs_redis.rs", 1),
    ("crates/hive/benches/swarm_fleet.rs", 1),
    ("crates/hive-runtime/src/child.rs", 2),
    ("crates/hive-runtime/src/probe.rs", 1),
];

#[test]
fn no_new_spawn_site() {
    let mut found = BTreeMap::new();
    for krate in crates() {
        for dir in ["src", "benches"] {
            for file in rust_files(&workspace().join("crates").join(&krate).join(dir)) {
                let text = code(&std::fs::read_to_string(&file).unwrap());
                let count = text.matches("disallowed_methods").count();
                if count > 0 {
                    found.insert(relative(&file), count);
                }
            }
        }
    }
    let expected: BTreeMap<String, usize> = SPAWN_SITES
        .iter()
        .map(|(f, n)| ((*f).to_owned(), *n))
        .collect();
    assert_eq!(
        found, expected,
        "raw process spawns are allowed only at the known sites (spawn through \
         hive_runtime::child or hive_agent::process instead)"
    );
}

/// The top-level modules of a crate (`src/x.rs` and `src/x/`), each with
/// the other top-level modules its non-test code names as `crate::…`.
fn module_graph(src: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let mut files: BTreeMap<String, Vec<PathBuf>> = BTreeMap::new();
    for file in rust_files(src) {
        let rel = file.strip_prefix(src).unwrap();
        let top = rel
            .components()
            .next()
            .unwrap()
            .as_os_str()
            .to_string_lossy()
            .trim_end_matches(".rs")
            .to_owned();
        if top != "lib" && top != "main" {
            files.entry(top).or_default().push(file);
        }
    }
    let mut graph = BTreeMap::new();
    for (module, paths) in &files {
        let mut uses = BTreeSet::new();
        for path in paths {
            let text = std::fs::read_to_string(path).unwrap();
            let text = code(without_tests(&text));
            for (at, _) in text.match_indices("crate::") {
                let rest = &text[at + "crate::".len()..];
                let names: Vec<&str> = match rest.strip_prefix('{') {
                    // `crate::{a, b::C, d}`: the first segment of each.
                    Some(group) => group[..group.find('}').unwrap_or(group.len())]
                        .split(',')
                        .filter_map(|p| p.trim().split("::").next())
                        .collect(),
                    None => rest
                        .split(|c: char| !(c.is_alphanumeric() || c == '_'))
                        .next()
                        .into_iter()
                        .collect(),
                };
                for name in names {
                    if name != module && files.contains_key(name) {
                        uses.insert(name.to_owned());
                    }
                }
            }
        }
        graph.insert(module.clone(), uses);
    }
    graph
}

/// The modules that sit on a cycle together (strongly connected
/// components of more than one module), each sorted.
fn cycles(graph: &BTreeMap<String, BTreeSet<String>>) -> BTreeSet<Vec<String>> {
    let reach = |from: &str| {
        let mut seen = BTreeSet::new();
        let mut todo = vec![from.to_owned()];
        while let Some(m) = todo.pop() {
            for next in graph.get(&m).into_iter().flatten() {
                if seen.insert(next.clone()) {
                    todo.push(next.clone());
                }
            }
        }
        seen
    };
    let reaches: BTreeMap<&String, BTreeSet<String>> =
        graph.keys().map(|m| (m, reach(m))).collect();
    let mut out = BTreeSet::new();
    for (m, from_m) in &reaches {
        let component: Vec<String> = from_m
            .iter()
            .filter(|other| reaches[other].contains(m.as_str()))
            .cloned()
            .collect();
        if component.len() > 1 {
            out.insert(component);
        }
    }
    out
}

/// Module cycles the tree still has, to be broken (this list only
/// shrinks: a cycle not listed fails, and so does a listed one that is
/// gone, so the list stays true).
const KNOWN_CYCLES: &[(&str, &[&str])] = &[];

#[test]
fn no_module_cycles_inside_a_crate() {
    let mut found = BTreeSet::new();
    for krate in crates() {
        let graph = module_graph(&workspace().join("crates").join(&krate).join("src"));
        for cycle in cycles(&graph) {
            found.insert((krate.clone(), cycle));
        }
    }
    let known: BTreeSet<(String, Vec<String>)> = KNOWN_CYCLES
        .iter()
        .map(|(k, c)| ((*k).to_owned(), c.iter().map(|m| (*m).to_owned()).collect()))
        .collect();
    assert_eq!(
        found, known,
        "module cycles (a module of a crate that reaches itself through `crate::` paths)"
    );
}

#[test]
fn the_cycle_finder_finds_a_cycle() {
    let graph: BTreeMap<String, BTreeSet<String>> = [
        ("a", vec!["b"]),
        ("b", vec!["c"]),
        ("c", vec!["a"]),
        ("d", vec!["a"]),
    ]
    .into_iter()
    .map(|(m, uses)| (m.to_owned(), uses.into_iter().map(str::to_owned).collect()))
    .collect();
    let found: Vec<Vec<String>> = cycles(&graph).into_iter().collect();
    assert_eq!(found, [["a", "b", "c"]]);
}

#[test]
fn every_file_says_what_it_is_for() {
    let mut missing = Vec::new();
    for krate in crates() {
        let root = workspace().join("crates").join(&krate);
        for dir in ["src", "tests", "benches"] {
            for file in rust_files(&root.join(dir)) {
                let text = std::fs::read_to_string(&file).unwrap();
                if !text.trim_start().starts_with("//!") {
                    missing.push(relative(&file));
                }
            }
        }
    }
    assert!(
        missing.is_empty(),
        "files without a `//!` line: {missing:#?}"
    );
}
