//! A deliberately small WebSocket client (RFC 6455 text frames over a plain TCP
//! stream) for end-to-end tests of the real binary: enough to authenticate, send JSON
//! frames and read the server's frames, without pulling a WebSocket crate into the
//! binary's dev-dependencies.

use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// One client connection to `/ws`.
pub struct Ws {
    stream: TcpStream,
    buffer: Vec<u8>,
}

/// Why a read ended without a text frame.
#[derive(Debug, PartialEq)]
pub enum WsEnd {
    /// The server sent a close frame (code, if any).
    Closed(Option<u16>),
    /// Nothing arrived in time.
    Timeout,
}

impl Ws {
    /// Opens `/ws?token=..&device_id=..` on `http` (`http://host:port`); returns the
    /// HTTP status line's code when the upgrade is refused.
    pub async fn connect(http: &str, token: &str, device: &str) -> Result<Self, u16> {
        let host = http.trim_start_matches("http://").trim_end_matches('/');
        let mut stream = TcpStream::connect(host).await.map_err(|_| 0u16)?;
        let request = format!(
            "GET /ws?token={token}&device_id={device} HTTP/1.1\r\nHost: {host}\r\n\
             Upgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        );
        stream
            .write_all(request.as_bytes())
            .await
            .map_err(|_| 0u16)?;
        let mut buffer = Vec::new();
        let mut chunk = [0u8; 4096];
        let end = loop {
            if let Some(end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
                break end + 4;
            }
            let n = tokio::time::timeout(Duration::from_secs(20), stream.read(&mut chunk))
                .await
                .map_err(|_| 0u16)?
                .map_err(|_| 0u16)?;
            if n == 0 || buffer.len() > 64 * 1024 {
                return Err(0);
            }
            buffer.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8_lossy(&buffer[..end]).to_string();
        let status: u16 = head
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        if status != 101 {
            return Err(status);
        }
        buffer.drain(..end);
        Ok(Self { stream, buffer })
    }

    /// Sends one masked frame with `opcode` (1 = text) and `payload`.
    pub async fn send_raw(&mut self, opcode: u8, payload: &[u8]) -> std::io::Result<()> {
        let mut frame = vec![0x80 | opcode];
        let mask = [0x12u8, 0x34, 0x56, 0x78];
        match payload.len() {
            n if n < 126 => frame.push(0x80 | n as u8),
            n if n <= u16::MAX as usize => {
                frame.push(0x80 | 126);
                frame.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                frame.push(0x80 | 127);
                frame.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        frame.extend_from_slice(&mask);
        frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        self.stream.write_all(&frame).await
    }

    /// Sends a JSON text frame.
    pub async fn send(&mut self, frame: &Value) {
        self.send_raw(1, frame.to_string().as_bytes())
            .await
            .expect("websocket write");
    }

    async fn fill(&mut self, want: usize, deadline: tokio::time::Instant) -> Result<(), WsEnd> {
        let mut chunk = [0u8; 16 * 1024];
        while self.buffer.len() < want {
            let n = tokio::time::timeout_at(deadline, self.stream.read(&mut chunk))
                .await
                .map_err(|_| WsEnd::Timeout)?
                .map_err(|_| WsEnd::Closed(None))?;
            if n == 0 {
                return Err(WsEnd::Closed(None));
            }
            self.buffer.extend_from_slice(&chunk[..n]);
        }
        Ok(())
    }

    /// The next text frame as JSON, answering pings, within `wait`.
    pub async fn recv(&mut self, wait: Duration) -> Result<Value, WsEnd> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            self.fill(2, deadline).await?;
            let opcode = self.buffer[0] & 0x0f;
            let short = (self.buffer[1] & 0x7f) as usize;
            let (len, header) = match short {
                126 => {
                    self.fill(4, deadline).await?;
                    (
                        u16::from_be_bytes([self.buffer[2], self.buffer[3]]) as usize,
                        4,
                    )
                }
                127 => {
                    self.fill(10, deadline).await?;
                    let mut bytes = [0u8; 8];
                    bytes.copy_from_slice(&self.buffer[2..10]);
                    (u64::from_be_bytes(bytes) as usize, 10)
                }
                n => (n, 2),
            };
            self.fill(header + len, deadline).await?;
            let payload: Vec<u8> = self.buffer[header..header + len].to_vec();
            self.buffer.drain(..header + len);
            match opcode {
                1 => return Ok(serde_json::from_slice(&payload).unwrap_or(Value::Null)),
                8 => {
                    let code =
                        (payload.len() >= 2).then(|| u16::from_be_bytes([payload[0], payload[1]]));
                    return Err(WsEnd::Closed(code));
                }
                9 => {
                    let _ = self.send_raw(10, &payload).await;
                }
                _ => {}
            }
        }
    }

    /// Frames until the reply with `id` (inclusive), within `wait` overall.
    pub async fn until_reply(&mut self, id: &str, wait: Duration) -> Vec<Value> {
        let deadline = tokio::time::Instant::now() + wait;
        let mut frames = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.recv(left).await {
                Ok(frame) => {
                    let done = frame["id"] == id;
                    frames.push(frame);
                    if done {
                        return frames;
                    }
                }
                Err(end) => panic!("no reply {id}: {end:?}; got {frames:?}"),
            }
        }
    }
}
