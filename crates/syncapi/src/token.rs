//! The sync token: opaque to clients, one position per stream.

use std::fmt;
use std::str::FromStr;

/// The streams a sync token carries a position for, in token order. Only
/// room events exist yet; the others are reserved so tokens keep their shape.
pub const STREAMS: [&str; 8] =
    ["events", "typing", "receipts", "presence", "account_data", "to_device", "invites", "device_lists"];

/// A position in every stream.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SyncToken {
    /// Position in the room event stream.
    pub events: u64,
    /// Positions in the other streams (see [`STREAMS`]), all 0 for now.
    pub others: [u64; 7],
}

impl SyncToken {
    /// A token at `events` in the event stream.
    pub fn at(events: u64) -> Self {
        Self { events, others: [0; 7] }
    }
}

impl fmt::Display for SyncToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "s{}", self.events)?;
        for other in self.others {
            write!(f, "_{other}")?;
        }
        Ok(())
    }
}

impl FromStr for SyncToken {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let rest = s.strip_prefix('s').ok_or("a sync token starts with 's'")?;
        let mut parts = rest.split('_');
        let events = parts.next().and_then(|p| p.parse().ok()).ok_or("bad event position")?;
        let mut others = [0; 7];
        for slot in &mut others {
            match parts.next() {
                Some(p) => *slot = p.parse().map_err(|_| "bad stream position")?,
                None => break,
            }
        }
        if parts.next().is_some() {
            return Err("too many streams".into());
        }
        Ok(Self { events, others })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_reject_garbage() {
        let token = SyncToken::at(42);
        assert_eq!(token.to_string(), "s42_0_0_0_0_0_0_0");
        assert_eq!(token.to_string().parse::<SyncToken>(), Ok(token));
        assert_eq!("s7".parse::<SyncToken>(), Ok(SyncToken::at(7)));
        for bad in ["", "42", "sx", "s1_x", "s1_0_0_0_0_0_0_0_0"] {
            assert!(bad.parse::<SyncToken>().is_err(), "{bad}");
        }
    }
}
