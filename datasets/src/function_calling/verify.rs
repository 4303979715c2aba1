//! The function-calling verifier: lenient about where the JSON sits, strict about what it says.
//!
//! Extraction, in order: Hermes/Qwen `<tool_call>…</tool_call>` blocks; the whole response as
//! JSON; the first ``` code fence; JSON values starting at one of the first few `[` / `{`
//! (prose around them is ignored). Accepted shapes: a list of calls, one call, or
//! `{"tool_calls": [...]}`; a call is `{"name", "arguments"}` (`parameters` accepted as alias,
//! `arguments` may be a JSON string, OpenAI's `{"function": {...}}` wrapper unwrapped).
//!
//! Comparison: calls as a multiset; same names, same argument names, equal values (object key
//! order irrelevant, integers equal integral floats, strings exact, arrays ordered).

use serde_json::{Map, Value};

use crate::task::Verdict;

/// Longest response the verifier reads; tool calls are short, and this bounds the work.
pub const MAX_RESPONSE_BYTES: usize = 256 * 1024;
/// How many `[`/`{` starting points are tried inside prose.
const MAX_JSON_STARTS: usize = 8;

/// One function call.
#[derive(Debug, Clone, PartialEq)]
pub struct Call {
    pub name: String,
    pub arguments: Map<String, Value>,
}

/// Converts a JSON value into calls; `Err` is `bad_call_format`.
pub fn value_to_calls(v: &Value) -> Result<Vec<Call>, &'static str> {
    match v {
        Value::Array(items) => items.iter().map(value_to_call).collect(),
        Value::Object(o) => match o.get("tool_calls") {
            Some(inner) if !o.contains_key("name") => value_to_calls(inner),
            _ => Ok(vec![value_to_call(v)?]),
        },
        _ => Err("bad_call_format"),
    }
}

fn value_to_call(v: &Value) -> Result<Call, &'static str> {
    let v = match v.get("function") {
        Some(f) if f.is_object() && v.get("name").is_none() => f,
        _ => v,
    };
    let name = v
        .get("name")
        .and_then(Value::as_str)
        .ok_or("bad_call_format")?
        .to_string();
    let args = match v.get("arguments").or_else(|| v.get("parameters")) {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(m)) => m.clone(),
        Some(Value::String(s)) => match serde_json::from_str::<Value>(s) {
            Ok(Value::Object(m)) => m,
            _ => return Err("bad_call_format"),
        },
        Some(_) => return Err("bad_call_format"),
    };
    Ok(Call {
        name,
        arguments: args,
    })
}

/// Parses gold answers: an array of calls or a JSON string holding one.
pub fn parse_gold(v: &Value) -> Result<Vec<Call>, String> {
    match v {
        Value::String(s) => {
            let parsed: Value = serde_json::from_str(s).map_err(|e| format!("not JSON: {e}"))?;
            value_to_calls(&parsed).map_err(|e| e.to_string())
        }
        other => value_to_calls(other).map_err(|e| e.to_string()),
    }
}

/// Parses one or more whitespace-separated JSON values at the start of `text`.
fn json_values_at(text: &str) -> Option<Vec<Value>> {
    let mut stream = serde_json::Deserializer::from_str(text).into_iter::<Value>();
    let mut values = Vec::new();
    while let Some(Ok(v)) = stream.next() {
        values.push(v);
    }
    (!values.is_empty()).then_some(values)
}

fn calls_from_values(values: &[Value]) -> Result<Vec<Call>, &'static str> {
    let mut calls = Vec::new();
    for v in values {
        calls.extend(value_to_calls(v)?);
    }
    Ok(calls)
}

/// Finds the calls in a response; `Err` is the verdict reason.
pub fn extract_calls(response: &str) -> Result<Vec<Call>, &'static str> {
    if response.len() > MAX_RESPONSE_BYTES {
        return Err("too_long");
    }
    if response.contains("<tool_call>") {
        let mut calls = Vec::new();
        for block in response.split("<tool_call>").skip(1) {
            let body = block.split("</tool_call>").next().unwrap_or("");
            let v: Value = serde_json::from_str(body.trim()).map_err(|_| "unparseable")?;
            calls.extend(value_to_calls(&v)?);
        }
        return Ok(calls);
    }
    let trimmed = response.trim();
    if let Ok(v) = serde_json::from_str::<Value>(trimmed) {
        return value_to_calls(&v);
    }
    if let Some(start) = trimmed.find("```") {
        let after = &trimmed[start + 3..];
        // Skip a language tag such as `json` on the fence line.
        let body = after.split_once('\n').map_or(after, |(first, rest)| {
            if first.trim().chars().all(|c| c.is_ascii_alphanumeric()) {
                rest
            } else {
                after
            }
        });
        let body = body.split("```").next().unwrap_or(body);
        if let Ok(v) = serde_json::from_str::<Value>(body.trim()) {
            return value_to_calls(&v);
        }
    }
    for (i, _) in trimmed
        .char_indices()
        .filter(|&(_, c)| c == '[' || c == '{')
        .take(MAX_JSON_STARTS)
    {
        // Inside prose only a value that reads as calls counts: a fragment such as the
        // `arguments` object of a truncated call must not be mistaken for the answer.
        if let Some(calls) = json_values_at(&trimmed[i..]).and_then(|v| calls_from_values(&v).ok())
        {
            return Ok(calls);
        }
    }
    Err("unparseable")
}

/// JSON equality with integers equal to integral floats; object key order is already irrelevant.
pub fn values_equal(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            let xi = x
                .as_i64()
                .map(i128::from)
                .or_else(|| x.as_u64().map(i128::from));
            let yi = y
                .as_i64()
                .map(i128::from)
                .or_else(|| y.as_u64().map(i128::from));
            match (xi, yi) {
                (Some(p), Some(q)) => p == q,
                _ => match (x.as_f64(), y.as_f64()) {
                    (Some(p), Some(q)) => p == q,
                    _ => false,
                },
            }
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(p, q)| values_equal(p, q))
        }
        (Value::Object(x), Value::Object(y)) => maps_equal(x, y),
        _ => a == b,
    }
}

fn maps_equal(x: &Map<String, Value>, y: &Map<String, Value>) -> bool {
    x.len() == y.len()
        && x.iter()
            .all(|(k, v)| y.get(k).is_some_and(|w| values_equal(v, w)))
}

fn calls_equal(a: &Call, b: &Call) -> bool {
    a.name == b.name && maps_equal(&a.arguments, &b.arguments)
}

/// The first argument difference between a response call and a gold call of the same tool.
fn argument_diff(got: &Call, gold: &Call) -> (usize, String) {
    let mut keys: Vec<&String> = got.arguments.keys().chain(gold.arguments.keys()).collect();
    keys.sort();
    keys.dedup();
    let mut first = None;
    let mut count = 0;
    for k in keys {
        let reason = match (got.arguments.get(k), gold.arguments.get(k)) {
            (None, Some(_)) => format!("missing_argument:{k}"),
            (Some(_), None) => format!("extra_argument:{k}"),
            (Some(x), Some(y)) if !values_equal(x, y) => format!("wrong_argument:{k}"),
            _ => continue,
        };
        count += 1;
        first.get_or_insert(reason);
    }
    (count, first.unwrap_or_else(|| "wrong_call".to_string()))
}

/// Compares response calls with gold calls as multisets.
pub fn compare(gold: &[Call], got: &[Call]) -> Verdict {
    if got.is_empty() && !gold.is_empty() {
        return Verdict::fail("no_calls");
    }
    if got.len() < gold.len() {
        return Verdict::fail("missing_call");
    }
    if got.len() > gold.len() {
        return Verdict::fail("extra_call");
    }
    let mut unmatched: Vec<&Call> = gold.iter().collect();
    let mut leftover: Vec<&Call> = Vec::new();
    for call in got {
        match unmatched.iter().position(|g| calls_equal(call, g)) {
            Some(i) => {
                unmatched.swap_remove(i);
            }
            None => leftover.push(call),
        }
    }
    let Some(call) = leftover.first() else {
        return Verdict::ok();
    };
    // Explain against the closest unmatched gold call of the same tool.
    let best = unmatched
        .iter()
        .filter(|g| g.name == call.name)
        .map(|g| argument_diff(call, g))
        .min_by_key(|(n, _)| *n);
    match best {
        Some((_, reason)) => Verdict::fail(reason),
        None if gold.iter().any(|g| g.name == call.name) => Verdict::fail("duplicate_call"),
        None => Verdict::fail("wrong_tool"),
    }
}

/// Verifies a response against gold calls.
pub fn verify(gold: &[Call], response: &str) -> Verdict {
    match extract_calls(response) {
        Ok(calls) => compare(gold, &calls),
        Err(reason) => Verdict::fail(reason),
    }
}
