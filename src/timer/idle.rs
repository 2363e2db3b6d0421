//! The idle list: one timer entry for every idle deadline.
//!
//! Every connection shares the same idle timeout, so idle deadlines come
//! in the order of last activity. The list keeps its members in that
//! order, linked through their own [`Place`]s (8 bytes each, no entry on
//! the heap): a member that moves bytes goes to the end, in O(1); the
//! list's one heap entry is armed for its first member's deadline, and
//! when it comes due the members whose deadline passed are taken off the
//! front, and the entry is armed again for the next one. So an idle
//! connection costs its 8-byte place and nothing on the heap.
//!
//! Moving costs a few table lookups, so a member moves only when its
//! activity crosses into a new *granule* of the clock (a 64th of the idle
//! timeout, rounded down to a power of two of milliseconds): a connection
//! answering thousands of messages a second moves about once a granule,
//! not once a message. The list is then in the order of each member's
//! granule, and within one granule a member may sit behind one that was
//! active later: its close comes at most a granule (under 1/64 of the
//! timeout) late, never early. With a timeout under 128 ms the granule is
//! one millisecond, the clock's own resolution.
//!
//! A member joins only at the end, and only when it was last active no
//! earlier than the member there (as one that just moved bytes, or just
//! arrived, always is): the order then holds with no search. The rare one
//! that does not qualify (a fault's wait that ended without bytes moving
//! since an earlier moment) waits off the list with an entry of its own,
//! as every other deadline does (a lingering close, a fault's step): its
//! [`Place`] then holds that entry's [`Armed`].

use std::num::NonZeroU32;

use super::{Armed, Due, Entry, Millis, Stamp, Timers};

/// Keys a member may have: below this (the list's links keep a key plus
/// one, and one more value ends the list).
pub(crate) const MAX_KEYS: usize = u32::MAX as usize - 1;

/// A member's key, kept plus one, or the end of the list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Link(NonZeroU32);

impl Link {
    /// No member: the end of the list.
    const END: Link = Link(NonZeroU32::MAX);

    fn to(key: u32) -> Link {
        debug_assert!((key as usize) < MAX_KEYS);
        Link(NonZeroU32::new(key.wrapping_add(1)).unwrap_or(NonZeroU32::MAX))
    }

    fn key(self) -> Option<u32> {
        (self != Link::END).then(|| self.0.get() - 1)
    }
}

/// Where something with a deadline waits for it: on the idle list, or
/// off it with its own timer entry (if armed). 8 bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Place {
    /// On the idle list, between these two.
    Listed { prev: Link, next: Link },
    /// Off the list; its own entry, if one is armed.
    Off(Armed),
}

impl Default for Place {
    fn default() -> Place {
        Place::Off(Armed::default())
    }
}

/// What the list needs of its members' owner: their places and when they
/// were last active. `None` for a key that has no member.
pub(crate) trait Members {
    fn place(&self, key: u32) -> Option<Place>;
    fn place_mut(&mut self, key: u32) -> Option<&mut Place>;
    fn last_active(&self, key: u32) -> Option<Stamp>;
}

/// What a member waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Wait {
    /// Its idle deadline: the idle timeout after it was last active.
    Idle,
    /// Another deadline (its lingering close, a fault's step).
    At(Millis),
    /// Nothing.
    Nothing,
}

/// The idle list (see the module docs).
#[derive(Debug)]
pub(crate) struct IdleList {
    idle_ms: Millis,
    /// A granule is `1 << granule_shift` milliseconds (see the module docs).
    granule_shift: u32,
    head: Link,
    tail: Link,
    /// The list's one entry, for its first member's deadline.
    armed: Armed,
    /// What the list's entry says is due.
    due: Due,
    /// What a member's own entry says is due.
    member_due: fn(u32) -> Due,
}

impl IdleList {
    /// An empty list for members idle after `idle_ms`, whose entry is
    /// `due`, and whose members' own entries are `member_due(key)`.
    pub fn new(idle_ms: Millis, due: Due, member_due: fn(u32) -> Due) -> IdleList {
        IdleList {
            idle_ms,
            granule_shift: (idle_ms / 64).max(1).ilog2().min(31),
            head: Link::END,
            tail: Link::END,
            armed: Armed::default(),
            due,
            member_due,
        }
    }

    /// Whether a member last active `was` and now `is` has moved for the
    /// list: its activity reached a new granule (see the module docs).
    pub fn moved(&self, was: Stamp, is: Stamp) -> bool {
        was.granule(self.granule_shift) != is.granule(self.granule_shift)
    }

    /// Member `key` waits for `wait`, seen at `now`; `moved`: it was
    /// active since it was last settled. On the list it goes to the end
    /// if it moved; otherwise it keeps an entry of its own, armed no later
    /// than its deadline.
    pub fn settle(
        &mut self,
        key: u32,
        wait: Wait,
        moved: bool,
        now: Millis,
        members: &mut impl Members,
        timers: &mut Timers,
    ) {
        let listed = matches!(members.place(key), Some(Place::Listed { .. }));
        let deadline = match wait {
            Wait::Idle if listed && !moved => return,
            Wait::Idle if listed => {
                if self.tail != Link::to(key) {
                    self.unlink(key, members);
                    self.push_back(key, now, members, timers);
                }
                return;
            }
            Wait::Idle => {
                let Some(last) = members.last_active(key) else {
                    return;
                };
                let tail_last = self.tail.key().and_then(|tail| members.last_active(tail));
                if tail_last.is_none_or(|tail| tail.near(now) <= last.near(now)) {
                    return self.push_back(key, now, members, timers);
                }
                last.near(now).saturating_add(self.idle_ms)
            }
            Wait::At(at) => at,
            Wait::Nothing => return self.remove(key, members),
        };
        self.remove(key, members);
        if let Some(Place::Off(armed)) = members.place_mut(key) {
            armed.arm(deadline, now, (self.member_due)(key), timers);
        }
    }

    /// Takes member `key` off the list, if it is on it.
    pub fn remove(&mut self, key: u32, members: &mut impl Members) {
        if let Some(Place::Listed { .. }) = members.place(key) {
            self.unlink(key, members);
        }
    }

    /// The list's entry came due `at`: whether it is the current one. If
    /// so, take the expired members with [`pop_expired`](Self::pop_expired).
    pub fn fire(&mut self, at: Millis) -> bool {
        self.armed.fire(at)
    }

    /// Member `key`'s own entry came due `at`: whether it is the current
    /// one (then it is forgotten).
    pub fn fire_member(&self, key: u32, at: Millis, members: &mut impl Members) -> bool {
        match members.place_mut(key) {
            Some(Place::Off(armed)) => armed.fire(at),
            _ => false,
        }
    }

    /// Takes off the first member if its idle deadline has passed at
    /// `now`, and returns its key. Otherwise arms the list's entry for
    /// that deadline (if a member is left) and returns `None`.
    pub fn pop_expired(
        &mut self,
        now: Millis,
        members: &mut impl Members,
        timers: &mut Timers,
    ) -> Option<u32> {
        let head = self.head.key()?;
        match self.deadline(head, now, members) {
            Some(at) if at > now => {
                self.armed.arm(at, now, self.due, timers);
                None
            }
            _ => {
                self.unlink(head, members);
                Some(head)
            }
        }
    }

    /// Whether a timer entry is current: the list's own, or a member's.
    pub fn is_current(&self, entry: &Entry, key: u32, members: &impl Members) -> bool {
        if entry.due == self.due {
            return self.armed.is_current(entry.at);
        }
        match members.place(key) {
            Some(Place::Off(armed)) => armed.is_current(entry.at),
            _ => false,
        }
    }

    /// Member `key`'s idle deadline, seen at `now`.
    fn deadline(&self, key: u32, now: Millis, members: &impl Members) -> Option<Millis> {
        let last = members.last_active(key)?;
        Some(last.near(now).saturating_add(self.idle_ms))
    }

    fn push_back(
        &mut self,
        key: u32,
        now: Millis,
        members: &mut impl Members,
        timers: &mut Timers,
    ) {
        let link = Link::to(key);
        let Some(place) = members.place_mut(key) else {
            return;
        };
        *place = Place::Listed {
            prev: self.tail,
            next: Link::END,
        };
        match self.tail.key() {
            Some(tail) => set_next(members, tail, link),
            None => {
                self.head = link;
                if let Some(at) = self.deadline(key, now, members) {
                    self.armed.arm(at, now, self.due, timers);
                }
            }
        }
        self.tail = link;
    }

    fn unlink(&mut self, key: u32, members: &mut impl Members) {
        let Some(place) = members.place_mut(key) else {
            return;
        };
        let Place::Listed { prev, next } = *place else {
            return;
        };
        *place = Place::default();
        match prev.key() {
            Some(prev_key) => set_next(members, prev_key, next),
            None => self.head = next,
        }
        match next.key() {
            Some(next_key) => set_prev(members, next_key, prev),
            None => self.tail = prev,
        }
    }
}

fn set_next(members: &mut impl Members, key: u32, link: Link) {
    if let Some(Place::Listed { next, .. }) = members.place_mut(key) {
        *next = link;
    }
}

fn set_prev(members: &mut impl Members, key: u32, link: Link) {
    if let Some(Place::Listed { prev, .. }) = members.place_mut(key) {
        *prev = link;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const IDLE: Millis = 1_000;
    const LIST: Due = Due::Conn { key: u32::MAX };

    fn member(key: u32) -> Due {
        Due::Conn { key }
    }

    /// Members as the tests keep them: a place, a last activity and what
    /// each waits for.
    #[derive(Default)]
    struct Store(Vec<Option<(Place, Stamp, Wait)>>);

    impl Members for Store {
        fn place(&self, key: u32) -> Option<Place> {
            self.0.get(key as usize)?.as_ref().map(|&(place, ..)| place)
        }

        fn place_mut(&mut self, key: u32) -> Option<&mut Place> {
            self.0
                .get_mut(key as usize)?
                .as_mut()
                .map(|(place, ..)| place)
        }

        fn last_active(&self, key: u32) -> Option<Stamp> {
            self.0.get(key as usize)?.as_ref().map(|&(_, last, _)| last)
        }
    }

    struct Fixture {
        list: IdleList,
        store: Store,
        timers: Timers,
    }

    impl Fixture {
        fn new() -> Fixture {
            Fixture {
                list: IdleList::new(IDLE, LIST, member),
                store: Store::default(),
                timers: Timers::default(),
            }
        }

        /// Member `key` was active at `now` (arriving if new) and waits
        /// for its idle deadline.
        fn active(&mut self, key: u32, now: Millis) {
            let slots = &mut self.store.0;
            if slots.len() <= key as usize {
                slots.resize(key as usize + 1, None);
            }
            let was = slots[key as usize].map(|(_, was, _)| was);
            let moved = was.is_some_and(|was| self.list.moved(was, Stamp::of(now)));
            let place = slots[key as usize].map_or(Place::default(), |(place, ..)| place);
            slots[key as usize] = Some((place, Stamp::of(now), Wait::Idle));
            let wait = Wait::Idle;
            (self.list).settle(key, wait, moved, now, &mut self.store, &mut self.timers);
        }

        /// Member `key` waits for `wait` from `now` on, with no activity.
        fn settle(&mut self, key: u32, wait: Wait, now: Millis) {
            if let Some((.., waits)) = &mut self.store.0[key as usize] {
                *waits = wait;
            }
            (self.list).settle(key, wait, false, now, &mut self.store, &mut self.timers);
        }

        fn gone(&mut self, key: u32) {
            self.list.remove(key, &mut self.store);
            self.store.0[key as usize] = None;
        }

        /// Runs the timers up to `now` as the loop does; returns the keys
        /// whose deadline passed. An idle one is gone; one whose other
        /// deadline passed stays, for the test to settle again.
        fn run(&mut self, now: Millis) -> Vec<u32> {
            let mut due = Vec::new();
            while let Some(entry) = self.timers.pop_due(now) {
                if entry.due == LIST {
                    if self.list.fire(entry.at) {
                        while let Some(key) =
                            (self.list).pop_expired(now, &mut self.store, &mut self.timers)
                        {
                            due.push(key);
                            self.store.0[key as usize] = None;
                        }
                    }
                    continue;
                }
                let Due::Conn { key } = entry.due else {
                    continue;
                };
                if !self.list.fire_member(key, entry.at, &mut self.store) {
                    continue;
                }
                let Some((_, last, wait)) = self.store.0[key as usize] else {
                    continue;
                };
                match wait {
                    Wait::Idle if last.near(now) + IDLE <= now => {
                        due.push(key);
                        self.store.0[key as usize] = None;
                    }
                    Wait::At(at) if at <= now => due.push(key),
                    _ => self.settle(key, wait, now),
                }
            }
            due
        }

        fn order(&mut self) -> Vec<u32> {
            let mut keys = Vec::new();
            let mut at = self.list.head;
            while let Some(key) = at.key() {
                keys.push(key);
                let Some(Place::Listed { next, .. }) = self.store.place(key) else {
                    panic!("{key} is on the list but not listed");
                };
                at = next;
            }
            keys
        }
    }

    #[test]
    fn a_member_moves_once_a_granule_and_closes_at_most_a_granule_late() {
        // IDLE 1,000 ms: a granule is 8 ms (1,000 / 64, down to a power of 2).
        let mut f = Fixture::new();
        f.active(0, 0);
        f.active(1, 1);
        f.active(0, 2); // The same granule as its place: it stays first.
        assert_eq!(f.order(), [0, 1]);
        f.active(1, 8); // A new granule: to the end.
        f.active(0, 9);
        assert_eq!(f.order(), [1, 0]);
        f.active(1, 15); // Still 1's granule (8 to 15): it stays.
        assert_eq!(f.order(), [1, 0]);
        // 0's deadline is 1,009, but it sits behind 1 (due 1,015): it
        // closes 6 ms late, under a granule, and never early.
        assert_eq!(f.run(1_008), [] as [u32; 0]);
        assert_eq!(f.run(1_014), [] as [u32; 0]);
        assert_eq!(f.run(1_015), [1, 0]);
    }

    #[test]
    fn the_granule_is_a_64th_of_the_timeout_as_a_power_of_two_of_milliseconds() {
        let shift = |idle_ms| IdleList::new(idle_ms, LIST, member).granule_shift;
        assert_eq!(shift(1), 0);
        assert_eq!(shift(127), 0, "under 128 ms: the clock's own resolution");
        assert_eq!(shift(1_000), 3);
        assert_eq!(shift(60_000), 9, "the default 60 s: 512 ms");
        assert_eq!(shift(Millis::MAX), 31, "no timeout: within a u32 stamp");
    }

    #[test]
    fn a_place_is_8_bytes() {
        assert_eq!(std::mem::size_of::<Place>(), 8);
    }

    #[test]
    fn members_expire_exactly_at_their_deadlines_from_one_heap_entry() {
        let mut f = Fixture::new();
        for (key, now) in [(0, 10), (1, 20), (2, 20), (3, 35)] {
            f.active(key, now);
        }
        assert_eq!(f.timers.len(), 1, "one entry for the whole list");
        assert_eq!(f.timers.next_at(), Some(10 + IDLE));
        assert_eq!(f.run(10 + IDLE - 1), [] as [u32; 0]);
        assert_eq!(f.run(10 + IDLE), [0]);
        assert_eq!(f.timers.next_at(), Some(20 + IDLE), "armed for the next");
        assert_eq!(f.run(20 + IDLE), [1, 2]);
        assert_eq!(f.run(35 + IDLE), [3]);
        assert_eq!(f.timers.len(), 0, "an empty list arms nothing");
        f.active(7, 5_000);
        assert_eq!(f.timers.next_at(), Some(5_000 + IDLE), "armed again");
    }

    #[test]
    fn activity_moves_a_member_to_the_end_and_its_deadline_with_it() {
        let mut f = Fixture::new();
        for key in 0..3 {
            f.active(key, 100);
        }
        f.active(0, 400);
        f.active(1, 400);
        f.active(1, 500);
        assert_eq!(f.order(), [2, 0, 1]);
        assert_eq!(f.run(100 + IDLE), [2]);
        assert_eq!(f.run(400 + IDLE), [0], "the old entry re-armed");
        assert_eq!(f.run(500 + IDLE - 1), [] as [u32; 0]);
        assert_eq!(f.run(500 + IDLE), [1]);
        assert_eq!(f.order(), [] as [u32; 0]);
    }

    #[test]
    fn a_member_leaves_from_anywhere_and_the_links_hold() {
        let mut f = Fixture::new();
        for key in 0..5 {
            f.active(key, 10 * Millis::from(key));
        }
        f.gone(2);
        assert_eq!(f.order(), [0, 1, 3, 4]);
        f.gone(0);
        f.gone(4);
        assert_eq!(f.order(), [1, 3]);
        f.active(0, 50);
        assert_eq!(f.order(), [1, 3, 0], "a new member in a freed key");
        assert_eq!(f.run(10 + IDLE), [1]);
        assert_eq!(f.run(50 + IDLE), [3, 0]);
    }

    #[test]
    fn another_deadline_takes_a_member_off_the_list_with_its_own_entry() {
        let mut f = Fixture::new();
        f.active(0, 0);
        f.active(1, 0);
        // Member 0 lingers until 300: off the list, an entry of its own.
        f.settle(0, Wait::At(300), 0);
        assert_eq!(f.order(), [1]);
        assert_eq!(f.run(300), [0], "its own entry");
        // No deadline at all: off the list, nothing armed.
        f.settle(1, Wait::Nothing, 300);
        assert_eq!(f.order(), [] as [u32; 0]);
        assert_eq!(f.run(10 * IDLE), [] as [u32; 0], "the list's stale entry");
    }

    #[test]
    fn a_member_last_active_before_the_end_of_the_list_keeps_its_own_entry() {
        let mut f = Fixture::new();
        f.active(0, 0);
        f.settle(0, Wait::At(700), 0); // a fault's step until 700
        f.active(1, 500);
        assert_eq!(f.run(700), [0], "the step is due");
        // The step ran without moving bytes: idle since 0, before member
        // 1, so it cannot join at the end.
        f.settle(0, Wait::Idle, 700);
        assert_eq!(f.order(), [1]);
        assert_eq!(f.run(IDLE - 1), [] as [u32; 0]);
        assert_eq!(f.run(IDLE), [0], "exactly at its deadline");
        f.active(0, IDLE + 1);
        assert_eq!(f.order(), [1, 0], "a new member: on the list");
        assert_eq!(f.run(500 + IDLE), [1]);
        assert_eq!(f.run(2 * IDLE + 1), [0]);
    }

    #[test]
    fn stale_entries_are_told_from_current_ones() {
        let mut f = Fixture::new();
        f.active(0, 0);
        f.settle(0, Wait::At(300), 10);
        let own = Entry {
            at: 300,
            due: member(0),
        };
        let list = Entry {
            at: IDLE,
            due: LIST,
        };
        assert!(f.list.is_current(&own, 0, &f.store));
        assert!(f.list.is_current(&list, 0, &f.store));
        f.active(0, 20);
        assert!(!f.list.is_current(&own, 0, &f.store), "back on the list");
        let later = Entry {
            at: IDLE + 1,
            due: LIST,
        };
        assert!(!f.list.is_current(&later, 0, &f.store));
    }
}
