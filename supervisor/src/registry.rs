//! The agent registry: every valid agent file of the agents directory, loaded at start and on
//! SIGHUP.
//!
//! A reload never loses a working agent to an edit. A file that was changed and no longer
//! validates keeps the version last loaded from it serving, and says so (log, `caxton agent
//! list`, `caxton status`); two files that define one name are both reported and neither takes
//! the name over (the version loaded before, if any, keeps serving). An agent goes when its file
//! is deleted, or when its unchanged file stops validating because what it names went away (a
//! removed tool package): that version would fail every run.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use caxton_ipc::agent::AgentSpec;
use caxton_ipc::api::{AgentSummary, Diagnostic};

use crate::agent_file::{self, ValidationContext};

/// Loaded agents by name, with what is wrong in the agents directory.
#[derive(Debug, Default)]
pub struct Registry {
    pub agents: BTreeMap<String, Arc<AgentSpec>>,
    /// Agents served from the version loaded before because their file now fails (or their name
    /// is now defined twice): agent name → why.
    pub stale: BTreeMap<String, String>,
    /// Every problem found by the last load: files skipped, files failing, names defined twice.
    pub problems: Vec<Diagnostic>,
    /// A fingerprint of the file contents each agent was loaded from, by agent name: tells an
    /// edited file from an unchanged one.
    fingerprints: BTreeMap<String, u64>,
}

/// One agent file's outcome in a load.
struct Loaded {
    path: PathBuf,
    /// Of the file's contents (0 when it cannot be read).
    fingerprint: u64,
    result: Result<AgentSpec, Vec<Diagnostic>>,
}

/// A fingerprint of a file's contents, to notice edits (not a security check).
fn fingerprint(path: &Path) -> u64 {
    use std::hash::{DefaultHasher, Hash, Hasher};
    let mut h = DefaultHasher::new();
    std::fs::read(path).unwrap_or_default().hash(&mut h);
    h.finish()
}

impl Registry {
    /// Loads every `*.toml` in `dir`, in name order, on top of `previous` (the registry serving
    /// until now; an empty one at start).
    pub fn load_dir(dir: &Path, ctx: &ValidationContext<'_>, previous: &Registry) -> Registry {
        let entries = match std::fs::read_dir(dir) {
            Ok(e) => e,
            Err(e) => {
                let problem = Diagnostic {
                    file: dir.display().to_string(),
                    line: 0,
                    column: 0,
                    message: format!("cannot read the agents directory: {e}"),
                    hint: Some(
                        "set agents_dir in the config, or run from a directory that has ./agents"
                            .into(),
                    ),
                };
                // Every agent keeps serving the version loaded before.
                let reason = format!("the agents directory cannot be read: {e}");
                return Registry {
                    agents: previous.agents.clone(),
                    stale: previous
                        .agents
                        .keys()
                        .map(|name| (name.clone(), reason.clone()))
                        .collect(),
                    problems: vec![problem],
                    fingerprints: previous.fingerprints.clone(),
                };
            }
        };
        let mut paths: Vec<_> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "toml") && p.is_file())
            .collect();
        paths.sort();
        let loaded: Vec<Loaded> = paths
            .into_iter()
            .map(|path| Loaded {
                fingerprint: fingerprint(&path),
                result: agent_file::load_file(&path, ctx),
                path,
            })
            .collect();
        Self::resolve(loaded, previous)
    }

    /// Decides what serves under each name from this load's outcomes and the previous registry.
    fn resolve(loaded: Vec<Loaded>, previous: &Registry) -> Registry {
        let mut out = Registry::default();
        // Valid definitions by name, in file order.
        let mut by_name: BTreeMap<String, Vec<AgentSpec>> = BTreeMap::new();
        for l in loaded {
            match l.result {
                Ok(agent) => {
                    out.fingerprints.insert(agent.name.clone(), l.fingerprint);
                    by_name.entry(agent.name.clone()).or_default().push(agent);
                }
                Err(diagnostics) => {
                    let file = l.path.display().to_string();
                    // The agent this file defined until now keeps serving, if the failure
                    // comes from an edit of the file.
                    let edited =
                        |a: &AgentSpec| previous.fingerprints.get(&a.name) != Some(&l.fingerprint);
                    if let Some(old) = previous
                        .agents
                        .values()
                        .find(|a| a.source == file && edited(a))
                    {
                        let first = diagnostics
                            .first()
                            .map_or_else(String::new, |d| d.to_string());
                        out.keep(
                            previous,
                            old,
                            format!(
                                "{file} no longer loads ({first}); the version loaded before keeps serving"
                            ),
                        );
                    }
                    out.problems.extend(diagnostics);
                }
            }
        }
        for (name, mut defs) in by_name {
            if defs.len() == 1 && !out.agents.contains_key(&name) {
                let agent = defs.remove(0);
                out.agents.insert(name, Arc::new(agent));
                continue;
            }
            let mut files: Vec<String> = defs.iter().map(|a| a.source.clone()).collect();
            if let Some(kept) = out.agents.get(&name) {
                files.push(kept.source.clone());
            }
            let listed = files.join(", ");
            for file in &files {
                out.problems.push(Diagnostic {
                    file: file.clone(),
                    line: 0,
                    column: 0,
                    message: format!("agent `{name}` is defined in several files ({listed}); none of them is loaded"),
                    hint: Some("agent names must be unique in the agents directory: rename or remove all but one".into()),
                });
            }
            let reason = format!("`{name}` is defined in several files ({listed})");
            match previous.agents.get(&name) {
                Some(old) => out.keep(
                    previous,
                    old,
                    format!("{reason}; the version loaded before keeps serving"),
                ),
                None => {
                    out.agents.remove(&name);
                    out.stale.remove(&name);
                    out.fingerprints.remove(&name);
                }
            }
        }
        out
    }

    /// Serves `old` again (the version `previous` loaded), marked stale with `why`.
    fn keep(&mut self, previous: &Registry, old: &Arc<AgentSpec>, why: String) {
        self.agents.insert(old.name.clone(), old.clone());
        self.stale.insert(old.name.clone(), why);
        if let Some(f) = previous.fingerprints.get(&old.name) {
            self.fingerprints.insert(old.name.clone(), *f);
        }
    }

    pub fn get(&self, name: &str) -> Option<Arc<AgentSpec>> {
        self.agents.get(name).cloned()
    }

    /// The agents that declare `capability`, by name.
    pub fn agents_with_capability(&self, capability: &str) -> Vec<Arc<AgentSpec>> {
        self.agents
            .values()
            .filter(|a| a.capabilities.iter().any(|c| c == capability))
            .cloned()
            .collect()
    }

    pub fn summaries(&self) -> Vec<AgentSummary> {
        self.agents
            .values()
            .map(|a| AgentSummary {
                name: a.name.clone(),
                version: a.version.clone(),
                description: a.description.clone(),
                capabilities: a.capabilities.clone(),
                tools: a.tools.clone(),
                provider: a.llm.provider.clone(),
                source: a.source.clone(),
                problem: self.stale.get(&a.name).cloned(),
            })
            .collect()
    }
}

/// The registry serving now, swapped whole on load and reload, so a run always sees one
/// consistent set of agents.
#[derive(Debug, Default)]
pub struct AgentRegistry {
    current: std::sync::RwLock<Arc<Registry>>,
}

impl AgentRegistry {
    pub fn current(&self) -> Arc<Registry> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub fn replace(&self, next: Registry) {
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(next);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx() -> ValidationContext<'static> {
        ValidationContext {
            catalog: None,
            default_timeout: std::time::Duration::from_secs(60),
            default_tool_timeout: std::time::Duration::from_secs(10),
            worker_caps: crate::agent_file::WorkerCaps::default(),
        }
    }

    fn agent(name: &str, prompt: &str) -> String {
        format!(
            "name = \"{name}\"\nversion = \"1.0.0\"\ndescription = \"d\"\nsystem_prompt = \"{prompt}\"\nuser_prompt_template = \"{{{{request}}}}\"\n"
        )
    }

    fn prompt_of(r: &Registry, name: &str) -> String {
        r.get(name).expect("loaded").system_prompt.clone()
    }

    #[test]
    fn a_broken_file_keeps_its_last_good_version() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("a.toml");
        std::fs::write(&file, agent("a", "one")).unwrap();
        let first = Registry::load_dir(dir.path(), &ctx(), &Registry::default());
        assert_eq!(prompt_of(&first, "a"), "one");
        assert!(first.stale.is_empty() && first.problems.is_empty());

        std::fs::write(&file, "name = \"a\"\nversion = ").unwrap();
        let second = Registry::load_dir(dir.path(), &ctx(), &first);
        assert_eq!(prompt_of(&second, "a"), "one");
        assert!(second.stale["a"].contains("no longer loads"), "{second:?}");
        assert_eq!(second.problems.len(), 1);
        let summary = &second.summaries()[0];
        assert!(summary.problem.is_some());

        // Fixed: the new version serves and the mark is gone.
        std::fs::write(&file, agent("a", "two")).unwrap();
        let third = Registry::load_dir(dir.path(), &ctx(), &second);
        assert_eq!(prompt_of(&third, "a"), "two");
        assert!(third.stale.is_empty());

        // Deleted: gone.
        std::fs::remove_file(&file).unwrap();
        let fourth = Registry::load_dir(dir.path(), &ctx(), &third);
        assert!(fourth.get("a").is_none());
    }

    #[test]
    fn an_unchanged_file_that_stops_validating_is_not_kept() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.toml"), agent("a", "one")).unwrap();
        let first = Registry::load_dir(dir.path(), &ctx(), &Registry::default());
        assert!(first.get("a").is_some());
        // The same file against a stricter context (standing in for a removed tool): the version
        // loaded before is not kept, since nothing was edited that could be undone.
        let strict = ValidationContext {
            catalog: Some(&caxton_ipc::toolhost::Catalog {
                tools: vec![],
                providers: vec![],
            }),
            ..ctx()
        };
        let second = Registry::load_dir(dir.path(), &strict, &first);
        assert!(second.get("a").is_none(), "{second:?}");
        assert!(!second.problems.is_empty());
    }

    #[test]
    fn a_second_file_with_the_same_name_takes_nothing_over() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("b.toml"), agent("x", "original")).unwrap();
        let first = Registry::load_dir(dir.path(), &ctx(), &Registry::default());
        // A new file that sorts earlier defines the same name.
        std::fs::write(dir.path().join("a.toml"), agent("x", "intruder")).unwrap();
        let second = Registry::load_dir(dir.path(), &ctx(), &first);
        assert_eq!(prompt_of(&second, "x"), "original");
        assert!(second.stale["x"].contains("several files"));
        let files: Vec<_> = second.problems.iter().map(|p| p.file.clone()).collect();
        assert_eq!(files.len(), 2, "{files:?}");
        // At start, with no version before, neither is loaded.
        let fresh = Registry::load_dir(dir.path(), &ctx(), &Registry::default());
        assert!(fresh.get("x").is_none());
        assert_eq!(fresh.problems.len(), 2);
    }
}
