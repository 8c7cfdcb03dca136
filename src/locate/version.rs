//! Versions as the supervisor and the host OS write them, parsed leniently
//! (a `v` prefix, `+rev1`, pre-release tags, words around the number).

use semver::{BuildMetadata, Prerelease, Version};

/// Parse a version leniently: the first word that starts with a digit (or
/// `v` and a digit), so `7.22.0`, `v6.1.3`, `Resin OS 2.0.0+rev3` and
/// `balenaOS 2.88.4` all work. Missing minor and patch are zero (`v7` is
/// 7.0.0); a pre-release (`-beta.1`) and build metadata (`+rev3`) are kept
/// when semver accepts them and dropped otherwise; other suffixes after a
/// full major.minor.patch (`.rev1`, `_logstream`) are ignored. Anything else
/// is not a version: None, never a panic.
pub fn parse_version(text: &str) -> Option<Version> {
    text.split_whitespace().find_map(|word| {
        let word = word
            .strip_prefix(['v', 'V'])
            .filter(|rest| rest.starts_with(|c: char| c.is_ascii_digit()))
            .unwrap_or(word);
        word.starts_with(|c: char| c.is_ascii_digit())
            .then(|| parse_word(word))
            .flatten()
    })
}

/// `1`, `1.2`, `1.2.3`, then an optional suffix.
fn parse_word(word: &str) -> Option<Version> {
    let mut numbers = [0u64; 3];
    let mut count = 0;
    let mut rest = word;
    loop {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        if digits == 0 {
            return None;
        }
        numbers[count] = rest[..digits].parse().ok()?;
        count += 1;
        rest = &rest[digits..];
        match rest.strip_prefix('.') {
            Some(next) if count < 3 && next.starts_with(|c: char| c.is_ascii_digit()) => {
                rest = next;
            }
            _ => break,
        }
    }
    let mut version = Version::new(numbers[0], numbers[1], numbers[2]);
    if let Some(tag) = rest.strip_prefix('-') {
        let (pre, build) = tag.split_once('+').unwrap_or((tag, ""));
        version.pre = Prerelease::new(pre).unwrap_or(Prerelease::EMPTY);
        version.build = BuildMetadata::new(build).unwrap_or(BuildMetadata::EMPTY);
    } else if let Some(build) = rest.strip_prefix('+') {
        version.build = BuildMetadata::new(build).unwrap_or(BuildMetadata::EMPTY);
    } else if rest.starts_with('_') || (count == 3 && rest.starts_with('.')) {
        // `6.6.0_logstream`, `2.0.0.rev1`: a suffix semver has no place for.
    } else if !rest.is_empty() {
        // `7.x`, `2.1.x`, `7abc`: not a version.
        return None;
    }
    Some(version)
}

/// The release a version belongs to, for comparing against the table.
///
/// A pre-release counts as the release it precedes: `7.22.0-beta` is
/// treated as 7.22.0, not as "before 7.22.0" the way semver orders it. The
/// table's boundaries are where a supervisor release changed the lock
/// location, and a pre-release of that release is built from the code that
/// made the change, so it checks the new location. Build metadata (`+rev3`)
/// never matters. For the host OS only the major counts ("1.x"), as in the
/// supervisor's own test `/^Resin OS 1\./`.
pub(super) fn release(version: &Version) -> Version {
    Version::new(version.major, version.minor, version.patch)
}
