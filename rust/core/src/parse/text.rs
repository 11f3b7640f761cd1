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
use std::borrow::Cow;

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

impl<'a> LabelValue<'a> {
    /// The value with `\\`, `\"` and `\n` resolved (the grammar allows no others).
    pub fn decode(&self) -> Cow<'a, str> {
        if !self.escaped {
            return Cow::Borrowed(self.raw);
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
        Cow::Owned(out)
    }
}

/// One sample line. The three labels the decoder needs are picked out as the
/// line is scanned; all other labels are checked and dropped.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Sample<'a> {
    pub name: &'a str,
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
        let name = self.metric_name();
        if name.is_empty() {
            return Err(self.unexpected("a metric name"));
        }
        let mut sample = Sample {
            name,
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
            return Err(self.err(format!("missing value for {name}")));
        }
        if !separated {
            return Err(self.unexpected("a space after the metric name"));
        }

        let tok = self.token();
        sample.value = match parse_f64(tok) {
            Some(v) => v,
            None => return Err(self.err(format!("invalid value {}", snippet(tok)))),
        };
        let separated = self.skip_ws();
        if !self.at_eol() {
            if !separated {
                return Err(self.unexpected("a space or the end of the line after the value"));
            }
            let tok = self.token();
            sample.timestamp_ms = match parse_i64(tok) {
                Some(t) => Some(t),
                None => return Err(self.err(format!("invalid timestamp {}", snippet(tok)))),
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
            if self.peek() == Some(b'}') {
                self.pos += 1;
                return Ok(());
            }
            let label = self.label_name();
            if label.is_empty() {
                return Err(if self.at_eol() {
                    self.err("unterminated label set (missing '}')".into())
                } else {
                    self.unexpected("a label name or '}'")
                });
            }
            if label == "__name__" {
                return Err(self.err("label name __name__ is reserved".into()));
            }
            self.skip_ws();
            if self.peek() != Some(b'=') {
                return Err(self.unexpected(&format!("'=' after label name {label}")));
            }
            self.pos += 1;
            self.skip_ws();
            if self.peek() != Some(b'"') {
                return Err(self.unexpected(&format!("'\"' to open the value of label {label}")));
            }
            self.pos += 1;
            let value = self.label_value(label)?;
            let slot = match label {
                "namespace" => Some(&mut sample.namespace),
                "pod" => Some(&mut sample.pod),
                "container" => Some(&mut sample.container),
                _ => None,
            };
            if let Some(slot) = slot {
                if slot.is_some() {
                    return Err(self.err(format!("duplicate label {label}")));
                }
                *slot = Some(value);
            }
            self.skip_ws();
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

    /// After the opening quote: the raw value up to the closing quote, consumed.
    fn label_value(&mut self, label: &str) -> Result<LabelValue<'a>> {
        let start = self.pos;
        let mut escaped = false;
        loop {
            match self.b.get(self.pos) {
                Some(b'"') => break,
                Some(b'\\') => {
                    match self.b.get(self.pos + 1) {
                        Some(b'\\' | b'"' | b'n') => {}
                        Some(b'\n') | None => {
                            return Err(self.err(format!("unterminated value of label {label}")))
                        }
                        Some(_) => {
                            let seq = self.text.get(self.pos..).unwrap_or("").chars().nth(1);
                            return Err(self.err(format!(
                                "invalid escape sequence '\\{}' in the value of label {label}",
                                seq.map(|c| c.escape_debug().to_string())
                                    .unwrap_or_default()
                            )));
                        }
                    }
                    escaped = true;
                    self.pos += 2;
                }
                Some(b'\n') | None => {
                    return Err(self.err(format!("unterminated value of label {label}")))
                }
                Some(_) => self.pos += 1,
            }
        }
        let raw = self.slice(start, self.pos);
        self.pos += 1;
        Ok(LabelValue { raw, escaped })
    }

    /// After `#`: the metric name of HELP and TYPE lines and the type are
    /// checked (as Go's parser does); other comments and help text are skipped.
    fn comment(&mut self) -> Result<()> {
        self.skip_ws();
        let keyword = self.token();
        if keyword != "HELP" && keyword != "TYPE" {
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
            return Err(self.err(format!("invalid metric name in # {keyword} line")));
        }
        if keyword == "HELP" {
            return self.skip_line();
        }
        let kind = self.token();
        if !matches!(
            kind,
            "counter" | "gauge" | "histogram" | "summary" | "untyped"
        ) {
            return Err(self.err(format!("unknown metric type {} for {name}", snippet(kind))));
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
    fn token(&mut self) -> &'a str {
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
    fn metric_name(&mut self) -> &'a str {
        self.class_run(NAME_START, NAME_CHAR)
    }

    #[inline(always)]
    fn label_name(&mut self) -> &'a str {
        self.class_run(LABEL_START, LABEL_CHAR)
    }

    #[inline(always)]
    fn class_run(&mut self, first: u8, rest: u8) -> &'a str {
        let start = self.pos;
        match self.b.get(self.pos) {
            Some(&c) if CLASS[c as usize] & first != 0 => self.pos += 1,
            _ => return "",
        }
        while let Some(&c) = self.b.get(self.pos) {
            if CLASS[c as usize] & rest == 0 {
                break;
            }
            self.pos += 1;
        }
        self.slice(start, self.pos)
    }

    /// Every cut the scanner makes sits next to an ASCII byte, so it is a char
    /// boundary; `get` keeps that a checked fact rather than an assumption.
    #[inline(always)]
    fn slice(&self, start: usize, end: usize) -> &'a str {
        self.text.get(start..end).unwrap_or("")
    }

    // ---- errors ------------------------------------------------------------

    fn unexpected(&self, expected: &str) -> ParseError {
        let found = match self.text.get(self.pos..).and_then(|s| s.chars().next()) {
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

/// A token quoted for an error message, cut short if long.
fn snippet(tok: &str) -> String {
    const MAX: usize = 40;
    match tok.char_indices().nth(MAX) {
        Some((cut, _)) => format!("{:?}…", &tok[..cut]),
        None if tok.is_empty() => "(empty)".to_string(),
        None => format!("{tok:?}"),
    }
}
