//! Where pods go: the [`Allocator`] chooses which waiting demand a backend takes next.
//!
//! The scheduler keeps the books (what each backend has free, which demands wait, in which
//! order) and checks every answer against them; an allocator only chooses. First come,
//! first served ([`FirstFit`]) is the default; a fair allocator for an agent pool (dominant
//! resource fairness across repositories) is another implementation of the same trait.

use crate::{PodDemand, PodId, Resources};

/// What one backend has free now. `None` is "no limit configured".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Room {
    /// Pods it may still start (its `max_pods` less the pods placed on it).
    pub pods: Option<usize>,
    /// CPU and memory not yet given to placed pods (its capacity less their demands).
    pub free: Option<Resources>,
}

impl Room {
    /// Whether `d` can be placed now.
    pub fn fits(&self, d: &PodDemand) -> bool {
        self.pods.is_none_or(|p| p > 0) && self.free.is_none_or(|f| d.resources.fits_in(&f))
    }

    /// Whether no demand at all can be placed now (no pod slot left).
    pub fn is_full(&self) -> bool {
        self.pods == Some(0)
    }
}

/// Chooses the next demand a backend takes.
pub trait Allocator: Send {
    /// The demand to place next among `pending` (the backend's waiting demands, oldest
    /// first), given what the backend has free; `None` leaves them all waiting. The
    /// scheduler places the answer only if it [`fits`](Room::fits).
    ///
    /// The scheduler asks about what changed: after a pod is released, about every waiting
    /// demand; when a demand arrives while the others were left waiting and nothing was
    /// released since, about the new one alone.
    fn pick(
        &mut self,
        backend: &str,
        room: &Room,
        pending: &mut dyn Iterator<Item = &PodDemand>,
    ) -> Option<PodId>;
}

/// First come, first served: the oldest demand that fits. A demand too large for what is
/// free now does not hold up smaller ones behind it (nothing waits while there is room for
/// it); it is placed once enough is released.
#[derive(Debug, Clone, Copy, Default)]
pub struct FirstFit;

impl Allocator for FirstFit {
    fn pick(
        &mut self,
        _backend: &str,
        room: &Room,
        pending: &mut dyn Iterator<Item = &PodDemand>,
    ) -> Option<PodId> {
        for d in pending {
            if room.fits(d) {
                return Some(d.pod);
            }
        }
        None
    }
}
