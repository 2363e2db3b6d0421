//! What live control commands change in serving: the fixed reply (see
//! [`command`](crate::command); the main endpoint's view of its TCP side
//! hands them here when it serves).

use super::Tcp;
use crate::command::Reply;
use crate::config::{MAX_REPLY_LEN, Mode};
use crate::reply::{Pattern, Replies, Responder};
use crate::turn::Turn;

impl Tcp {
    /// Makes `text` the fixed reply from now on. Replies already owed keep
    /// the old text: each connection turns what it owes into bytes first.
    pub(crate) fn set_reply(&mut self, text: Vec<u8>, t: &mut Turn<'_>) -> Reply {
        if text.is_empty() || text.len() > MAX_REPLY_LEN {
            return Err(format!(
                "reply: must be 1 to {MAX_REPLY_LEN} bytes, got {}",
                text.len()
            ));
        }
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
        for (_, slot) in self.conns.iter_mut() {
            slot.conn.keep_owed_bytes(old);
        }
        *t.replies = Replies::Fixed(Pattern::new(&text, self.mode == Mode::Line, self.max_owed));
        Ok(String::new())
    }
}
