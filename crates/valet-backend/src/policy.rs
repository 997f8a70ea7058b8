//! What the operator allows a pipeline's containers: a pipeline is written by anyone with
//! push access, so privilege is refused unless the operator allows it, every container gets
//! a CPU limit unless its template sets one, and every container gets a process limit (a
//! fork bomb fills its own container, not the host). Checked by the runtime before any backend
//! sees the pod, so every backend enforces the same policy.

use crate::PodSpec;

/// See the [module documentation](self).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerPolicy {
    /// `privileged: true` in a template is refused unless this is set.
    pub allow_privileged: bool,
    /// Every container must run as a user other than root (`runAsUser` other than 0).
    pub require_non_root: bool,
    /// The CPU limit of a container whose template sets none (millicores); `None`: no limit.
    pub default_cpu_limit_millis: Option<u64>,
    /// The most processes (and threads) a container may hold at once; templates cannot
    /// set one (Kubernetes has no such field), so it is every container's.
    pub default_pids_limit: u64,
}

impl Default for ContainerPolicy {
    fn default() -> Self {
        ContainerPolicy {
            allow_privileged: false,
            require_non_root: false,
            default_cpu_limit_millis: Some(DEFAULT_CPU_LIMIT_MILLIS),
            default_pids_limit: DEFAULT_PIDS_LIMIT,
        }
    }
}

/// One CPU: a runaway step (a fork bomb, a busy loop) cannot take the whole host.
pub const DEFAULT_CPU_LIMIT_MILLIS: u64 = 1000;

/// The largest default CPU limit an operator can set (a thousand CPUs): past it a number is
/// a typo, not a machine.
pub const MAX_CPU_LIMIT_MILLIS: u64 = 1_000_000;

/// Processes and threads per container: plenty for builds (a parallel `make`, a JVM's
/// threads), few enough that a fork bomb stays a container's problem.
pub const DEFAULT_PIDS_LIMIT: u64 = 1024;

/// The bounds of the process limit an operator can set: below the lower one the agent that
/// runs the steps cannot start its own threads beside a step; past the upper one (the
/// kernel's largest `pid_max`) a number is a typo.
pub const MIN_PIDS_LIMIT: u64 = 32;
pub const MAX_PIDS_LIMIT: u64 = 4_194_304;

/// Why a pod is refused, in words naming the container and the setting.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct PolicyError(pub String);

impl ContainerPolicy {
    /// Checks `spec` against the policy and fills in what it defaults (the CPU limit).
    pub fn apply(&self, spec: &mut PodSpec) -> Result<(), PolicyError> {
        for c in spec.containers.iter_mut().filter(|c| !c.jnlp) {
            if c.privileged && !self.allow_privileged {
                return Err(PolicyError(format!(
                    "container '{}' asks to be privileged, which this valet does not allow (the operator can set allow_privileged)",
                    c.name
                )));
            }
            if self.require_non_root {
                match c.run_as_user.or(spec.run_as_user) {
                    Some(uid) if uid != 0 => {}
                    Some(_) => {
                        return Err(PolicyError(format!(
                            "container '{}' asks to run as root, and this valet requires a non-root user (runAsUser)",
                            c.name
                        )));
                    }
                    None => {
                        return Err(PolicyError(format!(
                            "container '{}' sets no user, and this valet requires a non-root one: set runAsUser",
                            c.name
                        )));
                    }
                }
            }
            if c.resources.limit_cpu_millis.is_none() {
                c.resources.limit_cpu_millis = self.default_cpu_limit_millis;
            }
            c.resources.limit_pids = Some(self.default_pids_limit);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn privilege_is_refused_unless_allowed_and_cpu_limits_are_filled_in() {
        let mut spec = PodSpec::of_containers("p", &["build", "tools"]);
        spec.containers[1].resources.limit_cpu_millis = Some(4000);
        let policy = ContainerPolicy::default();
        let mut s = spec.clone();
        policy.apply(&mut s).unwrap();
        assert_eq!(s.containers[0].resources.limit_cpu_millis, Some(1000));
        assert_eq!(s.containers[1].resources.limit_cpu_millis, Some(4000));
        assert_eq!(s.containers[0].resources.limit_pids, Some(1024));
        let fewer = ContainerPolicy {
            default_pids_limit: 64,
            ..ContainerPolicy::default()
        };
        let mut s = spec.clone();
        fewer.apply(&mut s).unwrap();
        assert!(
            s.containers
                .iter()
                .all(|c| c.resources.limit_pids == Some(64))
        );

        spec.containers[0].privileged = true;
        let e = policy.apply(&mut spec.clone()).unwrap_err().to_string();
        assert!(
            e.contains("'build'") && e.contains("allow_privileged"),
            "{e}"
        );
        let allowing = ContainerPolicy {
            allow_privileged: true,
            ..ContainerPolicy::default()
        };
        assert!(allowing.apply(&mut spec.clone()).is_ok());
    }

    #[test]
    fn a_non_root_user_can_be_required() {
        let policy = ContainerPolicy {
            require_non_root: true,
            ..ContainerPolicy::default()
        };
        let mut spec = PodSpec::of_containers("p", &["build"]);
        assert!(
            policy
                .apply(&mut spec.clone())
                .unwrap_err()
                .0
                .contains("runAsUser")
        );
        spec.containers[0].run_as_user = Some(0);
        assert!(
            policy
                .apply(&mut spec.clone())
                .unwrap_err()
                .0
                .contains("root")
        );
        spec.run_as_user = Some(1000);
        spec.containers[0].run_as_user = None;
        assert!(policy.apply(&mut spec).is_ok(), "the pod's user counts");
    }
}
