//! Placeholder: the shared HTTP provider client (being written).
use caxton_ipc::config::HttpProviderConfig;

use super::{Attempt, AttemptError, Completion};

pub struct HttpProvider<W> {
    wire: W,
}

impl<W> HttpProvider<W> {
    pub fn new(_name: &str, _cfg: &HttpProviderConfig, wire: W) -> Result<Self, String> {
        Ok(HttpProvider { wire })
    }

    pub async fn complete(&self, _a: &Attempt<'_>) -> Result<Completion, AttemptError> {
        let _ = &self.wire;
        Err(AttemptError::Fatal(
            "HTTP providers are not built yet".into(),
        ))
    }
}
