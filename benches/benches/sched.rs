//! Scheduling: 1000 builds and 8000 pod demands through `valet-sched`, against a baseline
//! fed the same events in the same run: the controller's former queue (global,
//! per-repository and one-at-a-time branch limits, a branch turn held with its slot) and a
//! plain FIFO of pods per backend.
//!
//! The builds arrive one a millisecond over 20 repositories and 100 branches; a tenth learn
//! after starting that their branch runs one build at a time; each running build asks for
//! 8 pods over three backends (one limited in pods, one in pods and CPU/memory, one
//! unlimited), each released after a pseudo-random time, and the build finishes when all
//! its pods are. Time is simulated (the scheduler sees only the values given); each call
//! of `handle` is timed on the wall clock.
//!
//! `cargo bench -p valet-benches --bench sched`. Goal: p99 of a decision ≤ 50 µs.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::time::{Duration, Instant};

use valet_sched::{
    BackendLimits, BuildId, BuildSpec, Command, Input, Limits, Millis, PodDemand, PodId, Resources,
    Scheduler,
};

const BUILDS: usize = 1000;
const PODS_PER_BUILD: usize = 8;
const REPOS: usize = 20;
const BRANCHES: usize = 100;
const ROUNDS: usize = 5;
const BACKENDS: [&str; 3] = ["docker", "pool", "local"];

/// A small deterministic generator (the workload is the same every run).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

struct BuildPlan {
    spec: BuildSpec,
    /// Says `Exclusive` once started.
    late_exclusive: bool,
    pods: Vec<PodDemand>,
    /// How long each pod lives once placed.
    lifetimes: Vec<u64>,
}

fn workload() -> Vec<BuildPlan> {
    let mut r = Lcg(42);
    let mut next_pod: PodId = 1;
    (0..BUILDS)
        .map(|i| {
            let id = i as BuildId + 1;
            let repo = format!("org/repo-{}", r.below(REPOS as u64));
            let branch = format!("branch-{}", r.below(BRANCHES as u64 / REPOS as u64));
            let pods = (0..PODS_PER_BUILD)
                .map(|j| {
                    let pod = next_pod;
                    next_pod += 1;
                    PodDemand {
                        pod,
                        build: id,
                        backend: BACKENDS[r.below(3) as usize].to_string(),
                        job: format!("job-{j}"),
                        label: None,
                        resources: Resources {
                            cpu_millis: 250 + r.below(1750),
                            memory_bytes: (256 + r.below(3840)) << 20,
                        },
                    }
                })
                .collect();
            BuildPlan {
                spec: BuildSpec {
                    id,
                    repo,
                    branch,
                    exclusive: false,
                },
                late_exclusive: r.below(10) == 0,
                pods,
                lifetimes: (0..PODS_PER_BUILD).map(|_| 20 + r.below(400)).collect(),
            }
        })
        .collect()
}

fn limits() -> Limits {
    let mut l = Limits::new(256)
        .backend(
            "docker",
            BackendLimits {
                max_pods: Some(300),
                capacity: None,
            },
        )
        .backend(
            "pool",
            BackendLimits {
                max_pods: Some(1000),
                capacity: Some(Resources {
                    cpu_millis: 64_000,
                    memory_bytes: 256 << 30,
                }),
            },
        );
    for i in (0..REPOS).step_by(2) {
        l = l.repo(&format!("org/repo-{i}"), 24);
    }
    l
}

/// What the simulation drives.
trait Core {
    fn handle(&mut self, input: Input, now: Millis) -> Vec<Command>;
}

impl Core for Scheduler {
    fn handle(&mut self, input: Input, now: Millis) -> Vec<Command> {
        Scheduler::handle(self, input, now)
    }
}

/// The former queue (`queue.rs`): a scan of the waiting builds from the first one not known
/// to be blocked, with per-repository counts made afresh on each look; a branch turn is a
/// lock its build waits for while holding its slot; pods go in FIFO order per backend.
#[derive(Default)]
struct Baseline {
    global: usize,
    repo_limits: HashMap<String, usize>,
    backend_limits: HashMap<String, BackendLimits>,
    waiting: VecDeque<BuildSpec>,
    running: HashMap<BuildId, BuildSpec>,
    blocked: usize,
    turns: HashMap<(String, String), BuildId>,
    turn_waiters: HashMap<(String, String), VecDeque<BuildId>>,
    pods: HashMap<String, (VecDeque<PodDemand>, usize, Resources)>,
    pod_backend: HashMap<PodId, (String, Resources, bool)>,
}

impl Baseline {
    fn new(l: &Limits) -> Baseline {
        Baseline {
            global: l.global,
            repo_limits: l.per_repo.clone(),
            backend_limits: l.backends.clone(),
            ..Baseline::default()
        }
    }

    fn next_ready(&mut self) -> Option<BuildSpec> {
        if self.running.len() >= self.global {
            return None;
        }
        let mut per_repo: HashMap<&str, usize> = HashMap::new();
        for e in self.running.values() {
            *per_repo.entry(e.repo.as_str()).or_default() += 1;
        }
        let skip = self.blocked.min(self.waiting.len());
        let found = self.waiting.iter().skip(skip).position(|w| {
            self.repo_limits
                .get(&w.repo)
                .is_none_or(|&l| per_repo.get(w.repo.as_str()).copied().unwrap_or(0) < l)
        });
        let Some(pos) = found.map(|p| p + skip) else {
            self.blocked = self.waiting.len();
            return None;
        };
        self.blocked = pos;
        let e = self.waiting.remove(pos)?;
        self.running.insert(e.id, e.clone());
        Some(e)
    }

    fn drain(&mut self, out: &mut Vec<Command>) {
        while let Some(e) = self.next_ready() {
            out.push(Command::Start(e.id));
        }
    }

    fn place(&mut self, backend: &str, out: &mut Vec<Command>) {
        let limits = self
            .backend_limits
            .get(backend)
            .copied()
            .unwrap_or_default();
        let Some((queue, placed, used)) = self.pods.get_mut(backend) else {
            return;
        };
        while let Some(d) = queue.front() {
            let room_pods = limits.max_pods.is_none_or(|m| *placed < m);
            let room_res = limits.capacity.is_none_or(|c| {
                used.cpu_millis + d.resources.cpu_millis <= c.cpu_millis
                    && used.memory_bytes + d.resources.memory_bytes <= c.memory_bytes
            });
            if !(room_pods && room_res) {
                return;
            }
            let d = queue.pop_front().expect("front");
            *placed += 1;
            used.cpu_millis += d.resources.cpu_millis;
            used.memory_bytes += d.resources.memory_bytes;
            if let Some(p) = self.pod_backend.get_mut(&d.pod) {
                p.2 = true;
            }
            out.push(Command::Place {
                pod: d.pod,
                backend: backend.to_string(),
            });
        }
    }
}

impl Core for Baseline {
    fn handle(&mut self, input: Input, _now: Millis) -> Vec<Command> {
        let mut out = Vec::new();
        match input {
            Input::Submit(spec) => {
                self.waiting.push_back(spec);
                self.drain(&mut out);
            }
            Input::Exclusive(id) => {
                let Some(spec) = self.running.get(&id) else {
                    return out;
                };
                let key = (spec.repo.clone(), spec.branch.clone());
                match self.turns.entry(key) {
                    std::collections::hash_map::Entry::Occupied(e) => {
                        let key = e.key().clone();
                        self.turn_waiters.entry(key).or_default().push_back(id);
                    }
                    std::collections::hash_map::Entry::Vacant(e) => {
                        e.insert(id);
                        out.push(Command::Turn(id));
                    }
                }
            }
            Input::Finished(id) => {
                if let Some(spec) = self.running.remove(&id) {
                    let key = (spec.repo, spec.branch);
                    if self.turns.get(&key) == Some(&id) {
                        self.turns.remove(&key);
                        if let Some(next) =
                            self.turn_waiters.get_mut(&key).and_then(|q| q.pop_front())
                        {
                            self.turns.insert(key, next);
                            out.push(Command::Turn(next));
                        }
                    }
                }
                self.blocked = 0;
                self.drain(&mut out);
            }
            Input::Demand(d) => {
                let backend = d.backend.clone();
                self.pod_backend
                    .insert(d.pod, (backend.clone(), d.resources, false));
                self.pods.entry(backend.clone()).or_default().0.push_back(d);
                self.place(&backend, &mut out);
            }
            Input::Released(pod) => {
                if let Some((backend, res, true)) = self.pod_backend.remove(&pod)
                    && let Some((_, placed, used)) = self.pods.get_mut(&backend)
                {
                    *placed -= 1;
                    used.cpu_millis -= res.cpu_millis;
                    used.memory_bytes -= res.memory_bytes;
                    self.place(&backend, &mut out);
                }
            }
            _ => {}
        }
        out
    }
}

struct Stats {
    calls: Vec<Duration>,
    commands: usize,
    finished: usize,
}

/// Inputs due, by time (and order of scheduling among equals).
#[derive(Default)]
struct Agenda {
    events: BinaryHeap<Reverse<(u64, u64)>>,
    inputs: HashMap<u64, Input>,
    seq: u64,
}

impl Agenda {
    fn push(&mut self, t: u64, i: Input) {
        self.seq += 1;
        self.inputs.insert(self.seq, i);
        self.events.push(Reverse((t, self.seq)));
    }

    fn pop(&mut self) -> Option<(u64, Input)> {
        let Reverse((t, s)) = self.events.pop()?;
        Some((t, self.inputs.remove(&s).expect("input")))
    }
}

/// Runs the workload to the end through `core`; every `handle` call is timed.
fn simulate(core: &mut dyn Core, plans: &[BuildPlan]) -> Stats {
    let mut agenda = Agenda::default();
    for (i, p) in plans.iter().enumerate() {
        agenda.push(i as u64, Input::Submit(p.spec.clone()));
    }
    let by_id: HashMap<BuildId, &BuildPlan> = plans.iter().map(|p| (p.spec.id, p)).collect();
    let pod_life: HashMap<PodId, (BuildId, u64)> = plans
        .iter()
        .flat_map(|p| {
            p.pods
                .iter()
                .zip(&p.lifetimes)
                .map(move |(d, l)| (d.pod, (p.spec.id, *l)))
        })
        .collect();
    let mut outstanding: HashMap<BuildId, usize> = HashMap::new();
    let mut stats = Stats {
        calls: Vec::with_capacity(20_000),
        commands: 0,
        finished: 0,
    };
    // A pod of `build` is done (released or failed): the build finishes after its last.
    let done =
        |outstanding: &mut HashMap<BuildId, usize>, agenda: &mut Agenda, t: u64, build: BuildId| {
            let left = outstanding.entry(build).or_insert(PODS_PER_BUILD);
            *left -= 1;
            if *left == 0 {
                agenda.push(t + 1, Input::Finished(build));
            }
        };
    while let Some((t, input)) = agenda.pop() {
        let released = match &input {
            Input::Released(pod) => Some(*pod),
            Input::Finished(_) => {
                stats.finished += 1;
                None
            }
            _ => None,
        };
        let started = Instant::now();
        let cmds = core.handle(input, Millis(t));
        stats.calls.push(started.elapsed());
        stats.commands += cmds.len();
        if let Some(pod) = released {
            done(&mut outstanding, &mut agenda, t, pod_life[&pod].0);
        }
        for c in cmds {
            match c {
                Command::Start(id) => {
                    let p = by_id[&id];
                    if p.late_exclusive {
                        agenda.push(t + 5, Input::Exclusive(id));
                    } else {
                        for (k, d) in p.pods.iter().enumerate() {
                            agenda.push(t + 5 + k as u64, Input::Demand(d.clone()));
                        }
                    }
                }
                Command::Turn(id) => {
                    for (k, d) in by_id[&id].pods.iter().enumerate() {
                        agenda.push(t + 1 + k as u64, Input::Demand(d.clone()));
                    }
                }
                Command::Place { pod, .. } => {
                    agenda.push(t + pod_life[&pod].1, Input::Released(pod));
                }
                Command::Fail { pod, .. } => {
                    done(&mut outstanding, &mut agenda, t, pod_life[&pod].0)
                }
                Command::Removed(_) | Command::Retry(_) => {}
            }
        }
    }
    stats
}

struct Summary {
    per_sec: f64,
    p50: Duration,
    p99: Duration,
    max: Duration,
    calls: usize,
}

fn summarize(mut calls: Vec<Duration>) -> Summary {
    calls.sort();
    let total: Duration = calls.iter().sum();
    let at = |q: f64| calls[((calls.len() as f64 * q) as usize).min(calls.len() - 1)];
    Summary {
        per_sec: calls.len() as f64 / total.as_secs_f64(),
        p50: at(0.50),
        p99: at(0.99),
        max: *calls.last().expect("calls"),
        calls: calls.len(),
    }
}

fn main() {
    let plans = workload();
    let demands: usize = plans.iter().map(|p| p.pods.len()).sum();
    let (mut ours, mut base) = (Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        let mut s = Scheduler::new(limits());
        let st = simulate(&mut s, &plans);
        assert_eq!(st.finished, BUILDS, "every build finishes");
        assert_eq!((s.active(), s.queued(), s.pending_pods()), (0, 0, 0));
        ours.extend(st.calls);
        let mut b = Baseline::new(&limits());
        let st = simulate(&mut b, &plans);
        assert_eq!(st.finished, BUILDS, "every build finishes (baseline)");
        base.extend(st.calls);
    }
    let (o, b) = (summarize(ours), summarize(base));
    println!(
        "sched: {BUILDS} builds, {demands} pod demands, {} decisions per round, {ROUNDS} rounds",
        o.calls / ROUNDS
    );
    for (name, s) in [
        ("valet-sched", &o),
        ("baseline (former queue + FIFO pods)", &b),
    ] {
        println!(
            "  {name:<36} {:>10.0} decisions/s   p50 {:>6.2} µs   p99 {:>6.2} µs   max {:>8.2} µs",
            s.per_sec,
            s.p50.as_secs_f64() * 1e6,
            s.p99.as_secs_f64() * 1e6,
            s.max.as_secs_f64() * 1e6,
        );
    }
    println!(
        "  ratio valet-sched / baseline: throughput {:.2}x, p99 {:.2}x",
        o.per_sec / b.per_sec,
        o.p99.as_secs_f64() / b.p99.as_secs_f64()
    );
    println!(
        "  goal p99 ≤ 50 µs: {} ({:.2} µs)",
        if o.p99 <= Duration::from_micros(50) {
            "met"
        } else {
            "missed"
        },
        o.p99.as_secs_f64() * 1e6
    );
}
