//! Which values an agent may set, and which status moves are allowed, in one
//! explicit table: the seed's pipeline new → open → quoted → booked →
//! converted, archived from anywhere, and back to open from archived.

use crate::Error;

/// Every status a conversation can have, and where it may go from there.
/// Staying where it is is always allowed (and changes nothing).
pub(crate) const TRANSITIONS: &[(&str, &[&str])] = &[
    ("new", &["open", "quoted", "booked", "archived"]),
    ("open", &["quoted", "booked", "converted", "archived"]),
    ("quoted", &["open", "booked", "converted", "archived"]),
    ("booked", &["open", "quoted", "converted", "archived"]),
    ("converted", &["archived"]),
    ("archived", &["open"]),
];

pub(crate) const LEAD_STATUSES: &[&str] = &["qualified", "interested", "converted"];
pub(crate) const SOURCE_TYPES: &[&str] =
    &["review_response", "story_dm", "listing_inquiry", "direct"];
pub(crate) const ROI_KINDS: &[&str] = &["review", "listing", "ad", "post"];

/// `value` if it is one of `allowed`, else an error naming `field`.
pub(crate) fn one_of<'a>(field: &str, value: &'a str, allowed: &[&str]) -> Result<&'a str, Error> {
    if allowed.contains(&value) {
        Ok(value)
    } else {
        Err(Error::invalid(format!(
            "{field} must be one of {}",
            allowed.join(", ")
        )))
    }
}

pub(crate) fn status(field: &str, value: &str) -> Result<(), Error> {
    let all: Vec<&str> = TRANSITIONS.iter().map(|(s, _)| *s).collect();
    one_of(field, value, &all).map(|_| ())
}

/// Whether a thread in `from` may move to `to`; the error names both and
/// what `from` allows.
pub(crate) fn check_move(from: &str, to: &str) -> Result<(), Error> {
    status("status", to)?;
    if from == to {
        return Ok(());
    }
    let allowed = TRANSITIONS
        .iter()
        .find(|(s, _)| *s == from)
        .map_or(&[][..], |(_, to)| *to);
    if allowed.contains(&to) {
        Ok(())
    } else {
        Err(Error::invalid(format!(
            "status cannot move from {from} to {to} (from {from}: {})",
            allowed.join(", ")
        )))
    }
}

/// A tag as stored: 1..=50 characters, no control characters.
pub(crate) fn tag(value: &str) -> Result<(), Error> {
    let n = value.chars().count();
    if (1..=50).contains(&n) && !value.chars().any(char::is_control) {
        Ok(())
    } else {
        Err(Error::invalid(
            "tags must be 1..=50 characters without control characters",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_allows_what_it_lists_and_nothing_else() {
        assert!(check_move("new", "open").is_ok());
        assert!(check_move("archived", "open").is_ok());
        assert!(check_move("converted", "converted").is_ok());
        let e = check_move("converted", "new").expect_err("backwards");
        assert!(e.to_string().contains("from converted to new"), "{e}");
        assert!(check_move("new", "won").is_err());
        // Every target named is itself a status with a row.
        for (_, to) in TRANSITIONS {
            for t in *to {
                assert!(TRANSITIONS.iter().any(|(s, _)| s == t), "{t}");
            }
        }
    }
}
