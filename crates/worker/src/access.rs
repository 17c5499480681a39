//! The access log: one event per request, and its count in the scoreboard.

use arbiter_scoreboard::{ModelRef, Route, SlotRef};
use tokio::time::Instant;

/// Counts and logs one request; if dropped unfinished (the client went away and the connection
/// dropped the handler), counts it as 499.
pub(crate) struct Record<'a> {
    slot: &'a SlotRef,
    route: Route,
    /// The model the request is for, once routing found it.
    model: Option<(ModelRef, String)>,
    started: Instant,
    method: &'a str,
    path: &'a str,
    client: &'a str,
    /// The request's id (`X-Request-Id`, the client's or made).
    request_id: &'a str,
    /// The client's W3C `traceparent`, when well-formed.
    traceparent: Option<&'a str>,
    done: bool,
}

impl<'a> Record<'a> {
    /// Starts recording a request that arrived at `started`: counts it in flight.
    pub(crate) fn begin(
        slot: &'a SlotRef,
        route: Route,
        started: Instant,
        request: (&'a str, &'a str),
        client: &'a str,
        trace: (&'a str, Option<&'a str>),
    ) -> Record<'a> {
        let ((method, path), (request_id, traceparent)) = (request, trace);
        slot.add_in_flight(1);
        Record {
            slot,
            route,
            model: None,
            started,
            method,
            path,
            client,
            request_id,
            traceparent,
            done: false,
        }
    }

    /// The request is for this model: it is counted in the model's metrics, and logged with its
    /// name.
    pub(crate) fn model(&mut self, stats: &ModelRef, name: &str) {
        self.model = Some((stats.clone(), name.to_owned()));
    }

    /// Counts the request answered with `status` and `bytes` of body, and writes its access-log
    /// line.
    pub(crate) fn finish(&mut self, status: u16, bytes: u64) {
        self.done = true;
        let elapsed = self.started.elapsed();
        self.slot.add_in_flight(-1);
        match &self.model {
            Some((stats, _)) => stats.record_request(self.route, status, elapsed),
            None => self.slot.record_request(self.route, status, elapsed),
        }
        tracing::info!(
            target: "arbiter::access",
            method = self.method,
            path = self.path,
            route = self.route.as_str(),
            model = self.model.as_ref().map_or("-", |(_, name)| name.as_str()),
            status,
            duration_ms = elapsed.as_secs_f64() * 1e3,
            bytes,
            client = self.client,
            request_id = self.request_id,
            traceparent = self.traceparent.unwrap_or("-"),
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
