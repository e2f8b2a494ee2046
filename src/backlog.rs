//! The window rule: which of a webhook's pending deliveries its delivery
//! actor holds in memory, so that memory is bounded by configuration
//! (`BROKER_MAX_IN_MEMORY`) and not by the backlog, and every channel still
//! goes out in order.
//!
//! Every delivery is durable in the database before an actor hears of it,
//! so an actor may leave one there and read it later. The invariant that
//! keeps order: the actor holds every pending delivery of its webhook up to
//! a cursor in sequence order `(seq, id)`, and none past it that it
//! has not been handed in order. A page read from the database is the next
//! stretch past the cursor, so for each channel the actor always holds a
//! prefix of that channel's queue: the oldest pending delivery of a channel
//! is in memory whenever any of its later ones is.
//!
//! While a backlog exists (the budget ran out, or the broker started with
//! pending work), new deliveries are left in the database and come back in
//! pages; arrivals during a page read are kept aside, and the backlog ends
//! when a page comes back short (the database had nothing more at that
//! moment), at which point what was kept aside is exactly what came after.
//! The rules are pure; [`crate::actors::delivery`] wires them up.

/// A position in sequence order: `(seq, delivery id)`.
pub use crate::db::deliveries::Cursor;

use std::collections::{HashMap, HashSet, VecDeque};

/// The longest wait for an attempt over which a delivery keeps its body in
/// memory. A channel whose head waits longer (a receiver down, retries an
/// hour apart) holds only ids and times; each body is read again when its
/// attempt is due. A few seconds' wait keeps it: reading it back would
/// cost more than holding it.
pub const KEEP_BODY_FOR_MS: i64 = 10_000;

/// Whether a delivery whose next attempt is `wait_ms` away lets go of its
/// body until then.
pub fn sheds_body(wait_ms: i64) -> bool {
    wait_ms > KEEP_BODY_FOR_MS
}

/// What to do with a delivery the actor has just been handed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    /// Hold it in memory now.
    Hold,
    /// Keep it aside until the page being read comes back.
    Aside,
    /// Leave it in the database; a later page brings it back.
    Leave,
}

/// What to do with the deliveries kept aside once a page is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterPage {
    /// The backlog is over: admit them again (they are all held).
    AdmitAside,
    /// More is waiting in the database: admit them again (those past the
    /// cursor are left there).
    Readmit,
}

/// One webhook's window on its pending deliveries.
#[derive(Debug, Clone, Default)]
pub struct Window {
    backlog: bool,
    cursor: Option<Cursor>,
    reading: bool,
    restart: bool,
    again: bool,
}

impl Window {
    /// A window with nothing in the database beyond what it is handed.
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether deliveries may be waiting in the database and not in memory.
    pub fn has_backlog(&self) -> bool {
        self.backlog
    }

    /// Whether a page read is under way.
    pub fn is_reading(&self) -> bool {
        self.reading
    }

    /// Pending deliveries may be in the database at any position (at start,
    /// after a takeover, a resume or a requeue): read from the beginning.
    /// Deliveries already held come back in the pages and are skipped.
    pub fn read_from_start(&mut self) {
        self.backlog = true;
        if self.reading {
            self.restart = true;
        } else {
            self.cursor = None;
        }
    }

    /// Deliveries past the cursor were committed by another instance (or
    /// requeued): read on from the cursor. A page under way may have been
    /// read before they committed, so another one follows it.
    pub fn more_in_database(&mut self) {
        self.backlog = true;
        if self.reading {
            self.again = true;
        }
    }

    /// Decides on a delivery at `key` handed to the actor; `room` says
    /// whether the memory budget has space for one more.
    pub fn admit(&mut self, key: &Cursor, room: bool) -> Admit {
        if self.cursor.as_ref().is_some_and(|c| key <= c) {
            // Inside the stretch the actor holds: it belongs in memory, even
            // over budget, or the prefix would have a hole.
            return Admit::Hold;
        }
        if self.backlog {
            return if self.reading {
                Admit::Aside
            } else {
                Admit::Leave
            };
        }
        if !room {
            self.backlog = true;
            return Admit::Leave;
        }
        self.cursor = Some(key.clone());
        Admit::Hold
    }

    /// Whether to read a page now, with `held` deliveries in memory.
    pub fn wants_page(&self, held: usize, low_water: usize) -> bool {
        self.backlog && !self.reading && held < low_water
    }

    /// Starts a page read; answers where the page starts.
    pub fn start_page(&mut self) -> Option<Cursor> {
        self.reading = true;
        self.cursor.clone()
    }

    /// A page came back: `last` is its last row (if any) and `full` whether
    /// it held as many rows as were asked for.
    pub fn page_read(&mut self, last: Option<Cursor>, full: bool) -> AfterPage {
        self.reading = false;
        if let Some(last) = last {
            if self.cursor.as_ref().is_none_or(|c| &last > c) {
                self.cursor = Some(last);
            }
        }
        if std::mem::take(&mut self.restart) {
            self.cursor = None;
            return AfterPage::Readmit;
        }
        if std::mem::take(&mut self.again) || full {
            AfterPage::Readmit
        } else {
            self.backlog = false;
            AfterPage::AdmitAside
        }
    }

    /// A page read failed: what was kept aside stays in the database.
    pub fn page_failed(&mut self) {
        self.reading = false;
        self.again = false;
        if std::mem::take(&mut self.restart) {
            self.cursor = None;
        }
    }
}

/// The most deliveries of one channel an actor holds. Only a channel's
/// oldest is ever in flight, so holding more buys nothing but a head start;
/// and a channel whose receiver fails on its oldest event can have a queue
/// of any length, which must not fill the webhook's share of memory and
/// keep its other channels' deliveries in the database.
pub const CHANNEL_HOLD: usize = 64;

/// A clipped channel reads on when it holds this few.
pub const CHANNEL_LOW: usize = CHANNEL_HOLD / 4;

/// The most clipped channels one statement reads on in.
pub const CHANNELS_PER_READ: usize = 500;

/// Clipped channels due a read, in the order they came due. A read takes
/// at most [`CHANNELS_PER_READ`] of them, the longest waiting first, so
/// however many are due at once, each is read within `due / 500` reads
/// (a set walked in hash order could pass over the same channels read
/// after read while others kept coming due).
#[derive(Debug, Default)]
pub struct DueChannels {
    order: VecDeque<String>,
    members: HashSet<String>,
}

impl DueChannels {
    /// Marks `channel` due; one already due keeps its place.
    pub fn insert(&mut self, channel: &str) {
        if self.members.insert(channel.to_owned()) {
            self.order.push_back(channel.to_owned());
        }
    }

    /// Whether no channel is due.
    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }

    /// How many channels are due.
    pub fn len(&self) -> usize {
        self.order.len()
    }

    /// Takes up to `n` channels in the order they came due. A channel for
    /// which `still_due` answers false on the way (it was read on, or
    /// filled up again, meanwhile) is dropped and does not count.
    pub fn take(&mut self, n: usize, mut still_due: impl FnMut(&str) -> bool) -> Vec<String> {
        let mut taken = Vec::new();
        while taken.len() < n {
            let Some(channel) = self.order.pop_front() else {
                break;
            };
            self.members.remove(&channel);
            if still_due(&channel) {
                taken.push(channel);
            }
        }
        taken
    }

    /// Puts channels taken but not read back at the front, in their order.
    pub fn put_back(&mut self, channels: Vec<String>) {
        for channel in channels.into_iter().rev() {
            if self.members.insert(channel.clone()) {
                self.order.push_front(channel);
            }
        }
    }
}

/// A channel of which the actor holds only the start: every pending
/// delivery of it up to `after` is held, none past it. Past it, the
/// channel's deliveries are read from the database in pages of clipped
/// channels ([`crate::db::deliveries::read_channels_page`], see
/// [`split_channels_page`]), in order; whatever
/// of the channel the actor is handed meanwhile (at ingest, or in a page of
/// the whole webhook) is left there, or kept aside while such a read is
/// under way. The webhook's own window moves on past the channel.
#[derive(Debug, Clone)]
pub struct Clip {
    after: Cursor,
    reading: bool,
}

impl Clip {
    /// The channel is held up to `after`, its last delivery in memory.
    pub fn at(after: Cursor) -> Clip {
        Clip {
            after,
            reading: false,
        }
    }

    /// Decides on a delivery of the channel at `key` handed to the actor.
    pub fn admit(&self, key: &Cursor) -> Admit {
        if key <= &self.after {
            Admit::Hold
        } else if self.reading {
            Admit::Aside
        } else {
            Admit::Leave
        }
    }

    /// Whether a read of the channel is under way.
    pub fn is_reading(&self) -> bool {
        self.reading
    }

    /// Starts a read of the channel; answers where it starts.
    pub fn start_read(&mut self) -> Cursor {
        self.reading = true;
        self.after.clone()
    }

    /// A read came back with `last` as its last row, `full` if it held as
    /// many as were asked for. Answers whether the channel is still clipped
    /// (then what was kept aside is left in the database); if not, the
    /// read took in everything of the channel that was there, and what was
    /// kept aside came after it.
    pub fn read(&mut self, last: Option<Cursor>, full: bool) -> bool {
        self.reading = false;
        if let Some(last) = last {
            if last > self.after {
                self.after = last;
            }
        }
        full
    }

    /// A read failed: the channel stays clipped where it was.
    pub fn read_failed(&mut self) {
        self.reading = false;
    }

    /// The channel's last delivery in memory.
    pub fn after(&self) -> &Cursor {
        &self.after
    }
}

/// How one clipped channel came out of a read of several at once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelEnd {
    /// Every pending delivery of the channel up to here is held now.
    pub after: Cursor,
    /// Whether more of it may wait in the database past `after`.
    pub still_clipped: bool,
}

/// The rule for a page of several clipped channels read together, one walk
/// of the webhook's pending deliveries in sequence order from the smallest
/// of their clips, which serves a thousand clipped channels (a receiver back
/// after an outage) in a few statements rather than a walk each. `rooms`
/// holds each channel's clip and how many more of it may be held; `rows`
/// are the page's `(channel, key)` in order; `full` is whether the page
/// held as many rows as were asked for. Answers which rows to hold and how
/// each channel ends.
///
/// The page is every pending row of these channels in its stretch, so for
/// each channel the rows past its clip are the next of its queue: holding
/// them in order until its room runs out keeps the held part a prefix.
/// Rows at or before a channel's clip are already held (the walk starts at
/// the smallest clip). A channel that ran out of room stays clipped at its
/// last held row; one that did not holds everything of it up to the page's
/// end, which after a short page is everything there was.
pub fn split_channels_page<'a>(
    rooms: &HashMap<String, (Cursor, usize)>,
    rows: impl IntoIterator<Item = (&'a str, &'a Cursor)>,
    full: bool,
) -> (Vec<bool>, HashMap<String, ChannelEnd>) {
    struct State {
        after: Cursor,
        room: usize,
        filled: bool,
    }
    let mut state: HashMap<&str, State> = rooms
        .iter()
        .map(|(c, (after, room))| {
            let s = State {
                after: after.clone(),
                room: *room,
                filled: false,
            };
            (c.as_str(), s)
        })
        .collect();
    let mut last: Option<&Cursor> = None;
    let take = rows
        .into_iter()
        .map(|(channel, key)| {
            last = Some(key);
            let Some(s) = state.get_mut(channel) else {
                return false;
            };
            if s.filled || key <= &s.after {
                return false;
            }
            if s.room == 0 {
                s.filled = true;
                return false;
            }
            s.room -= 1;
            s.after = key.clone();
            true
        })
        .collect();
    let ends = state
        .into_iter()
        .map(|(channel, s)| {
            let end = if s.filled {
                ChannelEnd {
                    after: s.after,
                    still_clipped: true,
                }
            } else {
                ChannelEnd {
                    after: match last {
                        Some(last) if full && last > &s.after => last.clone(),
                        _ => s.after,
                    },
                    still_clipped: full,
                }
            };
            (channel.to_owned(), end)
        })
        .collect();
    (take, ends)
}

/// How many more deliveries an actor holding `held` may take into memory,
/// with `in_memory` of `max` held by `actors` actors in all. Each actor may
/// fill its even share; beyond it, an actor may use only the spare room
/// above half the budget, so a webhook whose receiver is down cannot take
/// the memory a healthy one needs, while a lone busy webhook still gets
/// most of it.
pub fn allowance(max: usize, in_memory: usize, actors: usize, held: usize) -> usize {
    let room = max.saturating_sub(in_memory);
    let fair = (max / actors.max(1)).max(1).saturating_sub(held);
    let spare = room.saturating_sub(max / 2);
    fair.max(spare).min(room)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_delivery_waiting_long_for_its_attempt_lets_go_of_its_body() {
        assert!(!sheds_body(0));
        assert!(!sheds_body(KEEP_BODY_FOR_MS));
        assert!(sheds_body(KEEP_BODY_FOR_MS + 1));
        assert!(sheds_body(3_600_000));
    }

    #[test]
    fn an_actor_beyond_its_share_leaves_half_the_budget_to_the_others() {
        // Alone, a webhook may fill the budget.
        assert_eq!(allowance(100, 0, 1, 0), 100);
        // Two actors: the down one holds 50 (its share) and may take the
        // spare room above half only: none once the budget is half used.
        assert_eq!(allowance(100, 50, 2, 50), 0);
        // The healthy one still has its share.
        assert_eq!(allowance(100, 50, 2, 0), 50);
        // Over its share, with the budget mostly free, the spare above half.
        assert_eq!(allowance(100, 20, 2, 20), 30);
        // Never more than the room left.
        assert_eq!(allowance(100, 95, 2, 0), 5);
        assert_eq!(allowance(100, 100, 2, 0), 0);
        // Many actors: a share of at least one each.
        assert_eq!(allowance(100, 0, 1000, 0), 50);
        assert_eq!(allowance(100, 60, 1000, 0), 1);
    }

    fn key(at: i64) -> Cursor {
        (at, format!("msg_{at:04}"))
    }

    #[test]
    fn without_a_backlog_every_delivery_is_held_and_moves_the_cursor() {
        let mut w = Window::new();
        assert_eq!(w.admit(&key(1), true), Admit::Hold);
        assert_eq!(w.admit(&key(2), true), Admit::Hold);
        assert!(!w.has_backlog());
        assert!(!w.wants_page(0, 10));
    }

    #[test]
    fn a_full_budget_leaves_deliveries_in_the_database_until_a_short_page() {
        let mut w = Window::new();
        assert_eq!(w.admit(&key(1), true), Admit::Hold);
        assert_eq!(w.admit(&key(2), false), Admit::Leave);
        assert!(w.has_backlog());
        // Room again, but the backlog is not over: order needs the page.
        assert_eq!(w.admit(&key(3), true), Admit::Leave);
        assert!(w.wants_page(0, 10));
        assert_eq!(w.start_page(), Some(key(1)));
        assert_eq!(w.admit(&key(4), true), Admit::Aside);
        assert_eq!(w.page_read(Some(key(3)), false), AfterPage::AdmitAside);
        assert!(!w.has_backlog());
        assert_eq!(w.admit(&key(4), true), Admit::Hold);
    }

    #[test]
    fn after_a_full_page_what_was_kept_aside_past_the_cursor_waits_for_the_next() {
        let mut w = Window::new();
        w.read_from_start();
        assert_eq!(w.start_page(), None);
        assert_eq!(w.admit(&key(9), true), Admit::Aside);
        assert_eq!(w.admit(&key(2), true), Admit::Aside);
        assert_eq!(w.page_read(Some(key(5)), true), AfterPage::Readmit);
        assert_eq!(w.admit(&key(2), true), Admit::Hold);
        assert_eq!(w.admit(&key(9), true), Admit::Leave);
        assert_eq!(w.start_page(), Some(key(5)));
    }

    #[test]
    fn a_late_delivery_inside_the_held_stretch_is_held_even_in_a_backlog() {
        let mut w = Window::new();
        assert_eq!(w.admit(&key(5), true), Admit::Hold);
        assert_eq!(w.admit(&key(6), false), Admit::Leave);
        assert_eq!(w.admit(&key(3), false), Admit::Hold);
    }

    #[test]
    fn reading_from_the_start_during_a_page_takes_effect_when_it_is_in() {
        let mut w = Window::new();
        w.read_from_start();
        w.start_page();
        w.read_from_start();
        assert_eq!(w.page_read(Some(key(7)), false), AfterPage::Readmit);
        assert!(w.has_backlog());
        assert_eq!(w.start_page(), None);
    }

    #[test]
    fn rows_from_another_instance_during_a_page_make_another_page_follow() {
        let mut w = Window::new();
        assert_eq!(w.admit(&key(1), true), Admit::Hold);
        w.more_in_database();
        assert!(w.wants_page(0, 10));
        assert_eq!(w.start_page(), Some(key(1)));
        w.more_in_database();
        // Short, but read before the new rows committed: not the end.
        assert_eq!(w.page_read(Some(key(3)), false), AfterPage::Readmit);
        assert!(w.has_backlog());
        assert_eq!(w.start_page(), Some(key(3)));
        assert_eq!(w.page_read(Some(key(4)), false), AfterPage::AdmitAside);
        assert!(!w.has_backlog());
    }

    #[test]
    fn a_clipped_channel_holds_only_up_to_its_clip_and_reads_on_from_there() {
        let mut c = Clip::at(key(5));
        assert_eq!(c.admit(&key(3)), Admit::Hold);
        assert_eq!(c.admit(&key(5)), Admit::Hold);
        assert_eq!(c.admit(&key(6)), Admit::Leave);
        assert_eq!(c.start_read(), key(5));
        assert!(c.is_reading());
        assert_eq!(c.admit(&key(9)), Admit::Aside);
        // A full read: more may wait; it reads on from its last row, and
        // what was kept aside is left in the database.
        assert!(c.read(Some(key(8)), true));
        assert_eq!(c.admit(&key(9)), Admit::Leave);
        assert_eq!(c.start_read(), key(8));
        // A short one: everything of the channel is in memory now.
        assert!(!c.read(Some(key(9)), false));
    }

    fn rooms(of: &[(&str, i64, usize)]) -> HashMap<String, (Cursor, usize)> {
        of.iter()
            .map(|(c, at, room)| (c.to_string(), (key(*at), *room)))
            .collect()
    }

    #[test]
    fn a_page_of_several_channels_holds_each_ones_rows_past_its_clip() {
        let rooms = rooms(&[("a", 1, 10), ("b", 4, 10)]);
        let rows = [("a", key(2)), ("b", key(3)), ("b", key(5)), ("a", key(6))];
        let (take, ends) = split_channels_page(&rooms, rows.iter().map(|(c, k)| (*c, k)), false);
        // b's row 3 is at or before its clip: held already.
        assert_eq!(take, [true, false, true, true]);
        assert_eq!(
            ends["a"],
            ChannelEnd {
                after: key(6),
                still_clipped: false
            }
        );
        assert_eq!(
            ends["b"],
            ChannelEnd {
                after: key(5),
                still_clipped: false
            }
        );
    }

    #[test]
    fn a_channel_out_of_room_stays_clipped_at_its_last_held_row() {
        let rooms = rooms(&[("a", 0, 2), ("b", 0, 10)]);
        let rows = [
            ("a", key(1)),
            ("a", key(2)),
            ("b", key(3)),
            ("a", key(4)),
            ("a", key(5)),
        ];
        let (take, ends) = split_channels_page(&rooms, rows.iter().map(|(c, k)| (*c, k)), false);
        assert_eq!(take, [true, true, true, false, false]);
        // Even after a short page: a's row 4 is in the database only.
        assert_eq!(
            ends["a"],
            ChannelEnd {
                after: key(2),
                still_clipped: true
            }
        );
        assert_eq!(
            ends["b"],
            ChannelEnd {
                after: key(3),
                still_clipped: false
            }
        );
    }

    #[test]
    fn after_a_full_page_a_channel_with_room_is_held_up_to_the_pages_end() {
        let rooms = rooms(&[("a", 0, 10), ("b", 0, 10), ("c", 9, 10)]);
        let rows = [("a", key(1)), ("b", key(2)), ("a", key(3))];
        let (take, ends) = split_channels_page(&rooms, rows.iter().map(|(c, k)| (*c, k)), true);
        assert_eq!(take, [true, true, true]);
        // b has nothing between its row 2 and the page's end at 3.
        assert_eq!(
            ends["a"],
            ChannelEnd {
                after: key(3),
                still_clipped: true
            }
        );
        assert_eq!(
            ends["b"],
            ChannelEnd {
                after: key(3),
                still_clipped: true
            }
        );
        // c's clip lies past the page: untouched, and it reads on from there.
        assert_eq!(
            ends["c"],
            ChannelEnd {
                after: key(9),
                still_clipped: true
            }
        );
    }

    #[test]
    fn an_empty_page_unclips_every_channel_asked_for() {
        let rooms = rooms(&[("a", 3, 10), ("b", 7, 0)]);
        let (take, ends) = split_channels_page(&rooms, [], false);
        assert!(take.is_empty());
        assert_eq!(
            ends["a"],
            ChannelEnd {
                after: key(3),
                still_clipped: false
            }
        );
        // No room, but nothing of it came back either: all of it is held.
        assert_eq!(
            ends["b"],
            ChannelEnd {
                after: key(7),
                still_clipped: false
            }
        );
    }

    #[test]
    fn a_failed_channel_read_keeps_the_clip_where_it_was() {
        let mut c = Clip::at(key(5));
        c.start_read();
        c.read_failed();
        assert!(!c.is_reading());
        assert_eq!(c.admit(&key(6)), Admit::Leave);
        assert_eq!(c.start_read(), key(5));
    }

    #[test]
    fn a_failed_page_keeps_the_backlog_and_its_cursor() {
        let mut w = Window::new();
        w.admit(&key(1), true);
        w.admit(&key(2), false);
        assert_eq!(w.start_page(), Some(key(1)));
        w.page_failed();
        assert!(w.has_backlog());
        assert!(w.wants_page(0, 1));
        assert_eq!(w.start_page(), Some(key(1)));
    }

    #[test]
    fn due_channels_are_read_five_hundred_at_a_time_longest_waiting_first() {
        let mut due = DueChannels::default();
        for i in 0..3_000 {
            due.insert(&format!("ch-{i}"));
        }
        // Marking one due again keeps its place.
        due.insert("ch-0");
        assert_eq!(due.len(), 3_000);
        let first = due.take(CHANNELS_PER_READ, |_| true);
        assert_eq!(first.len(), 500);
        assert_eq!(first[0], "ch-0");
        assert_eq!(first[499], "ch-499");
        // One read on and due again goes to the back, behind the 2,500.
        due.insert("ch-0");
        let mut reads = vec![first];
        while !due.is_empty() {
            let read = due.take(CHANNELS_PER_READ, |_| true);
            assert!(read.len() <= CHANNELS_PER_READ);
            reads.push(read);
        }
        assert_eq!(reads.len(), 7);
        assert_eq!(reads[5][0], "ch-2500");
        assert_eq!(reads[6], vec!["ch-0".to_owned()]);
        let all: HashSet<String> = reads.concat().into_iter().collect();
        assert_eq!(all.len(), 3_000);
    }

    #[test]
    fn a_channel_no_longer_due_is_dropped_and_does_not_count() {
        let mut due = DueChannels::default();
        for i in 0..1_200 {
            due.insert(&format!("ch-{i}"));
        }
        // Every other channel filled up again meanwhile.
        let odd = |c: &str| c.trim_start_matches("ch-").parse::<u32>().unwrap() % 2 == 1;
        let read = due.take(CHANNELS_PER_READ, odd);
        assert_eq!(read.len(), 500);
        assert!(read.iter().all(|c| odd(c)));
        assert_eq!(read[499], "ch-999");
        // The evens passed over are gone; what is left starts at ch-1000.
        assert_eq!(due.len(), 200);
        let rest = due.take(CHANNELS_PER_READ, |_| true);
        assert_eq!(rest[0], "ch-1000");
    }

    #[test]
    fn channels_put_back_are_read_first_in_their_order() {
        let mut due = DueChannels::default();
        for i in 0..1_000 {
            due.insert(&format!("ch-{i}"));
        }
        let read = due.take(CHANNELS_PER_READ, |_| true);
        due.insert("late");
        due.put_back(read);
        assert_eq!(due.len(), 1_001);
        let again = due.take(CHANNELS_PER_READ, |_| true);
        assert_eq!(again[0], "ch-0");
        assert_eq!(again[499], "ch-499");
        let rest = due.take(1_000, |_| true);
        assert_eq!(rest.last().map(String::as_str), Some("late"));
    }
}
