//! Real TCP between namespaces: an echo server that counts accepted connections, and a probe
//! that connects and exchanges one byte within a deadline.

use crate::sandbox::Netns;
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// True when a TCP connection from inside `from` to `to:port` is established and echoes one
/// byte back within `timeout`.
pub fn probe(from: &Netns, to: IpAddr, port: u16, timeout: Duration) -> bool {
    from.run(|| probe_here(SocketAddr::new(to, port), timeout))
        .unwrap_or(false)
}

/// [`probe`] from the calling thread's namespace.
pub fn probe_here(addr: SocketAddr, timeout: Duration) -> bool {
    let Ok(mut s) = TcpStream::connect_timeout(&addr, timeout) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(timeout));
    let _ = s.set_write_timeout(Some(timeout));
    let mut b = [0u8; 1];
    s.write_all(b"p").is_ok() && s.read_exact(&mut b).is_ok() && &b == b"p"
}

/// A TCP echo server inside a namespace, stopped on Drop.
pub struct TcpServer {
    pub port: u16,
    accepts: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl TcpServer {
    /// Listens on `0.0.0.0:port` inside `ns`.
    pub fn start(ns: &Netns, port: u16) -> std::io::Result<TcpServer> {
        let listener = ns.run(|| TcpListener::bind(("0.0.0.0", port)))??;
        listener.set_nonblocking(true)?;
        let accepts = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (a, s) = (accepts.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((mut conn, _)) => {
                        a.fetch_add(1, Ordering::Relaxed);
                        std::thread::spawn(move || {
                            let _ = conn.set_nonblocking(false);
                            let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
                            let mut buf = [0u8; 4096];
                            while let Ok(n) = conn.read(&mut buf) {
                                if n == 0 || conn.write_all(&buf[..n]).is_err() {
                                    break;
                                }
                            }
                        });
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Ok(TcpServer {
            port,
            accepts,
            stop,
            thread: Some(thread),
        })
    }

    /// Connections accepted so far.
    pub fn accepts(&self) -> u64 {
        self.accepts.load(Ordering::Relaxed)
    }
}

impl Drop for TcpServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
