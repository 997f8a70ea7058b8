//! `valet-sched`: the controller's scheduling decisions as a pure state machine.
//!
//! What it decides:
//! - which waiting build may start, under the global limit, each repository's limit and
//!   one-at-a-time branches (`disableConcurrentBuilds`);
//! - when a build that learned after starting that its branch runs one build at a time
//!   may go on: until its branch is free it gives back its slot, so it never holds up
//!   other builds while it waits;
//! - which pod demand of the running builds a backend takes next, under each backend's
//!   `max_pods` and capacity, through an [`Allocator`];
//! - when a retry is due (capped exponential backoff).
//!
//! Why pure: every decision is a function of the inputs so far and the time given with
//! them. There is no I/O, no async runtime and no clock here (time is a [`Millis`] value
//! the caller passes in, as in quinn's `Connection`), so tests drive it with a simulated
//! clock, a property test can throw thousands of random event sequences at it, and a
//! benchmark measures decisions alone. The controller owns the only instance in one task:
//! it feeds it [`Input`]s, carries out the [`Command`]s it answers, and sleeps until
//! [`Scheduler::next_timeout`].
//!
//! What it is not: it runs nothing, keeps nothing across restarts (the store does) and
//! knows no backend but by name.

mod alloc;

use std::collections::{BTreeMap, HashMap, VecDeque};

pub use alloc::{Allocator, FirstFit, Room};

/// A point in time, in milliseconds since an origin the caller chooses (the controller:
/// when it started). Only differences matter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Millis(pub u64);

impl Millis {
    pub fn saturating_add(self, d: Millis) -> Millis {
        Millis(self.0.saturating_add(d.0))
    }
}

/// The controller's build id.
pub type BuildId = i64;
/// A pod demand's id, chosen by the caller (unique while the demand lives).
pub type PodId = u64;
/// What a retry timer is for, chosen by the caller.
pub type RetryKey = u64;

/// CPU and memory, as a pod asks for them (the sum of its containers' requests) or as a
/// backend offers them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Resources {
    pub cpu_millis: u64,
    pub memory_bytes: u64,
}

impl Resources {
    /// Whether `self` fits in `room` in every dimension.
    pub fn fits_in(&self, room: &Resources) -> bool {
        self.cpu_millis <= room.cpu_millis && self.memory_bytes <= room.memory_bytes
    }

    fn plus(self, o: Resources) -> Resources {
        Resources {
            cpu_millis: self.cpu_millis.saturating_add(o.cpu_millis),
            memory_bytes: self.memory_bytes.saturating_add(o.memory_bytes),
        }
    }

    fn minus(self, o: Resources) -> Resources {
        Resources {
            cpu_millis: self.cpu_millis.saturating_sub(o.cpu_millis),
            memory_bytes: self.memory_bytes.saturating_sub(o.memory_bytes),
        }
    }
}

impl std::fmt::Display for Resources {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} millicores of CPU and {} MiB of memory",
            self.cpu_millis,
            self.memory_bytes.div_ceil(1 << 20)
        )
    }
}

/// What one backend may hold at once. Unlimited by default.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct BackendLimits {
    /// Pods placed at once.
    pub max_pods: Option<usize>,
    /// The CPU and memory its pods may ask for in all (an agent pool's hosts, a node).
    pub capacity: Option<Resources>,
}

/// The delays between retries: `base · 2^attempt`, at most `cap`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub base: Millis,
    pub cap: Millis,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            base: Millis(500),
            cap: Millis(60_000),
        }
    }
}

impl Backoff {
    /// The delay before retry number `attempt` (0 for the first retry).
    pub fn delay(&self, attempt: u32) -> Millis {
        let factor = 1u64.checked_shl(attempt.min(63)).unwrap_or(u64::MAX);
        Millis(self.base.0.saturating_mul(factor).min(self.cap.0))
    }
}

/// Every limit the scheduler enforces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Builds holding a slot at once, over all repositories (at least 1).
    pub global: usize,
    /// Builds holding a slot at once, per repository (absent: only the global limit).
    pub per_repo: HashMap<String, usize>,
    /// Per backend name (absent: unlimited).
    pub backends: HashMap<String, BackendLimits>,
    pub backoff: Backoff,
}

impl Limits {
    /// `global` builds at once, nothing else limited.
    pub fn new(global: usize) -> Limits {
        Limits {
            global: global.max(1),
            per_repo: HashMap::new(),
            backends: HashMap::new(),
            backoff: Backoff::default(),
        }
    }

    pub fn repo(mut self, repo: &str, limit: usize) -> Limits {
        self.per_repo.insert(repo.to_string(), limit.max(1));
        self
    }

    pub fn backend(mut self, name: &str, limits: BackendLimits) -> Limits {
        self.backends.insert(name.to_string(), limits);
        self
    }
}

/// A build to queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildSpec {
    pub id: BuildId,
    pub repo: String,
    pub branch: String,
    /// Known before it starts to run one at a time on its branch (the repository's
    /// `disable_concurrent_builds`): it starts only when it can have its branch.
    pub exclusive: bool,
}

/// A pod a running build asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodDemand {
    pub pod: PodId,
    pub build: BuildId,
    /// The backend's name (`local`, `docker`, …), as in [`Limits::backends`].
    pub backend: String,
    /// The job of the plan (`job-1`).
    pub job: String,
    /// The `node` label expression, as written.
    pub label: Option<String>,
    pub resources: Resources,
}

/// What happened, as the scheduler is told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// A build was recorded: queue it (a build already known is ignored).
    Submit(BuildSpec),
    /// Take a build out if it has not started, or waits for its branch: answered
    /// [`Command::Removed`]. A build that runs is stopped by its owner, which then says
    /// [`Input::Finished`].
    Cancel(BuildId),
    /// A running build must run alone on its branch (its pipeline says
    /// `disableConcurrentBuilds`): answered [`Command::Turn`] once it may go on.
    Exclusive(BuildId),
    /// A build ended (or never ran): its slot, branch and pods are free.
    Finished(BuildId),
    /// A running build asks for a pod: answered [`Command::Place`] or [`Command::Fail`].
    Demand(PodDemand),
    /// A pod is gone (torn down, or its provisioning failed or was given up).
    Released(PodId),
    /// Retry `key` later: answered [`Command::Retry`] after the backoff of `attempt`. A
    /// key already waiting is rescheduled.
    RetryLater { key: RetryKey, attempt: u32 },
    /// Forget the retry of `key`.
    CancelRetry(RetryKey),
}

/// What the scheduler decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Start this queued build: it holds a slot (and its branch, when exclusive).
    Start(BuildId),
    /// This build has its branch to itself and holds a slot: it may go on.
    Turn(BuildId),
    /// This build was taken out before it started or while it waited for its branch.
    Removed(BuildId),
    /// Provision this pod now, on this backend.
    Place { pod: PodId, backend: String },
    /// This pod will never be placed, for this reason.
    Fail { pod: PodId, reason: Unplaceable },
    /// Retry `key` now.
    Retry(RetryKey),
}

/// Why a pod demand can never be placed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unplaceable {
    #[error("the pod of {job} asks for {asks}, more than the {backend} backend has in all ({has})")]
    TooLarge {
        job: String,
        backend: String,
        asks: Resources,
        has: Resources,
    },
    #[error("the {backend} backend takes no pods (its max_pods is 0)")]
    NoPods { backend: String },
    #[error("build {0} is not running, so its pods are not placed")]
    NotRunning(BuildId),
    #[error("pod {0} was asked for twice")]
    Duplicate(PodId),
}

/// Where a build is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BuildState {
    /// Waiting for a slot (or for its branch, when exclusive from the start).
    Queued,
    /// Holding a slot.
    Running,
    /// Started, then found it must run alone on its branch: waiting for the branch, its
    /// slot given back.
    WaitingTurn,
}

#[derive(Debug)]
struct Build {
    spec: BuildSpec,
    /// `repo` and `branch` in one key (the branch turns are by it).
    branch_key: String,
    state: BuildState,
    /// It holds its branch's turn.
    turn: bool,
    pods: Vec<PodId>,
}

#[derive(Debug)]
struct PodEntry {
    demand: PodDemand,
    placed: bool,
}

#[derive(Debug, Default)]
struct BackendState {
    limits: BackendLimits,
    /// Waiting demands, oldest first.
    pending: VecDeque<PodId>,
    placed: usize,
    used: Resources,
    /// None of `pending` could be placed at the last look, and nothing was freed since.
    settled: bool,
}

impl BackendState {
    fn room(&self) -> Room {
        Room {
            pods: self.limits.max_pods.map(|m| m.saturating_sub(self.placed)),
            free: self.limits.capacity.map(|c| c.minus(self.used)),
        }
    }
}

/// See the [crate documentation](crate).
pub struct Scheduler {
    limits: Limits,
    allocator: Box<dyn Allocator>,
    builds: HashMap<BuildId, Build>,
    /// Queued builds, oldest first. Between calls, none of them could start.
    queue: VecDeque<BuildId>,
    /// Builds waiting for their branch, oldest first. They go before queued builds: they
    /// started first.
    turn_waiters: VecDeque<BuildId>,
    /// Builds holding a slot.
    running: usize,
    running_per_repo: HashMap<String, usize>,
    /// The build holding each branch's turn.
    turns: HashMap<String, BuildId>,
    pods: HashMap<PodId, PodEntry>,
    backends: HashMap<String, BackendState>,
    /// Retry timers by due time (and a sequence number for order among equals).
    timers: BTreeMap<(Millis, u64), RetryKey>,
    timer_of: HashMap<RetryKey, (Millis, u64)>,
    timer_seq: u64,
    out: Vec<Command>,
}

impl std::fmt::Debug for Scheduler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scheduler")
            .field("queued", &self.queue.len())
            .field("running", &self.running)
            .field("waiting_turn", &self.turn_waiters.len())
            .field("pods", &self.pods.len())
            .finish_non_exhaustive()
    }
}

impl Scheduler {
    /// A scheduler placing pods first come, first served.
    pub fn new(limits: Limits) -> Scheduler {
        Scheduler::with_allocator(limits, Box::new(FirstFit))
    }

    pub fn with_allocator(mut limits: Limits, allocator: Box<dyn Allocator>) -> Scheduler {
        limits.global = limits.global.max(1);
        Scheduler {
            limits,
            allocator,
            builds: HashMap::new(),
            queue: VecDeque::new(),
            turn_waiters: VecDeque::new(),
            running: 0,
            running_per_repo: HashMap::new(),
            turns: HashMap::new(),
            pods: HashMap::new(),
            backends: HashMap::new(),
            timers: BTreeMap::new(),
            timer_of: HashMap::new(),
            timer_seq: 0,
            out: Vec::new(),
        }
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Takes `input` at `now`; returns what to do, in order.
    pub fn handle(&mut self, input: Input, now: Millis) -> Vec<Command> {
        match input {
            Input::Submit(spec) => self.submit(spec),
            Input::Cancel(id) => self.cancel(id),
            Input::Exclusive(id) => self.exclusive(id),
            Input::Finished(id) => self.finished(id),
            Input::Demand(d) => self.demand(d),
            Input::Released(pod) => self.released(pod),
            Input::RetryLater { key, attempt } => {
                self.cancel_timer(key);
                let due = now.saturating_add(self.limits.backoff.delay(attempt));
                self.timer_seq += 1;
                self.timers.insert((due, self.timer_seq), key);
                self.timer_of.insert(key, (due, self.timer_seq));
            }
            Input::CancelRetry(key) => self.cancel_timer(key),
        }
        std::mem::take(&mut self.out)
    }

    /// When [`Scheduler::handle_timeout`] has something to do next.
    pub fn next_timeout(&self) -> Option<Millis> {
        self.timers.keys().next().map(|(t, _)| *t)
    }

    /// The timers due at `now`, fired in the order they are due.
    pub fn handle_timeout(&mut self, now: Millis) -> Vec<Command> {
        while let Some(entry) = self.timers.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let key = entry.remove();
            self.timer_of.remove(&key);
            self.out.push(Command::Retry(key));
        }
        std::mem::take(&mut self.out)
    }

    /// Builds queued (not started).
    pub fn queued(&self) -> usize {
        self.queue.len()
    }

    /// Builds holding a slot.
    pub fn running(&self) -> usize {
        self.running
    }

    /// Started builds waiting for their branch (holding no slot).
    pub fn waiting_turn(&self) -> usize {
        self.turn_waiters.len()
    }

    /// Builds started and not finished: running or waiting for their branch.
    pub fn active(&self) -> usize {
        self.running + self.turn_waiters.len()
    }

    pub fn state(&self, id: BuildId) -> Option<BuildState> {
        self.builds.get(&id).map(|b| b.state)
    }

    pub fn spec(&self, id: BuildId) -> Option<&BuildSpec> {
        self.builds.get(&id).map(|b| &b.spec)
    }

    /// Pods placed on `backend` now.
    pub fn placed_pods(&self, backend: &str) -> usize {
        self.backends.get(backend).map_or(0, |b| b.placed)
    }

    /// Pod demands waiting, over all backends.
    pub fn pending_pods(&self) -> usize {
        self.backends.values().map(|b| b.pending.len()).sum()
    }

    fn submit(&mut self, spec: BuildSpec) {
        if self.builds.contains_key(&spec.id) {
            return;
        }
        let id = spec.id;
        let branch_key = format!("{}\n{}", spec.repo, spec.branch);
        self.builds.insert(
            id,
            Build {
                spec,
                branch_key,
                state: BuildState::Queued,
                turn: false,
                pods: Vec::new(),
            },
        );
        // Every build already queued is blocked, and a new build frees nothing: only this
        // one may start. Starting it now when it can is what keeps the queue
        // work-conserving without rescanning it on every submission.
        if self.can_start(id) {
            self.start(id);
        } else {
            self.queue.push_back(id);
        }
    }

    fn cancel(&mut self, id: BuildId) {
        let Some(b) = self.builds.get(&id) else {
            return;
        };
        match b.state {
            BuildState::Running => {}
            BuildState::Queued | BuildState::WaitingTurn => {
                self.remove(id);
                self.out.push(Command::Removed(id));
                self.dispatch();
            }
        }
    }

    fn exclusive(&mut self, id: BuildId) {
        let Some(b) = self.builds.get(&id) else {
            return;
        };
        if b.state != BuildState::Running {
            return;
        }
        if b.turn {
            self.out.push(Command::Turn(id));
            return;
        }
        if !self.turns.contains_key(&b.branch_key) {
            let key = b.branch_key.clone();
            self.turns.insert(key, id);
            if let Some(b) = self.builds.get_mut(&id) {
                b.turn = true;
            }
            self.out.push(Command::Turn(id));
            return;
        }
        // Its branch is another build's: it waits without holding a slot, which goes to
        // whoever can use it now.
        self.release_slot(id);
        if let Some(b) = self.builds.get_mut(&id) {
            b.state = BuildState::WaitingTurn;
        }
        self.turn_waiters.push_back(id);
        self.dispatch();
    }

    fn finished(&mut self, id: BuildId) {
        if self.builds.contains_key(&id) {
            self.remove(id);
            self.dispatch();
        }
    }

    /// Forgets `id`: its place in a queue, its slot, its branch, its pods.
    fn remove(&mut self, id: BuildId) {
        let Some(b) = self.builds.get(&id) else {
            return;
        };
        match b.state {
            BuildState::Queued => self.queue.retain(|q| *q != id),
            BuildState::WaitingTurn => self.turn_waiters.retain(|q| *q != id),
            BuildState::Running => self.release_slot(id),
        }
        let Some(b) = self.builds.remove(&id) else {
            return;
        };
        if b.turn {
            self.turns.remove(&b.branch_key);
        }
        let mut touched: Vec<String> = Vec::new();
        for pod in b.pods {
            if let Some(backend) = self.forget_pod(pod)
                && !touched.contains(&backend)
            {
                touched.push(backend);
            }
        }
        for backend in touched {
            self.place_on(&backend, None);
        }
    }

    fn release_slot(&mut self, id: BuildId) {
        let Some(b) = self.builds.get(&id) else {
            return;
        };
        self.running -= 1;
        if let Some(n) = self.running_per_repo.get_mut(&b.spec.repo) {
            *n -= 1;
            if *n == 0 {
                self.running_per_repo.remove(&b.spec.repo);
            }
        }
    }

    fn take_slot(&mut self, id: BuildId) {
        let Some(b) = self.builds.get_mut(&id) else {
            return;
        };
        b.state = BuildState::Running;
        self.running += 1;
        *self
            .running_per_repo
            .entry(b.spec.repo.clone())
            .or_default() += 1;
    }

    fn slot_free(&self, repo: &str) -> bool {
        self.running < self.limits.global
            && self
                .limits
                .per_repo
                .get(repo)
                .is_none_or(|&l| self.running_per_repo.get(repo).copied().unwrap_or(0) < l)
    }

    fn can_start(&self, id: BuildId) -> bool {
        let Some(b) = self.builds.get(&id) else {
            return false;
        };
        self.slot_free(&b.spec.repo)
            && (!b.spec.exclusive || !self.turns.contains_key(&b.branch_key))
    }

    fn start(&mut self, id: BuildId) {
        self.take_slot(id);
        if let Some(b) = self.builds.get_mut(&id)
            && b.spec.exclusive
        {
            b.turn = true;
            self.turns.insert(b.branch_key.clone(), id);
        }
        self.out.push(Command::Start(id));
    }

    /// Gives free slots and branches out: to builds waiting for their branch first, then
    /// to queued builds, each in order.
    fn dispatch(&mut self) {
        if self.running >= self.limits.global {
            return;
        }
        let mut i = 0;
        while i < self.turn_waiters.len() && self.running < self.limits.global {
            let id = self.turn_waiters[i];
            let Some(b) = self.builds.get(&id) else {
                self.turn_waiters.remove(i);
                continue;
            };
            if self.turns.contains_key(&b.branch_key) || !self.slot_free(&b.spec.repo) {
                i += 1;
                continue;
            }
            let key = b.branch_key.clone();
            self.turn_waiters.remove(i);
            self.take_slot(id);
            self.turns.insert(key, id);
            if let Some(b) = self.builds.get_mut(&id) {
                b.turn = true;
            }
            self.out.push(Command::Turn(id));
        }
        let mut i = 0;
        while i < self.queue.len() && self.running < self.limits.global {
            let id = self.queue[i];
            if self.can_start(id) {
                self.queue.remove(i);
                self.start(id);
            } else {
                i += 1;
            }
        }
    }

    fn demand(&mut self, d: PodDemand) {
        let pod = d.pod;
        if self.pods.contains_key(&pod) {
            self.out.push(Command::Fail {
                pod,
                reason: Unplaceable::Duplicate(pod),
            });
            return;
        }
        let Some(b) = self.builds.get_mut(&d.build) else {
            self.out.push(Command::Fail {
                pod,
                reason: Unplaceable::NotRunning(d.build),
            });
            return;
        };
        if b.state == BuildState::Queued {
            self.out.push(Command::Fail {
                pod,
                reason: Unplaceable::NotRunning(d.build),
            });
            return;
        }
        let limits = self
            .limits
            .backends
            .get(&d.backend)
            .copied()
            .unwrap_or_default();
        if limits.max_pods == Some(0) {
            self.out.push(Command::Fail {
                pod,
                reason: Unplaceable::NoPods {
                    backend: d.backend.clone(),
                },
            });
            return;
        }
        if let Some(cap) = limits.capacity
            && !d.resources.fits_in(&cap)
        {
            self.out.push(Command::Fail {
                pod,
                reason: Unplaceable::TooLarge {
                    job: d.job.clone(),
                    backend: d.backend.clone(),
                    asks: d.resources,
                    has: cap,
                },
            });
            return;
        }
        b.pods.push(pod);
        let backend = d.backend.clone();
        let state = self
            .backends
            .entry(backend.clone())
            .or_insert_with(|| BackendState {
                limits,
                ..BackendState::default()
            });
        let only = (state.settled && !state.pending.is_empty()).then_some(pod);
        state.pending.push_back(pod);
        self.pods.insert(
            pod,
            PodEntry {
                demand: d,
                placed: false,
            },
        );
        self.place_on(&backend, only);
    }

    fn released(&mut self, pod: PodId) {
        let Some(build) = self.pods.get(&pod).map(|p| p.demand.build) else {
            return;
        };
        if let Some(b) = self.builds.get_mut(&build) {
            b.pods.retain(|p| *p != pod);
        }
        if let Some(backend) = self.forget_pod(pod) {
            self.place_on(&backend, None);
        }
    }

    /// Drops a pod from the books; returns its backend.
    fn forget_pod(&mut self, pod: PodId) -> Option<String> {
        let entry = self.pods.remove(&pod)?;
        let state = self.backends.get_mut(&entry.demand.backend)?;
        if entry.placed {
            state.placed -= 1;
            state.used = state.used.minus(entry.demand.resources);
        } else if let Some(i) = state.pending.iter().position(|p| *p == pod) {
            state.pending.remove(i);
        }
        Some(entry.demand.backend)
    }

    /// Places what `backend` has room for, as its allocator chooses. With `only`, the
    /// allocator is offered that demand alone: it just arrived, and the others had no
    /// room at the last look, which nothing has freed since (the backend is `settled`).
    /// Without it, a backend with hundreds of demands waiting would look at all of them
    /// for every new one.
    fn place_on(&mut self, backend: &str, only: Option<PodId>) {
        let Some(state) = self.backends.get_mut(backend) else {
            return;
        };
        state.settled = false;
        loop {
            if state.pending.is_empty() {
                state.settled = true;
                return;
            }
            let room = state.room();
            if room.is_full() {
                state.settled = true;
                return;
            }
            let pods = &self.pods;
            let pick = match only {
                Some(pod) => {
                    let Some(d) = pods.get(&pod).map(|e| &e.demand) else {
                        state.settled = true;
                        return;
                    };
                    self.allocator.pick(backend, &room, &mut std::iter::once(d))
                }
                None => {
                    let mut pending = state
                        .pending
                        .iter()
                        .filter_map(|p| pods.get(p))
                        .map(|e| &e.demand);
                    self.allocator.pick(backend, &room, &mut pending)
                }
            };
            let Some(pick) = pick else {
                state.settled = true;
                return;
            };
            let Some(entry) = self.pods.get_mut(&pick) else {
                return;
            };
            if entry.placed || entry.demand.backend != backend || !room.fits(&entry.demand) {
                // The allocator answered something that cannot go there: nothing is placed.
                return;
            }
            entry.placed = true;
            state.placed += 1;
            state.used = state.used.plus(entry.demand.resources);
            if let Some(i) = state.pending.iter().position(|p| *p == pick) {
                state.pending.remove(i);
            }
            self.out.push(Command::Place {
                pod: pick,
                backend: backend.to_string(),
            });
            if only.is_some() {
                // Placing it only took room: what waited before still has none.
                state.settled = true;
                return;
            }
        }
    }

    fn cancel_timer(&mut self, key: RetryKey) {
        if let Some(at) = self.timer_of.remove(&key) {
            self.timers.remove(&at);
        }
    }
}

#[cfg(test)]
mod tests;
