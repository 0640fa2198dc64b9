//! `/dashboard/stream`: every [`DashboardEvent`] as a server-sent event.
//!
//! One [`Fanout`] task per server subscribes to the dashboard bus and
//! serializes each event once; every SSE client then copies the same JSON
//! text instead of serializing it again, so a thousand open dashboards cost
//! one serialization per event. A client that falls too far behind (or a
//! fan-out that lags the bus) has its stream ended: the browser reconnects
//! on its own and resyncs from a fresh `/api/state`, so a gap is never
//! silent.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::Stream;
use hive_proto::DashboardEvent;
use tokio::sync::broadcast;
use tokio::sync::broadcast::error::RecvError;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::BroadcastStream;

use super::App;
use crate::coordinator::Coordinator;

/// Frames a slow SSE client may fall behind before its stream is ended.
const CLIENT_CAPACITY: usize = 1024;
/// How soon a browser reconnects after its stream ended.
const RETRY: Duration = Duration::from_millis(500);

/// One serialized event, or the order to resync.
#[derive(Debug, Clone)]
enum Frame {
    Event(Arc<str>),
    /// Frames were lost upstream: every client must resync.
    Lost,
}

/// Serializes the bus once and re-broadcasts the text to SSE clients.
pub struct Fanout {
    tx: broadcast::Sender<Frame>,
}

impl std::fmt::Debug for Fanout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fanout")
            .field("clients", &self.tx.receiver_count())
            .finish()
    }
}

impl Fanout {
    /// Subscribes to `coord`'s bus now and forwards until shutdown.
    pub fn start(coord: Arc<Coordinator>) -> Arc<Self> {
        let (tx, _) = broadcast::channel(CLIENT_CAPACITY);
        let mut events = coord.dashboard.subscribe();
        let fanout = Arc::new(Self { tx: tx.clone() });
        tokio::spawn(async move {
            loop {
                let event = tokio::select! {
                    event = events.recv() => event,
                    () = coord.shutting_down() => return,
                };
                let frame = match event {
                    // No client: nothing to serialize for.
                    Ok(_) if tx.receiver_count() == 0 => continue,
                    Ok(event) => match serialize(&event) {
                        Some(json) => Frame::Event(json),
                        None => continue,
                    },
                    Err(RecvError::Lagged(missed)) => {
                        tracing::warn!(missed, "dashboard fan-out lagged; clients resync");
                        Frame::Lost
                    }
                    Err(RecvError::Closed) => return,
                };
                // No client is fine.
                let _ = tx.send(frame);
            }
        });
        fanout
    }

    /// SSE clients connected now.
    pub fn clients(&self) -> usize {
        self.tx.receiver_count()
    }

    fn subscribe(&self) -> broadcast::Receiver<Frame> {
        self.tx.subscribe()
    }
}

fn serialize(event: &DashboardEvent) -> Option<Arc<str>> {
    match serde_json::to_string(event) {
        Ok(json) => Some(json.into()),
        Err(e) => {
            tracing::error!(seq = event.seq(), "dashboard event not serialized: {e}");
            None
        }
    }
}

/// `GET /dashboard/stream`. Subscribes before answering, so a client that
/// fetches `/api/state` after the stream opens misses nothing.
pub(super) async fn stream(
    State(app): State<App>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let hello = Event::default().retry(RETRY).comment("hyperhive dashboard");
    // The broker publishes its message flow while this stream lives.
    let watching = app.coord.store.watch_flow();
    let frames = BroadcastStream::new(app.fanout.subscribe())
        // A lagged client, or lost frames upstream: end the stream.
        .map_while(|frame| match frame {
            Ok(Frame::Event(json)) => Some(Event::default().data(&*json)),
            Ok(Frame::Lost) | Err(_) => None,
        })
        .map(move |event| {
            let _watching = &watching;
            Ok(event)
        });
    let events = tokio_stream::once(Ok(hello)).chain(frames);
    Sse::new(events).keep_alive(KeepAlive::default())
}
