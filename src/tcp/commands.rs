//! What live control commands change in serving: the fixed reply (see
//! [`command`](crate::command); the main endpoint's view of its TCP side
//! hands them here when it serves).

use super::Tcp;
use crate::command::Reply;
use crate::config::Mode;
use crate::reply::{Pattern, Replies, Responder};
use crate::turn::Turn;

impl Tcp {
    /// Makes `text` the fixed reply from now on. Replies already owed keep
    /// the old text: each connection turns what it owes into bytes first.
    pub(crate) fn set_reply(&mut self, text: Vec<u8>, t: &mut Turn<'_>) -> Reply {
        crate::vocab::check_reply_len("reply", &text, false)?;
        let old = match t.replies {
            Replies::Fixed(old) => old,
            // A responder's replies are bytes as soon as they are owed.
            Replies::Custom { responder, .. } => {
                return match responder.set_reply_text(&text) {
                    true => Ok(String::new()),
                    false => {
                        Err("replies come from a responder with no reply text to change".into())
                    }
                };
            }
        };
        for key in self.conns.keys() {
            self.with_conn(key, |conn| conn.keep_owed_bytes(old));
        }
        *t.replies = Replies::Fixed(Pattern::new(&text, self.mode == Mode::Line, self.max_owed));
        Ok(String::new())
    }
}
