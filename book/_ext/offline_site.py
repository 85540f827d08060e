"""A Sphinx extension of the course site: every page works with no network.

Jupyter Book always loads sphinx-thebe, which writes the URL of thebe's bundle on a CDN into every page (loaded
only when a reader launches a live kernel, which this site does not offer): its two scripts are removed here. Any
other script or stylesheet a page would load from another host is reported as a warning, an error under ``-W``.
"""

from __future__ import annotations

import re

REMOTE = re.compile(r"^(https?:)?//", re.IGNORECASE)


def _is_thebe(asset) -> bool:
    return (str(asset.filename or "").endswith("sphinx-thebe.js")
            or "THEBE_JS_URL" in asset.attributes.get("body", ""))


def _offline_assets(app, pagename, templatename, context, doctree):
    from sphinx.util import logging

    logger = logging.getLogger(__name__)
    if "script_files" in context:
        context["script_files"] = [s for s in context["script_files"] if not _is_thebe(s)]
    for key in ("script_files", "css_files"):
        for asset in context.get(key, []):
            if REMOTE.match(str(asset.filename or "")):
                logger.warning("%s: %s loads %s from the network; the site must work offline", pagename, key,
                               asset.filename)


def setup(app):
    app.connect("html-page-context", _offline_assets, priority=900)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
