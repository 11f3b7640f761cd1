//! The Prometheus text exposition format 0.0.4, one sample line at a time.
//!
//! Grammar accepted (a line ends at `\n`, `\r\n`, or the end of the input):
//! ```text
//! line     = ws* ( "#" comment | sample )? ws*
//! comment  = ws* "HELP" (ws+ (name (ws+ help-text)?)?)?    help text is not checked
//!          | ws* "TYPE" (ws+ (name (ws+ type ws*)?)?)?
//!          | anything else                                   an ordinary comment
//! type     = "counter" | "gauge" | "histogram" | "summary" | "untyped"
//! sample   = name ws* ("{" labels "}" ws*)? value (ws+ timestamp)?
//!            (whitespace is required between a bare name and its value)
//! labels   = ws* (label ws* ("," ws* label ws*)* ","?)? ws*
//! label    = label-name ws* "=" ws* '"' (escape | any char but \ " newline)* '"'
//! escape   = \\ | \" | \n
//! name     = [a-zA-Z_:][a-zA-Z0-9_:]*      label-name = [a-zA-Z_][a-zA-Z0-9_]*
//! value    = Go float (see gofloat)        timestamp  = Go int64, milliseconds
//! ws       = " " | "\t"
//! ```
//! Nothing is allocated per line: samples borrow from the input and label values
//! stay escaped until a caller decides to keep them.

use super::gofloat::{parse_f64, parse_i64};
use super::ParseError;

/// Longest line accepted, in bytes. Real kubelet lines are a few hundred bytes;
/// the bound keeps a garbage payload from being parsed as one giant sample.
pub const MAX_LINE_BYTES: usize = 64 * 1024;

const NAME_START: u8 = 1;
const NAME_CHAR: u8 = 2;
const LABEL_START: u8 = 4;
const LABEL_CHAR: u8 = 8;

/// Character classes for metric and label names, one lookup per byte.
static CLASS: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut c = 0;
    while c < 256 {
        let b = c as u8;
        let alpha = b.is_ascii_alphabetic() || b == b'_';
        let mut v = 0;
        if alpha || b == b':' {
            v |= NAME_START | NAME_CHAR;
        }
        if b.is_ascii_digit() {
            v |= NAME_CHAR | LABEL_CHAR;
        }
        if alpha {
            v |= LABEL_START | LABEL_CHAR;
        }
        t[c] = v;
        c += 1;
    }
    t
};

/// A label value as written: `raw` is the text between the quotes, still escaped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct LabelValue<'a> {
    pub raw: &'a str,
    pub escaped: bool,
}

impl LabelValue<'_> {
    /// The value with `\\`, `\"` and `\n` resolved (the grammar allows no others).
    pub fn decode(&self) -> String {
        if !self.escaped {
            return self.raw.to_owned();
        }
        let mut out = String::with_capacity(self.raw.len());
        let mut chars = self.raw.chars();
        while let Some(c) = chars.next() {
            if c == '\\' {
                match chars.next() {
                    Some('n') => out.push('\n'),
                    Some(other) => out.push(other),
                    None => {}
                }
            } else {
                out.push(c);
            }
        }
        out
    }
}

/// The labels the decoder keeps.
#[derive(Clone, Copy)]
enum Known {
    Namespace,
    Pod,
    Container,
    Other,
}

/// One sample line. The three labels the decoder needs are picked out as the
/// line is scanned; all other labels are checked and dropped.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Sample<'a> {
    pub name: &'a [u8],
    /// Same metric name as the previous sample (lets the caller skip its lookup).
    pub repeated_name: bool,
    pub namespace: Option<LabelValue<'a>>,
    pub pod: Option<LabelValue<'a>>,
    pub container: Option<LabelValue<'a>>,
    pub value: f64,
    pub timestamp_ms: Option<i64>,
}

/// Walks the input line by line, yielding samples and checking everything else.
pub(crate) struct Lines<'a> {
    text: &'a str,
    b: &'a [u8],
    pos: usize,
    /// 1-based number of the line being read.
    line: usize,
    line_start: usize,
    /// The previous sample's name: families come in runs, so comparing against
    /// it replaces the per-byte name check on most lines.
    prev_name: &'a [u8],
}

type Result<T> = std::result::Result<T, ParseError>;

impl<'a> Lines<'a> {
    pub fn new(text: &'a str) -> Self {
        Lines {
            text,
            b: text.as_bytes(),
            pos: 0,
            line: 0,
            line_start: 0,
            prev_name: b"",
        }
    }

    /// The next sample, `None` at the end of the input, or the first syntax error.
    pub fn next_sample(&mut self) -> Result<Option<Sample<'a>>> {
        while self.pos < self.b.len() {
            self.line += 1;
            self.line_start = self.pos;
            self.skip_ws();
            match self.peek() {
                Some(b'#') => {
                    self.pos += 1;
                    self.comment()?;
                }
                Some(_) if !self.at_eol() => return self.sample().map(Some),
                _ => self.end_line()?,
            }
        }
        Ok(None)
    }

    // ---- lines -------------------------------------------------------------

    fn sample(&mut self) -> Result<Sample<'a>> {
        let rest = self.b.get(self.pos..).unwrap_or_default();
        let n = self.prev_name.len();
        let repeated_name = n > 0
            && rest.get(..n) == Some(self.prev_name)
            && rest
                .get(n)
                .is_none_or(|&c| CLASS[c as usize] & NAME_CHAR == 0);
        let name = if repeated_name {
            self.pos += n;
            self.prev_name
        } else {
            let name = self.metric_name();
            if name.is_empty() {
                return Err(self.unexpected("a metric name"));
            }
            self.prev_name = name;
            name
        };
        let mut sample = Sample {
            name,
            repeated_name,
            namespace: None,
            pod: None,
            container: None,
            value: 0.0,
            timestamp_ms: None,
        };
        let mut separated = self.skip_ws();
        if self.peek() == Some(b'{') {
            self.pos += 1;
            self.labels(&mut sample)?;
            self.skip_ws();
            separated = true;
        }
        if self.at_eol() {
            return Err(self.err(format!("missing value for {}", lossy(name))));
        }
        if !separated {
            return Err(self.unexpected("a space after the metric name"));
        }

        let rest = self.b.get(self.pos..).unwrap_or_default();
        sample.value = match fast_f64(rest) {
            Some((v, len)) => {
                self.pos += len;
                v
            }
            None => {
                let tok = self.token();
                match parse_f64(tok) {
                    Some(v) => v,
                    None => return Err(self.err(format!("invalid value {}", snippet(tok)))),
                }
            }
        };
        let separated = self.skip_ws();
        if !self.at_eol() {
            if !separated {
                return Err(self.unexpected("a space or the end of the line after the value"));
            }
            let rest = self.b.get(self.pos..).unwrap_or_default();
            sample.timestamp_ms = match fast_i64(rest) {
                Some((t, len)) => {
                    self.pos += len;
                    Some(t)
                }
                None => {
                    let tok = self.token();
                    match parse_i64(tok) {
                        Some(t) => Some(t),
                        None => return Err(self.err(format!("invalid timestamp {}", snippet(tok)))),
                    }
                }
            };
            self.skip_ws();
            if !self.at_eol() {
                return Err(self.unexpected("the end of the line after the timestamp"));
            }
        }
        self.end_line()?;
        Ok(sample)
    }

    /// After `{`: labels up to and including `}`.
    fn labels(&mut self, sample: &mut Sample<'a>) -> Result<()> {
        loop {
            self.skip_ws();
            let rest = self.b.get(self.pos..).unwrap_or_default();
            // The labels kubelets write, matched with their `="` in one compare.
            let (label, known): (&[u8], _) = match rest.first() {
                Some(b'}') => {
                    self.pos += 1;
                    return Ok(());
                }
                Some(b'c') if rest.first_chunk() == Some(b"container=\"") => {
                    self.pos += 11;
                    (b"container", Known::Container)
                }
                Some(b'n') if rest.first_chunk() == Some(b"namespace=\"") => {
                    self.pos += 11;
                    (b"namespace", Known::Namespace)
                }
                Some(b'p') if rest.first_chunk() == Some(b"pod=\"") => {
                    self.pos += 5;
                    (b"pod", Known::Pod)
                }
                _ => self.label_name_to_quote()?,
            };
            let value = self.label_value(label)?;
            let slot = match known {
                Known::Namespace => &mut sample.namespace,
                Known::Pod => &mut sample.pod,
                Known::Container => &mut sample.container,
                Known::Other => &mut None,
            };
            if slot.is_some() {
                return Err(self.err(format!("duplicate label {}", lossy(label))));
            }
            *slot = Some(value);
            if self.peek() != Some(b',') && self.peek() != Some(b'}') {
                self.skip_ws();
            }
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(b'}') => {
                    self.pos += 1;
                    return Ok(());
                }
                _ if self.at_eol() => {
                    return Err(self.err("unterminated label set (missing '}')".into()))
                }
                _ => return Err(self.unexpected("',' or '}' after a label value")),
            }
        }
    }

    /// The general form of a label's start: name, `=`, `"`, with optional
    /// whitespace between them; consumed up to and including the quote.
    fn label_name_to_quote(&mut self) -> Result<(&'a [u8], Known)> {
        let label = self.label_name();
        if label.is_empty() {
            return Err(if self.at_eol() {
                self.err("unterminated label set (missing '}')".into())
            } else {
                self.unexpected("a label name or '}'")
            });
        }
        if label == b"__name__" {
            return Err(self.err("label name __name__ is reserved".into()));
        }
        self.skip_ws();
        if self.peek() != Some(b'=') {
            let what = format!("'=' after label name {}", lossy(label));
            return Err(self.unexpected(&what));
        }
        self.pos += 1;
        self.skip_ws();
        if self.peek() != Some(b'"') {
            let what = format!("'\"' to open the value of label {}", lossy(label));
            return Err(self.unexpected(&what));
        }
        self.pos += 1;
        let known = match label {
            b"namespace" => Known::Namespace,
            b"pod" => Known::Pod,
            b"container" => Known::Container,
            _ => Known::Other,
        };
        Ok((label, known))
    }

    /// After the opening quote: the raw value up to the closing quote, consumed.
    fn label_value(&mut self, label: &[u8]) -> Result<LabelValue<'a>> {
        let start = self.pos;
        let mut escaped = false;
        loop {
            self.pos += find_quote_backslash_newline(self.b.get(self.pos..).unwrap_or_default());
            match self.peek() {
                Some(b'"') => break,
                Some(b'\\') => {
                    match self.b.get(self.pos + 1) {
                        Some(b'\\' | b'"' | b'n') => {}
                        Some(b'\n') | None => return Err(self.unterminated(label)),
                        Some(_) => {
                            let seq = self.b.get(self.pos + 1..).unwrap_or_default();
                            let seq = lossy(seq).chars().next().unwrap_or_default();
                            return Err(self.err(format!(
                                "invalid escape sequence '\\{}' in the value of label {}",
                                seq.escape_debug(),
                                lossy(label)
                            )));
                        }
                    }
                    escaped = true;
                    self.pos += 2;
                }
                _ => return Err(self.unterminated(label)), // a newline or the end
            }
        }
        // Both ends sit next to an ASCII quote, so they are char boundaries.
        let Some(raw) = self.text.get(start..self.pos) else {
            return Err(self.err("label value is not UTF-8".into()));
        };
        self.pos += 1;
        Ok(LabelValue { raw, escaped })
    }

    fn unterminated(&self, label: &[u8]) -> ParseError {
        self.err(format!("unterminated value of label {}", lossy(label)))
    }

    /// After `#`: the metric name of HELP and TYPE lines and the type are
    /// checked (as Go's parser does); other comments and help text are skipped.
    fn comment(&mut self) -> Result<()> {
        self.skip_ws();
        let keyword = self.token();
        if keyword != b"HELP" && keyword != b"TYPE" {
            return self.skip_line();
        }
        self.skip_ws();
        if self.at_eol() {
            return self.end_line(); // "# HELP" alone: not an error in Go's parser either
        }
        let name = self.metric_name();
        if self.at_eol() {
            return self.end_line();
        }
        if !self.skip_ws() {
            let keyword = lossy(keyword);
            return Err(self.err(format!("invalid metric name in # {keyword} line")));
        }
        if keyword == b"HELP" {
            return self.skip_line();
        }
        let kind = self.token();
        if !matches!(
            kind,
            b"counter" | b"gauge" | b"histogram" | b"summary" | b"untyped"
        ) {
            let (kind, name) = (snippet(kind), lossy(name));
            return Err(self.err(format!("unknown metric type {kind} for {name}")));
        }
        self.skip_ws();
        if !self.at_eol() {
            return Err(self.unexpected("the end of the line after the metric type"));
        }
        self.end_line()
    }

    fn skip_line(&mut self) -> Result<()> {
        let rest = &self.b[self.pos..];
        self.pos += rest.iter().position(|&c| c == b'\n').unwrap_or(rest.len());
        self.end_line()
    }

    /// Consumes the line break (if any) and checks the line's length.
    fn end_line(&mut self) -> Result<()> {
        if self.pos - self.line_start > MAX_LINE_BYTES {
            return Err(self.err(String::new())); // err() words it
        }
        match self.peek() {
            Some(b'\n') => self.pos += 1,
            Some(b'\r') if self.at_eol() => self.pos = (self.pos + 2).min(self.b.len()),
            None => {}
            // Only reachable through a bare '\r' in the middle of a line.
            Some(_) => return Err(self.unexpected("the end of the line")),
        }
        Ok(())
    }

    // ---- tokens ------------------------------------------------------------

    #[inline(always)]
    fn peek(&self) -> Option<u8> {
        self.b.get(self.pos).copied()
    }

    /// True at `\n`, `\r\n`, a final `\r`, or the end of the input.
    #[inline(always)]
    fn at_eol(&self) -> bool {
        match self.b.get(self.pos) {
            None | Some(b'\n') => true,
            Some(b'\r') => matches!(self.b.get(self.pos + 1), None | Some(b'\n')),
            Some(_) => false,
        }
    }

    /// Skips spaces and tabs; true if there were any.
    #[inline(always)]
    fn skip_ws(&mut self) -> bool {
        let start = self.pos;
        while let Some(b' ' | b'\t') = self.b.get(self.pos) {
            self.pos += 1;
        }
        self.pos != start
    }

    /// A run of bytes up to whitespace or a line break.
    #[inline(always)]
    fn token(&mut self) -> &'a [u8] {
        let start = self.pos;
        while let Some(&c) = self.b.get(self.pos) {
            if matches!(c, b' ' | b'\t' | b'\n' | b'\r') {
                break;
            }
            self.pos += 1;
        }
        self.slice(start, self.pos)
    }

    #[inline(always)]
    fn metric_name(&mut self) -> &'a [u8] {
        self.class_run(NAME_START, NAME_CHAR)
    }

    #[inline(always)]
    fn label_name(&mut self) -> &'a [u8] {
        self.class_run(LABEL_START, LABEL_CHAR)
    }

    #[inline(always)]
    fn class_run(&mut self, first: u8, rest: u8) -> &'a [u8] {
        let start = self.pos;
        match self.b.get(self.pos) {
            Some(&c) if CLASS[c as usize] & first != 0 => self.pos += 1,
            _ => return b"",
        }
        while let Some(&c) = self.b.get(self.pos) {
            if CLASS[c as usize] & rest == 0 {
                break;
            }
            self.pos += 1;
        }
        self.slice(start, self.pos)
    }

    #[inline(always)]
    fn slice(&self, start: usize, end: usize) -> &'a [u8] {
        self.b.get(start..end).unwrap_or_default()
    }

    // ---- errors ------------------------------------------------------------

    fn unexpected(&self, expected: &str) -> ParseError {
        let rest = self.b.get(self.pos..).unwrap_or_default();
        let found = match lossy(rest.get(..4).unwrap_or(rest)).chars().next() {
            None => "the end of the input".to_string(),
            Some(c) => format!("{:?}", c),
        };
        self.err(format!("expected {expected}, found {found}"))
    }

    /// An error on the current line. A line over the length bound is reported as
    /// that, whatever else is wrong with it: it is the more useful message.
    fn err(&self, message: String) -> ParseError {
        let rest = &self.b[self.line_start.min(self.b.len())..];
        let len = rest.iter().position(|&c| c == b'\n').unwrap_or(rest.len());
        if len > MAX_LINE_BYTES {
            return ParseError {
                line: self.line,
                message: format!("line too long ({len} bytes; the limit is {MAX_LINE_BYTES})"),
            };
        }
        ParseError {
            line: self.line,
            message,
        }
    }
}

/// Fast path for a value: plain decimal digits with at most 19 significant
/// digits and a small exponent, ended by whitespace or a line break. `None`
/// sends the caller to the full parser, which also words the errors.
#[inline(always)]
fn fast_f64(b: &[u8]) -> Option<(f64, usize)> {
    const POW10: [f64; 23] = [
        1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16,
        1e17, 1e18, 1e19, 1e20, 1e21, 1e22,
    ];
    let mut i = 0;
    let mut mantissa: u64 = 0;
    let mut digits = 0u32;
    while let Some(&c) = b.get(i) {
        let d = c.wrapping_sub(b'0');
        if d > 9 {
            break;
        }
        mantissa = mantissa.wrapping_mul(10).wrapping_add(u64::from(d));
        digits += 1;
        i += 1;
    }
    let mut scale: i32 = 0;
    if b.get(i) == Some(&b'.') {
        i += 1;
        while let Some(&c) = b.get(i) {
            let d = c.wrapping_sub(b'0');
            if d > 9 {
                break;
            }
            mantissa = mantissa.wrapping_mul(10).wrapping_add(u64::from(d));
            digits += 1;
            scale -= 1;
            i += 1;
        }
    }
    if digits == 0 || digits > 19 {
        return None;
    }
    if let Some(b'e' | b'E') = b.get(i) {
        i += 1;
        let negative = match b.get(i) {
            Some(b'-') => {
                i += 1;
                true
            }
            Some(b'+') => {
                i += 1;
                false
            }
            _ => false,
        };
        let start = i;
        let mut e: i32 = 0;
        while let Some(&c) = b.get(i) {
            let d = c.wrapping_sub(b'0');
            if d > 9 || i - start >= 4 {
                break;
            }
            e = e * 10 + i32::from(d);
            i += 1;
        }
        if i == start {
            return None;
        }
        scale += if negative { -e } else { e };
    }
    if !matches!(b.get(i), None | Some(b' ' | b'\t' | b'\n' | b'\r')) {
        return None;
    }
    if mantissa > 1 << 53 || !(-22..=22).contains(&scale) {
        return None;
    }
    // Clinger: exact operands, one correctly rounded operation.
    let m = mantissa as f64;
    let v = if scale >= 0 {
        m * POW10[scale as usize]
    } else {
        m / POW10[(-scale) as usize]
    };
    Some((v, i))
}

/// Fast path for a timestamp: an optional `-` and at most 18 digits (which
/// cannot overflow), ended by whitespace or a line break.
#[inline(always)]
fn fast_i64(b: &[u8]) -> Option<(i64, usize)> {
    let negative = b.first() == Some(&b'-');
    let mut i = usize::from(negative);
    let mut v: i64 = 0;
    while let Some(&c) = b.get(i) {
        let d = c.wrapping_sub(b'0');
        if d > 9 {
            break;
        }
        if i - usize::from(negative) >= 18 {
            return None; // 18 digits (plus a sign) at most: no overflow possible
        }
        v = v * 10 + i64::from(d);
        i += 1;
    }
    if i == usize::from(negative) || !matches!(b.get(i), None | Some(b' ' | b'\t' | b'\n' | b'\r'))
    {
        return None;
    }
    Some((if negative { -v } else { v }, i))
}

/// Bytes for an error message.
fn lossy(b: &[u8]) -> std::borrow::Cow<'_, str> {
    String::from_utf8_lossy(b)
}

/// A token quoted for an error message, cut short if long.
fn snippet(tok: &[u8]) -> String {
    const MAX: usize = 40;
    let tok = lossy(tok);
    match tok.char_indices().nth(MAX) {
        Some((cut, _)) => format!("{:?}…", &tok[..cut]),
        None if tok.is_empty() => "(empty)".to_string(),
        None => format!("{tok:?}"),
    }
}

/// Index of the first `"`, `\\` or `\n` in `hay`, or its length: eight bytes at
/// a time, since label values are most of a kubelet payload's bytes.
#[inline]
fn find_quote_backslash_newline(hay: &[u8]) -> usize {
    const LO: u64 = 0x0101_0101_0101_0101;
    const HI: u64 = 0x8080_8080_8080_8080;
    #[inline(always)]
    fn zero_bytes(v: u64) -> u64 {
        // High bit set in each zero byte of `v`; a false positive can only sit
        // above a true one, so the lowest set bit is exact.
        v.wrapping_sub(LO) & !v & HI
    }
    let mut chunks = hay.chunks_exact(8);
    let mut offset = 0;
    for chunk in &mut chunks {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        let v = u64::from_le_bytes(word);
        let hits = zero_bytes(v ^ (LO * u64::from(b'"')))
            | zero_bytes(v ^ (LO * u64::from(b'\\')))
            | zero_bytes(v ^ (LO * u64::from(b'\n')));
        if hits != 0 {
            return offset + (hits.trailing_zeros() / 8) as usize;
        }
        offset += 8;
    }
    let tail = chunks.remainder();
    offset
        + tail
            .iter()
            .position(|&c| matches!(c, b'"' | b'\\' | b'\n'))
            .unwrap_or(tail.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn xorshift(x: &mut u64) -> u64 {
        *x ^= *x << 13;
        *x ^= *x >> 7;
        *x ^= *x << 17;
        *x
    }

    #[test]
    fn number_fast_paths_agree_with_the_full_parsers() {
        let mut x = 0x2545_f491_4f6c_dd1d_u64;
        let fixed = [
            "0",
            "-0",
            "1",
            "5.",
            ".5",
            "1e5",
            "1E-5",
            "4.710169",
            "1.253376e+07",
            "1e-05",
            "9007199254740993",
            "18446744073709551615",
            "99999999999999999999",
            "1e22",
            "1e23",
            "123.456e-20",
            "0.000000000000000000001",
            "1.5e+",
            "1.2.3",
            "+1",
            "-",
            ".",
            "e1",
            "1.7479872104912598e+09",
            "1e99999",
            "12a",
            "1_0",
        ];
        let mut tokens: Vec<String> = fixed.iter().map(|s| s.to_string()).collect();
        for _ in 0..20_000 {
            let r = xorshift(&mut x);
            let m = r % 10u64.pow((r >> 60) as u32 % 19 + 1);
            let e = (r >> 40) as i64 % 30 - 15;
            tokens.push(match r % 4 {
                0 => format!("{m}"),
                1 => format!("{m}e{e}"),
                2 => format!("{}.{}", m / 1000, m % 1000),
                _ => format!("-{m}"),
            });
        }
        for tok in &tokens {
            for end in ["", " ", "\t", "\n", "\r\n", " 123"] {
                let input = format!("{tok}{end}");
                if let Some((v, len)) = fast_f64(input.as_bytes()) {
                    assert_eq!(len, tok.len(), "{input:?}");
                    let want = parse_f64(tok.as_bytes()).expect("fast path accepted it");
                    assert_eq!(v.to_bits(), want.to_bits(), "{input:?}");
                }
                if let Some((v, len)) = fast_i64(input.as_bytes()) {
                    assert_eq!(len, tok.len(), "{input:?}");
                    assert_eq!(Some(v), parse_i64(tok.as_bytes()), "{input:?}");
                }
            }
            // The fast paths must refuse what is not followed by a delimiter.
            let glued = format!("{tok}x");
            assert!(fast_f64(glued.as_bytes()).is_none());
            assert!(fast_i64(glued.as_bytes()).is_none());
        }
        // And they take the common kubelet forms themselves.
        assert_eq!(fast_f64(b"4.710169 1"), Some((4.710169, 8)));
        assert_eq!(fast_i64(b"1633253812125\n"), Some((1_633_253_812_125, 13)));
        assert_eq!(fast_i64(b"-5"), Some((-5, 2)));
    }

    #[test]
    fn special_byte_search_matches_a_plain_scan() {
        let mut x = 0x9e37_79b9_7f4a_7c15_u64;
        let alphabet = b"ab\"\\\nxyz-_.\xc3\xa9";
        for len in 0..80 {
            for _ in 0..50 {
                let hay: Vec<u8> = (0..len)
                    .map(|_| alphabet[(xorshift(&mut x) % alphabet.len() as u64) as usize])
                    .collect();
                let want = hay.iter().position(|&c| matches!(c, b'"' | b'\\' | b'\n'));
                assert_eq!(
                    find_quote_backslash_newline(&hay),
                    want.unwrap_or(len),
                    "{hay:?}"
                );
            }
        }
    }

    #[test]
    fn labels_decode_their_escapes() {
        let v = LabelValue {
            raw: r#"a\\b\"c\nd"#,
            escaped: true,
        };
        assert_eq!(v.decode(), "a\\b\"c\nd");
        let v = LabelValue {
            raw: "plain ü",
            escaped: false,
        };
        assert_eq!(v.decode(), "plain ü");
    }
}
