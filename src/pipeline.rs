//! One generation run: task instances → attempts → (on failure) reflections → retries, as one
//! stream of requests to the sampling engine, every result verified and written to the store.
//!
//! Resumable by construction: each request's seed is derived from (run seed, task, attempt,
//! reflection, kind), records are keyed the same way, and on start every task is checked against
//! the store so only missing work is requested. Only tasks in flight are held in memory.

use crate::store::{
    AttemptRecord, FinishReason, Generation, ReflectionRecord, RetryRecord, Store, StoreError,
    TaskRecord, WriteBatch,
};
use flywheel_datasets::task::{Instance, Task, Verdict};
use flywheel_generate::{Completion, Driver, Request, SamplingParams, StepStats};
use flywheel_model::chat::ChatTemplate;
use std::collections::{HashMap, VecDeque};
use tokenizers::Tokenizer;

/// Which of the three generations a request is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Stage {
    Attempt,
    Reflection,
    Retry,
}

/// Where a request's result goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Slot {
    pub task_index: u64,
    pub attempt: u32,
    pub reflection: u32,
    pub stage: Stage,
}

/// The sampler seed of one request: a SplitMix64 mix of the run seed and the slot, so a
/// resumed run regenerates a lost request with the same random draws. (Its tokens are the same
/// too where the logits are: batch padding and prefix reuse change them in the last bits.)
pub fn request_seed(run_seed: u64, slot: &Slot) -> u64 {
    let stage = match slot.stage {
        Stage::Attempt => 1u64,
        Stage::Reflection => 2,
        Stage::Retry => 3,
    };
    let mut z = run_seed;
    for part in [
        slot.task_index,
        u64::from(slot.attempt),
        u64::from(slot.reflection),
        stage,
    ] {
        z = z.wrapping_add(part).wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
    }
    z
}

/// Settings of the pipeline.
#[derive(Debug, Clone)]
pub struct PipelineConfig {
    pub attempts: u32,
    pub reflections: u32,
    pub params: SamplingParams,
    pub seed: u64,
}

/// A task in flight: its instance and the texts later prompts need.
struct Active {
    instance: Instance,
    attempts: HashMap<u32, (String, Verdict)>,
    reflections: HashMap<(u32, u32), String>,
    /// Requests issued and not yet completed.
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
pub type Instances<'a> = Box<dyn Iterator<Item = Result<(u64, Instance), String>> + 'a>;

/// The engine's driver for one run.
pub struct Pipeline<'a> {
    task: &'a dyn Task,
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
    error: Option<String>,
}

impl<'a> Pipeline<'a> {
    pub fn new(
        task: &'a dyn Task,
        template: &'a ChatTemplate,
        tokenizer: &'a Tokenizer,
        store: &'a Store,
        config: PipelineConfig,
        instances: Instances<'a>,
    ) -> Self {
        Self {
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
        }
    }

    fn prompt(&self, inst: &Instance, slot: &Slot, act: &Active) -> Result<Vec<u32>, String> {
        let tools = self.task.tools(inst);
        let messages = match slot.stage {
            Stage::Attempt => self.task.attempt_messages(inst),
            Stage::Reflection => {
                let (text, verdict) = act
                    .attempts
                    .get(&slot.attempt)
                    .ok_or("reflection without its attempt")?;
                self.task.reflection_messages(inst, text, verdict)
            }
            Stage::Retry => {
                let (text, _) = act
                    .attempts
                    .get(&slot.attempt)
                    .ok_or("retry without its attempt")?;
                let refl = act
                    .reflections
                    .get(&(slot.attempt, slot.reflection))
                    .ok_or("retry without its reflection")?;
                self.task.retry_messages(inst, text, refl)
            }
        };
        self.template
            .encode(self.tokenizer, &messages, tools.as_ref())
            .map_err(|e| e.to_string())
    }

    /// Queues a request for `slot` (the task must be active).
    fn issue(&mut self, slot: Slot, follow_up: bool) -> Result<(), String> {
        let act = self
            .active
            .get(&slot.task_index)
            .ok_or("request for a task not in flight")?;
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
    fn admit_next_task(&mut self) -> Result<bool, String> {
        let (k, g) = (self.config.attempts, self.config.reflections);
        while let Some(next) = self.instances.next() {
            let (index, instance) = next?;
            let state = self.store.task_state(index).map_err(|e| e.to_string())?;
            if let Some(stored) = &state.task {
                // Stored generations were made for the stored instance; continuing them with a
                // different one would pair old attempts with new verdicts.
                // Text first (how it was stored); values too, in case a float's text changed.
                let current = instance.fields.to_string();
                let same_fields = stored.fields_json == current
                    || serde_json::from_str::<serde_json::Value>(&stored.fields_json)
                        .is_ok_and(|f| f == instance.fields);
                if stored.id != instance.id || !same_fields {
                    return Err(format!(
                        "input line {} changed since this run began (stored id {:?}, now {:?}); \
                         use a new --out directory for a different input",
                        index + 1,
                        stored.id,
                        instance.id
                    ));
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
                            stage: Stage::Attempt,
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
                                todo.push((slot(Stage::Reflection), true));
                            } else if !done_retries.contains(&(attempt, reflection)) {
                                todo.push((slot(Stage::Retry), true));
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

    /// Writes what is pending and reports a driver error, if any occurred.
    pub fn finish(mut self) -> Result<Tally, String> {
        if let Some(e) = self.error.take() {
            // Keep what finished before the error (each record is whole); if the error was
            // the store's, this fails again and the first error is the one to report.
            let _ = self.flush();
            return Err(e);
        }
        self.flush().map_err(|e| e.to_string())?;
        Ok(self.tally)
    }

    fn on_complete(&mut self, c: Completion) -> Result<(), String> {
        let slot = self
            .in_flight
            .remove(&c.key)
            .ok_or("completion for an unknown request")?;
        let generation = Generation {
            prompt_ids: c.prompt,
            token_ids: c.tokens,
            logprobs: c.logprobs,
            text: c.text,
            finish_reason: match c.finish {
                flywheel_generate::FinishReason::Eos => FinishReason::Eos,
                flywheel_generate::FinishReason::Stop => FinishReason::Stop,
                flywheel_generate::FinishReason::Length => FinishReason::Length,
            },
            seed: c.seed,
            started_unix_ms: c.started_unix_ms,
            seconds: c.seconds,
        };
        self.tally.new_tokens += generation.token_ids.len() as u64;
        let act = self
            .active
            .get_mut(&slot.task_index)
            .ok_or("completion for a task not in flight")?;
        act.open -= 1;
        let (t, a, r) = (slot.task_index, slot.attempt, slot.reflection);
        match slot.stage {
            Stage::Attempt => {
                let verdict = self.task.verify(&act.instance, &generation.text);
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
                                stage: Stage::Reflection,
                            },
                            true,
                        )?;
                    }
                }
            }
            Stage::Reflection => {
                self.tally.reflections += 1;
                act.reflections.insert((a, r), generation.text.clone());
                self.pending.reflections.push(ReflectionRecord {
                    task_index: t,
                    attempt: a,
                    reflection: r,
                    generation,
                });
                self.issue(
                    Slot {
                        stage: Stage::Retry,
                        ..slot
                    },
                    true,
                )?;
            }
            Stage::Retry => {
                let verdict = self.task.verify(&act.instance, &generation.text);
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
        }
        if self.active.get(&t).is_some_and(|a| a.open == 0) {
            self.active.remove(&t);
            self.tally.tasks_done += 1;
        }
        Ok(())
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
            params: self.config.params.clone(),
            seed: request_seed(self.config.seed, &slot),
            // Reflections extend their attempt's conversation and retries their reflection's;
            // without reflections nothing extends an attempt.
            keep_kv: match slot.stage {
                Stage::Attempt => self.config.reflections > 0,
                Stage::Reflection => true,
                Stage::Retry => false,
            },
        })
    }

    fn complete(&mut self, completion: Completion) -> Result<(), String> {
        if let Some(e) = &self.error {
            return Err(e.clone());
        }
        self.on_complete(completion)
    }

    fn on_step(&mut self, stats: &StepStats) {
        // One transaction per engine step: a crash loses at most the requests still in flight.
        if let Err(e) = self.flush() {
            self.error.get_or_insert(e.to_string());
        }
        if let Some(p) = self.progress.as_mut() {
            p(&self.tally, stats);
        }
    }
}
