//! A scripted HTTP server on 127.0.0.1 for the integration tests: hyper's
//! own server (HTTP/1.1, and HTTP/2 for clients that speak it with prior
//! knowledge), recording every request it receives (when, method, path,
//! version, body, trailers) and answering from a script.
//!
//! It runs under `#[tokio::test(start_paused = true)]`: its only timer is a
//! `tokio::time::sleep` for [`Reply::after`]. Paused time jumps ahead as
//! soon as the runtime is idle, even while bytes are still on their way
//! through the kernel: clients must set `TCP_NODELAY` (reqwest does;
//! hyper-util's `HttpConnector` needs `set_nodelay(true)`), or Nagle's
//! algorithm holds a small write until a delayed ACK, tens of milliseconds
//! of real time in which a pending timeout fires. The server sets it on
//! its side.
//!
//! For HTTP/2 (h2c, prior knowledge), use hyper-util's legacy client with
//! `http2_only(true)`: our reqwest is built without its `http2` feature.

#![allow(dead_code)] // each test binary uses part of it

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::Notify;
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;

/// One answer of the script.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
    pub delay: Duration,
    pub body: Bytes,
    /// See [`Reply::reset_after_reading`].
    pub reset_after: Option<usize>,
}

impl Reply {
    /// An answer with this status, no headers and an empty body, at once.
    pub fn status(status: u16) -> Self {
        Self {
            status,
            headers: Vec::new(),
            delay: Duration::ZERO,
            body: Bytes::new(),
            reset_after: None,
        }
    }

    /// Adds a response header.
    pub fn header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }

    /// Waits this long (tokio time) after reading the request body, before
    /// answering (or failing, with [`Reply::reset_after_reading`]).
    pub fn after(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }

    /// The response body (empty by default); `content-length` is set to
    /// its length.
    pub fn body(mut self, body: impl Into<Bytes>) -> Self {
        self.body = body.into();
        self
    }

    /// Does not answer: the server reads the request body until it has at
    /// least `n_bytes` (or the body ends), records what it read in
    /// [`Seen::body`], then fails the request. hyper closes the HTTP/1
    /// connection, or resets the HTTP/2 stream: the client sees a
    /// connection error, not a response. The status, headers and body of
    /// this reply are not used.
    pub fn reset_after_reading(mut self, n_bytes: usize) -> Self {
        self.reset_after = Some(n_bytes);
        self
    }
}

/// A request as the server saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    /// When the server had read the body (all of it, or as much as
    /// [`Reply::reset_after_reading`] asks for).
    pub at: Instant,
    pub method: String,
    /// The path and query, as in the request line.
    pub path: String,
    /// `HTTP_11` or `HTTP_2`.
    pub version: http::Version,
    /// The request body as the server received it.
    pub body: Vec<u8>,
    /// The request body's trailers, if it had any.
    pub trailers: Option<http::HeaderMap>,
}

/// A scripted server: the `n`th request (in the order request heads
/// arrive) takes the `n`th reply of the script; once the script has run
/// out, every request takes the default reply. [`Server::seen`] lists the
/// requests in the order their bodies were read; a request whose client
/// went away before that has taken its reply but is not listed.
#[derive(Clone)]
pub struct Server {
    pub addr: SocketAddr,
    state: Arc<State>,
    running: Arc<Mutex<Option<Running>>>,
}

/// What the requests share, across restarts.
struct State {
    seen: Mutex<Vec<Seen>>,
    script: Mutex<VecDeque<Reply>>,
    /// Answered once the script has run out.
    default: Mutex<Reply>,
    started: Instant,
}

/// The accept loop of a serving server, and how to stop it.
struct Running {
    stop: Arc<Notify>,
    task: JoinHandle<()>,
}

impl Server {
    /// Starts a server on a port the OS picks; it stops with the runtime
    /// (or at [`Server::stop`]).
    pub async fn start(script: Vec<Reply>, default: Reply) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let state = Arc::new(State {
            seen: Mutex::default(),
            script: Mutex::new(script.into()),
            default: Mutex::new(default),
            started: Instant::now(),
        });
        let server = Server {
            addr: listener.local_addr().unwrap(),
            state,
            running: Arc::default(),
        };
        server.serve(listener);
        server
    }

    /// `http://127.0.0.1:<port><path>`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Every request recorded so far (across restarts).
    pub fn seen(&self) -> Vec<Seen> {
        self.state.seen.lock().unwrap().clone()
    }

    /// When each request arrived, in milliseconds since the server started.
    pub fn arrivals_ms(&self) -> Vec<u128> {
        self.seen()
            .iter()
            .map(|s| (s.at - self.state.started).as_millis())
            .collect()
    }

    /// The reply once the script has run out.
    pub fn set_default(&self, reply: Reply) {
        *self.state.default.lock().unwrap() = reply;
    }

    /// Stops accepting and drops every open connection (requests in flight
    /// get no answer). When it returns, the port is closed: connecting to
    /// [`Server::addr`] is refused until [`Server::restart`]. The script,
    /// the default reply and what the server saw are kept. Does nothing on
    /// a stopped server.
    pub async fn stop(&self) {
        let running = self.running.lock().unwrap().take();
        if let Some(running) = running {
            running.stop.notify_one();
            running.task.await.unwrap();
        }
    }

    /// Serves again on the same port after [`Server::stop`], with the same
    /// script, default reply and record, as a server that has restarted.
    /// Does nothing on a running server.
    pub fn restart(&self) {
        if self.running.lock().unwrap().is_some() {
            return;
        }
        let socket = TcpSocket::new_v4().unwrap();
        socket.set_reuseaddr(true).unwrap();
        socket.bind(self.addr).unwrap();
        self.serve(socket.listen(1024).unwrap());
    }

    /// Spawns the accept loop; each connection is served by its own task,
    /// all of them dropped when the loop is told to stop.
    fn serve(&self, listener: TcpListener) {
        let stop = Arc::new(Notify::new());
        let state = self.state.clone();
        let told = stop.clone();
        let task = tokio::spawn(async move {
            let mut connections = JoinSet::new();
            loop {
                tokio::select! {
                    () = told.notified() => break,
                    Some(_) = connections.join_next(), if !connections.is_empty() => {}
                    accepted = listener.accept() => {
                        let Ok((conn, _)) = accepted else { continue };
                        connections.spawn(state.clone().connection(conn));
                    }
                }
            }
            drop(listener);
            connections.shutdown().await;
        });
        *self.running.lock().unwrap() = Some(Running { stop, task });
    }
}

/// The request was answered with [`Reply::reset_after_reading`].
#[derive(Debug)]
struct Reset;

impl std::fmt::Display for Reset {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("scripted reset")
    }
}

impl std::error::Error for Reset {}

impl State {
    /// Serves one connection, HTTP/1.1 or HTTP/2 as the client speaks.
    async fn connection(self: Arc<Self>, conn: tokio::net::TcpStream) {
        // Without it, Nagle's algorithm may hold an answer until the
        // client's delayed ACK (tens of ms of real time), while paused
        // time jumps ahead.
        let _ = conn.set_nodelay(true);
        let service = service_fn(move |request| self.clone().answer(request));
        // A failed connection (a client gone, a scripted reset) just ends.
        let _ = auto::Builder::new(TokioExecutor::new())
            .serve_connection(TokioIo::new(conn), service)
            .await;
    }

    async fn answer(
        self: Arc<Self>,
        request: Request<Incoming>,
    ) -> Result<Response<Full<Bytes>>, Reset> {
        let reply = self
            .script
            .lock()
            .unwrap()
            .pop_front()
            .unwrap_or_else(|| self.default.lock().unwrap().clone());
        let (head, mut incoming) = request.into_parts();
        let limit = reply.reset_after.unwrap_or(usize::MAX);
        let mut body = Vec::new();
        let mut trailers = None;
        while body.len() < limit {
            match incoming.frame().await {
                None => break,
                // The client went away: there is nobody to answer.
                Some(Err(_)) => return Err(Reset),
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => body.extend_from_slice(&data),
                    Err(frame) => trailers = frame.into_trailers().ok(),
                },
            }
        }
        self.seen.lock().unwrap().push(Seen {
            at: Instant::now(),
            method: head.method.to_string(),
            path: head
                .uri
                .path_and_query()
                .map_or("/", |p| p.as_str())
                .to_string(),
            version: head.version,
            body,
            trailers,
        });
        if !reply.delay.is_zero() {
            tokio::time::sleep(reply.delay).await;
        }
        if reply.reset_after.is_some() {
            return Err(Reset);
        }
        let mut response = Response::new(Full::new(reply.body));
        *response.status_mut() = StatusCode::from_u16(reply.status).unwrap();
        for (name, value) in reply.headers {
            response.headers_mut().append(name, value.parse().unwrap());
        }
        Ok(response)
    }
}

/// An address on 127.0.0.1 where nothing listens: connecting is refused.
pub async fn closed_port() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap()
}
