//! The access log: one event per request, and its count in the scoreboard.

use arbiter_scoreboard::{Route, SlotRef};
use tokio::time::Instant;

/// Counts and logs one request; if dropped unfinished (the client went away and the connection
/// dropped the handler), counts it as 499.
pub(crate) struct Record<'a> {
    slot: &'a SlotRef,
    route: Route,
    started: Instant,
    method: &'a str,
    path: &'a str,
    client: &'a str,
    done: bool,
}

impl<'a> Record<'a> {
    /// Starts recording a request that arrived at `started`: counts it in flight.
    pub(crate) fn begin(
        slot: &'a SlotRef,
        route: Route,
        started: Instant,
        method: &'a str,
        path: &'a str,
        client: &'a str,
    ) -> Record<'a> {
        slot.add_in_flight(1);
        Record {
            slot,
            route,
            started,
            method,
            path,
            client,
            done: false,
        }
    }

    /// Counts the request answered with `status` and `bytes` of body, and writes its access-log
    /// line.
    pub(crate) fn finish(&mut self, status: u16, bytes: u64) {
        self.done = true;
        let elapsed = self.started.elapsed();
        self.slot.add_in_flight(-1);
        self.slot.record_request(self.route, status, elapsed);
        tracing::info!(
            target: "arbiter::access",
            method = self.method,
            path = self.path,
            route = self.route.as_str(),
            status,
            duration_ms = elapsed.as_secs_f64() * 1e3,
            bytes,
            client = self.client,
            "request"
        );
    }
}

impl Drop for Record<'_> {
    fn drop(&mut self) {
        if !self.done {
            self.finish(499, 0);
        }
    }
}
