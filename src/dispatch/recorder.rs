//! The outbox's recorder: commits delivery results on a thread and a database
//! connection of its own, so that the outbox's task never waits for a commit (the
//! write lock another connection holds, or a checkpoint's two fsyncs, which fall on
//! these commits) while deliveries could start.
//!
//! The outbox hands it batches of results, in order; it commits every batch waiting in
//! one transaction (`synchronous=NORMAL`: a result lost to a power cut only means that
//! delivery is made again, with the same `webhook-id`) and answers how many batches are
//! now committed. Until then the outbox keeps those jobs as its own: a read of the
//! pending jobs passes over them (they still look pending in the database), and an
//! endpoint one of them disabled (410 Gone) stays disabled though the database does
//! not say so yet.

use std::collections::VecDeque;
use std::sync::mpsc;
use std::thread::JoinHandle;

use foldhash::{HashSet, HashSetExt};
use tokio::sync::mpsc as answers;

use crate::store::{JobUpdate, Store, StoreError};

/// The results handed to the recorder thread and not yet committed.
pub(super) struct Recorder {
    batches: Option<mpsc::Sender<Vec<(i64, JobUpdate)>>>,
    answers: answers::UnboundedReceiver<Result<usize, StoreError>>,
    thread: Option<JoinHandle<()>>,
    /// Per batch sent and not committed, oldest first: its jobs and the endpoints its
    /// results disable.
    sent: VecDeque<(Vec<i64>, Vec<String>)>,
    /// The jobs of all of them.
    held: HashSet<i64>,
}

impl Recorder {
    /// Starts the thread, which commits with `store` (a connection of its own).
    pub(super) fn start(mut store: Store) -> Result<Recorder, StoreError> {
        store.relax_sync()?;
        store.spread_checkpoints()?;
        let (batches, batches_rx) = mpsc::channel();
        let (answers_tx, answers) = answers::unbounded_channel();
        let thread = std::thread::Builder::new()
            .name("outbox results".into())
            .spawn(move || commit_batches(store, &batches_rx, &answers_tx))
            .map_err(StoreError::Thread)?;
        Ok(Recorder {
            batches: Some(batches),
            answers,
            thread: Some(thread),
            sent: VecDeque::new(),
            held: HashSet::new(),
        })
    }

    /// Hands `results` to the thread (nothing when empty); they are held until committed.
    pub(super) fn send(&mut self, results: Vec<(i64, JobUpdate)>) -> Result<(), StoreError> {
        if results.is_empty() {
            return Ok(());
        }
        let ids: Vec<i64> = results.iter().map(|(id, _)| *id).collect();
        let disabling = results
            .iter()
            .filter_map(|(_, update)| match update {
                JobUpdate::Disabled { endpoint, .. } => Some(endpoint.clone()),
                _ => None,
            })
            .collect();
        self.held.extend(&ids);
        self.sent.push_back((ids, disabling));
        let sent = self
            .batches
            .as_ref()
            .is_some_and(|batches| batches.send(results).is_ok());
        if sent { Ok(()) } else { Err(self.failure()) }
    }

    /// The next answer of the thread: how many of the oldest batches are committed now.
    /// Pending forever when nothing waits for an answer.
    pub(super) async fn answer(&mut self) -> Result<usize, StoreError> {
        if self.sent.is_empty() {
            return std::future::pending().await;
        }
        match self.answers.recv().await {
            Some(answer) => answer,
            None => Err(self.failure()),
        }
    }

    /// Lets go of the `committed` oldest batches.
    pub(super) fn committed(&mut self, committed: usize) {
        for (ids, _) in self.sent.drain(..committed.min(self.sent.len())) {
            for id in ids {
                self.held.remove(&id);
            }
        }
    }

    /// Whether `job`'s result waits to be committed: the database still shows it pending.
    pub(super) fn holds(&self, job: i64) -> bool {
        self.held.contains(&job)
    }

    /// Whether a result waiting to be committed disables `endpoint` (410 Gone).
    pub(super) fn disables(&self, endpoint: &str) -> bool {
        self.sent
            .iter()
            .any(|(_, disabling)| disabling.iter().any(|e| e == endpoint))
    }

    /// Waits until every result sent is committed, then ends the thread.
    pub(super) async fn finish(mut self) -> Result<(), StoreError> {
        while !self.sent.is_empty() {
            let committed = self.answer().await?;
            self.committed(committed);
        }
        self.batches = None;
        // Idle (every batch answered) and its channel closed: it ends at once, closing
        // its connection before the outbox reports that it stopped.
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        Ok(())
    }

    /// Why the thread stopped answering: it stopped on an error, which it answered.
    fn failure(&mut self) -> StoreError {
        match self.answers.try_recv() {
            Ok(Err(error)) => error,
            _ => StoreError::Thread(std::io::Error::other("the outbox's recorder stopped")),
        }
    }
}

/// The thread: commits every batch waiting in one transaction and answers how many,
/// until its channel closes or a commit fails (answered with the error).
fn commit_batches(
    mut store: Store,
    batches: &mpsc::Receiver<Vec<(i64, JobUpdate)>>,
    answers: &answers::UnboundedSender<Result<usize, StoreError>>,
) {
    while let Ok(mut results) = batches.recv() {
        let mut count = 1;
        while let Ok(more) = batches.try_recv() {
            results.extend(more);
            count += 1;
        }
        let answer = store.record_jobs(&results).map(|()| count);
        crate::memory::active();
        let failed = answer.is_err();
        if answers.send(answer).is_err() || failed {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Recorder;
    use crate::store::{JobUpdate, Store};

    /// A result handed on holds its job (a read of the pending jobs passes over it) and
    /// the endpoint it disables until the thread answers that it is committed; then the
    /// database says so.
    #[test]
    fn results_are_held_until_committed() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(dir.path()).unwrap();
        let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
        runtime.block_on(async {
            let mut recorder = Recorder::start(store.open_again().unwrap()).unwrap();
            let gone = JobUpdate::Disabled {
                endpoint: "http://desk".into(),
                error: "410 Gone".into(),
            };
            recorder.send(vec![(7, JobUpdate::Done), (8, gone)]).unwrap();
            recorder.send(Vec::new()).unwrap();
            assert!(recorder.holds(7) && recorder.holds(8) && recorder.disables("http://desk"));
            assert!(!recorder.holds(9) && !recorder.disables("http://other"));
            let committed = recorder.answer().await.unwrap();
            assert_eq!(committed, 1);
            recorder.committed(committed);
            assert!(!recorder.holds(7) && !recorder.holds(8) && !recorder.disables("http://desk"));
            recorder.finish().await.unwrap();
        });
        assert_eq!(store.disabled_endpoints().unwrap()[0].endpoint, "http://desk");
    }
}
