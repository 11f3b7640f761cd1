//! Kubelet `/metrics/resource` text → [`Batch`]. (Filled in by the parser work.)

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

pub fn parse(_data: &[u8]) -> Result<Batch, ParseError> {
    Err(ParseError { line: 0, message: "not implemented".into() })
}
