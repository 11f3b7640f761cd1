//! Any bytes in: `parse` must return Ok or Err, never panic, and what it
//! returns must be self-consistent.
#![no_main]

use kubemetrics_core::parse::parse;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    match parse(data) {
        Ok(batch) => {
            let c = &batch.containers;
            let n = c.namespace.len();
            assert!([
                c.pod.len(),
                c.container.len(),
                c.cpu_seconds.len(),
                c.memory_bytes.len()
            ]
            .iter()
            .chain([c.start_time_seconds.len(), c.timestamp_ms.len()].iter())
            .all(|&len| len == n));
            // Usage values are either missing (NaN) or finite and non-negative.
            for v in c
                .cpu_seconds
                .iter()
                .chain(&c.memory_bytes)
                .chain(&c.start_time_seconds)
            {
                assert!(v.is_nan() || (v.is_finite() && *v >= 0.0));
            }
            // Rows are unique keys, all non-empty.
            let mut keys: Vec<_> = (0..n)
                .map(|i| (&c.namespace[i], &c.pod[i], &c.container[i]))
                .collect();
            assert!(keys
                .iter()
                .all(|k| !k.0.is_empty() && !k.1.is_empty() && !k.2.is_empty()));
            keys.sort();
            keys.dedup();
            assert_eq!(keys.len(), n);
            // A payload that parsed is text, so it has a line count bound for errors below.
            assert!(std::str::from_utf8(data).is_ok());
        }
        Err(e) => {
            let lines = 1 + data.iter().filter(|&&b| b == b'\n').count();
            assert!(e.line >= 1 && e.line <= lines, "line {} of {lines}", e.line);
            assert!(!e.message.is_empty());
        }
    }
});
