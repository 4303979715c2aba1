//! The sampling engine: an exported decoder in ONNX Runtime, batched decoding with the KV cache,
//! and continuous batching.
//!
//! Rows are kept right-aligned in one `[batch, kv_heads, total, head_dim]` cache (left padding
//! masked out), so every row decodes at once whatever its length. A finished row is dropped and
//! a waiting request takes its slot at the next *refill*: new prompts are prefilled together and
//! merged with the surviving rows into a freshly trimmed cache. Refills happen as soon as
//! `refill_min` slots are free or dead (default batch/8, at least 1), so finished rows cost at
//! most that many rows of compute for a few steps, and the cache never keeps columns no row uses.
//!
//! Graphs exported with fused operators are marked for GroupQueryAttention's shared-buffer mode:
//! the cache then has spare columns after `total` (enough for the longest generation still
//! possible, sized at each refill), and every decode step binds the same buffer as past input and
//! present output, so the new key/value is written in place instead of the whole cache being
//! copied into a fresh present.

use crate::cache::Layout;
use crate::dims::ModelDims;
use crate::kv::KvType;
use crate::prefix::PrefixCache;
use crate::sampler::{sample, SamplingParams};
use flywheel_core::{FinishReason, Xoshiro256};
use flywheel_runtime::names::{self, LOGITS_TO_KEEP, SHARE_BUFFER_KEY};
use flywheel_runtime::{self as runtime, Provider, RuntimeError};
use ort::session::{OutputSelector, RunOptions, Session, SessionInputValue};
use ort::value::{DynTensorValueType, DynValue, Tensor as OrtTensor, TensorRefMut, ValueType};
use rayon::prelude::*;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime, UNIX_EPOCH};
use tokenizers::Tokenizer;

mod prefill;

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    #[error("{path}: {what}")]
    Model { path: PathBuf, what: String },
    #[error("ONNX Runtime: {0}")]
    Run(String),
    #[error("request {key}: empty prompt")]
    EmptyPrompt { key: u64 },
    /// The model produced a logit no distribution can be made of; the run stops and the
    /// request gets no completion (so nothing is stored for it).
    #[error("request {key}: the model's logits at position {position} are not finite: {source}")]
    NonFiniteLogit {
        key: u64,
        position: usize,
        source: crate::sampler::NonFiniteLogit,
    },
    /// The driver asked the engine to stop (its own error says why).
    #[error("the driver stopped the run")]
    Stopped,
}

fn run_err(e: ort::Error) -> EngineError {
    EngineError::Run(e.to_string())
}

/// One generation to run. `key` is the caller's identifier, returned with the completion.
#[derive(Debug, Clone)]
pub struct Request {
    pub key: u64,
    pub prompt: Vec<u32>,
    pub params: SamplingParams,
    pub seed: u64,
    /// Keep this sequence's KV cache when it finishes, for later prompts that extend it (see
    /// [`EngineConfig::prefix_cache_bytes`]).
    pub keep_kv: bool,
}

/// A finished generation.
#[derive(Debug, Clone)]
pub struct Completion {
    pub key: u64,
    pub prompt: Vec<u32>,
    pub tokens: Vec<u32>,
    pub logprobs: Vec<f32>,
    pub text: String,
    pub finish: FinishReason,
    pub seed: u64,
    pub started_unix_ms: u64,
    pub seconds: f64,
}

/// Per-step figures, for progress display.
#[derive(Debug, Clone, Copy, Default)]
pub struct StepStats {
    pub batch: usize,
    pub new_tokens: usize,
    pub seconds: f64,
}

/// What feeds the engine and receives its results; `complete` may make new requests available
/// (a reflection after a failed attempt), which `next_request` then returns.
pub trait Driver {
    fn next_request(&mut self) -> Option<Request>;
    /// Takes a finished generation; `Break` stops the run (the driver keeps its own error and
    /// reports it when asked, so the engine need not know its type).
    fn complete(&mut self, completion: Completion) -> ControlFlow<()>;
    /// Called when nothing is decoding and `next_request` had nothing: block until new requests
    /// may be available (a verdict still being computed may lead to a reflection) and return
    /// `true`, or return `false` when no more will come and the run is over.
    fn wait(&mut self) -> bool {
        false
    }
    fn on_step(&mut self, _stats: &StepStats) {}
}

#[derive(Debug, Clone)]
pub struct EngineConfig {
    pub batch_size: usize,
    /// ONNX Runtime intra-op threads (0: its default).
    pub threads: usize,
    /// Refill when at least this many slots are free or dead (default: batch/8, at least 1).
    pub refill_min: Option<usize>,
    /// Execution provider (default: the CPU, so library callers and tests are deterministic
    /// whatever the machine; the CLI defaults to `auto`). With CUDA the KV cache still lives in
    /// host memory between steps.
    pub provider: Provider,
    /// Padded prompt tokens per prefill forward: new requests are prefilled in groups of at
    /// most this size (a longer single prompt goes alone), which bounds prefill activations and
    /// attention buffers whatever the batch size.
    pub prefill_tokens: usize,
    /// Bytes of finished sequences' KV cache kept for prefix reuse (0: none). A request whose
    /// prompt starts with a kept sequence (`keep_kv`) prefills only the rest of its prompt.
    pub prefix_cache_bytes: usize,
}

/// Shortest prefix worth reusing: below this a prefill of the whole prompt costs about as much.
const MIN_REUSE_TOKENS: usize = 16;

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            batch_size: 8,
            threads: 0,
            refill_min: None,
            provider: Provider::Cpu,
            prefill_tokens: 8192,
            prefix_cache_bytes: 1 << 30,
        }
    }
}

/// Totals of one `run`.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct RunStats {
    pub completions: u64,
    pub new_tokens: u64,
    /// Prompt tokens computed by prefill (reused prefixes excluded).
    pub prefill_tokens: u64,
    /// Requests whose prompt started with a kept sequence, and the prompt tokens so reused.
    pub prefix_hits: u64,
    pub reused_tokens: u64,
    pub steps: u64,
    /// Row-steps spent on rows that had already finished (waiting for the next refill).
    pub dead_row_steps: u64,
    pub refills: u64,
    pub seconds: f64,
}

struct Row {
    req: Request,
    rng: Xoshiro256,
    tokens: Vec<u32>,
    logprobs: Vec<f32>,
    /// Valid cached positions (prompt + fed tokens).
    len: usize,
    started: Instant,
    started_unix_ms: u64,
    done: Option<FinishReason>,
    /// Index of this row in the cache tensors it currently lives in.
    slot: usize,
}

pub struct Engine {
    session: Session,
    pub tokenizer: Tokenizer,
    pub dims: ModelDims,
    config: EngineConfig,
    has_position_ids: bool,
    /// The graph takes `logits_to_keep`, so prefill asks for the last position's logits only.
    has_logits_to_keep: bool,
    /// Decode steps bind past and present to one buffer with spare columns (fused graphs).
    share_kv: bool,
    /// Element type of the cache, from the graph's past inputs.
    kv_type: KvType,
    past_names: Vec<String>,
    present_names: Vec<String>,
    prefixes: PrefixCache,
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Engine {
    /// Loads an exported folder (`model.onnx`, `genai_config.json`, `tokenizer.json`).
    pub fn load(dir: &Path, config: EngineConfig) -> Result<Self, EngineError> {
        let dims = ModelDims::load(dir)?;
        let tok_path = dir.join("tokenizer.json");
        let tokenizer = Tokenizer::from_file(&tok_path).map_err(|e| EngineError::Model {
            path: tok_path.clone(),
            what: e.to_string(),
        })?;
        let (session, provider) =
            runtime::session(&dir.join("model.onnx"), config.threads, config.provider)?;
        let graph_inputs: Vec<String> = session
            .inputs()
            .iter()
            .map(|o| o.name().to_owned())
            .collect();
        let past_names = names::past_names(dims.layers);
        let present_names = names::present_names(dims.layers);
        for n in past_names
            .iter()
            .map(String::as_str)
            .chain([names::INPUT_IDS, names::ATTENTION_MASK])
        {
            if !graph_inputs.iter().any(|g| g == n) {
                return Err(EngineError::Model {
                    path: dir.join("model.onnx"),
                    what: format!("graph has no input `{n}`"),
                });
            }
        }
        let has_position_ids = graph_inputs.iter().any(|n| n == names::POSITION_IDS);
        let first_past = names::past_key(0);
        let past_type = session
            .inputs()
            .iter()
            .find(|o| o.name() == first_past)
            .and_then(|o| o.dtype().tensor_type());
        let kv_type =
            past_type
                .and_then(KvType::from_element)
                .ok_or_else(|| EngineError::Model {
                    path: dir.join("model.onnx"),
                    what: format!(
                "`{first_past}` has element type {past_type:?}; the engine's cache holds f32 or f16"
            ),
                })?;
        let has_logits_to_keep = graph_inputs
            .iter()
            .cloned()
            .chain(
                session
                    .overridable_initializers()
                    .iter()
                    .map(|o| o.name().to_owned()),
            )
            .any(|n| n == LOGITS_TO_KEEP);
        // One buffer for past and present only where ONNX Runtime computes in the host buffers we
        // hand it: on CUDA it would copy them to the device and back, two buffers again.
        let share_kv = provider == Provider::Cpu
            && session
                .metadata()
                .ok()
                .and_then(|m| m.custom(SHARE_BUFFER_KEY))
                .is_some_and(|v| v == "true");
        let batch_size = config.batch_size.max(1);
        let prefixes = PrefixCache::new(
            config.prefix_cache_bytes,
            MIN_REUSE_TOKENS,
            dims.kv_heads,
            dims.head_dim * kv_type.size(),
        );
        Ok(Self {
            session,
            tokenizer,
            dims,
            config: EngineConfig {
                batch_size,
                provider,
                ..config
            },
            has_position_ids,
            has_logits_to_keep,
            share_kv,
            kv_type,
            past_names,
            present_names,
            prefixes,
        })
    }

    /// The execution provider the session really got (`Cpu` or `Cuda`).
    pub fn provider(&self) -> Provider {
        self.config.provider
    }

    /// Whether decode steps write the KV cache in place (a fused graph's shared-buffer mode).
    pub fn shares_kv_buffer(&self) -> bool {
        self.share_kv
    }

    /// Whether prefill asks the graph for the last position's logits only (`logits_to_keep`).
    pub fn last_logits_only(&self) -> bool {
        self.has_logits_to_keep
    }

    /// Spare cache columns for `rows` at cache length `total`: the most tokens any of them may
    /// still generate, within the context.
    fn headroom<'r>(&self, rows: impl Iterator<Item = &'r Row>, total: usize) -> usize {
        let want = rows
            .map(|r| r.req.params.max_new_tokens.saturating_sub(r.tokens.len()))
            .max()
            .unwrap_or(0);
        want.min(self.dims.context.saturating_sub(total)).max(1)
    }

    fn refill_min(&self) -> usize {
        self.config
            .refill_min
            .unwrap_or(self.config.batch_size / 8)
            .clamp(1, self.config.batch_size)
    }

    /// Runs `ids`/`positions` `[b, s]`, `mask` `[b, total]` with the given past; returns the
    /// logits of the last position of each row `[b, vocab]` and the present key/values. With
    /// `share`, each present is written into its past's own buffer (which must have a spare
    /// column) and that same buffer comes back.
    fn forward(
        &mut self,
        b: usize,
        ids: Vec<i64>,
        positions: Vec<i64>,
        mask: Vec<i64>,
        mut past: Vec<DynValue>,
        share: bool,
    ) -> Result<(Vec<f32>, Vec<DynValue>), EngineError> {
        let s = ids.len() / b;
        let positions = self.has_position_ids.then_some(positions);
        let mut inputs: Vec<(String, SessionInputValue<'_>)> =
            runtime::token_inputs(b, ids, positions, mask).map_err(run_err)?;
        let mut selector = OutputSelector::default();
        if share {
            for (name, v) in self.past_names.iter().zip(past.iter_mut()) {
                let t = v.view().downcast::<DynTensorValueType>().map_err(run_err)?;
                let ValueType::Tensor { shape, .. } = t.dtype().clone() else {
                    return Err(EngineError::Run(format!("past `{name}` is not a tensor")));
                };
                // No Rust reference to the buffer exists while ONNX Runtime reads the past and
                // writes the present through it: only its raw pointer is handed over.
                let ptr = t.data_ptr().cast_mut();
                let info = t.memory_info().to_owned();
                // SAFETY: `ptr` addresses the buffer owned by `v`, which is moved into `selector`
                // below as the preallocated present and so lives until this run returns; the
                // view describes exactly that buffer's shape and type. Reading the past and
                // writing the present through one buffer is GroupQueryAttention's shared-buffer
                // mode, which the graph is marked for and which is used on the CPU only, where
                // the buffer is the one ONNX Runtime computes in.
                let view: SessionInputValue<'_> = match self.kv_type {
                    KvType::F32 => unsafe { TensorRefMut::<f32>::from_raw(info, ptr, shape) }
                        .map_err(run_err)?
                        .into(),
                    KvType::F16 => unsafe { TensorRefMut::<half::f16>::from_raw(info, ptr, shape) }
                        .map_err(run_err)?
                        .into(),
                };
                inputs.push((name.clone(), view));
            }
            for (name, v) in self.present_names.iter().zip(past.drain(..)) {
                selector = selector.preallocate(name.clone(), v);
            }
        } else {
            for (name, v) in self.past_names.iter().zip(&past) {
                inputs.push((name.clone(), v.into()));
            }
        }
        // Logits of the last position only (rows are right-aligned, so it is every row's last).
        let s_out = if self.has_logits_to_keep {
            inputs.push((
                LOGITS_TO_KEEP.into(),
                OrtTensor::from_array((Vec::<i64>::new(), vec![1i64]))
                    .map_err(run_err)?
                    .into(),
            ));
            1
        } else {
            s
        };
        let options = RunOptions::new().map_err(run_err)?.with_outputs(selector);
        let mut out = self
            .session
            .run_with_options(inputs, &options)
            .map_err(run_err)?;
        let vocab = self.dims.vocab;
        let logits = {
            let v = out
                .get(names::LOGITS)
                .ok_or_else(|| EngineError::Run("no `logits` output".into()))?;
            let (_, data) = v.try_extract_tensor::<f32>().map_err(run_err)?;
            if data.len() != b * s_out * vocab {
                return Err(EngineError::Run(format!(
                    "logits have {} values, expected {}",
                    data.len(),
                    b * s_out * vocab
                )));
            }
            let mut last = Vec::with_capacity(b * vocab);
            for r in 0..b {
                let start = (r * s_out + s_out - 1) * vocab;
                last.extend_from_slice(&data[start..start + vocab]);
            }
            last
        };
        let mut presents = Vec::with_capacity(self.present_names.len());
        for n in &self.present_names {
            presents.push(
                out.remove(n)
                    .ok_or_else(|| EngineError::Run(format!("no `{n}` output")))?,
            );
        }
        Ok((logits, presents))
    }

    fn empty_past(&self, b: usize) -> Result<Vec<DynValue>, EngineError> {
        let shape = vec![
            b as i64,
            self.dims.kv_heads as i64,
            0,
            self.dims.head_dim as i64,
        ];
        (0..self.past_names.len())
            .map(|_| self.kv_type.tensor(shape.clone(), &[]).map_err(run_err))
            .collect()
    }

    /// Samples the next token of `row` from `logits` and decides whether it is finished.
    fn advance(&self, row: &mut Row, logits: &[f32]) -> Result<(), EngineError> {
        let (tok, lp) = sample(logits, &row.req.params, &mut row.rng).map_err(|source| {
            EngineError::NonFiniteLogit {
                key: row.req.key,
                position: row.len,
                source,
            }
        })?;
        row.tokens.push(tok);
        row.logprobs.push(lp);
        if !row.req.params.ignore_eos && self.dims.eos.contains(&tok) {
            row.done = Some(FinishReason::Eos);
        } else if !row.req.params.stop.is_empty() && self.hits_stop(row) {
            row.done = Some(FinishReason::Stop);
        } else if row.tokens.len() >= row.req.params.max_new_tokens
            || row.len + 1 >= self.dims.context
        {
            row.done = Some(FinishReason::Length);
        }
        Ok(())
    }

    fn hits_stop(&self, row: &Row) -> bool {
        // Only the tail can complete a stop string: decode the last few tokens, not the whole text.
        let tail = &row.tokens[row.tokens.len().saturating_sub(16)..];
        let text = self.tokenizer.decode(tail, false).unwrap_or_default();
        row.req
            .params
            .stop
            .iter()
            .any(|s| !s.is_empty() && text.contains(s.as_str()))
    }

    fn finish(&self, row: Row) -> Completion {
        let text = self.tokenizer.decode(&row.tokens, true).unwrap_or_default();
        Completion {
            key: row.req.key,
            prompt: row.req.prompt,
            tokens: row.tokens,
            logprobs: row.logprobs,
            text,
            finish: row.done.unwrap_or(FinishReason::Length),
            seed: row.req.seed,
            started_unix_ms: row.started_unix_ms,
            seconds: row.started.elapsed().as_secs_f64(),
        }
    }

    /// Runs every request the driver provides, until it has none left and all are finished.
    pub fn run(&mut self, driver: &mut dyn Driver) -> Result<RunStats, EngineError> {
        let start = Instant::now();
        let mut stats = RunStats::default();
        let mut rows: Vec<Row> = Vec::new();
        let mut cache: Vec<DynValue> = Vec::new();
        let (mut total, mut cap) = (0usize, 0usize);
        let vocab = self.dims.vocab;
        loop {
            let alive = rows.iter().filter(|r| r.done.is_none()).count();
            let dead = rows.len() - alive;
            // Slots not decoding: dead rows (placeholders until this refill) and empty ones.
            let free = self.config.batch_size - alive;
            if alive == 0 || free >= self.refill_min() {
                let mut new = Vec::new();
                while new.len() < free {
                    let Some(req) = driver.next_request() else {
                        break;
                    };
                    if req.prompt.is_empty() {
                        return Err(EngineError::EmptyPrompt { key: req.key });
                    }
                    if req.prompt.len() >= self.dims.context || req.params.max_new_tokens == 0 {
                        // No room to generate: finish at once (length, no tokens) rather than
                        // abort a whole run over one long conversation. A step of its own, so
                        // the driver saves it even if no decode step ever comes.
                        let mut row = Row::new(req, 0);
                        row.done = Some(FinishReason::Length);
                        self.report(row, driver, &mut stats)?;
                        driver.on_step(&StepStats::default());
                        continue;
                    }
                    new.push(req);
                }
                if new.is_empty() && alive == 0 {
                    if driver.wait() {
                        continue;
                    }
                    break;
                }
                if !new.is_empty() || dead > 0 {
                    let batch = self.refill(
                        std::mem::take(&mut rows),
                        std::mem::take(&mut cache),
                        total,
                        cap,
                        new,
                        &mut stats,
                    )?;
                    (rows, cache, total, cap) = (batch.rows, batch.cache, batch.total, batch.cap);
                    let finished_now = !batch.finished.is_empty();
                    for row in batch.finished {
                        self.report(row, driver, &mut stats)?;
                    }
                    if rows.is_empty() {
                        // Everything finished in prefill (first token EOS, or one new token
                        // allowed): no decode step follows, so this is the driver's step.
                        if finished_now {
                            driver.on_step(&StepStats::default());
                        }
                        continue;
                    }
                }
            }
            let t0 = Instant::now();
            if self.share_kv && total + 1 > cap {
                // No refill came before the spare columns ran out: move to a larger buffer.
                let batch = self.refill(
                    std::mem::take(&mut rows),
                    std::mem::take(&mut cache),
                    total,
                    cap,
                    Vec::new(),
                    &mut stats,
                )?;
                (rows, cache, total, cap) = (batch.rows, batch.cache, batch.total, batch.cap);
                if rows.is_empty() {
                    continue;
                }
            }
            let b = rows.len();
            let ids: Vec<i64> = rows
                .iter()
                .map(|r| r.tokens.last().map_or(0, |&t| i64::from(t)))
                .collect();
            let pos: Vec<i64> = rows.iter().map(|r| r.len as i64).collect();
            let mut mask = vec![0i64; b * (total + 1)];
            for (i, r) in rows.iter().enumerate() {
                mask[i * (total + 1) + (total - r.len)..(i + 1) * (total + 1)].fill(1);
            }
            let past = std::mem::take(&mut cache);
            let (logits, presents) = self.forward(b, ids, pos, mask, past, self.share_kv)?;
            if self.share_kv {
                // The presents must be the past buffers themselves, written in place.
                let shape = presents[0]
                    .dtype()
                    .tensor_shape()
                    .cloned()
                    .unwrap_or_default();
                if shape.get(2).copied() != Some(cap as i64) {
                    return Err(EngineError::Run(format!(
                        "shared-buffer decode returned a present of shape {shape:?}, expected {cap} columns"
                    )));
                }
            }
            cache = presents;
            total += 1;
            cap = cap.max(total);
            let dead_now = rows.iter().filter(|r| r.done.is_some()).count();
            // Rows sample in parallel (each has its own generator, so results do not depend on
            // the thread count); ONNX Runtime is idle meanwhile.
            let this = &*self;
            rows.par_iter_mut().enumerate().try_for_each(|(i, row)| {
                row.len += 1;
                match row.done {
                    None => this.advance(row, &logits[i * vocab..(i + 1) * vocab]),
                    Some(_) => Ok(()),
                }
            })?;
            let produced = b - dead_now;
            stats.steps += 1;
            stats.dead_row_steps += dead_now as u64;
            for row in rows.iter_mut() {
                if row.done.is_some() && !row.tokens.is_empty() {
                    self.keep_prefix(row, &cache, Layout::new(total, cap))?;
                    // Report now; the row stays as an empty placeholder until the next refill.
                    let placeholder = row.shallow();
                    let finished = std::mem::replace(row, placeholder);
                    self.report(finished, driver, &mut stats)?;
                }
            }
            driver.on_step(&StepStats {
                batch: b,
                new_tokens: produced,
                seconds: t0.elapsed().as_secs_f64(),
            });
        }
        stats.seconds = start.elapsed().as_secs_f64();
        Ok(stats)
    }

    fn report(
        &self,
        row: Row,
        driver: &mut dyn Driver,
        stats: &mut RunStats,
    ) -> Result<(), EngineError> {
        stats.completions += 1;
        stats.new_tokens += row.tokens.len() as u64;
        match driver.complete(self.finish(row)) {
            ControlFlow::Continue(()) => Ok(()),
            ControlFlow::Break(()) => Err(EngineError::Stopped),
        }
    }
}

impl Row {
    /// A row admitted now: prompt cached (once prefilled), nothing generated yet.
    fn new(req: Request, slot: usize) -> Row {
        Row {
            rng: Xoshiro256::new(req.seed),
            len: req.prompt.len(),
            req,
            tokens: Vec::new(),
            logprobs: Vec::new(),
            started: Instant::now(),
            started_unix_ms: unix_ms(),
            done: None,
            slot,
        }
    }

    /// The bookkeeping fields of a row, for a placeholder that keeps its cache slot.
    fn shallow(&self) -> Row {
        Row {
            req: Request {
                key: self.req.key,
                prompt: Vec::new(),
                params: self.req.params.clone(),
                seed: self.req.seed,
                keep_kv: false,
            },
            rng: Xoshiro256::new(0),
            tokens: Vec::new(),
            logprobs: Vec::new(),
            len: self.len,
            started: self.started,
            started_unix_ms: self.started_unix_ms,
            done: self.done,
            slot: self.slot,
        }
    }
}
