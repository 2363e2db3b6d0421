//! What scripts change on the TCP side: the greeting every new connection
//! gets first, pushes to every open connection, and the switch from the
//! fixed reply to a responder that rules and `match=` faults need.

use super::{Phase, Tcp};
use crate::config::Mode;
use crate::reply::Replies;
use crate::stats::add;
use crate::turn::Turn;

impl Tcp {
    /// Makes every message reach the responder whole: the fixed reply
    /// becomes a responder (with the same text), and what each connection
    /// owes under the old pattern stays owed, as bytes. A line already
    /// half read when this happens is cut: the fixed reply kept none of
    /// its bytes, so it is answered as before, by no rule and picked by no
    /// `match=`; the lines after it are matched whole.
    pub(crate) fn switch_to_responder(&mut self, replies: &mut Replies) {
        if let Some(old) = replies.make_responder() {
            for key in self.conns.keys() {
                self.with_conn(key, |conn| {
                    conn.keep_owed_bytes(&old);
                    conn.cut_open_line();
                });
            }
        }
    }

    /// The greeting for connections accepted from now on.
    pub(crate) fn greet_with(&mut self, greeting: Option<Vec<u8>>) {
        self.greeting = greeting;
    }

    /// Sends `text` (and `\n` in line mode) to every open data connection
    /// now, behind what each already owes. A connection closing is
    /// skipped; one whose backlog is at `max_owed` already does not get it
    /// (counted as dropped), so a client that never reads cannot make
    /// pushes pile up.
    pub(crate) fn push_to_all(&mut self, mut text: Vec<u8>, t: &mut Turn<'_>) {
        if self.mode == Mode::Line {
            text.push(b'\n');
        }
        if text.is_empty() {
            return;
        }
        let journal = t.journal.is_some();
        let max_owed = self.max_owed;
        for key in self.conns.keys() {
            let sent = self.with_conn(key, |conn| {
                if !matches!(conn.phase(), Phase::Open { .. }) {
                    return None;
                }
                if conn.backlog() >= max_owed {
                    return Some(false);
                }
                conn.send_unasked(text.clone(), journal);
                Some(true)
            });
            match sent.flatten() {
                Some(true) => self.drive(key, false, t),
                Some(false) => add(&t.counters.replies_dropped, 1),
                None => {}
            }
        }
    }

    /// A new connection's first bytes: the greeting, if any.
    pub(super) fn greet(&self, conn: &mut super::Connection, t: &Turn<'_>) {
        if let Some(greeting) = &self.greeting {
            conn.send_unasked(greeting.clone(), t.journal.is_some());
        }
    }
}
