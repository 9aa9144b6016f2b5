"""Following the core's ``@odata.nextLink`` safely.

Partner Center publishes next links such as
``http://api.partner.microsoft.com/v1.0/referrals?$skiptoken=…``: plain http, and a path
without ``/engagements``. A client that follows them verbatim sends its bearer token over
http; one that insists on its own base path refuses them after the first page. So:

- a relative link is resolved on the configured base;
- an absolute link must name the configured API host (and its port, when it names one),
  and is then rebased onto the configured origin: its scheme and port become the
  configured ones (http becomes https), its path and query are kept exactly as sent;
- a link seen before in the same listing, or one more page than the cap, stops the listing.
"""

from __future__ import annotations

import hashlib

import httpx

from connector.errors import CoreError

#: pages one listing may follow (100 referrals a page: a million referrals)
DEFAULT_MAX_PAGES = 10_000


def next_page_url(next_link: str, base: httpx.URL, what: str) -> httpx.URL:
    """The URL to request for ``next_link``, or a permanent ``CoreError`` saying why not.

    ``base`` is the configured API base (``https://api.partner.microsoft.com/v1.0/engagements/``).
    """
    try:
        link = httpx.URL(next_link)
    except httpx.InvalidURL:
        raise CoreError(
            f"{what}: the deal core sent a next page link that is not a URL; "
            "report this to the core's operators",
            code="bad_next_link",
            transient=False,
        ) from None
    if not link.is_absolute_url:
        return base.join(link)
    if link.scheme not in ("http", "https") or link.host.lower() != base.host.lower():
        # Never send the bearer token to a host the configuration does not name.
        raise CoreError(
            f"{what}: the next page link points to another host ({link.host or link.scheme}); "
            "refusing to follow it (core.base_url names the API host)",
            code="foreign_next_link",
            transient=False,
        )
    if link.port is not None and link.port != base.port:
        raise CoreError(
            f"{what}: the next page link names port {link.port}, not the configured one; "
            "refusing to follow it (core.base_url names the API origin)",
            code="foreign_next_link",
            transient=False,
        )
    # The configured scheme and port, the link's own path and query (percent-encoding kept).
    return base.copy_with(raw_path=link.raw_path)


class PageGuard:
    """Stops a listing that loops (the same link twice) or that never ends (the page cap)."""

    def __init__(self, what: str, max_pages: int = DEFAULT_MAX_PAGES) -> None:
        self._what = what
        self._max_pages = max_pages
        self._pages = 1  # the first page, requested without a link
        self._seen: set[bytes] = set()

    def check(self, url: httpx.URL) -> None:
        """Call before requesting the page at ``url``; raises to stop the listing."""
        key = hashlib.sha256(str(url).encode()).digest()  # skiptokens can be kilobytes
        if key in self._seen:
            raise CoreError(
                f"{self._what}: the deal core sent the same next page link twice; "
                "stopping instead of looping (report this to the core's operators)",
                code="paging_loop",
                transient=False,
            )
        self._seen.add(key)
        self._pages += 1
        if self._pages > self._max_pages:
            raise CoreError(
                f"{self._what}: more than {self._max_pages} pages; stopping the listing "
                "(raise core.max_pages if the core really holds that many referrals)",
                code="paging_cap",
                transient=False,
            )
