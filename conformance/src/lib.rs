//! conformance: CNI runtime for tests, sandbox pods, suites
