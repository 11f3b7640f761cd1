//! A Kubernetes list response (`{"kind":…,"metadata":{…},"items":[…]}`) split into its items
//! as the bytes arrive.
//!
//! kube-apiserver answers a list served from its watch cache (`resourceVersion=0`, what
//! client-go and we ask for first) whole, whatever `limit` says: 30,000 pods' metadata is one
//! ~58 MB body. Reading it into one buffer and decoding it at once costs ~10 KB of Python
//! objects per pod (mostly `managedFields`), freed only into a fragmented heap. The splitter
//! hands out each item's bytes as soon as the item is complete, so the reader holds one network
//! chunk plus the items it has not decoded yet, never the list. It checks the structure it walks
//! (quotes, escapes, nesting of the envelope and the `items` array) and the size of every piece;
//! an item's own JSON is checked by whoever decodes it.

use std::fmt;

/// Why a body is not a list response the splitter can walk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SplitError {
    /// Not JSON of a list's shape, at this byte offset of the body.
    Syntax { offset: u64, what: &'static str },
    /// One item, or the envelope (everything but the items), is larger than allowed.
    TooLarge { what: &'static str, limit: usize },
    /// The body ended before the list did.
    Truncated,
}

impl fmt::Display for SplitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SplitError::Syntax { offset, what } => {
                write!(f, "malformed list response at byte {offset}: {what}")
            }
            SplitError::TooLarge { what, limit } => {
                write!(f, "list response: {what} larger than {limit} bytes")
            }
            SplitError::Truncated => write!(f, "list response ended before the list did"),
        }
    }
}

impl std::error::Error for SplitError {}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Before the top-level `{`.
    Start,
    /// After `{`: a key or `}`.
    KeyOrEnd,
    /// After `,` between pairs: a key.
    Key,
    /// Inside a key string.
    InKey,
    /// After a key: `:`.
    Colon,
    /// Before a top-level value.
    Value,
    /// Inside a top-level value other than the items array.
    InValue,
    /// After a top-level value: `,` or `}`.
    AfterValue,
    /// After `"items":[`: an item or `]`.
    ItemOrEnd,
    /// After `,` between items: an item.
    Item,
    /// Inside an item.
    InItem,
    /// After an item: `,` or `]`.
    AfterItem,
    /// After the top-level `}`: only whitespace may follow.
    Done,
}

/// Where the value being scanned stands (one JSON value, any nesting).
#[derive(Debug, Default, Clone, Copy)]
struct Scan {
    depth: u32,
    in_str: bool,
    esc: bool,
    scalar: bool,
}

enum Step {
    /// The value goes on past this byte.
    More,
    /// The value ended with this byte (a closing bracket or quote).
    EndsHere,
    /// The value ended just before this byte (a number, `true`, `false`, `null`).
    EndedBefore,
}

impl Scan {
    /// Start a value at its first byte.
    fn begin(b: u8) -> (Scan, Step) {
        match b {
            b'{' | b'[' => (
                Scan {
                    depth: 1,
                    ..Scan::default()
                },
                Step::More,
            ),
            b'"' => (
                Scan {
                    in_str: true,
                    ..Scan::default()
                },
                Step::More,
            ),
            _ => (
                Scan {
                    scalar: true,
                    ..Scan::default()
                },
                Step::More,
            ),
        }
    }

    fn step(&mut self, b: u8) -> Step {
        if self.in_str {
            if self.esc {
                self.esc = false;
            } else if b == b'\\' {
                self.esc = true;
            } else if b == b'"' {
                self.in_str = false;
                if self.depth == 0 {
                    return Step::EndsHere;
                }
            }
            return Step::More;
        }
        if self.scalar {
            return match b {
                b',' | b'}' | b']' | b' ' | b'\t' | b'\n' | b'\r' => Step::EndedBefore,
                _ => Step::More,
            };
        }
        match b {
            b'"' => self.in_str = true,
            b'{' | b'[' => self.depth += 1,
            b'}' | b']' => {
                self.depth -= 1;
                if self.depth == 0 {
                    return Step::EndsHere;
                }
            }
            _ => {}
        }
        Step::More
    }
}

fn is_ws(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r')
}

/// Splits one list response, fed in chunks of any size.
#[derive(Debug)]
pub struct ListSplitter {
    state: State,
    scan: Scan,
    /// The piece in progress (a key, an item or an envelope value) carried across chunks.
    cur: Vec<u8>,
    /// `{` and the top-level pairs other than the items array, as JSON.
    envelope: Vec<u8>,
    pairs: usize,
    key_is_items: bool,
    max_item: usize,
    max_envelope: usize,
    offset: u64,
}

impl ListSplitter {
    /// `max_item` bounds one item, `max_envelope` everything but the items.
    pub fn new(max_item: usize, max_envelope: usize) -> Self {
        ListSplitter {
            state: State::Start,
            scan: Scan::default(),
            cur: Vec::new(),
            envelope: vec![b'{'],
            pairs: 0,
            key_is_items: false,
            max_item,
            max_envelope,
            offset: 0,
        }
    }

    fn syntax(&self, at: usize, what: &'static str) -> SplitError {
        SplitError::Syntax {
            offset: self.offset + at as u64,
            what,
        }
    }

    /// The piece that started at `start` (in this chunk, or earlier if `cur` holds its head)
    /// and ends before `end`.
    fn take(&mut self, chunk: &[u8], start: usize, end: usize) -> Vec<u8> {
        let mut piece = std::mem::take(&mut self.cur);
        piece.extend_from_slice(&chunk[start..end]);
        piece
    }

    fn check_size(&self, len: usize) -> Result<(), SplitError> {
        let (limit, what) = match self.state {
            State::InItem => (self.max_item, "an item"),
            _ => (self.max_envelope, "the envelope"),
        };
        let total = match self.state {
            State::InItem => len,
            _ => self.envelope.len() + len,
        };
        if total > limit {
            return Err(SplitError::TooLarge { what, limit });
        }
        Ok(())
    }

    fn end_envelope_value(&mut self, value: Vec<u8>) -> Result<(), SplitError> {
        // The key is in `envelope` already (added at the colon).
        self.envelope.extend_from_slice(&value);
        self.check_size(0)?;
        self.state = State::AfterValue;
        Ok(())
    }

    /// Feed the next bytes of the body; returns the items completed by them, in order.
    pub fn feed(&mut self, chunk: &[u8]) -> Result<Vec<Vec<u8>>, SplitError> {
        let mut items = Vec::new();
        // Start (in this chunk) of the piece in progress, when there is one.
        let mut start = 0usize;
        let mut i = 0usize;
        while i < chunk.len() {
            let b = chunk[i];
            match self.state {
                State::Start => {
                    if b == b'{' {
                        self.state = State::KeyOrEnd;
                    } else if !is_ws(b) {
                        return Err(self.syntax(i, "expected an object"));
                    }
                }
                State::KeyOrEnd | State::Key => {
                    if b == b'"' {
                        self.state = State::InKey;
                        self.scan = Scan {
                            in_str: true,
                            ..Scan::default()
                        };
                        start = i;
                    } else if b == b'}' && self.state == State::KeyOrEnd {
                        self.state = State::Done;
                    } else if !is_ws(b) {
                        return Err(self.syntax(i, "expected a key"));
                    }
                }
                State::InKey => {
                    if let Step::EndsHere = self.scan.step(b) {
                        let key = self.take(chunk, start, i + 1);
                        self.key_is_items = key == b"\"items\"";
                        if !self.key_is_items {
                            if self.pairs > 0 {
                                self.envelope.push(b',');
                            }
                            self.pairs += 1;
                            self.envelope.extend_from_slice(&key);
                            self.envelope.push(b':');
                            self.check_size(0)?;
                        }
                        self.state = State::Colon;
                    }
                }
                State::Colon => {
                    if b == b':' {
                        self.state = State::Value;
                    } else if !is_ws(b) {
                        return Err(self.syntax(i, "expected ':'"));
                    }
                }
                State::Value => {
                    if is_ws(b) {
                    } else if self.key_is_items && b == b'[' {
                        self.state = State::ItemOrEnd;
                    } else if matches!(b, b'}' | b']' | b',' | b':') {
                        return Err(self.syntax(i, "expected a value"));
                    } else {
                        if self.key_is_items {
                            // `"items": null` (or anything but an array) goes to the envelope,
                            // where the reader sees it.
                            if self.pairs > 0 {
                                self.envelope.push(b',');
                            }
                            self.pairs += 1;
                            self.envelope.extend_from_slice(b"\"items\":");
                            self.key_is_items = false;
                        }
                        let (scan, _) = Scan::begin(b);
                        self.scan = scan;
                        self.state = State::InValue;
                        start = i;
                    }
                }
                State::InValue => match self.scan.step(b) {
                    Step::More => {}
                    Step::EndsHere => {
                        let value = self.take(chunk, start, i + 1);
                        self.end_envelope_value(value)?;
                    }
                    Step::EndedBefore => {
                        let value = self.take(chunk, start, i);
                        self.end_envelope_value(value)?;
                        continue; // this byte belongs to what follows
                    }
                },
                State::AfterValue => {
                    if b == b',' {
                        self.state = State::Key;
                    } else if b == b'}' {
                        self.state = State::Done;
                    } else if !is_ws(b) {
                        return Err(self.syntax(i, "expected ',' or '}'"));
                    }
                }
                State::ItemOrEnd | State::Item => {
                    if is_ws(b) {
                    } else if b == b']' && self.state == State::ItemOrEnd {
                        self.state = State::AfterValue;
                    } else if matches!(b, b'}' | b']' | b',' | b':') {
                        return Err(self.syntax(i, "expected an item"));
                    } else {
                        let (scan, _) = Scan::begin(b);
                        self.scan = scan;
                        self.state = State::InItem;
                        start = i;
                    }
                }
                State::InItem => match self.scan.step(b) {
                    Step::More => {}
                    Step::EndsHere => {
                        let item = self.take(chunk, start, i + 1);
                        self.check_size(item.len())?;
                        items.push(item);
                        self.state = State::AfterItem;
                    }
                    Step::EndedBefore => {
                        let item = self.take(chunk, start, i);
                        self.check_size(item.len())?;
                        items.push(item);
                        self.state = State::AfterItem;
                        continue;
                    }
                },
                State::AfterItem => {
                    if b == b',' {
                        self.state = State::Item;
                    } else if b == b']' {
                        self.state = State::AfterValue;
                    } else if !is_ws(b) {
                        return Err(self.syntax(i, "expected ',' or ']'"));
                    }
                }
                State::Done => {
                    if !is_ws(b) {
                        return Err(self.syntax(i, "data after the list"));
                    }
                }
            }
            i += 1;
        }
        // Carry the piece in progress into the next chunk.
        if matches!(self.state, State::InKey | State::InValue | State::InItem) {
            self.check_size(self.cur.len() + chunk.len() - start)?;
            self.cur.extend_from_slice(&chunk[start..]);
        }
        self.offset += chunk.len() as u64;
        Ok(items)
    }

    /// After the last chunk: the envelope (every top-level pair but the items array) as a JSON
    /// object, or why the body was not a whole list.
    pub fn finish(&mut self) -> Result<Vec<u8>, SplitError> {
        if self.state != State::Done {
            return Err(SplitError::Truncated);
        }
        let mut env = std::mem::take(&mut self.envelope);
        env.push(b'}');
        Ok(env)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIST: &[u8] = br#" {"kind":"PodList","apiVersion":"v1","metadata":{"resourceVersion":"12","continue":"a]b\"}"},"items":[{"metadata":{"name":"a","labels":{"x":"}]\\"}}},{"metadata":{"name":"b"},"v":[1,{"c":[]}]}, {"n":1}]} "#;

    fn split_in(body: &[u8], size: usize) -> (Vec<Vec<u8>>, Vec<u8>) {
        let mut s = ListSplitter::new(1 << 20, 1 << 20);
        let mut items = Vec::new();
        for chunk in body.chunks(size) {
            items.extend(s.feed(chunk).expect("feed"));
        }
        (items, s.finish().expect("finish"))
    }

    #[test]
    fn items_and_envelope_at_every_chunk_size() {
        let want_items: Vec<&[u8]> = vec![
            br#"{"metadata":{"name":"a","labels":{"x":"}]\\"}}}"#,
            br#"{"metadata":{"name":"b"},"v":[1,{"c":[]}]}"#,
            br#"{"n":1}"#,
        ];
        let want_env =
            br#"{"kind":"PodList","apiVersion":"v1","metadata":{"resourceVersion":"12","continue":"a]b\"}"}}"#;
        for size in 1..=LIST.len() {
            let (items, env) = split_in(LIST, size);
            assert_eq!(items, want_items, "chunk size {size}");
            assert_eq!(env, want_env.to_vec(), "chunk size {size}");
        }
    }

    #[test]
    fn envelope_after_items_and_scalars() {
        let body = br#"{"items":[],"n":12,"t":true,"s":"x"}"#;
        for size in 1..=body.len() {
            let (items, env) = split_in(body, size);
            assert!(items.is_empty());
            assert_eq!(env, br#"{"n":12,"t":true,"s":"x"}"#.to_vec());
        }
    }

    #[test]
    fn null_items_go_to_the_envelope() {
        let (items, env) = split_in(br#"{"metadata":{},"items":null}"#, 4);
        assert!(items.is_empty());
        assert_eq!(env, br#"{"metadata":{},"items":null}"#.to_vec());
    }

    #[test]
    fn scalar_items_are_handed_out() {
        let (items, _) = split_in(br#"{"items":[1, "a" ,null]}"#, 3);
        assert_eq!(
            items,
            vec![b"1".to_vec(), b"\"a\"".to_vec(), b"null".to_vec()]
        );
    }

    #[test]
    fn truncated_and_malformed_bodies() {
        let mut s = ListSplitter::new(1 << 20, 1 << 20);
        s.feed(br#"{"items":[{"a":1}"#).expect("feed");
        assert_eq!(s.finish(), Err(SplitError::Truncated));
        for bad in [
            &b"[1]"[..],
            br#"{"items":[{"a":1}}"#,
            br#"{"a" 1}"#,
            br#"{"a":1 "b":2}"#,
            br#"{"a":1}x"#,
            br#"{,}"#,
            br#"{"items":[,]}"#,
        ] {
            let mut s = ListSplitter::new(1 << 20, 1 << 20);
            let fed = s.feed(bad);
            assert!(
                fed.is_err() || s.finish().is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn item_and_envelope_bounds() {
        let mut s = ListSplitter::new(16, 1 << 20);
        let err = s.feed(br#"{"items":[{"a":"0123456789abcdef"}]}"#);
        assert!(matches!(
            err,
            Err(SplitError::TooLarge {
                what: "an item",
                ..
            })
        ));
        // Also when the item spans chunks and never ends.
        let mut s = ListSplitter::new(16, 1 << 20);
        s.feed(br#"{"items":[{"a":"0123"#).expect("under the bound");
        assert!(s.feed(b"456789abcdef").is_err());
        let mut s = ListSplitter::new(1 << 20, 16);
        assert!(matches!(
            s.feed(br#"{"metadata":{"a":"0123456789abcdef"}}"#),
            Err(SplitError::TooLarge {
                what: "the envelope",
                ..
            })
        ));
    }

    #[test]
    fn error_offsets_count_earlier_chunks() {
        let mut s = ListSplitter::new(1 << 20, 1 << 20);
        s.feed(br#"{"items":[1,"#).expect("feed");
        assert_eq!(
            s.feed(b" ]"),
            Err(SplitError::Syntax {
                offset: 13,
                what: "expected an item"
            })
        );
    }
}
