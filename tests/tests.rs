//! Integration tests: the real `arbiter` binary, real forked workers, real signals, real HTTP
//! over loopback. Each test is bounded in time. Tests that start an arbiter run one at a time
//! (see `util`): their workers load real models on a 2-core machine, the ResNet50 where a test
//! checks its answers or its memory, a tiny model where it only needs a worker that serves.
//! Both need what `scripts/setup` makes (ONNX Runtime's library, the photos); a test that
//! misses a file says which, and to run it.

mod util;

mod arbiter;
mod cli;
mod http;
mod models;
mod programs;
mod reliability;
mod shared;
mod systemd;
mod trained;
