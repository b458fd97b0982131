//! The Graph simulator: a stand-in for Microsoft's cloud used by tests and `entradir demo`.
