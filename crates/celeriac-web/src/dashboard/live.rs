//! Live parts of pages: a server-sent event stream that sends a part's fresh HTML every
//! [`LIVE_EVERY`](super::LIVE_EVERY). The page's script opens it while the tab is visible
//! and closes it while hidden, so a forgotten tab costs the store nothing.

use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::stream::{self, Stream};
use maud::Markup;
use std::convert::Infallible;
use std::future::Future;
use std::time::Duration;

/// A stream that renders a fresh part every `every`, the first one after `every` (the page
/// came with one).
pub(crate) fn every<F, Fut>(
    every: Duration,
    render: F,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>>
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Markup> + Send,
{
    let s = stream::unfold(render, move |render| async move {
        tokio::time::sleep(every).await;
        let part = render().await;
        Some((Ok(Event::default().data(part.into_string())), render))
    });
    Sse::new(s).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}
