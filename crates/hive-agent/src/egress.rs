//! The in-sandbox end of the egress path: a loopback TCP port whose every
//! connection is piped to a fresh connection on core's egress socket.
//!
//! The sandbox has its own network namespace; its only way out is the unix
//! socket core binds at `/run/hive/egress.sock` (`HIVE_EGRESS_SOCKET`),
//! behind which core's proxy (`hive_core::egress`) speaks HTTP/1.1 proxy
//! (`CONNECT` and absolute-form requests) under the agent's `network`
//! policy. The engine is pointed at this bridge with `HTTPS_PROXY` and
//! friends ([`proxy_env`]); the bridge itself understands nothing, it only
//! copies bytes.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream, UnixStream};

/// Listens on `127.0.0.1:0` and pipes each accepted connection to a fresh
/// connection on `socket`, until the process ends. Returns the address.
pub async fn start(socket: PathBuf) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
    let addr = listener.local_addr()?;
    if !socket.exists() {
        tracing::warn!(
            socket = %socket.display(),
            "the egress socket is missing: the engine will have no network"
        );
    }
    tokio::spawn(async move {
        loop {
            match listener.accept().await {
                Ok((tcp, _)) => {
                    tokio::spawn(pipe(tcp, socket.clone()));
                }
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!("egress bridge: accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    });
    Ok(addr)
}

async fn pipe(mut tcp: TcpStream, socket: PathBuf) {
    let _ = tcp.set_nodelay(true);
    match UnixStream::connect(&socket).await {
        Ok(mut unix) => {
            if let Err(e) = tokio::io::copy_bidirectional(&mut tcp, &mut unix).await {
                tracing::debug!("egress bridge: connection ended: {e}");
            }
        }
        Err(e) => tracing::warn!(socket = %socket.display(), "egress bridge: {e}"),
    }
}

/// The engine's environment for a bridge on `addr`: every proxy variable
/// a runtime may read, and an empty `NO_PROXY`, so even a loopback model
/// endpoint goes through the proxy (there is no other way out).
pub fn proxy_env(addr: SocketAddr) -> Vec<(String, String)> {
    let url = format!("http://{addr}");
    let mut env: Vec<(String, String)> = ["HTTPS_PROXY", "HTTP_PROXY", "https_proxy", "http_proxy"]
        .into_iter()
        .map(|k| (k.to_owned(), url.clone()))
        .collect();
    env.extend(["NO_PROXY", "no_proxy"].map(|k| (k.to_owned(), String::new())));
    env
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::UnixListener;

    use super::*;

    #[tokio::test]
    async fn every_connection_gets_its_own_socket_connection() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("egress.sock");
        let unix = UnixListener::bind(&path).unwrap();
        tokio::spawn(async move {
            let mut n = 0u8;
            loop {
                let (mut conn, _) = unix.accept().await.unwrap();
                n += 1;
                tokio::spawn(async move {
                    let mut buf = [0u8; 5];
                    conn.read_exact(&mut buf).await.unwrap();
                    conn.write_all(&[n]).await.unwrap();
                    conn.write_all(&buf).await.unwrap();
                });
            }
        });
        let addr = start(path).await.unwrap();
        assert!(addr.ip().is_loopback());
        for expected in 1..=2u8 {
            let mut tcp = TcpStream::connect(addr).await.unwrap();
            tcp.write_all(b"hello").await.unwrap();
            let mut back = [0u8; 6];
            tcp.read_exact(&mut back).await.unwrap();
            assert_eq!(back[0], expected);
            assert_eq!(&back[1..], b"hello");
        }
    }

    #[test]
    fn the_engine_uses_the_bridge_for_everything() {
        let env = proxy_env("127.0.0.1:4567".parse().unwrap());
        let get = |k: &str| {
            env.iter()
                .find(|(key, _)| key == k)
                .map(|(_, v)| v.as_str())
        };
        for key in ["HTTPS_PROXY", "HTTP_PROXY", "https_proxy", "http_proxy"] {
            assert_eq!(get(key), Some("http://127.0.0.1:4567"));
        }
        assert_eq!(get("NO_PROXY"), Some(""));
        assert_eq!(get("no_proxy"), Some(""));
    }
}
