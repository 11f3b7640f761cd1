//! Kubelet `/metrics/resource` text → [`Batch`].
//!
//! [`parse`] checks the whole payload against the Prometheus text format 0.0.4
//! (see `text` for the grammar) and decodes the five families the store needs:
//!
//! | family | goes to |
//! |---|---|
//! | `node_cpu_usage_seconds_total` | `node.cpu_seconds`, `node.timestamp_ms` |
//! | `node_memory_working_set_bytes` | `node.memory_bytes` |
//! | `container_cpu_usage_seconds_total` | `cpu_seconds`, `timestamp_ms` of the container's row |
//! | `container_memory_working_set_bytes` | `memory_bytes` of the row |
//! | `container_start_time_seconds` | `start_time_seconds` of the row |
//!
//! A container row is keyed by its (`namespace`, `pod`, `container`) labels and
//! joined across families in any order; a `container_*` series missing one of
//! them (or with one empty, which Prometheus treats as absent) is ignored. NaN,
//! ±Inf and negative values count as missing (NaN). Other families are checked
//! for syntax and skipped. If a series repeats, its last sample wins. Any syntax
//! error rejects the whole payload.
//!
//! Speed: samples borrow from the input, label values are unescaped only when a
//! backslash was seen, and strings are allocated only for rows that are kept.

mod gofloat;
mod text;

use std::collections::hash_map::{Entry, RandomState};
use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
use std::sync::OnceLock;
use text::{LabelValue, Lines, Sample};

/// Longest line accepted, in bytes; a longer one is a syntax error.
pub use text::MAX_LINE_BYTES;

/// Node-level sample; NaN where absent, timestamp 0 where absent.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct NodeSample {
    pub cpu_seconds: f64,
    pub memory_bytes: f64,
    pub timestamp_ms: i64,
}

/// Per-container samples as equal-length columns, in first-seen order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ContainerColumns {
    pub namespace: Vec<String>,
    pub pod: Vec<String>,
    pub container: Vec<String>,
    pub cpu_seconds: Vec<f64>,
    pub memory_bytes: Vec<f64>,
    pub start_time_seconds: Vec<f64>,
    /// The container's own CPU sample time (Unix ms); 0 where absent.
    pub timestamp_ms: Vec<i64>,
}

impl ContainerColumns {
    /// Number of containers (rows).
    pub fn len(&self) -> usize {
        self.namespace.len()
    }

    pub fn is_empty(&self) -> bool {
        self.namespace.is_empty()
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    pub node: NodeSample,
    pub containers: ContainerColumns,
}

/// A syntax error: 1-based line number and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    pub line: usize,
    pub message: String,
}

impl std::fmt::Display for ParseError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "line {}: {}", self.line, self.message)
    }
}

impl std::error::Error for ParseError {}

/// Parses one kubelet `/metrics/resource` payload.
pub fn parse(data: &[u8]) -> Result<Batch, ParseError> {
    let text = std::str::from_utf8(data).map_err(|e| {
        let at = e.valid_up_to();
        let line = 1 + data[..at].iter().filter(|&&c| c == b'\n').count();
        ParseError {
            line,
            message: format!("invalid UTF-8 (binary data?) at byte {at}"),
        }
    })?;
    let mut lines = Lines::new(text);
    let mut acc = Accumulator::default();
    while let Some(sample) = lines.next_sample()? {
        acc.add(&sample);
    }
    Ok(acc.finish())
}

/// The families [`parse`] decodes; everything else is skipped.
#[derive(Clone, Copy)]
enum Family {
    NodeCpu,
    NodeMemory,
    ContainerCpu,
    ContainerMemory,
    ContainerStart,
}

impl Family {
    #[inline]
    fn of(name: &[u8]) -> Option<Family> {
        // Cheap reject first: every family we want starts with 'n' or 'c'.
        match name.first() {
            Some(b'n' | b'c') => {}
            _ => return None,
        }
        match name {
            b"node_cpu_usage_seconds_total" => Some(Family::NodeCpu),
            b"node_memory_working_set_bytes" => Some(Family::NodeMemory),
            b"container_cpu_usage_seconds_total" => Some(Family::ContainerCpu),
            b"container_memory_working_set_bytes" => Some(Family::ContainerMemory),
            b"container_start_time_seconds" => Some(Family::ContainerStart),
            _ => None,
        }
    }
}

/// NaN, ±Inf and negative readings are missing data, not numbers to store.
#[inline]
fn usable(v: f64) -> f64 {
    if v.is_finite() && v >= 0.0 {
        v + 0.0 // turns -0 into 0
    } else {
        f64::NAN
    }
}

type Key<'a> = (LabelValue<'a>, LabelValue<'a>, LabelValue<'a>);

struct Row<'a> {
    key: Key<'a>,
    cpu_seconds: f64,
    memory_bytes: f64,
    start_time_seconds: f64,
    timestamp_ms: i64,
}

/// Collects samples into rows keyed by borrowed (still escaped) label values.
/// Escaping is canonical in this format (a raw `\`, `"` or newline cannot
/// appear), so equal raw values are equal decoded values.
struct Accumulator<'a> {
    node: NodeSample,
    rows: Vec<Row<'a>>,
    index: HashMap<Key<'a>, usize, KeyHashBuilder>,
    /// Per container family, the row after the last one it touched: kubelets
    /// list every family in the same container order, so this guess usually
    /// saves the hash lookup.
    next: [usize; 3],
    /// The family of the previous sample, reused while the name repeats.
    family: Option<Family>,
}

impl Default for Accumulator<'_> {
    fn default() -> Self {
        Accumulator {
            node: NodeSample {
                cpu_seconds: f64::NAN,
                memory_bytes: f64::NAN,
                timestamp_ms: 0,
            },
            rows: Vec::new(),
            index: HashMap::with_capacity_and_hasher(256, KeyHashBuilder::new()),
            next: [0; 3],
            family: None,
        }
    }
}

/// A word-at-a-time multiplicative hash for row keys, seeded once per process
/// from std's random keys. SipHash was a tenth of the parse time; a per-process
/// random seed keeps colliding keys from being precomputed.
#[derive(Clone, Copy)]
struct KeyHashBuilder(u64);

impl KeyHashBuilder {
    fn new() -> Self {
        static SEED: OnceLock<u64> = OnceLock::new();
        KeyHashBuilder(*SEED.get_or_init(|| RandomState::new().hash_one(0x6b75_6265_u64) | 1))
    }
}

impl BuildHasher for KeyHashBuilder {
    type Hasher = KeyHasher;
    fn build_hasher(&self) -> KeyHasher {
        KeyHasher(self.0)
    }
}

struct KeyHasher(u64);

impl KeyHasher {
    #[inline(always)]
    fn mix(&mut self, word: u64) {
        const K: u64 = 0xf135_7aea_2e62_a9c5;
        self.0 = (self.0 ^ word).wrapping_mul(K).rotate_left(26);
    }
}

impl Hasher for KeyHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            let mut word = [0u8; 8];
            word.copy_from_slice(chunk);
            self.mix(u64::from_le_bytes(word));
        }
        let tail = chunks.remainder();
        let mut word = [0u8; 8];
        word[..tail.len()].copy_from_slice(tail);
        // The length goes in with the tail so "ab"+"c" and "a"+"bc" differ.
        self.mix(u64::from_le_bytes(word) ^ ((bytes.len() as u64) << 56));
    }

    #[inline]
    fn write_u8(&mut self, i: u8) {
        self.mix(u64::from(i));
    }

    #[inline]
    fn finish(&self) -> u64 {
        // Final avalanche so hashbrown's top-7-bit tags are well spread.
        let mut h = self.0;
        h ^= h >> 33;
        h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
        h ^ (h >> 33)
    }
}

impl<'a> Accumulator<'a> {
    #[inline]
    fn add(&mut self, s: &Sample<'a>) {
        if !s.repeated_name {
            self.family = Family::of(s.name);
        }
        let Some(family) = self.family else {
            return;
        };
        let slot = match family {
            Family::NodeCpu => {
                self.node.cpu_seconds = usable(s.value);
                self.node.timestamp_ms = s.timestamp_ms.unwrap_or(0);
                return;
            }
            Family::NodeMemory => {
                self.node.memory_bytes = usable(s.value);
                return;
            }
            Family::ContainerCpu => 0,
            Family::ContainerMemory => 1,
            Family::ContainerStart => 2,
        };
        let (Some(ns), Some(pod), Some(container)) = (s.namespace, s.pod, s.container) else {
            return;
        };
        if ns.raw.is_empty() || pod.raw.is_empty() || container.raw.is_empty() {
            return;
        }
        let key = (ns, pod, container);
        let i = self.row(slot, key);
        let row = &mut self.rows[i];
        match family {
            Family::ContainerCpu => {
                row.cpu_seconds = usable(s.value);
                row.timestamp_ms = s.timestamp_ms.unwrap_or(0);
            }
            Family::ContainerMemory => row.memory_bytes = usable(s.value),
            _ => row.start_time_seconds = usable(s.value),
        }
    }

    /// The row for `key`, created if new.
    #[inline]
    fn row(&mut self, slot: usize, key: Key<'a>) -> usize {
        let guess = self.next[slot];
        let i = match self.rows.get(guess) {
            Some(row) if row.key == key => guess,
            _ => match self.index.entry(key) {
                Entry::Occupied(e) => *e.get(),
                Entry::Vacant(e) => {
                    let i = self.rows.len();
                    e.insert(i);
                    self.rows.push(Row {
                        key,
                        cpu_seconds: f64::NAN,
                        memory_bytes: f64::NAN,
                        start_time_seconds: f64::NAN,
                        timestamp_ms: 0,
                    });
                    i
                }
            },
        };
        self.next[slot] = i + 1;
        i
    }

    fn finish(self) -> Batch {
        let n = self.rows.len();
        let mut c = ContainerColumns {
            namespace: Vec::with_capacity(n),
            pod: Vec::with_capacity(n),
            container: Vec::with_capacity(n),
            cpu_seconds: Vec::with_capacity(n),
            memory_bytes: Vec::with_capacity(n),
            start_time_seconds: Vec::with_capacity(n),
            timestamp_ms: Vec::with_capacity(n),
        };
        for row in self.rows {
            let (ns, pod, container) = row.key;
            c.namespace.push(ns.decode());
            c.pod.push(pod.decode());
            c.container.push(container.decode());
            c.cpu_seconds.push(row.cpu_seconds);
            c.memory_bytes.push(row.memory_bytes);
            c.start_time_seconds.push(row.start_time_seconds);
            c.timestamp_ms.push(row.timestamp_ms);
        }
        Batch {
            node: self.node,
            containers: c,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(text: &str) -> Batch {
        match parse(text.as_bytes()) {
            Ok(b) => b,
            Err(e) => panic!("{e} in {text:?}"),
        }
    }

    fn fails(text: &[u8]) -> ParseError {
        match parse(text) {
            Ok(b) => panic!("accepted {:?}: {b:?}", String::from_utf8_lossy(text)),
            Err(e) => e,
        }
    }

    fn assert_err(text: &str, line: usize, needle: &str) {
        let e = fails(text.as_bytes());
        assert_eq!(e.line, line, "{e} for {text:?}");
        assert!(
            e.message.contains(needle),
            "{e:?} lacks {needle:?} for {text:?}"
        );
    }

    /// Row index of (ns, pod, container), panicking if absent.
    fn row(b: &Batch, ns: &str, pod: &str, container: &str) -> usize {
        let c = &b.containers;
        (0..c.len())
            .find(|&i| c.namespace[i] == ns && c.pod[i] == pod && c.container[i] == container)
            .unwrap_or_else(|| panic!("no row {ns}/{pod}/{container} in {c:?}"))
    }

    fn fixture(name: &str) -> Vec<u8> {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../../shared/fixtures")
            .join(name);
        std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    #[test]
    fn kind_capture_decodes_one_node_and_seventy_containers() {
        let b = parse(&fixture("kind-v1.21-70-pods.txt")).unwrap();
        assert_eq!(b.containers.len(), 70);
        assert_eq!(b.node.cpu_seconds, 357.35491);
        assert_eq!(b.node.memory_bytes, 1.616273408e9);
        assert_eq!(b.node.timestamp_ms, 1633253809720);
        let i = row(&b, "kube-system", "coredns-558bd4d5db-4dpjz", "coredns");
        assert_eq!(b.containers.cpu_seconds[i], 4.710169);
        assert_eq!(b.containers.memory_bytes[i], 1.253376e7);
        assert_eq!(b.containers.timestamp_ms[i], 1633253812125);
        assert!(b.containers.start_time_seconds.iter().all(|v| v.is_nan()));
        assert!(b.containers.cpu_seconds.iter().all(|v| *v > 0.0));
        assert!(b.containers.memory_bytes.iter().all(|v| *v > 0.0));
    }

    #[test]
    fn current_kubelet_format_decodes() {
        let b = parse(&fixture("kubelet-v1.30-3-pods.txt")).unwrap();
        let c = &b.containers;
        assert_eq!(c.len(), 4);
        let i = row(
            &b,
            "payments-prod",
            "checkout-service-7c9d8f6b5-x2k9p",
            "istio-proxy",
        );
        assert_eq!(c.cpu_seconds[i], 301.551842117);
        assert_eq!(c.memory_bytes[i], 6.119424e7);
        assert_eq!(c.start_time_seconds[i], 1.73499001e9);
        assert_eq!(c.timestamp_ms[i], 1735032833501);
        assert_eq!(b.node.cpu_seconds, 357841.104220332);
        assert_eq!(b.node.memory_bytes, 6.891237376e9);
        assert_eq!(b.node.timestamp_ms, 1735032836855);
        let pods: std::collections::HashSet<_> = c.pod.iter().collect();
        assert_eq!(pods.len(), 3);
    }

    #[test]
    fn families_join_in_any_order_and_labels_in_any_order() {
        let b = ok(concat!(
            "container_start_time_seconds{pod=\"p\",container=\"c\",namespace=\"n\"} 100\n",
            "container_memory_working_set_bytes{namespace=\"n\",container=\"c\",pod=\"p\",x=\"y\"} 2048 5\n",
            "container_cpu_usage_seconds_total{container=\"c\",pod=\"p\",namespace=\"n\",} 1.5 1234\n",
            "container_cpu_usage_seconds_total{container=\"d\",pod=\"p\",namespace=\"n\"} 2.5 1300\n",
        ));
        let c = &b.containers;
        assert_eq!(c.len(), 2);
        assert_eq!(
            (c.cpu_seconds[0], c.memory_bytes[0], c.start_time_seconds[0]),
            (1.5, 2048.0, 100.0)
        );
        assert_eq!(
            c.timestamp_ms[0], 1234,
            "the CPU sample's time, not memory's"
        );
        assert_eq!(c.container[1], "d");
        assert!(c.memory_bytes[1].is_nan() && c.start_time_seconds[1].is_nan());
        assert!(b.node.cpu_seconds.is_nan() && b.node.memory_bytes.is_nan());
        assert_eq!(b.node.timestamp_ms, 0);
    }

    #[test]
    fn node_timestamp_comes_from_cpu_and_missing_timestamps_are_zero() {
        let b = ok("node_memory_working_set_bytes 10 999\nnode_cpu_usage_seconds_total 3\n");
        assert_eq!(
            (b.node.cpu_seconds, b.node.memory_bytes, b.node.timestamp_ms),
            (3.0, 10.0, 0)
        );
        let b = ok("node_cpu_usage_seconds_total{extra=\"1\"} 3 -5");
        assert_eq!(b.node.timestamp_ms, -5);
    }

    #[test]
    fn unusable_values_are_missing() {
        let b = ok(concat!(
            "node_cpu_usage_seconds_total NaN 1\n",
            "node_memory_working_set_bytes -1\n",
            "container_cpu_usage_seconds_total{namespace=\"n\",pod=\"p\",container=\"c\"} +Inf 7\n",
            "container_memory_working_set_bytes{namespace=\"n\",pod=\"p\",container=\"c\"} -Inf\n",
            "container_start_time_seconds{namespace=\"n\",pod=\"p\",container=\"c\"} -0\n",
        ));
        assert!(b.node.cpu_seconds.is_nan() && b.node.memory_bytes.is_nan());
        assert_eq!(b.node.timestamp_ms, 1);
        let c = &b.containers;
        assert!(c.cpu_seconds[0].is_nan() && c.memory_bytes[0].is_nan());
        assert_eq!(c.start_time_seconds[0].to_bits(), 0.0f64.to_bits());
        assert_eq!(c.timestamp_ms[0], 7);
    }

    #[test]
    fn container_series_without_their_labels_are_ignored() {
        let b = ok(concat!(
            "container_cpu_usage_seconds_total{namespace=\"n\",pod=\"p\"} 1\n",
            "container_cpu_usage_seconds_total{namespace=\"n\",container=\"c\"} 1\n",
            "container_cpu_usage_seconds_total{pod=\"p\",container=\"c\"} 1\n",
            "container_cpu_usage_seconds_total{namespace=\"\",pod=\"p\",container=\"c\"} 1\n",
            "container_memory_working_set_bytes 5\n",
            "pod_cpu_usage_seconds_total{namespace=\"n\",pod=\"p\"} 1\n",
        ));
        assert!(b.containers.is_empty());
    }

    #[test]
    fn escapes_are_decoded_and_key_rows() {
        let b = ok(concat!(
            "container_cpu_usage_seconds_total{namespace=\"a\\\\b\",pod=\"q\\\"x\\\"\",container=\"l1\\nl2\"} 1\n",
            "container_memory_working_set_bytes{container=\"l1\\nl2\",pod=\"q\\\"x\\\"\",namespace=\"a\\\\b\"} 2\n",
            "container_cpu_usage_seconds_total{namespace=\"ü\",pod=\"日本\",container=\"c\"} 3\n",
        ));
        let c = &b.containers;
        assert_eq!(c.len(), 2);
        assert_eq!(
            (c.namespace[0].as_str(), c.pod[0].as_str()),
            ("a\\b", "q\"x\"")
        );
        assert_eq!(c.container[0], "l1\nl2");
        assert_eq!(c.memory_bytes[0], 2.0);
        assert_eq!((c.namespace[1].as_str(), c.pod[1].as_str()), ("ü", "日本"));
    }

    #[test]
    fn whitespace_comments_and_line_endings_are_tolerated() {
        let text = concat!(
            "\n",
            "   # a plain comment\n",
            "#\n",
            "# HELP\n",
            "# HELP node_cpu_usage_seconds_total help with \\\\ and \\n and \\q\n",
            "#TYPE node_cpu_usage_seconds_total counter\r\n",
            "\t\n",
            "\r\n",
            "  node_cpu_usage_seconds_total \t  1.5e3\t\t 17  \r\n",
            "container_cpu_usage_seconds_total { namespace = \"n\" , pod=\"p\",\tcontainer=\"c\" , } 5. +8\n",
            "container_memory_working_set_bytes{namespace=\"n\",pod=\"p\",container=\"c\"}.5",
        );
        let b = ok(text);
        assert_eq!((b.node.cpu_seconds, b.node.timestamp_ms), (1500.0, 17));
        let c = &b.containers;
        assert_eq!(
            (c.cpu_seconds[0], c.memory_bytes[0], c.timestamp_ms[0]),
            (5.0, 0.5, 8)
        );
        assert_eq!(ok("").containers.len(), 0);
        assert_eq!(ok("\n\n# x\n").containers.len(), 0);
    }

    #[test]
    fn repeated_series_keep_the_last_sample() {
        let b = ok("node_cpu_usage_seconds_total 1 1\nnode_cpu_usage_seconds_total 2 2\n");
        assert_eq!((b.node.cpu_seconds, b.node.timestamp_ms), (2.0, 2));
    }

    #[test]
    fn syntax_errors_name_the_line_and_the_problem() {
        let ok_line = "node_memory_working_set_bytes 1\n";
        let cases: &[(&str, &str)] = &[
            ("x{a=\"b} 1\n", "unterminated value of label a"),
            ("x{a=\"b", "unterminated value of label a"),
            ("x{a=\"b\\\"} 1", "unterminated value of label a"),
            ("x{a=\"b\\x\"} 1", "invalid escape sequence '\\x'"),
            ("x{a=\"b\" 1", "expected ',' or '}'"),
            ("x{a=\"b\",", "unterminated label set"),
            ("x{a=b} 1", "'\"' to open the value of label a"),
            ("x{a} 1", "'=' after label name a"),
            ("x{1a=\"b\"} 1", "a label name or '}'"),
            ("x{,} 1", "a label name or '}'"),
            ("x{__name__=\"y\"} 1", "reserved"),
            ("x{pod=\"a\",pod=\"b\"} 1", "duplicate label pod"),
            ("x 1.2.3", "invalid value \"1.2.3\""),
            ("x 0x1p3", "invalid value"),
            ("x 1_000", "invalid value"),
            ("x +NaN", "invalid value"),
            ("x 1e999", "invalid value"),
            ("x", "missing value for x"),
            ("x{}", "missing value for x"),
            ("x{} \r\n", "missing value for x"),
            ("x 1 1.5", "invalid timestamp \"1.5\""),
            ("x 1 9223372036854775808", "invalid timestamp"),
            ("x 1 2 3", "end of the line after the timestamp"),
            ("x 1 # comment", "invalid timestamp"),
            ("9x 1", "expected a metric name"),
            ("{a=\"b\"} 1", "expected a metric name"),
            ("x-y 1", "a space after the metric name"),
            ("x 1\r2", "a space or the end of the line"),
            ("# TYPE x countr", "unknown metric type \"countr\""),
            ("# TYPE x", ""),
            (
                "# TYPE x counter extra",
                "end of the line after the metric type",
            ),
            ("# TYPE x-y counter", "invalid metric name in # TYPE line"),
            ("# HELP 9x text", "invalid metric name in # HELP line"),
        ];
        for &(bad, needle) in cases {
            if bad == "# TYPE x" {
                // Go's parser accepts a TYPE line without a type; so do we.
                ok(bad);
                continue;
            }
            assert_err(bad, 1, needle);
            // Same error, reported on the right line, after good lines.
            assert_err(&format!("{ok_line}# c\n\n{bad}\n{ok_line}"), 4, needle);
        }
    }

    #[test]
    fn binary_garbage_and_huge_lines_are_rejected() {
        let e = fails(b"node_cpu_usage_seconds_total 1\n\xff\xfe\x00garbage\n");
        assert_eq!(e.line, 2);
        assert!(e.message.contains("invalid UTF-8"), "{e}");
        let e = fails(b"\x00\x01\x02");
        assert!(e.message.contains("metric name"), "{e}");

        let long = format!("x{{a=\"{}\"}} 1\n", "v".repeat(text::MAX_LINE_BYTES));
        let e = fails(format!("# ok\n{long}").as_bytes());
        assert_eq!(e.line, 2);
        assert!(e.message.contains("line too long"), "{e}");
        let e = fails(format!("x{{a=\"{}", "v".repeat(200_000)).as_bytes());
        assert!(e.message.contains("line too long"), "{e}");
        let e = fails(format!("# {}", "c".repeat(text::MAX_LINE_BYTES + 1)).as_bytes());
        assert!(e.message.contains("line too long"), "{e}");
        // Just under the limit is fine.
        let fits = format!("x{{a=\"{}\"}} 1\n", "v".repeat(text::MAX_LINE_BYTES - 20));
        ok(&fits);
    }

    #[test]
    fn every_prefix_and_byte_flip_of_a_payload_is_handled() {
        // Cheap in-tree fuzzing: no input may panic, and errors carry a sane line.
        let base = fixture("kubelet-v1.30-3-pods.txt");
        let lines = 1 + base.iter().filter(|&&c| c == b'\n').count();
        for cut in 0..base.len() {
            if let Err(e) = parse(&base[..cut]) {
                assert!(e.line >= 1 && e.line <= lines, "{e}");
            }
        }
        for i in (0..base.len()).step_by(7) {
            for flip in [
                b'"', b'\\', b'{', b'}', b' ', b'\n', b'\r', b'#', b'=', b',', 0xff,
            ] {
                let mut m = base.clone();
                m[i] = flip;
                if let Err(e) = parse(&m) {
                    assert!(e.line >= 1 && e.line <= lines, "{e}");
                }
            }
        }
    }
}
