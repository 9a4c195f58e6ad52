//! Workloads for the side-by-side benchmarks, on real TCP: a multi-threaded server with a
//! per-connection handler (echo, sink), a client that times connect + one-byte echo, a
//! connection-rate loop and a bulk transfer; plus a worker thread that lives inside a
//! network namespace, and the RSS of a process.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// What a server does with each accepted connection (blocking socket, on the accepting
/// thread).
pub type Handler = Arc<dyn Fn(TcpStream) + Send + Sync>;

/// Echoes everything until the peer closes.
pub fn echo_handler() -> Handler {
    Arc::new(|mut s: TcpStream| {
        let _ = s.set_nodelay(true);
        let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
        let mut buf = [0u8; 4096];
        while let Ok(n) = s.read(&mut buf) {
            if n == 0 || s.write_all(&buf[..n]).is_err() {
                break;
            }
        }
    })
}

/// Reads until the peer shuts down its side, then answers the byte count (8 bytes, big
/// endian) and closes.
pub fn sink_handler() -> Handler {
    Arc::new(|mut s: TcpStream| {
        let _ = s.set_read_timeout(Some(Duration::from_secs(30)));
        let mut buf = vec![0u8; 256 * 1024];
        let mut total: u64 = 0;
        loop {
            match s.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => total += n as u64,
                Err(_) => return,
            }
        }
        let _ = s.write_all(&total.to_be_bytes());
    })
}

/// A server: `threads` threads accepting on one listener, each running the handler on the
/// connections it accepts. Stopped (threads joined) on Drop.
pub struct Server {
    pub addr: SocketAddr,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl Server {
    /// Serves `listener` (already bound, e.g. inside a pod namespace).
    pub fn start(
        listener: TcpListener,
        threads: usize,
        handler: Handler,
    ) -> std::io::Result<Server> {
        let addr = listener.local_addr()?;
        listener.set_nonblocking(true)?;
        let listener = Arc::new(listener);
        let stop = Arc::new(AtomicBool::new(false));
        let threads = (0..threads.max(1))
            .map(|_| {
                let (l, s, h) = (listener.clone(), stop.clone(), handler.clone());
                std::thread::spawn(move || accept_loop(&l, &s, &h))
            })
            .collect();
        Ok(Server {
            addr,
            stop,
            threads,
        })
    }
}

fn accept_loop(l: &TcpListener, stop: &AtomicBool, h: &Handler) {
    while !stop.load(Ordering::Relaxed) {
        let mut pfd = libc::pollfd {
            fd: l.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd; 100 ms so that Drop is noticed.
        let r = unsafe { libc::poll(&mut pfd, 1, 100) };
        if r <= 0 {
            continue;
        }
        if let Ok((conn, _)) = l.accept() {
            if conn.set_nonblocking(false).is_ok() {
                h(conn);
            }
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// Connect + write one byte + read the echo, timed from before connect to after the echo.
/// The connection is closed after the clock stops.
pub fn connect_echo(addr: SocketAddr, timeout: Duration) -> std::io::Result<Duration> {
    let start = Instant::now();
    let mut s = TcpStream::connect_timeout(&addr, timeout)?;
    s.set_nodelay(true)?;
    s.set_read_timeout(Some(timeout))?;
    s.write_all(b"x")?;
    let mut b = [0u8; 1];
    s.read_exact(&mut b)?;
    let took = start.elapsed();
    if &b != b"x" {
        return Err(std::io::Error::other("echo returned a different byte"));
    }
    Ok(took)
}

/// [`connect_echo`] in a loop until `until`: (connections that worked, that failed).
pub fn rate_loop(addr: SocketAddr, until: Instant, timeout: Duration) -> (u64, u64) {
    let (mut ok, mut failed) = (0, 0);
    while Instant::now() < until {
        match connect_echo(addr, timeout) {
            Ok(_) => ok += 1,
            Err(_) => failed += 1,
        }
    }
    (ok, failed)
}

/// `clients` threads running [`rate_loop`] for `window`, started by the calling thread (so
/// inside its network namespace): (connections per second, failures).
pub fn rate(addr: SocketAddr, clients: usize, window: Duration, timeout: Duration) -> (f64, u64) {
    let start = Instant::now();
    let until = start + window;
    let results: Vec<(u64, u64)> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..clients)
            .map(|_| s.spawn(move || rate_loop(addr, until, timeout)))
            .collect();
        hs.into_iter().map(|h| h.join().unwrap_or((0, 0))).collect()
    });
    let secs = start.elapsed().as_secs_f64();
    let ok: u64 = results.iter().map(|r| r.0).sum();
    let failed: u64 = results.iter().map(|r| r.1).sum();
    (ok as f64 / secs, failed)
}

/// Sends `bytes` on one connection to a [`sink_handler`] server: the time from the first
/// byte written (after the handshake) until the server confirmed the count.
pub fn bulk(addr: SocketAddr, bytes: u64, timeout: Duration) -> std::io::Result<Duration> {
    let mut s = TcpStream::connect_timeout(&addr, timeout)?;
    s.set_read_timeout(Some(Duration::from_secs(60)))?;
    let chunk = vec![0x5au8; 256 * 1024];
    let start = Instant::now();
    let mut left = bytes;
    while left > 0 {
        let n = left.min(chunk.len() as u64) as usize;
        s.write_all(&chunk[..n])?;
        left -= n as u64;
    }
    s.shutdown(Shutdown::Write)?;
    let mut count = [0u8; 8];
    s.read_exact(&mut count)?;
    let took = start.elapsed();
    let got = u64::from_be_bytes(count);
    if got != bytes {
        return Err(std::io::Error::other(format!(
            "server received {got} bytes, sent {bytes}"
        )));
    }
    Ok(took)
}

type Job = Box<dyn FnOnce() + Send>;

/// A thread that lives inside a network namespace and runs closures there, one at a time
/// (sockets it creates belong to that namespace; threads it spawns start there too).
pub struct NsWorker {
    tx: Option<mpsc::Sender<Job>>,
    thread: Option<JoinHandle<()>>,
}

impl NsWorker {
    /// Starts the thread and enters the namespace at `path` (e.g. `/var/run/netns/NAME`).
    pub fn new(path: &Path) -> std::io::Result<NsWorker> {
        let ns = std::fs::File::open(path)?;
        let (tx, rx) = mpsc::channel::<Job>();
        let (ready_tx, ready_rx) = mpsc::channel::<std::io::Result<()>>();
        let thread = std::thread::spawn(move || {
            let r = nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET)
                .map_err(std::io::Error::from);
            let ok = r.is_ok();
            let _ = ready_tx.send(r);
            if ok {
                for job in rx {
                    job();
                }
            }
        });
        ready_rx
            .recv()
            .map_err(|_| std::io::Error::other("namespace worker died"))??;
        Ok(NsWorker {
            tx: Some(tx),
            thread: Some(thread),
        })
    }

    /// Runs `f` inside the namespace and returns its result.
    pub fn call<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        let (tx, rx) = mpsc::channel();
        self.tx
            .as_ref()
            .expect("worker alive")
            .send(Box::new(move || {
                let _ = tx.send(f());
            }))
            .expect("namespace worker alive");
        rx.recv().expect("namespace job panicked")
    }
}

impl Drop for NsWorker {
    fn drop(&mut self) {
        self.tx.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Resident set size of a process in KiB (`VmRSS` in `/proc/PID/status`).
pub fn rss_kib(pid: u32) -> std::io::Result<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    parse_vm_rss(&s).ok_or_else(|| std::io::Error::other(format!("no VmRSS for pid {pid}")))
}

/// `VmRSS:   1234 kB` → 1234.
pub fn parse_vm_rss(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// CPU time a process has used (user + system), from `/proc/PID/stat`.
pub fn cpu_time(pid: u32) -> std::io::Result<Duration> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let ticks = parse_stat_ticks(&s)
        .ok_or_else(|| std::io::Error::other(format!("unreadable /proc/{pid}/stat")))?;
    // SAFETY: plain sysconf.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Ok(Duration::from_nanos(ticks * 1_000_000_000 / hz))
}

/// utime + stime (fields 14 and 15) of a `/proc/PID/stat` line, in clock ticks.
pub fn parse_stat_ticks(stat: &str) -> Option<u64> {
    // The command name (field 2) may contain spaces; count from its closing parenthesis.
    let mut rest = stat.get(stat.rfind(')')? + 1..)?.split_whitespace();
    let utime: u64 = rest.nth(11)?.parse().ok()?;
    let stime: u64 = rest.next()?.parse().ok()?;
    Some(utime + stime)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loopback(h: Handler) -> Server {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        Server::start(l, 4, h).unwrap()
    }

    #[test]
    fn echo_round_trip_and_rate_count_real_connections() {
        let srv = loopback(echo_handler());
        let d = connect_echo(srv.addr, Duration::from_secs(2)).unwrap();
        assert!(d > Duration::ZERO);
        let (per_sec, failed) = rate(
            srv.addr,
            2,
            Duration::from_millis(200),
            Duration::from_secs(2),
        );
        assert!(per_sec > 0.0);
        assert_eq!(failed, 0);
    }

    #[test]
    fn connect_echo_fails_without_a_server() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        drop(l);
        assert!(connect_echo(addr, Duration::from_millis(500)).is_err());
    }

    #[test]
    fn bulk_is_confirmed_by_the_sink_count() {
        let srv = loopback(sink_handler());
        bulk(srv.addr, 3 * 1024 * 1024 + 17, Duration::from_secs(2)).unwrap();
        // An echo server never answers a count: the transfer is not confirmed.
        let echo = loopback(echo_handler());
        assert!(bulk(echo.addr, 1024, Duration::from_secs(2)).is_err());
    }

    #[test]
    fn stat_ticks_are_parsed() {
        let line = "42 (a b) S 1 42 42 0 -1 4194560 100 0 0 0 7 5 0 0 20 0 1 0 99 1000 50";
        assert_eq!(parse_stat_ticks(line), Some(12));
        assert_eq!(parse_stat_ticks("garbage"), None);
        assert!(cpu_time(std::process::id()).is_ok());
    }

    #[test]
    fn vm_rss_is_parsed() {
        assert_eq!(parse_vm_rss("Name:\tx\nVmRSS:\t    5120 kB\n"), Some(5120));
        assert_eq!(parse_vm_rss("Name:\tx\n"), None);
        assert!(rss_kib(std::process::id()).unwrap() > 0);
    }

    #[test]
    fn worker_runs_in_the_namespace_it_entered() {
        crate::sandbox::require_root();
        // This process's own namespace: the worker sees the same inode.
        let w = NsWorker::new(Path::new("/proc/self/ns/net")).unwrap();
        let inside = w.call(|| std::fs::read_link("/proc/thread-self/ns/net").unwrap());
        assert_eq!(inside, std::fs::read_link("/proc/self/ns/net").unwrap());
        assert!(NsWorker::new(Path::new("/nonexistent")).is_err());
    }
}
