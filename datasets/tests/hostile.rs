//! Hostile input: the verifiers never panic, never overflow the stack, and stay fast on huge or deep input.

use std::time::{Duration, Instant};

use flywheel_datasets::countdown::verify as cd;
use flywheel_datasets::function_calling::verify as fc;
use flywheel_datasets::Verdict;
use proptest::prelude::*;

/// Generous bound: catches exponential blowups, not micro-regressions (the bench measures speed).
const BOUND: Duration = Duration::from_secs(1);

fn gold() -> Vec<fc::Call> {
    fc::parse_gold(&serde_json::Value::from(
        r#"[{"name":"get_weather","arguments":{"city":"Paris","days":3}}]"#,
    ))
    .expect("gold")
}

fn timed(f: impl FnOnce() -> Verdict) -> (Verdict, Duration) {
    let start = Instant::now();
    let v = f();
    (v, start.elapsed())
}

fn both(response: &str) -> (Verdict, Verdict) {
    let (a, ta) = timed(|| cd::verify(&[3, 5, 7], 22, response));
    let (b, tb) = timed(|| fc::verify(&gold(), response));
    assert!(ta < BOUND, "countdown took {ta:?}");
    assert!(tb < BOUND, "function calling took {tb:?}");
    (a, b)
}

#[test]
fn one_megabyte_response() {
    let junk = "x".repeat(1 << 20);
    let (a, b) = both(&junk);
    assert_eq!(a.reason, "no_answer");
    assert_eq!(b.reason, "too_long");
    let tagged = format!("{junk}<answer>3 * 5 + 7</answer>");
    let (a, _) = both(&tagged);
    assert_eq!(a.reason, "ok");
    let digits = "1".repeat(1 << 20);
    let (a, _) = both(&format!("<answer>{digits}</answer>"));
    assert_eq!(a.reason, "too_long");
    let many_tags = "<answer>".repeat(100_000);
    let (a, _) = both(&many_tags);
    assert_eq!(a.reason, "empty_answer");
}

#[test]
fn ten_thousand_nested_parentheses() {
    let deep = format!(
        "<answer>{}3{}</answer>",
        "(".repeat(10_000),
        ")".repeat(10_000)
    );
    let (a, _) = both(&deep);
    assert_eq!(a.reason, "too_long");
    // Within the length limit, depth is what stops it.
    let deep = format!(
        "<answer>{}3 * 5 + 7{}</answer>",
        "(".repeat(400),
        ")".repeat(400)
    );
    let (a, _) = both(&deep);
    assert_eq!(a.reason, "too_deep");
    let unbalanced = format!("<answer>{}</answer>", "(".repeat(900));
    let (a, _) = both(&unbalanced);
    assert_eq!(a.reason, "too_deep");
}

#[test]
fn five_hundred_digit_number() {
    let big = "9".repeat(500);
    let (a, _) = both(&format!("<answer>{big} + 3 + 5 + 7</answer>"));
    assert_eq!(a.reason, "number_too_large");
    let (_, b) = both(&format!(
        r#"[{{"name":"get_weather","arguments":{{"city":"Paris","days":{big}}}}}]"#
    ));
    // serde_json rejects a number beyond f64 range, so the response does not parse.
    assert_eq!(b.reason, "unparseable");
    let (_, b) = both(&format!(
        r#"[{{"name":"get_weather","arguments":{{"city":"Paris","days":"{big}"}}}}]"#
    ));
    assert_eq!(b.reason, "wrong_argument:days");
}

#[test]
fn json_nesting_bomb() {
    let bomb = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    let (_, b) = both(&bomb);
    assert_eq!(b.reason, "unparseable");
    let bomb = format!(
        r#"[{{"name":"get_weather","arguments":{{"city":{}"Paris"{}}}}}]"#,
        "[".repeat(5_000),
        "]".repeat(5_000)
    );
    let (_, b) = both(&bomb);
    assert_eq!(b.reason, "unparseable");
    let objects = "{\"a\":".repeat(50_000);
    let (_, b) = both(&format!("<tool_call>{objects}</tool_call>"));
    assert_eq!(b.reason, "unparseable");
    let fences = "```".repeat(50_000);
    let (_, b) = both(&fences);
    assert_eq!(b.reason, "unparseable");
}

#[test]
fn overflow_is_a_verdict() {
    let nums = [999_999_999_999_u64; 8];
    let expr = ["999999999999"; 8].join(" * ");
    assert_eq!(
        cd::verify(&nums, 1, &format!("<answer>{expr}</answer>")).reason,
        "overflow"
    );
    let expr = ["999999999999"; 8].join(" / ");
    let v = cd::verify(&nums, 1, &format!("<answer>1 / ({expr})</answer>"));
    assert_eq!(v.reason, "number_not_given");
}

fn token_soup() -> impl Strategy<Value = String> {
    let pieces = prop::sample::select(vec![
        "<answer>",
        "</answer>",
        "<ANSWER>",
        "(",
        ")",
        "((",
        "))",
        "+",
        "-",
        "*",
        "/",
        "×",
        "÷",
        "−",
        "3",
        "5",
        "7",
        "0",
        "03",
        "3.0",
        "999999999999999999999",
        " ",
        "\n",
        "=",
        "22",
        "^",
        "**",
        "{",
        "}",
        "[",
        "]",
        "\"",
        ":",
        ",",
        "\"name\"",
        "\"arguments\"",
        "\"get_weather\"",
        "\"city\"",
        "\"Paris\"",
        "```",
        "```json\n",
        "<tool_call>",
        "</tool_call>",
        "null",
        "true",
        "1e999",
        "-0",
        "\\u0000",
        "é",
        "🦀",
    ]);
    prop::collection::vec(pieces, 0..200).prop_map(|v| v.concat())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn verifiers_never_panic_on_token_soup(s in token_soup()) {
        let (a, b) = both(&s);
        prop_assert!(!a.reason.is_empty() && a.pass == (a.reason == "ok"));
        prop_assert!(!b.reason.is_empty() && b.pass == (b.reason == "ok"));
    }

    #[test]
    fn verifiers_never_panic_on_arbitrary_text(s in any::<String>()) {
        let (a, b) = both(&s);
        prop_assert!(a.pass == (a.reason == "ok"));
        prop_assert!(b.pass == (b.reason == "ok"));
    }

    #[test]
    fn countdown_never_panics_on_arbitrary_numbers(
        nums in prop::collection::vec(0u64..=1_000_000_000_000, 1..8),
        target in any::<i64>(),
        s in token_soup(),
    ) {
        let v = cd::verify(&nums, target, &s);
        prop_assert!(v.pass == (v.reason == "ok"));
    }

    #[test]
    fn correct_sums_always_pass(nums in prop::collection::vec(1u64..1000, 1..6)) {
        let expr: Vec<String> = nums.iter().map(u64::to_string).collect();
        let target: u64 = nums.iter().sum();
        let v = cd::verify(&nums, target as i64, &format!("<answer>{}</answer>", expr.join(" + ")));
        prop_assert_eq!(v.reason, "ok");
    }
}
