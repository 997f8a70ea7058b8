//! The dispatcher: the one task that owns the scheduler (`valet-sched`).
//!
//! Everything that changes what may run arrives here as a [`Msg`] on one channel: a build
//! recorded, cancelled or finished, a build that must run alone on its branch, a pod asked
//! for or gone. The task hands each to the scheduler with the time elapsed since it
//! started, carries out the commands it answers (start a build's task, answer the waiting
//! build or pod), and sleeps until the scheduler's next timer. The scheduler itself sees
//! no clock: `Instant`s become [`Millis`] here, and only here.
//!
//! The counts the API shows (queued, running) are published in atomics after each message,
//! so request handlers read them without waiting for this task.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use valet_sched::{
    BackendLimits, BuildSpec, Command, Input, Limits, Millis, PodDemand, PodId, Scheduler,
};
use valet_store::BuildId;

use crate::Controller;

/// What the dispatcher is told.
pub(crate) enum Msg {
    /// A recorded build, to queue.
    Submit(BuildSpec),
    /// Take a queued build out: answered whether it was (it never started then).
    Cancel {
        build: BuildId,
        reply: oneshot::Sender<bool>,
    },
    /// A running build must have its branch to itself: answered once it has it (and a
    /// slot again), with whether it had to wait. Dropped unanswered when the build was
    /// taken out or the controller stopped.
    Exclusive {
        build: BuildId,
        reply: oneshot::Sender<bool>,
    },
    /// A build's task ended.
    Finished(BuildId),
    /// A job of a running build asks for a pod: answered when it is placed, or with the
    /// reason it never will be.
    Demand {
        demand: PodDemand,
        reply: oneshot::Sender<Result<(), String>>,
    },
    /// A pod is gone (torn down, failed to start, or given up).
    Released(PodId),
}

/// Builds waiting and running, as last published.
#[derive(Default)]
pub(crate) struct Counts {
    waiting: std::sync::Mutex<Waiting>,
    /// Started and not finished (running, or waiting for their branch).
    active: AtomicUsize,
}

/// The two halves of the waiting builds, changed together under one lock so that a
/// build moving from one to the other is never counted zero times.
#[derive(Default)]
struct Waiting {
    /// Queued in the scheduler.
    queued: usize,
    /// Places taken for builds being recorded, or sent to the dispatcher and not yet taken
    /// in: counted as queued, so a burst of triggers sees every build before it
    /// (`max_queued`).
    unseen: usize,
}

impl Counts {
    pub(crate) fn queued(&self) -> usize {
        let w = crate::lock(&self.waiting);
        w.queued + w.unseen
    }

    pub(crate) fn active(&self) -> usize {
        self.active.load(Ordering::SeqCst)
    }

    pub(crate) fn submitted(&self) {
        crate::lock(&self.waiting).unseen += 1;
    }

    /// Takes a place in the queue for a build about to be recorded, if fewer than `max`
    /// builds wait: the count and the taking are one step, so concurrent triggers never
    /// pass the bound together. The place is the build's until [`Counts::release`] (not
    /// recorded after all) or until the dispatcher takes its `Submit` in. Refused with the
    /// number of builds waiting.
    pub(crate) fn reserve(&self, max: usize) -> Result<(), usize> {
        let mut w = crate::lock(&self.waiting);
        let waiting = w.queued + w.unseen;
        if waiting >= max {
            return Err(waiting);
        }
        w.unseen += 1;
        Ok(())
    }

    /// Gives back a place taken by [`Counts::reserve`] for a build that was not recorded.
    pub(crate) fn release(&self) {
        let mut w = crate::lock(&self.waiting);
        w.unseen = w.unseen.saturating_sub(1);
    }

    /// The scheduler took a submitted build in: it moves from `unseen` to `queued` (or
    /// straight to `active`) in one step.
    fn taken_in(&self, queued: usize, active: usize) {
        let mut w = crate::lock(&self.waiting);
        w.unseen = w.unseen.saturating_sub(1);
        w.queued = queued;
        self.active.store(active, Ordering::SeqCst);
    }

    fn publish(&self, queued: usize, active: usize) {
        crate::lock(&self.waiting).queued = queued;
        self.active.store(active, Ordering::SeqCst);
    }
}

/// The scheduler's limits from the configuration.
pub(crate) fn limits(config: &crate::Config) -> Limits {
    let mut limits = Limits::new(config.concurrency);
    for r in &config.repositories {
        if let Some(c) = r.concurrency {
            limits = limits.repo(&r.name, c);
        }
    }
    limits.backend(
        config.backend.config.kind(),
        BackendLimits {
            max_pods: config.backend.max_pods,
            capacity: None,
        },
    )
}

struct Dispatcher {
    c: Controller,
    sched: Scheduler,
    epoch: Instant,
    cancels: HashMap<BuildId, oneshot::Sender<bool>>,
    turns: HashMap<BuildId, oneshot::Sender<bool>>,
    places: HashMap<PodId, oneshot::Sender<Result<(), String>>>,
    stopping: bool,
}

/// Runs until the controller stops and no build is active any more.
pub(crate) async fn run(c: Controller, mut rx: mpsc::UnboundedReceiver<Msg>) {
    let shutdown = c.inner.shutdown.clone();
    let mut d = Dispatcher {
        sched: Scheduler::new(limits(&c.inner.config)),
        c,
        epoch: Instant::now(),
        cancels: HashMap::new(),
        turns: HashMap::new(),
        places: HashMap::new(),
        stopping: false,
    };
    loop {
        let timer = d
            .sched
            .next_timeout()
            .map(|m| d.epoch + Duration::from_millis(m.0));
        tokio::select! {
            m = rx.recv() => match m {
                Some(m) => d.on(m),
                None => return,
            },
            _ = sleep_until(timer) => {
                let cmds = d.sched.handle_timeout(d.now());
                d.apply(cmds);
            }
            _ = shutdown.cancelled(), if !d.stopping => d.stopping = true,
        }
        d.publish();
        if d.stopping && d.sched.active() == 0 {
            return;
        }
    }
}

async fn sleep_until(t: Option<Instant>) {
    match t {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

impl Dispatcher {
    fn now(&self) -> Millis {
        Millis(self.epoch.elapsed().as_millis() as u64)
    }

    fn handle(&mut self, input: Input) -> Vec<Command> {
        let now = self.now();
        self.sched.handle(input, now)
    }

    fn on(&mut self, m: Msg) {
        match m {
            Msg::Submit(spec) => {
                let cmds = self.handle(Input::Submit(spec));
                self.apply(cmds);
                self.c
                    .inner
                    .counts
                    .taken_in(self.sched.queued(), self.sched.active());
            }
            Msg::Cancel { build, reply } => {
                self.cancels.insert(build, reply);
                let cmds = self.handle(Input::Cancel(build));
                self.apply(cmds);
                if let Some(reply) = self.cancels.remove(&build) {
                    let _ = reply.send(false);
                }
            }
            Msg::Exclusive { build, reply } => {
                let cmds = self.handle(Input::Exclusive(build));
                let now = cmds.contains(&Command::Turn(build));
                if now {
                    let _ = reply.send(false);
                } else {
                    self.turns.insert(build, reply);
                }
                self.apply(
                    cmds.into_iter()
                        .filter(|c| *c != Command::Turn(build))
                        .collect(),
                );
            }
            Msg::Finished(build) => {
                self.turns.remove(&build);
                let cmds = self.handle(Input::Finished(build));
                self.apply(cmds);
            }
            Msg::Demand { demand, reply } => {
                let pod = demand.pod;
                self.places.insert(pod, reply);
                let cmds = self.handle(Input::Demand(demand));
                self.apply(cmds);
            }
            Msg::Released(pod) => {
                self.places.remove(&pod);
                let cmds = self.handle(Input::Released(pod));
                self.apply(cmds);
            }
        }
    }

    fn apply(&mut self, cmds: Vec<Command>) {
        let mut more = Vec::new();
        for cmd in cmds {
            match cmd {
                Command::Start(id) => {
                    let Some(spec) = self.sched.spec(id).cloned() else {
                        continue;
                    };
                    if self.stopping {
                        // The controller stops: the build stays queued in the store and
                        // runs after the next start.
                        more.push(Input::Finished(id));
                        continue;
                    }
                    let c = self.c.clone();
                    tokio::spawn(async move {
                        crate::runner::run_build(&c, spec).await;
                        c.send(Msg::Finished(id));
                    });
                }
                Command::Turn(id) => {
                    if let Some(reply) = self.turns.remove(&id) {
                        let _ = reply.send(true);
                    }
                }
                Command::Removed(id) => {
                    self.turns.remove(&id);
                    if let Some(reply) = self.cancels.remove(&id) {
                        let _ = reply.send(true);
                    }
                }
                Command::Place { pod, .. } => {
                    if let Some(reply) = self.places.remove(&pod) {
                        let _ = reply.send(Ok(()));
                    }
                }
                Command::Fail { pod, reason } => {
                    if let Some(reply) = self.places.remove(&pod) {
                        let _ = reply.send(Err(reason.to_string()));
                    }
                }
                // No retry timers are asked for by the controller yet.
                Command::Retry(_) => {}
            }
        }
        for input in more {
            let cmds = self.handle(input);
            self.apply(cmds);
        }
    }

    fn publish(&self) {
        self.c
            .inner
            .counts
            .publish(self.sched.queued(), self.sched.active());
    }
}
