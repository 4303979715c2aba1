//! Hand-written function-calling verifier cases: extraction, shapes, argument rules, multisets.

use flywheel_datasets::function_calling::tools::{parse_tools, ToolSchema};
use flywheel_datasets::function_calling::verify::{parse_gold, values_equal, verify};
use flywheel_datasets::load_task;
use serde_json::json;

const WEATHER: &str = r#"[{"name":"get_weather","arguments":{"city":"Paris","days":3}}]"#;
const TWO: &str = r#"[{"name":"get_weather","arguments":{"city":"Paris"}},{"name":"get_weather","arguments":{"city":"Rome"}}]"#;
const MIXED: &str = r#"[{"name":"get_weather","arguments":{"city":"Paris"}},{"name":"book_hotel","arguments":{"hotel_id":"H1","nights":2}}]"#;
const NESTED: &str = r#"[{"name":"create_event","arguments":{"title":"Standup","when":{"date":"2024-05-01","time":{"h":9,"m":30}},"tags":["team","daily"]}}]"#;
const FLOATS: &str = r#"[{"name":"convert","arguments":{"amount":250.0,"rate":0.5,"count":3}}]"#;
const FLAGS: &str = r#"[{"name":"search","arguments":{"q":"shoes","in_stock":true,"max":null}}]"#;
const NONE: &str = "[]";

/// (gold answers, response, expected reason).
const CASES: &[(&str, &str, &str)] = &[
    // --- exact matches and tolerated wrappers
    (WEATHER, r#"[{"name":"get_weather","arguments":{"city":"Paris","days":3}}]"#, "ok"),
    (WEATHER, r#"[{"arguments":{"days":3,"city":"Paris"},"name":"get_weather"}]"#, "ok"),
    (WEATHER, r#"{"name":"get_weather","arguments":{"city":"Paris","days":3}}"#, "ok"),
    (WEATHER, "  \n[{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\", \"days\": 3}}]\n ", "ok"),
    (WEATHER, "```json\n[{\"name\":\"get_weather\",\"arguments\":{\"city\":\"Paris\",\"days\":3}}]\n```", "ok"),
    (WEATHER, "```\n[{\"name\":\"get_weather\",\"arguments\":{\"city\":\"Paris\",\"days\":3}}]\n```", "ok"),
    (WEATHER, "Sure! Here is the call:\n```json\n{\"name\":\"get_weather\",\"arguments\":{\"city\":\"Paris\",\"days\":3}}\n```\nLet me know.", "ok"),
    (WEATHER, "Sure, calling [{\"name\":\"get_weather\",\"arguments\":{\"city\":\"Paris\",\"days\":3}}] now.", "ok"),
    (WEATHER, "I will call {\"name\":\"get_weather\",\"arguments\":{\"city\":\"Paris\",\"days\":3}} for you.", "ok"),
    (WEATHER, "<tool_call>\n{\"name\":\"get_weather\",\"arguments\":{\"city\":\"Paris\",\"days\":3}}\n</tool_call>", "ok"),
    (WEATHER, r#"{"tool_calls":[{"name":"get_weather","arguments":{"city":"Paris","days":3}}]}"#, "ok"),
    (WEATHER, r#"[{"type":"function","function":{"name":"get_weather","arguments":"{\"city\":\"Paris\",\"days\":3}"}}]"#, "ok"),
    (WEATHER, r#"[{"name":"get_weather","arguments":"{\"city\": \"Paris\", \"days\": 3}"}]"#, "ok"),
    (WEATHER, r#"[{"name":"get_weather","parameters":{"city":"Paris","days":3}}]"#, "ok"),
    (WEATHER, r#"[{"name":"get_weather","arguments":{"city":"Paris","days":3.0}}]"#, "ok"),
    (WEATHER, r#"[{"name":"get_weather","arguments":{"city":"Paris","days":3e0}}]"#, "ok"),
    (WEATHER, r#"[{"id":"call_1","name":"get_weather","arguments":{"city":"Paris","days":3}}]"#, "ok"),
    // --- strict content
    (WEATHER, r#"[{"name":"get_weather","arguments":{"city":"paris","days":3}}]"#, "wrong_argument:city"),
    (WEATHER, r#"[{"name":"get_weather","arguments":{"city":"Paris ","days":3}}]"#, "wrong_argument:city"),
    (WEATHER, r#"[{"name":"get_weather","arguments":{"city":"Paris","days":"3"}}]"#, "wrong_argument:days"),
    (WEATHER, r#"[{"name":"get_weather","arguments":{"city":"Paris","days":3.5}}]"#, "wrong_argument:days"),
    (WEATHER, r#"[{"name":"get_weather","arguments":{"city":"Paris","days":4}}]"#, "wrong_argument:days"),
    (WEATHER, r#"[{"name":"get_weather","arguments":{"city":"Paris"}}]"#, "missing_argument:days"),
    (WEATHER, r#"[{"name":"get_weather","arguments":{"city":"Paris","days":3,"units":"metric"}}]"#, "extra_argument:units"),
    (WEATHER, r#"[{"name":"get_weather","arguments":{"City":"Paris","days":3}}]"#, "extra_argument:City"),
    (WEATHER, r#"[{"name":"get_weather","arguments":{}}]"#, "missing_argument:city"),
    (WEATHER, r#"[{"name":"get_weather"}]"#, "missing_argument:city"),
    (WEATHER, r#"[{"name":"get_forecast","arguments":{"city":"Paris","days":3}}]"#, "wrong_tool"),
    (WEATHER, r#"[{"name":"Get_Weather","arguments":{"city":"Paris","days":3}}]"#, "wrong_tool"),
    (WEATHER, r#"[{"name":"get_weather","arguments":{"city":"Paris","days":3}},{"name":"get_weather","arguments":{"city":"Paris","days":3}}]"#, "extra_call"),
    (WEATHER, "[]", "no_calls"),
    // --- unparseable / bad shapes
    (WEATHER, "The weather in Paris is nice.", "unparseable"),
    (WEATHER, "", "unparseable"),
    (WEATHER, r#"[{"name":"get_weather","arguments":{"city":"Paris","days":3}"#, "unparseable"),
    (WEATHER, r#"get_weather(city="Paris", days=3)"#, "unparseable"),
    (WEATHER, "<tool_call>{not json}</tool_call>", "unparseable"),
    (WEATHER, r#"[{"name":"get_weather","arguments":{'city':'Paris','days':3}}]"#, "unparseable"),
    (WEATHER, r#""get_weather""#, "bad_call_format"),
    (WEATHER, r#"[{"function":"get_weather","args":{"city":"Paris","days":3}}]"#, "bad_call_format"),
    (WEATHER, r#"[{"name":"get_weather","arguments":["Paris",3]}]"#, "bad_call_format"),
    (WEATHER, r#"[{"name":"get_weather","arguments":"city=Paris"}]"#, "bad_call_format"),
    (WEATHER, r#"[{"name":42,"arguments":{}}]"#, "bad_call_format"),
    (WEATHER, "[1, 2, 3]", "bad_call_format"),
    // --- multiset of calls
    (TWO, r#"[{"name":"get_weather","arguments":{"city":"Rome"}},{"name":"get_weather","arguments":{"city":"Paris"}}]"#, "ok"),
    (TWO, r#"[{"name":"get_weather","arguments":{"city":"Paris"}},{"name":"get_weather","arguments":{"city":"Rome"}}]"#, "ok"),
    (TWO, "<tool_call>{\"name\":\"get_weather\",\"arguments\":{\"city\":\"Rome\"}}</tool_call>\n<tool_call>{\"name\":\"get_weather\",\"arguments\":{\"city\":\"Paris\"}}</tool_call>", "ok"),
    (TWO, "{\"name\":\"get_weather\",\"arguments\":{\"city\":\"Rome\"}}\n{\"name\":\"get_weather\",\"arguments\":{\"city\":\"Paris\"}}", "ok"),
    (TWO, r#"[{"name":"get_weather","arguments":{"city":"Paris"}},{"name":"get_weather","arguments":{"city":"Paris"}}]"#, "wrong_argument:city"),
    (TWO, r#"[{"name":"get_weather","arguments":{"city":"Paris"}}]"#, "missing_call"),
    (TWO, r#"[{"name":"get_weather","arguments":{"city":"Paris"}},{"name":"get_weather","arguments":{"city":"Rome"}},{"name":"get_weather","arguments":{"city":"Oslo"}}]"#, "extra_call"),
    (MIXED, r#"[{"name":"book_hotel","arguments":{"nights":2,"hotel_id":"H1"}},{"name":"get_weather","arguments":{"city":"Paris"}}]"#, "ok"),
    (MIXED, r#"[{"name":"book_hotel","arguments":{"nights":2,"hotel_id":"H1"}},{"name":"book_hotel","arguments":{"nights":2,"hotel_id":"H1"}}]"#, "duplicate_call"),
    (MIXED, r#"[{"name":"get_weather","arguments":{"city":"Paris"}},{"name":"book_flight","arguments":{"hotel_id":"H1","nights":2}}]"#, "wrong_tool"),
    (MIXED, r#"[{"name":"get_weather","arguments":{"city":"Paris"}},{"name":"book_hotel","arguments":{"hotel_id":"H1","nights":2.0}}]"#, "ok"),
    (MIXED, r#"[{"name":"get_weather","arguments":{"city":"Paris"}},{"name":"book_hotel","arguments":{"hotel_id":"H1","nights":2,"breakfast":true}}]"#, "extra_argument:breakfast"),
    // --- nested objects and arrays
    (NESTED, r#"[{"name":"create_event","arguments":{"tags":["team","daily"],"when":{"time":{"m":30,"h":9},"date":"2024-05-01"},"title":"Standup"}}]"#, "ok"),
    (NESTED, r#"[{"name":"create_event","arguments":{"title":"Standup","when":{"date":"2024-05-01","time":{"h":9,"m":30.0}},"tags":["team","daily"]}}]"#, "ok"),
    (NESTED, r#"[{"name":"create_event","arguments":{"title":"Standup","when":{"date":"2024-05-01","time":{"h":9,"m":31}},"tags":["team","daily"]}}]"#, "wrong_argument:when"),
    (NESTED, r#"[{"name":"create_event","arguments":{"title":"Standup","when":{"date":"2024-05-01","time":{"h":9,"m":30},"tz":"UTC"},"tags":["team","daily"]}}]"#, "wrong_argument:when"),
    (NESTED, r#"[{"name":"create_event","arguments":{"title":"Standup","when":{"date":"2024-05-01","time":{"h":9,"m":30}},"tags":["daily","team"]}}]"#, "wrong_argument:tags"),
    (NESTED, r#"[{"name":"create_event","arguments":{"title":"Standup","when":"2024-05-01 09:30","tags":["team","daily"]}}]"#, "wrong_argument:when"),
    // --- numbers, booleans, null
    (FLOATS, r#"[{"name":"convert","arguments":{"amount":250,"rate":0.5,"count":3}}]"#, "ok"),
    (FLOATS, r#"[{"name":"convert","arguments":{"amount":250.00,"rate":0.50,"count":3.0}}]"#, "ok"),
    (FLOATS, r#"[{"name":"convert","arguments":{"amount":250,"rate":0.49999,"count":3}}]"#, "wrong_argument:rate"),
    (FLOATS, r#"[{"name":"convert","arguments":{"amount":"250","rate":0.5,"count":3}}]"#, "wrong_argument:amount"),
    (FLAGS, r#"[{"name":"search","arguments":{"q":"shoes","in_stock":true,"max":null}}]"#, "ok"),
    (FLAGS, r#"[{"name":"search","arguments":{"q":"shoes","in_stock":"true","max":null}}]"#, "wrong_argument:in_stock"),
    (FLAGS, r#"[{"name":"search","arguments":{"q":"shoes","in_stock":1,"max":null}}]"#, "wrong_argument:in_stock"),
    (FLAGS, r#"[{"name":"search","arguments":{"q":"shoes","in_stock":true}}]"#, "missing_argument:max"),
    // --- no call expected
    (NONE, "[]", "ok"),
    (NONE, r#"[{"name":"get_weather","arguments":{"city":"Paris"}}]"#, "extra_call"),
];

#[test]
fn function_calling_cases() {
    assert!(CASES.len() >= 60, "only {} cases", CASES.len());
    let mut failures = Vec::new();
    for (i, (gold, response, expected)) in CASES.iter().enumerate() {
        let gold = match parse_gold(&serde_json::Value::from(*gold)) {
            Ok(g) => g,
            Err(e) => panic!("case {i}: bad gold: {e}"),
        };
        let v = verify(&gold, response);
        if v.reason != *expected || v.pass != (*expected == "ok") {
            failures.push(format!(
                "case {i}: response {response}: expected {expected}, got {v:?}"
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn value_equality_rules() {
    assert!(values_equal(&json!(1), &json!(1.0)));
    assert!(values_equal(
        &json!({"a": 1, "b": [1, 2]}),
        &json!({"b": [1.0, 2], "a": 1})
    ));
    assert!(!values_equal(&json!(1), &json!("1")));
    assert!(!values_equal(&json!([1, 2]), &json!([2, 1])));
    assert!(!values_equal(&json!(null), &json!(false)));
    assert!(!values_equal(&json!({"a": 1}), &json!({"a": 1, "b": 2})));
    assert!(values_equal(&json!(u64::MAX), &json!(u64::MAX)));
    assert!(!values_equal(
        &json!(9_007_199_254_740_993_u64),
        &json!(9_007_199_254_740_992_u64)
    ));
}

#[test]
fn gold_may_be_a_json_string_or_an_array() {
    let a = parse_gold(&json!(WEATHER)).expect("string form");
    let b = parse_gold(&serde_json::from_str(WEATHER).expect("json")).expect("array form");
    assert_eq!(a, b);
    assert!(parse_gold(&json!("not json")).is_err());
}

#[test]
fn xlam_and_json_schema_tools_parse_alike() {
    let xlam = json!([{"name": "get_weather", "description": "Weather.", "parameters": {
        "city": {"type": "str", "description": "City."},
        "days": {"type": "int, optional", "description": "Days.", "default": 1}}}]);
    let schema = json!([{"type": "function", "function": {"name": "get_weather", "description": "Weather.",
        "parameters": {"type": "object", "properties": {
            "city": {"type": "string", "description": "City."},
            "days": {"type": "integer", "description": "Days.", "default": 1}},
        "required": ["city"]}}}]);
    let a = parse_tools(&xlam).expect("xlam");
    let b = parse_tools(&schema).expect("schema");
    assert_eq!(a, b);
    let t: &ToolSchema = &a[0];
    assert_eq!(t.params.len(), 2);
    assert!(t.params[0].required && !t.params[1].required);
    let f = t.to_function();
    assert_eq!(f["parameters"]["required"], json!(["city"]));
    assert_eq!(
        f["parameters"]["properties"]["days"]["type"],
        json!("integer")
    );
    // Strings of xLAM's tools field parse too.
    let s = serde_json::Value::from(xlam.to_string());
    assert_eq!(parse_tools(&s).expect("string"), a);
}

#[test]
fn schema_check_reasons() {
    let t = &parse_tools(&json!([{"name": "f", "parameters": {
        "n": {"type": "int"}, "mode": {"type": "str, optional", "enum": ["a", "b"]}}}]))
    .expect("tools")[0];
    let args = |v: serde_json::Value| v.as_object().cloned().expect("object");
    assert_eq!(t.check_arguments(&args(json!({"n": 2}))), Ok(()));
    assert_eq!(t.check_arguments(&args(json!({"n": 2.0}))), Ok(()));
    assert_eq!(
        t.check_arguments(&args(json!({}))),
        Err("missing_argument:n".into())
    );
    assert_eq!(
        t.check_arguments(&args(json!({"n": "2"}))),
        Err("wrong_type:n".into())
    );
    assert_eq!(
        t.check_arguments(&args(json!({"n": 2, "mode": "c"}))),
        Err("not_in_enum:mode".into())
    );
    assert_eq!(
        t.check_arguments(&args(json!({"n": 2, "x": 1}))),
        Err("extra_argument:x".into())
    );
}

#[test]
fn task_parses_xlam_lines_and_renders_tools() {
    let task = load_task("function_calling").expect("task");
    let line = json!({
        "query": "Weather in Paris for 3 days?",
        "tools": "[{\"name\":\"get_weather\",\"description\":\"Weather.\",\"parameters\":{\"city\":{\"type\":\"str\",\"description\":\"City.\"},\"days\":{\"type\":\"int\",\"description\":\"Days.\"}}}]",
        "answers": WEATHER,
    });
    let inst = task.parse_instance(7, line).expect("instance");
    assert_eq!(inst.id, "function_calling-7");
    assert!(inst.fields["answers"].is_array());
    assert!(task.verify(&inst, WEATHER).pass);
    assert_eq!(task.verify(&inst, "nope").reason, "unparseable");
    let tools = task.tools(&inst).expect("tools");
    assert_eq!(tools[0]["type"], json!("function"));
    assert_eq!(tools[0]["function"]["name"], json!("get_weather"));
    let msgs = task.attempt_messages(&inst);
    assert_eq!(msgs.len(), 2);
    assert!(msgs[0].content.contains("\"name\":\"get_weather\""));
    assert!(msgs[1].content.starts_with("Weather in Paris for 3 days?"));
    assert!(msgs[1].content.contains("JSON list"));
    let bad = task.parse_instance(3, json!({"query": "q", "tools": "[", "answers": "[]"}));
    assert!(matches!(
        bad,
        Err(flywheel_datasets::InstanceError::InvalidField { line: 3, .. })
    ));
    let missing = task.parse_instance(4, json!({"query": "q", "tools": []}));
    assert!(matches!(
        missing,
        Err(flywheel_datasets::InstanceError::MissingField { line: 4, .. })
    ));
}
