"""The report's CSS, every rule scoped under one root selector.

No rule targets ``body``, ``html`` or a bare element, so the same styles work in the
standalone report (root ``.ehrlens-report``) and inside a notebook cell (root
``#ehrlens-<id>``) without restyling anything around them.

Example:
    >>> css = stylesheet("#ehrlens-1a2b")
    >>> css.splitlines()[0].startswith("#ehrlens-1a2b{")
    True
"""

from __future__ import annotations

#: ``(selectors relative to the root, declarations)``; ``&`` is the root itself.
RULES: tuple[tuple[str, str], ...] = (
    (
        "&",
        "font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;color:#1d2330;"
        "background:#f6f7f9;line-height:1.35;text-align:left",
    ),
    (".top", "background:#1f3a5f;color:#fff;padding:16px 28px"),
    (".top h1", "margin:0;font-size:22px;color:#fff"),
    (".top p", "margin:4px 0 0;opacity:.9;font-size:13px"),
    (".card", "display:flex;flex-wrap:wrap;gap:6px 22px;margin-top:10px;font-size:13px"),
    (".card div", "white-space:nowrap"),
    (".card b", "font-weight:600;opacity:.75;margin-right:4px"),
    (".content", "padding:18px 28px;max-width:1500px"),
    (
        "section",
        "background:#fff;border:1px solid #dde1e7;border-radius:8px;"
        "padding:14px 18px;margin:0 0 18px",
    ),
    ("h2", "font-size:17px;margin:0 0 10px;color:#1d2330"),
    ("h3", "font-size:14px;margin:12px 0 6px;color:#34405a"),
    ("table", "border-collapse:collapse;font-size:12.5px"),
    ("td,th", "padding:3px 8px;text-align:left;border-bottom:1px solid #eef0f3"),
    ("th", "color:#5a6478;font-weight:600"),
    ("td.num", "text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap"),
    (".methods", "display:flex;gap:18px;flex-wrap:wrap"),
    (".method", "flex:1 1 440px;min-width:360px"),
    (".timeline", "overflow-x:auto;padding-bottom:6px"),
    (".feature", "display:flex;align-items:flex-start;gap:6px;margin:6px 0"),
    (".visits", "display:flex;gap:4px 2px;align-items:flex-start"),  # visits stay in line
    (".visits.flat", "flex-wrap:wrap"),
    (
        ".fname",
        "width:92px;flex:none;font-size:12px;color:#5a6478;padding-top:3px;overflow-wrap:anywhere",
    ),
    (
        ".visit",
        "flex:none;border-left:2px solid #dde1e7;padding:0 3px;width:112px;box-sizing:border-box",
    ),
    (".visit.flat", "width:auto;max-width:100%;display:flex;flex-wrap:wrap;gap:2px"),
    (
        ".vlabel",
        "font-size:10px;color:#6b7488;white-space:nowrap;overflow:hidden;text-overflow:ellipsis",
    ),
    (
        ".code",
        "display:block;font:11.5px ui-monospace,Menlo,Consolas,monospace;"
        "padding:1px 4px;margin:1px 0;border-radius:3px;border:1px solid #e3e6eb;"
        "overflow:hidden;overflow-wrap:anywhere",
    ),
    (
        ".vscore",
        "font-size:10.5px;padding:1px 4px;margin:1px 0 2px;border-radius:3px;white-space:nowrap",
    ),
    (".code .desc", "display:block;font:10px system-ui,sans-serif;opacity:.85;white-space:normal"),
    (".visit.flat .code", "display:inline-block;max-width:150px"),
    (
        ".pill",
        "display:inline-block;padding:2px 8px;border-radius:10px;background:#eef2f8;"
        "font-size:12.5px;margin-right:6px",
    ),
    (".index", "display:flex;flex-wrap:wrap;gap:4px 12px;font-size:12.5px"),
    (".index h2", "flex-basis:100%"),
    (".index a", "white-space:nowrap"),
    (".note", "font-size:12px;color:#5a6478;margin:4px 0 8px"),
    (".legend", "display:flex;flex-wrap:wrap;gap:8px 28px"),
    (
        ".scale",
        "display:grid;grid-template-columns:auto 180px;gap:2px 10px;"
        "align-items:center;font-size:12px",
    ),
    (".scale .sname", "font-weight:600;grid-row:span 2"),
    (".scale .bar", "display:block;height:12px;border:1px solid #c9ced8;border-radius:2px"),
    (".scale .ticks", "display:flex;justify-content:space-between;color:#5a6478;font-size:11px"),
    (".scale .skind", "grid-column:2;color:#8a93a6;font-size:10.5px"),
    (".controls", "display:flex;flex-wrap:wrap;gap:10px 22px;align-items:center;font-size:13px"),
    (".controls label", "white-space:nowrap"),
    (".controls input[type=search]", "width:200px"),
    (".better", "display:block;color:#6b7488;font-weight:400;font-size:11px"),
    (".hidden", "display:none !important"),
)


def stylesheet(root: str) -> str:
    """The report's CSS with every selector under ``root`` (e.g. ``".ehrlens-report"``).

    Example:
        >>> "body" in stylesheet(".ehrlens-report")
        False
    """
    lines = []
    for selectors, declarations in RULES:
        scoped = ",".join(_scope(root, s.strip()) for s in selectors.split(","))
        lines.append(f"{scoped}{{{declarations}}}")
    return "\n".join(lines)


def _scope(root: str, selector: str) -> str:
    if selector.startswith("&"):
        return root + selector[1:]
    return f"{root} {selector}"
