//! Hand-written Countdown verifier cases: every rule, with the expected verdict reason written out.

use flywheel_datasets::countdown::expr::{self, Rational};
use flywheel_datasets::countdown::verify::{extract_answer, verify, Extracted};

/// (numbers, target, response, expected reason).
const CASES: &[(&[u64], i64, &str, &str)] = &[
    // --- passing answers
    (&[3, 5], 8, "<answer>3 + 5</answer>", "ok"),
    (&[3, 5], 8, "<answer>5 + 3</answer>", "ok"),
    (&[9, 4], 5, "<answer>9 - 4</answer>", "ok"),
    (&[6, 7], 42, "<answer>6 * 7</answer>", "ok"),
    (&[84, 2], 42, "<answer>84 / 2</answer>", "ok"),
    (&[44, 19, 35], 98, "<answer>(44 + 19) + 35</answer>", "ok"),
    (&[25, 3, 4, 2], 52, "<answer>(25 * 4) / 2 + 3 - 1 * 1</answer>", "number_not_given"),
    (&[25, 3, 4, 2], 53, "<answer>25 * 2 + 3 * 4 / 4</answer>", "number_reused"),
    (&[25, 3, 4, 2], 53, "<answer>25 * 2 + 4 - 3 + 2</answer>", "number_reused"),
    (&[25, 3, 4, 2], 100, "<answer>(25 * 4) * (3 - 2)</answer>", "ok"),
    (&[8, 3, 3], 24, "<answer>8 / (3 - 8 / 3)</answer>", "number_reused"),
    (&[8, 3, 8, 3], 24, "<answer>8 / (3 - 8 / 3)</answer>", "ok"),
    (&[1, 5, 5, 5], 24, "<answer>(5 - 1 / 5) * 5</answer>", "ok"),
    (&[3, 5], 8, "Let me think. 3 plus 5 is 8.\n<answer>3+5</answer>", "ok"),
    (&[3, 5], 8, "<answer>  3   +\t5 \n</answer>", "ok"),
    (&[3, 5], 8, "<answer>(((3 + 5)))</answer>", "ok"),
    (&[3, 5], 8, "<ANSWER>3 + 5</ANSWER>", "ok"),
    (&[3, 5], 8, "<answer>3 + 5 = 8</answer>", "ok"),
    (&[3, 5], 8, "<answer>3 + 5 = 9</answer>", "wrong_value"),
    (&[3, 5], 8, "<answer>3 + 5 = eight</answer>", "unparseable"),
    (&[3, 5], 8, "<answer>3 + 5 = 8 = 8</answer>", "unparseable"),
    // Unicode operators are accepted (× ÷ − – · ⋅ ∗ ∕).
    (&[6, 7], 42, "<answer>6 × 7</answer>", "ok"),
    (&[84, 2], 42, "<answer>84 ÷ 2</answer>", "ok"),
    (&[9, 4], 5, "<answer>9 − 4</answer>", "ok"),
    (&[9, 4], 5, "<answer>9 – 4</answer>", "ok"),
    (&[6, 7], 42, "<answer>6 · 7</answer>", "ok"),
    (&[6, 7], 42, "<answer>6 ⋅ 7</answer>", "ok"),
    (&[84, 2], 42, "<answer>84 ∕ 2</answer>", "ok"),
    (&[3, 5], 8, "<answer>3\u{00A0}+\u{2003}5</answer>", "ok"),
    // Two tags: the last one counts.
    (&[3, 5], 8, "<answer>3 * 5</answer> wait, no: <answer>3 + 5</answer>", "ok"),
    (&[3, 5], 8, "<answer>3 + 5</answer> or maybe <answer>3 * 5</answer>", "wrong_value"),
    // Unclosed last tag: content to the end.
    (&[3, 5], 8, "<answer>3 + 5", "ok"),
    (&[3, 5], 8, "<answer>3 + 5 and that is it", "unparseable"),
    // Fallback without tags: last non-empty line, left of '=', trailing expression run.
    (&[3, 5], 8, "3 + 5", "ok"),
    (&[3, 5], 8, "The equation is:\n3 + 5 = 8\n", "ok"),
    (&[3, 5], 8, "So the answer is 3 + 5 = 8.", "ok"),
    (&[3, 5], 8, "So the answer is 3 * 5.", "wrong_value"),
    (&[3, 5], 8, "**3 + 5**", "ok"),
    (&[3, 5], 8, "I do not know.", "no_answer"),
    (&[3, 5], 8, "", "no_answer"),
    (&[3, 5], 8, "   \n\n  ", "no_answer"),
    // Empty tag.
    (&[3, 5], 8, "<answer></answer>", "empty_answer"),
    (&[3, 5], 8, "<answer>   </answer>", "empty_answer"),
    // Wrong value.
    (&[3, 5], 8, "<answer>5 - 3</answer>", "wrong_value"),
    (&[3, 5], 8, "<answer>3 / 5</answer>", "wrong_value"),
    (&[10, 4], 2, "<answer>10 / 4</answer>", "wrong_value"),
    (&[10, 4, 2], 5, "<answer>10 / 4 * 2</answer>", "ok"),
    (&[10, 4, 2], 5, "<answer>10 / (4 * 2)</answer>", "wrong_value"),
    (&[10, 4, 2], 4, "<answer>10 - 4 - 2</answer>", "ok"),
    (&[10, 4, 2], 4, "<answer>10 - (4 - 2)</answer>", "wrong_value"),
    // Number usage.
    (&[3, 5], 6, "<answer>3 + 3</answer>", "number_reused"),
    (&[3, 5, 7], 8, "<answer>3 + 5</answer>", "number_unused"),
    (&[3, 5], 9, "<answer>3 + 5 + 1</answer>", "number_not_given"),
    (&[3, 5], 8, "<answer>3 + 5 + 0</answer>", "number_not_given"),
    (&[3, 3, 5], 11, "<answer>3 + 3 + 5</answer>", "ok"),
    (&[3, 3, 5], 8, "<answer>3 + 5</answer>", "number_unused"),
    (&[35], 35, "<answer>35</answer>", "ok"),
    (&[3, 5], 35, "<answer>35</answer>", "number_not_given"),
    // Numbers must be written plainly.
    (&[3, 5], 8, "<answer>03 + 5</answer>", "invalid_number"),
    (&[3, 5], 8, "<answer>3.0 + 5</answer>", "invalid_number"),
    (&[3, 5], 8, "<answer>3. + 5</answer>", "invalid_number"),
    (&[3, 5], 8, "<answer>.5 + 3</answer>", "invalid_number"),
    (&[3, 5], 8, "<answer>1,000 + 5</answer>", "invalid_number"),
    (&[3, 5], 8, "<answer>１ + 5</answer>", "unparseable"),
    (&[3, 5], 8, "<answer>1234567890123456789 + 5</answer>", "number_too_large"),
    // Syntax.
    (&[3, 5], 15, "<answer>3(5)</answer>", "implicit_multiplication"),
    (&[3, 5, 2], 16, "<answer>2(3 + 5)</answer>", "implicit_multiplication"),
    (&[3, 5, 2], 16, "<answer>(3 + 5)(2)</answer>", "implicit_multiplication"),
    (&[3, 5], 15, "<answer>3 5</answer>", "implicit_multiplication"),
    (&[3, 5], 2, "<answer>-3 + 5</answer>", "unary_operator"),
    (&[3, 5], 8, "<answer>+3 + 5</answer>", "unary_operator"),
    (&[3, 5], 8, "<answer>3 - -5</answer>", "unary_operator"),
    (&[3, 5], 2, "<answer>-(3 - 5)</answer>", "unary_operator"),
    (&[3, 2], 9, "<answer>3 ^ 2</answer>", "unsupported_operator"),
    (&[3, 2], 9, "<answer>3 ** 2</answer>", "unsupported_operator"),
    (&[7, 2], 1, "<answer>7 % 2</answer>", "unsupported_operator"),
    (&[3, 5], 15, "<answer>3 x 5</answer>", "unparseable"),
    (&[3, 5], 8, "<answer>[3 + 5]</answer>", "unparseable"),
    (&[3, 5], 8, "<answer>(3 + 5</answer>", "unparseable"),
    (&[3, 5], 8, "<answer>3 + 5)</answer>", "unparseable"),
    (&[3, 5], 8, "<answer>3 +</answer>", "unparseable"),
    (&[3, 5], 8, "<answer>()</answer>", "unparseable"),
    (&[3, 5], 8, "<answer>3 + 5 8</answer>", "implicit_multiplication"),
    (&[3, 5], 8, "<answer>sum(3, 5)</answer>", "unparseable"),
    // Division by zero is a verdict.
    (&[3, 5, 5], 3, "<answer>3 / (5 - 5)</answer>", "division_by_zero"),
    (&[0, 3], 0, "<answer>3 / 0</answer>", "division_by_zero"),
    (&[0, 3], 0, "<answer>0 / 3</answer>", "ok"),
    // Overflow is a verdict.
    (
        &[999_999_999_999, 999_999_999_999, 999_999_999_999, 999_999_999_999],
        1,
        "<answer>999999999999 * 999999999999 * 999999999999 * 999999999999</answer>",
        "overflow",
    ),
    // Length and depth limits.
    (&[3, 5], 8, "<answer>((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((3 + 5))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))</answer>", "too_deep"),
];

#[test]
fn countdown_cases() {
    assert!(CASES.len() >= 60, "only {} cases", CASES.len());
    let mut failures = Vec::new();
    for (i, (nums, target, response, expected)) in CASES.iter().enumerate() {
        let v = verify(nums, *target, response);
        if v.reason != *expected || v.pass != (*expected == "ok") {
            failures.push(format!(
                "case {i}: nums {nums:?} target {target} response {response:?}: expected {expected}, got {v:?}"
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn too_long_answer_is_rejected() {
    let long = format!("<answer>{}3 + 5</answer>", " ".repeat(2000));
    assert_eq!(verify(&[3, 5], 8, &long).reason, "too_long");
}

#[test]
fn extraction_variants() {
    assert_eq!(
        extract_answer("<answer>1+2</answer>"),
        Extracted::Tagged("1+2")
    );
    assert_eq!(
        extract_answer("<answer>a</answer><answer>b</answer>"),
        Extracted::Tagged("b")
    );
    assert_eq!(
        extract_answer("x\nso 1 + 2 = 3.\n"),
        Extracted::Fallback("1 + 2")
    );
    assert_eq!(extract_answer("no digits here"), Extracted::Missing);
}

#[test]
fn rational_arithmetic_is_exact() {
    let third = Rational::new(1, 3).expect("valid");
    let sum = third.checked_add(third).and_then(|s| s.checked_add(third));
    assert_eq!(sum.and_then(Rational::as_integer), Some(1));
    assert_eq!(Rational::new(2, -4), Rational::new(-1, 2));
    assert_eq!(Rational::new(1, 0), None);
    assert!(Rational::new(1, 3) < Rational::new(1, 2));
    let e = expr::parse("8 / (3 - 8 / 3)").expect("parses");
    assert_eq!(e.eval().map(Rational::as_integer), Ok(Some(24)));
    assert_eq!(e.literals().collect::<Vec<_>>(), vec![8, 3, 8, 3]);
}

#[test]
fn precedence_and_associativity() {
    let eval = |s: &str| {
        expr::parse(s)
            .and_then(|e| e.eval())
            .map(|r| (r.numer(), r.denom()))
    };
    assert_eq!(eval("2 + 3 * 4"), Ok((14, 1)));
    assert_eq!(eval("(2 + 3) * 4"), Ok((20, 1)));
    assert_eq!(eval("10 - 4 - 3"), Ok((3, 1)));
    assert_eq!(eval("12 / 3 / 2"), Ok((2, 1)));
    assert_eq!(eval("1 / 3"), Ok((1, 3)));
    assert_eq!(eval("1 - 3"), Ok((-2, 1)));
}
