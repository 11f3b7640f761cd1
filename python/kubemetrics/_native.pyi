"""Type stub for the Rust extension (rust/py): the whole native surface."""

__version__: str
