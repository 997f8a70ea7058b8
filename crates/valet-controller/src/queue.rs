//! The build queue as pure data: which waiting build may start now, given the global limit,
//! each repository's limit and one-at-a-time branches. No I/O, no clock; the dispatcher in
//! `lib.rs` asks it and starts what it answers.

use std::collections::{HashMap, VecDeque};

use valet_store::BuildId;

/// A build waiting to run, or running.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub id: BuildId,
    pub repo: String,
    pub branch: String,
    /// Only one build of this repository and branch at a time (the configuration's
    /// `disable_concurrent_builds`).
    pub exclusive: bool,
}

#[derive(Debug, Default)]
pub struct Queue {
    waiting: VecDeque<Entry>,
    running: HashMap<BuildId, Entry>,
    global_limit: usize,
    repo_limits: HashMap<String, usize>,
    /// Waiting builds before this index are known to be blocked: starting a build only
    /// blocks more, so only a finished or removed build makes them worth looking at again.
    /// Without it every webhook would rescan a long queue of blocked builds.
    blocked: usize,
}

impl Queue {
    pub fn new(global_limit: usize, repo_limits: HashMap<String, usize>) -> Queue {
        Queue {
            global_limit: global_limit.max(1),
            repo_limits,
            ..Queue::default()
        }
    }

    pub fn push(&mut self, e: Entry) {
        if !self.running.contains_key(&e.id) && !self.waiting.iter().any(|w| w.id == e.id) {
            self.waiting.push_back(e);
        }
    }

    /// Takes a waiting build out of the queue (cancelled). False when it was not waiting.
    pub fn remove(&mut self, id: BuildId) -> bool {
        let before = self.waiting.len();
        self.waiting.retain(|e| e.id != id);
        self.blocked = 0;
        self.waiting.len() != before
    }

    /// A running build ended: its slots are free.
    pub fn finished(&mut self, id: BuildId) {
        self.running.remove(&id);
        self.blocked = 0;
    }

    /// The oldest waiting build that may start now, moved to the running set. A build that
    /// must wait does not hold up builds of other repositories or branches behind it.
    pub fn next_ready(&mut self) -> Option<Entry> {
        if self.running.len() >= self.global_limit {
            return None;
        }
        let mut per_repo: HashMap<&str, usize> = HashMap::new();
        for e in self.running.values() {
            *per_repo.entry(e.repo.as_str()).or_default() += 1;
        }
        let skip = self.blocked.min(self.waiting.len());
        let found = self.waiting.iter().skip(skip).position(|w| {
            let repo_ok = self
                .repo_limits
                .get(&w.repo)
                .is_none_or(|&l| per_repo.get(w.repo.as_str()).copied().unwrap_or(0) < l);
            let branch_ok = !w.exclusive
                || !self
                    .running
                    .values()
                    .any(|r| r.repo == w.repo && r.branch == w.branch);
            repo_ok && branch_ok
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

    pub fn waiting(&self) -> usize {
        self.waiting.len()
    }

    pub fn running(&self) -> usize {
        self.running.len()
    }

    pub fn is_waiting(&self, id: BuildId) -> bool {
        self.waiting.iter().any(|e| e.id == id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(id: BuildId, repo: &str, branch: &str, exclusive: bool) -> Entry {
        Entry {
            id,
            repo: repo.into(),
            branch: branch.into(),
            exclusive,
        }
    }

    fn drain(q: &mut Queue) -> Vec<BuildId> {
        std::iter::from_fn(|| q.next_ready().map(|e| e.id)).collect()
    }

    #[test]
    fn global_limit_in_order() {
        let mut q = Queue::new(2, HashMap::new());
        for i in 1..=4 {
            q.push(e(i, "a", "main", false));
        }
        assert_eq!(drain(&mut q), [1, 2]);
        q.finished(1);
        assert_eq!(drain(&mut q), [3]);
        assert_eq!((q.waiting(), q.running()), (1, 2));
    }

    #[test]
    fn a_full_repository_does_not_hold_up_others() {
        let mut q = Queue::new(10, HashMap::from([("a".to_string(), 1)]));
        q.push(e(1, "a", "main", false));
        q.push(e(2, "a", "dev", false));
        q.push(e(3, "b", "main", false));
        assert_eq!(drain(&mut q), [1, 3]);
        q.finished(1);
        assert_eq!(drain(&mut q), [2]);
    }

    #[test]
    fn exclusive_branches_run_one_at_a_time() {
        let mut q = Queue::new(10, HashMap::new());
        q.push(e(1, "a", "main", true));
        q.push(e(2, "a", "main", true));
        q.push(e(3, "a", "dev", true));
        assert_eq!(drain(&mut q), [1, 3]);
        q.finished(3);
        assert_eq!(drain(&mut q), Vec::<BuildId>::new());
        q.finished(1);
        assert_eq!(drain(&mut q), [2]);
    }

    #[test]
    fn blocked_builds_are_looked_at_again_when_a_build_finishes() {
        let mut q = Queue::new(10, HashMap::from([("a".to_string(), 1)]));
        q.push(e(1, "a", "main", false));
        q.push(e(2, "a", "main", false));
        q.push(e(3, "a", "main", false));
        assert_eq!(drain(&mut q), [1]);
        // 2 and 3 are blocked; a build of another repository behind them still starts.
        q.push(e(4, "b", "main", false));
        assert_eq!(drain(&mut q), [4]);
        q.finished(4);
        assert_eq!(drain(&mut q), Vec::<BuildId>::new());
        q.finished(1);
        assert_eq!(drain(&mut q), [2]);
        q.finished(2);
        assert_eq!(drain(&mut q), [3]);
    }

    #[test]
    fn removing_a_waiting_build() {
        let mut q = Queue::new(1, HashMap::new());
        q.push(e(1, "a", "main", false));
        q.push(e(2, "a", "main", false));
        assert_eq!(drain(&mut q), [1]);
        assert!(!q.remove(1));
        assert!(q.remove(2));
        q.finished(1);
        assert_eq!(drain(&mut q), Vec::<BuildId>::new());
    }
}
