//! Offset pagination as GitLab does it (`doc/api/rest/_index.md`,
//! "Pagination"): `page` and `per_page` (default 20, at most 100), and the
//! next page number in `X-Next-Page`, empty on the last page.

/// Items asked for per page: GitLab's maximum, so that long lists take
/// few requests.
pub(crate) const PER_PAGE: usize = 100;

/// The host allows a call about 100 requests; stop well before that with a
/// clear message rather than being cut off.
pub(crate) const MAX_PAGES: u32 = 80;

/// The page after `current`, or `None` when `current` was the last.
///
/// `X-Next-Page` decides when present. GitLab leaves out `X-Total` and
/// `X-Total-Pages` for lists over 10,000 items but keeps `X-Next-Page`;
/// should a proxy strip or garble it, a full page means there may be more,
/// and a short page means there is not.
pub(crate) fn next_page(
    x_next_page: Option<&str>,
    current: u32,
    items_on_page: usize,
    per_page: usize,
) -> Option<u32> {
    let by_count = || {
        (items_on_page >= per_page && items_on_page > 0)
            .then(|| current.checked_add(1))
            .flatten()
    };
    match x_next_page.map(str::trim) {
        Some("") => None,
        Some(text) => match text.parse::<u32>() {
            // A next page that does not move forward would loop for ever.
            Ok(next) => (next > current).then_some(next),
            Err(_) => by_count(),
        },
        None => by_count(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn follows_x_next_page() {
        assert_eq!(next_page(Some("2"), 1, 100, 100), Some(2));
        assert_eq!(next_page(Some(" 3 "), 2, 100, 100), Some(3));
        assert_eq!(next_page(Some(""), 3, 7, 100), None);
    }

    #[test]
    fn refuses_pages_that_do_not_advance() {
        assert_eq!(next_page(Some("1"), 1, 100, 100), None);
        assert_eq!(next_page(Some("0"), 5, 100, 100), None);
    }

    #[test]
    fn without_the_header_a_full_page_means_more() {
        assert_eq!(next_page(None, 1, 100, 100), Some(2));
        assert_eq!(next_page(None, 4, 99, 100), None);
        assert_eq!(next_page(None, 1, 0, 100), None);
        assert_eq!(next_page(Some("two"), 1, 100, 100), Some(2));
        assert_eq!(next_page(Some("two"), 1, 3, 100), None);
    }
}
