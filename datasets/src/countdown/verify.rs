//! The Countdown verifier: answer extraction (tags, then a documented fallback) and the rules.
//!
//! Extraction: the content of the *last* `<answer>` tag (ASCII case-insensitive) up to the next
//! `</answer>`, or to the end of the response when unclosed — the last one, like TinyZero, so a
//! format example echoed before the real answer does not count. Without any tag, the fallback is
//! the last non-empty line: text before its first `=`, then the longest trailing run of
//! expression characters (so "So the answer is 3 + 5 = 8." yields `3 + 5`).
//!
//! Rules: only integers, + - * / and parentheses (Unicode × · ⋅ ∗ ÷ ∕ − – accepted as
//! operators); no unary sign, no implicit multiplication; every given number used exactly once and
//! no other number; exact rational value equal to the target. An optional `= N` suffix is
//! accepted when N is the target.

use crate::countdown::expr::{self, ExprError, MAX_EXPR_BYTES};
use crate::task::Verdict;

/// Where the answer text came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Extracted<'a> {
    Tagged(&'a str),
    Fallback(&'a str),
    Missing,
}

const OPEN: &str = "<answer>";
const CLOSE: &str = "</answer>";

fn find_ci(haystack: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    if needle.is_empty() || haystack.len() < needle.len() {
        return None;
    }
    (from..=haystack.len() - needle.len())
        .find(|&i| haystack[i..i + needle.len()].eq_ignore_ascii_case(needle))
}

fn rfind_ci(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() || haystack.len() < needle.len() {
        return None;
    }
    (0..=haystack.len() - needle.len())
        .rev()
        .find(|&i| haystack[i..i + needle.len()].eq_ignore_ascii_case(needle))
}

fn is_expr_char(c: char) -> bool {
    c.is_ascii_digit()
        || c.is_whitespace()
        || matches!(
            c,
            '+' | '-'
                | '*'
                | '/'
                | '('
                | ')'
                | '.'
                | '\u{00D7}'
                | '\u{00B7}'
                | '\u{22C5}'
                | '\u{2217}'
                | '\u{00F7}'
                | '\u{2215}'
                | '\u{2212}'
                | '\u{2013}'
        )
}

/// The content of the last `<answer>` tag (to the next `</answer>` or the end), if any.
pub fn last_answer_tag(response: &str) -> Option<&str> {
    let bytes = response.as_bytes();
    let open = rfind_ci(bytes, OPEN.as_bytes())?;
    let start = open + OPEN.len();
    let end = find_ci(bytes, CLOSE.as_bytes(), start).unwrap_or(bytes.len());
    // Tags are ASCII, so both offsets are on char boundaries.
    Some(response.get(start..end).unwrap_or(""))
}

/// Finds the answer text in a response.
pub fn extract_answer(response: &str) -> Extracted<'_> {
    if let Some(t) = last_answer_tag(response) {
        return Extracted::Tagged(t);
    }
    let Some(line) = response.lines().rev().find(|l| !l.trim().is_empty()) else {
        return Extracted::Missing;
    };
    let lhs = line.split('=').next().unwrap_or(line);
    let lhs = lhs.trim_end().trim_end_matches(['.', '`', '$', '*']);
    let start = lhs
        .char_indices()
        .rev()
        .take_while(|&(_, c)| is_expr_char(c))
        .last()
        .map_or(lhs.len(), |(i, _)| i);
    let candidate = lhs[start..]
        .trim()
        .trim_start_matches([')', '.', '*'])
        .trim();
    if candidate.bytes().any(|b| b.is_ascii_digit()) {
        Extracted::Fallback(candidate)
    } else {
        Extracted::Missing
    }
}

/// Checks an answer expression against the numbers and the target.
pub fn check_expression(nums: &[u64], target: i64, text: &str) -> Verdict {
    if text.len() > MAX_EXPR_BYTES {
        return Verdict::fail(ExprError::TooLong.reason());
    }
    let mut parts = text.split('=');
    let lhs = parts.next().unwrap_or("");
    let rhs = parts.next();
    if parts.next().is_some() {
        return Verdict::fail("unparseable");
    }
    if let Some(rhs) = rhs {
        match expr::parse_integer_literal(rhs) {
            Some(v) if v == i128::from(target) => {}
            Some(_) => return Verdict::fail("wrong_value"),
            None => return Verdict::fail("unparseable"),
        }
    }
    let parsed = match expr::parse(lhs) {
        Ok(e) => e,
        Err(e) => return Verdict::fail(e.reason()),
    };
    // Multiset check: a literal absent from what is left is either a repeat or a stranger.
    let mut left: Vec<u64> = nums.to_vec();
    for lit in parsed.literals() {
        match left.iter().position(|&n| n == lit) {
            Some(i) => {
                left.swap_remove(i);
            }
            None if nums.contains(&lit) => return Verdict::fail("number_reused"),
            None => return Verdict::fail("number_not_given"),
        }
    }
    if !left.is_empty() {
        return Verdict::fail("number_unused");
    }
    match parsed.eval() {
        Ok(v) if v.as_integer() == Some(i128::from(target)) => Verdict::ok(),
        Ok(_) => Verdict::fail("wrong_value"),
        Err(e) => Verdict::fail(e.reason()),
    }
}

/// Verifies a full model response.
pub fn verify(nums: &[u64], target: i64, response: &str) -> Verdict {
    match extract_answer(response) {
        Extracted::Tagged(t) | Extracted::Fallback(t) => {
            if t.trim().is_empty() {
                Verdict::fail("empty_answer")
            } else {
                check_expression(nums, target, t)
            }
        }
        Extracted::Missing => Verdict::fail("no_answer"),
    }
}
