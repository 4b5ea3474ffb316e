//! [`Coalescer`]: writes that need not happen at once, gathered into one.

use std::future::Future;
use std::time::Duration;

use tokio::sync::mpsc;

/// How long a [`Coalescer`] gathers items before it flushes them: short
/// enough that nothing waits noticeably, long enough that a busy server
/// writes once for many items.
pub const COALESCE_DELAY: Duration = Duration::from_millis(50);

/// Collects the items handed to [`Coalescer::push`] for a short delay, then
/// hands all of them to one `flush` call: for writes nobody waits for
/// (acknowledgements, clean-ups), so many share one transaction instead of
/// each paying a commit. Cheap to clone; the background task ends, after a
/// last flush, when every clone is dropped.
pub struct Coalescer<T> {
    queue: mpsc::UnboundedSender<T>,
}

impl<T> Clone for Coalescer<T> {
    fn clone(&self) -> Self {
        Self { queue: self.queue.clone() }
    }
}

impl<T: Send + 'static> Coalescer<T> {
    /// Starts the background task: after the first item of a round it waits
    /// [`COALESCE_DELAY`], then calls `flush` with every item queued by then.
    pub fn start<F, Fut>(mut flush: F) -> Self
    where
        F: FnMut(Vec<T>) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send,
    {
        let (queue, mut items) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut round = Vec::new();
            while let Some(first) = items.recv().await {
                round.push(first);
                tokio::time::sleep(COALESCE_DELAY).await;
                while let Ok(item) = items.try_recv() {
                    round.push(item);
                }
                flush(std::mem::take(&mut round)).await;
            }
        });
        Self { queue }
    }

    /// Queues `item` for the next flush (dropped if the task has ended,
    /// which only happens once the runtime shuts down).
    pub fn push(&self, item: T) {
        let _ = self.queue.send(item);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn items_pushed_within_the_delay_are_flushed_together() {
        let flushed: Arc<Mutex<Vec<Vec<u32>>>> = Arc::default();
        let sink = flushed.clone();
        let coalescer = Coalescer::start(move |items| {
            let sink = sink.clone();
            async move { sink.lock().unwrap().push(items) }
        });
        for i in 0..5 {
            coalescer.push(i);
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
        coalescer.push(5);
        tokio::time::sleep(Duration::from_millis(100)).await;
        coalescer.push(6);
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(*flushed.lock().unwrap(), vec![vec![0, 1, 2, 3, 4, 5], vec![6]]);
    }
}
