//! The Countdown task (write an equation from given numbers that reaches a target).

pub mod expr;
pub mod generate;
pub mod verify;

use serde_json::{Map, Value};

use crate::prompts::{self, PromptSet};
use crate::task::{instance_id, InstanceError, Message, Task, TaskError, TaskOptions, Verdict};

/// Most numbers an instance may have (TinyZero uses 3–4).
pub const MAX_NUMS: usize = 8;
/// Largest given number accepted in an instance.
pub const MAX_NUM_VALUE: u64 = 1_000_000_000_000;

/// Countdown: fields `nums` (array of non-negative integers) and `target` (integer).
/// TinyZero's preprocessed rows (`reward_model.ground_truth.{numbers,target}`) are accepted too.
pub struct CountdownTask {
    prompts: PromptSet,
}

impl CountdownTask {
    pub fn new(options: &TaskOptions) -> Result<Self, TaskError> {
        let dir = options.prompt_dir.as_ref().map(|d| d.join("countdown"));
        let prompts = PromptSet::load(
            "countdown",
            &prompts::COUNTDOWN,
            dir.as_deref(),
            &["numbers", "target"],
            options,
        )?;
        Ok(Self { prompts })
    }
}

fn as_integer(v: &Value) -> Option<i128> {
    if let Some(i) = v.as_i64() {
        return Some(i128::from(i));
    }
    if let Some(u) = v.as_u64() {
        return Some(i128::from(u));
    }
    // Parquet/pandas exports sometimes store integers as floats.
    let f = v.as_f64()?;
    (f.fract() == 0.0 && f.abs() < 1e15).then_some(f as i128)
}

/// Reads `(nums, target)` from normalized or TinyZero-shaped fields.
pub fn numbers_and_target(line: usize, fields: &Value) -> Result<(Vec<u64>, i64), InstanceError> {
    let gt = fields.pointer("/reward_model/ground_truth");
    let nums_v = fields
        .get("nums")
        .or_else(|| fields.get("numbers"))
        .or_else(|| gt.and_then(|g| g.get("numbers")))
        .ok_or_else(|| InstanceError::MissingField {
            line,
            field: "nums".into(),
        })?;
    let target_v = fields
        .get("target")
        .or_else(|| gt.and_then(|g| g.get("target")))
        .ok_or_else(|| InstanceError::MissingField {
            line,
            field: "target".into(),
        })?;
    let invalid = |field: &str, message: &str| InstanceError::InvalidField {
        line,
        field: field.into(),
        message: message.into(),
    };
    let arr = nums_v
        .as_array()
        .ok_or_else(|| invalid("nums", "expected an array of integers"))?;
    if arr.is_empty() || arr.len() > MAX_NUMS {
        return Err(invalid(
            "nums",
            &format!("expected 1 to {MAX_NUMS} numbers"),
        ));
    }
    let mut nums = Vec::with_capacity(arr.len());
    for v in arr {
        let n = as_integer(v)
            .and_then(|n| u64::try_from(n).ok())
            .filter(|&n| n <= MAX_NUM_VALUE)
            .ok_or_else(|| {
                invalid(
                    "nums",
                    &format!("expected integers in 0..={MAX_NUM_VALUE}, got {v}"),
                )
            })?;
        nums.push(n);
    }
    let target = as_integer(target_v)
        .and_then(|t| i64::try_from(t).ok())
        .ok_or_else(|| invalid("target", "expected an integer"))?;
    Ok((nums, target))
}

fn format_numbers(nums: &[u64]) -> String {
    let parts: Vec<String> = nums.iter().map(u64::to_string).collect();
    format!("[{}]", parts.join(", "))
}

impl CountdownTask {
    fn vars(inst: &Instance) -> (String, String) {
        match numbers_and_target(0, &inst.fields) {
            Ok((nums, target)) => (format_numbers(&nums), target.to_string()),
            Err(_) => (String::new(), String::new()),
        }
    }
}

use crate::task::Instance;

impl Task for CountdownTask {
    fn name(&self) -> &str {
        "countdown"
    }

    fn parse_instance(&self, line_no: usize, value: Value) -> Result<Instance, InstanceError> {
        let Value::Object(mut obj) = value else {
            return Err(InstanceError::Json {
                line: line_no,
                message: "expected a JSON object".into(),
            });
        };
        let (nums, target) = numbers_and_target(line_no, &Value::Object(obj.clone()))?;
        let id = instance_id("countdown", line_no, &Value::Object(obj.clone()));
        obj.insert("nums".into(), Value::from(nums));
        obj.insert("target".into(), Value::from(target));
        Ok(Instance {
            id,
            fields: Value::Object(obj),
        })
    }

    fn attempt_messages(&self, inst: &Instance) -> Vec<Message> {
        let (numbers, target) = Self::vars(inst);
        self.prompts
            .attempt_messages(&[("numbers", &numbers), ("target", &target)])
    }

    fn reflection_messages(
        &self,
        inst: &Instance,
        attempt: &str,
        verdict: &Verdict,
    ) -> Vec<Message> {
        let (numbers, target) = Self::vars(inst);
        self.prompts.reflection_messages(
            &[("numbers", &numbers), ("target", &target)],
            attempt,
            verdict,
        )
    }

    fn retry_messages(&self, inst: &Instance, attempt: &str, reflection: &str) -> Vec<Message> {
        let (numbers, target) = Self::vars(inst);
        self.prompts.retry_messages(
            &[("numbers", &numbers), ("target", &target)],
            attempt,
            &|| self.verify(inst, attempt),
            reflection,
        )
    }

    fn verify(&self, inst: &Instance, response: &str) -> Verdict {
        match numbers_and_target(0, &inst.fields) {
            Ok((nums, target)) => verify::verify(&nums, target, response),
            Err(_) => Verdict::fail("invalid_instance"),
        }
    }

    fn identity(&self) -> Value {
        crate::task::builtin_identity("countdown", &self.prompts)
    }
}

/// Builds a normalized instance directly (for generators and tests).
pub fn instance(id: &str, nums: &[u64], target: i64) -> Instance {
    let mut obj = Map::new();
    obj.insert("nums".into(), Value::from(nums.to_vec()));
    obj.insert("target".into(), Value::from(target));
    Instance {
        id: id.to_string(),
        fields: Value::Object(obj),
    }
}
