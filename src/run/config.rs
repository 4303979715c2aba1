//! `RUN_DIR/flywheel.toml`: every setting of every stage of a run, written out with its default
//! and what it means. `flywheel init` writes it (defaults, then `--config FILE`, then
//! `--set section.key=value`); the rounds read it. Unknown or missing keys are errors naming them.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// File name of the settings inside a run directory.
pub const CONFIG_FILE: &str = "flywheel.toml";

/// Why settings could not be made or read.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A settings file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A settings file is not valid.
    #[error("{path}: {detail}")]
    Invalid {
        /// The file (or `--set`).
        path: PathBuf,
        /// What is wrong, naming the key.
        detail: String,
    },
    /// A `--set` is not `section.key=value` or names no setting.
    #[error("--set {item:?}: {detail}")]
    Set {
        /// The item.
        item: String,
        /// What is wrong.
        detail: String,
    },
}

/// The task and its data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskSection {
    pub name: String,
    pub train_input: PathBuf,
    pub eval_input: PathBuf,
    pub prompts: String,
    pub feedback: bool,
    #[serde(default)]
    pub retry_without_attempt: bool,
}

/// What a round takes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoundSection {
    pub tasks: u64,
    pub min_mixed_groups: u64,
    pub keep_rounds: u64,
}

/// Stage one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GenerateSection {
    pub attempts: u32,
    pub reflections: u32,
    pub batch_size: u64,
    pub temperature: f64,
    #[serde(default)]
    pub reflection_temperature: f64,
    pub top_p: f64,
    pub top_k: u64,
    pub max_new_tokens: u64,
    pub seed: u64,
    pub device: String,
    pub threads: u64,
    pub prefix_cache_mib: u64,
}

/// Stage two.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LabelSection {
    #[serde(default = "reflection")]
    pub span: String,
    pub scale: String,
    pub keep_zero_std: bool,
    pub drop_truncated: bool,
    pub min_tokens: u32,
    pub max_tokens: u32,
}

/// Stage three.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainSection {
    pub loss: String,
    pub lr: f64,
    pub beta: f64,
    pub epsilon: f64,
    pub epsilon_high: f64,
    pub batch_size: u64,
    pub micro_batch_tokens: u64,
    pub epochs: u64,
    pub iterations: u32,
    pub warmup_ratio: f64,
    pub weight_decay: f64,
    pub max_grad_norm: f64,
    pub seed: u64,
    pub dtype: String,
    pub device: String,
    pub is_correction: String,
    pub is_cap: f64,
    pub checkpoint_every: u64,
}

/// The export of each round's model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportSection {
    pub fused: bool,
}

/// Held-out evaluation of each round.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvalSection {
    pub limit: u64,
    pub samples: u32,
    pub temperature: f64,
    pub max_new_tokens: u64,
}

/// Every setting of a run; what each means is written beside it in [`RunConfig::to_toml`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunConfig {
    /// The run's planned total of rounds (0: no limit); once this many are finished, `round`
    /// does nothing, so a schedule can keep firing.
    #[serde(default)]
    pub rounds: u64,
    pub task: TaskSection,
    pub round: RoundSection,
    pub generate: GenerateSection,
    pub label: LabelSection,
    pub train: TrainSection,
    pub export: ExportSection,
    pub eval: EvalSection,
}

/// What each setting means, in file order: (section, key, meaning). The one place settings are
/// documented; a test checks that it names every field and nothing else.
pub const DOCS: &[(&str, &str, &str)] = &[
    ("", "rounds", "the run's planned total of rounds: once this many are finished, `round` does nothing (0: no limit)"),
    ("task", "name", "task name (countdown, function_call) or the path of a user task file"),
    ("task", "train_input", "training instances (JSONL); round k generates on its own slice of them"),
    ("task", "eval_input", "held-out instances (JSONL) every round is evaluated on"),
    ("task", "prompts", "directory of prompt overrides (<task>/{system,attempt,reflect,retry}.txt); \"\": the built-in ones"),
    ("task", "feedback", "tell the model the verifier's reason in the reflection request (the paper does not)"),
    ("task", "retry_without_attempt", "the retry sees the task, its reflection and the retry request, not the failed attempt (the paper keeps the whole conversation)"),
    ("round", "tasks", "training instances per round: round k takes instances (k-1)*tasks .. k*tasks"),
    ("round", "min_mixed_groups", "fewest groups with both outcomes for a round to train; fewer end the round without training"),
    ("round", "keep_rounds", "keep the heavy files (ONNX, optimizer state) of the last K rounds only; 0 keeps all"),
    ("generate", "attempts", "attempts per task"),
    ("generate", "reflections", "reflections (each with its retry) per failed attempt: the GRPO group size"),
    ("generate", "batch_size", "concurrent sequences in the engine"),
    ("generate", "temperature", "sampling temperature of attempts, reflections and retries"),
    ("generate", "reflection_temperature", "sampling temperature of the reflections only (0: generate.temperature)"),
    ("generate", "top_p", "nucleus threshold"),
    ("generate", "top_k", "top-k cut-off (0: none)"),
    ("generate", "max_new_tokens", "token limit of every generation"),
    ("generate", "seed", "sampler seed (round k uses seed + k)"),
    ("generate", "device", "auto, cpu or cuda"),
    ("generate", "threads", "ONNX Runtime intra-op threads (0: its default)"),
    ("generate", "prefix_cache_mib", "memory for reusable prompt prefixes, in MiB"),
    ("label", "span", "examples: reflection (rewarded by their retry, the paper's method) or attempt (plain GRPO on first tries, the control; needs generate.attempts >= 2)"),
    ("label", "scale", "advantage scaling: group, batch or none"),
    ("label", "keep_zero_std", "keep groups whose retries all passed or all failed (advantage 0)"),
    ("label", "drop_truncated", "drop reflections cut at the token limit"),
    ("label", "min_tokens", "shortest reflection kept, in tokens"),
    ("label", "max_tokens", "longest reflection kept, in tokens (0: no bound)"),
    ("train", "loss", "loss aggregation: grpo, bnpo, dr_grpo or dapo"),
    ("train", "lr", "peak learning rate"),
    ("train", "beta", "KL coefficient against the round's starting model (0: no reference)"),
    ("train", "epsilon", "lower clip: ratios below 1 - epsilon stop counting for negative advantages"),
    ("train", "epsilon_high", "upper clip: ratios above 1 + epsilon_high stop counting for positive advantages"),
    ("train", "batch_size", "examples per optimizer step"),
    ("train", "micro_batch_tokens", "padded tokens per micro-batch (the same gradient for any value)"),
    ("train", "epochs", "passes over the round's examples"),
    ("train", "iterations", "optimizer steps per batch against its fixed pi_old (mu)"),
    ("train", "warmup_ratio", "fraction of the steps with a linear warmup, then cosine decay"),
    ("train", "weight_decay", "decoupled weight decay (not on norms and biases)"),
    ("train", "max_grad_norm", "global gradient-norm clip (0: none)"),
    ("train", "seed", "seed of the data order"),
    ("train", "dtype", "f32 or bf16 (bf16 keeps f32 master weights)"),
    ("train", "device", "auto, cpu or cuda"),
    ("train", "is_correction", "sampler/trainer mismatch correction: none, token-truncate, token-mask, sequence-truncate or sequence-mask"),
    ("train", "is_cap", "cap of the importance ratio"),
    ("train", "checkpoint_every", "optimizer steps between checkpoints"),
    ("export", "fused", "export with ONNX Runtime's fused operators (faster on the CPU)"),
    ("eval", "limit", "held-out instances evaluated (0: all)"),
    ("eval", "samples", "samples per task (1: greedy)"),
    ("eval", "temperature", "temperature of the samples (0 with one sample)"),
    ("eval", "max_new_tokens", "token limit of every evaluation generation"),
];

fn reflection() -> String {
    "reflection".into()
}

impl RunConfig {
    /// The defaults for a task and its inputs: each stage command's defaults, and 64 tasks a round.
    pub fn defaults(task: &str, train_input: &Path, eval_input: &Path) -> Self {
        // The trainer's own defaults, so the two cannot drift apart.
        let t = flywheel_train::TrainSettings::default();
        Self {
            rounds: 0,
            task: TaskSection {
                name: task.to_owned(),
                train_input: train_input.to_owned(),
                eval_input: eval_input.to_owned(),
                prompts: String::new(),
                feedback: false,
                retry_without_attempt: false,
            },
            round: RoundSection {
                tasks: 64,
                min_mixed_groups: 1,
                keep_rounds: 0,
            },
            generate: GenerateSection {
                attempts: 1,
                reflections: 4,
                batch_size: 16,
                temperature: 0.7,
                reflection_temperature: 0.0,
                top_p: 1.0,
                top_k: 0,
                max_new_tokens: 256,
                seed: 0,
                device: "auto".into(),
                threads: 0,
                prefix_cache_mib: 1024,
            },
            label: LabelSection {
                span: reflection(),
                scale: "group".into(),
                keep_zero_std: false,
                drop_truncated: false,
                min_tokens: 1,
                max_tokens: 0,
            },
            train: TrainSection {
                loss: name(&t.loss),
                lr: t.lr,
                beta: t.beta,
                epsilon: t.epsilon,
                epsilon_high: t.epsilon_high,
                batch_size: t.batch_size as u64,
                micro_batch_tokens: t.micro_batch_tokens as u64,
                epochs: match t.length {
                    flywheel_train::Length::Epochs(e) => e,
                    flywheel_train::Length::Steps(_) => 1,
                },
                iterations: t.iterations,
                warmup_ratio: t.warmup_ratio,
                weight_decay: t.weight_decay,
                max_grad_norm: t.max_grad_norm,
                seed: t.seed,
                dtype: name(&t.dtype),
                device: "auto".into(),
                is_correction: name(&t.is_correction),
                is_cap: t.is_cap,
                checkpoint_every: 50,
            },
            export: ExportSection { fused: true },
            eval: EvalSection {
                limit: 0,
                samples: 1,
                temperature: 0.0,
                max_new_tokens: 256,
            },
        }
    }

    /// Parses settings; `path` names them in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::Invalid {
            path: path.to_owned(),
            detail: e.message().to_owned() + &span_line(text, e.span()),
        })
    }

    /// Reads a settings file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text, path)
    }

    /// Applies `section.key=value` items in order (values in TOML syntax; a bare word is a
    /// string); an item that names no setting or has the wrong type is named in the error.
    pub fn with_sets(self, items: &[String]) -> Result<Self, ConfigError> {
        let mut config = self;
        for item in items {
            let bad = |detail: String| ConfigError::Set {
                item: item.clone(),
                detail,
            };
            let (path, value) = item
                .split_once('=')
                .ok_or_else(|| bad("expected section.key=value".into()))?;
            // A top-level setting has no section (`rounds=5`).
            let (section, key) = path.trim().split_once('.').unwrap_or(("", path.trim()));
            let name = if section.is_empty() {
                key.to_owned()
            } else {
                format!("{section}.{key}")
            };
            if !DOCS.iter().any(|(s, k, _)| *s == section && *k == key) {
                return Err(bad(format!("`{name}` is not a setting")));
            }
            let value = value.trim();
            let parsed = match toml::from_str::<toml::Table>(&format!("v = {value}")) {
                Ok(mut t) => t.remove("v").unwrap_or(toml::Value::String(value.into())),
                Err(_) => toml::Value::String(value.into()),
            };
            let mut table = toml::Table::try_from(&config).map_err(|e| bad(e.to_string()))?;
            if section.is_empty() {
                table.insert(key.to_owned(), parsed);
            } else if let Some(toml::Value::Table(s)) = table.get_mut(section) {
                s.insert(key.to_owned(), parsed);
            }
            config = toml::Value::Table(table)
                .try_into()
                .map_err(|e: toml::de::Error| bad(format!("`{name}`: {}", e.message())))?;
        }
        Ok(config)
    }

    /// The settings as a documented `flywheel.toml`: each key with its meaning above it.
    pub fn to_toml(&self) -> String {
        let table = toml::Table::try_from(self).unwrap_or_default();
        let mut out = String::from(
            "# flywheel run settings: every setting of every stage, with its value.\n\
             # Written by `flywheel init`; the rounds read it. Edit with care: a stage that resumes\n\
             # refuses settings that differ from the ones it started with.\n",
        );
        // Top-level settings (section "") come first in DOCS, as TOML needs them before tables.
        let mut section = "";
        for (s, k, doc) in DOCS {
            if *s != section {
                out.push_str(&format!("\n[{s}]\n"));
                section = s;
            }
            let value = if s.is_empty() {
                table.get(*k)
            } else {
                table.get(*s).and_then(|t| t.get(*k))
            }
            .map(|v| v.to_string())
            .unwrap_or_default();
            out.push_str(&format!("# {doc}\n{k} = {value}\n"));
        }
        out
    }
}

/// The settings-file name of a trainer enum: its serde name (`dapo`, `f32`, `token-truncate`).
fn name<T: Serialize>(v: &T) -> String {
    serde_json::to_value(v)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

/// ` (line N)` for an error span, where there is one.
fn span_line(text: &str, span: Option<std::ops::Range<usize>>) -> String {
    span.map(|r| {
        let line = text[..r.start.min(text.len())].matches('\n').count() + 1;
        format!(" (line {line})")
    })
    .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> RunConfig {
        RunConfig::defaults(
            "countdown",
            Path::new("/d/train.jsonl"),
            Path::new("/d/eval.jsonl"),
        )
    }

    #[test]
    fn the_written_file_documents_every_setting_and_reads_back_equal() {
        let c = config();
        let text = c.to_toml();
        assert_eq!(RunConfig::parse(&text, Path::new("x")).unwrap(), c);
        // Every field has a line of documentation, and DOCS names no field that does not exist.
        let table = toml::Table::try_from(&c).unwrap();
        let fields: usize = table
            .values()
            .map(|s| s.as_table().map_or(1, |t| t.len()))
            .sum();
        assert_eq!(fields, DOCS.len());
        for (s, k, _) in DOCS {
            let v = if s.is_empty() {
                table.get(*k)
            } else {
                table[*s].get(*k)
            };
            assert!(v.is_some(), "{s}.{k}");
        }
        assert!(text.contains("\nrounds = 0\n"), "{text}");
        assert!(
            text.contains("# peak learning rate\nlr = 0.000001\n"),
            "{text}"
        );
    }

    #[test]
    fn sets_override_and_unknown_keys_are_named() {
        let c = config()
            .with_sets(&[
                "train.lr=2e-5".into(),
                "export.fused=false".into(),
                "label.scale=batch".into(),
                "rounds=5".into(),
            ])
            .unwrap();
        assert_eq!(
            (c.train.lr, c.export.fused, c.label.scale.as_str(), c.rounds),
            (2e-5, false, "batch", 5)
        );
        assert_eq!(RunConfig::parse(&c.to_toml(), Path::new("x")).unwrap(), c);
        let e = config()
            .with_sets(&["train.lrr=1".into()])
            .unwrap_err()
            .to_string();
        assert!(e.contains("`train.lrr` is not a setting"), "{e}");
        let e = config()
            .with_sets(&["train.lr=fast".into()])
            .unwrap_err()
            .to_string();
        assert!(e.contains("--set") && e.contains("lr"), "{e}");
        let e = RunConfig::parse("[task]\nname = 1\n", Path::new("f.toml"))
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("f.toml:"), "{e}");
    }
}
