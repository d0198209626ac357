//! A minimal keep-alive HTTP/1.1 POST for `faro loadgen webhooks`: the load
//! generator must cost far less per request than the server it measures, and
//! the binary has no HTTP client (reqwest is a test-only dependency).

use std::net::SocketAddr;

use tokio::{
    io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader},
    net::TcpStream,
};

/// One open connection to the edge.
pub struct Conn(BufReader<TcpStream>);

impl Conn {
    pub async fn open(edge: SocketAddr) -> std::io::Result<Self> {
        let stream = TcpStream::connect(edge).await?;
        stream.set_nodelay(true)?;
        Ok(Self(BufReader::new(stream)))
    }

    /// POSTs `body` with one extra header; returns the status and whether
    /// the connection can carry the next request.
    pub async fn post(
        &mut self,
        edge: SocketAddr,
        path: &str,
        header: (&str, &str),
        body: &[u8],
    ) -> std::io::Result<(u16, bool)> {
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: {edge}\r\nContent-Type: application/json\r\n\
             {}: {}\r\nContent-Length: {}\r\n\r\n",
            header.0,
            header.1,
            body.len()
        );
        let mut request = Vec::with_capacity(head.len() + body.len());
        request.extend_from_slice(head.as_bytes());
        request.extend_from_slice(body);
        self.0.get_mut().write_all(&request).await?;
        let mut line = String::new();
        self.0.read_line(&mut line).await?;
        let status = line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse::<u16>().ok())
            .ok_or_else(|| std::io::Error::other(format!("bad status line {line:?}")))?;
        let (mut length, mut keep) = (None, true);
        loop {
            line.clear();
            if self.0.read_line(&mut line).await? == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            let header = line.trim_end();
            if header.is_empty() {
                break;
            }
            if let Some((name, value)) = header.split_once(':') {
                let value = value.trim();
                if name.eq_ignore_ascii_case("content-length") {
                    length = value.parse::<usize>().ok();
                } else if name.eq_ignore_ascii_case("connection")
                    && value.eq_ignore_ascii_case("close")
                {
                    keep = false;
                }
            }
        }
        match length {
            Some(n) => {
                let mut rest = vec![0; n];
                self.0.read_exact(&mut rest).await?;
            }
            // No length (not what the edge sends): the body runs to the end.
            None => {
                let mut rest = Vec::new();
                self.0.read_to_end(&mut rest).await?;
                keep = false;
            }
        }
        Ok((status, keep))
    }
}
