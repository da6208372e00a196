//! The agent registry: every valid agent file of the agents directory, loaded at start and on SIGHUP.
//! A broken file is reported and skipped; the others keep serving.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use caxton_ipc::agent::AgentSpec;
use caxton_ipc::api::{AgentSummary, Diagnostic};

use crate::agent_file::{self, ValidationContext};

/// Loaded agents by name.
#[derive(Debug, Default)]
pub struct Registry {
    pub agents: BTreeMap<String, Arc<AgentSpec>>,
}

impl Registry {
    /// Loads every `*.toml` in `dir`, in name order. Returns the registry and the problems found.
    pub fn load_dir(dir: &Path, ctx: &ValidationContext<'_>) -> (Registry, Vec<Diagnostic>) {
        let mut problems = Vec::new();
        let mut agents: BTreeMap<String, Arc<AgentSpec>> = BTreeMap::new();
        let entries = match std::fs::read_dir(dir) {
            Ok(e) => e,
            Err(e) => {
                problems.push(Diagnostic {
                    file: dir.display().to_string(),
                    line: 0,
                    column: 0,
                    message: format!("cannot read the agents directory: {e}"),
                    hint: Some(
                        "set agents_dir in the config, or run from a directory that has ./agents"
                            .into(),
                    ),
                });
                return (Registry::default(), problems);
            }
        };
        let mut paths: Vec<_> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "toml") && p.is_file())
            .collect();
        paths.sort();
        for path in paths {
            match agent_file::load_file(&path, ctx) {
                Ok(agent) => {
                    if let Some(prev) = agents.get(&agent.name) {
                        problems.push(Diagnostic {
                            file: path.display().to_string(),
                            line: 0,
                            column: 0,
                            message: format!(
                                "agent `{}` is already defined in {}; this file is skipped",
                                agent.name, prev.source
                            ),
                            hint: Some("agent names must be unique in the agents directory".into()),
                        });
                        continue;
                    }
                    agents.insert(agent.name.clone(), Arc::new(agent));
                }
                Err(diags) => problems.extend(diags),
            }
        }
        (Registry { agents }, problems)
    }

    pub fn get(&self, name: &str) -> Option<Arc<AgentSpec>> {
        self.agents.get(name).cloned()
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
            })
            .collect()
    }
}
