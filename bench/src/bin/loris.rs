//! The slowloris of `bench/overload.py` (`scripts/bench --overload`): `loris PORT N SECONDS`
//! holds N connections to 127.0.0.1:PORT for SECONDS, each sending the start of a request and
//! then a 16-byte header line a second, a header section that never ends, and reconnecting at
//! once when the server cuts it. At the end it prints one JSON line: connections opened, cut by
//! the server before the end, connects failed, and the status codes of the answers the server
//! sent before cutting (`{"503": .., "408": ..}`).
//!
//! It is Rust, on one thread, because it shares the machine's cores with the server it attacks:
//! the benchmark measures what the server's normal clients lose beside the attack, and an
//! attacker that takes a third of a core itself (as the Python asyncio one did, on 2 cores)
//! measured mostly the attacker. Every task ends at SECONDS: a read still waiting then ends
//! within its second and a connect within its 5 s timeout, so the program exits by itself at most
//! about 5 s after.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{Instant, sleep, timeout};

type Error = Box<dyn std::error::Error>;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const RETRY_AFTER: Duration = Duration::from_millis(100);
/// How long a connection waits for data before it sends the next header line.
const TRICKLE_EVERY: Duration = Duration::from_secs(1);
const REQUEST_START: &[u8] = b"GET /healthz HTTP/1.1\r\nHost: x\r\n";
/// 16 bytes.
const HEADER_LINE: &[u8] = b"X-Loris: 01234\r\n";

/// The counts printed at the end, each task's summed; fields in the order of the JSON line.
#[derive(Debug, Default, Serialize)]
struct Stats {
    connections: u64,
    cut: u64,
    connect_failed: u64,
    /// Status code (bytes 9..12 of a read that brought data) -> how many.
    answers: BTreeMap<String, u64>,
}

impl Stats {
    fn add(&mut self, other: Stats) {
        self.connections += other.connections;
        self.cut += other.cut;
        self.connect_failed += other.connect_failed;
        for (code, n) in other.answers {
            *self.answers.entry(code).or_default() += n;
        }
    }
}

/// One attacking connection after another, until `deadline`.
async fn attacker(port: u16, start_after: Duration, deadline: Instant) -> Stats {
    let mut stats = Stats::default();
    sleep(start_after).await;
    let mut buf = vec![0u8; 4096];
    while Instant::now() < deadline {
        let connect = timeout(CONNECT_TIMEOUT, TcpStream::connect(("127.0.0.1", port)));
        let Ok(Ok(mut stream)) = connect.await else {
            stats.connect_failed += 1;
            sleep(RETRY_AFTER).await;
            continue;
        };
        stats.connections += 1;
        // An I/O error ends the connection as EOF does: cut by the server.
        let _ = trickle(&mut stream, &mut buf, deadline, &mut stats).await;
        drop(stream);
        if Instant::now() < deadline {
            stats.cut += 1;
        }
    }
    stats
}

/// Sends the request's start, then a header line whenever a second passes without data, counting
/// the answers read, until EOF or `deadline`.
async fn trickle(
    stream: &mut TcpStream,
    buf: &mut [u8],
    deadline: Instant,
    stats: &mut Stats,
) -> std::io::Result<()> {
    stream.write_all(REQUEST_START).await?;
    while Instant::now() < deadline {
        let n = match timeout(TRICKLE_EVERY, stream.read(buf)).await {
            Err(_) => {
                stream.write_all(HEADER_LINE).await?;
                continue;
            }
            Ok(read) => read?,
        };
        if n == 0 {
            break;
        }
        let code = String::from_utf8_lossy(&buf[n.min(9)..n.min(12)]).into_owned();
        *stats.answers.entry(code).or_default() += 1;
    }
    Ok(())
}

/// Raises the open-file limit to its hard limit: N can be thousands of sockets.
fn raise_nofile() -> nix::Result<()> {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
    setrlimit(Resource::RLIMIT_NOFILE, hard, hard)
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [port, n, seconds] = args.as_slice() else {
        return Err("usage: loris PORT N SECONDS".into());
    };
    let port: u16 = port.parse()?;
    let n: u64 = n.parse()?;
    let seconds = Duration::try_from_secs_f64(seconds.parse()?)?;
    raise_nofile()?;
    let deadline = Instant::now() + seconds;
    // Task i starts i ms after the first, so that the connects come as a ramp, not a burst.
    let tasks: Vec<_> = (0..n)
        .map(|i| tokio::spawn(attacker(port, Duration::from_millis(i), deadline)))
        .collect();
    let mut stats = Stats::default();
    for task in tasks {
        stats.add(task.await?);
    }
    println!("{}", serde_json::to_string(&stats)?);
    Ok(())
}
