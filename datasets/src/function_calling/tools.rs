//! Tool schemas: parsing xLAM and JSON-Schema styles, rendering both, and checking arguments against them.

use serde_json::{json, Map, Value};

/// A parameter's JSON type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParamType {
    String,
    Integer,
    Number,
    Boolean,
    Array,
    Object,
}

impl ParamType {
    /// xLAM's type spelling.
    pub fn xlam(self) -> &'static str {
        match self {
            Self::String => "str",
            Self::Integer => "int",
            Self::Number => "float",
            Self::Boolean => "bool",
            Self::Array => "List",
            Self::Object => "Dict",
        }
    }

    /// JSON Schema's type spelling.
    pub fn json_schema(self) -> &'static str {
        match self {
            Self::String => "string",
            Self::Integer => "integer",
            Self::Number => "number",
            Self::Boolean => "boolean",
            Self::Array => "array",
            Self::Object => "object",
        }
    }

    /// Maps xLAM (`str`, `int, optional`, `List[int]`) and JSON Schema spellings; unknown → string.
    fn parse(raw: &str) -> Self {
        let base = raw
            .split(',')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        match base.as_str() {
            "int" | "integer" => Self::Integer,
            "float" | "number" | "double" => Self::Number,
            "bool" | "boolean" => Self::Boolean,
            "object" | "dict" => Self::Object,
            "array" | "list" | "tuple" => Self::Array,
            b if b.starts_with("list") || b.starts_with("tuple") => Self::Array,
            b if b.starts_with("dict") => Self::Object,
            _ => Self::String,
        }
    }

    /// Whether `v` has this type (integral floats count as integers, integers as numbers).
    pub fn accepts(self, v: &Value) -> bool {
        match self {
            Self::String => v.is_string(),
            Self::Integer => {
                v.is_i64() || v.is_u64() || v.as_f64().is_some_and(|f| f.fract() == 0.0)
            }
            Self::Number => v.is_number(),
            Self::Boolean => v.is_boolean(),
            Self::Array => v.is_array(),
            Self::Object => v.is_object(),
        }
    }
}

/// One parameter of a tool.
#[derive(Debug, Clone, PartialEq)]
pub struct ParamSchema {
    pub name: String,
    pub ty: ParamType,
    pub description: String,
    pub required: bool,
    pub enum_values: Option<Vec<Value>>,
    pub default: Option<Value>,
    pub minimum: Option<f64>,
    pub maximum: Option<f64>,
}

/// A tool: name, description and parameters (sorted by name).
#[derive(Debug, Clone, PartialEq)]
pub struct ToolSchema {
    pub name: String,
    pub description: String,
    pub params: Vec<ParamSchema>,
}

fn str_field(v: &Value, key: &str) -> String {
    v.get(key).and_then(Value::as_str).unwrap_or("").to_string()
}

impl ToolSchema {
    /// Parses a tool in xLAM style (`parameters: {name: {type: "str, optional", description, default}}`),
    /// JSON-Schema style (`parameters: {type: "object", properties, required}`), or OpenAI's
    /// `{"type": "function", "function": {...}}` wrapper.
    pub fn from_json(v: &Value) -> Result<Self, String> {
        let v = v.get("function").filter(|f| f.is_object()).unwrap_or(v);
        let name = v
            .get("name")
            .and_then(Value::as_str)
            .filter(|n| !n.is_empty())
            .ok_or("tool without a string `name`")?
            .to_string();
        let description = str_field(v, "description");
        let params_v = v.get("parameters").cloned().unwrap_or(json!({}));
        let params_obj = params_v
            .as_object()
            .ok_or_else(|| format!("tool `{name}`: `parameters` is not an object"))?;
        let schema_style = params_obj.get("type").and_then(Value::as_str) == Some("object")
            || params_obj.get("properties").is_some_and(Value::is_object);
        let mut params = Vec::new();
        if schema_style {
            let required: Vec<&str> = params_obj
                .get("required")
                .and_then(Value::as_array)
                .map(|a| a.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            if let Some(props) = params_obj.get("properties").and_then(Value::as_object) {
                for (pname, p) in props {
                    let raw = p.get("type").and_then(Value::as_str).unwrap_or("string");
                    params.push(ParamSchema {
                        name: pname.clone(),
                        ty: ParamType::parse(raw),
                        description: str_field(p, "description"),
                        required: required.contains(&pname.as_str()),
                        enum_values: p.get("enum").and_then(Value::as_array).cloned(),
                        default: p.get("default").cloned(),
                        minimum: p.get("minimum").and_then(Value::as_f64),
                        maximum: p.get("maximum").and_then(Value::as_f64),
                    });
                }
            }
        } else {
            for (pname, p) in params_obj {
                let raw = p.get("type").and_then(Value::as_str).unwrap_or("str");
                params.push(ParamSchema {
                    name: pname.clone(),
                    ty: ParamType::parse(raw),
                    description: str_field(p, "description"),
                    required: !raw.contains("optional"),
                    enum_values: p.get("enum").and_then(Value::as_array).cloned(),
                    default: p.get("default").cloned(),
                    minimum: p.get("minimum").and_then(Value::as_f64),
                    maximum: p.get("maximum").and_then(Value::as_f64),
                });
            }
        }
        params.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(Self {
            name,
            description,
            params,
        })
    }

    /// xLAM rendering (what the shipped data files contain).
    pub fn to_xlam(&self) -> Value {
        let mut params = Map::new();
        for p in &self.params {
            let mut o = Map::new();
            o.insert("description".into(), Value::from(p.description.clone()));
            let ty = if p.required {
                p.ty.xlam().to_string()
            } else {
                format!("{}, optional", p.ty.xlam())
            };
            o.insert("type".into(), Value::from(ty));
            if let Some(d) = &p.default {
                o.insert("default".into(), d.clone());
            }
            if let Some(e) = &p.enum_values {
                o.insert("enum".into(), Value::from(e.clone()));
            }
            if let Some(m) = p.minimum {
                o.insert("minimum".into(), num(m));
            }
            if let Some(m) = p.maximum {
                o.insert("maximum".into(), num(m));
            }
            params.insert(p.name.clone(), Value::Object(o));
        }
        json!({"name": self.name, "description": self.description, "parameters": params})
    }

    /// JSON-Schema function rendering (`{name, description, parameters: {type: object, ...}}`),
    /// the inner object of OpenAI's `{"type": "function", "function": …}`.
    pub fn to_function(&self) -> Value {
        let mut props = Map::new();
        let mut required = Vec::new();
        for p in &self.params {
            let mut o = Map::new();
            o.insert("type".into(), Value::from(p.ty.json_schema()));
            o.insert("description".into(), Value::from(p.description.clone()));
            if let Some(e) = &p.enum_values {
                o.insert("enum".into(), Value::from(e.clone()));
            }
            if let Some(d) = &p.default {
                o.insert("default".into(), d.clone());
            }
            if let Some(m) = p.minimum {
                o.insert("minimum".into(), num(m));
            }
            if let Some(m) = p.maximum {
                o.insert("maximum".into(), num(m));
            }
            props.insert(p.name.clone(), Value::Object(o));
            if p.required {
                required.push(Value::from(p.name.clone()));
            }
        }
        json!({
            "name": self.name,
            "description": self.description,
            "parameters": {"type": "object", "properties": props, "required": required},
        })
    }

    /// Checks call arguments against the schema; `Err` holds a reason like `missing_argument:city`.
    pub fn check_arguments(&self, args: &Map<String, Value>) -> Result<(), String> {
        for p in &self.params {
            match args.get(&p.name) {
                None if p.required => return Err(format!("missing_argument:{}", p.name)),
                None => {}
                Some(v) => {
                    if !p.ty.accepts(v) {
                        return Err(format!("wrong_type:{}", p.name));
                    }
                    if let Some(e) = &p.enum_values {
                        if !e.contains(v) {
                            return Err(format!("not_in_enum:{}", p.name));
                        }
                    }
                    if let Some(f) = v.as_f64() {
                        if p.minimum.is_some_and(|m| f < m) || p.maximum.is_some_and(|m| f > m) {
                            return Err(format!("out_of_range:{}", p.name));
                        }
                    }
                }
            }
        }
        for k in args.keys() {
            if !self.params.iter().any(|p| &p.name == k) {
                return Err(format!("extra_argument:{k}"));
            }
        }
        Ok(())
    }
}

/// Integral bounds render as JSON integers, others as floats.
fn num(f: f64) -> Value {
    if f.fract() == 0.0 && f.abs() < 1e15 {
        Value::from(f as i64)
    } else {
        Value::from(f)
    }
}

/// Parses a `tools` field: an array of tools or a JSON string holding one.
pub fn parse_tools(v: &Value) -> Result<Vec<ToolSchema>, String> {
    let parsed;
    let v = match v {
        Value::String(s) => {
            parsed = serde_json::from_str::<Value>(s).map_err(|e| format!("not JSON: {e}"))?;
            &parsed
        }
        other => other,
    };
    v.as_array()
        .ok_or("expected an array of tools")?
        .iter()
        .map(ToolSchema::from_json)
        .collect()
}
