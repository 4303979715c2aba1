//! User-defined tasks (exact, regex, command verifiers) and prompt templates (defaults, overrides, conversation shape).

use std::path::Path;

use flywheel_datasets::{load_task, load_task_with, Role, Task, TaskError, TaskOptions, Verdict};
use serde_json::json;

fn write(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
    let p = dir.join(name);
    if let Some(parent) = p.parent() {
        std::fs::create_dir_all(parent).expect("mkdir");
    }
    std::fs::write(&p, text).expect("write");
    p
}

fn custom(dir: &Path, verifier: serde_json::Value) -> Box<dyn Task> {
    let cfg = json!({"name": "capitals", "reference_field": "answer", "data": "data.jsonl", "verifier": verifier});
    let path = write(dir, "task.json", &cfg.to_string());
    load_task(path.to_str().expect("utf8 path")).expect("task")
}

#[test]
fn exact_verifier() {
    let dir = tempfile::tempdir().expect("tempdir");
    let task = custom(dir.path(), json!({"type": "exact"}));
    assert_eq!(task.name(), "capitals");
    let inst = task
        .parse_instance(
            1,
            json!({"prompt": "Capital of France?", "answer": "Paris"}),
        )
        .expect("inst");
    assert_eq!(task.verify(&inst, "<answer> Paris </answer>").reason, "ok");
    assert_eq!(task.verify(&inst, "Paris").reason, "ok");
    assert_eq!(
        task.verify(&inst, "<answer>paris</answer>").reason,
        "wrong_answer"
    );
    assert_eq!(task.verify(&inst, "It is Paris.").reason, "wrong_answer");
    let num = task
        .parse_instance(2, json!({"prompt": "2+2?", "answer": 4}))
        .expect("inst");
    assert!(task.verify(&num, "<answer>4</answer>").pass);
    assert!(task.parse_instance(3, json!({"prompt": "x"})).is_err());
    let ci = custom(
        dir.path(),
        json!({"type": "exact", "case_sensitive": false}),
    );
    assert!(ci.verify(&inst, "<answer>PARIS</answer>").pass);
}

#[test]
fn regex_verifier() {
    let dir = tempfile::tempdir().expect("tempdir");
    let task = custom(
        dir.path(),
        json!({"type": "regex", "pattern": "(?i)^\\s*{reference}\\.?\\s*$", "answer_tag_only": true}),
    );
    let inst = task
        .parse_instance(1, json!({"prompt": "p", "answer": "St. Louis (MO)"}))
        .expect("inst");
    assert_eq!(
        task.verify(&inst, "<answer>st. louis (mo).</answer>")
            .reason,
        "ok"
    );
    assert_eq!(
        task.verify(&inst, "<answer>StX Louis (MO)</answer>").reason,
        "no_match"
    );
    assert_eq!(task.verify(&inst, "St. Louis (MO)").reason, "no_answer");
    let fixed = custom(dir.path(), json!({"type": "regex", "pattern": "\\b42\\b"}));
    assert!(fixed.verify(&inst, "the answer is 42").pass);
    assert_eq!(fixed.verify(&inst, "420").reason, "no_match");
    let cfg = write(
        dir.path(),
        "bad.json",
        &json!({"name": "b", "verifier": {"type": "regex", "pattern": "("}}).to_string(),
    );
    assert!(matches!(
        load_task(cfg.to_str().expect("path")),
        Err(TaskError::Regex { .. })
    ));
}

#[cfg(unix)]
#[test]
fn command_verifier_runs_without_shell_and_times_out() {
    let dir = tempfile::tempdir().expect("tempdir");
    // The checker reads the JSON on stdin and passes when the response equals the reference.
    let script = r#"import json, sys
d = json.load(sys.stdin)
sys.exit(0 if d["response"].strip() == d["instance"]["answer"] and d["task"] == "capitals" else 3)
"#;
    write(dir.path(), "check.py", script);
    let task = custom(
        dir.path(),
        json!({"type": "command", "program": "python3", "args": ["check.py"], "timeout_ms": 20000}),
    );
    let inst = task
        .parse_instance(1, json!({"prompt": "p", "answer": "Paris"}))
        .expect("inst");
    assert_eq!(task.verify(&inst, "Paris").reason, "ok");
    assert_eq!(task.verify(&inst, "Rome").reason, "command_failed:3");
    // Shell syntax is not interpreted: `;` is just an argument to `echo`.
    let echo = custom(
        dir.path(),
        json!({"type": "command", "program": "echo", "args": ["x;", "exit", "1"]}),
    );
    assert!(echo.verify(&inst, "x").pass);
    // A command that would touch a marker after 5 s: timed out and killed, the verdict comes
    // before the marker ever could (checked without a clock).
    let slow = custom(
        dir.path(),
        json!({"type": "command", "program": "sh", "args": ["-c", "sleep 5; touch slow-ended"], "timeout_ms": 200}),
    );
    assert_eq!(slow.verify(&inst, "x").reason, "command_timeout");
    assert!(!dir.path().join("slow-ended").exists());
    let missing = custom(
        dir.path(),
        json!({"type": "command", "program": "./no-such-checker"}),
    );
    assert_eq!(missing.verify(&inst, "x").reason, "command_error");
}

/// A command that leaves its stdin to a child that never reads it: with a payload larger than
/// a pipe buffer, a blocking writer would wait for that child (30 s) whatever the timeout. The
/// child touches a marker file when it ends, so a verdict that came before the marker proves
/// the verifier was not held (no clock involved).
#[cfg(unix)]
#[test]
fn command_verifier_is_not_held_by_a_child_that_keeps_stdin() {
    let dir = tempfile::tempdir().expect("tempdir");
    let inst_of = |task: &dyn Task| {
        task.parse_instance(1, json!({"prompt": "p", "answer": "Paris"}))
            .expect("inst")
    };
    let big = "x".repeat(256 * 1024);
    for (script, marker, timeout_ms, want) in [
        // Exits at once, successfully, leaving the child with the pipe (through fd 3: a shell
        // gives background jobs /dev/null as stdin).
        (
            "exec 3<&0; (sleep 30 <&3; touch ended-1) & exit 0",
            "ended-1",
            20_000,
            "ok",
        ),
        // Waits for the child: the timeout must end it, with its whole process group (so the
        // marker never appears).
        (
            "exec 3<&0; (sleep 30 <&3; touch ended-2) & wait",
            "ended-2",
            300,
            "command_timeout",
        ),
        // A command that reads everything gets everything (the payload is over 256 KiB).
        ("[ \"$(wc -c)\" -gt 262144 ]", "", 20_000, "ok"),
    ] {
        let task = custom(
            dir.path(),
            json!({"type": "command", "program": "sh", "args": ["-c", script], "timeout_ms": timeout_ms}),
        );
        let inst = inst_of(task.as_ref());
        assert_eq!(task.verify(&inst, &big).reason, want, "{script}");
        if !marker.is_empty() {
            assert!(
                !dir.path().join(marker).exists(),
                "{script}: the verdict waited for the child that held stdin"
            );
        }
    }
}

#[test]
fn config_errors_name_the_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = write(
        dir.path(),
        "t.json",
        r#"{"name": "t", "verifier": {"type": "exact"}, "typo": 1}"#,
    );
    match load_task(p.to_str().expect("path")) {
        Err(TaskError::ConfigParse { path, .. }) => assert_eq!(path, p),
        other => panic!("expected ConfigParse, got {:?}", other.err()),
    }
    assert!(matches!(
        load_task("no-such-task"),
        Err(TaskError::UnknownTask { .. })
    ));
    assert!(matches!(
        load_task("/nonexistent/t.json"),
        Err(TaskError::ConfigRead { .. })
    ));
}

#[test]
fn countdown_conversation_shape_and_wording() {
    let task = load_task("countdown").expect("task");
    let inst = task
        .parse_instance(1, json!({"nums": [44, 19, 35], "target": 98}))
        .expect("inst");
    let a = task.attempt_messages(&inst);
    assert_eq!(a.len(), 1);
    assert_eq!(a[0].role, Role::User);
    assert!(a[0]
        .content
        .starts_with("Using the numbers [44, 19, 35], write an equation that equals 98."));
    assert!(a[0].content.contains("<answer>"));
    let verdict = Verdict::fail("wrong_value");
    let r = task.reflection_messages(&inst, "44 + 19", &verdict);
    assert_eq!(r.len(), 3);
    assert_eq!(
        (r[1].role, r[1].content.as_str()),
        (Role::Assistant, "44 + 19")
    );
    assert!(r[2]
        .content
        .starts_with("Your answer is incorrect. Reflect"));
    assert!(
        !r[2].content.contains("wrong_value"),
        "the reason is not leaked by default"
    );
    assert!(!r[2].content.contains("44 + 19 + 35"), "no gold answer");
    let t = task.retry_messages(&inst, "44 + 19", "I forgot 35.");
    assert_eq!(t.len(), 5);
    assert_eq!(&t[..3], &r[..]);
    assert_eq!(
        (t[3].role, t[3].content.as_str()),
        (Role::Assistant, "I forgot 35.")
    );
    assert!(t[4].content.contains("[44, 19, 35]") && t[4].content.contains("<answer>"));
    let json = serde_json::to_value(&t[3]).expect("json");
    assert_eq!(
        json,
        json!({"role": "assistant", "content": "I forgot 35."})
    );
    // Without the failed attempt: the task, the reflection, the retry request; and another
    // fingerprint, so a run cannot resume under the other protocol.
    let opts = TaskOptions {
        retry_without_attempt: true,
        ..Default::default()
    };
    let short = load_task_with("countdown", &opts).expect("task");
    let s = short.retry_messages(&inst, "44 + 19", "I forgot 35.");
    assert_eq!(s.len(), 3);
    assert_eq!((&s[0], &s[1]), (&t[0], &t[3]));
    assert_eq!(s[2], t[4]);
    assert!(s.iter().all(|m| !m.content.contains("44 + 19")));
    assert_eq!(short.reflection_messages(&inst, "44 + 19", &verdict), r);
    assert_ne!(short.identity(), task.identity());
}

#[test]
fn reason_option_and_prompt_overrides() {
    let dir = tempfile::tempdir().expect("tempdir");
    write(
        dir.path(),
        "countdown/attempt.txt",
        "Reach {target} from {numbers}. JSON like {\"a\": 1} stays.\n",
    );
    write(dir.path(), "countdown/system.txt", "You are terse.");
    let opts = TaskOptions {
        prompt_dir: Some(dir.path().to_path_buf()),
        include_reason: true,
        ..Default::default()
    };
    let task = load_task_with("countdown", &opts).expect("task");
    let inst = task
        .parse_instance(1, json!({"nums": [3, 5], "target": 8}))
        .expect("inst");
    let a = task.attempt_messages(&inst);
    assert_eq!(a[0].role, Role::System);
    assert_eq!(a[0].content, "You are terse.");
    assert_eq!(
        a[1].content,
        "Reach 8 from [3, 5]. JSON like {\"a\": 1} stays."
    );
    let t = task.retry_messages(&inst, "<answer>3*5</answer>", "Multiply was wrong.");
    assert!(t[3]
        .content
        .starts_with("Your answer is incorrect (checker: wrong_value)."));
    write(dir.path(), "countdown/retry.txt", "Again {tagret}");
    match load_task_with("countdown", &opts) {
        Err(TaskError::Prompt(e)) => assert!(e.to_string().contains("tagret")),
        other => panic!("expected a prompt error, got {:?}", other.err()),
    }
}
