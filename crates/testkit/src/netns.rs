//! Network namespaces for tests (being written).
