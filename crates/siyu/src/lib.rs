//! The `siyu` binary's command line: `serve`, `demo`, `import`, `segment`, `campaign`,
//! `token`, `wecom-sim`, and `bench` (which runs the separate `siyu-bench` binary). The
//! server itself is the `siyu-server` crate; integration tests start it from there.

pub mod cli;
