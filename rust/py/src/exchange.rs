//! The points sharded replicas exchange (`kubemetrics_core::store::exchange`):
//! bytes in, bytes out, and the names an import brought (one `str` per node,
//! none per container).

use kubemetrics_core::store::exchange::{decode, ExchangeError, Imported};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyBytes;

use crate::guarded;
use crate::store::Store;

/// `Store.export_points`: encode under the lock, GIL released.
pub(crate) fn export_points<'py>(
    store: &Store,
    py: Python<'py>,
    now_ms: i64,
    failing: Vec<String>,
) -> PyResult<Bound<'py, PyBytes>> {
    let body = py.detach(|| {
        guarded("exporting points", || {
            let names: Vec<&str> = failing.iter().map(String::as_str).collect();
            store.lock().export_points(now_ms, &names)
        })
    })?;
    Ok(PyBytes::new(py, &body))
}

/// `Store.import_points`: inflate and validate outside the lock, then merge
/// under it; a bad body raises ValueError and changes nothing.
pub(crate) fn import_points(
    store: &Store,
    py: Python<'_>,
    data: &[u8],
    now_ms: i64,
    max_decoded_bytes: usize,
) -> PyResult<(Vec<String>, Vec<String>)> {
    let imported: Imported = py.detach(|| {
        guarded("importing points", || {
            let decoded = decode(data, max_decoded_bytes)?;
            Ok::<_, ExchangeError>(store.lock().import_points(&decoded, now_ms))
        })?
        .map_err(|e| PyValueError::new_err(e.to_string()))
    })?;
    Ok((imported.nodes, imported.failing))
}
