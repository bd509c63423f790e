//! The control socket: a Unix stream socket (mode 0600, owner only) that
//! `onionrtc ctl` talks to — drain the relay for maintenance, resume, show
//! its state, reload its configuration, change the log level.
//!
//! One request per connection: a line of text (at most [`MAX_LINE`] bytes,
//! read within [`IO_TIMEOUT`]); the answer is text lines, the first
//! starting with `ok` or `error`, then the connection closes. Requests are
//! handled one at a time on the control thread; what needs the running
//! relay (reload) is handed to the loop that owns it through a channel.

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::os::unix::fs::{FileTypeExt as _, PermissionsExt as _};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::Context as _;

/// Longest request line accepted.
pub const MAX_LINE: usize = 512;
/// Time a client has to send its request and read the answer.
pub const IO_TIMEOUT: Duration = Duration::from_secs(5);
/// How often the control thread looks at the stop flag.
const POLL: Duration = Duration::from_millis(100);

/// A request that the loop owning the relay answers.
#[derive(Debug)]
pub enum Request {
    /// Drain (`true`) or resume (`false`).
    Drain(bool),
    /// Show the state.
    Status,
    /// Read the configuration again and apply it (as SIGHUP does).
    Reload,
    /// Set the log filter (`tracing` `EnvFilter` syntax, e.g. `debug` or
    /// `info,relay=debug`).
    LogLevel(String),
}

/// A request and where its answer goes.
#[derive(Debug)]
pub struct Pending {
    /// What was asked.
    pub request: Request,
    /// The answer: `Ok(text)` or `Err(reason)`.
    pub reply: mpsc::Sender<Result<String, String>>,
}

/// Parses one request line.
pub fn parse(line: &str) -> Result<Request, String> {
    let mut words = line.split_whitespace();
    let cmd = words.next().unwrap_or("");
    let arg = words.next();
    let extra = words.next().is_some();
    let r = match (cmd, arg) {
        ("status", None) => Request::Status,
        ("drain", None) => Request::Drain(true),
        ("resume", None) => Request::Drain(false),
        ("reload", None) => Request::Reload,
        ("log-level", Some(f)) => Request::LogLevel(f.to_owned()),
        ("log-level", None) => {
            return Err("log-level needs a filter, e.g. `log-level debug`".into())
        }
        _ => {
            return Err(format!(
                "unknown command {cmd:?}; the commands are: status, drain, resume, reload, \
                 log-level FILTER"
            ))
        }
    };
    if extra || (arg.is_some() && !matches!(r, Request::LogLevel(_))) {
        return Err(format!("{cmd}: too many arguments"));
    }
    Ok(r)
}

/// The running control socket; [`ControlSocket::stop`] (or drop) stops the
/// thread and removes the socket file.
#[derive(Debug)]
pub struct ControlSocket {
    path: PathBuf,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl ControlSocket {
    /// Binds `path` (mode 0600) and answers requests, passing each to
    /// `requests` (which returns `false` when nobody takes them any more). A
    /// stale socket file (nobody listening) is replaced; a live one is an
    /// error: another relay uses it.
    pub fn start(
        path: &Path,
        requests: impl Fn(Pending) -> bool + Send + 'static,
    ) -> anyhow::Result<Self> {
        if let Ok(meta) = std::fs::symlink_metadata(path) {
            if !meta.file_type().is_socket() {
                anyhow::bail!(
                    "{} exists and is not a socket; refusing to replace it",
                    path.display()
                );
            }
            if UnixStream::connect(path).is_ok() {
                anyhow::bail!(
                    "{} is in use: another relay is running with this control socket",
                    path.display()
                );
            }
            std::fs::remove_file(path)
                .with_context(|| format!("cannot remove the stale {}", path.display()))?;
        }
        let listener = UnixListener::bind(path)
            .with_context(|| format!("cannot bind the control socket {}", path.display()))?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
            .with_context(|| format!("cannot restrict {} to its owner", path.display()))?;
        listener.set_nonblocking(true)?;
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let thread = std::thread::Builder::new()
            .name("relay-control".into())
            .spawn(move || serve(listener, requests, s))?;
        Ok(ControlSocket {
            path: path.to_owned(),
            stop,
            thread: Some(thread),
        })
    }

    /// The socket's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Stops the thread and removes the socket file.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

impl Drop for ControlSocket {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn serve(listener: UnixListener, requests: impl Fn(Pending) -> bool, stop: Arc<AtomicBool>) {
    while !stop.load(Ordering::Relaxed) {
        match listener.accept() {
            Ok((conn, _)) => {
                if let Err(e) = answer(conn, &requests) {
                    tracing::debug!("control socket: {e}");
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => std::thread::sleep(POLL),
            Err(e) => {
                tracing::warn!("control socket: accept failed: {e}");
                std::thread::sleep(POLL);
            }
        }
    }
}

fn answer(conn: UnixStream, requests: &impl Fn(Pending) -> bool) -> std::io::Result<()> {
    conn.set_nonblocking(false)?;
    conn.set_read_timeout(Some(IO_TIMEOUT))?;
    conn.set_write_timeout(Some(IO_TIMEOUT))?;
    let mut line = String::new();
    // One bounded line: a client cannot make us buffer more.
    let mut reader = BufReader::new((&conn).take(MAX_LINE as u64 + 1));
    reader.read_line(&mut line)?;
    let mut out = &conn;
    if line.len() > MAX_LINE {
        return writeln!(out, "error: request longer than {MAX_LINE} bytes");
    }
    let result = parse(line.trim()).and_then(|request| {
        let (tx, rx) = mpsc::channel();
        if !requests(Pending { request, reply: tx }) {
            return Err("the relay is stopping".to_owned());
        }
        rx.recv_timeout(IO_TIMEOUT * 2)
            .map_err(|_| "the relay did not answer".to_owned())?
    });
    match result {
        Ok(text) => write!(out, "ok\n{text}"),
        Err(e) => writeln!(out, "error: {e}"),
    }
}

/// Why [`call`] failed.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// Nobody listens on the socket.
    #[error("cannot connect to the control socket {path} (is the relay running with control_socket set?): {source}")]
    Unreachable {
        /// The socket path.
        path: String,
        /// The connect error.
        source: std::io::Error,
    },
    /// The relay answered with an error.
    #[error("{0}")]
    Refused(String),
    /// The exchange failed midway or the answer made no sense.
    #[error("control socket: {0}")]
    Broken(String),
}

/// Sends `request` (one line) to the control socket at `path` and returns
/// the answer; an `error: …` answer is [`CallError::Refused`].
pub fn call(path: &Path, request: &str) -> Result<String, CallError> {
    let mut conn = UnixStream::connect(path).map_err(|source| CallError::Unreachable {
        path: path.display().to_string(),
        source,
    })?;
    let broken = |e: std::io::Error| CallError::Broken(e.to_string());
    conn.set_read_timeout(Some(IO_TIMEOUT * 3))
        .map_err(broken)?;
    conn.set_write_timeout(Some(IO_TIMEOUT)).map_err(broken)?;
    writeln!(conn, "{request}").map_err(broken)?;
    let mut answer = String::new();
    // Answers are short; bound them anyway.
    conn.take(64 * 1024)
        .read_to_string(&mut answer)
        .map_err(broken)?;
    match answer.strip_prefix("ok\n") {
        Some(text) => Ok(text.to_owned()),
        None => match answer.strip_prefix("error: ") {
            Some(e) => Err(CallError::Refused(e.trim_end().to_owned())),
            None => Err(CallError::Broken(format!("unexpected answer {answer:?}"))),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_commands_and_refuses_the_rest() {
        assert!(matches!(parse("status"), Ok(Request::Status)));
        assert!(matches!(parse(" drain "), Ok(Request::Drain(true))));
        assert!(matches!(parse("resume"), Ok(Request::Drain(false))));
        assert!(matches!(parse("reload"), Ok(Request::Reload)));
        assert!(matches!(parse("log-level debug"), Ok(Request::LogLevel(f)) if f == "debug"));
        assert!(parse("log-level").is_err());
        assert!(parse("drain now").is_err());
        assert!(parse("log-level a b").is_err());
        assert!(parse("").is_err());
        assert!(parse("shutdown").is_err());
    }

    #[test]
    fn answers_over_the_socket_and_removes_it_on_stop() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("relay.sock");
        let (tx, rx) = mpsc::channel::<Pending>();
        let ctl = ControlSocket::start(&path, move |p| tx.send(p).is_ok()).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let owner = std::thread::spawn(move || {
            for _ in 0..3 {
                let Ok(p) = rx.recv_timeout(Duration::from_secs(10)) else {
                    return;
                };
                let text = match p.request {
                    Request::Status => Ok("draining: no\n".to_owned()),
                    Request::Drain(true) => Ok("draining: yes\n".to_owned()),
                    _ => Err("not in this test".to_owned()),
                };
                let _ = p.reply.send(text);
            }
        });
        assert_eq!(call(&path, "status").unwrap(), "draining: no\n");
        assert_eq!(call(&path, "drain").unwrap(), "draining: yes\n");
        let e = call(&path, "reload").unwrap_err().to_string();
        assert!(e.contains("not in this test"), "{e}");
        let e = call(&path, "bogus").unwrap_err().to_string();
        assert!(e.contains("unknown command"), "{e}");
        // An oversize request is refused without reading it all.
        let mut c = UnixStream::connect(&path).unwrap();
        let _ = c.write_all(&vec![b'a'; MAX_LINE * 4]);
        let mut answer = String::new();
        let _ = c.read_to_string(&mut answer);
        assert!(answer.starts_with("error: request longer"), "{answer:?}");
        // A second relay cannot take a live socket.
        let (tx2, _rx2) = mpsc::channel::<Pending>();
        assert!(ControlSocket::start(&path, move |p| tx2.send(p).is_ok()).is_err());
        ctl.stop();
        owner.join().unwrap();
        assert!(!path.exists(), "the socket file is removed on stop");
        // A stale socket file is replaced.
        let stale = UnixListener::bind(&path).unwrap();
        drop(stale);
        let (tx3, _rx3) = mpsc::channel::<Pending>();
        ControlSocket::start(&path, move |p| tx3.send(p).is_ok())
            .unwrap()
            .stop();
    }
}
