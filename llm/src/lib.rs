//! caxton-llm: the LLM providers by name, as configured in the server config, and the reliability
//! policy around them. The toolhost process serves them to workers; their keys never leave it.
//!
//! Each kind (`openai`, `anthropic`, `local`, `scripted`) answers one *attempt*. This module wraps
//! attempts in the reliability policy: a per-attempt deadline inside the chat's overall deadline,
//! retries with exponential backoff and jitter on retryable failures (429, 5xx, connection errors,
//! a cut stream, an attempt deadline) honouring `Retry-After`, no retry on other 4xx, and the
//! agent's explicit fallback list. Every retry and fallback is reported as [`ChatProgress`] (the
//! worker turns it into run events) and logged. Dropping the future of [`Providers::chat`] drops
//! the HTTP request or stops the local generation: that is how a cancelled run cancels its call.

pub mod anthropic;
pub mod http;
pub mod local;
pub mod openai;
pub mod scripted;
pub mod sse;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use caxton_config::{HttpProviderConfig, ProviderConfig};
use caxton_ipc::api::ErrorKind;
use caxton_ipc::toolhost::{ChatProgress, ChatReply, ChatRequest, ProviderInfo, ToolCall};
use tokio::sync::mpsc::UnboundedSender;

use self::local::LocalProvider;
use self::scripted::ScriptedProvider;

/// One attempt at one provider.
pub struct Attempt<'a> {
    pub req: &'a ChatRequest,
    /// The model to ask for (the request's, or the provider's configured one).
    pub model: &'a str,
    /// When this attempt must be complete; the caller also enforces it by dropping the future.
    pub deadline: Instant,
    pub progress: &'a Progress,
}

/// What one successful attempt produced.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Completion {
    pub content: Option<String>,
    pub tool_calls: Vec<ToolCall>,
    /// The model that answered, as the provider reports it.
    pub model: String,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
}

/// Why a chat got no answer.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ChatError {
    #[error("unknown LLM provider `{name}` (configured: {configured})")]
    UnknownProvider { name: String, configured: String },
    /// The run's token or cost budget does not cover the next call.
    #[error("budget exceeded: {0}")]
    Budget(String),
    /// Every provider in the chain failed (each after its retries), in the order tried.
    #[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; then "))]
    Failed(Vec<ProviderFailure>),
}

impl ChatError {
    /// The kind of error the run reports.
    pub fn kind(&self) -> ErrorKind {
        match self {
            ChatError::Budget(_) => ErrorKind::LimitExceeded,
            ChatError::UnknownProvider { .. } | ChatError::Failed(_) => ErrorKind::Llm,
        }
    }
}

/// One provider's last failure in a chat.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("provider `{provider}`: {message}")]
pub struct ProviderFailure {
    pub provider: String,
    pub message: String,
}

/// Why an attempt failed, classified for the retry policy.
#[derive(Debug, Clone, PartialEq)]
pub enum AttemptError {
    /// Worth retrying: 429, 5xx, a connection error, a stream cut off mid-answer.
    Retryable {
        message: String,
        /// The server's `Retry-After`, when it sent one.
        retry_after: Option<Duration>,
    },
    /// Not worth retrying on this provider: other 4xx (a wrong key, a bad request), a reply that
    /// is not the provider's wire format, a model that cannot be loaded.
    Fatal(String),
}

impl AttemptError {
    pub fn retryable(message: impl Into<String>) -> AttemptError {
        AttemptError::Retryable {
            message: message.into(),
            retry_after: None,
        }
    }

    pub fn message(&self) -> &str {
        match self {
            AttemptError::Retryable { message, .. } | AttemptError::Fatal(message) => message,
        }
    }
}

/// Where an attempt reports progress: streamed text (when the request asked to stream), retries,
/// fallbacks. Dropped messages (a closed channel) are ignored: the caller has gone.
pub struct Progress {
    tx: Option<UnboundedSender<ChatProgress>>,
    stream: bool,
}

impl Progress {
    pub fn new(tx: UnboundedSender<ChatProgress>, stream: bool) -> Progress {
        Progress {
            tx: Some(tx),
            stream,
        }
    }

    /// Reports nothing (benchmarks, the catalog command).
    pub fn silent() -> Progress {
        Progress {
            tx: None,
            stream: false,
        }
    }

    /// A piece of the answer's text, as it arrives.
    pub fn text(&self, text: &str) {
        if self.stream && !text.is_empty() {
            self.send(ChatProgress::Text { text: text.into() });
        }
    }

    fn send(&self, p: ChatProgress) {
        if let Some(tx) = &self.tx {
            let _ = tx.send(p);
        }
    }
}

enum Provider {
    Scripted(ScriptedProvider),
    Openai(http::HttpProvider<openai::OpenAi>),
    Anthropic(http::HttpProvider<anthropic::Anthropic>),
    Local(LocalProvider),
}

/// Retry and pricing settings of a provider.
#[derive(Debug, Clone)]
struct Policy {
    timeout: Duration,
    retries: u32,
    backoff: Duration,
    max_backoff: Duration,
    prompt_usd_per_mtok: f64,
    completion_usd_per_mtok: f64,
}

impl Policy {
    /// Scripted and local providers fail deterministically: no retries.
    fn once() -> Policy {
        Policy {
            timeout: Duration::MAX,
            retries: 0,
            backoff: Duration::ZERO,
            max_backoff: Duration::ZERO,
            prompt_usd_per_mtok: 0.0,
            completion_usd_per_mtok: 0.0,
        }
    }

    fn http(c: &HttpProviderConfig) -> Policy {
        Policy {
            timeout: c.timeout,
            retries: c.retries,
            backoff: c.backoff,
            max_backoff: c.max_backoff,
            prompt_usd_per_mtok: c.prompt_usd_per_mtok,
            completion_usd_per_mtok: c.completion_usd_per_mtok,
        }
    }

    /// The wait before retry number `retry` (1-based): the server's `Retry-After` if it gave one
    /// (capped by `max_backoff`), else `backoff · 2^(retry-1)` with ±25% jitter, capped.
    fn wait(&self, retry: u32, retry_after: Option<Duration>) -> Duration {
        if let Some(after) = retry_after {
            return after.min(self.max_backoff);
        }
        let base = self
            .backoff
            .saturating_mul(1u32 << (retry - 1).min(16))
            .min(self.max_backoff);
        let jitter = 0.75 + fastrand::f64() * 0.5;
        base.mul_f64(jitter).min(self.max_backoff)
    }

    fn cost(&self, prompt_tokens: u64, completion_tokens: u64) -> f64 {
        (prompt_tokens as f64 * self.prompt_usd_per_mtok
            + completion_tokens as f64 * self.completion_usd_per_mtok)
            / 1_000_000.0
    }
}

struct Entry {
    provider: Provider,
    policy: Policy,
    /// The configured model, used when a request names none.
    default_model: String,
}

impl Entry {
    /// The provider's kind: `openai`, `anthropic`, `local` or `scripted` (for the OpenAI and
    /// Anthropic kinds, the GenAI conventions' `gen_ai.provider.name` values).
    fn kind(&self) -> &'static str {
        match self.provider {
            Provider::Scripted(_) => "scripted",
            Provider::Openai(_) => "openai",
            Provider::Anthropic(_) => "anthropic",
            Provider::Local(_) => "local",
        }
    }
}

/// Every configured provider.
pub struct Providers {
    by_name: BTreeMap<String, Entry>,
}

/// A provider whose config cannot be used (a bad URL, a missing key, an unreadable rule file).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("provider `{provider}`: {message}")]
pub struct ConfigError {
    pub provider: String,
    pub message: String,
}

/// Directories the providers read from and cache into.
#[derive(Debug, Clone, Copy)]
pub struct ProviderDirs<'a> {
    pub models: &'a Path,
    pub model_cache: &'a Path,
}

impl Providers {
    /// Builds the providers from the config; a broken provider config stops the toolhost loudly.
    /// Nothing slow happens here: the local model loads on its first use.
    pub fn from_config(
        configs: &BTreeMap<String, ProviderConfig>,
        dirs: ProviderDirs<'_>,
    ) -> Result<Providers, ConfigError> {
        let mut by_name = BTreeMap::new();
        for (name, cfg) in configs {
            let fail = |message: String| ConfigError {
                provider: name.clone(),
                message,
            };
            let entry = match cfg {
                ProviderConfig::Scripted(c) => {
                    let provider = match &c.rules {
                        None => ScriptedProvider::builtin(),
                        Some(path) => {
                            let text = std::fs::read_to_string(path).map_err(|e| {
                                fail(format!("cannot read rule file {}: {e}", path.display()))
                            })?;
                            ScriptedProvider::parse(&text, &path.display().to_string())
                                .map_err(fail)?
                        }
                    };
                    Entry {
                        provider: Provider::Scripted(provider),
                        policy: Policy::once(),
                        default_model: scripted::SCRIPTED_MODEL.into(),
                    }
                }
                ProviderConfig::Openai(c) => Entry {
                    provider: Provider::Openai(
                        http::HttpProvider::new(name, c, openai::OpenAi).map_err(fail)?,
                    ),
                    policy: Policy::http(c),
                    default_model: c.model.clone(),
                },
                ProviderConfig::Anthropic(c) => Entry {
                    provider: Provider::Anthropic(
                        http::HttpProvider::new(name, c, anthropic::Anthropic).map_err(fail)?,
                    ),
                    policy: Policy::http(c),
                    default_model: c.model.clone(),
                },
                ProviderConfig::Local(c) => {
                    let provider = LocalProvider::new(c, dirs.models, dirs.model_cache);
                    Entry {
                        default_model: provider.model_name().to_string(),
                        provider: Provider::Local(provider),
                        policy: Policy::once(),
                    }
                }
            };
            by_name.insert(name.clone(), entry);
        }
        Ok(Providers { by_name })
    }

    pub fn infos(&self) -> Vec<ProviderInfo> {
        self.by_name
            .iter()
            .map(|(name, e)| ProviderInfo {
                name: name.clone(),
                kind: e.kind().into(),
                default_model: e.default_model.clone(),
            })
            .collect()
    }

    /// Answers a chat: the requested provider with its retries, then each fallback in order,
    /// all within the request's overall deadline.
    pub async fn chat(
        &self,
        req: &ChatRequest,
        progress: &Progress,
    ) -> Result<ChatReply, ChatError> {
        let overall = Instant::now() + Duration::from_millis(req.timeout_ms);
        let chain: Vec<&String> = std::iter::once(&req.provider)
            .chain(req.fallback.iter())
            .collect();
        let mut failures = Vec::new();
        for (i, name) in chain.iter().enumerate() {
            let Some(entry) = self.by_name.get(*name) else {
                return Err(ChatError::UnknownProvider {
                    name: (*name).clone(),
                    configured: self.by_name.keys().cloned().collect::<Vec<_>>().join(", "),
                });
            };
            // The agent's model names a model of its own provider; fallbacks use theirs.
            let model = match (&req.model, i) {
                (Some(m), 0) => m.as_str(),
                _ => entry.default_model.as_str(),
            };
            let budgeted = within_budget(req, &entry.policy, name)?;
            match self
                .with_retries(name, entry, model, &budgeted, overall, progress)
                .await
            {
                Ok(c) => {
                    let cost = entry.policy.cost(c.prompt_tokens, c.completion_tokens);
                    record_usage(name, model, c.prompt_tokens, c.completion_tokens, cost);
                    return Ok(ChatReply {
                        cost_usd: cost,
                        content: c.content,
                        tool_calls: c.tool_calls,
                        provider: (*name).clone(),
                        model: c.model,
                        prompt_tokens: c.prompt_tokens,
                        completion_tokens: c.completion_tokens,
                    });
                }
                Err(error) => {
                    if let Some(next) = chain.get(i + 1)
                        && Instant::now() < overall
                    {
                        tracing::warn!(from = %name, to = %next, %error, "LLM provider failed; falling back");
                        metrics::counter!(LLM_FALLBACKS, "provider" => (*name).clone())
                            .increment(1);
                        progress.send(ChatProgress::Fallback {
                            from: (*name).clone(),
                            to: (*next).clone(),
                            error: error.clone(),
                        });
                    }
                    failures.push(ProviderFailure {
                        provider: (*name).clone(),
                        message: error,
                    });
                    if Instant::now() >= overall {
                        break;
                    }
                }
            }
        }
        Err(ChatError::Failed(failures))
    }

    /// One provider's attempts: the first plus up to `retries` more on retryable failures.
    async fn with_retries(
        &self,
        name: &str,
        entry: &Entry,
        model: &str,
        req: &ChatRequest,
        overall: Instant,
        progress: &Progress,
    ) -> Result<Completion, String> {
        let policy = &entry.policy;
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            let now = Instant::now();
            if now >= overall {
                return Err(format!(
                    "no answer within the run's deadline ({} ms for this chat)",
                    req.timeout_ms
                ));
            }
            let deadline = now
                .checked_add(policy.timeout)
                .unwrap_or(overall)
                .min(overall);
            let a = Attempt {
                req,
                model,
                deadline,
                progress,
            };
            let started = Instant::now();
            let mut counted = CountedAttempt {
                provider: name,
                model,
                started,
                outcome: "cancelled",
            };
            // Each attempt is a span of the trace: the HTTP providers send its `traceparent`.
            let span = tracing::info_span!(
                "llm attempt",
                otel.name = %format_args!("chat {model}"),
                otel.kind = "client",
                gen_ai.operation.name = "chat",
                gen_ai.provider.name = entry.kind(),
                gen_ai.request.model = model,
                caxton.provider = name,
                caxton.attempt = attempt,
                gen_ai.response.model = tracing::field::Empty,
                gen_ai.usage.input_tokens = tracing::field::Empty,
                gen_ai.usage.output_tokens = tracing::field::Empty,
                error.type = tracing::field::Empty,
                otel.status_code = tracing::field::Empty,
                otel.status_description = tracing::field::Empty,
            );
            let result = match tokio::time::timeout_at(
                deadline.into(),
                tracing::Instrument::instrument(self.attempt(entry, &a), span.clone()),
            )
            .await
            {
                Ok(r) => r,
                Err(_) => Err(AttemptError::retryable(format!(
                    "no complete answer within {} ms",
                    started.elapsed().as_millis()
                ))),
            };
            match &result {
                Ok(c) => {
                    span.record("gen_ai.response.model", c.model.as_str())
                        .record("gen_ai.usage.input_tokens", c.prompt_tokens)
                        .record("gen_ai.usage.output_tokens", c.completion_tokens);
                }
                Err(e) => {
                    let (kind, message) = match e {
                        AttemptError::Fatal(m) => ("error", m),
                        AttemptError::Retryable { message, .. } => ("retryable_error", message),
                    };
                    caxton_telemetry::traces::fail(&span, kind, Some(message.as_str()));
                }
            }
            drop(span);
            counted.outcome = match &result {
                Ok(_) => "ok",
                Err(AttemptError::Fatal(_)) => "error",
                Err(AttemptError::Retryable { .. }) => "retryable_error",
            };
            drop(counted);
            let error = match result {
                Ok(c) => return Ok(c),
                Err(AttemptError::Fatal(m)) => return Err(m),
                Err(e) => e,
            };
            let AttemptError::Retryable {
                message,
                retry_after,
            } = error
            else {
                unreachable!("fatal errors returned above")
            };
            if attempt > policy.retries {
                return Err(if policy.retries == 0 {
                    message
                } else {
                    format!("{message} (after {attempt} attempts)")
                });
            }
            let wait = policy.wait(attempt, retry_after);
            if Instant::now() + wait >= overall {
                return Err(format!(
                    "{message} (no time left in the run's deadline to retry)"
                ));
            }
            tracing::warn!(provider = %name, attempt, wait_ms = wait.as_millis() as u64, error = %message, "LLM call failed; retrying");
            metrics::counter!(LLM_RETRIES, "provider" => name.to_string()).increment(1);
            progress.send(ChatProgress::Retry {
                provider: name.to_string(),
                attempt,
                error: message,
                wait_ms: wait.as_millis() as u64,
            });
            tokio::time::sleep(wait).await;
        }
    }

    async fn attempt(&self, entry: &Entry, a: &Attempt<'_>) -> Result<Completion, AttemptError> {
        match &entry.provider {
            Provider::Scripted(p) => p.complete(a).await,
            Provider::Openai(p) => p.complete(a).await,
            Provider::Anthropic(p) => p.complete(a).await,
            Provider::Local(p) => p.complete(a).await,
        }
    }
}

const LLM_REQUESTS: &str = "caxton_llm_requests_total";
const LLM_REQUEST_DURATION: &str = "caxton_llm_request_duration_seconds";
const LLM_RETRIES: &str = "caxton_llm_retries_total";
const LLM_FALLBACKS: &str = "caxton_llm_fallbacks_total";
const LLM_TOKENS: &str = "caxton_llm_tokens_total";
const LLM_COST: &str = "caxton_llm_call_cost_usd";

/// Describes the `caxton_llm_*` families (recorded through the `metrics` facade; the process
/// serving the providers installs the recorder). `model` is the configured or agent-named
/// model, never what a provider's answer claims, so its values stay bounded.
pub fn describe_metrics() {
    use metrics::{Unit, describe_counter, describe_histogram};
    describe_counter!(
        LLM_REQUESTS,
        "LLM requests (each attempt), by provider, model and outcome (ok, retryable_error, error, cancelled: the worker went away)."
    );
    describe_histogram!(
        LLM_REQUEST_DURATION,
        Unit::Seconds,
        "Time of one LLM request attempt, by provider and model."
    );
    describe_counter!(LLM_RETRIES, "LLM requests retried, by provider.");
    describe_counter!(
        LLM_FALLBACKS,
        "Chats that fell back from a failed provider to the next, by the failed provider."
    );
    describe_counter!(
        LLM_TOKENS,
        "Tokens of answered chats, by provider, model and type (input, output)."
    );
    describe_histogram!(
        LLM_COST,
        "Cost in USD of each answered chat, by provider and model; its _sum is the total spent."
    );
}

/// One attempt in the metrics, counted when dropped: with its outcome, or `cancelled` when the
/// chat was dropped in the middle of it (the worker went away).
struct CountedAttempt<'a> {
    provider: &'a str,
    model: &'a str,
    started: Instant,
    outcome: &'static str,
}

impl Drop for CountedAttempt<'_> {
    fn drop(&mut self) {
        let (provider, model) = (self.provider.to_string(), self.model.to_string());
        metrics::counter!(LLM_REQUESTS, "provider" => provider.clone(), "model" => model.clone(), "outcome" => self.outcome)
            .increment(1);
        metrics::histogram!(LLM_REQUEST_DURATION, "provider" => provider, "model" => model)
            .record(self.started.elapsed().as_secs_f64());
    }
}

fn record_usage(provider: &str, model: &str, input: u64, output: u64, cost_usd: f64) {
    for (kind, n) in [("input", input), ("output", output)] {
        metrics::counter!(LLM_TOKENS, "provider" => provider.to_string(), "model" => model.to_string(), "type" => kind)
            .increment(n);
    }
    metrics::histogram!(LLM_COST, "provider" => provider.to_string(), "model" => model.to_string())
        .record(cost_usd);
}

/// Requests and attempts for the providers' unit tests.
/// A conservative estimate of a request's prompt tokens, before the provider counts them: about
/// three characters a token (English text runs nearer four), plus a few tokens per message.
pub fn estimate_prompt_tokens(req: &ChatRequest) -> u64 {
    (prompt_chars(req) as u64).div_ceil(3) + 4 * req.messages.len() as u64
}

/// Characters of everything a request sends as prompt: the messages (with tool calls and results)
/// and the offered tools' names, descriptions and schemas.
pub(crate) fn prompt_chars(req: &ChatRequest) -> usize {
    use caxton_ipc::toolhost::ChatMessage;
    let messages: usize = req
        .messages
        .iter()
        .map(|m| match m {
            ChatMessage::System { content } | ChatMessage::User { content } => content.len(),
            ChatMessage::Assistant {
                content,
                tool_calls,
            } => {
                content.as_deref().map_or(0, str::len)
                    + tool_calls
                        .iter()
                        .map(|c| c.name.len() + c.arguments.len())
                        .sum::<usize>()
            }
            ChatMessage::Tool { name, content, .. } => name.len() + content.len(),
        })
        .sum();
    let tools: usize = req
        .tools
        .iter()
        .map(|t| t.name.len() + t.description.len() + t.input_schema.len())
        .sum();
    messages + tools
}

/// The request as this provider may run it within the run's budget: refused when the prompt
/// alone would overspend, otherwise with its completion capped to what is left.
fn within_budget<'r>(
    req: &'r ChatRequest,
    policy: &Policy,
    provider: &str,
) -> Result<std::borrow::Cow<'r, ChatRequest>, ChatError> {
    let budget = &req.budget;
    if budget.tokens_left.is_none() && budget.usd_left.is_none() {
        return Ok(std::borrow::Cow::Borrowed(req));
    }
    let prompt = estimate_prompt_tokens(req);
    let exceeded = |what: String| {
        tracing::warn!(provider, "{what}");
        ChatError::Budget(what)
    };
    let mut cap = req.max_tokens.map_or(u64::MAX, u64::from);
    if let Some(left) = budget.tokens_left {
        if prompt >= left {
            return Err(exceeded(format!(
                "the next LLM call's prompt (~{prompt} tokens) would pass max_tokens ({left} tokens left)"
            )));
        }
        cap = cap.min(left - prompt);
    }
    if let Some(left) = budget.usd_left {
        let prompt_cost = policy.cost(prompt, 0);
        if prompt_cost >= left {
            return Err(exceeded(format!(
                "the next LLM call's prompt (~{prompt} tokens, ~${prompt_cost:.6} at `{provider}`'s prices) would pass max_cost_usd (${left:.6} left)"
            )));
        }
        if policy.completion_usd_per_mtok > 0.0 {
            let affordable =
                ((left - prompt_cost) * 1_000_000.0 / policy.completion_usd_per_mtok).floor();
            cap = cap.min(affordable as u64);
        }
    }
    if cap == 0 {
        return Err(exceeded(
            "no completion token is affordable within the budget".into(),
        ));
    }
    let mut capped = req.clone();
    if cap != u64::MAX {
        capped.max_tokens = Some(cap.min(u64::from(u32::MAX)) as u32);
    }
    Ok(std::borrow::Cow::Owned(capped))
}

#[cfg(test)]
pub(crate) mod test_support {
    use std::time::{Duration, Instant};

    use caxton_ipc::toolhost::{ChatMessage, ChatRequest, ToolSpec};

    use super::{Attempt, Progress};

    /// A request for `messages` offering `tools` (schema `{}`), 10 s deadline, not streamed.
    pub fn request(messages: Vec<ChatMessage>, tools: &[&str]) -> ChatRequest {
        ChatRequest {
            run_id: "run-test".into(),
            agent: "tester".into(),
            provider: "p".into(),
            messages,
            tools: tools
                .iter()
                .map(|t| ToolSpec {
                    name: t.to_string(),
                    description: format!("the {t} tool"),
                    input_schema: "{}".into(),
                    server: "s".into(),
                })
                .collect(),
            timeout_ms: 10_000,
            budget: Default::default(),
            ..Default::default()
        }
    }

    /// Runs `f` with a silent attempt for `req` (model `test-model`).
    pub async fn attempt<T>(req: &ChatRequest, f: impl AsyncFnOnce(Attempt<'_>) -> T) -> T {
        let progress = Progress::silent();
        let a = Attempt {
            req,
            model: req.model.as_deref().unwrap_or("test-model"),
            deadline: Instant::now() + Duration::from_millis(req.timeout_ms),
            progress: &progress,
        };
        f(a).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> Policy {
        Policy {
            timeout: Duration::from_secs(1),
            retries: 3,
            backoff: Duration::from_millis(100),
            max_backoff: Duration::from_millis(300),
            prompt_usd_per_mtok: 2.0,
            completion_usd_per_mtok: 10.0,
        }
    }

    #[test]
    fn backoff_doubles_with_jitter_and_caps() {
        let p = policy();
        for _ in 0..50 {
            let w1 = p.wait(1, None);
            assert!((75..=125).contains(&w1.as_millis()), "{w1:?}");
            let w2 = p.wait(2, None);
            assert!((150..=250).contains(&w2.as_millis()), "{w2:?}");
            assert!(p.wait(9, None) <= Duration::from_millis(300));
        }
        assert_eq!(
            p.wait(1, Some(Duration::from_millis(42))),
            Duration::from_millis(42)
        );
        assert_eq!(
            p.wait(1, Some(Duration::from_secs(60))),
            Duration::from_millis(300)
        );
    }

    #[test]
    fn budgets_refuse_or_cap_before_the_call() {
        use caxton_ipc::toolhost::{ChatBudget, ChatMessage};
        let mut req = test_support::request(
            vec![ChatMessage::User {
                content: "x".repeat(300),
            }],
            &[],
        );
        let prompt = estimate_prompt_tokens(&req);
        assert_eq!(prompt, 104);
        req.budget = ChatBudget {
            tokens_left: Some(100),
            usd_left: None,
        };
        let e = within_budget(&req, &policy(), "p").unwrap_err();
        assert_eq!(e.kind(), ErrorKind::LimitExceeded);
        assert!(e.to_string().starts_with("budget exceeded:"), "{e}");
        req.budget.tokens_left = Some(150);
        assert_eq!(
            within_budget(&req, &policy(), "p").unwrap().max_tokens,
            Some(46)
        );
        // $10 per million completion tokens: $0.0001 left after the prompt buys 10 tokens.
        req.budget = ChatBudget {
            tokens_left: None,
            usd_left: Some(policy().cost(prompt, 0) + 0.0001),
        };
        assert_eq!(
            within_budget(&req, &policy(), "p").unwrap().max_tokens,
            Some(10)
        );
        req.budget.usd_left = Some(0.0001);
        assert!(within_budget(&req, &policy(), "p").is_err());
    }

    #[test]
    fn cost_is_priced_per_million_tokens() {
        let c = policy().cost(1_000, 500);
        assert!((c - 0.007).abs() < 1e-12, "{c}");
    }
}
