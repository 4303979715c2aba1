//! Verdicts off the decode loop: attempts and retries are judged on a small rayon pool of its
//! own (not the global one the sampler uses), so a slow external-command verifier (up to its
//! timeout) does not stall the batch. Verdicts are handed back in submission order and each at a
//! fixed engine step (its submission step plus a lag), waiting for it if it is late: what the
//! pipeline does next, and so every batch, depends on the run alone, never on which verifier
//! finished first. A verifier slower than the lag holds the batch only for the difference.

use std::collections::{HashMap, VecDeque};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::Arc;

use flywheel_datasets::task::{Instance, Task, Verdict};

/// Worker threads: command verifiers mostly wait on a child process, so more than the cores.
const THREADS: usize = 4;

/// The verification queue of one run.
pub(crate) struct Verdicts {
    pool: rayon::ThreadPool,
    tx: Sender<(u64, Verdict)>,
    rx: Receiver<(u64, Verdict)>,
    next: u64,
    /// Tickets not yet handed back with the step they are due at, oldest first.
    order: VecDeque<(u64, u64)>,
    /// Verdicts received but not yet handed back (a later ticket finished first).
    ready: HashMap<u64, Verdict>,
}

impl Verdicts {
    pub(crate) fn new() -> Result<Self, rayon::ThreadPoolBuildError> {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(THREADS)
            .thread_name(|i| format!("flywheel-verify-{i}"))
            .build()?;
        let (tx, rx) = channel();
        Ok(Self {
            pool,
            tx,
            rx,
            next: 0,
            order: VecDeque::new(),
            ready: HashMap::new(),
        })
    }

    /// Queues `response` for judging, due at step `due`; returns its ticket.
    pub(crate) fn submit(
        &mut self,
        task: Arc<dyn Task>,
        inst: Instance,
        response: String,
        due: u64,
    ) -> u64 {
        let ticket = self.next;
        self.next += 1;
        self.order.push_back((ticket, due));
        let tx = self.tx.clone();
        self.pool.spawn(move || {
            // A verifier must never panic; if one does, the response fails instead of the run
            // (a panic on a pool thread would abort the process).
            let verdict = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                task.verify(&inst, &response)
            }))
            .unwrap_or_else(|_| Verdict::fail("verifier_panicked"));
            // The receiver is gone only when the run was abandoned; nothing to report to.
            let _ = tx.send((ticket, verdict));
        });
        ticket
    }

    /// Verdicts not yet handed back.
    #[cfg(test)]
    pub(crate) fn outstanding(&self) -> usize {
        self.order.len()
    }

    /// The oldest verdict if it is due at `step` (waiting for it if it is not in yet).
    pub(crate) fn next_due(&mut self, step: u64) -> Option<(u64, Verdict)> {
        let &(_, due) = self.order.front()?;
        if due > step {
            return None;
        }
        self.next_blocking()
    }

    /// The oldest verdict, waiting for it; `None` when nothing is outstanding.
    pub(crate) fn next_blocking(&mut self) -> Option<(u64, Verdict)> {
        let &(oldest, _) = self.order.front()?;
        while !self.ready.contains_key(&oldest) {
            // The pipeline holds a sender, so the channel cannot close while tickets are out.
            let (t, v) = self.rx.recv().ok()?;
            self.ready.insert(t, v);
        }
        self.take_oldest()
    }

    fn take_oldest(&mut self) -> Option<(u64, Verdict)> {
        let &(oldest, _) = self.order.front()?;
        let v = self.ready.remove(&oldest)?;
        self.order.pop_front();
        Some((oldest, v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flywheel_datasets::task::{InstanceError, Message};
    use serde_json::Value;

    /// Judges "slow" after a pause that the test controls, everything else at once.
    struct Gate(std::sync::Mutex<Receiver<()>>);

    impl Task for Gate {
        fn name(&self) -> &str {
            "gate"
        }
        fn parse_instance(&self, _: usize, _: Value) -> Result<Instance, InstanceError> {
            unreachable!()
        }
        fn attempt_messages(&self, _: &Instance) -> Vec<Message> {
            vec![]
        }
        fn reflection_messages(&self, _: &Instance, _: &str, _: &Verdict) -> Vec<Message> {
            vec![]
        }
        fn retry_messages(&self, _: &Instance, _: &str, _: &str) -> Vec<Message> {
            vec![]
        }
        fn verify(&self, _: &Instance, response: &str) -> Verdict {
            if response == "slow" {
                let _ = self.0.lock().map(|rx| rx.recv());
            }
            if response == "boom" {
                panic!("hostile verifier");
            }
            Verdict::fail(response.to_owned())
        }
        fn identity(&self) -> Value {
            Value::Null
        }
    }

    #[test]
    fn verdicts_come_back_in_submission_order_without_blocking_the_caller() {
        let (open, gate) = channel();
        let task: Arc<dyn Task> = Arc::new(Gate(std::sync::Mutex::new(gate)));
        let inst = Instance {
            id: "i".into(),
            fields: Value::Null,
        };
        let mut v = Verdicts::new().unwrap();
        let slow = v.submit(task.clone(), inst.clone(), "slow".into(), 3);
        let fast = v.submit(task.clone(), inst.clone(), "fast".into(), 3);
        // Submitting does not wait for the slow verdict, and nothing is handed back before it is
        // due, however fast (the fast one also waits its turn behind the slow one).
        for step in 0..3 {
            assert!(v.next_due(step).is_none());
        }
        assert_eq!(v.outstanding(), 2);
        open.send(()).unwrap();
        assert_eq!(v.next_blocking().map(|(t, _)| t), Some(slow));
        assert_eq!(
            v.next_blocking().map(|(t, v)| (t, v.reason)),
            Some((fast, "fast".into()))
        );
        assert!(v.next_blocking().is_none());
        let boom = v.submit(task, inst, "boom".into(), 0);
        let (t, verdict) = v.next_blocking().unwrap();
        assert_eq!(
            (t, verdict.pass, verdict.reason.as_str()),
            (boom, false, "verifier_panicked")
        );
    }
}
