//! `hive link-relay`: the swarm backend's link relay. Accepts TCP on one
//! address and pipes every connection, byte for byte, to one destination
//! (core's link listener); it reads nothing and can reach nothing else.
//! TLS stays end to end between an agent's harness and core.

use std::net::SocketAddr;

use anyhow::Context;
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
            let mut inbound = match listener.accept().await {
                Ok((inbound, _)) => inbound,
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
                match TcpStream::connect(&to).await {
                    Ok(mut outbound) => {
                        let _ = inbound.set_nodelay(true);
                        let _ = outbound.set_nodelay(true);
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                    Err(e) => eprintln!("hive link-relay: {to}: {e}"),
                }
            });
        }
    })
}
