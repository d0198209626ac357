//! RFC 6455 §5.1: a server must close the connection when a client sends an
//! unmasked frame. fastwebsockets unmasks what it reads but does not say whether
//! a mask was there, so this reader watches the frame headers go by.

use std::{
    io,
    pin::Pin,
    task::{Context, Poll},
};

use tokio::io::{AsyncRead, ReadBuf};

/// The error a read returns once an unmasked client frame is seen.
#[derive(Debug, thiserror::Error)]
#[error("client frame is not masked")]
pub(crate) struct Unmasked;

pub(crate) fn is_unmasked(e: &io::Error) -> bool {
    e.get_ref().is_some_and(|inner| inner.is::<Unmasked>())
}

/// Where the reader is in the byte stream of frames.
#[derive(Debug)]
enum State {
    /// Collecting a frame header: `have` bytes of it so far.
    Header { head: [u8; 14], have: usize },
    /// Skipping the payload of the current frame.
    Payload { remaining: u64 },
}

/// Passes bytes through unchanged and fails the read that carries the header
/// of an unmasked frame.
pub(crate) struct MaskChecked<R> {
    inner: R,
    state: State,
}

impl<R> MaskChecked<R> {
    pub(crate) fn new(inner: R) -> Self {
        Self {
            inner,
            state: State::Header {
                head: [0; 14],
                have: 0,
            },
        }
    }

    /// Feeds the bytes just read through the frame-boundary tracker.
    fn observe(&mut self, mut bytes: &[u8]) -> Result<(), Unmasked> {
        while !bytes.is_empty() {
            match &mut self.state {
                State::Payload { remaining } => {
                    let n = usize::try_from(*remaining)
                        .unwrap_or(usize::MAX)
                        .min(bytes.len());
                    *remaining -= n as u64;
                    bytes = &bytes[n..];
                    if *remaining == 0 {
                        self.state = State::Header {
                            head: [0; 14],
                            have: 0,
                        };
                    }
                }
                State::Header { head, have } => {
                    head[*have] = bytes[0];
                    *have += 1;
                    bytes = &bytes[1..];
                    if *have < 2 {
                        continue;
                    }
                    if head[1] & 0x80 == 0 {
                        return Err(Unmasked);
                    }
                    let extra = match head[1] & 0x7f {
                        126 => 2,
                        127 => 8,
                        _ => 0,
                    };
                    if *have < 2 + extra + 4 {
                        continue;
                    }
                    let len = match extra {
                        2 => u64::from(u16::from_be_bytes([head[2], head[3]])),
                        8 => u64::from_be_bytes(head[2..10].try_into().unwrap_or([0xff; 8])),
                        _ => u64::from(head[1] & 0x7f),
                    };
                    self.state = if len == 0 {
                        State::Header {
                            head: [0; 14],
                            have: 0,
                        }
                    } else {
                        State::Payload { remaining: len }
                    };
                }
            }
        }
        Ok(())
    }
}

impl<R: AsyncRead + Unpin> AsyncRead for MaskChecked<R> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        std::task::ready!(Pin::new(&mut this.inner).poll_read(cx, buf))?;
        Poll::Ready(
            this.observe(&buf.filled()[before..])
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e)),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(masked: bool, len: usize) -> Vec<u8> {
        let mut f = vec![0x81];
        let m = if masked { 0x80 } else { 0 };
        match len {
            0..=125 => f.push(m | len as u8),
            126..=65535 => {
                f.push(m | 126);
                f.extend((len as u16).to_be_bytes());
            }
            _ => {
                f.push(m | 127);
                f.extend((len as u64).to_be_bytes());
            }
        }
        if masked {
            f.extend([1, 2, 3, 4]);
        }
        f.extend(std::iter::repeat_n(b'x', len));
        f
    }

    #[test]
    fn masked_frames_pass_in_any_chunking() {
        let stream: Vec<u8> = [
            frame(true, 0),
            frame(true, 5),
            frame(true, 300),
            frame(true, 70_000),
        ]
        .concat();
        for chunk in [1, 2, 3, 7, 4096, stream.len()] {
            let mut m = MaskChecked::new(());
            for c in stream.chunks(chunk) {
                assert!(m.observe(c).is_ok(), "chunk {chunk}");
            }
            assert!(matches!(m.state, State::Header { have: 0, .. }));
        }
    }

    #[test]
    fn an_unmasked_frame_is_caught_after_masked_ones() {
        let stream = [frame(true, 200), frame(false, 3)].concat();
        for chunk in [1, 5, stream.len()] {
            let mut m = MaskChecked::new(());
            let failed = stream.chunks(chunk).any(|c| m.observe(c).is_err());
            assert!(failed, "chunk {chunk}");
        }
    }
}
