//! LLM providers by name, as configured in the server config; the worker reaches them only through here.

use std::collections::BTreeMap;

use caxton_ipc::api::{ErrorBody, ErrorKind};
use caxton_ipc::config::ProviderConfig;
use caxton_ipc::toolhost::{ChatReply, ChatRequest, ProviderInfo};

use crate::scripted::{SCRIPTED_MODEL, ScriptedProvider};

enum Provider {
    Scripted(ScriptedProvider),
}

/// Every configured provider.
pub struct Providers {
    by_name: BTreeMap<String, Provider>,
}

impl Providers {
    /// Builds the providers from the config; a broken provider config stops the toolhost loudly.
    pub fn from_config(configs: &BTreeMap<String, ProviderConfig>) -> anyhow::Result<Providers> {
        let mut by_name = BTreeMap::new();
        for (name, cfg) in configs {
            let provider = match cfg {
                ProviderConfig::Scripted { rules: None } => {
                    Provider::Scripted(ScriptedProvider::builtin())
                }
                ProviderConfig::Scripted { rules: Some(path) } => {
                    let text = std::fs::read_to_string(path).map_err(|e| {
                        anyhow::anyhow!(
                            "provider `{name}`: cannot read rule file {}: {e}",
                            path.display()
                        )
                    })?;
                    let source = path.display().to_string();
                    Provider::Scripted(
                        ScriptedProvider::parse(&text, &source)
                            .map_err(|e| anyhow::anyhow!("provider `{name}`: {e}"))?,
                    )
                }
            };
            by_name.insert(name.clone(), provider);
        }
        Ok(Providers { by_name })
    }

    pub fn infos(&self) -> Vec<ProviderInfo> {
        self.by_name
            .iter()
            .map(|(name, p)| match p {
                Provider::Scripted(_) => ProviderInfo {
                    name: name.clone(),
                    kind: "scripted".into(),
                    default_model: SCRIPTED_MODEL.into(),
                },
            })
            .collect()
    }

    pub async fn chat(&self, req: &ChatRequest) -> Result<ChatReply, ErrorBody> {
        match self.by_name.get(&req.provider) {
            Some(Provider::Scripted(p)) => p.chat(req).await,
            None => Err(ErrorBody::new(
                ErrorKind::Llm,
                format!(
                    "unknown LLM provider `{}` (configured: {})",
                    req.provider,
                    self.by_name.keys().cloned().collect::<Vec<_>>().join(", ")
                ),
            )),
        }
    }
}
