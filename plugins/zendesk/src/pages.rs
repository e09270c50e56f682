//! Following Zendesk's pages. Cursor pagination (`page[size]`, max 100)
//! answers `meta{has_more, after_cursor}` and `links{next}`: follow
//! `links.next` while `meta.has_more`. Offset pagination answers
//! `next_page` (a URL, null on the last page). The reference does not say
//! which one every list uses (OAuth tokens, for one), so both are followed.

use keycycle_plugin_sdk::{Error, Value};

/// Items asked for per page: Zendesk's maximum for cursor pagination.
pub(crate) const PAGE_SIZE: &str = "100";

/// The host allows a call about 100 requests; stop well before that with a
/// clear message rather than being cut off.
pub(crate) const MAX_PAGES: usize = 80;

/// The URL of the page after `body`, or `None` when it was the last.
pub(crate) fn next(body: &Value) -> Option<String> {
    let nonempty = |v: &Value| {
        v.as_str()
            .filter(|s| !s.trim().is_empty())
            .map(str::to_owned)
    };
    match body.pointer("/meta/has_more") {
        // Cursor pagination: `has_more` decides, whatever `links.next` says.
        Some(Value::Bool(true)) => body.pointer("/links/next").and_then(nonempty),
        Some(_) => None,
        None => body.get("next_page").and_then(nonempty),
    }
}

/// The path and query of `url`, so that a next link is always sent to the
/// configured instance with its credentials: Zendesk may spell its links
/// with the `*.zendesk.com` host when the operator configured a host
/// mapping, and the credentials must not follow a link elsewhere.
pub(crate) fn local(url: &str) -> String {
    match url.split_once("://") {
        Some((_, rest)) => match rest.find('/') {
            Some(slash) => rest[slash..].to_owned(),
            None => "/".to_owned(),
        },
        None => url.to_owned(),
    }
}

/// Every item under `key` across the pages starting at `first`, fetching
/// each with `fetch`.
pub(crate) fn collect(
    first: &str,
    key: &str,
    mut fetch: impl FnMut(&str) -> Result<Value, Error>,
) -> Result<Vec<Value>, Error> {
    let mut items = Vec::new();
    let mut url = first.to_owned();
    let mut seen = Vec::new();
    for _ in 0..MAX_PAGES {
        let body = fetch(&url)?;
        match body.get(key) {
            Some(Value::Array(batch)) => items.extend(batch.iter().cloned()),
            Some(Value::Null) | None => {}
            Some(_) => {
                return Err(Error::provider(
                    200,
                    format!("Zendesk's answer for {} has no `{key}` list", local(&url)),
                ));
            }
        }
        seen.push(local(&url));
        match next(&body) {
            // A link back to a page already read would loop for ever.
            Some(link) if seen.contains(&local(&link)) => {
                return Err(Error::provider(
                    200,
                    format!(
                        "Zendesk's next page for {} points back to a page already read",
                        local(first)
                    ),
                ));
            }
            Some(link) => url = link,
            None => return Ok(items),
        }
    }
    Err(Error::invalid_input(format!(
        "{} has more than {MAX_PAGES} pages; the plugin stops there because a call may send \
         only so many requests; narrow the list with a filter",
        local(first)
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use keycycle_plugin_sdk::json;

    #[test]
    fn next_follows_links_while_has_more() {
        let more = json!({"meta": {"has_more": true, "after_cursor": "c2"},
                          "links": {"next": "https://acme.zendesk.com/api/v2/webhooks?page[after]=c2"}});
        assert_eq!(
            next(&more).as_deref(),
            Some("https://acme.zendesk.com/api/v2/webhooks?page[after]=c2")
        );
        let last = json!({"meta": {"has_more": false}, "links": {"next": "https://x/y"}});
        assert_eq!(next(&last), None);
        let broken = json!({"meta": {"has_more": true}, "links": {"next": null}});
        assert_eq!(next(&broken), None);
        assert_eq!(
            next(&json!({"next_page": "https://x/p?page=2"})).as_deref(),
            Some("https://x/p?page=2")
        );
        assert_eq!(next(&json!({"next_page": null})), None);
        assert_eq!(next(&json!({"webhooks": []})), None);
    }

    #[test]
    fn links_are_reduced_to_path_and_query() {
        assert_eq!(
            local("https://acme.zendesk.com/api/v2/webhooks?page%5Bafter%5D=x"),
            "/api/v2/webhooks?page%5Bafter%5D=x"
        );
        assert_eq!(local("/api/v2/webhooks"), "/api/v2/webhooks");
        assert_eq!(local("https://acme.zendesk.com"), "/");
    }

    #[test]
    fn collect_follows_every_cursor_page() {
        let pages = [
            json!({"webhooks": [{"id": "a"}, {"id": "b"}], "meta": {"has_more": true},
                   "links": {"next": "https://other.example/api/v2/webhooks?page[after]=2"}}),
            json!({"webhooks": [{"id": "c"}], "meta": {"has_more": true},
                   "links": {"next": "https://acme.zendesk.com/api/v2/webhooks?page[after]=3"}}),
            json!({"webhooks": [{"id": "d"}], "meta": {"has_more": false},
                   "links": {"next": null}}),
        ];
        let mut asked = Vec::new();
        let items = collect("/api/v2/webhooks?page[size]=100", "webhooks", |url| {
            asked.push(local(url));
            Ok(pages[asked.len() - 1].clone())
        })
        .unwrap();
        let ids: Vec<&str> = items.iter().map(|i| i["id"].as_str().unwrap()).collect();
        assert_eq!(ids, ["a", "b", "c", "d"]);
        assert_eq!(
            asked,
            [
                "/api/v2/webhooks?page[size]=100",
                "/api/v2/webhooks?page[after]=2",
                "/api/v2/webhooks?page[after]=3"
            ]
        );
    }

    #[test]
    fn collect_stops_on_loops_and_long_lists() {
        let looping =
            json!({"items": [1], "meta": {"has_more": true}, "links": {"next": "https://x/l"}});
        let e = collect("/l", "items", |_| Ok(looping.clone())).unwrap_err();
        assert!(e.to_string().contains("points back"), "{e}");
        let mut n = 0;
        let e = collect("/l", "items", |_| {
            n += 1;
            Ok(json!({"items": [n], "meta": {"has_more": true}, "links": {"next": format!("https://x/l?p={n}")}}))
        })
        .unwrap_err();
        assert!(matches!(e, Error::InvalidInput(_)), "{e}");
        assert_eq!(n, MAX_PAGES);
    }
}
