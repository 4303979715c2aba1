//! Countdown expressions: a bounded tokenizer, a depth-limited parser and exact i128 rational arithmetic.
//!
//! Bounds make hostile input cheap: input longer than [`MAX_EXPR_BYTES`] is rejected before
//! tokenizing, parentheses nest at most [`MAX_DEPTH`] deep, literals have at most
//! [`MAX_DIGITS`] digits, and every arithmetic step is checked (overflow is a verdict, not a panic).
//! Evaluation is iterative: nodes are stored children-first, so one forward pass evaluates the tree.

use std::cmp::Ordering;

/// Longest expression (in bytes) the parser looks at.
pub const MAX_EXPR_BYTES: usize = 1000;
/// Deepest parenthesis nesting accepted.
pub const MAX_DEPTH: usize = 64;
/// Most digits in one literal (keeps every literal inside u64/i128).
pub const MAX_DIGITS: usize = 18;

/// Why an expression is rejected; [`ExprError::reason`] is the verdict reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ExprError {
    #[error("empty expression")]
    Empty,
    #[error("expression too long")]
    TooLong,
    #[error("parentheses nested too deep")]
    TooDeep,
    #[error("not a valid expression")]
    Unparseable,
    #[error("implicit multiplication (juxtaposed operands)")]
    ImplicitMultiplication,
    #[error("unary plus or minus")]
    UnaryOperator,
    #[error("operator other than + - * /")]
    UnsupportedOperator,
    #[error("number not written as a plain integer (leading zero or decimal point)")]
    InvalidNumber,
    #[error("number has too many digits")]
    NumberTooLarge,
    #[error("division by zero")]
    DivisionByZero,
    #[error("arithmetic overflow")]
    Overflow,
}

impl ExprError {
    /// The machine-readable verdict reason.
    pub fn reason(self) -> &'static str {
        match self {
            Self::Empty => "empty_answer",
            Self::TooLong => "too_long",
            Self::TooDeep => "too_deep",
            Self::Unparseable => "unparseable",
            Self::ImplicitMultiplication => "implicit_multiplication",
            Self::UnaryOperator => "unary_operator",
            Self::UnsupportedOperator => "unsupported_operator",
            Self::InvalidNumber => "invalid_number",
            Self::NumberTooLarge => "number_too_large",
            Self::DivisionByZero => "division_by_zero",
            Self::Overflow => "overflow",
        }
    }
}

/// An exact rational number with a positive denominator, always in lowest terms.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Rational {
    num: i128,
    den: i128,
}

fn gcd(mut a: u128, mut b: u128) -> u128 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

impl Rational {
    pub fn int(n: i128) -> Self {
        Self { num: n, den: 1 }
    }

    /// `num / den` reduced; `None` when `den` is zero or the result does not fit.
    pub fn new(num: i128, den: i128) -> Option<Self> {
        if den == 0 {
            return None;
        }
        let g = gcd(num.unsigned_abs(), den.unsigned_abs());
        let g = i128::try_from(g).ok()?;
        let (mut num, mut den) = (num / g, den / g);
        if den < 0 {
            num = num.checked_neg()?;
            den = den.checked_neg()?;
        }
        Some(Self { num, den })
    }

    pub fn numer(self) -> i128 {
        self.num
    }

    pub fn denom(self) -> i128 {
        self.den
    }

    /// The value as an integer, if it is one.
    pub fn as_integer(self) -> Option<i128> {
        (self.den == 1).then_some(self.num)
    }

    pub fn checked_add(self, o: Self) -> Option<Self> {
        let n = self
            .num
            .checked_mul(o.den)?
            .checked_add(o.num.checked_mul(self.den)?)?;
        Self::new(n, self.den.checked_mul(o.den)?)
    }

    pub fn checked_sub(self, o: Self) -> Option<Self> {
        self.checked_add(Self {
            num: o.num.checked_neg()?,
            den: o.den,
        })
    }

    pub fn checked_mul(self, o: Self) -> Option<Self> {
        Self::new(self.num.checked_mul(o.num)?, self.den.checked_mul(o.den)?)
    }

    /// `Err(DivisionByZero)` or `Err(Overflow)` instead of panicking.
    pub fn checked_div(self, o: Self) -> Result<Self, ExprError> {
        if o.num == 0 {
            return Err(ExprError::DivisionByZero);
        }
        let n = self.num.checked_mul(o.den).ok_or(ExprError::Overflow)?;
        let d = self.den.checked_mul(o.num).ok_or(ExprError::Overflow)?;
        Self::new(n, d).ok_or(ExprError::Overflow)
    }

    /// Applies `op`, mapping every failure to a verdict error.
    pub fn apply(self, op: Op, o: Self) -> Result<Self, ExprError> {
        match op {
            Op::Add => self.checked_add(o).ok_or(ExprError::Overflow),
            Op::Sub => self.checked_sub(o).ok_or(ExprError::Overflow),
            Op::Mul => self.checked_mul(o).ok_or(ExprError::Overflow),
            Op::Div => self.checked_div(o),
        }
    }
}

impl PartialOrd for Rational {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Rational {
    fn cmp(&self, other: &Self) -> Ordering {
        // Denominators are positive, so cross-multiplication preserves order; fall back to f64
        // only if the exact products overflow (never for Countdown-sized values).
        match (
            self.num.checked_mul(other.den),
            other.num.checked_mul(self.den),
        ) {
            (Some(a), Some(b)) => a.cmp(&b),
            _ => {
                let a = self.num as f64 / self.den as f64;
                let b = other.num as f64 / other.den as f64;
                a.partial_cmp(&b).unwrap_or(Ordering::Equal)
            }
        }
    }
}

/// A binary operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    Add,
    Sub,
    Mul,
    Div,
}

impl Op {
    pub const ALL: [Op; 4] = [Op::Add, Op::Sub, Op::Mul, Op::Div];

    pub fn symbol(self) -> char {
        match self {
            Op::Add => '+',
            Op::Sub => '-',
            Op::Mul => '*',
            Op::Div => '/',
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tok {
    Num(u64),
    Op(Op),
    LParen,
    RParen,
}

/// Tokenizes; accepts ASCII operators and the Unicode forms × · ⋅ ∗ (times), ÷ ∕ (divide),
/// − – (minus). Numbers must be plain decimal integers without leading zeros.
fn tokenize(text: &str) -> Result<Vec<Tok>, ExprError> {
    let mut toks = Vec::new();
    let mut chars = text.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        let tok = match c {
            c if c.is_whitespace() => continue,
            '0'..='9' => {
                let mut end = i + 1;
                while let Some(&(j, d)) = chars.peek() {
                    if !d.is_ascii_digit() {
                        break;
                    }
                    chars.next();
                    end = j + 1;
                }
                let digits = &text[i..end];
                if matches!(chars.peek(), Some(&(_, '.')) | Some(&(_, ','))) {
                    return Err(ExprError::InvalidNumber);
                }
                if digits.len() > 1 && digits.starts_with('0') {
                    return Err(ExprError::InvalidNumber);
                }
                if digits.len() > MAX_DIGITS {
                    return Err(ExprError::NumberTooLarge);
                }
                Tok::Num(digits.parse().map_err(|_| ExprError::NumberTooLarge)?)
            }
            '.' => return Err(ExprError::InvalidNumber),
            '+' => Tok::Op(Op::Add),
            '-' | '\u{2212}' | '\u{2013}' => Tok::Op(Op::Sub),
            '*' => {
                if matches!(chars.peek(), Some(&(_, '*'))) {
                    return Err(ExprError::UnsupportedOperator);
                }
                Tok::Op(Op::Mul)
            }
            '\u{00D7}' | '\u{00B7}' | '\u{22C5}' | '\u{2217}' => Tok::Op(Op::Mul),
            '/' | '\u{00F7}' | '\u{2215}' => Tok::Op(Op::Div),
            '(' => Tok::LParen,
            ')' => Tok::RParen,
            '^' | '%' | '!' => return Err(ExprError::UnsupportedOperator),
            _ => return Err(ExprError::Unparseable),
        };
        toks.push(tok);
    }
    Ok(toks)
}

#[derive(Debug, Clone, Copy)]
enum Node {
    Num(u64),
    Bin(Op, usize, usize),
}

/// A parsed expression.
#[derive(Debug, Clone)]
pub struct Expr {
    /// Children always precede their parent; the root is last.
    nodes: Vec<Node>,
}

impl Expr {
    /// The integer literals in the order written.
    pub fn literals(&self) -> impl Iterator<Item = u64> + '_ {
        self.nodes.iter().filter_map(|n| match n {
            Node::Num(v) => Some(*v),
            Node::Bin(..) => None,
        })
    }

    /// Evaluates exactly.
    pub fn eval(&self) -> Result<Rational, ExprError> {
        let mut vals: Vec<Rational> = Vec::with_capacity(self.nodes.len());
        for node in &self.nodes {
            let v = match *node {
                Node::Num(n) => Rational::int(i128::from(n)),
                Node::Bin(op, l, r) => {
                    let (a, b) = match (vals.get(l), vals.get(r)) {
                        (Some(a), Some(b)) => (*a, *b),
                        _ => return Err(ExprError::Unparseable),
                    };
                    a.apply(op, b)?
                }
            };
            vals.push(v);
        }
        vals.last().copied().ok_or(ExprError::Empty)
    }
}

struct Parser {
    toks: Vec<Tok>,
    pos: usize,
    nodes: Vec<Node>,
}

impl Parser {
    fn peek(&self) -> Option<Tok> {
        self.toks.get(self.pos).copied()
    }

    // expr := term (('+' | '-') term)*
    fn expr(&mut self, depth: usize) -> Result<usize, ExprError> {
        let mut left = self.term(depth)?;
        while let Some(Tok::Op(op @ (Op::Add | Op::Sub))) = self.peek() {
            self.pos += 1;
            let right = self.term(depth)?;
            self.nodes.push(Node::Bin(op, left, right));
            left = self.nodes.len() - 1;
        }
        Ok(left)
    }

    // term := factor (('*' | '/') factor)*
    fn term(&mut self, depth: usize) -> Result<usize, ExprError> {
        let mut left = self.factor(depth)?;
        loop {
            match self.peek() {
                Some(Tok::Op(op @ (Op::Mul | Op::Div))) => {
                    self.pos += 1;
                    let right = self.factor(depth)?;
                    self.nodes.push(Node::Bin(op, left, right));
                    left = self.nodes.len() - 1;
                }
                // An operand right after an operand: `2(3+4)`, `(1+2)(3)`, `2 3`.
                Some(Tok::Num(_) | Tok::LParen) => return Err(ExprError::ImplicitMultiplication),
                _ => return Ok(left),
            }
        }
    }

    // factor := NUMBER | '(' expr ')'
    fn factor(&mut self, depth: usize) -> Result<usize, ExprError> {
        match self.peek() {
            Some(Tok::Num(n)) => {
                self.pos += 1;
                self.nodes.push(Node::Num(n));
                Ok(self.nodes.len() - 1)
            }
            Some(Tok::LParen) => {
                if depth >= MAX_DEPTH {
                    return Err(ExprError::TooDeep);
                }
                self.pos += 1;
                let inner = self.expr(depth + 1)?;
                if self.peek() != Some(Tok::RParen) {
                    return Err(ExprError::Unparseable);
                }
                self.pos += 1;
                Ok(inner)
            }
            Some(Tok::Op(Op::Add | Op::Sub)) => Err(ExprError::UnaryOperator),
            _ => Err(ExprError::Unparseable),
        }
    }
}

/// Parses an expression of integers, + - * / and parentheses.
pub fn parse(text: &str) -> Result<Expr, ExprError> {
    if text.len() > MAX_EXPR_BYTES {
        return Err(ExprError::TooLong);
    }
    let toks = tokenize(text)?;
    if toks.is_empty() {
        return Err(ExprError::Empty);
    }
    let mut p = Parser {
        toks,
        pos: 0,
        nodes: Vec::new(),
    };
    p.expr(0)?;
    if p.pos != p.toks.len() {
        return Err(ExprError::Unparseable);
    }
    Ok(Expr { nodes: p.nodes })
}

/// Parses a canonical non-negative integer literal (no sign, no leading zero), as written in an
/// `= N` suffix.
pub fn parse_integer_literal(text: &str) -> Option<i128> {
    let t = text.trim();
    let canonical = !t.is_empty()
        && t.len() <= MAX_DIGITS
        && t.bytes().all(|b| b.is_ascii_digit())
        && !(t.len() > 1 && t.starts_with('0'));
    if canonical {
        t.parse().ok()
    } else {
        None
    }
}
