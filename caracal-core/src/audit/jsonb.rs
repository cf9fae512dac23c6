//! Native Postgres `jsonb` text output (`$1::jsonb::text`).
//!
//! The reference computes the audit content hash over JSON that went through Postgres
//! (`$n::jsonb::text`). To hash identically without a database round trip (the in-memory
//! backend, the offline verifier), this module reproduces that text byte for byte:
//!
//! - object keys sorted by byte length first, then bytewise; duplicate keys keep the last value;
//! - `", "` between elements and `": "` between key and value, no other whitespace;
//! - numbers printed as Postgres `numeric` prints them: the digits are kept exactly, the display
//!   scale is `max(0, digits after the point - exponent)` (`1e2` → `100`, `1.50` → `1.50`,
//!   `1E-2` → `0.01`, `-0` → `0`);
//! - strings with `\uXXXX` escapes decoded to UTF-8 and re-escaped as Postgres' `escape_json`
//!   does: `\"`, `\\`, `\b \f \n \r \t`, `\u00xx` (lowercase hex) for other control characters,
//!   everything else (including `/` and DEL) raw.
//!
//! Input Postgres refuses is refused here with a typed [`JsonbError`]: anything outside the JSON
//! grammar, the escape `\u0000` (jsonb cannot store NUL), unpaired surrogate escapes, and numbers
//! outside the `numeric` format (display scale above 16383, more than 131072 integer digits,
//! exponent magnitude of 2^30 - 1 or more). The vectors in
//! `tests/fixtures/audit/jsonb_vectors.json` were captured from a live Postgres and are
//! reproduced byte for byte by the tests.
//!
//! Nothing here recurses: parsing builds a flat token list and writing walks it with an explicit
//! stack, so hostile nesting cannot overflow the thread stack. Two explicit limits apply on top:
//! [`MAX_DEPTH`] nesting levels and [`MAX_OUTPUT_LEN`] bytes of output.

use std::borrow::Cow;
use std::fmt;

/// Deepest container nesting accepted.
///
/// Postgres has no fixed limit (it stops at `max_stack_depth`); with the default 2 MB it accepts
/// about 13,000 nested objects. 10,000 stays below that, so every document accepted here is
/// also accepted by a default-configured Postgres; deeper documents are refused with
/// [`JsonbErrorKind::TooDeep`].
pub const MAX_DEPTH: usize = 10_000;

/// Largest output accepted, in bytes.
///
/// `numeric` lets a 9-byte input such as `1e131071` print as 131,072 digits, so output can be
/// far larger than input. Postgres itself fails beyond 1 GB of text; this bound keeps hashing a
/// hostile event cheap. Exceeding it is [`JsonbErrorKind::TooLarge`].
pub const MAX_OUTPUT_LEN: usize = 64 * 1024 * 1024;

/// Largest `numeric` display scale (`NUMERIC_DSCALE_MAX`).
const MAX_DSCALE: i64 = 16_383;
/// Largest decimal exponent of a `numeric`'s leading digit: weight 32767 in base 10000.
const MAX_LEADING_EXPONENT: i64 = 131_071;
/// `numeric_in` refuses exponents whose magnitude reaches `INT_MAX / 2`.
const MAX_EXPONENT_MAGNITUDE: i64 = 1_073_741_823;

/// Why a document has no `jsonb` text form.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum JsonbErrorKind {
    /// Not JSON (Postgres: `invalid input syntax for type json`).
    Syntax,
    /// The bytes are not UTF-8.
    InvalidUtf8,
    /// The escape `\u0000` (Postgres: `unsupported Unicode escape sequence`).
    NulEscape,
    /// A surrogate escape without its partner.
    UnpairedSurrogate,
    /// A number outside the `numeric` format (Postgres: `value overflows numeric format`).
    NumericOverflow,
    /// Nested deeper than [`MAX_DEPTH`].
    TooDeep,
    /// The output would exceed [`MAX_OUTPUT_LEN`].
    TooLarge,
}

impl fmt::Display for JsonbErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Syntax => "invalid JSON syntax",
            Self::InvalidUtf8 => "invalid UTF-8",
            Self::NulEscape => "\\u0000 is not allowed in jsonb",
            Self::UnpairedSurrogate => "unpaired surrogate in a \\u escape",
            Self::NumericOverflow => "number overflows the numeric format",
            Self::TooDeep => "nesting exceeds the depth limit",
            Self::TooLarge => "output exceeds the size limit",
        })
    }
}

/// A document Postgres (or one of this module's limits) refuses, with the byte offset where the
/// problem was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{kind} at byte {offset}")]
pub struct JsonbError {
    kind: JsonbErrorKind,
    offset: usize,
}

impl JsonbError {
    fn new(kind: JsonbErrorKind, offset: usize) -> Self {
        Self { kind, offset }
    }

    /// What is wrong.
    pub fn kind(&self) -> JsonbErrorKind {
        self.kind
    }

    /// Byte offset into the input where it was detected.
    pub fn offset(&self) -> usize {
        self.offset
    }
}

/// The Postgres `jsonb` text form of `input` (what `input::jsonb::text` returns).
pub fn normalize(input: &str) -> Result<String, JsonbError> {
    let tokens = Parser::new(input).parse()?;
    let mut out = String::with_capacity(input.len());
    write_tokens(&tokens, &mut out)?;
    Ok(out)
}

/// [`normalize`] for bytes, which must be UTF-8 (Postgres checks the encoding first).
pub fn normalize_bytes(input: &[u8]) -> Result<String, JsonbError> {
    let text = std::str::from_utf8(input)
        .map_err(|e| JsonbError::new(JsonbErrorKind::InvalidUtf8, e.valid_up_to()))?;
    normalize(text)
}

/// A JSON number, already checked against the `numeric` limits.
#[derive(Debug)]
struct Number<'a> {
    negative: bool,
    /// Digits before the point (never empty).
    int: &'a str,
    /// Digits after the point (may be empty).
    frac: &'a str,
    /// The exponent, |exponent| < `MAX_EXPONENT_MAGNITUDE`.
    exponent: i64,
}

/// One token of the flat parse. Containers record where they end so a writer can skip them.
#[derive(Debug)]
enum Token<'a> {
    Null,
    True,
    False,
    Number(Number<'a>),
    String(Cow<'a, str>),
    /// `end` is the index one past the container's last token.
    Array {
        end: usize,
    },
    /// Children alternate key (`Token::String`) and value.
    Object {
        end: usize,
    },
}

/// Index of the token after the value starting at `index`.
fn next_sibling(tokens: &[Token<'_>], index: usize) -> usize {
    match tokens.get(index) {
        Some(Token::Array { end } | Token::Object { end }) => *end,
        _ => index + 1,
    }
}

/// What the parser expects next.
enum Step {
    Value,
    AfterValue,
}

struct Parser<'a> {
    src: &'a str,
    bytes: &'a [u8],
    pos: usize,
    tokens: Vec<Token<'a>>,
    /// Indices of the containers currently open.
    open: Vec<usize>,
}

impl<'a> Parser<'a> {
    fn new(src: &'a str) -> Self {
        Self {
            src,
            bytes: src.as_bytes(),
            pos: 0,
            tokens: Vec::new(),
            open: Vec::new(),
        }
    }

    fn err(&self, kind: JsonbErrorKind) -> JsonbError {
        JsonbError::new(kind, self.pos)
    }

    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }

    /// JSON whitespace only: Postgres does not accept form feed, BOM or other spaces.
    fn skip_ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.peek() {
            self.pos += 1;
        }
    }

    fn expect(&mut self, byte: u8) -> Result<(), JsonbError> {
        if self.peek() == Some(byte) {
            self.pos += 1;
            Ok(())
        } else {
            Err(self.err(JsonbErrorKind::Syntax))
        }
    }

    fn parse(mut self) -> Result<Vec<Token<'a>>, JsonbError> {
        let mut step = Step::Value;
        loop {
            step = match step {
                Step::Value => self.value()?,
                Step::AfterValue => match self.after_value()? {
                    Some(next) => next,
                    None => return Ok(self.tokens),
                },
            };
        }
    }

    /// Parse one value, or open a container.
    fn value(&mut self) -> Result<Step, JsonbError> {
        self.skip_ws();
        match self.peek() {
            Some(b'{') => self.open_container(true),
            Some(b'[') => self.open_container(false),
            Some(b'"') => {
                let text = self.string()?;
                self.tokens.push(Token::String(text));
                Ok(Step::AfterValue)
            }
            Some(b'-' | b'0'..=b'9') => {
                let number = self.number()?;
                self.tokens.push(Token::Number(number));
                Ok(Step::AfterValue)
            }
            Some(b't') => self.literal("true", Token::True),
            Some(b'f') => self.literal("false", Token::False),
            Some(b'n') => self.literal("null", Token::Null),
            _ => Err(self.err(JsonbErrorKind::Syntax)),
        }
    }

    fn literal(&mut self, word: &str, token: Token<'a>) -> Result<Step, JsonbError> {
        if self.bytes[self.pos..].starts_with(word.as_bytes()) {
            self.pos += word.len();
            self.tokens.push(token);
            Ok(Step::AfterValue)
        } else {
            Err(self.err(JsonbErrorKind::Syntax))
        }
    }

    fn open_container(&mut self, object: bool) -> Result<Step, JsonbError> {
        if self.open.len() >= MAX_DEPTH {
            return Err(self.err(JsonbErrorKind::TooDeep));
        }
        self.pos += 1;
        let index = self.tokens.len();
        // `end` is patched when the container closes.
        self.tokens.push(if object {
            Token::Object { end: 0 }
        } else {
            Token::Array { end: 0 }
        });
        self.open.push(index);
        self.skip_ws();
        match (object, self.peek()) {
            (true, Some(b'}')) | (false, Some(b']')) => {
                self.pos += 1;
                self.close();
                Ok(Step::AfterValue)
            }
            (true, _) => {
                self.member_key()?;
                Ok(Step::Value)
            }
            (false, _) => Ok(Step::Value),
        }
    }

    /// `"key" :` of an object member; the value follows.
    fn member_key(&mut self) -> Result<(), JsonbError> {
        self.skip_ws();
        if self.peek() != Some(b'"') {
            return Err(self.err(JsonbErrorKind::Syntax));
        }
        let key = self.string()?;
        self.tokens.push(Token::String(key));
        self.skip_ws();
        self.expect(b':')
    }

    fn close(&mut self) {
        let end = self.tokens.len();
        if let Some(index) = self.open.pop() {
            if let Some(Token::Array { end: e } | Token::Object { end: e }) =
                self.tokens.get_mut(index)
            {
                *e = end;
            }
        }
    }

    /// After a complete value: a separator, a closing bracket, or the end of input.
    /// Returns `None` when the document is complete.
    fn after_value(&mut self) -> Result<Option<Step>, JsonbError> {
        self.skip_ws();
        let Some(&top) = self.open.last() else {
            return if self.pos == self.bytes.len() {
                Ok(None)
            } else {
                Err(self.err(JsonbErrorKind::Syntax))
            };
        };
        let object = matches!(self.tokens.get(top), Some(Token::Object { .. }));
        match (object, self.peek()) {
            (_, Some(b',')) => {
                self.pos += 1;
                if object {
                    self.member_key()?;
                }
                Ok(Some(Step::Value))
            }
            (true, Some(b'}')) | (false, Some(b']')) => {
                self.pos += 1;
                self.close();
                Ok(Some(Step::AfterValue))
            }
            _ => Err(self.err(JsonbErrorKind::Syntax)),
        }
    }

    /// A string token starting at the opening quote, decoded.
    fn string(&mut self) -> Result<Cow<'a, str>, JsonbError> {
        self.pos += 1;
        let start = self.pos;
        // Fast path: no escapes, borrow the input.
        loop {
            match self.peek() {
                None => return Err(self.err(JsonbErrorKind::Syntax)),
                Some(b'"') => {
                    let text = &self.src[start..self.pos];
                    self.pos += 1;
                    return Ok(Cow::Borrowed(text));
                }
                Some(b'\\') => break,
                Some(b) if b < 0x20 => return Err(self.err(JsonbErrorKind::Syntax)),
                Some(_) => self.pos += 1,
            }
        }
        let mut out = String::from(&self.src[start..self.pos]);
        loop {
            let run_start = self.pos;
            while let Some(b) = self.peek() {
                if b == b'"' || b == b'\\' || b < 0x20 {
                    break;
                }
                self.pos += 1;
            }
            // INVARIANT: the run ends at an ASCII byte (or the end), so it is a char boundary.
            out.push_str(&self.src[run_start..self.pos]);
            match self.peek() {
                Some(b'"') => {
                    self.pos += 1;
                    return Ok(Cow::Owned(out));
                }
                Some(b'\\') => self.escape(&mut out)?,
                _ => return Err(self.err(JsonbErrorKind::Syntax)),
            }
        }
    }

    /// One escape sequence starting at the backslash, appended decoded.
    fn escape(&mut self, out: &mut String) -> Result<(), JsonbError> {
        self.pos += 1;
        let decoded = match self.peek() {
            Some(b'"') => '"',
            Some(b'\\') => '\\',
            Some(b'/') => '/',
            Some(b'b') => '\u{8}',
            Some(b'f') => '\u{c}',
            Some(b'n') => '\n',
            Some(b'r') => '\r',
            Some(b't') => '\t',
            Some(b'u') => {
                self.pos += 1;
                let c = self.unicode_escape()?;
                out.push(c);
                return Ok(());
            }
            _ => return Err(self.err(JsonbErrorKind::Syntax)),
        };
        self.pos += 1;
        out.push(decoded);
        Ok(())
    }

    /// The code point of `XXXX` (after `\u`), joining a surrogate pair.
    fn unicode_escape(&mut self) -> Result<char, JsonbError> {
        let at = self.pos;
        let first = self.hex4()?;
        let code = match first {
            0 => return Err(JsonbError::new(JsonbErrorKind::NulEscape, at)),
            0xD800..=0xDBFF => {
                if !self.bytes[self.pos..].starts_with(b"\\u") {
                    return Err(JsonbError::new(JsonbErrorKind::UnpairedSurrogate, at));
                }
                self.pos += 2;
                let low = self.hex4()?;
                if !(0xDC00..=0xDFFF).contains(&low) {
                    return Err(JsonbError::new(JsonbErrorKind::UnpairedSurrogate, at));
                }
                0x10000 + ((first - 0xD800) << 10) + (low - 0xDC00)
            }
            0xDC00..=0xDFFF => {
                return Err(JsonbError::new(JsonbErrorKind::UnpairedSurrogate, at));
            }
            other => other,
        };
        char::from_u32(code).ok_or(JsonbError::new(JsonbErrorKind::UnpairedSurrogate, at))
    }

    fn hex4(&mut self) -> Result<u32, JsonbError> {
        let mut value = 0u32;
        for _ in 0..4 {
            let digit = self
                .peek()
                .and_then(|b| char::from(b).to_digit(16))
                .ok_or(self.err(JsonbErrorKind::Syntax))?;
            value = value * 16 + digit;
            self.pos += 1;
        }
        Ok(value)
    }

    fn digits(&mut self) -> &'a str {
        let start = self.pos;
        while let Some(b'0'..=b'9') = self.peek() {
            self.pos += 1;
        }
        &self.src[start..self.pos]
    }

    /// `-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?`, checked against the `numeric` limits.
    fn number(&mut self) -> Result<Number<'a>, JsonbError> {
        let start = self.pos;
        let negative = self.peek() == Some(b'-');
        if negative {
            self.pos += 1;
        }
        let int = match self.peek() {
            Some(b'0') => {
                self.pos += 1;
                &self.src[self.pos - 1..self.pos]
            }
            Some(b'1'..=b'9') => self.digits(),
            _ => return Err(self.err(JsonbErrorKind::Syntax)),
        };
        let mut frac = "";
        if self.peek() == Some(b'.') {
            self.pos += 1;
            frac = self.digits();
            if frac.is_empty() {
                return Err(self.err(JsonbErrorKind::Syntax));
            }
        }
        let mut exponent = 0i64;
        if let Some(b'e' | b'E') = self.peek() {
            self.pos += 1;
            let exp_negative = match self.peek() {
                Some(b'-') => {
                    self.pos += 1;
                    true
                }
                Some(b'+') => {
                    self.pos += 1;
                    false
                }
                _ => false,
            };
            let digits = self.digits();
            if digits.is_empty() {
                return Err(self.err(JsonbErrorKind::Syntax));
            }
            // Saturating: anything this large is refused just below.
            let magnitude = digits.bytes().fold(0i64, |acc, d| {
                acc.saturating_mul(10).saturating_add(i64::from(d - b'0'))
            });
            if magnitude >= MAX_EXPONENT_MAGNITUDE {
                return Err(JsonbError::new(JsonbErrorKind::NumericOverflow, start));
            }
            exponent = if exp_negative { -magnitude } else { magnitude };
        }
        let number = Number {
            negative,
            int,
            frac,
            exponent,
        };
        check_numeric_range(&number).map_err(|kind| JsonbError::new(kind, start))?;
        Ok(number)
    }
}

/// Significant digits of a number: its integer and fraction digits as one sequence.
struct Digits<'a> {
    int: &'a str,
    frac: &'a str,
}

impl Digits<'_> {
    fn len(&self) -> usize {
        self.int.len() + self.frac.len()
    }

    /// Index of the first non-zero digit, if any.
    fn first_nonzero(&self) -> Option<usize> {
        self.int
            .bytes()
            .chain(self.frac.bytes())
            .position(|b| b != b'0')
    }

    /// Append digits `from..to` of the joined sequence.
    fn push_range(&self, out: &mut String, from: usize, to: usize) {
        let split = self.int.len();
        if from < split {
            out.push_str(&self.int[from..to.min(split)]);
        }
        if to > split {
            out.push_str(&self.frac[from.max(split) - split..to - split]);
        }
    }
}

/// `numeric` display scale: digits after the point minus the exponent, at least 0.
fn display_scale(n: &Number<'_>) -> i64 {
    (n.frac.len() as i64 - n.exponent).max(0)
}

/// The `numeric_in` limits: display scale at most 16383 and, for a non-zero value, a leading
/// digit at most at 10^131071 (weight 32767 in base 10000).
fn check_numeric_range(n: &Number<'_>) -> Result<(), JsonbErrorKind> {
    if display_scale(n) > MAX_DSCALE {
        return Err(JsonbErrorKind::NumericOverflow);
    }
    let digits = Digits {
        int: n.int,
        frac: n.frac,
    };
    if let Some(lead) = digits.first_nonzero() {
        let leading_exponent = n.int.len() as i64 - 1 - lead as i64 + n.exponent;
        if leading_exponent > MAX_LEADING_EXPONENT {
            return Err(JsonbErrorKind::NumericOverflow);
        }
    }
    Ok(())
}

fn push_zeros(out: &mut String, count: usize) {
    out.extend(std::iter::repeat_n('0', count));
}

/// Print as `numeric_out` does: exact digits, `display_scale` digits after the point, no
/// exponent, no negative zero.
fn write_number(n: &Number<'_>, out: &mut String) {
    let digits = Digits {
        int: n.int,
        frac: n.frac,
    };
    // INVARIANT: check_numeric_range bounded the scale (≤ 16383) and the integer digits
    // (≤ 131072), so the casts and zero runs below are small.
    let scale = display_scale(n) as usize;
    let Some(lead) = digits.first_nonzero() else {
        out.push('0');
        if scale > 0 {
            out.push('.');
            push_zeros(out, scale);
        }
        return;
    };
    if n.negative {
        out.push('-');
    }
    let total = digits.len();
    let significant = total - lead;
    // Value = significant digits × 10^shift.
    let shift = n.exponent - n.frac.len() as i64;
    if shift >= 0 {
        digits.push_range(out, lead, total);
        push_zeros(out, shift as usize);
    } else if significant > scale {
        let point = total - scale;
        digits.push_range(out, lead, point);
        out.push('.');
        digits.push_range(out, point, total);
    } else {
        out.push_str("0.");
        push_zeros(out, scale - significant);
        digits.push_range(out, lead, total);
    }
}

/// Append a string as Postgres' `escape_json` does.
fn write_string(text: &str, out: &mut String) {
    out.push('"');
    let mut run_start = 0;
    for (i, b) in text.bytes().enumerate() {
        let escaped = match b {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            0x08 => "\\b",
            0x0C => "\\f",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            b if b < 0x20 => "",
            _ => continue,
        };
        // INVARIANT: `i` indexes an ASCII byte, so slicing at it is a char boundary.
        out.push_str(&text[run_start..i]);
        if escaped.is_empty() {
            out.push_str("\\u00");
            out.push(hex_digit(b >> 4));
            out.push(hex_digit(b & 0xF));
        } else {
            out.push_str(escaped);
        }
        run_start = i + 1;
    }
    out.push_str(&text[run_start..]);
    out.push('"');
}

fn hex_digit(nibble: u8) -> char {
    char::from(b"0123456789abcdef"[usize::from(nibble & 0xF)])
}

/// An open container while writing.
enum Frame<'t> {
    Array {
        next: usize,
        end: usize,
        first: bool,
    },
    /// Members in output order: (key, index of the value token).
    Object {
        members: Vec<(&'t str, usize)>,
        next: usize,
    },
}

/// The members of the object at `index`, sorted as jsonb stores them (key length, then bytes),
/// with duplicate keys reduced to the last occurrence.
fn object_members<'t>(tokens: &'t [Token<'_>], index: usize, end: usize) -> Vec<(&'t str, usize)> {
    let mut members = Vec::new();
    let mut i = index + 1;
    while i < end {
        let key = match tokens.get(i) {
            Some(Token::String(key)) => key.as_ref(),
            _ => "",
        };
        members.push((key, i + 1));
        i = next_sibling(tokens, i + 1);
    }
    // Stable sort keeps equal keys in input order, so the last of each run is the last written.
    members.sort_by(|a, b| a.0.len().cmp(&b.0.len()).then_with(|| a.0.cmp(b.0)));
    let mut deduped: Vec<(&str, usize)> = Vec::with_capacity(members.len());
    for member in members {
        match deduped.last_mut() {
            Some(last) if last.0 == member.0 => *last = member,
            _ => deduped.push(member),
        }
    }
    deduped
}

/// Write one scalar, or open a container (pushing a frame).
fn write_token<'t>(
    tokens: &'t [Token<'_>],
    index: usize,
    out: &mut String,
    stack: &mut Vec<Frame<'t>>,
) {
    match tokens.get(index) {
        Some(Token::Null) | None => out.push_str("null"),
        Some(Token::True) => out.push_str("true"),
        Some(Token::False) => out.push_str("false"),
        Some(Token::Number(n)) => write_number(n, out),
        Some(Token::String(s)) => write_string(s, out),
        Some(Token::Array { end }) => {
            out.push('[');
            stack.push(Frame::Array {
                next: index + 1,
                end: *end,
                first: true,
            });
        }
        Some(Token::Object { end }) => {
            out.push('{');
            stack.push(Frame::Object {
                members: object_members(tokens, index, *end),
                next: 0,
            });
        }
    }
}

/// Write the parsed document without recursion.
fn write_tokens(tokens: &[Token<'_>], out: &mut String) -> Result<(), JsonbError> {
    let mut stack: Vec<Frame<'_>> = Vec::new();
    let mut pending = Some(0);
    loop {
        if let Some(index) = pending.take() {
            write_token(tokens, index, out, &mut stack);
        }
        // Overshoot is bounded by one token, so checking after each step is enough.
        if out.len() > MAX_OUTPUT_LEN {
            return Err(JsonbError::new(JsonbErrorKind::TooLarge, 0));
        }
        let Some(frame) = stack.last_mut() else {
            return Ok(());
        };
        match frame {
            Frame::Array { next, end, first } => {
                if *next >= *end {
                    out.push(']');
                    stack.pop();
                } else {
                    if !*first {
                        out.push_str(", ");
                    }
                    *first = false;
                    pending = Some(*next);
                    *next = next_sibling(tokens, *next);
                }
            }
            Frame::Object { members, next } => match members.get(*next) {
                None => {
                    out.push('}');
                    stack.pop();
                }
                Some(&(key, value)) => {
                    if *next > 0 {
                        out.push_str(", ");
                    }
                    write_string(key, out);
                    out.push_str(": ");
                    pending = Some(value);
                    *next += 1;
                }
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(input: &str) -> String {
        normalize(input).unwrap()
    }

    fn kind(input: &str) -> JsonbErrorKind {
        normalize(input).unwrap_err().kind()
    }

    #[test]
    fn reference_example() {
        assert_eq!(
            n(r#"{"trace_id":"x","resource":"r","a":1.50,"b":1e2}"#),
            r#"{"a": 1.50, "b": 100, "resource": "r", "trace_id": "x"}"#
        );
    }

    #[test]
    fn numbers_print_as_numeric() {
        for (input, want) in [
            ("1e2", "100"),
            ("1.50", "1.50"),
            ("1.5e1", "15"),
            ("-0", "0"),
            ("-0.0", "0.0"),
            ("1E-2", "0.01"),
            ("0.00", "0.00"),
            ("1.0e-2", "0.010"),
            ("0e5", "0"),
            ("0e-5", "0.00000"),
            ("100e-2", "1.00"),
            ("1.5E+3", "1500"),
            ("-1e-3", "-0.001"),
            ("0.5e3", "500"),
            ("-12.345e1", "-123.45"),
            (
                "123456789012345678901234567890.123456789e-5",
                "1234567890123456789012345.67890123456789",
            ),
        ] {
            assert_eq!(n(input), want, "{input}");
        }
    }

    #[test]
    fn numeric_limits_match_postgres() {
        assert_eq!(n("1e-16383").len(), 16385);
        assert_eq!(n("1e131071").len(), 131_072);
        assert_eq!(n("0e1073741822"), "0");
        for input in [
            "1e-16384",
            "0e-16384",
            "0.0e-16383",
            "1e131072",
            "1e-131072",
            "1e1073741823",
            "0e1073741823",
            "1e99999999999999999999",
        ] {
            assert_eq!(kind(input), JsonbErrorKind::NumericOverflow, "{input}");
        }
    }

    #[test]
    fn strings_are_decoded_and_reescaped() {
        assert_eq!(n(r#""\u0041\/""#), r#""A/""#);
        assert_eq!(n(r#""\ud83d\ude00""#), "\"\u{1F600}\"");
        assert_eq!(
            n(r#""\b\f\n\r\t\u001F\u0001\u007f\"\\""#),
            "\"\\b\\f\\n\\r\\t\\u001f\\u0001\u{7f}\\\"\\\\\""
        );
        assert_eq!(kind(r#""\u0000""#), JsonbErrorKind::NulEscape);
        assert_eq!(kind(r#""\ud800""#), JsonbErrorKind::UnpairedSurrogate);
        assert_eq!(kind(r#""\udc00""#), JsonbErrorKind::UnpairedSurrogate);
        assert_eq!(kind(r#""\ud83d\u0041""#), JsonbErrorKind::UnpairedSurrogate);
        assert_eq!(kind("\"a\nb\""), JsonbErrorKind::Syntax);
    }

    #[test]
    fn keys_sort_by_length_then_bytes_and_last_duplicate_wins() {
        assert_eq!(
            n(r#"{"b":1,"\u0061":2, "é":3, "ab":4, "z":5, "b":6}"#),
            r#"{"a": 2, "b": 6, "z": 5, "ab": 4, "é": 3}"#
        );
        assert_eq!(
            n(r#"{"a" : [ 1 , {"x":{} } , [] ] }"#),
            r#"{"a": [1, {"x": {}}, []]}"#
        );
    }

    #[test]
    fn grammar_errors() {
        for input in [
            "",
            " ",
            "01",
            "-01",
            "1.",
            ".5",
            "+1",
            "1e",
            "1e+",
            "-",
            "NaN",
            "True",
            "[1,]",
            "[1 2]",
            "{\"a\" 1}",
            "{1:2}",
            "[",
            "\"abc",
            "\u{feff}1",
            "\u{c}1",
            "[1] x",
            "truex",
            "{\"a\":1,}",
            "\"\\x\"",
            "\"\\u00\"",
        ] {
            assert_eq!(kind(input), JsonbErrorKind::Syntax, "{input:?}");
        }
        assert_eq!(
            normalize_bytes(b"\"\xff\"").unwrap_err().kind(),
            JsonbErrorKind::InvalidUtf8
        );
    }

    #[test]
    fn depth_is_bounded_without_recursion() {
        let ok = format!("{}{}", "[".repeat(MAX_DEPTH), "]".repeat(MAX_DEPTH));
        assert_eq!(n(&ok), ok);
        let deep = format!("{}{}", "[".repeat(MAX_DEPTH + 1), "]".repeat(MAX_DEPTH + 1));
        assert_eq!(kind(&deep), JsonbErrorKind::TooDeep);
        let huge = "[".repeat(1_000_000);
        assert_eq!(kind(&huge), JsonbErrorKind::TooDeep);
    }

    #[test]
    fn output_is_bounded() {
        let bomb = format!("[{}]", vec!["1e131071"; 600].join(","));
        assert_eq!(kind(&bomb), JsonbErrorKind::TooLarge);
    }
}
