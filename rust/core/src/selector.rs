//! Label and field selectors with Kubernetes' syntax, validation and error
//! messages: the grammar only. Selection over a served snapshot, which uses
//! these parsed forms, lives in `view`.
//!
//! Label selectors follow apimachinery `labels.Parse` (lexer, parser contexts,
//! key/value validation); field selectors follow `fields.ParseSelector`
//! (comma split with `\` escapes, `!=`/`==`/`=`), restricted to the fields the
//! metrics API can filter on.

use std::fmt;

use crate::inventory::LabelSet;

/// A malformed or unsupported selector; the message is meant for a 400 Status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SelectorError(pub String);

impl fmt::Display for SelectorError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for SelectorError {}

fn err<T>(msg: impl Into<String>) -> Result<T, SelectorError> {
    Err(SelectorError(msg.into()))
}

// ---------------------------------------------------------------- labels --

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    In,
    NotIn,
    Equals,
    NotEquals,
    Exists,
    DoesNotExist,
    GreaterThan,
    LessThan,
}

/// One label requirement (`key op values`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requirement {
    key: String,
    op: Op,
    /// Sorted, deduplicated (upstream keeps a string set).
    values: Vec<String>,
}

impl Requirement {
    pub fn key(&self) -> &str {
        &self.key
    }

    pub fn op(&self) -> Op {
        self.op
    }

    /// Sorted and deduplicated; one value for `=`/`!=`/`>`/`<`, none for
    /// `exists`/`!`.
    pub fn values(&self) -> &[String] {
        &self.values
    }

    pub fn matches(&self, labels: &LabelSet) -> bool {
        let found = labels.get(&self.key);
        match self.op {
            Op::In | Op::Equals => found.is_some_and(|v| self.has(v)),
            Op::NotIn | Op::NotEquals => found.is_none_or(|v| !self.has(v)),
            Op::Exists => found.is_some(),
            Op::DoesNotExist => found.is_none(),
            Op::GreaterThan | Op::LessThan => {
                let (Some(v), Some(want)) = (found, self.values.first()) else {
                    return false;
                };
                match (v.parse::<i64>(), want.parse::<i64>()) {
                    (Ok(have), Ok(want)) => {
                        if self.op == Op::GreaterThan {
                            have > want
                        } else {
                            have < want
                        }
                    }
                    _ => false,
                }
            }
        }
    }

    fn has(&self, v: &str) -> bool {
        self.values.binary_search_by(|x| x.as_str().cmp(v)).is_ok()
    }

    /// The integer a `>`/`<` requirement compares with (validated at parse).
    pub fn bound(&self) -> Option<i64> {
        self.values.first().and_then(|v| v.parse().ok())
    }
}

/// A parsed label selector; the empty selector matches everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LabelSelector {
    requirements: Vec<Requirement>,
}

impl LabelSelector {
    pub fn parse(selector: &str) -> Result<Self, SelectorError> {
        let tokens = lex(selector);
        let mut p = Parser { tokens, pos: 0 };
        let mut requirements = p.parse()?;
        requirements.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(LabelSelector { requirements })
    }

    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }

    pub fn matches(&self, labels: &LabelSet) -> bool {
        self.requirements.iter().all(|r| r.matches(labels))
    }

    /// Sorted by key.
    pub fn requirements(&self) -> &[Requirement] {
        &self.requirements
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tok {
    End,
    ClosedPar,
    Comma,
    DoesNotExist,
    DoubleEquals,
    Equals,
    GreaterThan,
    Identifier,
    In,
    LessThan,
    NotEquals,
    NotIn,
    OpenPar,
}

fn keyword(s: &str) -> Option<Tok> {
    Some(match s {
        ")" => Tok::ClosedPar,
        "," => Tok::Comma,
        "!" => Tok::DoesNotExist,
        "==" => Tok::DoubleEquals,
        "=" => Tok::Equals,
        ">" => Tok::GreaterThan,
        "in" => Tok::In,
        "<" => Tok::LessThan,
        "!=" => Tok::NotEquals,
        "notin" => Tok::NotIn,
        "(" => Tok::OpenPar,
        _ => return None,
    })
}

fn is_whitespace(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r' | b'\n')
}

fn is_special(b: u8) -> bool {
    matches!(b, b'=' | b'!' | b'(' | b')' | b',' | b'>' | b'<')
}

/// Tokenises like upstream's lexer, including treating a NUL byte as the end.
fn lex(s: &str) -> Vec<(Tok, &str)> {
    let bytes = s.as_bytes();
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    let mut out = Vec::new();
    let mut pos = 0;
    loop {
        while pos < end && is_whitespace(bytes[pos]) {
            pos += 1;
        }
        if pos >= end {
            out.push((Tok::End, ""));
            return out;
        }
        let start = pos;
        if is_special(bytes[pos]) {
            // Longest special-symbol token: every single symbol is a token, so
            // extend while the longer prefix still is one.
            let mut best = (Tok::End, start);
            while pos < end && is_special(bytes[pos]) {
                match keyword(&s[start..pos + 1]) {
                    Some(t) => {
                        best = (t, pos + 1);
                        pos += 1;
                    }
                    None => break,
                }
            }
            pos = best.1;
            out.push((best.0, &s[start..pos]));
        } else {
            while pos < end && !is_special(bytes[pos]) && !is_whitespace(bytes[pos]) {
                pos += 1;
            }
            let lit = &s[start..pos];
            out.push((keyword(lit).unwrap_or(Tok::Identifier), lit));
        }
    }
}

struct Parser<'a> {
    tokens: Vec<(Tok, &'a str)>,
    pos: usize,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Ctx {
    KeyAndOperator,
    Values,
}

const BINARY_OPERATORS: &str = "in, notin, =, ==, !=, gt, lt";

impl<'a> Parser<'a> {
    fn token(&self, at: usize, ctx: Ctx) -> (Tok, &'a str) {
        // The token list always ends with End; never index past it.
        let (t, lit) = self.tokens[at.min(self.tokens.len() - 1)];
        match (ctx, t) {
            (Ctx::Values, Tok::In | Tok::NotIn) => (Tok::Identifier, lit),
            _ => (t, lit),
        }
    }

    fn lookahead(&self, ctx: Ctx) -> (Tok, &'a str) {
        self.token(self.pos, ctx)
    }

    fn consume(&mut self, ctx: Ctx) -> (Tok, &'a str) {
        let t = self.token(self.pos, ctx);
        self.pos += 1;
        t
    }

    fn parse(&mut self) -> Result<Vec<Requirement>, SelectorError> {
        let mut reqs = Vec::new();
        loop {
            let (tok, lit) = self.lookahead(Ctx::Values);
            match tok {
                Tok::Identifier | Tok::DoesNotExist => {
                    let r = self
                        .parse_requirement()
                        .map_err(|e| SelectorError(format!("unable to parse requirement: {e}")))?;
                    reqs.push(r);
                    let (t, l) = self.consume(Ctx::Values);
                    match t {
                        Tok::End => return Ok(reqs),
                        Tok::Comma => {
                            let (t2, l2) = self.lookahead(Ctx::Values);
                            if t2 != Tok::Identifier && t2 != Tok::DoesNotExist {
                                return err(format!(
                                    "found '{l2}', expected: identifier after ','"
                                ));
                            }
                        }
                        _ => return err(format!("found '{l}', expected: ',' or 'end of string'")),
                    }
                }
                Tok::End => return Ok(reqs),
                _ => {
                    return err(format!(
                        "found '{lit}', expected: !, identifier, or 'end of string'"
                    ))
                }
            }
        }
    }

    fn parse_requirement(&mut self) -> Result<Requirement, SelectorError> {
        let mut negated = false;
        let (mut tok, mut key) = self.consume(Ctx::Values);
        if tok == Tok::DoesNotExist {
            negated = true;
            (tok, key) = self.consume(Ctx::Values);
        }
        if tok != Tok::Identifier {
            return err(format!("found '{key}', expected: identifier"));
        }
        let key_errors = label_key_errors(key);
        if !key_errors.is_empty() {
            return err(invalid("<nil>", key, &key_errors.join("; ")));
        }
        let (next, _) = self.lookahead(Ctx::Values);
        if negated || next == Tok::End || next == Tok::Comma {
            // `!key` with a following operator is rejected by upstream when it
            // reads that operator as the next requirement; mirror by only
            // accepting end or comma here.
            let op = if negated {
                Op::DoesNotExist
            } else {
                Op::Exists
            };
            return Ok(Requirement {
                key: key.to_string(),
                op,
                values: Vec::new(),
            });
        }
        let (tok, lit) = self.consume(Ctx::KeyAndOperator);
        let op = match tok {
            Tok::In => Op::In,
            Tok::Equals | Tok::DoubleEquals => Op::Equals,
            Tok::GreaterThan => Op::GreaterThan,
            Tok::LessThan => Op::LessThan,
            Tok::NotIn => Op::NotIn,
            Tok::NotEquals => Op::NotEquals,
            _ => return err(format!("found '{lit}', expected: {BINARY_OPERATORS}")),
        };
        let mut values = match op {
            Op::In | Op::NotIn => self.parse_values()?,
            _ => self.parse_exact_value()?,
        };
        values.sort();
        values.dedup();
        new_requirement(key, op, values)
    }

    fn parse_values(&mut self) -> Result<Vec<String>, SelectorError> {
        let (tok, lit) = self.consume(Ctx::Values);
        if tok != Tok::OpenPar {
            return err(format!("found '{lit}' expected: '('"));
        }
        let (tok, lit) = self.lookahead(Ctx::Values);
        match tok {
            Tok::Identifier | Tok::Comma => {
                let s = self.parse_identifiers_list()?;
                let (tok, _) = self.consume(Ctx::Values);
                if tok != Tok::ClosedPar {
                    return err(format!("found '{lit}', expected: ')'"));
                }
                Ok(s)
            }
            Tok::ClosedPar => {
                self.consume(Ctx::Values);
                Ok(vec![String::new()])
            }
            _ => err(format!("found '{lit}', expected: ',', ')' or identifier")),
        }
    }

    fn parse_identifiers_list(&mut self) -> Result<Vec<String>, SelectorError> {
        let mut s: Vec<String> = Vec::new();
        loop {
            let (tok, lit) = self.consume(Ctx::Values);
            match tok {
                Tok::Identifier => {
                    s.push(lit.to_string());
                    let (tok2, lit2) = self.lookahead(Ctx::Values);
                    match tok2 {
                        Tok::Comma => continue,
                        Tok::ClosedPar => return Ok(s),
                        _ => return err(format!("found '{lit2}', expected: ',' or ')'")),
                    }
                }
                Tok::Comma => {
                    if s.is_empty() {
                        s.push(String::new());
                    }
                    let (tok2, _) = self.lookahead(Ctx::Values);
                    if tok2 == Tok::ClosedPar {
                        s.push(String::new());
                        return Ok(s);
                    }
                    if tok2 == Tok::Comma {
                        s.push(String::new());
                    }
                }
                _ => return err(format!("found '{lit}', expected: ',', or identifier")),
            }
        }
    }

    fn parse_exact_value(&mut self) -> Result<Vec<String>, SelectorError> {
        let (tok, _) = self.lookahead(Ctx::Values);
        if tok == Tok::End || tok == Tok::Comma {
            return Ok(vec![String::new()]);
        }
        let (tok, lit) = self.consume(Ctx::Values);
        if tok == Tok::Identifier {
            return Ok(vec![lit.to_string()]);
        }
        err(format!("found '{lit}', expected: identifier"))
    }
}

/// Upstream `NewRequirement`'s value checks (the key is already validated).
fn new_requirement(key: &str, op: Op, values: Vec<String>) -> Result<Requirement, SelectorError> {
    let mut errs: Vec<String> = Vec::new();
    if matches!(op, Op::GreaterThan | Op::LessThan) {
        for (i, v) in values.iter().enumerate() {
            if v.parse::<i64>().is_err() {
                errs.push(invalid(
                    &format!("values[{i}]"),
                    v,
                    "for 'Gt', 'Lt' operators, the value must be an integer",
                ));
            }
        }
    }
    for (i, v) in values.iter().enumerate() {
        let value_errors = label_value_errors(v);
        if !value_errors.is_empty() {
            errs.push(invalid(
                &format!("values[{i}][{key}]"),
                v,
                &value_errors.join("; "),
            ));
        }
    }
    match errs.len() {
        0 => Ok(Requirement {
            key: key.to_string(),
            op,
            values,
        }),
        1 => err(errs.remove(0)),
        _ => err(format!("[{}]", errs.join(", "))),
    }
}

/// `field.Invalid(path, value, detail).Error()`.
fn invalid(path: &str, value: &str, detail: &str) -> String {
    format!("{path}: Invalid value: {}: {detail}", go_quote(value))
}

/// Go's `%q` for a string (enough of it for error messages).
fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                out.push_str(&format!("\\x{:02x}", c as u32));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

const QUALIFIED_NAME_FMT: &str = "([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]";
const QUALIFIED_NAME_MSG: &str = "must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character";
const LABEL_VALUE_MSG: &str = "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character";
const DNS1123_SUBDOMAIN_MSG: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character";
const DNS1123_SUBDOMAIN_FMT: &str =
    "[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*";

fn regex_error(msg: &str, fmt: &str, examples: &[&str]) -> String {
    let mut s = format!("{msg} (e.g. ");
    for (i, e) in examples.iter().enumerate() {
        if i > 0 {
            s.push_str(" or ");
        }
        s.push_str(&format!("'{e}', "));
    }
    s.push_str(&format!("regex used for validation is '{fmt}')"));
    s
}

/// `([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]`
fn is_qualified_name_part(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter()
            .all(|&c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_' || c == b'.')
}

/// RFC 1123 subdomain: dot-separated lowercase labels, each alphanumeric at both ends.
fn is_dns1123_subdomain(s: &str) -> bool {
    !s.is_empty()
        && s.split('.').all(|label| {
            let b = label.as_bytes();
            !b.is_empty()
                && b[0].is_ascii_alphanumeric()
                && !b[0].is_ascii_uppercase()
                && b[b.len() - 1].is_ascii_alphanumeric()
                && !b[b.len() - 1].is_ascii_uppercase()
                && b.iter()
                    .all(|&c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-')
        })
}

/// `validation.IsQualifiedName` (label keys).
fn label_key_errors(key: &str) -> Vec<String> {
    let mut errs = Vec::new();
    let parts: Vec<&str> = key.split('/').collect();
    let name = match parts.as_slice() {
        [name] => *name,
        [prefix, name] => {
            if prefix.is_empty() {
                errs.push("prefix part must be non-empty".to_string());
            } else {
                if prefix.len() > 253 {
                    errs.push("prefix part must be no more than 253 characters".to_string());
                }
                if !is_dns1123_subdomain(prefix) {
                    errs.push(format!(
                        "prefix part {}",
                        regex_error(
                            DNS1123_SUBDOMAIN_MSG,
                            DNS1123_SUBDOMAIN_FMT,
                            &["example.com"]
                        )
                    ));
                }
            }
            *name
        }
        _ => {
            errs.push(format!(
                "a qualified name {} with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')",
                regex_error(QUALIFIED_NAME_MSG, QUALIFIED_NAME_FMT, &["MyName", "my.name", "123-abc"])
            ));
            return errs;
        }
    };
    if name.is_empty() {
        errs.push("name part must be non-empty".to_string());
    } else if name.len() > 63 {
        errs.push("name part must be no more than 63 characters".to_string());
    }
    if !is_qualified_name_part(name) {
        errs.push(format!(
            "name part {}",
            regex_error(
                QUALIFIED_NAME_MSG,
                QUALIFIED_NAME_FMT,
                &["MyName", "my.name", "123-abc"]
            )
        ));
    }
    errs
}

/// `validation.IsValidLabelValue`.
fn label_value_errors(v: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if v.len() > 63 {
        errs.push("must be no more than 63 characters".to_string());
    }
    if !v.is_empty() && !is_qualified_name_part(v) {
        errs.push(regex_error(
            LABEL_VALUE_MSG,
            &format!("({QUALIFIED_NAME_FMT})?"),
            &["MyValue", "my_value", "12345"],
        ));
    }
    errs
}

// ---------------------------------------------------------------- fields --

/// The kind of object a field selector applies to; decides the known fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ObjectKind {
    Node,
    Pod,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    Name,
    Namespace,
    NodeName,
}

/// One term of a field selector as `fields.ParseSelector` reads it, for any
/// field name: `field=value` (also `==`) or `field!=value`, value unescaped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Term {
    pub field: String,
    pub equal: bool,
    pub value: String,
}

/// `fields.ParseSelector`: the terms of `selector` in sorted order, for any
/// field names (kube-apiserver parses before it knows the resource's fields).
pub fn parse_field_terms(selector: &str) -> Result<Vec<Term>, SelectorError> {
    let mut parts = split_terms(selector);
    parts.sort_unstable();
    let mut terms = Vec::new();
    for part in parts {
        if part.is_empty() {
            continue;
        }
        let Some((lhs, op, rhs)) = split_term(part) else {
            return err(format!(
                "invalid selector: '{selector}'; can't understand '{part}'"
            ));
        };
        terms.push(Term {
            field: lhs.to_string(),
            equal: op != "!=",
            value: unescape_value(rhs)?,
        });
    }
    Ok(terms)
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct FieldTerm {
    field: Field,
    equal: bool,
    value: String,
}

/// A parsed field selector; the empty selector matches everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldSelector {
    terms: Vec<FieldTerm>,
}

impl FieldSelector {
    /// A field selector restricted to the fields the metrics API filters on.
    pub fn parse(selector: &str, kind: ObjectKind) -> Result<Self, SelectorError> {
        let mut terms = Vec::new();
        for t in parse_field_terms(selector)? {
            let field = match (t.field.as_str(), kind) {
                ("metadata.name", _) => Field::Name,
                ("metadata.namespace", _) => Field::Namespace,
                ("spec.nodeName", ObjectKind::Pod) => Field::NodeName,
                (other, ObjectKind::Pod) => {
                    return err(format!(
                        "{} is not a known field selector: only \"metadata.name\", \"metadata.namespace\", \"spec.nodeName\"",
                        go_quote(other)
                    ))
                }
                (other, ObjectKind::Node) => {
                    return err(format!(
                        "{} is not a known field selector: only \"metadata.name\", \"metadata.namespace\"",
                        go_quote(other)
                    ))
                }
            };
            terms.push(FieldTerm {
                field,
                equal: t.equal,
                value: t.value,
            });
        }
        Ok(FieldSelector { terms })
    }

    /// Every term as (field, equal, value).
    pub fn terms(&self) -> impl Iterator<Item = (Field, bool, &str)> {
        self.terms
            .iter()
            .map(|t| (t.field, t.equal, t.value.as_str()))
    }

    pub fn is_empty(&self) -> bool {
        self.terms.is_empty()
    }

    /// Missing fields read as "" (as upstream's field sets do: a node has no namespace).
    pub fn matches<'a>(&self, get: impl Fn(Field) -> &'a str) -> bool {
        self.terms
            .iter()
            .all(|t| (get(t.field) == t.value) == t.equal)
    }

    /// The value a field must equal, if some term pins it.
    pub fn required(&self, field: Field) -> Option<&str> {
        self.terms
            .iter()
            .find(|t| t.field == field && t.equal)
            .map(|t| t.value.as_str())
    }
}

/// Splits on commas not escaped by a backslash.
fn split_terms(s: &str) -> Vec<&str> {
    if s.is_empty() {
        return Vec::new();
    }
    let mut terms = Vec::new();
    let mut start = 0;
    let mut in_slash = false;
    for (i, c) in s.char_indices() {
        if in_slash {
            in_slash = false;
        } else if c == '\\' {
            in_slash = true;
        } else if c == ',' {
            terms.push(&s[start..i]);
            start = i + 1;
        }
    }
    terms.push(&s[start..]);
    terms
}

/// The first operator occurrence, trying `!=`, `==`, `=` at each position.
fn split_term(term: &str) -> Option<(&str, &str, &str)> {
    for (i, _) in term.char_indices() {
        let rest = &term[i..];
        for op in ["!=", "==", "="] {
            if rest.starts_with(op) {
                return Some((&term[..i], op, &term[i + op.len()..]));
            }
        }
    }
    None
}

fn unescape_value(s: &str) -> Result<String, SelectorError> {
    if !s.contains(['\\', ',', '=']) {
        return Ok(s.to_string());
    }
    let mut out = String::with_capacity(s.len());
    let mut in_slash = false;
    for c in s.chars() {
        if in_slash {
            match c {
                '\\' | ',' | '=' => out.push(c),
                _ => {
                    return err(format!(
                        "invalid field selector: invalid escape sequence: \\{c}"
                    ))
                }
            }
            in_slash = false;
            continue;
        }
        match c {
            '\\' => in_slash = true,
            // Upstream prints the rune with %v, i.e. its code point.
            ',' | '=' => {
                return err(format!(
                    "invalid field selector: unescaped character in value: {}",
                    c as u32
                ))
            }
            _ => out.push(c),
        }
    }
    if in_slash {
        return err("invalid field selector: invalid escape sequence: \\");
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ls(pairs: &[(&str, &str)]) -> LabelSet {
        LabelSet::new(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())))
    }

    fn sel(s: &str) -> LabelSelector {
        LabelSelector::parse(s).unwrap_or_else(|e| panic!("{s:?}: {e}"))
    }

    #[test]
    fn label_selector_operators() {
        let l = ls(&[("app", "web"), ("tier", "front"), ("n", "5")]);
        let yes = [
            "",
            "app=web",
            "app==web",
            "app!=db",
            "app in (web,db)",
            "app notin (db)",
            "missing notin (x)",
            "missing!=x",
            "app",
            "!missing",
            "app=web,tier=front",
            "  app = web ,  tier in ( front , back )  ",
            "n>4",
            "n<6",
            "app in (web,,db)",
        ];
        for s in yes {
            assert!(sel(s).matches(&l), "{s:?} should match");
        }
        let no = [
            "app=db",
            "app!=web",
            "app in (db)",
            "app notin (web)",
            "missing",
            "!app",
            "app=web,tier=back",
            "n>5",
            "n<5",
            "app>1",
            "missing in (x)",
        ];
        for s in no {
            assert!(!sel(s).matches(&l), "{s:?} should not match");
        }
        // Empty values: `key=` selects labels with an empty value.
        assert!(sel("e=").matches(&ls(&[("e", "")])));
        assert!(!sel("e=").matches(&ls(&[])));
        assert!(sel("e in ()").matches(&ls(&[("e", "")])));
        // `in`/`notin` are plain identifiers in value and key positions.
        assert!(sel("x in (in, notin)").matches(&ls(&[("x", "notin")])));
        assert!(sel("example.com/role=db").matches(&ls(&[("example.com/role", "db")])));
    }

    #[test]
    fn label_selector_errors_like_upstream() {
        let cases: &[(&str, &str)] = &[
            ("=x", "found '=', expected: !, identifier, or 'end of string'"),
            ("a=b c", "found 'c', expected: ',' or 'end of string'"),
            ("a,", "found '', expected: identifier after ','"),
            ("a in b", "unable to parse requirement: found 'b' expected: '('"),
            ("a in (b", "unable to parse requirement: found '', expected: ',' or ')'"),
            ("a=(", "unable to parse requirement: found '(', expected: identifier"),
            (
                "a b",
                "unable to parse requirement: found 'b', expected: in, notin, =, ==, !=, gt, lt",
            ),
            ("!a=b", "found '=', expected: ',' or 'end of string'"),
            (
                "a>x",
                "unable to parse requirement: values[0]: Invalid value: \"x\": for 'Gt', 'Lt' operators, the value must be an integer",
            ),
        ];
        for (s, want) in cases {
            let e = LabelSelector::parse(s).expect_err(s);
            assert_eq!(e.0, *want, "{s:?}");
        }
        let e = LabelSelector::parse("a%b=c").unwrap_err();
        assert!(
            e.0.starts_with("unable to parse requirement: <nil>: Invalid value: \"a%b\": name part must consist of alphanumeric characters"),
            "{e}"
        );
        let e = LabelSelector::parse("a=b$").unwrap_err();
        assert!(
            e.0.starts_with("unable to parse requirement: values[0][a]: Invalid value: \"b$\": a valid label must be an empty string"),
            "{e}"
        );
        let long = "v".repeat(64);
        let e = LabelSelector::parse(&format!("a={long}")).unwrap_err();
        assert!(e.0.contains("must be no more than 63 characters"), "{e}");
        let e = LabelSelector::parse("Bad_Prefix/x=1").unwrap_err();
        assert!(
            e.0.contains("prefix part a lowercase RFC 1123 subdomain"),
            "{e}"
        );
        let e = LabelSelector::parse("a/b/c").unwrap_err();
        assert!(e.0.contains("a qualified name must consist"), "{e}");
    }

    #[test]
    fn field_selectors() {
        let get = |f: Field| match f {
            Field::Name => "p1",
            Field::Namespace => "ns",
            Field::NodeName => "node-a",
        };
        for (s, want) in [
            ("", true),
            ("metadata.name=p1", true),
            ("metadata.name==p1", true),
            ("metadata.name!=p1", false),
            ("metadata.name=p2", false),
            ("metadata.namespace=ns,metadata.name=p1", true),
            ("spec.nodeName=node-a", true),
            ("spec.nodeName!=node-a", false),
            ("metadata.name=p1,", true),
        ] {
            let f = FieldSelector::parse(s, ObjectKind::Pod).unwrap();
            assert_eq!(f.matches(get), want, "{s:?}");
        }
        let e = FieldSelector::parse("foo=bar", ObjectKind::Node).unwrap_err();
        assert_eq!(
            e.0,
            "\"foo\" is not a known field selector: only \"metadata.name\", \"metadata.namespace\""
        );
        let e = FieldSelector::parse("spec.nodeName=x", ObjectKind::Node).unwrap_err();
        assert!(e.0.starts_with("\"spec.nodeName\" is not a known"), "{e}");
        let e = FieldSelector::parse("status.phase=Running", ObjectKind::Pod).unwrap_err();
        assert!(
            e.0.ends_with("\"metadata.namespace\", \"spec.nodeName\""),
            "{e}"
        );
        let e = FieldSelector::parse("metadata.name", ObjectKind::Pod).unwrap_err();
        assert_eq!(
            e.0,
            "invalid selector: 'metadata.name'; can't understand 'metadata.name'"
        );
        let e = FieldSelector::parse("metadata.name=a\\x", ObjectKind::Pod).unwrap_err();
        assert_eq!(e.0, "invalid field selector: invalid escape sequence: \\x");
        // Escaped comma and equals are part of the value.
        let f = FieldSelector::parse("metadata.name=a\\,b\\=c", ObjectKind::Pod).unwrap();
        assert!(f.matches(|_| "a,b=c"));
        assert_eq!(f.required(Field::Name), Some("a,b=c"));
    }

    #[test]
    fn generic_field_terms_like_fields_parse_selector() {
        let t = parse_field_terms("metadata.uid=x,metadata.name==a\\,b,spec.x!=y,").unwrap();
        let got: Vec<(&str, bool, &str)> = t
            .iter()
            .map(|t| (t.field.as_str(), t.equal, t.value.as_str()))
            .collect();
        // sorted by the raw term text, any field name
        assert_eq!(
            got,
            vec![
                ("metadata.name", true, "a,b"),
                ("metadata.uid", true, "x"),
                ("spec.x", false, "y"),
            ]
        );
        assert!(parse_field_terms("").unwrap().is_empty());
        assert!(parse_field_terms("nonsense").is_err());
        // A syntax error anywhere wins over an unknown field.
        let e = FieldSelector::parse("a.b=1,zzz", ObjectKind::Pod).unwrap_err();
        assert!(e.0.starts_with("invalid selector"), "{e}");
    }
}
