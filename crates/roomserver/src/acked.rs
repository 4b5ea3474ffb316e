//! [`AckedInputs`]: how far the room server knows its acknowledgements of
//! `input.room_event` are stored, which bounds the verdicts a redelivery can
//! still need (see `Roomserver::prune_verdicts`).

use std::collections::BTreeSet;

use crate::limits::ACKED_INPUTS_ABOVE_GAP_MAX;

/// The input offsets this run of the room server delivered and saw
/// acknowledged (`Acker::ack_all` returned `Ok`, so the subscription's stored
/// position covers them once every offset below is covered too).
///
/// Invariant: every input record with an offset at or below [`Self::bound`]'s
/// first value is below the subscription's stored position: either it was
/// below it when this run subscribed (offsets under the first one delivered
/// are never delivered again), or this run acknowledged it and every offset
/// under it with `Ok`.
#[derive(Debug)]
pub(crate) struct AckedInputs {
    /// Every offset up to here is acknowledged and stored; `None` until the
    /// run's first delivery.
    through: Option<u64>,
    /// Offsets acknowledged and stored above `through` (above a gap).
    above: BTreeSet<u64>,
    /// Offsets whose acknowledgement failed, to acknowledge again.
    retry: Vec<u64>,
    /// The input topic's last offset when the room server started: no record
    /// processed before then has a higher one (for verdicts stored without
    /// their offset, before migration 0005).
    legacy_offset: u64,
    /// Cleared for good when the subscription is gone or the bookkeeping
    /// outgrew its bound: nothing is pruned for the rest of the run.
    tracking: bool,
}

impl AckedInputs {
    /// Nothing delivered yet; records processed before the start have
    /// offsets up to `legacy_offset`.
    pub(crate) fn new(legacy_offset: u64) -> Self {
        Self { through: None, above: BTreeSet::new(), retry: Vec::new(), legacy_offset, tracking: true }
    }

    /// A batch whose first record is `first` was delivered. The first
    /// delivery of the run fixes the start: the subscription resumes after
    /// its stored position, so every offset below `first` is at or below it
    /// (or was never used: no record, so no verdict, has it).
    pub(crate) fn delivered(&mut self, first: u64) {
        if self.tracking && self.through.is_none() {
            self.through = Some(first.saturating_sub(1));
            self.advance();
        }
    }

    /// `offsets` were acknowledged and the acknowledgement returned `Ok`.
    pub(crate) fn acknowledged(&mut self, offsets: &[u64]) {
        if !self.tracking {
            return;
        }
        self.above.extend(offsets.iter().copied().filter(|&o| self.through.is_none_or(|t| o > t)));
        self.advance();
        if self.above.len() > ACKED_INPUTS_ABOVE_GAP_MAX {
            tracing::warn!(
                through = ?self.through,
                "an input stays unacknowledged; verdicts are kept until the room server restarts"
            );
            self.stop();
        }
    }

    /// Acknowledging `offsets` failed with an error worth retrying: they are
    /// acknowledged again with the next round ([`Self::take_retry`]).
    pub(crate) fn failed(&mut self, offsets: Vec<u64>) {
        if !self.tracking {
            return;
        }
        self.retry.extend(offsets);
        if self.retry.len() > ACKED_INPUTS_ABOVE_GAP_MAX {
            tracing::warn!("acknowledging inputs keeps failing; verdicts are kept until the room server restarts");
            self.stop();
        }
    }

    /// The offsets to acknowledge again (see [`Self::failed`]).
    pub(crate) fn take_retry(&mut self) -> Vec<u64> {
        std::mem::take(&mut self.retry)
    }

    /// Stops for the rest of the run (the subscription is closed, replaced,
    /// or failed): [`Self::bound`] is `None` from now on.
    pub(crate) fn stop(&mut self) {
        self.tracking = false;
        self.through = None;
        self.above.clear();
        self.retry.clear();
    }

    /// Whether this run still tracks acknowledgements.
    pub(crate) fn is_tracking(&self) -> bool {
        self.tracking
    }

    /// Every offset up to the first value is acknowledged and stored; the
    /// second stands for the offset of a verdict stored without one. `None`:
    /// nothing known yet, or tracking stopped.
    pub(crate) fn bound(&self) -> Option<(u64, u64)> {
        self.through.filter(|_| self.tracking).map(|through| (through, self.legacy_offset))
    }

    fn advance(&mut self) {
        let Some(through) = self.through.as_mut() else { return };
        while let Some(&first) = self.above.first() {
            if first > *through + 1 {
                break;
            }
            *through = (*through).max(first);
            self.above.pop_first();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bound_starts_below_the_first_delivery_and_moves_over_contiguous_acks() {
        let mut acked = AckedInputs::new(7);
        assert_eq!(acked.bound(), None, "nothing known before the first delivery");
        acked.delivered(5);
        assert_eq!(acked.bound(), Some((4, 7)));
        acked.delivered(9);
        assert_eq!(acked.bound(), Some((4, 7)), "only the first delivery fixes the start");
        acked.acknowledged(&[6, 8]);
        assert_eq!(acked.bound(), Some((4, 7)), "5 is not acknowledged");
        acked.acknowledged(&[5, 3]);
        assert_eq!(acked.bound(), Some((6, 7)), "7 is not acknowledged");
        acked.acknowledged(&[7, 7]);
        assert_eq!(acked.bound(), Some((8, 7)));
    }

    #[test]
    fn failed_acknowledgements_are_retried_and_count_only_once_they_succeed() {
        let mut acked = AckedInputs::new(0);
        acked.delivered(1);
        acked.failed(vec![1, 2]);
        acked.acknowledged(&[3]);
        assert_eq!(acked.bound(), Some((0, 0)));
        let retry = acked.take_retry();
        assert_eq!(retry, [1, 2]);
        assert!(acked.take_retry().is_empty());
        acked.acknowledged(&retry);
        assert_eq!(acked.bound(), Some((3, 0)));
    }

    #[test]
    fn a_stopped_run_knows_nothing_for_good() {
        let mut acked = AckedInputs::new(0);
        acked.delivered(1);
        acked.acknowledged(&[1]);
        acked.stop();
        assert_eq!(acked.bound(), None);
        acked.delivered(2);
        acked.acknowledged(&[2]);
        assert_eq!(acked.bound(), None);
        assert!(!acked.is_tracking());
    }

    #[test]
    fn a_gap_that_never_closes_stops_the_run_instead_of_growing() {
        let mut acked = AckedInputs::new(0);
        acked.delivered(1);
        let offsets: Vec<u64> = (2..=ACKED_INPUTS_ABOVE_GAP_MAX as u64 + 2).collect();
        acked.acknowledged(&offsets);
        assert_eq!(acked.bound(), None);
        assert!(!acked.is_tracking());
    }
}
