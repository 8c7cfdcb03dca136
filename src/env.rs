//! The environment as the supervisor sets it for a service: each `BALENA_`
//! variable wins over its `RESIN_` twin (older supervisors set only the
//! latter), and a variable set to the empty string counts as unset.

use std::ffi::OsStr;

/// The first of `names` (the `BALENA_` name, then its `RESIN_` twin) that
/// `lookup` finds set and not empty, with the name it was found under.
pub fn first_set<V: AsRef<OsStr>>(
    names: [&'static str; 2],
    lookup: impl Fn(&str) -> Option<V>,
) -> Option<(&'static str, V)> {
    names.into_iter().find_map(|name| {
        lookup(name)
            .filter(|value| !value.as_ref().is_empty())
            .map(|value| (name, value))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn balena_wins_and_empty_is_unset() {
        let names = ["BALENA_X", "RESIN_X"];
        let env = |set: &'static [(&'static str, &'static str)]| {
            move |name: &str| set.iter().find(|(n, _)| *n == name).map(|(_, v)| *v)
        };
        assert_eq!(
            first_set(names, env(&[("BALENA_X", "b"), ("RESIN_X", "r")])),
            Some(("BALENA_X", "b"))
        );
        assert_eq!(
            first_set(names, env(&[("BALENA_X", ""), ("RESIN_X", "r")])),
            Some(("RESIN_X", "r"))
        );
        assert_eq!(first_set(names, env(&[("RESIN_X", "")])), None);
        assert_eq!(first_set(names, env(&[])), None);
    }
}
