//! Which way relayed bytes travel: the vocabulary of a fault's `dir=`
//! selector, below the faults, the handlers and the relay that all use it.

use std::fmt;
use std::str::FromStr;

/// Which way relayed bytes travel, as a fault's `dir=` selector picks it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub enum Direction {
    /// From the upstream to the client: the replies. The default, so that
    /// a fault acts on what the client sees, as it does without a relay.
    #[default]
    Down,
    /// From the client to the upstream: the requests.
    Up,
}

impl Direction {
    /// Its name in a spec: `down` or `up`.
    pub fn name(self) -> &'static str {
        match self {
            Direction::Down => "down",
            Direction::Up => "up",
        }
    }
}

impl FromStr for Direction {
    type Err = String;

    fn from_str(s: &str) -> Result<Direction, String> {
        match s {
            "down" => Ok(Direction::Down),
            "up" => Ok(Direction::Up),
            _ => Err(format!("dir: '{s}' is not down or up")),
        }
    }
}

impl fmt::Display for Direction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directions_parse() {
        assert_eq!("up".parse(), Ok(Direction::Up));
        assert_eq!("down".parse(), Ok(Direction::Down));
        assert!("sideways".parse::<Direction>().is_err());
        assert_eq!(Direction::default(), Direction::Down);
    }
}
