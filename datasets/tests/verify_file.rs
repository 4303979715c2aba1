//! End-to-end test of the library side of `flywheel verify`.

use std::io::Write;

use flywheel_datasets::verify_file::{verify_file, VerifyError, VerifyReport};
use flywheel_datasets::TaskOptions;
use serde_json::{json, Value};

fn run(task: &str, lines: &[&str]) -> (VerifyReport, Vec<Value>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("in.jsonl");
    let mut f = std::fs::File::create(&path).expect("create");
    for l in lines {
        writeln!(f, "{l}").expect("write");
    }
    drop(f);
    let mut out = Vec::new();
    let report = verify_file(task, &TaskOptions::default(), &path, &mut out).expect("run");
    let text = String::from_utf8(out).expect("utf8");
    let verdicts = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("json line"))
        .collect();
    (report, verdicts)
}

#[test]
fn countdown_file_with_malformed_lines() {
    let (report, v) = run(
        "countdown",
        &[
            r#"{"nums":[3,5],"target":8,"response":"<answer>3 + 5</answer>"}"#,
            r#"{"nums":[3,5],"target":8,"response":"<answer>3 * 5</answer>"}"#,
            "{broken",
            "",
            r#"{"nums":[3,5],"target":8}"#,
            r#"{"nums":[3,5],"response":"<answer>3 + 5</answer>"}"#,
            r#"{"nums":[3,5],"target":8,"response":7}"#,
            r#"{"nums":[3,5,5],"target":3,"response":"<answer>3 / (5 - 5)</answer>"}"#,
        ],
    );
    assert_eq!(
        report,
        VerifyReport {
            lines: 7,
            passed: 1,
            failed: 2,
            malformed: 4
        }
    );
    assert_eq!(v[0], json!({"line": 1, "pass": true, "reason": "ok"}));
    assert_eq!(
        v[1],
        json!({"line": 2, "pass": false, "reason": "wrong_value"})
    );
    assert_eq!(v[2]["line"], json!(3));
    assert_eq!(v[2]["reason"], json!("malformed"));
    assert!(v[2]["error"]
        .as_str()
        .expect("error")
        .contains("invalid JSON"));
    assert_eq!(v[3]["line"], json!(5));
    assert_eq!(v[3]["error"], json!("missing field `response`"));
    assert_eq!(v[4]["line"], json!(6));
    assert!(v[4]["error"].as_str().expect("error").contains("target"));
    assert_eq!(v[5]["error"], json!("`response` is not a string"));
    assert_eq!(
        v[6],
        json!({"line": 8, "pass": false, "reason": "division_by_zero"})
    );
    assert_eq!(
        report.to_string(),
        "verified 7 lines: 1 passed (14.3%), 2 failed, 4 malformed"
    );
}

#[test]
fn function_calling_file() {
    let tools = r#"[{"name":"get_weather","description":"Weather.","parameters":{"city":{"type":"str","description":"City."}}}]"#;
    let answers = r#"[{"name":"get_weather","arguments":{"city":"Paris"}}]"#;
    let line = |response: &str| {
        json!({"query": "Weather in Paris?", "tools": tools, "answers": answers, "response": response}).to_string()
    };
    let a = line(
        r#"```json
[{"name": "get_weather", "arguments": {"city": "Paris"}}]
```"#,
    );
    let b = line(r#"[{"name": "get_weather", "arguments": {"city": "Paris", "units": "c"}}]"#);
    let (report, v) = run("function_calling", &[&a, &b]);
    assert_eq!(
        report,
        VerifyReport {
            lines: 2,
            passed: 1,
            failed: 1,
            malformed: 0
        }
    );
    assert_eq!(
        v[1],
        json!({"line": 2, "pass": false, "reason": "extra_argument:units"})
    );
}

#[test]
fn shipped_test_split_with_gold_responses_all_pass() {
    let data = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("data/countdown/test.jsonl");
    let text = std::fs::read_to_string(data).expect("data");
    let lines: Vec<String> = text
        .lines()
        .take(200)
        .map(|l| {
            let mut v: Value = serde_json::from_str(l).expect("json");
            let sol = v["solution"].as_str().expect("solution").to_string();
            v["response"] = json!(format!("<answer>{sol}</answer>"));
            v.to_string()
        })
        .collect();
    let refs: Vec<&str> = lines.iter().map(String::as_str).collect();
    let (report, _) = run("countdown", &refs);
    assert_eq!(
        report,
        VerifyReport {
            lines: 200,
            passed: 200,
            failed: 0,
            malformed: 0
        }
    );
}

#[test]
fn unknown_task_and_missing_input_are_errors() {
    let mut out = Vec::new();
    let e = verify_file(
        "chess",
        &TaskOptions::default(),
        std::path::Path::new("x.jsonl"),
        &mut out,
    );
    assert!(matches!(e, Err(VerifyError::Task(_))));
    let e = verify_file(
        "countdown",
        &TaskOptions::default(),
        std::path::Path::new("/nonexistent.jsonl"),
        &mut out,
    );
    assert!(matches!(e, Err(VerifyError::Open { .. })));
}
