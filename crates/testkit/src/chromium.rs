//! Headless Chromium over the DevTools protocol: the `cdp` crate (shared
//! with the call-quality lab's browser mode), re-exported here so tests keep
//! using `testkit::chromium`, plus [`StaticServer`], a page server for tests.
//!
//! Pages are served from a real `http://127.0.0.1` origin ([`StaticServer`]):
//! a secure context, so `getUserMedia` and WebRTC behave as on a web site.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

pub use cdp::{
    chromium_binary, serde_json, spki_sha256_base64, Chromium, LaunchOptions, Page, Value,
};

/// A tiny HTTP server on 127.0.0.1 that answers every `GET` with one HTML
/// page (and `/favicon.ico` with 404). Stopped on drop.
#[derive(Debug)]
pub struct StaticServer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl StaticServer {
    /// Starts serving `html`.
    pub fn start(html: impl Into<String>) -> std::io::Result<StaticServer> {
        let html = html.into();
        let listener = TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            while !flag.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((conn, _)) => serve_one(conn, &html),
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(10));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        Ok(StaticServer {
            addr,
            stop,
            thread: Some(thread),
        })
    }

    /// `http://127.0.0.1:PORT/`.
    pub fn url(&self) -> String {
        format!("http://{}/", self.addr)
    }
}

impl Drop for StaticServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn serve_one(mut conn: TcpStream, html: &str) {
    let _ = conn.set_nonblocking(false);
    let _ = conn.set_read_timeout(Some(Duration::from_secs(2)));
    let _ = conn.set_write_timeout(Some(Duration::from_secs(2)));
    let mut head = Vec::new();
    let mut buf = [0u8; 2048];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 64 * 1024 {
        match conn.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    let request = String::from_utf8_lossy(&head);
    let path = request.split_whitespace().nth(1).unwrap_or("/");
    let (status, ctype, body) = if path.starts_with("/favicon") {
        ("404 Not Found", "text/plain", "")
    } else {
        ("200 OK", "text/html; charset=utf-8", html)
    };
    let _ = write!(
        conn,
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\n\
         Cache-Control: no-store\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = conn.flush();
    let _ = conn.shutdown(Shutdown::Write);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn static_server_serves_the_page() {
        let server = StaticServer::start("<p>hi</p>").unwrap();
        let port: u16 = server
            .url()
            .rsplit(':')
            .next()
            .unwrap()
            .trim_end_matches('/')
            .parse()
            .unwrap();
        let get = |path: &str| {
            let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
            let mut raw = String::new();
            s.read_to_string(&mut raw).unwrap();
            let (head, body) = raw.split_once("\r\n\r\n").unwrap();
            let status: u16 = head.split_whitespace().nth(1).unwrap().parse().unwrap();
            (status, body.as_bytes().to_vec())
        };
        assert_eq!(get("/"), (200, b"<p>hi</p>".to_vec()));
        assert_eq!(get("/any/path?x=1"), (200, b"<p>hi</p>".to_vec()));
        assert_eq!(get("/favicon.ico").0, 404);
        drop(server);
        assert!(TcpStream::connect(("127.0.0.1", port))
            .map(|mut s| {
                let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
                let mut b = [0u8; 1];
                matches!(s.read(&mut b), Ok(0) | Err(_))
            })
            .unwrap_or(true));
    }
}
