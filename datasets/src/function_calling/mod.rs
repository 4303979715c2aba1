//! The function-calling task (APIGen / xLAM format: `query`, `tools`, `answers`).

pub mod catalog;
pub mod generate;
pub mod tools;
pub mod verify;

use serde_json::Value;

use crate::prompts::{self, PromptSet};
use crate::task::{
    instance_id, Instance, InstanceError, Message, Task, TaskError, TaskOptions, Verdict,
};

/// Function calling: the model answers a query with JSON tool calls that must match the gold calls.
pub struct FunctionCallingTask {
    prompts: PromptSet,
}

impl FunctionCallingTask {
    pub fn new(options: &TaskOptions) -> Result<Self, TaskError> {
        let dir = options
            .prompt_dir
            .as_ref()
            .map(|d| d.join("function_calling"));
        let prompts = PromptSet::load(
            "function_calling",
            &prompts::FUNCTION_CALLING,
            dir.as_deref(),
            &["query", "tools"],
            options,
        )?;
        Ok(Self { prompts })
    }

    /// `(query, tools rendered one JSON function per line)`.
    fn vars(inst: &Instance) -> (String, String) {
        let query = inst
            .fields
            .get("query")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let tools = inst
            .fields
            .get("tools")
            .and_then(|t| tools::parse_tools(t).ok())
            .unwrap_or_default();
        let lines: Vec<String> = tools
            .iter()
            .map(|t| serde_json::to_string(&t.to_function()).unwrap_or_default())
            .collect();
        (query, lines.join("\n"))
    }
}

impl Task for FunctionCallingTask {
    fn name(&self) -> &str {
        "function_calling"
    }

    fn parse_instance(&self, line_no: usize, value: Value) -> Result<Instance, InstanceError> {
        let Value::Object(mut obj) = value else {
            return Err(InstanceError::Json {
                line: line_no,
                message: "expected a JSON object".into(),
            });
        };
        let missing = |field: &str| InstanceError::MissingField {
            line: line_no,
            field: field.into(),
        };
        let invalid = |field: &str, message: String| InstanceError::InvalidField {
            line: line_no,
            field: field.into(),
            message,
        };
        if !obj
            .get("query")
            .ok_or_else(|| missing("query"))?
            .is_string()
        {
            return Err(invalid("query", "expected a string".into()));
        }
        let tools_v = obj.get("tools").ok_or_else(|| missing("tools"))?;
        let tools = tools::parse_tools(tools_v).map_err(|e| invalid("tools", e))?;
        let answers_v = obj.get("answers").ok_or_else(|| missing("answers"))?;
        let answers = verify::parse_gold(answers_v).map_err(|e| invalid("answers", e))?;
        // Normalize JSON strings to arrays once, so verification does not re-parse them.
        let tools_json: Vec<Value> = tools.iter().map(|t| t.to_xlam()).collect();
        let answers_json: Vec<Value> = answers
            .into_iter()
            .map(|c| serde_json::json!({"name": c.name, "arguments": c.arguments}))
            .collect();
        let id = instance_id("function_calling", line_no, &Value::Object(obj.clone()));
        obj.insert("tools".into(), Value::from(tools_json));
        obj.insert("answers".into(), Value::from(answers_json));
        Ok(Instance {
            id,
            fields: Value::Object(obj),
        })
    }

    fn attempt_messages(&self, inst: &Instance) -> Vec<Message> {
        let (query, tools) = Self::vars(inst);
        self.prompts
            .attempt_messages(&[("query", &query), ("tools", &tools)])
    }

    fn reflection_messages(
        &self,
        inst: &Instance,
        attempt: &str,
        verdict: &Verdict,
    ) -> Vec<Message> {
        let (query, tools) = Self::vars(inst);
        self.prompts
            .reflection_messages(&[("query", &query), ("tools", &tools)], attempt, verdict)
    }

    fn retry_messages(&self, inst: &Instance, attempt: &str, reflection: &str) -> Vec<Message> {
        let (query, tools) = Self::vars(inst);
        self.prompts.retry_messages(
            &[("query", &query), ("tools", &tools)],
            attempt,
            &|| self.verify(inst, attempt),
            reflection,
        )
    }

    fn tools(&self, inst: &Instance) -> Option<Value> {
        let tools = tools::parse_tools(inst.fields.get("tools")?).ok()?;
        Some(Value::from(
            tools
                .iter()
                .map(|t| serde_json::json!({"type": "function", "function": t.to_function()}))
                .collect::<Vec<_>>(),
        ))
    }

    fn verify(&self, inst: &Instance, response: &str) -> Verdict {
        match inst.fields.get("answers").map(verify::parse_gold) {
            Some(Ok(gold)) => verify::verify(&gold, response),
            _ => Verdict::fail("invalid_instance"),
        }
    }

    fn identity(&self) -> Value {
        crate::task::builtin_identity("function_calling", &self.prompts)
    }
}
