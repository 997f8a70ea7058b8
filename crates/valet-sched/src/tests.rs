//! One behaviour per test, on a simulated clock.

use super::*;

fn b(id: BuildId, repo: &str, branch: &str, exclusive: bool) -> Input {
    Input::Submit(BuildSpec {
        id,
        repo: repo.into(),
        branch: branch.into(),
        exclusive,
    })
}

fn pod(pod: PodId, build: BuildId, backend: &str, cpu: u64, mem_mib: u64) -> Input {
    Input::Demand(PodDemand {
        pod,
        build,
        backend: backend.into(),
        job: format!("job-{pod}"),
        label: None,
        resources: Resources {
            cpu_millis: cpu,
            memory_bytes: mem_mib << 20,
        },
    })
}

/// A scheduler and a clock.
struct Sim {
    s: Scheduler,
    now: Millis,
}

impl Sim {
    fn new(limits: Limits) -> Sim {
        Sim {
            s: Scheduler::new(limits),
            now: Millis(0),
        }
    }

    fn on(&mut self, i: Input) -> Vec<Command> {
        self.s.handle(i, self.now)
    }

    fn started(&mut self, i: Input) -> Vec<BuildId> {
        self.on(i)
            .into_iter()
            .filter_map(|c| match c {
                Command::Start(id) => Some(id),
                _ => None,
            })
            .collect()
    }

    fn advance(&mut self, ms: u64) -> Vec<Command> {
        self.now = Millis(self.now.0 + ms);
        self.s.handle_timeout(self.now)
    }
}

#[test]
fn builds_start_in_order_up_to_the_global_limit() {
    let mut s = Sim::new(Limits::new(2));
    assert_eq!(s.started(b(1, "a", "main", false)), [1]);
    assert_eq!(s.started(b(2, "a", "main", false)), [2]);
    assert_eq!(s.started(b(3, "a", "main", false)), Vec::<BuildId>::new());
    assert_eq!(s.started(b(4, "a", "main", false)), Vec::<BuildId>::new());
    assert_eq!((s.s.queued(), s.s.running()), (2, 2));
    assert_eq!(s.on(Input::Finished(1)), [Command::Start(3)]);
    assert_eq!((s.s.queued(), s.s.running()), (1, 2));
}

#[test]
fn a_full_repository_does_not_hold_up_others() {
    let mut s = Sim::new(Limits::new(10).repo("a", 1));
    assert_eq!(s.started(b(1, "a", "main", false)), [1]);
    assert_eq!(s.started(b(2, "a", "dev", false)), Vec::<BuildId>::new());
    assert_eq!(s.started(b(3, "b", "main", false)), [3]);
    assert_eq!(s.on(Input::Finished(1)), [Command::Start(2)]);
}

#[test]
fn exclusive_branches_run_one_at_a_time() {
    let mut s = Sim::new(Limits::new(10));
    assert_eq!(s.started(b(1, "a", "main", true)), [1]);
    assert_eq!(s.started(b(2, "a", "main", true)), Vec::<BuildId>::new());
    assert_eq!(s.started(b(3, "a", "dev", true)), [3]);
    assert_eq!(s.on(Input::Finished(3)), []);
    assert_eq!(s.on(Input::Finished(1)), [Command::Start(2)]);
}

#[test]
fn a_build_found_exclusive_after_starting_waits_without_its_slot() {
    // Two slots. Build 1 runs alone on main; build 2 of main starts (nothing said it was
    // exclusive), then its pipeline says disableConcurrentBuilds: it gives its slot back,
    // and build 3 of another branch runs in it meanwhile.
    let mut s = Sim::new(Limits::new(2));
    assert_eq!(s.started(b(1, "a", "main", false)), [1]);
    assert_eq!(s.on(Input::Exclusive(1)), [Command::Turn(1)]);
    assert_eq!(s.started(b(2, "a", "main", false)), [2]);
    assert_eq!(s.started(b(3, "a", "dev", false)), Vec::<BuildId>::new());
    assert_eq!(s.on(Input::Exclusive(2)), [Command::Start(3)]);
    assert_eq!(s.s.state(2), Some(BuildState::WaitingTurn));
    assert_eq!((s.s.running(), s.s.waiting_turn(), s.s.active()), (2, 1, 3));
    // Build 1 ends: its slot and the branch go to 2.
    assert_eq!(s.on(Input::Finished(1)), [Command::Turn(2)]);
    assert_eq!(s.s.state(2), Some(BuildState::Running));
}

#[test]
fn a_build_waiting_for_its_branch_also_waits_for_a_slot() {
    let mut s = Sim::new(Limits::new(1));
    assert_eq!(s.started(b(1, "a", "main", false)), [1]);
    assert_eq!(s.on(Input::Exclusive(1)), [Command::Turn(1)]);
    // Queued behind: 2 (main) and 3 (dev).
    s.on(b(2, "a", "main", false));
    s.on(b(3, "a", "dev", false));
    assert_eq!(s.on(Input::Finished(1)), [Command::Start(2)]);
    // 2 takes main's turn at once: it is free.
    assert_eq!(s.on(Input::Exclusive(2)), [Command::Turn(2)]);
    assert_eq!(s.on(Input::Finished(2)), [Command::Start(3)]);
}

#[test]
fn a_waiting_build_goes_before_queued_ones_when_its_branch_frees() {
    let mut s = Sim::new(Limits::new(2));
    s.on(b(1, "a", "main", false));
    s.on(Input::Exclusive(1));
    s.on(b(2, "a", "main", false));
    // 2 waits for main; its slot goes to 3.
    s.on(b(3, "a", "dev", false));
    assert_eq!(s.on(Input::Exclusive(2)), [Command::Start(3)]);
    s.on(b(4, "a", "dev", false));
    // 1 ends: its slot and main go to 2, not to 4 that was queued.
    assert_eq!(s.on(Input::Finished(1)), [Command::Turn(2)]);
    assert_eq!(s.on(Input::Finished(3)), [Command::Start(4)]);
}

#[test]
fn the_exclusive_configuration_holds_the_branch_from_the_start() {
    let mut s = Sim::new(Limits::new(4));
    s.on(b(1, "a", "main", true));
    // Its pipeline says so too: it already has the branch.
    assert_eq!(s.on(Input::Exclusive(1)), [Command::Turn(1)]);
    s.on(b(2, "a", "main", false));
    assert_eq!(s.on(Input::Exclusive(2)), []);
    assert_eq!(s.on(Input::Finished(1)), [Command::Turn(2)]);
}

#[test]
fn cancelling_a_queued_or_waiting_build_removes_it() {
    let mut s = Sim::new(Limits::new(1));
    s.on(b(1, "a", "main", false));
    s.on(b(2, "a", "main", false));
    assert_eq!(s.on(Input::Cancel(2)), [Command::Removed(2)]);
    assert_eq!(s.s.queued(), 0);
    // A running build is not removed: its owner stops it.
    assert_eq!(s.on(Input::Cancel(1)), []);
    assert_eq!(s.on(Input::Finished(1)), []);
    // Waiting for its branch.
    let mut s = Sim::new(Limits::new(2));
    s.on(b(1, "a", "main", false));
    s.on(Input::Exclusive(1));
    s.on(b(2, "a", "main", false));
    s.on(Input::Exclusive(2));
    assert_eq!(s.on(Input::Cancel(2)), [Command::Removed(2)]);
    assert_eq!(s.on(Input::Finished(1)), []);
    assert_eq!(s.s.active(), 0);
}

#[test]
fn a_build_submitted_twice_is_queued_once() {
    let mut s = Sim::new(Limits::new(1));
    s.on(b(1, "a", "main", false));
    s.on(b(2, "a", "main", false));
    s.on(b(2, "a", "main", false));
    assert_eq!(s.s.queued(), 1);
}

#[test]
fn pods_are_placed_first_come_first_served_within_max_pods() {
    let limits = Limits::new(10).backend(
        "docker",
        BackendLimits {
            max_pods: Some(2),
            capacity: None,
        },
    );
    let mut s = Sim::new(limits);
    s.on(b(1, "a", "main", false));
    s.on(b(2, "a", "dev", false));
    let place = |p: PodId| Command::Place {
        pod: p,
        backend: "docker".into(),
    };
    assert_eq!(s.on(pod(10, 1, "docker", 0, 0)), [place(10)]);
    assert_eq!(s.on(pod(11, 2, "docker", 0, 0)), [place(11)]);
    assert_eq!(s.on(pod(12, 1, "docker", 0, 0)), []);
    assert_eq!(s.on(pod(13, 2, "docker", 0, 0)), []);
    assert_eq!(s.s.pending_pods(), 2);
    assert_eq!(s.on(Input::Released(11)), [place(12)]);
    // Other backends are unlimited.
    assert_eq!(
        s.on(pod(14, 2, "local", 0, 0)),
        [Command::Place {
            pod: 14,
            backend: "local".into()
        }]
    );
    // Build 1 ends: its placed pod 10 and its pod 12 free their places; 13 goes.
    assert_eq!(s.on(Input::Finished(1)), [place(13)]);
    assert_eq!(s.s.placed_pods("docker"), 1);
}

#[test]
fn capacity_is_shared_and_a_large_demand_does_not_hold_up_small_ones() {
    let limits = Limits::new(10).backend(
        "pool",
        BackendLimits {
            max_pods: None,
            capacity: Some(Resources {
                cpu_millis: 4000,
                memory_bytes: 8 << 30,
            }),
        },
    );
    let mut s = Sim::new(limits);
    s.on(b(1, "a", "main", false));
    let place = |p: PodId| Command::Place {
        pod: p,
        backend: "pool".into(),
    };
    assert_eq!(s.on(pod(1, 1, "pool", 3000, 1024)), [place(1)]);
    assert_eq!(s.on(pod(2, 1, "pool", 2000, 1024)), []);
    assert_eq!(s.on(pod(3, 1, "pool", 1000, 1024)), [place(3)]);
    assert_eq!(s.on(Input::Released(1)), [place(2)]);
}

#[test]
fn a_demand_larger_than_the_backend_fails_in_plain_words() {
    let limits = Limits::new(10).backend(
        "pool",
        BackendLimits {
            max_pods: None,
            capacity: Some(Resources {
                cpu_millis: 2000,
                memory_bytes: 4 << 30,
            }),
        },
    );
    let mut s = Sim::new(limits);
    s.on(b(1, "a", "main", false));
    let cmds = s.on(pod(1, 1, "pool", 8000, 1024));
    let [Command::Fail { pod: 1, reason }] = cmds.as_slice() else {
        panic!("{cmds:?}")
    };
    assert_eq!(
        reason.to_string(),
        "the pod of job-1 asks for 8000 millicores of CPU and 1024 MiB of memory, \
         more than the pool backend has in all (2000 millicores of CPU and 4096 MiB of memory)"
    );
    // A build that is not running gets no pod.
    let cmds = s.on(pod(2, 99, "pool", 1, 1));
    assert!(
        matches!(
            &cmds[..],
            [Command::Fail {
                pod: 2,
                reason: Unplaceable::NotRunning(99)
            }]
        ),
        "{cmds:?}"
    );
}

#[test]
fn retries_fire_after_a_capped_exponential_backoff() {
    let mut limits = Limits::new(1);
    limits.backoff = Backoff {
        base: Millis(100),
        cap: Millis(1000),
    };
    let mut s = Sim::new(limits);
    assert_eq!(s.s.next_timeout(), None);
    s.on(Input::RetryLater { key: 7, attempt: 0 });
    s.on(Input::RetryLater { key: 8, attempt: 3 });
    s.on(Input::RetryLater {
        key: 9,
        attempt: 40,
    });
    assert_eq!(s.s.next_timeout(), Some(Millis(100)));
    assert_eq!(s.advance(99), []);
    assert_eq!(s.advance(1), [Command::Retry(7)]);
    assert_eq!(s.s.next_timeout(), Some(Millis(800)));
    assert_eq!(s.advance(700), [Command::Retry(8)]);
    // Capped at 1000 ms.
    assert_eq!(s.advance(200), [Command::Retry(9)]);
    assert_eq!(s.s.next_timeout(), None);
}

#[test]
fn a_retry_rescheduled_or_cancelled_fires_once_or_never() {
    let mut s = Sim::new(Limits::new(1));
    s.on(Input::RetryLater { key: 1, attempt: 0 });
    s.advance(100);
    s.on(Input::RetryLater { key: 1, attempt: 1 });
    // Due at 100 + 1000 ms, not at 500.
    assert_eq!(s.advance(500), []);
    assert_eq!(s.advance(500), [Command::Retry(1)]);
    s.on(Input::RetryLater { key: 2, attempt: 0 });
    s.on(Input::CancelRetry(2));
    assert_eq!(s.s.next_timeout(), None);
    assert_eq!(s.advance(10_000), []);
}

#[test]
fn a_custom_allocator_chooses_and_is_checked() {
    /// Takes the newest demand; answers a pod that does not exist when asked to.
    struct Newest {
        lie: bool,
    }
    impl Allocator for Newest {
        fn pick(
            &mut self,
            _backend: &str,
            room: &Room,
            pending: &mut dyn Iterator<Item = &PodDemand>,
        ) -> Option<PodId> {
            if self.lie {
                return Some(999);
            }
            let mut newest = None;
            for d in pending {
                if room.fits(d) {
                    newest = Some(d.pod);
                }
            }
            newest
        }
    }
    let limits = Limits::new(10).backend(
        "x",
        BackendLimits {
            max_pods: Some(1),
            capacity: None,
        },
    );
    let mut s = Scheduler::with_allocator(limits.clone(), Box::new(Newest { lie: false }));
    s.handle(b(1, "a", "main", false), Millis(0));
    s.handle(pod(1, 1, "x", 0, 0), Millis(0));
    s.handle(pod(2, 1, "x", 0, 0), Millis(0));
    s.handle(pod(3, 1, "x", 0, 0), Millis(0));
    assert_eq!(
        s.handle(Input::Released(1), Millis(0)),
        [Command::Place {
            pod: 3,
            backend: "x".into()
        }]
    );
    let mut s = Scheduler::with_allocator(limits, Box::new(Newest { lie: true }));
    s.handle(b(1, "a", "main", false), Millis(0));
    assert_eq!(s.handle(pod(1, 1, "x", 0, 0), Millis(0)), []);
    assert_eq!(s.placed_pods("x"), 0);
}
