//! Placeholder: Anthropic Messages (being written).
pub struct Anthropic;
