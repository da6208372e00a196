//! Placeholder: the embedded GGUF model (being written).
use std::path::Path;

use caxton_ipc::config::LocalProviderConfig;

use super::{Attempt, AttemptError, Completion};

pub struct LocalProvider {
    name: String,
}

impl LocalProvider {
    pub fn new(_cfg: &LocalProviderConfig, _models: &Path, _cache: &Path) -> LocalProvider {
        LocalProvider {
            name: "smollm2-135m-instruct".into(),
        }
    }

    pub fn model_name(&self) -> &str {
        &self.name
    }

    pub async fn complete(&self, _a: &Attempt<'_>) -> Result<Completion, AttemptError> {
        Err(AttemptError::Fatal(
            "the local provider is not built yet".into(),
        ))
    }
}
