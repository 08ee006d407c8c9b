"""Self-contained HTML pages with inline SVG charts: no script, nothing fetched, readable offline and
from an alert's link. The quality report and the model reports draw with these."""

from __future__ import annotations

import html

STYLE = ("body{font-family:sans-serif;margin:2em;color:#222}section{margin-bottom:2em}"
         "svg{background:#fafafa;border:1px solid #ddd}td,th{padding:2px 8px;text-align:left}"
         ".critical{color:#b00}.warning{color:#a60}.ok{color:#070}")
COLOURS = ("#4a7bd0", "#d0704a", "#3a9a5b", "#8a5bb0", "#777777")


def page(title: str, sections: list[str]) -> str:
    return (f"<!doctype html><html lang=en><head><meta charset=utf-8><title>{html.escape(title)}</title>"
            f"<style>{STYLE}</style></head><body><h1>{html.escape(title)}</h1>{''.join(sections)}"
            "</body></html>")


def section(title: str, body: str) -> str:
    return f"<section><h2>{html.escape(title)}</h2>{body}</section>"


def table(header: list[str], rows: list[list]) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(v))}</td>" for v in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def lines(title: str, series: dict[str, tuple[list[float], list[float]]], x_label: str, y_label: str,
          width: int = 420, height: int = 320, diagonal: bool = False) -> str:
    """Line chart of each named (xs, ys) series, axes from the data's range (0..1 with `diagonal`, drawn)."""
    xs = [x for s in series.values() for x in s[0]] or [0.0]
    ys = [y for s in series.values() for y in s[1]] or [0.0]
    x0, x1 = (0.0, 1.0) if diagonal else (min(xs), max(xs) if max(xs) > min(xs) else min(xs) + 1)
    y0, y1 = (0.0, 1.0) if diagonal else (min(0.0, min(ys)), max(ys) or 1.0)
    left, bottom, top = 40, height - 30, 20

    def point(x: float, y: float) -> str:
        return (f"{left + (x - x0) / (x1 - x0) * (width - left - 10):.1f},"
                f"{bottom - (y - y0) / (y1 - y0) * (bottom - top):.1f}")

    paths = "".join(
        f'<polyline fill="none" stroke="{COLOURS[i % len(COLOURS)]}" stroke-width="2" '
        f'points="{" ".join(point(x, y) for x, y in zip(sx, sy, strict=True))}"/>'
        f'<text x="{width - 150}" y="{top + 14 * (i + 1)}" font-size="11" fill="{COLOURS[i % len(COLOURS)]}">'
        f"{html.escape(name)}</text>"
        for i, (name, (sx, sy)) in enumerate(series.items()))
    guide = (f'<polyline fill="none" stroke="#bbb" stroke-dasharray="4" '
             f'points="{point(0, 0)} {point(1, 1)}"/>' if diagonal else "")
    return (f'<svg role="img" aria-label="{html.escape(title)}" width="{width}" height="{height}">'
            f'<text x="4" y="14" font-size="12">{html.escape(title)}</text>{guide}{paths}'
            f'<text x="{left}" y="{height - 8}" font-size="10">{html.escape(x_label)} {x0:g} … {x1:g}</text>'
            f'<text x="4" y="{top + 10}" font-size="10" transform="rotate(90 4 {top + 10})">'
            f"{html.escape(y_label)} {y0:g} … {y1:g}</text></svg>")


def bars(title: str, labels: list[str], values: list[float | None], width: int, height: int) -> str:
    """Vertical bars, a missing value left as a gap; the title and the largest value on top."""
    top = max((v for v in values if v is not None), default=0) or 1
    step = width / max(len(values), 1)
    span = height - 40
    bars = "".join(
        f'<rect x="{i * step + 1:.1f}" y="{height - 20 - (v / top) * span:.1f}" width="{step - 2:.1f}" '
        f'height="{(v / top) * span:.1f}" fill="#4a7bd0"><title>{html.escape(label)}: {v}</title></rect>'
        for i, (label, v) in enumerate(zip(labels, values, strict=True)) if v is not None)
    return (f'<svg role="img" aria-label="{html.escape(title)}" width="{width}" height="{height}">'
            f'<text x="4" y="14" font-size="12">{html.escape(title)} (max {top:g})</text>{bars}'
            f'<text x="4" y="{height - 4}" font-size="10">{html.escape(labels[0])}</text>'
            f'<text x="{width - 40}" y="{height - 4}" font-size="10">{html.escape(labels[-1])}</text></svg>')


def hbars(name: str, labels: list[str], values: list[float], fmt: str) -> str:
    """Horizontal bars, one row per label, scaled to the largest value."""
    row, label_width, width = 18, 380, 760
    top = max(values) or 1
    rows = "".join(
        f'<text x="4" y="{i * row + 13}" font-size="11">{html.escape(label)}</text>'
        f'<rect x="{label_width}" y="{i * row + 3}" width="{(v / top) * (width - label_width - 70):.1f}" '
        f'height="{row - 6}" fill="#d0704a"/>'
        f'<text x="{width - 64}" y="{i * row + 13}" font-size="11">{fmt.format(v)}</text>'
        for i, (label, v) in enumerate(zip(labels, values, strict=True)))
    return (f'<svg role="img" aria-label="{name}" width="{width}" height="{len(labels) * row + 4}">'
            f"{rows}</svg>")
