//! One generation run: task instances → attempts → (on failure) reflections → retries, as one
//! stream of requests to the sampling engine, every result verified and written to the store.
//!
//! Verdicts are computed off the decode loop ([`verdicts`]), so a slow verifier does not stall
//! the batch; a task stays in flight until its last verdict is in.
//!
//! Resumable by construction: each request's seed is derived from (run seed, task, attempt,
//! reflection, kind), records are keyed the same way, and on start every task is checked against
//! the store so only missing work is requested. Only tasks in flight are held in memory.

use flywheel_core::{Kind, SplitMix64};
use flywheel_datasets::task::{Instance, Task, Verdict};
use flywheel_generate::{Completion, Driver, Request, SamplingParams, StepStats};
use flywheel_model::chat::{ChatError, ChatTemplate};
use flywheel_store::{
    AttemptRecord, Generation, ReflectionRecord, RetryRecord, Store, StoreError, TaskRecord,
    WriteBatch,
};
use std::collections::{HashMap, VecDeque};
use std::ops::ControlFlow;
use std::sync::Arc;

use tokenizers::Tokenizer;

mod verdicts;
use verdicts::Verdicts;

/// Engine steps a verdict may take before the pipeline waits for it (see [`verdicts`]).
const VERDICT_LAG_STEPS: u64 = 2;

/// Why a run stopped. Store errors stay values ([`StoreError::Locked`], [`StoreError::Conflict`],
/// ...), so an orchestrator can branch on them.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// Reading or writing the store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// An input line could not be read.
    #[error("{path}: {source}")]
    Input {
        /// The input file.
        path: std::path::PathBuf,
        /// The cause, with its line.
        source: flywheel_datasets::InstanceError,
    },
    /// The stored instance of a task differs from the input's (the input was edited).
    #[error(
        "input record {record} (blank lines not counted) changed since this run began (stored id \
         {stored:?}, now {current:?})"
    )]
    InputChanged {
        /// 1-based record number in the input (blank lines not counted).
        record: u64,
        /// The stored instance's id.
        stored: String,
        /// The current line's id.
        current: String,
    },
    /// A prompt could not be rendered or tokenized.
    #[error("task {task_index}: {kind} prompt: {source}")]
    Prompt {
        /// The task.
        task_index: u64,
        /// Which prompt.
        kind: &'static str,
        /// The cause.
        source: ChatError,
    },
    /// The verification threads could not be started.
    #[error("cannot start the verifier threads: {0}")]
    VerifierPool(#[from] rayon::ThreadPoolBuildError),
    /// The engine returned something the pipeline never asked for (a bug, not bad input).
    #[error("internal error: {0}")]
    Internal(&'static str),
}

/// Where a request's result goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Slot {
    pub task_index: u64,
    pub attempt: u32,
    pub reflection: u32,
    pub stage: Kind,
}

/// The sampler seed of one request: the run seed mixed with the slot (SplitMix64, one step per
/// part), so a resumed run regenerates a lost request with the same random draws. (Its tokens are
/// the same too where the logits are: batch padding and prefix reuse change them in the last bits.)
pub fn request_seed(run_seed: u64, slot: &Slot) -> u64 {
    // Kind codes 1..=3 are part of the seed: they must never change, or resumed runs diverge.
    let kind = match slot.stage {
        Kind::Attempt => 1u64,
        Kind::Reflection => 2,
        Kind::Retry => 3,
    };
    SplitMix64::derive(
        run_seed,
        &[
            slot.task_index,
            u64::from(slot.attempt),
            u64::from(slot.reflection),
            kind,
        ],
    )
}

/// Settings of the pipeline.
#[derive(Debug, Clone)]
pub struct PipelineConfig {
    pub attempts: u32,
    pub reflections: u32,
    pub params: SamplingParams,
    /// Temperature of the reflections (`None`: `params.temperature`).
    pub reflection_temperature: Option<f32>,
    pub seed: u64,
}

/// A task in flight: its instance and the texts later prompts need.
struct Active {
    instance: Instance,
    attempts: HashMap<u32, (String, Verdict)>,
    reflections: HashMap<(u32, u32), String>,
    /// Requests issued whose result (and verdict, for attempts and retries) is not yet in.
    open: usize,
}

/// Running totals for progress and the report.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Tally {
    pub tasks_done: u64,
    pub tasks_skipped_complete: u64,
    pub attempts: u64,
    pub attempts_passed: u64,
    pub reflections: u64,
    pub retries: u64,
    pub retries_passed: u64,
    pub new_tokens: u64,
}

/// Progress callback: the run's tally and the last engine step.
pub type ProgressFn<'a> = Box<dyn FnMut(&Tally, &StepStats) + 'a>;

/// Instances of the run with their global index; an error names the file and line.
pub type Instances<'a> = Box<dyn Iterator<Item = Result<(u64, Instance), PipelineError>> + 'a>;

/// The engine's driver for one run.
pub struct Pipeline<'a> {
    task: Arc<dyn Task>,
    template: &'a ChatTemplate,
    tokenizer: &'a Tokenizer,
    store: &'a Store,
    config: PipelineConfig,
    instances: Instances<'a>,
    /// Follow-up requests (reflections, retries) go before new tasks, so tasks finish and leave
    /// memory in the order they started.
    follow_ups: VecDeque<(Slot, Vec<u32>)>,
    fresh: VecDeque<(Slot, Vec<u32>)>,
    active: HashMap<u64, Active>,
    in_flight: HashMap<u64, Slot>,
    next_key: u64,
    pending: WriteBatch,
    pub tally: Tally,
    /// Called after every engine step with the tally and the step's figures.
    pub progress: Option<ProgressFn<'a>>,
    error: Option<PipelineError>,
    verdicts: Verdicts,
    /// Generations waiting for their verdict, by ticket.
    judging: HashMap<u64, (Slot, Generation)>,
    /// Engine steps seen so far.
    steps: u64,
}

impl<'a> Pipeline<'a> {
    pub fn new(
        task: Arc<dyn Task>,
        template: &'a ChatTemplate,
        tokenizer: &'a Tokenizer,
        store: &'a Store,
        config: PipelineConfig,
        instances: Instances<'a>,
    ) -> Result<Self, PipelineError> {
        Ok(Self {
            task,
            template,
            tokenizer,
            store,
            config,
            instances,
            follow_ups: VecDeque::new(),
            fresh: VecDeque::new(),
            active: HashMap::new(),
            in_flight: HashMap::new(),
            next_key: 0,
            pending: WriteBatch::default(),
            tally: Tally::default(),
            progress: None,
            error: None,
            verdicts: Verdicts::new()?,
            judging: HashMap::new(),
            steps: 0,
        })
    }

    fn prompt(
        &self,
        inst: &Instance,
        slot: &Slot,
        act: &Active,
    ) -> Result<Vec<u32>, PipelineError> {
        let tools = self.task.tools(inst);
        let messages = match slot.stage {
            Kind::Attempt => self.task.attempt_messages(inst),
            Kind::Reflection => {
                let (text, verdict) = act
                    .attempts
                    .get(&slot.attempt)
                    .ok_or(PipelineError::Internal("reflection without its attempt"))?;
                self.task.reflection_messages(inst, text, verdict)
            }
            Kind::Retry => {
                let (text, _) = act
                    .attempts
                    .get(&slot.attempt)
                    .ok_or(PipelineError::Internal("retry without its attempt"))?;
                let refl = act
                    .reflections
                    .get(&(slot.attempt, slot.reflection))
                    .ok_or(PipelineError::Internal("retry without its reflection"))?;
                self.task.retry_messages(inst, text, refl)
            }
        };
        self.template
            .encode(self.tokenizer, &messages, tools.as_ref())
            .map_err(|source| PipelineError::Prompt {
                task_index: slot.task_index,
                kind: slot.stage.as_str(),
                source,
            })
    }

    /// Queues a request for `slot` (the task must be active).
    fn issue(&mut self, slot: Slot, follow_up: bool) -> Result<(), PipelineError> {
        let act = self
            .active
            .get(&slot.task_index)
            .ok_or(PipelineError::Internal("request for a task not in flight"))?;
        let prompt = self.prompt(&act.instance, &slot, act)?;
        if let Some(a) = self.active.get_mut(&slot.task_index) {
            a.open += 1;
        }
        if follow_up {
            self.follow_ups.push_back((slot, prompt));
        } else {
            self.fresh.push_back((slot, prompt));
        }
        Ok(())
    }

    /// Pulls the next task that still has work, reading what the store already holds.
    fn admit_next_task(&mut self) -> Result<bool, PipelineError> {
        let (k, g) = (self.config.attempts, self.config.reflections);
        while let Some(next) = self.instances.next() {
            let (index, instance) = next?;
            let state = self.store.task_state(index)?;
            if let Some(stored) = &state.task {
                // Stored generations were made for the stored instance; continuing them with a
                // different one would pair old attempts with new verdicts.
                // Text first (how it was stored); values too, in case a float's text changed.
                let current = instance.fields.to_string();
                let same_fields = stored.fields_json == current
                    || serde_json::from_str::<serde_json::Value>(&stored.fields_json)
                        .is_ok_and(|f| f == instance.fields);
                if stored.id != instance.id || !same_fields {
                    return Err(PipelineError::InputChanged {
                        record: index + 1,
                        stored: stored.id.clone(),
                        current: instance.id.clone(),
                    });
                }
            }
            let mut act = Active {
                instance,
                attempts: HashMap::new(),
                reflections: HashMap::new(),
                open: 0,
            };
            for a in &state.attempts {
                act.attempts.insert(
                    a.attempt,
                    (
                        a.generation.text.clone(),
                        Verdict {
                            pass: a.pass,
                            reason: a.reason.clone(),
                        },
                    ),
                );
            }
            for r in &state.reflections {
                act.reflections
                    .insert((r.attempt, r.reflection), r.generation.text.clone());
            }
            let done_retries: std::collections::HashSet<(u32, u32)> = state
                .retries
                .iter()
                .map(|r| (r.attempt, r.reflection))
                .collect();
            let mut todo = Vec::new();
            for attempt in 0..k {
                match act.attempts.get(&attempt) {
                    None => todo.push((
                        Slot {
                            task_index: index,
                            attempt,
                            reflection: 0,
                            stage: Kind::Attempt,
                        },
                        false,
                    )),
                    Some((_, v)) if !v.pass => {
                        for reflection in 0..g {
                            let slot = |stage| Slot {
                                task_index: index,
                                attempt,
                                reflection,
                                stage,
                            };
                            if !act.reflections.contains_key(&(attempt, reflection)) {
                                todo.push((slot(Kind::Reflection), true));
                            } else if !done_retries.contains(&(attempt, reflection)) {
                                todo.push((slot(Kind::Retry), true));
                            }
                        }
                    }
                    Some(_) => {}
                }
            }
            if state.task.is_none() {
                self.pending.tasks.push(TaskRecord {
                    task_index: index,
                    id: act.instance.id.clone(),
                    level: act
                        .instance
                        .fields
                        .get("level")
                        .and_then(|l| l.as_str())
                        .map(str::to_owned),
                    fields_json: act.instance.fields.to_string(),
                });
            }
            if todo.is_empty() {
                self.tally.tasks_done += 1;
                self.tally.tasks_skipped_complete += 1;
                continue;
            }
            self.active.insert(index, act);
            for (slot, follow_up) in todo {
                self.issue(slot, follow_up)?;
            }
            return Ok(true);
        }
        Ok(false)
    }

    fn flush(&mut self) -> Result<(), StoreError> {
        if !self.pending.is_empty() {
            self.store.write(&self.pending)?;
            self.pending.clear();
        }
        Ok(())
    }

    /// Waits for the verdicts still out, writes what is pending and reports a driver error, if
    /// any occurred.
    pub fn finish(mut self) -> Result<Tally, PipelineError> {
        if self.error.is_none() {
            while let Some((ticket, verdict)) = self.verdicts.next_blocking() {
                if let Err(e) = self.on_verdict(ticket, verdict) {
                    self.error = Some(e);
                    break;
                }
            }
        }
        if let Some(e) = self.error.take() {
            // Keep what finished before the error (each record is whole); if the error was
            // the store's, this fails again and the first error is the one to report.
            let _ = self.flush();
            return Err(e);
        }
        self.flush()?;
        Ok(self.tally)
    }

    fn on_complete(&mut self, c: Completion) -> Result<(), PipelineError> {
        let slot = self
            .in_flight
            .remove(&c.key)
            .ok_or(PipelineError::Internal("completion for an unknown request"))?;
        let generation = Generation {
            prompt_ids: c.prompt,
            token_ids: c.tokens,
            logprobs: c.logprobs,
            text: c.text,
            finish_reason: c.finish,
            seed: c.seed,
            started_unix_ms: c.started_unix_ms,
            seconds: c.seconds,
        };
        self.tally.new_tokens += generation.token_ids.len() as u64;
        let act = self
            .active
            .get_mut(&slot.task_index)
            .ok_or(PipelineError::Internal(
                "completion for a task not in flight",
            ))?;
        match slot.stage {
            Kind::Attempt | Kind::Retry => {
                let ticket = self.verdicts.submit(
                    self.task.clone(),
                    act.instance.clone(),
                    generation.text.clone(),
                    self.steps + VERDICT_LAG_STEPS,
                );
                self.judging.insert(ticket, (slot, generation));
                Ok(())
            }
            Kind::Reflection => {
                act.open -= 1;
                self.tally.reflections += 1;
                act.reflections
                    .insert((slot.attempt, slot.reflection), generation.text.clone());
                self.pending.reflections.push(ReflectionRecord {
                    task_index: slot.task_index,
                    attempt: slot.attempt,
                    reflection: slot.reflection,
                    generation,
                });
                self.issue(
                    Slot {
                        stage: Kind::Retry,
                        ..slot
                    },
                    true,
                )?;
                self.retire_if_done(slot.task_index);
                Ok(())
            }
        }
    }

    /// Records a verdict: the attempt or retry is stored, and a failed attempt's reflections
    /// are requested.
    fn on_verdict(&mut self, ticket: u64, verdict: Verdict) -> Result<(), PipelineError> {
        let (slot, generation) = self
            .judging
            .remove(&ticket)
            .ok_or(PipelineError::Internal("verdict for an unknown generation"))?;
        let act = self
            .active
            .get_mut(&slot.task_index)
            .ok_or(PipelineError::Internal("verdict for a task not in flight"))?;
        act.open -= 1;
        let (t, a, r) = (slot.task_index, slot.attempt, slot.reflection);
        if slot.stage == Kind::Attempt {
            self.tally.attempts += 1;
            self.tally.attempts_passed += u64::from(verdict.pass);
            act.attempts
                .insert(a, (generation.text.clone(), verdict.clone()));
            self.pending.attempts.push(AttemptRecord {
                task_index: t,
                attempt: a,
                generation,
                pass: verdict.pass,
                reason: verdict.reason,
            });
            if !verdict.pass {
                for g in 0..self.config.reflections {
                    self.issue(
                        Slot {
                            task_index: t,
                            attempt: a,
                            reflection: g,
                            stage: Kind::Reflection,
                        },
                        true,
                    )?;
                }
            }
        } else {
            self.tally.retries += 1;
            self.tally.retries_passed += u64::from(verdict.pass);
            self.pending.retries.push(RetryRecord {
                task_index: t,
                attempt: a,
                reflection: r,
                generation,
                pass: verdict.pass,
                reason: verdict.reason,
            });
        }
        self.retire_if_done(t);
        Ok(())
    }

    /// Forgets a task whose every request and verdict is in.
    fn retire_if_done(&mut self, task_index: u64) {
        if self.active.get(&task_index).is_some_and(|a| a.open == 0) {
            self.active.remove(&task_index);
            self.tally.tasks_done += 1;
        }
    }

    /// Takes every verdict due by now, oldest first, waiting for late ones.
    fn take_due_verdicts(&mut self) {
        if self.error.is_some() {
            return;
        }
        while let Some((ticket, verdict)) = self.verdicts.next_due(self.steps) {
            if let Err(e) = self.on_verdict(ticket, verdict) {
                self.error = Some(e);
                return;
            }
        }
    }
}

impl Driver for Pipeline<'_> {
    fn next_request(&mut self) -> Option<Request> {
        if self.error.is_some() {
            return None;
        }
        if self.follow_ups.is_empty() && self.fresh.is_empty() {
            match self.admit_next_task() {
                Ok(_) => {}
                Err(e) => {
                    self.error = Some(e);
                    return None;
                }
            }
        }
        let (slot, prompt) = self
            .follow_ups
            .pop_front()
            .or_else(|| self.fresh.pop_front())?;
        let key = self.next_key;
        self.next_key += 1;
        self.in_flight.insert(key, slot);
        Some(Request {
            key,
            prompt,
            params: match (slot.stage, self.config.reflection_temperature) {
                (Kind::Reflection, Some(temperature)) => SamplingParams {
                    temperature,
                    ..self.config.params.clone()
                },
                _ => self.config.params.clone(),
            },
            seed: request_seed(self.config.seed, &slot),
            // Reflections extend their attempt's conversation and retries their reflection's;
            // without reflections nothing extends an attempt.
            keep_kv: match slot.stage {
                Kind::Attempt => self.config.reflections > 0,
                Kind::Reflection => true,
                Kind::Retry => false,
            },
        })
    }

    fn complete(&mut self, completion: Completion) -> ControlFlow<()> {
        if self.error.is_some() {
            return ControlFlow::Break(());
        }
        match self.on_complete(completion) {
            Ok(()) => ControlFlow::Continue(()),
            Err(e) => {
                self.error = Some(e);
                ControlFlow::Break(())
            }
        }
    }

    fn wait(&mut self) -> bool {
        if self.error.is_some() {
            return false;
        }
        let Some((ticket, verdict)) = self.verdicts.next_blocking() else {
            return false;
        };
        if let Err(e) = self.on_verdict(ticket, verdict) {
            self.error = Some(e);
            return false;
        }
        true
    }

    fn on_step(&mut self, stats: &StepStats) {
        self.take_due_verdicts();
        self.steps += 1;
        // One transaction per engine step: a crash loses at most the requests still in flight.
        if let Err(e) = self.flush() {
            self.error.get_or_insert(e.into());
        }
        if let Some(p) = self.progress.as_mut() {
            p(&self.tally, stats);
        }
    }
}
