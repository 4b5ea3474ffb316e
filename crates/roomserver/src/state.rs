//! State as blocks of numeric triples, snapshots as lists of blocks.
//!
//! A snapshot is a list of blocks; a block is a set of entries
//! (event type NID, state key NID) -> event NID, where event NID 0 means
//! "removed". A key's value in a snapshot is its value in the last block of
//! the list that has it. A new snapshot is its parent's list plus one block
//! holding only what changed, so consecutive snapshots share every block but
//! the last.
//!
//! To keep lists short, blocks are size-tiered: a block made of `n` changes
//! has level `floor(log_F(n))`; whenever the last `F` blocks of a list share
//! a level they are merged into one block (overridden entries dropped) of
//! the next level. Every entry is then written about `log_F(changes)` times
//! in all, so stored rows grow with the number of changes, not with
//! changes × room size, and a list holds at most `(F - 1)` blocks per level.

use std::collections::BTreeMap;

/// A state key: (event type NID, state key NID).
pub type StateKeyTuple = (i64, i64);

/// A state map: key -> event NID (never 0 in a resolved map).
pub type StateMap = BTreeMap<StateKeyTuple, i64>;

/// How many blocks of one level are merged into one of the next level.
/// 32 keeps every entry's writes under 4 for the first 32^3 changes to a
/// room, and a snapshot under 32 blocks per level.
pub const STATE_BLOCK_MERGE_FANOUT: usize = 32;

/// One block of a snapshot's list: its NID and its level.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct BlockRef {
    /// The block's NID.
    pub nid: i64,
    /// Its size tier.
    pub level: u32,
}

/// The level of a block of `entries` entries.
pub fn level_for(entries: usize) -> u32 {
    let mut level = 0;
    let mut size = STATE_BLOCK_MERGE_FANOUT;
    while entries >= size {
        level += 1;
        size = size.saturating_mul(STATE_BLOCK_MERGE_FANOUT);
    }
    level
}

/// Folds blocks (in list order) into one map; later blocks win; with
/// `keep_removals`, entries with event NID 0 stay (they still override older blocks).
pub fn fold<'a>(blocks: impl IntoIterator<Item = &'a BTreeMap<StateKeyTuple, i64>>, keep_removals: bool) -> StateMap {
    let mut map = StateMap::new();
    for block in blocks {
        for (k, v) in block {
            map.insert(*k, *v);
        }
    }
    if !keep_removals {
        map.retain(|_, v| *v != 0);
    }
    map
}

/// The entries that turn state `from` into state `to` (0 for a removed key).
pub fn delta(from: &StateMap, to: &StateMap) -> BTreeMap<StateKeyTuple, i64> {
    let mut delta = BTreeMap::new();
    for (k, v) in to {
        if from.get(k) != Some(v) {
            delta.insert(*k, *v);
        }
    }
    for k in from.keys() {
        if !to.contains_key(k) {
            delta.insert(*k, 0);
        }
    }
    delta
}

/// Which merge to do after a block was appended: the index in the list of
/// the first of the last `F` blocks when they share a level, else `None`.
pub fn merge_start(list: &[BlockRef]) -> Option<usize> {
    if list.len() < STATE_BLOCK_MERGE_FANOUT {
        return None;
    }
    let start = list.len() - STATE_BLOCK_MERGE_FANOUT;
    let level = list[start].level;
    list[start..].iter().all(|b| b.level == level).then_some(start)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_are_size_tiers() {
        assert_eq!(level_for(1), 0);
        assert_eq!(level_for(STATE_BLOCK_MERGE_FANOUT - 1), 0);
        assert_eq!(level_for(STATE_BLOCK_MERGE_FANOUT), 1);
        assert_eq!(level_for(STATE_BLOCK_MERGE_FANOUT * STATE_BLOCK_MERGE_FANOUT), 2);
    }

    #[test]
    fn later_blocks_win_and_removals_fold_away() {
        let a = BTreeMap::from([((1, 1), 10), ((2, 5), 11)]);
        let b = BTreeMap::from([((2, 5), 0), ((3, 1), 12)]);
        assert_eq!(fold([&a, &b], false), BTreeMap::from([((1, 1), 10), ((3, 1), 12)]));
        assert_eq!(fold([&a, &b], true).get(&(2, 5)), Some(&0));
    }

    #[test]
    fn delta_turns_one_state_into_the_other() {
        let from = BTreeMap::from([((1, 1), 10), ((2, 5), 11)]);
        let to = BTreeMap::from([((1, 1), 10), ((3, 1), 12)]);
        let d = delta(&from, &to);
        assert_eq!(d, BTreeMap::from([((2, 5), 0), ((3, 1), 12)]));
        assert_eq!(fold([&from, &d], false), to);
    }

    #[test]
    fn merge_only_when_the_tail_shares_a_level() {
        let mut list: Vec<BlockRef> =
            (0..STATE_BLOCK_MERGE_FANOUT as i64 - 1).map(|nid| BlockRef { nid, level: 0 }).collect();
        assert_eq!(merge_start(&list), None);
        list.push(BlockRef { nid: 99, level: 0 });
        assert_eq!(merge_start(&list), Some(0));
        list[0].level = 1;
        assert_eq!(merge_start(&list), None);
    }
}
