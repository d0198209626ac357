//! The client's frames, read without a buffer of their own while idle.
//!
//! fastwebsockets' reader allocates 8 KiB per socket at the handshake and
//! keeps it for the socket's life: over half of what an idle agent costs the
//! edge. Agents send little (control frames, small JSON), so frames are read
//! here with exact reads into a payload buffer that exists only while a frame
//! is in hand. RFC 6455 §5.1–5.5: client frames must be masked, reserved bits
//! must be clear, control frames are final and at most 125 bytes.

use fastwebsockets::OpCode;
use tokio::io::{AsyncRead, AsyncReadExt};

/// One frame from the client, unmasked.
#[derive(Debug)]
pub(crate) struct ClientFrame {
    pub fin: bool,
    pub opcode: OpCode,
    pub payload: Vec<u8>,
}

/// Why no frame could be read.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum ReadError {
    /// The connection ended or failed.
    Gone,
    /// A frame announced a payload over the limit (close 1009).
    TooLarge,
    /// An unmasked frame (close 1002).
    Unmasked,
    /// Any other protocol violation (close 1002).
    Protocol(&'static str),
}

/// Reads frames of at most `max` payload bytes from `inner`.
pub(crate) struct ClientReader<R> {
    inner: R,
    max: usize,
}

impl<R: AsyncRead + Unpin> ClientReader<R> {
    pub(crate) fn new(inner: R, max: usize) -> Self {
        Self { inner, max }
    }

    pub(crate) async fn read_frame(&mut self) -> Result<ClientFrame, ReadError> {
        let mut head = [0u8; 2];
        self.fill(&mut head).await?;
        let fin = head[0] & 0x80 != 0;
        if head[0] & 0x70 != 0 {
            return Err(ReadError::Protocol("reserved bits set"));
        }
        let opcode =
            OpCode::try_from(head[0] & 0x0f).map_err(|_| ReadError::Protocol("unknown opcode"))?;
        if head[1] & 0x80 == 0 {
            return Err(ReadError::Unmasked);
        }
        let len = match head[1] & 0x7f {
            126 => {
                let mut b = [0u8; 2];
                self.fill(&mut b).await?;
                u64::from(u16::from_be_bytes(b))
            }
            127 => {
                let mut b = [0u8; 8];
                self.fill(&mut b).await?;
                u64::from_be_bytes(b)
            }
            n => u64::from(n),
        };
        let control = matches!(opcode, OpCode::Close | OpCode::Ping | OpCode::Pong);
        if control && (!fin || len > 125) {
            return Err(ReadError::Protocol("invalid control frame"));
        }
        let len = usize::try_from(len)
            .ok()
            .filter(|n| *n <= self.max)
            .ok_or(ReadError::TooLarge)?;
        let mut mask = [0u8; 4];
        self.fill(&mut mask).await?;
        let mut payload = vec![0u8; len];
        self.fill(&mut payload).await?;
        for (i, b) in payload.iter_mut().enumerate() {
            *b ^= mask[i % 4];
        }
        Ok(ClientFrame {
            fin,
            opcode,
            payload,
        })
    }

    async fn fill(&mut self, buf: &mut [u8]) -> Result<(), ReadError> {
        self.inner
            .read_exact(buf)
            .await
            .map(|_| ())
            .map_err(|_| ReadError::Gone)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A masked client frame as a browser sends it.
    fn masked(first: u8, payload: &[u8]) -> Vec<u8> {
        let mask = [7u8, 1, 9, 3];
        let mut out = vec![first];
        match payload.len() {
            n if n < 126 => out.push(0x80 | u8::try_from(n).expect("small")),
            n if n <= usize::from(u16::MAX) => {
                out.push(0x80 | 126);
                out.extend_from_slice(&u16::try_from(n).expect("fits").to_be_bytes());
            }
            n => {
                out.push(0x80 | 127);
                out.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        out.extend_from_slice(&mask);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        out
    }

    async fn read(bytes: Vec<u8>, max: usize) -> Vec<Result<ClientFrame, ReadError>> {
        let mut r = ClientReader::new(std::io::Cursor::new(bytes), max);
        let mut out = Vec::new();
        loop {
            let f = r.read_frame().await;
            let end = f.is_err();
            out.push(f);
            if end {
                return out;
            }
        }
    }

    #[tokio::test]
    async fn frames_of_every_length_form_are_unmasked_in_order() {
        let big = vec![b'x'; 70_000];
        let mut bytes = masked(0x81, b"{\"type\":\"ping\"}");
        bytes.extend(masked(0x89, b"hi"));
        bytes.extend(masked(0x82, &vec![b'y'; 300]));
        bytes.extend(masked(0x81, &big));
        let frames = read(bytes, 100_000).await;
        let ok: Vec<_> = frames.iter().filter_map(|f| f.as_ref().ok()).collect();
        assert_eq!(ok.len(), 4);
        assert_eq!(ok[0].payload, b"{\"type\":\"ping\"}");
        assert_eq!(ok[0].opcode, OpCode::Text);
        assert!(ok[0].fin);
        assert_eq!(
            (ok[1].opcode, ok[1].payload.as_slice()),
            (OpCode::Ping, &b"hi"[..])
        );
        assert_eq!(ok[2].payload.len(), 300);
        assert_eq!(ok[3].payload, big);
        assert_eq!(
            frames.last().map(|f| f.as_ref().err()),
            Some(Some(&ReadError::Gone))
        );
    }

    #[tokio::test]
    async fn violations_are_named() {
        let first = |bytes: Vec<u8>, max| async move { read(bytes, max).await.remove(0).err() };
        assert_eq!(
            first(vec![0x81, 0x02, b'h', b'i'], 10).await,
            Some(ReadError::Unmasked)
        );
        assert_eq!(
            first(masked(0x81, &[0; 11]), 10).await,
            Some(ReadError::TooLarge)
        );
        assert_eq!(
            first(masked(0xc1, b"x"), 10).await,
            Some(ReadError::Protocol("reserved bits set"))
        );
        assert_eq!(
            first(masked(0x83, b"x"), 10).await,
            Some(ReadError::Protocol("unknown opcode"))
        );
        assert_eq!(
            first(masked(0x09, b"x"), 10).await,
            Some(ReadError::Protocol("invalid control frame")),
            "a fragmented ping"
        );
        assert_eq!(
            first(masked(0x89, &[0; 126]), 1000).await,
            Some(ReadError::Protocol("invalid control frame")),
            "a ping over 125 bytes"
        );
        // A frame announcing 2^63 bytes is refused before any allocation.
        let mut huge = vec![0x82, 0x80 | 127];
        huge.extend_from_slice(&(1u64 << 63).to_be_bytes());
        assert_eq!(first(huge, 1 << 20).await, Some(ReadError::TooLarge));
        assert_eq!(
            first(masked(0x81, b"abc")[..4].to_vec(), 10).await,
            Some(ReadError::Gone)
        );
    }
}
