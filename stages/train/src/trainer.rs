//! The training run: reads and checks every example before any step, resumes from the last
//! checkpoint (refusing changed settings or inputs), steps through seeded per-epoch orders, and
//! writes the metrics, checkpoints and the final Hugging Face model directory.

use std::path::{Path, PathBuf};
use std::time::Instant;

use flywheel_core::rng::SplitMix64;
use flywheel_llama::Llama;
use flywheel_model::atomic;
use flywheel_store::{LabelMeta, StepMetrics, TrainExample};
use tch::{Device, Kind, Tensor};

use crate::checkpoint::{self, TrainState};
use crate::config::{DeviceChoice, Dtype, Length, TrainConfig, TrainSettings};
use crate::logprobs::PackError;
use crate::loss::LossConfig;
use crate::optim::{lr_at, warmup_steps, AdamW, AdamWConfig};
use crate::step::{
    anchors, check_sampler_logprobs, micro_batches, sequence, update, StepConfig, StepError,
};
use crate::TrainError;

/// Directory of the trained model inside the output directory.
pub const MODEL_DIR: &str = "model";

/// Files copied from the starting model into the trained model's directory.
const MODEL_FILES: &[&str] = &[
    "tokenizer.json",
    "tokenizer_config.json",
    "chat_template.jinja",
    "special_tokens_map.json",
    "generation_config.json",
];

/// What a run did.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct TrainReport {
    /// The output directory.
    pub out: PathBuf,
    /// Examples read.
    pub examples: usize,
    /// Optimizer steps of the whole run.
    pub total_steps: u64,
    /// Steps taken by this invocation.
    pub steps_run: u64,
    /// Steps found done in a checkpoint (0 for a fresh run).
    pub resumed_from: u64,
    /// The run was already complete: nothing was done.
    pub already_done: bool,
    /// Metrics of every step of the run (also in `metrics.parquet`).
    #[serde(skip)]
    pub metrics: Vec<StepMetrics>,
    /// The device used.
    pub device: String,
    /// Peak resident memory of the process, in bytes (Linux; 0 elsewhere).
    pub peak_rss_bytes: u64,
    /// Wall time of this invocation.
    pub seconds: f64,
    /// Loss of the last step.
    pub final_loss: Option<f64>,
}

/// What a run tells its caller as it goes.
pub enum Event<'a> {
    /// Training starts (or resumes) at `done` of `total` steps.
    Start {
        /// Steps already done.
        done: u64,
        /// Steps in all.
        total: u64,
        /// Examples.
        examples: usize,
        /// The device.
        device: &'a str,
    },
    /// A step finished.
    Step(&'a StepMetrics),
    /// A checkpoint was written after `step`.
    Checkpoint {
        /// The step.
        step: u64,
    },
}

/// Runs (or resumes) training as `config` says, calling `progress` as it goes.
pub fn train(
    config: &TrainConfig,
    progress: &mut dyn FnMut(Event<'_>),
) -> Result<TrainReport, TrainError> {
    let started = Instant::now();
    let s = &config.settings;
    check_settings(s, config)?;
    let device = pick_device(config.device)?;
    let (meta, examples, data_identity, counts) = read_data(&config.data)?;
    let model_hash = check_model(&config.model, &meta, config.off_policy)?;
    let model_config = flywheel_model::config::ModelConfig::load(&config.model)
        .map_err(|e| TrainError::Load(e.into()))?;
    let vocab = model_config.vocab_size;
    check_examples(
        &config.data,
        &counts,
        &examples,
        vocab,
        usize::try_from(model_config.max_position_embeddings).unwrap_or(usize::MAX),
    )?;
    let ref_dir = (s.beta > 0.0).then(|| config.ref_model.clone().unwrap_or(config.model.clone()));
    let ref_hash = match &ref_dir {
        Some(d) => Some(flywheel_store::model_hash(d)?),
        None => None,
    };
    let identity = serde_json::json!({
        "settings": s,
        "data": data_identity,
        "model_hash": model_hash,
        "ref_model_hash": ref_hash,
    });
    let n = examples.len() as u64;
    let batches_per_epoch = n.div_ceil(s.batch_size as u64);
    let total = match s.length {
        Length::Steps(k) => k,
        Length::Epochs(e) => e * batches_per_epoch * u64::from(s.iterations),
    };
    let out = &config.out;
    let model_out = out.join(MODEL_DIR);

    // Resume, or start fresh: a checkpoint must describe this very run.
    let resumed = match checkpoint::load_state(out)? {
        Some(state) => {
            if let Some((field, now, then)) =
                checkpoint::first_difference(&identity, &state.identity)
            {
                return Err(TrainError::Changed {
                    out: out.clone(),
                    field,
                    checkpoint: then,
                    now,
                });
            }
            Some(checkpoint::load(out, state)?)
        }
        None if model_out.exists() => {
            return Err(TrainError::Foreign {
                path: model_out.clone(),
            })
        }
        None => None,
    };
    if let Some(ck) = &resumed {
        if ck.state.step >= total && model_out.is_dir() {
            return Ok(TrainReport {
                out: out.clone(),
                examples: examples.len(),
                total_steps: total,
                steps_run: 0,
                resumed_from: ck.state.step,
                already_done: true,
                metrics: ck.metrics.clone(),
                device: format!("{device:?}"),
                peak_rss_bytes: peak_rss(),
                seconds: started.elapsed().as_secs_f64(),
                final_loss: ck.metrics.last().map(|m| m.loss),
            });
        }
    }

    let kind = match s.dtype {
        Dtype::F32 => Kind::Float,
        Dtype::Bf16 => Kind::BFloat16,
    };
    let mut model = Llama::load(&config.model, device, kind)?;
    model.vs.unfreeze();
    let reference = match &ref_dir {
        Some(d) => Some(Llama::load(d, device, kind)?),
        None => None,
    };
    let mut params: Vec<(String, Tensor)> = model.vs.variables().into_iter().collect();
    params.sort_by(|a, b| a.0.cmp(&b.0));
    let mut opt = AdamW::new(
        params,
        AdamWConfig {
            weight_decay: s.weight_decay,
            ..Default::default()
        },
    );
    let (mut step, mut epoch, mut position, mut order, mut metrics) = (0, 0, 0u64, None, vec![]);
    if let Some(ck) = resumed {
        let bad = |detail: String| TrainError::Checkpoint {
            path: checkpoint::dir(out),
            detail,
        };
        // The identity matched, so the data is the same; a state that does not fit it is damaged.
        let st = &ck.state;
        if st.order.len() as u64 != n
            || st.position > n
            || st.order.iter().any(|&i| u64::from(i) >= n)
        {
            return Err(bad(format!(
                "state.json: an order of {} examples at position {} does not fit the data's {n}",
                st.order.len(),
                st.position
            )));
        }
        opt.load_weights(&to_device(&ck.weights, device))
            .map_err(bad)?;
        opt.load_state(&to_device(&ck.moments, device), ck.state.step)
            .map_err(bad)?;
        step = ck.state.step;
        epoch = ck.state.epoch;
        position = ck.state.position;
        order = Some((ck.state.order_seed, ck.state.order));
        metrics = ck.metrics;
    }
    let resumed_from = step;
    let device_name = format!("{device:?}");
    progress(Event::Start {
        done: step,
        total,
        examples: examples.len(),
        device: &device_name,
    });

    let step_cfg = StepConfig {
        loss: LossConfig {
            aggregation: s.loss,
            epsilon: s.epsilon,
            epsilon_high: s.epsilon_high,
            beta: s.beta,
        },
        micro_batch_tokens: s.micro_batch_tokens,
        max_grad_norm: s.max_grad_norm,
        temperature: f64::from(meta.temperature),
        max_completion_len: meta.max_new_tokens as usize,
        is_correction: s.is_correction,
        is_cap: s.is_cap,
    };
    let warmup = warmup_steps(total, s.warmup_ratio);
    let mut last_saved = step;
    let save =
        |opt: &AdamW, state: TrainState, metrics: &[StepMetrics]| -> Result<(), TrainError> {
            checkpoint::save(
                out,
                &config.model.join("config.json"),
                &state,
                &opt.weights(),
                &opt.state(),
                metrics,
            )?;
            flywheel_store::write_metrics(&out.join(flywheel_store::METRICS_FILE), metrics)?;
            Ok(())
        };
    while step < total {
        let (seed, ord) = match order.take() {
            Some(o) if position < n => o,
            _ => {
                if position >= n && step > 0 {
                    epoch += 1;
                }
                position = 0;
                epoch_order(s.seed, epoch, examples.len())
            }
        };
        let take = (s.batch_size as u64).min(n - position) as usize;
        let batch: Vec<&TrainExample> = ord[position as usize..position as usize + take]
            .iter()
            .map(|&i| &examples[i as usize])
            .collect();
        let t0 = Instant::now();
        let mbs = micro_batches(&batch, s.micro_batch_tokens, vocab, device)?;
        let anchor = anchors(
            &model,
            reference.as_ref(),
            &mbs,
            step_cfg.temperature,
            s.iterations > 1,
        );
        let (reward_mean, reward_std, adv_abs) = batch_figures(&batch);
        let mut t_start = t0;
        for iteration in 1..=s.iterations {
            if step >= total {
                break;
            }
            let lr = lr_at(s.lr, step, warmup, total);
            let st = update(&model, &mut opt, &mbs, &anchor, &step_cfg, lr)?;
            if !st.loss.is_finite() || !st.grad_norm.is_finite() {
                return Err(TrainError::NonFinite {
                    step: step + 1,
                    loss: st.loss,
                    grad_norm: st.grad_norm,
                });
            }
            step += 1;
            let seconds = t_start.elapsed().as_secs_f64();
            t_start = Instant::now();
            let row = StepMetrics {
                step,
                epoch,
                iteration,
                examples: take as u32,
                loss: st.loss,
                grad_norm: st.grad_norm,
                lr,
                tokens: st.tokens,
                span_tokens: st.span_tokens,
                reward_mean,
                reward_std,
                advantage_abs_mean: adv_abs,
                clip_ratio_low: st.clip_ratio_low,
                clip_ratio_high: st.clip_ratio_high,
                kl: st.kl,
                entropy: st.entropy,
                logprob_diff_mean: st.logprob_diff_mean,
                logprob_diff_max: st.logprob_diff_max,
                is_weight_mean: st.is_weight_mean,
                seconds,
                tokens_per_second: st.tokens as f64 / seconds.max(1e-9),
            };
            progress(Event::Step(&row));
            metrics.push(row);
        }
        position += take as u64;
        // Checkpoints fall on batch boundaries: π_old of a batch is never needed after it.
        let due = config.checkpoint_every > 0 && step - last_saved >= config.checkpoint_every;
        if due || step >= total {
            let state = TrainState {
                version: 1,
                identity: identity.clone(),
                step,
                total_steps: total,
                epoch,
                position,
                order_seed: seed,
                order: ord.clone(),
            };
            save(&opt, state, &metrics)?;
            last_saved = step;
            progress(Event::Checkpoint { step });
        }
        order = Some((seed, ord));
    }
    if resumed_from >= total {
        // The checkpoint is final but the model directory was lost: write it again.
        flywheel_store::write_metrics(&out.join(flywheel_store::METRICS_FILE), &metrics)?;
    }
    write_model(&config.model, &model_out, &opt)?;
    Ok(TrainReport {
        out: out.clone(),
        examples: examples.len(),
        total_steps: total,
        steps_run: step - resumed_from,
        resumed_from,
        already_done: false,
        device: device_name,
        peak_rss_bytes: peak_rss(),
        seconds: started.elapsed().as_secs_f64(),
        final_loss: metrics.last().map(|m| m.loss),
        metrics,
    })
}

fn check_settings(s: &TrainSettings, c: &TrainConfig) -> Result<(), TrainError> {
    let bad = |flag: &'static str, detail: String| Err(TrainError::Setting { flag, detail });
    if c.data.is_empty() {
        return bad("--data", "give at least one train.parquet".into());
    }
    if s.batch_size == 0 {
        return bad("--batch-size", "must be at least 1".into());
    }
    if s.iterations == 0 {
        return bad("--iterations", "must be at least 1".into());
    }
    if !(s.lr.is_finite() && s.lr >= 0.0) {
        return bad("--lr", format!("{} is not a finite rate ≥ 0", s.lr));
    }
    if !(s.beta.is_finite() && s.beta >= 0.0) {
        return bad(
            "--beta",
            format!("{} is not a finite coefficient ≥ 0", s.beta),
        );
    }
    let clip_ok =
        (0.0..1.0).contains(&s.epsilon) && s.epsilon_high.is_finite() && s.epsilon_high >= 0.0;
    if !clip_ok {
        return bad(
            "--epsilon",
            format!(
                "clip range 1-{} .. 1+{} is not valid",
                s.epsilon, s.epsilon_high
            ),
        );
    }
    if !(0.0..=1.0).contains(&s.warmup_ratio) {
        return bad(
            "--warmup-ratio",
            format!("{} is not in [0, 1]", s.warmup_ratio),
        );
    }
    if !(s.is_cap.is_finite() && s.is_cap >= 1.0) {
        return bad("--is-cap", format!("{} is not ≥ 1", s.is_cap));
    }
    if matches!(s.length, Length::Steps(0) | Length::Epochs(0)) {
        return bad("--steps/--epochs", "must be at least 1".into());
    }
    if c.ref_model.is_some() && s.beta == 0.0 {
        return bad(
            "--ref-model",
            "needs --beta > 0 (with β = 0 no reference is used)".into(),
        );
    }
    Ok(())
}

fn pick_device(choice: DeviceChoice) -> Result<Device, TrainError> {
    match choice {
        DeviceChoice::Cpu => Ok(Device::Cpu),
        DeviceChoice::Auto => Ok(Device::cuda_if_available()),
        DeviceChoice::Cuda if tch::Cuda::is_available() => Ok(Device::Cuda(0)),
        DeviceChoice::Cuda => Err(TrainError::NoCuda),
    }
}

/// Reads every file; they must agree on what the trainer needs from their label settings.
fn read_data(
    paths: &[PathBuf],
) -> Result<(LabelMeta, Vec<TrainExample>, serde_json::Value, Vec<usize>), TrainError> {
    let mut first: Option<(PathBuf, LabelMeta)> = None;
    let mut all = Vec::new();
    let mut identity = Vec::new();
    let mut counts = Vec::new();
    for path in paths {
        let (meta, rows) = flywheel_store::read_train(path)?;
        counts.push(rows.len());
        identity.push(serde_json::json!({
            "sha256": flywheel_store::file_hash(path)?,
            "rows": rows.len(),
        }));
        if let Some((p0, m0)) = &first {
            let fields = [
                ("model_hash", m0.model_hash != meta.model_hash),
                (
                    "model_files_hash",
                    m0.model_files_hash != meta.model_files_hash,
                ),
                ("temperature", m0.temperature != meta.temperature),
                ("max_new_tokens", m0.max_new_tokens != meta.max_new_tokens),
            ];
            if let Some((field, _)) = fields.iter().find(|(_, differ)| *differ) {
                return Err(TrainError::MixedData {
                    first: p0.clone(),
                    other: path.clone(),
                    field,
                });
            }
        } else {
            first = Some((path.clone(), meta));
        }
        all.extend(rows);
    }
    let Some((_, meta)) = first else {
        return Err(TrainError::Internal("no data files".into()));
    };
    if all.is_empty() {
        return Err(TrainError::NoExamples {
            paths: paths.to_vec(),
        });
    }
    if !(meta.temperature.is_finite() && meta.temperature > 0.0) {
        return Err(TrainError::Example {
            path: paths[0].clone(),
            row: 0,
            detail: format!(
                "label settings give sampling temperature {}",
                meta.temperature
            ),
        });
    }
    Ok((meta, all, serde_json::Value::Array(identity), counts))
}

/// The starting model must be the one that generated the data: generation runs on its ONNX
/// export, so the data's hashes are compared with `MODEL/onnx` when it exists, else with `MODEL`.
/// The tokenizer and chat template must always agree; other weights only with `off_policy`.
/// Returns the hash of the starting weights (the run's identity).
fn check_model(dir: &Path, meta: &LabelMeta, off_policy: bool) -> Result<String, TrainError> {
    let onnx = dir.join("onnx");
    let generator = if onnx.is_dir() { onnx } else { dir.to_owned() };
    let files = flywheel_store::model_files_hash(&generator)?;
    if files != meta.model_files_hash && !off_policy {
        return Err(TrainError::ModelMismatch {
            model: generator,
            what: "tokenizer and chat template (model_files_hash)",
            data: meta.model_files_hash.clone(),
            found: files,
        });
    }
    let hash = flywheel_store::model_hash(&generator)?;
    if hash != meta.model_hash && !off_policy {
        return Err(TrainError::ModelMismatch {
            model: generator,
            what: "weights (model_hash)",
            data: meta.model_hash.clone(),
            found: hash,
        });
    }
    Ok(flywheel_store::model_hash(dir)?)
}

/// Every example is checked before the first step, so bad data never stops a run half-way.
fn check_examples(
    paths: &[PathBuf],
    counts: &[usize],
    rows: &[TrainExample],
    vocab: usize,
    context: usize,
) -> Result<(), TrainError> {
    // The file and row of the `i`-th example of the concatenation.
    let locate = |mut i: usize| {
        for (p, &c) in paths.iter().zip(counts) {
            if i < c {
                return (p.clone(), i);
            }
            i -= c;
        }
        (PathBuf::new(), i)
    };
    for (i, e) in rows.iter().enumerate() {
        let bad = |detail: String| {
            let (path, row) = locate(i);
            TrainError::Example { path, row, detail }
        };
        if e.input_ids.len() > context {
            return Err(bad(format!(
                "{} tokens, longer than the model's context ({context})",
                e.input_ids.len()
            )));
        }
        // The checks packing makes, run on every example first, with the file's words.
        match sequence(e).check(i, vocab) {
            Err(PackError::Span {
                start, end, len, ..
            }) => {
                return Err(bad(format!(
                    "span {start}..{end} is not within 1..={len} (the length of input_ids)"
                )))
            }
            Err(PackError::Token { id, .. }) => {
                return Err(bad(format!(
                    "token id {id} is outside the model's vocabulary ({vocab})"
                )))
            }
            Ok(()) => {}
        }
        if let Err(StepError::SamplerLogprobs { found, span, .. }) = check_sampler_logprobs(e) {
            return Err(bad(format!(
                "{found} sampler log-probs for a span of {span} tokens"
            )));
        }
        if !e.advantage.is_finite() || !e.reward.is_finite() {
            return Err(bad(format!(
                "reward {} / advantage {} is not finite",
                e.reward, e.advantage
            )));
        }
        if e.sampler_logprobs.iter().any(|x| x.is_nan() || *x > 0.0) {
            return Err(bad("a sampler log-prob is NaN or above 0".into()));
        }
    }
    Ok(())
}

/// The order of `epoch`: a seeded shuffle of all examples, and the seed it came from.
pub fn epoch_order(seed: u64, epoch: u32, n: usize) -> (u64, Vec<u32>) {
    let s = SplitMix64::derive(seed, &[0x0074_7261_696e, u64::from(epoch)]);
    let mut order: Vec<u32> = (0..n as u32).collect();
    SplitMix64::new(s).shuffle(&mut order);
    (s, order)
}

fn batch_figures(batch: &[&TrainExample]) -> (f64, f64, f64) {
    let n = batch.len() as f64;
    let mean = batch.iter().map(|e| f64::from(e.reward)).sum::<f64>() / n;
    let var = if batch.len() > 1 {
        batch
            .iter()
            .map(|e| (f64::from(e.reward) - mean).powi(2))
            .sum::<f64>()
            / (n - 1.0)
    } else {
        0.0
    };
    let adv = batch
        .iter()
        .map(|e| f64::from(e.advantage).abs())
        .sum::<f64>()
        / n;
    (mean, var.sqrt(), adv)
}

fn to_device(named: &[(String, Tensor)], device: Device) -> Vec<(String, Tensor)> {
    named
        .iter()
        .map(|(n, t)| (n.clone(), t.to_device(device)))
        .collect()
}

/// The trained model as a Hugging Face directory (f32 weights), replacing any earlier one
/// atomically.
fn write_model(start: &Path, out: &Path, opt: &AdamW) -> Result<(), TrainError> {
    let tensors = opt
        .weights()
        .iter()
        .map(|(n, t)| flywheel_llama::weights::RawTensor::from_tensor(n.clone(), t))
        .collect::<Result<Vec<_>, _>>()?;
    atomic::write_dir(out, true, |d| -> Result<(), TrainError> {
        let copy = |name: &str| -> Result<(), TrainError> {
            let from = start.join(name);
            if !from.is_file() {
                return Ok(());
            }
            std::fs::copy(&from, d.join(name))
                .map(|_| ())
                .map_err(|source| TrainError::Io { path: from, source })
        };
        copy("config.json")?;
        for f in MODEL_FILES {
            copy(f)?;
        }
        flywheel_llama::weights::save(&d.join("model.safetensors"), &tensors)?;
        Ok(())
    })
}

/// Peak resident set size (`VmHWM`), in bytes; 0 where `/proc` does not say.
pub fn peak_rss() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}
