//! Random event sequences against a model kept from the outside, from the inputs given and
//! the commands answered: no limit is ever exceeded, nothing waits while there is room for
//! it, and once every build ends, every pod demand was placed or failed with a reason.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use proptest::prelude::*;
use valet_sched::{
    BackendLimits, BuildId, BuildSpec, Command, Input, Limits, Millis, PodDemand, PodId, Resources,
    Scheduler,
};

const REPOS: [&str; 3] = ["r0", "r1", "r2"];
const BRANCHES: [&str; 2] = ["main", "dev"];
const BACKENDS: [&str; 3] = ["b0", "b1", "b2"];

#[derive(Debug, Clone)]
enum Ev {
    Submit {
        repo: usize,
        branch: usize,
        exclusive: bool,
    },
    Exclusive(usize),
    Finish(usize),
    Cancel(usize),
    Demand {
        build: usize,
        backend: usize,
        cpu: u64,
        mem: u64,
    },
    Release(usize),
    Retry {
        attempt: u32,
    },
    Tick(u64),
}

fn ev() -> impl Strategy<Value = Ev> {
    prop_oneof![
        4 => (0..3usize, 0..2usize, any::<bool>()).prop_map(|(repo, branch, exclusive)| Ev::Submit { repo, branch, exclusive: exclusive && repo == 0 }),
        2 => any::<usize>().prop_map(Ev::Exclusive),
        3 => any::<usize>().prop_map(Ev::Finish),
        1 => any::<usize>().prop_map(Ev::Cancel),
        4 => (any::<usize>(), 0..3usize, 0..3000u64, 0..3u64).prop_map(|(build, backend, cpu, mem)| Ev::Demand { build, backend, cpu, mem }),
        2 => any::<usize>().prop_map(Ev::Release),
        1 => (0..8u32).prop_map(|attempt| Ev::Retry { attempt }),
        1 => (0..5000u64).prop_map(Ev::Tick),
    ]
}

#[derive(Debug, Clone)]
struct Setup {
    global: usize,
    repo_limit: Option<usize>,
    b0_pods: Option<usize>,
    b1_capacity: Option<u64>,
}

fn setup() -> impl Strategy<Value = Setup> {
    (
        1..5usize,
        proptest::option::of(1..3usize),
        proptest::option::of(1..4usize),
        proptest::option::of(1000..4000u64),
    )
        .prop_map(|(global, repo_limit, b0_pods, b1_capacity)| Setup {
            global,
            repo_limit,
            b0_pods,
            b1_capacity,
        })
}

fn limits(s: &Setup) -> Limits {
    let mut l = Limits::new(s.global);
    if let Some(r) = s.repo_limit {
        l = l.repo("r1", r);
    }
    l = l.backend(
        "b0",
        BackendLimits {
            max_pods: s.b0_pods,
            capacity: None,
        },
    );
    if let Some(cpu) = s.b1_capacity {
        l = l.backend(
            "b1",
            BackendLimits {
                max_pods: Some(3),
                capacity: Some(Resources {
                    cpu_millis: cpu,
                    memory_bytes: 2,
                }),
            },
        );
    }
    l
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum St {
    Queued,
    Running,
    WaitingTurn,
}

#[derive(Debug)]
struct B {
    repo: &'static str,
    branch: &'static str,
    exclusive_from_start: bool,
    st: St,
    /// Holds its branch's turn.
    turn: bool,
    /// Said Exclusive and was not answered yet.
    wants_turn: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum P {
    Pending,
    Placed,
    Failed,
    Gone,
}

#[derive(Debug)]
struct Pd {
    build: BuildId,
    backend: &'static str,
    res: Resources,
    st: P,
    answered: bool,
}

/// The world as the commands tell it.
struct Model {
    limits: Limits,
    s: Scheduler,
    now: Millis,
    builds: BTreeMap<BuildId, B>,
    ids: Vec<BuildId>,
    pods: BTreeMap<PodId, Pd>,
    pod_ids: Vec<PodId>,
    next_id: BuildId,
    next_pod: PodId,
    retries_due: BTreeMap<u64, Millis>,
    next_key: u64,
}

impl Model {
    fn new(setup: Setup) -> Model {
        let limits = limits(&setup);
        Model {
            s: Scheduler::new(limits.clone()),
            limits,
            now: Millis(0),
            builds: BTreeMap::new(),
            ids: Vec::new(),
            pods: BTreeMap::new(),
            pod_ids: Vec::new(),
            next_id: 1,
            next_pod: 1,
            retries_due: BTreeMap::new(),
            next_key: 1,
        }
    }

    fn input(&mut self, i: Input) {
        let cmds = self.s.handle(i, self.now);
        self.apply(cmds);
        self.check();
    }

    fn apply(&mut self, cmds: Vec<Command>) {
        for c in cmds {
            match c {
                Command::Start(id) => {
                    let b = self.builds.get_mut(&id).expect("started a known build");
                    assert_eq!(b.st, St::Queued, "started twice: {id}");
                    b.st = St::Running;
                    b.turn = b.exclusive_from_start;
                }
                Command::Turn(id) => {
                    let b = self.builds.get_mut(&id).expect("turn of a known build");
                    assert!(b.wants_turn, "turn not asked for: {id}");
                    b.wants_turn = false;
                    b.st = St::Running;
                    b.turn = true;
                }
                Command::Removed(id) => {
                    let b = self.builds.remove(&id).expect("removed a known build");
                    assert_ne!(b.st, St::Running);
                    self.forget_pods(id);
                }
                Command::Place { pod, backend } => {
                    let p = self.pods.get_mut(&pod).expect("placed a known pod");
                    assert_eq!(p.st, P::Pending, "placed twice: {pod}");
                    assert_eq!(p.backend, backend);
                    p.st = P::Placed;
                    p.answered = true;
                }
                Command::Fail { pod, reason } => {
                    let p = self.pods.get_mut(&pod).expect("failed a known pod");
                    assert_eq!(p.st, P::Pending);
                    assert!(!reason.to_string().is_empty());
                    p.st = P::Failed;
                    p.answered = true;
                }
                Command::Retry(key) => {
                    let due = self.retries_due.remove(&key).expect("a retry asked for");
                    assert!(due <= self.now, "retry {key} early");
                }
            }
        }
    }

    fn forget_pods(&mut self, build: BuildId) {
        for p in self.pods.values_mut().filter(|p| p.build == build) {
            if matches!(p.st, P::Pending | P::Placed) {
                p.st = P::Gone;
            }
        }
    }

    fn slot_free(&self, repo: &str) -> bool {
        let running = self.builds.values().filter(|b| b.st == St::Running).count();
        let in_repo = self
            .builds
            .values()
            .filter(|b| b.st == St::Running && b.repo == repo)
            .count();
        running < self.limits.global && self.limits.per_repo.get(repo).is_none_or(|&l| in_repo < l)
    }

    fn turn_taken(&self, repo: &str, branch: &str) -> bool {
        self.builds
            .values()
            .any(|b| b.turn && b.repo == repo && b.branch == branch)
    }

    fn check(&self) {
        // Limits.
        let running: Vec<&B> = self
            .builds
            .values()
            .filter(|b| b.st == St::Running)
            .collect();
        assert!(running.len() <= self.limits.global, "global limit");
        for (repo, &l) in &self.limits.per_repo {
            assert!(
                running.iter().filter(|b| b.repo == *repo).count() <= l,
                "limit of {repo}"
            );
        }
        let mut turns = BTreeSet::new();
        for b in self.builds.values().filter(|b| b.turn) {
            assert_eq!(b.st, St::Running, "a turn held by a build not running");
            assert!(
                turns.insert((b.repo, b.branch)),
                "two builds hold {}/{}",
                b.repo,
                b.branch
            );
        }
        let mut placed: HashMap<&str, (usize, u64, u64)> = HashMap::new();
        for p in self.pods.values().filter(|p| p.st == P::Placed) {
            let e = placed.entry(p.backend).or_default();
            e.0 += 1;
            e.1 += p.res.cpu_millis;
            e.2 += p.res.memory_bytes;
        }
        for (backend, (n, cpu, mem)) in &placed {
            let l = self
                .limits
                .backends
                .get(*backend)
                .copied()
                .unwrap_or_default();
            assert!(l.max_pods.is_none_or(|m| *n <= m), "max_pods of {backend}");
            if let Some(c) = l.capacity {
                assert!(
                    *cpu <= c.cpu_millis && *mem <= c.memory_bytes,
                    "capacity of {backend}"
                );
            }
        }
        // Work-conserving: what waits has no room.
        for (id, b) in &self.builds {
            match b.st {
                St::Queued => {
                    let could_start = self.slot_free(b.repo)
                        && !(b.exclusive_from_start && self.turn_taken(b.repo, b.branch));
                    assert!(!could_start, "build {id} waits with a slot free");
                }
                St::WaitingTurn => {
                    let could_go = self.slot_free(b.repo) && !self.turn_taken(b.repo, b.branch);
                    assert!(!could_go, "build {id} waits for a free branch");
                }
                St::Running => assert!(!b.wants_turn, "build {id} runs without its turn"),
            }
        }
        for (id, p) in self.pods.iter().filter(|(_, p)| p.st == P::Pending) {
            let l = self
                .limits
                .backends
                .get(p.backend)
                .copied()
                .unwrap_or_default();
            let (n, cpu, mem) = placed.get(p.backend).copied().unwrap_or_default();
            let pods_ok = l.max_pods.is_none_or(|m| n < m);
            let res_ok = l.capacity.is_none_or(|c| {
                cpu + p.res.cpu_millis <= c.cpu_millis && mem + p.res.memory_bytes <= c.memory_bytes
            });
            assert!(
                !(pods_ok && res_ok),
                "pod {id} waits with room for it on {}",
                p.backend
            );
        }
        // The scheduler's own counts agree.
        assert_eq!(self.s.running(), running.len());
        assert_eq!(
            self.s.queued(),
            self.builds.values().filter(|b| b.st == St::Queued).count()
        );
    }

    fn pick<T: Copy>(v: &[T], i: usize) -> Option<T> {
        (!v.is_empty()).then(|| v[i % v.len()])
    }

    fn step(&mut self, e: Ev) {
        match e {
            Ev::Submit {
                repo,
                branch,
                exclusive,
            } => {
                let id = self.next_id;
                self.next_id += 1;
                self.ids.push(id);
                self.builds.insert(
                    id,
                    B {
                        repo: REPOS[repo],
                        branch: BRANCHES[branch],
                        exclusive_from_start: exclusive,
                        st: St::Queued,
                        turn: false,
                        wants_turn: false,
                    },
                );
                self.input(Input::Submit(BuildSpec {
                    id,
                    repo: REPOS[repo].into(),
                    branch: BRANCHES[branch].into(),
                    exclusive,
                }));
            }
            Ev::Exclusive(i) => {
                let Some(id) = Model::pick(&self.ids, i) else {
                    return;
                };
                match self.builds.get_mut(&id) {
                    // Only a running build learns it (its pipeline was read), once.
                    Some(b) if b.st == St::Running && !b.wants_turn => {
                        b.wants_turn = true;
                        let cmds = self.s.handle(Input::Exclusive(id), self.now);
                        if self.builds[&id].turn && !cmds.contains(&Command::Turn(id)) {
                            panic!("build {id} holds its turn and was not told: {cmds:?}");
                        }
                        if let Some(b) = self.builds.get_mut(&id)
                            && !cmds.contains(&Command::Turn(id))
                        {
                            b.st = St::WaitingTurn;
                        }
                        self.apply(cmds);
                        self.check();
                    }
                    _ => {}
                }
            }
            Ev::Finish(i) => {
                let Some(id) = Model::pick(&self.ids, i) else {
                    return;
                };
                self.finish(id);
            }
            Ev::Cancel(i) => {
                let Some(id) = Model::pick(&self.ids, i) else {
                    return;
                };
                let before = self.builds.get(&id).map(|b| b.st);
                let cmds = self.s.handle(Input::Cancel(id), self.now);
                match before {
                    Some(St::Queued | St::WaitingTurn) => {
                        assert!(cmds.contains(&Command::Removed(id)), "{cmds:?}")
                    }
                    _ => assert!(!cmds.contains(&Command::Removed(id)), "{cmds:?}"),
                }
                self.apply(cmds);
                self.check();
            }
            Ev::Demand {
                build,
                backend,
                cpu,
                mem,
            } => {
                let Some(id) = Model::pick(&self.ids, build) else {
                    return;
                };
                // Only running builds provision pods.
                if self.builds.get(&id).is_none_or(|b| b.st != St::Running) {
                    return;
                }
                let pod = self.next_pod;
                self.next_pod += 1;
                self.pod_ids.push(pod);
                let res = Resources {
                    cpu_millis: cpu,
                    memory_bytes: mem,
                };
                self.pods.insert(
                    pod,
                    Pd {
                        build: id,
                        backend: BACKENDS[backend],
                        res,
                        st: P::Pending,
                        answered: false,
                    },
                );
                self.input(Input::Demand(PodDemand {
                    pod,
                    build: id,
                    backend: BACKENDS[backend].into(),
                    job: format!("job-{pod}"),
                    label: None,
                    resources: res,
                }));
            }
            Ev::Release(i) => {
                let Some(pod) = Model::pick(&self.pod_ids, i) else {
                    return;
                };
                self.release(pod);
            }
            Ev::Retry { attempt } => {
                let key = self.next_key;
                self.next_key += 1;
                let due = self.now.saturating_add(self.limits.backoff.delay(attempt));
                self.retries_due.insert(key, due);
                self.input(Input::RetryLater { key, attempt });
            }
            Ev::Tick(ms) => self.tick(ms),
        }
    }

    fn tick(&mut self, ms: u64) {
        self.now = self.now.saturating_add(Millis(ms));
        if let Some(next) = self.s.next_timeout() {
            assert!(
                self.retries_due.values().min().is_some_and(|d| *d == next),
                "next timeout {next:?} is not the earliest retry"
            );
        }
        let cmds = self.s.handle_timeout(self.now);
        self.apply(cmds);
        assert!(
            self.retries_due.values().all(|d| *d > self.now),
            "a retry due was not fired"
        );
        self.check();
    }

    fn release(&mut self, pod: PodId) {
        if let Some(p) = self.pods.get_mut(&pod)
            && matches!(p.st, P::Pending | P::Placed)
        {
            p.st = P::Gone;
            self.input(Input::Released(pod));
        }
    }

    fn finish(&mut self, id: BuildId) {
        if let Some(b) = self.builds.get(&id) {
            // A build waiting for its turn or queued ends only by a cancel.
            if b.st != St::Running {
                return;
            }
            self.builds.remove(&id);
            self.forget_pods(id);
            self.input(Input::Finished(id));
        }
    }

    /// Ends everything the way the controller does: pods end with their jobs, builds end
    /// once their pods are answered; the rest starts as room frees.
    fn drain(&mut self) {
        let (limit, mut rounds) = (10_000, 0);
        while !self.builds.is_empty() {
            rounds += 1;
            assert!(rounds < limit, "no progress: {:?}", self.builds);
            let placed: Vec<PodId> = self
                .pods
                .iter()
                .filter(|(_, p)| p.st == P::Placed)
                .map(|(id, _)| *id)
                .collect();
            for pod in placed {
                self.release(pod);
            }
            let done: Vec<BuildId> = self
                .builds
                .iter()
                .filter(|(id, b)| {
                    b.st == St::Running
                        && !self
                            .pods
                            .values()
                            .any(|p| p.build == **id && p.st == P::Pending)
                })
                .map(|(id, _)| *id)
                .collect();
            if let Some(id) = done.first() {
                self.finish(*id);
            }
        }
        self.tick(u64::from(u32::MAX));
        assert!(self.retries_due.is_empty());
        assert_eq!(
            (self.s.active(), self.s.queued(), self.s.pending_pods()),
            (0, 0, 0)
        );
        for (id, p) in &self.pods {
            // A pod given up by its owner (released before an answer) needs none.
            assert!(
                p.answered || p.st == P::Gone,
                "pod {id} was never placed nor failed: {p:?}"
            );
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn limits_hold_nothing_waits_with_room_and_every_demand_is_answered(
        setup in setup(),
        events in proptest::collection::vec(ev(), 1..200),
    ) {
        let mut m = Model::new(setup);
        for e in events {
            m.step(e);
        }
        m.drain();
    }
}
