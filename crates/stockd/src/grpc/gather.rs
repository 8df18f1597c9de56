//! Gathering a connection's writes into fewer `write`s.
//!
//! h2 writes the frames of the answers ready at one poll of a connection, then flushes.
//! A DATA payload of 1 KiB or more (a fulfilment's plans) is not copied into h2's own
//! buffer: it is written on its own, in two writes (1 KiB, then the rest), and the answer's
//! trailers in a third, so such answers cost about 2.4 `sendto`s each against 0.25 for
//! small ones, and on loopback each `sendto` also runs the receiver's side of TCP.
//!
//! `Gathered` copies every write into a buffer of at most `CONN_WRITE_BUFFER_BYTES`. A
//! flush of small frames only writes the buffer out, as before (h2 already gathered
//! them). A flush after a write of `GATHER_LARGE_WRITE_BYTES` or more (h2's first write
//! of a large payload) wakes the task instead of writing, and the buffer leaves once the
//! task is polled again (at its first read, which h2 does first at every poll), so the
//! frames of every answer ready within that turn leave in one `write`. Small answers
//! never wait for a turn: deferring every flush cost Reserve a quarter of its throughput
//! (an extra poll of the connection per write). A shutdown writes the buffer first. A full
//! buffer is written before more is taken, so a slow reader holds at most the buffer
//! here, and h2 waits, as it waits for a full socket.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::limits::CONN_WRITE_BUFFER_BYTES;

/// An I/O object whose writes are gathered and sent one task poll after a flush.
pub struct Gathered<T> {
    io: T,
    out: Vec<u8>,
    /// Bytes of `out` already written.
    sent: usize,
    /// The buffer holds a large write: a flush defers it to the task's next turn.
    large: bool,
    /// A flush found bytes to send and woke the task: the next poll writes them.
    due: bool,
}

/// h2 writes a large DATA payload as its first `CHAIN_THRESHOLD_WITHOUT_VECTORED_IO`
/// (1 KiB) bytes, then the rest: a write this big marks a flush worth deferring.
const GATHER_LARGE_WRITE_BYTES: usize = 1 << 10;

impl<T: AsyncWrite + Unpin> Gathered<T> {
    pub fn new(io: T) -> Self {
        Gathered {
            io,
            out: Vec::new(),
            sent: 0,
            large: false,
            due: false,
        }
    }

    pub fn get_ref(&self) -> &T {
        &self.io
    }

    /// Writes the buffer out; `Pending` (the socket is full, the task registered for
    /// it) keeps what is left.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.sent < self.out.len() {
            let n =
                std::task::ready!(Pin::new(&mut self.io).poll_write(cx, &self.out[self.sent..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.sent += n;
        }
        self.out.clear();
        self.sent = 0;
        self.large = false;
        self.due = false;
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin> AsyncRead for Gathered<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.due {
            // The task's next poll after a flush: send what the last one gathered. A full
            // socket keeps the rest for later (the write registered the task for it).
            if let Poll::Ready(Err(e)) = this.poll_drain(cx) {
                return Poll::Ready(Err(e));
            }
        }
        Pin::new(&mut this.io).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Gathered<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.out.len() + buf.len() > CONN_WRITE_BUFFER_BYTES {
            std::task::ready!(this.poll_drain(cx))?;
            if buf.len() >= CONN_WRITE_BUFFER_BYTES {
                return Pin::new(&mut this.io).poll_write(cx, buf);
            }
        }
        this.out.extend_from_slice(buf);
        this.large |= buf.len() >= GATHER_LARGE_WRITE_BYTES;
        Poll::Ready(Ok(buf.len()))
    }

    /// Always false: h2 then copies payloads below 1 KiB into its own buffer, and many
    /// small answers (a Reserve, a 3-key read: 250–600 bytes) share one of its writes.
    fn is_write_vectored(&self) -> bool {
        false
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.large {
            std::task::ready!(this.poll_drain(cx))?;
            return Pin::new(&mut this.io).poll_flush(cx);
        }
        if !this.due {
            this.due = true;
            cx.waker().wake_by_ref();
        }
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        std::task::ready!(this.poll_drain(cx))?;
        std::task::ready!(Pin::new(&mut this.io).poll_flush(cx))?;
        Pin::new(&mut this.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::{Wake, Waker};

    use tokio::io::{AsyncReadExt, DuplexStream, duplex};

    use super::*;

    struct Count(AtomicUsize);

    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn pair() -> (Gathered<DuplexStream>, DuplexStream, Arc<Count>) {
        let (a, b) = duplex(1 << 20);
        (Gathered::new(a), b, Arc::new(Count(AtomicUsize::new(0))))
    }

    /// What the other end received so far, without waiting.
    fn received(peer: &mut DuplexStream) -> Vec<u8> {
        let mut out = vec![0; 1 << 20];
        let waker = Waker::noop();
        let mut cx = Context::from_waker(waker);
        let mut buf = ReadBuf::new(&mut out);
        match Pin::new(peer).poll_read(&mut cx, &mut buf) {
            Poll::Ready(Ok(())) => buf.filled().to_vec(),
            _ => Vec::new(),
        }
    }

    fn write(g: &mut Gathered<DuplexStream>, cx: &mut Context<'_>, bytes: &[u8]) {
        let n = Pin::new(&mut *g).poll_write(cx, bytes);
        assert!(matches!(n, Poll::Ready(Ok(k)) if k == bytes.len()));
    }

    fn flush(g: &mut Gathered<DuplexStream>, cx: &mut Context<'_>) {
        assert!(Pin::new(&mut *g).poll_flush(cx).is_ready());
    }

    /// Small frames leave at the flush, in one piece, without waking anyone.
    #[test]
    fn a_flush_of_small_writes_sends_them_at_once() {
        let (mut g, mut peer, count) = pair();
        let waker = Waker::from(count.clone());
        let mut cx = Context::from_waker(&waker);
        write(&mut g, &mut cx, b"headers");
        write(&mut g, &mut cx, b"data");
        assert!(received(&mut peer).is_empty(), "nothing before the flush");
        flush(&mut g, &mut cx);
        assert_eq!(received(&mut peer), b"headersdata");
        assert_eq!(count.0.load(Ordering::SeqCst), 0);
    }

    /// After a large write, the flush wakes the task and the bytes leave at its next
    /// read, together with what was written in between.
    #[test]
    fn a_large_write_waits_for_the_next_turn_of_the_task() {
        let (mut g, mut peer, count) = pair();
        let waker = Waker::from(count.clone());
        let mut cx = Context::from_waker(&waker);
        let large = vec![7u8; GATHER_LARGE_WRITE_BYTES];
        write(&mut g, &mut cx, &large);
        flush(&mut g, &mut cx);
        assert_eq!(count.0.load(Ordering::SeqCst), 1, "the task is woken");
        write(&mut g, &mut cx, b"rest");
        flush(&mut g, &mut cx);
        assert_eq!(count.0.load(Ordering::SeqCst), 1, "woken once per turn");
        assert!(received(&mut peer).is_empty(), "deferred to the next turn");
        let mut nothing = [0u8; 8];
        let mut buf = ReadBuf::new(&mut nothing);
        assert!(Pin::new(&mut g).poll_read(&mut cx, &mut buf).is_pending());
        let got = received(&mut peer);
        assert_eq!(got.len(), large.len() + 4);
        assert_eq!(&got[large.len()..], b"rest");
    }

    /// A shutdown sends what waits; a write beyond the buffer sends it first, then goes
    /// straight through, in order.
    #[tokio::test]
    async fn shutdown_and_a_full_buffer_send_everything_in_order() {
        let (mut g, mut peer, _) = pair();
        let large = vec![1u8; GATHER_LARGE_WRITE_BYTES];
        tokio::io::AsyncWriteExt::write_all(&mut g, &large)
            .await
            .unwrap();
        tokio::io::AsyncWriteExt::flush(&mut g).await.unwrap();
        let huge = vec![2u8; CONN_WRITE_BUFFER_BYTES];
        tokio::io::AsyncWriteExt::write_all(&mut g, &huge)
            .await
            .unwrap();
        tokio::io::AsyncWriteExt::write_all(&mut g, b"end")
            .await
            .unwrap();
        tokio::io::AsyncWriteExt::flush(&mut g).await.unwrap();
        tokio::io::AsyncWriteExt::shutdown(&mut g).await.unwrap();
        let mut got = Vec::new();
        peer.read_to_end(&mut got).await.unwrap();
        let mut want = large.clone();
        want.extend_from_slice(&huge);
        want.extend_from_slice(b"end");
        assert_eq!(got, want);
    }
}
