//! A minimal HTTP/1.1 client for the market's calls to providers (`Connection: close`, a
//! `Content-Length` body, bounded reads and a deadline): a challenge posted, a model probed.

use std::time::Duration;

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

/// Largest response read.
const MAX_RESPONSE: u64 = 1 << 20;

/// Sends `method path` with a JSON `body` to `host:port` within `timeout`: the status and body.
pub(crate) async fn call(
    api: &str,
    method: &str,
    path: &str,
    body: Option<&str>,
    timeout: Duration,
) -> Result<(u16, Vec<u8>), String> {
    tokio::time::timeout(timeout, async {
        let mut stream = TcpStream::connect(api).await.map_err(|e| format!("connecting to {api}: {e}"))?;
        let body = body.unwrap_or("");
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {api}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        );
        stream.write_all(head.as_bytes()).await.map_err(|e| e.to_string())?;
        stream.write_all(body.as_bytes()).await.map_err(|e| e.to_string())?;
        let mut raw = Vec::new();
        (&mut stream).take(MAX_RESPONSE).read_to_end(&mut raw).await.map_err(|e| e.to_string())?;
        let split = raw.windows(4).position(|w| w == b"\r\n\r\n").ok_or("malformed HTTP response")?;
        let status = String::from_utf8_lossy(&raw[..split])
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or("no HTTP status")?;
        Ok((status, raw[split + 4..].to_vec()))
    })
    .await
    .map_err(|_| format!("{api} did not answer within {} s", timeout.as_secs()))?
}
