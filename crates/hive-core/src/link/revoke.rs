//! A connection that ends the moment its credential is revoked: every
//! read and write after that fails, and a task parked on either is woken.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use futures_util::task::AtomicWaker;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The revocation notice of one connection.
#[derive(Debug, Default)]
pub struct Revocation {
    revoked: AtomicBool,
    reader: AtomicWaker,
    writer: AtomicWaker,
}

impl Revocation {
    pub fn revoke(&self) {
        self.revoked.store(true, Ordering::Release);
        self.reader.wake();
        self.writer.wake();
    }

    pub fn is_revoked(&self) -> bool {
        self.revoked.load(Ordering::Acquire)
    }

    fn check(&self, waker: &AtomicWaker, cx: &Context<'_>) -> io::Result<()> {
        waker.register(cx.waker());
        if self.is_revoked() {
            return Err(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "the agent's credential was revoked",
            ));
        }
        Ok(())
    }
}

/// `inner`, cut off once `revocation` fires.
#[derive(Debug)]
pub struct Revocable<S> {
    inner: S,
    revocation: Arc<Revocation>,
}

impl<S> Revocable<S> {
    pub fn new(inner: S, revocation: Arc<Revocation>) -> Self {
        Self { inner, revocation }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Revocable<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        this.revocation.check(&this.revocation.reader, cx)?;
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Revocable<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        this.revocation.check(&this.revocation.writer, cx)?;
        Pin::new(&mut this.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        this.revocation.check(&this.revocation.writer, cx)?;
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn a_parked_read_ends_at_revoke() {
        let (a, mut b) = tokio::io::duplex(64);
        let revocation = Arc::new(Revocation::default());
        let mut conn = Revocable::new(a, revocation.clone());
        b.write_all(b"x").await.unwrap();
        let mut byte = [0u8; 1];
        conn.read_exact(&mut byte).await.unwrap();
        let parked = tokio::spawn(async move {
            let mut byte = [0u8; 1];
            conn.read(&mut byte).await
        });
        tokio::task::yield_now().await;
        revocation.revoke();
        let err = parked.await.unwrap().unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::ConnectionAborted);
    }
}
