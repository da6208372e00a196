//! Placeholder: OpenAI-compatible chat completions (being written).
pub struct OpenAi;
