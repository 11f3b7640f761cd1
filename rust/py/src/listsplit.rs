//! `ListSplitter` and `ListError`: the door to `kubemetrics_core::listsplit`.

use kubemetrics_core::listsplit::{ListSplitter as CoreSplitter, SplitError};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyBytes;

pyo3::create_exception!(
    kubemetrics,
    ListError,
    PyValueError,
    "A list response that is not a whole JSON list, or whose item or envelope is too large."
);

fn err(e: SplitError) -> PyErr {
    ListError::new_err(e.to_string())
}

/// Splits one list response into its items' bytes as its chunks arrive.
#[pyclass(module = "kubemetrics._native", name = "ListSplitter")]
pub struct ListSplitter {
    inner: CoreSplitter,
}

#[pymethods]
impl ListSplitter {
    #[new]
    fn new(max_item: usize, max_envelope: usize) -> Self {
        ListSplitter {
            inner: CoreSplitter::new(max_item, max_envelope),
        }
    }

    /// The items these bytes complete, each its JSON bytes.
    fn feed<'py>(&mut self, py: Python<'py>, chunk: &[u8]) -> PyResult<Vec<Bound<'py, PyBytes>>> {
        let items = self.inner.feed(chunk).map_err(err)?;
        Ok(items.iter().map(|i| PyBytes::new(py, i)).collect())
    }

    /// After the last chunk: every top-level pair but the items, as a JSON object.
    fn finish<'py>(&mut self, py: Python<'py>) -> PyResult<Bound<'py, PyBytes>> {
        let env = self.inner.finish().map_err(err)?;
        Ok(PyBytes::new(py, &env))
    }
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<ListSplitter>()?;
    m.add("ListError", m.py().get_type::<ListError>())?;
    Ok(())
}
