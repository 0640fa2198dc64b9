//! `hive link-relay`: the swarm backend's link relay. Accepts TCP on one
//! address and pipes every connection, byte for byte, to one destination
//! (core's link listener); it reads nothing and can reach nothing else.
//! TLS stays end to end between an agent's harness and core. Each piped
//! connection opens with one [`RelayHeader`] line naming the agent end,
//! which core believes from the relay's address alone, so its per-peer
//! handshake cap holds each agent on its own rather than all of them as
//! one peer (the relay).

use std::net::SocketAddr;

use anyhow::Context;
use hive_proto::link::RelayHeader;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};

/// Pipes every connection to `listen` to `to`, until killed.
pub fn run(listen: SocketAddr, to: String) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let listener = TcpListener::bind(listen)
            .await
            .with_context(|| format!("listen on {listen}"))?;
        eprintln!("hive link-relay: {listen} -> {to}");
        loop {
            let (mut inbound, source) = match listener.accept().await {
                Ok(accepted) => accepted,
                Err(e) => {
                    // EMFILE and friends (an agent holding connections):
                    // back off and go on; exiting would cut every agent.
                    eprintln!("hive link-relay: accept failed: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            };
            let to = to.clone();
            tokio::spawn(async move {
                let dest = inbound.local_addr().unwrap_or(listen);
                let header = RelayHeader { source, dest }.line();
                match TcpStream::connect(&to).await {
                    Ok(mut outbound) => {
                        let _ = inbound.set_nodelay(true);
                        let _ = outbound.set_nodelay(true);
                        // Before any byte of the agent's.
                        if outbound.write_all(header.as_bytes()).await.is_ok() {
                            let _ =
                                tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                        }
                    }
                    Err(e) => eprintln!("hive link-relay: {to}: {e}"),
                }
            });
        }
    })
}
