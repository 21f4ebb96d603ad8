//! `GET /v1/events` as Server-Sent Events: the event log after `Last-Event-ID` (or `?after_id=`), then
//! live events, filtered by `kind` (repeatable or comma-separated) and `device_id`.
//!
//! The stream subscribes to the bus *before* it reads the log, so an event committed while the log is being
//! replayed is not lost; ids already sent are skipped. Live events are taken from the bus while their ids follow
//! on from what the stream has seen; when an id skips ahead (concurrent writers broadcast in commit order only per
//! transaction, and some writers append without broadcasting) the stream reads the gap from the log instead, so
//! events are always sent in id order, each once.
//!
//! Each stream has its own task writing frames into a queue that the response body drains, bounded in frames and in
//! bytes (a webhook's event can be 1 MiB). A client that does not make room in that queue, or that falls behind the
//! bus's buffer, gets `event: lagged` and the stream ends; it reconnects with its last id and loses nothing. The
//! stream also ends at shutdown and when the client leaves.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::{Frame, Incoming};
use hyper::header::HeaderMap;
use hyper::{Request, Response, Uri};
use serde_json::json;
use std::sync::Arc;

use tokio::sync::{Semaphore, TryAcquireError, broadcast, mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::query::Query;
use super::response::{Body, error_response, sse_response};
use super::state::Http;
use crate::error::Error;
use crate::runtime::Principal;
use crate::store::events::{self, Event, EventFilter};
use crate::store::{Store, StoreError};

/// Frames waiting for one client.
const QUEUE: usize = 256;
/// Bytes waiting for one client (README).
const QUEUE_BYTES: usize = 1024 * 1024;
/// A queued frame. A boxed string is a 16-byte slot in the queue's blocks of 32 slots (a `Bytes` is 32), which makes
/// every subscriber 0.5 KiB smaller (BENCHMARKS.md: memory with 1,000 SSE clients); it becomes the body's `Bytes`
/// without a copy.
type QueuedFrame = Box<str>;
/// Events read from the log at a time.
const PAGE: usize = 500;
const HEARTBEAT: Duration = Duration::from_secs(15);
const HEARTBEAT_FRAME: &str = ": heartbeat\n\n";
/// How long a full queue may stay full before the client counts as too slow.
const SLOW_CLIENT: Duration = if cfg!(test) { Duration::from_millis(100) } else { Duration::from_secs(5) };
/// The reconnection delay suggested to clients.
const RETRY_MS: u32 = 3000;

pub async fn stream(http: &Http, principal: &Principal, req: Request<Incoming>) -> Response<Body> {
    let (filter, resume) = match parameters(req.uri(), req.headers()) {
        Ok(p) => p,
        Err(e) => return error_response(&e),
    };
    // Before anything is read from the log: from here on every broadcast event reaches this stream.
    let live = http.app.bus.subscribe();
    tracing::debug!(principal = %principal.id, kinds = ?filter.kinds, device_id = ?filter.device_id, resume = ?resume,
                    "event stream opened");
    let (feed, body) = Feed::new(http.app.store.clone(), filter, http.shutdown.clone());
    tokio::spawn(feed.run(live, resume, principal.id.clone()));

    sse_response(body.boxed())
}

/// The filter and the id to resume after (`Last-Event-ID` wins over `after_id`, as a reconnecting browser sends
/// both: the header with where it got to, the URL as first opened).
fn parameters(uri: &Uri, headers: &HeaderMap) -> Result<(EventFilter, Option<i64>), Error> {
    let mut filter = EventFilter::default();
    let mut resume = None;
    let id = |name: &str, v: &str| {
        v.trim()
            .parse::<i64>()
            .ok()
            .filter(|n| *n >= 0)
            .ok_or_else(|| Error::invalid_params(format!("{name} must be an event id (an integer ≥ 0), got {v:?}")))
    };
    // Pair by pair: `kind` may repeat, which `Query` (last value wins) would lose.
    for pair in uri.query().unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        for (name, value) in Query::parse(Some(pair)).0 {
            match name.as_str() {
                "kind" => {
                    for kind in value.split(',').map(str::trim).filter(|k| !k.is_empty()) {
                        if !filter.kinds.iter().any(|k| k == kind) {
                            filter.kinds.push(kind.to_string());
                        }
                    }
                }
                "device_id" if !value.is_empty() => filter.device_id = Some(value),
                "device_id" => {}
                "after_id" => resume = Some(id("after_id", &value)?),
                // The JSON list's page size; a stream has no pages.
                "limit" => {}
                _ => {
                    return Err(Error::invalid_params(format!(
                        "unknown query parameter {name:?}; the event stream takes: after_id, device_id, kind"
                    )));
                }
            }
        }
    }
    if let Some(v) = headers.get("last-event-id") {
        let v = v.to_str().map_err(|_| Error::invalid_params("Last-Event-ID must be an event id"))?;
        if !v.trim().is_empty() {
            resume = Some(id("Last-Event-ID", v)?);
        }
    }
    Ok((filter, resume))
}

/// Why a stream ended.
#[derive(Debug)]
enum End {
    ClientGone,
    Shutdown,
    /// The client could not keep up (the reason is told to it).
    Lagged(String),
    Store(StoreError),
}

/// The response body: the queued frames, then the stream's last word (`event: lagged`) if it has one.
struct SseBody {
    frames: mpsc::Receiver<QueuedFrame>,
    /// Given back the bytes of each frame taken.
    room: Arc<Semaphore>,
    last: Option<oneshot::Receiver<Bytes>>,
}

/// The room a frame takes in its stream's byte budget; one larger than the whole budget takes all of it.
fn room_for(frame: &str) -> u32 {
    frame.len().clamp(1, QUEUE_BYTES) as u32
}

impl hyper::body::Body for SseBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let this = self.get_mut();
        match this.frames.poll_recv(cx) {
            Poll::Ready(Some(b)) => {
                this.room.add_permits(room_for(&b) as usize);
                return Poll::Ready(Some(Ok(Frame::data(Bytes::from(b.into_boxed_bytes())))));
            }
            Poll::Ready(None) => {}
            Poll::Pending => return Poll::Pending,
        }
        // The feed has finished: its last word, if any, comes after everything it queued.
        if let Some(last) = this.last.as_mut() {
            let outcome = match Pin::new(last).poll(cx) {
                Poll::Ready(outcome) => outcome,
                Poll::Pending => return Poll::Pending,
            };
            this.last = None;
            if let Ok(b) = outcome {
                return Poll::Ready(Some(Ok(Frame::data(b))));
            }
        }
        Poll::Ready(None)
    }
}

/// One client's stream, run by its own task.
struct Feed {
    store: Store,
    filter: EventFilter,
    tx: mpsc::Sender<QueuedFrame>,
    /// Bytes the queue may still take.
    room: Arc<Semaphore>,
    /// Delivered after the queue, even when the queue is full.
    last: Option<oneshot::Sender<Bytes>>,
    shutdown: CancellationToken,
    /// Every event with an id up to this one has been sent or does not match the filter.
    last_seen: i64,
    /// The id of the last event sent (where the client resumes from).
    last_sent: i64,
    sent: u64,
}

impl Feed {
    fn new(store: Store, filter: EventFilter, shutdown: CancellationToken) -> (Feed, SseBody) {
        let (tx, frames) = mpsc::channel(QUEUE);
        let (last_tx, last) = oneshot::channel();
        let room = Arc::new(Semaphore::new(QUEUE_BYTES));
        let feed = Feed {
            store,
            filter,
            tx,
            room: room.clone(),
            last: Some(last_tx),
            shutdown,
            last_seen: 0,
            last_sent: 0,
            sent: 0,
        };
        (feed, SseBody { frames, room, last: Some(last) })
    }

    async fn run(mut self, mut live: broadcast::Receiver<Event>, resume: Option<i64>, principal: String) {
        let _open = crate::metrics::sse_client();
        let Err(end) = self.serve(&mut live, resume).await;
        drop(live);
        let reason = match &end {
            End::ClientGone => "client went away".to_string(),
            End::Shutdown => "shutting down".to_string(),
            End::Lagged(why) => format!("client too slow: {why}"),
            End::Store(e) => format!("event log unreadable: {e}"),
        };
        match end {
            End::Lagged(why) => self.tell_lagged(&why),
            End::Store(e) => tracing::warn!(error = %e, "event stream ended: cannot read the event log"),
            End::ClientGone | End::Shutdown => {}
        }
        tracing::debug!(principal = %principal, sent = self.sent, last_id = self.last_sent, reason,
                        "event stream closed");
    }

    /// Runs until the stream has to end, and says why.
    async fn serve(&mut self, live: &mut broadcast::Receiver<Event>, resume: Option<i64>) -> Result<Infallible, End> {
        // Inline: a lookup on the primary key, and a thousand clients connecting at once would otherwise each take
        // a thread of the blocking pool.
        let latest = self.store.read_blocking(events::latest_id).map_err(End::Store)?;
        let start = match resume {
            Some(id) if id <= latest => id,
            // Ahead of the log: it was reset or restored, so every event it holds may be new to this client.
            Some(id) => {
                tracing::debug!(resume = id, latest, "resume id is ahead of the event log; replaying all of it");
                0
            }
            None => latest,
        };
        (self.last_seen, self.last_sent) = (start, start);
        // The reconnection delay, and the starting id so even a client that sees no event resumes from here.
        self.send(format!("retry: {RETRY_MS}\nid: {start}\n\n").into()).await?;
        if resume.is_some() {
            Box::pin(self.catch_up()).await?;
        }
        let mut heartbeat = tokio::time::interval_at(tokio::time::Instant::now() + HEARTBEAT, HEARTBEAT);
        heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                _ = self.shutdown.cancelled() => return Err(End::Shutdown),
                _ = self.tx.closed() => return Err(End::ClientGone),
                // A full queue already keeps the connection busy: no heartbeat then.
                _ = heartbeat.tick() => if let Ok(permit) = self.tx.try_reserve()
                    && let Ok(room) = self.room.try_acquire_many(room_for(HEARTBEAT_FRAME))
                {
                    room.forget();
                    permit.send(HEARTBEAT_FRAME.into());
                } else if self.tx.is_closed() {
                    return Err(End::ClientGone);
                },
                received = live.recv() => match received {
                    // Boxed, as is `catch_up`: this task waits in this loop for hours, and the state of sending
                    // (a log read, a full-queue timeout) would otherwise take room in it all that time.
                    Ok(event) => Box::pin(self.live(event)).await?,
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        return Err(End::Lagged(format!("{n} events went by faster than this stream took them")));
                    }
                    Err(broadcast::error::RecvError::Closed) => return Err(End::Shutdown),
                },
            }
        }
    }

    /// One event from the bus.
    async fn live(&mut self, event: Event) -> Result<(), End> {
        if event.id <= self.last_seen {
            return Ok(()); // already sent from the log (or filtered out there)
        }
        if event.id == self.last_seen + 1 {
            self.last_seen = event.id;
            if self.matches(&event) {
                self.send_event(&event).await?;
            }
            return Ok(());
        }
        // Ids skipped ahead: everything up to this id is committed, so the log has the gap in order.
        self.catch_up().await?;
        self.last_seen = self.last_seen.max(event.id);
        Ok(())
    }

    /// Sends the log's matching events after `last_seen`, page by page, until the log has no more.
    async fn catch_up(&mut self) -> Result<(), End> {
        loop {
            let (after, filter) = (self.last_seen, self.filter.clone());
            let (latest, page) = self
                .store
                .read(move |c| {
                    // `latest` first: the page's read then sees at least everything up to it.
                    let latest = events::latest_id(c)?;
                    Ok((latest, events::after(c, after, &filter, PAGE)?))
                })
                .await
                .map_err(End::Store)?;
            let more = page.len() == PAGE;
            for event in &page {
                self.send_event(event).await?;
                self.last_seen = event.id;
            }
            if !more {
                self.last_seen = self.last_seen.max(latest);
                return Ok(());
            }
        }
    }

    fn matches(&self, event: &Event) -> bool {
        (self.filter.kinds.is_empty() || self.filter.kinds.contains(&event.kind))
            && self.filter.device_id.as_ref().is_none_or(|d| event.device_id.as_ref() == Some(d))
    }

    async fn send_event(&mut self, event: &Event) -> Result<(), End> {
        let data = match serde_json::to_string(event) {
            Ok(d) => d,
            Err(e) => {
                tracing::warn!(id = event.id, error = %e, "event not streamed: cannot serialise it");
                return Ok(());
            }
        };
        // Kinds are ours, but a line break in one would break the framing.
        let kind = event.kind.replace(['\r', '\n'], " ");
        self.send(format!("id: {}\nevent: {kind}\ndata: {data}\n\n", event.id).into()).await?;
        self.last_sent = event.id;
        self.sent += 1;
        Ok(())
    }

    /// Queues a frame; waits up to [`SLOW_CLIENT`] for room when the queue is full (in frames or in bytes).
    async fn send(&self, frame: QueuedFrame) -> Result<(), End> {
        if self.shutdown.is_cancelled() {
            return Err(End::Shutdown);
        }
        match self.room.try_acquire_many(room_for(&frame)) {
            Ok(room) => room.forget(),
            Err(TryAcquireError::Closed) => return Err(End::ClientGone),
            Err(TryAcquireError::NoPermits) => Box::pin(self.wait_for_bytes(room_for(&frame))).await?,
        }
        let permit = match self.tx.try_reserve() {
            Ok(p) => p,
            Err(mpsc::error::TrySendError::Closed(())) => return Err(End::ClientGone),
            // Boxed: the timer is needed only by a client that fell behind, not in every stream's state.
            Err(mpsc::error::TrySendError::Full(())) => Box::pin(self.wait_for_room()).await?,
        };
        permit.send(frame);
        Ok(())
    }

    async fn wait_for_room(&self) -> Result<mpsc::Permit<'_, QueuedFrame>, End> {
        tokio::select! {
            _ = self.shutdown.cancelled() => Err(End::Shutdown),
            r = tokio::time::timeout(SLOW_CLIENT, self.tx.reserve()) => match r {
                Ok(Ok(p)) => Ok(p),
                Ok(Err(_)) => Err(End::ClientGone),
                Err(_) => Err(End::Lagged(format!(
                    "{QUEUE} events waited for the client for more than {}s",
                    SLOW_CLIENT.as_secs()
                ))),
            },
        }
    }

    /// Waits up to [`SLOW_CLIENT`] for the client to take enough of what is queued for `bytes` more.
    async fn wait_for_bytes(&self, bytes: u32) -> Result<(), End> {
        tokio::select! {
            _ = self.shutdown.cancelled() => Err(End::Shutdown),
            _ = self.tx.closed() => Err(End::ClientGone),
            r = tokio::time::timeout(SLOW_CLIENT, self.room.acquire_many(bytes)) => match r {
                Ok(Ok(room)) => {
                    room.forget();
                    Ok(())
                }
                Ok(Err(_)) => Err(End::ClientGone),
                Err(_) => Err(End::Lagged(format!(
                    "{} KiB of events waited for the client for more than {}s",
                    QUEUE_BYTES / 1024,
                    SLOW_CLIENT.as_secs()
                ))),
            },
        }
    }

    /// `event: lagged`, delivered after whatever is still queued; then the stream ends.
    fn tell_lagged(&mut self, why: &str) {
        let data = json!({
            "reason": why,
            "last_event_id": self.last_sent,
            "resume": format!("reconnect with Last-Event-ID: {} to continue from the event log without loss",
                              self.last_sent),
        });
        if let Some(last) = self.last.take() {
            let _ = last.send(Bytes::from(format!("event: lagged\ndata: {data}\n\n")));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::EventBus;
    use crate::store::Durability;
    use crate::store::events::NewEvent;
    use serde_json::Value;

    struct Rig {
        _dir: tempfile::TempDir,
        store: Store,
        bus: EventBus,
    }

    fn rig() -> Rig {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), Default::default()).unwrap();
        Rig { _dir: dir, bus: EventBus::new(store.clone()), store }
    }

    fn new_events(kind: &str, n: usize) -> Vec<NewEvent> {
        (0..n).map(|i| NewEvent::new(kind, json!({"n": i}))).collect()
    }

    /// The next chunk of the body as text, `None` at its end.
    async fn next(body: &mut SseBody) -> Option<String> {
        let frame = tokio::time::timeout(Duration::from_secs(5), body.frame()).await.expect("a frame within 5 s")?;
        Some(String::from_utf8(frame.unwrap().into_data().unwrap().to_vec()).unwrap())
    }

    fn id_of(frame: &str) -> Option<i64> {
        frame.lines().find_map(|l| l.strip_prefix("id: ")).map(|v| v.parse().unwrap())
    }

    #[test]
    fn frames_carry_id_kind_and_the_event_as_json() {
        let r = rig();
        let (mut feed, mut body) = Feed::new(r.store.clone(), EventFilter::default(), CancellationToken::new());
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let event = Event { id: 7, ts: 0, kind: "audit".into(), device_id: None, space_id: None, data: json!({}) };
            feed.send_event(&event).await.unwrap();
            let text = next(&mut body).await.unwrap();
            assert_eq!(text, "id: 7\nevent: audit\ndata: {\"id\":7,\"ts\":\"1970-01-01T00:00:00Z\",\"kind\":\"audit\",\"data\":{}}\n\n");
        });
    }

    /// Large events fill the byte budget long before the frame count: the feed then waits for the client, and one
    /// that takes nothing gets `event: lagged` after [`SLOW_CLIENT`]; taking a frame makes room again.
    #[tokio::test]
    async fn the_queue_is_bounded_in_bytes_too() {
        let r = rig();
        let (mut feed, mut body) = Feed::new(r.store.clone(), EventFilter::default(), CancellationToken::new());
        let big = |id| Event {
            id,
            ts: 0,
            kind: "webhook".into(),
            device_id: None,
            space_id: None,
            data: json!({"blob": "x".repeat(QUEUE_BYTES / 4)}),
        };
        for id in 1..=3 {
            feed.send_event(&big(id)).await.unwrap();
        }
        // The fourth would pass the budget: it waits until the client takes a frame.
        let taken = tokio::spawn(async move {
            let first = next(&mut body).await.unwrap();
            (first, body)
        });
        feed.send_event(&big(4)).await.unwrap();
        let (first, _body) = taken.await.unwrap();
        assert_eq!(id_of(&first), Some(1));
        match feed.send_event(&big(5)).await {
            Err(End::Lagged(why)) => assert!(why.contains("KiB of events waited"), "{why}"),
            other => panic!("expected the stream to lag, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_replay_overlapping_live_events_sends_each_once_in_order() {
        let r = rig();
        // Subscribed before the replay: these are both in the log and waiting on the bus.
        let live = r.bus.subscribe();
        r.bus.publish(new_events("a", 3)).await.unwrap();
        let (feed, mut body) = Feed::new(r.store.clone(), EventFilter::default(), CancellationToken::new());
        let task = tokio::spawn(feed.run(live, Some(0), "test".into()));
        assert!(next(&mut body).await.unwrap().starts_with("retry: 3000\nid: 0\n"));
        for id in 1..=3 {
            assert_eq!(id_of(&next(&mut body).await.unwrap()), Some(id));
        }
        r.bus.publish(new_events("a", 1)).await.unwrap();
        assert_eq!(id_of(&next(&mut body).await.unwrap()), Some(4), "not a repeat of 1..3");
        drop(body);
        tokio::time::timeout(Duration::from_secs(5), task).await.expect("the feed stops when the client goes").unwrap();
    }

    #[test]
    fn parameters_take_repeated_and_comma_separated_kinds_and_prefer_last_event_id() {
        let parse = |uri: &str, last: Option<&str>| {
            let mut headers = HeaderMap::new();
            if let Some(v) = last {
                headers.insert("last-event-id", hyper::header::HeaderValue::from_str(v).unwrap());
            }
            parameters(&uri.parse().unwrap(), &headers)
        };
        let (filter, resume) = parse("/v1/events?kind=a,b&kind=c&kind=a&device_id=d%201&limit=5", None).unwrap();
        assert_eq!(
            (filter.kinds, filter.device_id, resume),
            (vec!["a".into(), "b".into(), "c".into()], Some("d 1".into()), None)
        );
        assert_eq!(parse("/v1/events?after_id=7", None).unwrap().1, Some(7));
        assert_eq!(parse("/v1/events?after_id=7", Some("9")).unwrap().1, Some(9));
        assert_eq!(parse("/v1/events?after_id=7", Some(" ")).unwrap().1, Some(7));
        assert!(parse("/v1/events?after_id=-1", None).unwrap_err().message.contains("after_id must be an event id"));
        assert!(parse("/v1/events", Some("x")).unwrap_err().message.contains("Last-Event-ID"));
        assert!(parse("/v1/events?kinds=a", None).unwrap_err().message.contains("unknown query parameter \"kinds\""));
    }

    #[tokio::test]
    async fn a_resume_id_ahead_of_the_log_replays_the_whole_log() {
        let r = rig();
        r.bus.publish(new_events("a", 2)).await.unwrap();
        let (feed, mut body) = Feed::new(r.store.clone(), EventFilter::default(), CancellationToken::new());
        tokio::spawn(feed.run(r.bus.subscribe(), Some(999), "test".into()));
        assert!(next(&mut body).await.unwrap().starts_with("retry: 3000\nid: 0\n"));
        assert_eq!(id_of(&next(&mut body).await.unwrap()), Some(1));
        assert_eq!(id_of(&next(&mut body).await.unwrap()), Some(2));
    }

    #[tokio::test]
    async fn gaps_and_out_of_order_broadcasts_are_filled_from_the_log() {
        let r = rig();
        let filter = EventFilter { kinds: vec!["b".into()], device_id: None };
        let (feed, mut body) = Feed::new(r.store.clone(), filter, CancellationToken::new());
        tokio::spawn(feed.run(r.bus.subscribe(), None, "test".into()));
        assert!(next(&mut body).await.unwrap().starts_with("retry: 3000\nid: 0\n"));
        // Appended without a broadcast (1, 2), then a broadcast one (3).
        let mut quiet = new_events("b", 1);
        quiet.extend(new_events("a", 1));
        r.store.write(Durability::Normal, move |c| events::append(c, &quiet, 1)).await.unwrap();
        r.bus.publish(new_events("b", 1)).await.unwrap();
        assert_eq!(id_of(&next(&mut body).await.unwrap()), Some(1));
        assert_eq!(id_of(&next(&mut body).await.unwrap()), Some(3));
        // Broadcast out of id order (concurrent writers): still sent in order, once.
        let late = new_events("b", 2);
        let stored = r.store.write(Durability::Normal, move |c| events::append(c, &late, 2)).await.unwrap();
        r.bus.broadcast(&[stored[1].clone(), stored[0].clone()]);
        r.bus.publish(new_events("b", 1)).await.unwrap();
        for id in [4, 5, 6] {
            assert_eq!(id_of(&next(&mut body).await.unwrap()), Some(id));
        }
    }

    #[tokio::test]
    async fn a_stream_behind_the_bus_is_told_it_lagged_and_ends() {
        let r = rig();
        let live = r.bus.subscribe();
        r.bus.publish(new_events("a", 1100)).await.unwrap();
        let (feed, mut body) = Feed::new(r.store.clone(), EventFilter::default(), CancellationToken::new());
        feed.run(live, None, "test".into()).await;
        assert!(next(&mut body).await.unwrap().starts_with("retry: 3000\nid: 1100\n"));
        let lagged = next(&mut body).await.unwrap();
        let data: Value = serde_json::from_str(lagged.strip_prefix("event: lagged\ndata: ").unwrap().trim()).unwrap();
        assert_eq!(data["last_event_id"], 1100);
        assert!(data["resume"].as_str().unwrap().contains("Last-Event-ID: 1100"));
        assert_eq!(next(&mut body).await, None);
    }

    #[tokio::test]
    async fn a_client_that_does_not_drain_its_queue_is_told_it_lagged_after_what_it_has() {
        let r = rig();
        r.bus.publish(new_events("a", QUEUE + 50)).await.unwrap();
        let (feed, mut body) = Feed::new(r.store.clone(), EventFilter::default(), CancellationToken::new());
        // Nobody reads: the queue fills with the retry hint and QUEUE - 1 events, then the client is too slow.
        feed.run(r.bus.subscribe(), Some(0), "test".into()).await;
        assert!(next(&mut body).await.unwrap().starts_with("retry: "));
        for id in 1..QUEUE as i64 {
            assert_eq!(id_of(&next(&mut body).await.unwrap()), Some(id));
        }
        let lagged = next(&mut body).await.unwrap();
        assert!(lagged.starts_with("event: lagged\n"), "{lagged}");
        assert!(lagged.contains(&format!("\"last_event_id\":{}", QUEUE - 1)), "{lagged}");
        assert_eq!(next(&mut body).await, None);
    }

    #[tokio::test]
    async fn shutdown_ends_the_stream() {
        let r = rig();
        let shutdown = CancellationToken::new();
        let (feed, mut body) = Feed::new(r.store.clone(), EventFilter::default(), shutdown.clone());
        tokio::spawn(feed.run(r.bus.subscribe(), None, "test".into()));
        assert!(next(&mut body).await.unwrap().starts_with("retry: "));
        shutdown.cancel();
        assert_eq!(next(&mut body).await, None);
    }
}
