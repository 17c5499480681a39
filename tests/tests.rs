//! Integration tests: the real `arbiter` binary, real forked workers, real signals, real HTTP
//! over loopback. Each test is bounded in time. Tests that start an arbiter run one at a time
//! (see `util`): each loads the real ResNet50 on a 2-core machine.

mod util;

mod arbiter;
mod cli;
mod http;
mod programs;
mod reliability;
mod shared;
