//! Request ids and trace context: the `X-Request-Id` a client sent, when it is sane, else one made
//! here; and W3C Trace Context's `traceparent`, kept when it is well-formed. Both go into the
//! access log and back in the answer's headers, so a client, a proxy and this log can name the
//! same request.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{SystemTime, UNIX_EPOCH};

use hyper::header::HeaderMap;

/// The request id header.
pub const REQUEST_ID: &str = "x-request-id";
/// W3C Trace Context's header.
pub const TRACEPARENT: &str = "traceparent";
/// The longest client id kept; longer ones are replaced.
const MAX_ID_LEN: usize = 128;

/// The request's id: the client's `X-Request-Id` when it is 1 to 128 visible ASCII characters
/// (no space, quote or backslash, so it logs and echoes unchanged), else a new one.
pub fn request_id(headers: &HeaderMap) -> String {
    headers
        .get(REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|id| is_sane(id))
        .map_or_else(new_id, str::to_owned)
}

fn is_sane(id: &str) -> bool {
    (1..=MAX_ID_LEN).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\')
}

/// A new id: 32 lowercase hex digits (128 bits, the shape of a trace id), from the time, the
/// process id and a counter, hashed with keys drawn at random once per process (std's
/// `RandomState`), so ids neither repeat nor reveal the counter.
pub fn new_id() -> String {
    static KEYS: OnceLock<RandomState> = OnceLock::new();
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let keys = KEYS.get_or_init(RandomState::new);
    let n = COUNTER.fetch_add(1, Relaxed);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let half = |salt: u8| {
        let mut h = keys.build_hasher();
        h.write_u8(salt);
        h.write_u128(nanos);
        h.write_u32(std::process::id());
        h.write_u64(n);
        h.finish()
    };
    format!("{:016x}{:016x}", half(1), half(2))
}

/// The request's `traceparent` when it is well-formed (W3C Trace Context level 1): version,
/// trace id, parent id and flags in lowercase hex, version not `ff`, ids not all zero, and for
/// version `00` nothing more. A malformed one is dropped, as the specification says.
pub fn traceparent(headers: &HeaderMap) -> Option<String> {
    let mut values = headers.get_all(TRACEPARENT).iter();
    let value = values.next()?.to_str().ok()?.trim();
    if values.next().is_some() {
        return None;
    }
    let b = value.as_bytes();
    if b.len() < 55 || (b.len() > 55 && b[55] != b'-') {
        return None;
    }
    let hex = |range: std::ops::Range<usize>| {
        b[range]
            .iter()
            .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(c))
    };
    let nonzero = |range: std::ops::Range<usize>| b[range].iter().any(|&c| c != b'0');
    let shaped = hex(0..2)
        && b[2] == b'-'
        && hex(3..35)
        && b[35] == b'-'
        && hex(36..52)
        && b[52] == b'-'
        && hex(53..55);
    let version = &value[..2];
    let ok = shaped
        && version != "ff"
        && (version != "00" || b.len() == 55)
        && nonzero(3..35)
        && nonzero(36..52);
    ok.then(|| value.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::header::HeaderValue;

    fn with(name: &'static str, value: &[u8]) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(name, HeaderValue::from_bytes(value).unwrap());
        h
    }

    #[test]
    fn a_sane_id_is_kept_and_others_are_replaced() {
        assert_eq!(
            request_id(&with(REQUEST_ID, b"abc-123_x.y:z")),
            "abc-123_x.y:z"
        );
        let made = request_id(&HeaderMap::new());
        assert_eq!(made.len(), 32);
        assert!(made.bytes().all(|c| c.is_ascii_hexdigit()));
        let long = "a".repeat(MAX_ID_LEN + 1);
        for bad in [
            long.as_bytes(),
            b"has space",
            b"tab\there",
            b"q\"uote",
            b"\xff\xfe",
        ] {
            let id = request_id(&with(REQUEST_ID, bad));
            assert_eq!(id.len(), 32, "{bad:?} replaced");
        }
        assert_eq!(
            request_id(&with(REQUEST_ID, "a".repeat(128).as_bytes())).len(),
            128
        );
    }

    #[test]
    fn made_ids_differ() {
        let ids: std::collections::HashSet<String> = (0..1000).map(|_| new_id()).collect();
        assert_eq!(ids.len(), 1000);
    }

    #[test]
    fn traceparent_is_kept_only_when_well_formed() {
        let good = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        assert_eq!(
            traceparent(&with(TRACEPARENT, good.as_bytes())).as_deref(),
            Some(good)
        );
        let future = "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra";
        assert!(traceparent(&with(TRACEPARENT, future.as_bytes())).is_some());
        for bad in [
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "garbage",
        ] {
            assert_eq!(
                traceparent(&with(TRACEPARENT, bad.as_bytes())),
                None,
                "{bad}"
            );
        }
        assert_eq!(traceparent(&HeaderMap::new()), None);
    }
}
