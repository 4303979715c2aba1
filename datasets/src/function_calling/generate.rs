//! Deterministic synthetic function-calling data in the xLAM format, in named difficulty levels.

use std::collections::HashSet;

use serde::Serialize;
use serde_json::{Map, Value};

use crate::function_calling::catalog::{CATALOG, POOLS};
use crate::function_calling::tools::{ParamSchema, ParamType, ToolSchema};
use flywheel_core::SplitMix64;

/// How a parameter's values are drawn.
#[derive(Debug, Clone, PartialEq)]
pub enum Kind {
    Pool(&'static [&'static str]),
    Date,
    Time,
    /// Identifier: prefix and digit count (e.g. `ORD-` + 6 digits).
    Id(&'static str, u32),
    Int(i64, i64),
    /// Bounds in hundredths, so values have at most two decimals.
    Num(i64, i64),
    Bool,
    Enum(Vec<String>),
}

/// A catalog tool with what the generator needs beyond the schema.
#[derive(Debug, Clone)]
pub struct CatalogTool {
    pub domain: &'static str,
    pub template: &'static str,
    pub schema: ToolSchema,
    /// Parallel to `schema.params`.
    pub kinds: Vec<Kind>,
}

fn bounds(spec: &str, kind: &str) -> Result<(f64, f64), String> {
    let inner = spec
        .strip_prefix(kind)
        .and_then(|s| s.strip_prefix('('))
        .and_then(|s| s.strip_suffix(')'))
        .ok_or_else(|| format!("bad kind `{spec}`"))?;
    let (lo, hi) = inner
        .split_once(',')
        .ok_or_else(|| format!("bad bounds `{spec}`"))?;
    let lo: f64 = lo
        .trim()
        .parse()
        .map_err(|_| format!("bad bound `{spec}`"))?;
    let hi: f64 = hi
        .trim()
        .parse()
        .map_err(|_| format!("bad bound `{spec}`"))?;
    Ok((lo, hi))
}

fn words(name: &str) -> String {
    name.replace('_', " ")
}

fn parse_param(spec: &str) -> Result<(ParamSchema, Kind), String> {
    let (spec, required) = match spec.strip_suffix('?') {
        Some(s) => (s, false),
        None => (spec, true),
    };
    let (name, kind) = spec
        .split_once(':')
        .ok_or_else(|| format!("bad param `{spec}`"))?;
    let mut p = ParamSchema {
        name: name.to_string(),
        ty: ParamType::String,
        description: format!("The {}.", words(name)),
        required,
        enum_values: None,
        default: None,
        minimum: None,
        maximum: None,
    };
    let k = if kind.starts_with("int(") {
        let (lo, hi) = bounds(kind, "int")?;
        p.ty = ParamType::Integer;
        p.minimum = Some(lo);
        p.maximum = Some(hi);
        p.description = format!("The {}, an integer from {lo} to {hi}.", words(name));
        Kind::Int(lo as i64, hi as i64)
    } else if kind.starts_with("num(") {
        let (lo, hi) = bounds(kind, "num")?;
        p.ty = ParamType::Number;
        p.minimum = Some(lo);
        p.maximum = Some(hi);
        p.description = format!("The {}, a number from {lo} to {hi}.", words(name));
        Kind::Num((lo * 100.0).round() as i64, (hi * 100.0).round() as i64)
    } else if kind == "bool" {
        p.ty = ParamType::Boolean;
        p.description = format!("Whether to use {} (default false).", words(name));
        p.default = Some(Value::Bool(false));
        Kind::Bool
    } else if let Some(list) = kind.strip_prefix("enum(").and_then(|s| s.strip_suffix(')')) {
        let values: Vec<String> = list.split('|').map(str::to_string).collect();
        if values.len() < 2 {
            return Err(format!("enum with fewer than two values in `{spec}`"));
        }
        p.description = format!("The {}, one of: {}.", words(name), values.join(", "));
        p.enum_values = Some(values.iter().map(|v| Value::from(v.as_str())).collect());
        if !required {
            // Optional enums default to their first value; generated calls never pass the default.
            p.default = Some(Value::from(values[0].as_str()));
        }
        Kind::Enum(values)
    } else {
        match kind {
            "date" => {
                p.description = format!("The {} in YYYY-MM-DD format.", words(name));
                Kind::Date
            }
            "time" => {
                p.description = format!("The {} in 24-hour HH:MM format.", words(name));
                Kind::Time
            }
            "flight" => Kind::Id("", 0),
            "hotel_id" => Kind::Id("H", 5),
            "product_id" => Kind::Id("P", 5),
            "order_id" => Kind::Id("ORD-", 6),
            "doctor_id" => Kind::Id("D", 4),
            "restaurant_id" => Kind::Id("R", 4),
            "recipe_id" => Kind::Id("RC", 4),
            "list_id" => Kind::Id("L", 3),
            pool => Kind::Pool(
                POOLS
                    .iter()
                    .find(|(n, _)| *n == pool)
                    .map(|(_, v)| *v)
                    .ok_or_else(|| format!("unknown kind `{pool}`"))?,
            ),
        }
    };
    Ok((p, k))
}

/// Parses the catalog table.
pub fn catalog() -> Result<Vec<CatalogTool>, String> {
    CATALOG
        .iter()
        .map(|&(domain, name, description, template, params)| {
            let mut pairs = params
                .split_whitespace()
                .map(parse_param)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| format!("{name}: {e}"))?;
            pairs.sort_by(|a, b| a.0.name.cmp(&b.0.name));
            let (params, kinds) = pairs.into_iter().unzip();
            Ok(CatalogTool {
                domain,
                template,
                schema: ToolSchema {
                    name: name.to_string(),
                    description: description.to_string(),
                    params,
                },
                kinds,
            })
        })
        .collect()
}

const AIRLINES: &[&str] = &["AF", "BA", "LH", "UA", "NH", "QF", "EK"];

fn draw(rng: &mut SplitMix64, kind: &Kind, optional: bool) -> (Value, String) {
    match kind {
        Kind::Pool(values) => {
            let v = rng.choose(values).copied().unwrap_or("");
            (Value::from(v), v.to_string())
        }
        Kind::Date => {
            let s = format!("2024-{:02}-{:02}", rng.range(1, 12), rng.range(1, 28));
            (Value::from(s.clone()), s)
        }
        Kind::Time => {
            let s = format!("{:02}:{:02}", rng.range(7, 21), rng.range(0, 3) * 15);
            (Value::from(s.clone()), s)
        }
        Kind::Id("", 0) => {
            let s = format!(
                "{}{}",
                rng.choose(AIRLINES).copied().unwrap_or("AF"),
                rng.range(100, 9999)
            );
            (Value::from(s.clone()), s)
        }
        Kind::Id(prefix, digits) => {
            let hi = 10u64.pow(*digits) - 1;
            let s = format!(
                "{prefix}{:0width$}",
                rng.range(1, hi),
                width = *digits as usize
            );
            (Value::from(s.clone()), s)
        }
        Kind::Int(lo, hi) => {
            let v = *lo + rng.range(0, (*hi - *lo) as u64) as i64;
            (Value::from(v), v.to_string())
        }
        Kind::Num(lo, hi) => {
            let cents = *lo + rng.range(0, (*hi - *lo) as u64) as i64;
            let v = cents as f64 / 100.0;
            (Value::from(v), format!("{v}"))
        }
        // Optional booleans default to false, so a passed one is always true.
        Kind::Bool => {
            let v = optional || rng.chance(1, 2);
            (Value::Bool(v), v.to_string())
        }
        Kind::Enum(values) => {
            // Optional enums skip the default (first) value.
            let pool = if optional { &values[1..] } else { &values[..] };
            let v = rng.choose(pool).cloned().unwrap_or_default();
            (Value::from(v.clone()), v)
        }
    }
}

/// One sampled call: the request sentence and the gold call object.
fn sample_call(rng: &mut SplitMix64, tool: &CatalogTool, optional: (u64, u64)) -> (String, Value) {
    let mut args = Map::new();
    let mut sentence = tool.template.to_string();
    let mut extras = String::new();
    for (p, kind) in tool.schema.params.iter().zip(&tool.kinds) {
        if p.required {
            let (v, text) = draw(rng, kind, false);
            sentence = sentence.replace(&format!("{{{}}}", p.name), &text);
            args.insert(p.name.clone(), v);
        } else if optional.0 > 0 && rng.chance(optional.0, optional.1) {
            let (v, text) = draw(rng, kind, true);
            extras.push_str(&format!(" Set {} to {text}.", words(&p.name)));
            args.insert(p.name.clone(), v);
        }
    }
    sentence.push_str(&extras);
    let mut call = Map::new();
    call.insert("name".into(), Value::from(tool.schema.name.clone()));
    call.insert("arguments".into(), Value::Object(args));
    (sentence, Value::Object(call))
}

/// Generator parameters of one difficulty level.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Level {
    pub name: &'static str,
    /// Candidate tools shown (inclusive range).
    pub candidates: (usize, usize),
    /// Gold calls (inclusive range).
    pub calls: (usize, usize),
    /// Only tools with at most this many required parameters (trivial level).
    pub max_required: usize,
    /// Probability `num/den` that each optional parameter is passed.
    pub optional: (u64, u64),
}

pub const LEVELS: [Level; 4] = [
    Level {
        name: "trivial",
        candidates: (1, 1),
        calls: (1, 1),
        max_required: 2,
        optional: (0, 1),
    },
    Level {
        name: "easy",
        candidates: (3, 3),
        calls: (1, 1),
        max_required: usize::MAX,
        optional: (1, 3),
    },
    Level {
        name: "medium",
        candidates: (4, 4),
        calls: (2, 2),
        max_required: usize::MAX,
        optional: (1, 3),
    },
    Level {
        name: "hard",
        candidates: (5, 6),
        calls: (2, 3),
        max_required: usize::MAX,
        optional: (1, 2),
    },
];

pub fn level(name: &str) -> Option<&'static Level> {
    LEVELS.iter().find(|l| l.name == name)
}

/// One generated record, serialized in this field order (xLAM: `tools`/`answers` are JSON strings).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Record {
    pub id: String,
    pub level: String,
    pub query: String,
    pub tools: String,
    pub answers: String,
}

fn lowercase_first(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_lowercase().collect::<String>() + c.as_str(),
        None => String::new(),
    }
}

/// Generates `count` records of `level` with queries not already in `seen`.
pub fn generate(
    catalog: &[CatalogTool],
    level: &Level,
    count: usize,
    seed: u64,
    id_prefix: &str,
    seen: &mut HashSet<String>,
) -> Vec<Record> {
    let mut rng = SplitMix64::new(seed);
    let eligible: Vec<usize> = (0..catalog.len())
        .filter(|&i| {
            catalog[i]
                .schema
                .params
                .iter()
                .filter(|p| p.required)
                .count()
                <= level.max_required
        })
        .collect();
    let mut out = Vec::with_capacity(count);
    let mut budget = count.saturating_mul(1_000).saturating_add(10_000);
    while out.len() < count && budget > 0 {
        budget -= 1;
        let n_calls = rng.range(level.calls.0 as u64, level.calls.1 as u64) as usize;
        let n_cand = rng.range(level.candidates.0 as u64, level.candidates.1 as u64) as usize;
        let Some(&first) = rng.choose(&eligible) else {
            break;
        };
        let mut chosen = vec![first];
        while chosen.len() < n_calls {
            let prev = chosen[chosen.len() - 1];
            // A third of repeated calls reuse the tool (parallel calls); the rest pick a sibling.
            let next = if rng.chance(1, 3) {
                prev
            } else {
                let domain = catalog[prev].domain;
                let siblings: Vec<usize> = (0..catalog.len())
                    .filter(|&i| catalog[i].domain == domain && !chosen.contains(&i))
                    .collect();
                match rng.choose(&siblings) {
                    Some(&i) => i,
                    None => prev,
                }
            };
            chosen.push(next);
        }
        let mut candidates: Vec<usize> = chosen.clone();
        candidates.sort_unstable();
        candidates.dedup();
        while candidates.len() < n_cand {
            // Half the distractors come from the gold tool's domain, so names alone do not decide.
            let same_domain = rng.chance(1, 2);
            let pool: Vec<usize> = (0..catalog.len())
                .filter(|&i| !candidates.contains(&i))
                .filter(|&i| !same_domain || catalog[i].domain == catalog[first].domain)
                .collect();
            match rng.choose(&pool) {
                Some(&i) => candidates.push(i),
                None => continue,
            }
        }
        rng.shuffle(&mut candidates);
        let mut sentences = Vec::new();
        let mut answers = Vec::new();
        for &t in &chosen {
            let (s, call) = sample_call(&mut rng, &catalog[t], level.optional);
            if answers.contains(&call) {
                break;
            }
            sentences.push(s);
            answers.push(call);
        }
        if answers.len() != chosen.len() {
            continue;
        }
        let query = match sentences.split_first() {
            Some((head, rest)) => {
                let mut q = head.clone();
                for s in rest {
                    q.push_str(" Also, ");
                    q.push_str(&lowercase_first(s));
                }
                q
            }
            None => continue,
        };
        if !seen.insert(query.clone()) {
            continue;
        }
        let tools: Vec<Value> = candidates
            .iter()
            .map(|&i| catalog[i].schema.to_xlam())
            .collect();
        let (Ok(tools), Ok(answers)) = (
            serde_json::to_string(&tools),
            serde_json::to_string(&answers),
        ) else {
            continue;
        };
        out.push(Record {
            id: format!("{id_prefix}-{}-{:05}", level.name, out.len() + 1),
            level: level.name.to_string(),
            query,
            tools,
            answers,
        });
    }
    out
}

pub const TEST_PER_LEVEL: usize = 150;
pub const TRAIN_PER_LEVEL: usize = 600;
const TEST_SEED: u64 = 0xF00C_0001;
const TRAIN_SEED: u64 = 0xF00C_0002;

/// Renders records as JSONL.
pub fn to_jsonl(records: &[Record]) -> String {
    let mut s = String::new();
    for r in records {
        if let Ok(line) = serde_json::to_string(r) {
            s.push_str(&line);
            s.push('\n');
        }
    }
    s
}

/// The shipped files as `(path relative to datasets/data, contents)`; test first, train disjoint from it.
pub fn shipped_files() -> Result<Vec<(String, String)>, String> {
    let catalog = catalog()?;
    let mut seen = HashSet::new();
    let mut test = Vec::new();
    let mut train = Vec::new();
    for (i, level) in LEVELS.iter().enumerate() {
        test.extend(generate(
            &catalog,
            level,
            TEST_PER_LEVEL,
            TEST_SEED + i as u64,
            "fc-test",
            &mut seen,
        ));
    }
    for (i, level) in LEVELS.iter().enumerate() {
        train.extend(generate(
            &catalog,
            level,
            TRAIN_PER_LEVEL,
            TRAIN_SEED + i as u64 * 1000,
            "fc-train",
            &mut seen,
        ));
    }
    Ok(vec![
        ("function_calling/test.jsonl".to_string(), to_jsonl(&test)),
        ("function_calling/train.jsonl".to_string(), to_jsonl(&train)),
    ])
}
