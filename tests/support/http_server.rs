//! A scripted HTTP/1.1 server on 127.0.0.1 for the integration tests: it
//! records every request it receives (when, method, path, body) and
//! answers from a script. Small on purpose: keep-alive connections,
//! `content-length` bodies, no chunked encoding.

#![allow(dead_code)] // each test binary uses part of it

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;

/// One answer of the script.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
    pub delay: Duration,
}

impl Reply {
    pub fn status(status: u16) -> Self {
        Self {
            status,
            headers: Vec::new(),
            delay: Duration::ZERO,
        }
    }

    pub fn header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }

    pub fn after(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }
}

/// A request as the server saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub at: Instant,
    pub method: String,
    pub path: String,
    pub body: Vec<u8>,
}

#[derive(Clone)]
pub struct Server {
    pub addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    script: Arc<Mutex<VecDeque<Reply>>>,
    /// Answered once the script has run out.
    default: Arc<Mutex<Reply>>,
    started: Instant,
}

impl Server {
    /// Starts a server on a port the OS picks; it stops with the runtime.
    pub async fn start(script: Vec<Reply>, default: Reply) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let server = Server {
            addr: listener.local_addr().unwrap(),
            seen: Arc::default(),
            script: Arc::new(Mutex::new(script.into())),
            default: Arc::new(Mutex::new(default)),
            started: Instant::now(),
        };
        let handle = server.clone();
        tokio::spawn(async move {
            while let Ok((conn, _)) = listener.accept().await {
                tokio::spawn(handle.clone().serve(conn));
            }
        });
        server
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    /// When each request arrived, in milliseconds since the server started.
    pub fn arrivals_ms(&self) -> Vec<u128> {
        self.seen()
            .iter()
            .map(|s| (s.at - self.started).as_millis())
            .collect()
    }

    pub fn set_default(&self, reply: Reply) {
        *self.default.lock().unwrap() = reply;
    }

    async fn serve(self, mut conn: TcpStream) {
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            let head_end = loop {
                if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                    break end + 4;
                }
                match conn.read(&mut chunk).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
            };
            let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
            buf.drain(..head_end);
            let mut lines = head.lines();
            let mut start = lines.next().unwrap_or_default().split(' ');
            let method = start.next().unwrap_or_default().to_string();
            let path = start.next().unwrap_or_default().to_string();
            let length: usize = lines
                .filter_map(|l| l.split_once(':'))
                .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
                .map_or(0, |(_, v)| v.trim().parse().unwrap_or(0));
            while buf.len() < length {
                match conn.read(&mut chunk).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
            }
            let body: Vec<u8> = buf.drain(..length).collect();
            self.seen.lock().unwrap().push(Seen {
                at: Instant::now(),
                method,
                path,
                body,
            });
            let reply = self
                .script
                .lock()
                .unwrap()
                .pop_front()
                .unwrap_or_else(|| self.default.lock().unwrap().clone());
            if !reply.delay.is_zero() {
                tokio::time::sleep(reply.delay).await;
            }
            let mut response = format!("HTTP/1.1 {} X\r\ncontent-length: 0\r\n", reply.status);
            for (name, value) in &reply.headers {
                response.push_str(&format!("{name}: {value}\r\n"));
            }
            response.push_str("\r\n");
            if conn.write_all(response.as_bytes()).await.is_err() {
                return;
            }
        }
    }
}
