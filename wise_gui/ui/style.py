"""Colours and small formatting helpers shared by the panels, so a status looks the same everywhere."""

from __future__ import annotations

from PySide6.QtGui import QColor

from wise_gui.store.schema import EditStatus

# (text colour, background) per edit status; soft backgrounds keep the text readable.
STATUS_COLOURS: dict[str, tuple[str, str]] = {
    EditStatus.DRAFT: ("#4b5563", "#f3f4f6"),
    EditStatus.QUEUED: ("#1d4ed8", "#dbeafe"),
    EditStatus.APPLYING: ("#92400e", "#fde68a"),
    EditStatus.APPLIED: ("#166534", "#dcfce7"),
    EditStatus.FAILED: ("#991b1b", "#fee2e2"),
    EditStatus.ROLLED_BACK: ("#6b21a8", "#f3e8ff"),
}
NEW_ROW_STATUS = "new"  # a row being typed in, not saved yet
STATUS_LABELS = {
    EditStatus.DRAFT: "draft",
    EditStatus.QUEUED: "queued",
    EditStatus.APPLYING: "applying…",
    EditStatus.APPLIED: "applied",
    EditStatus.FAILED: "failed",
    EditStatus.ROLLED_BACK: "rolled back",
    NEW_ROW_STATUS: "new",
}

# Plot colours: one per kind of prompt, reused by the answers panel and the probe.
EDIT_COLOUR = "#2563eb"
PARAPHRASE_COLOUR = "#0891b2"
LOCALITY_COLOUR = "#ea580c"
UNRELATED_COLOUR = "#6b7280"
THRESHOLD_COLOUR = "#dc2626"
CURRENT_COLOUR = "#f59e0b"
MARGIN_COLOUR = "#9333ea"
MERGED_COLOUR = "#7c3aed"
SAVED_COLOUR = "#a78bfa"
SHARD_COLOUR = "#2563eb"
PASS_COLOUR = "#166534"
PASS_BACKGROUND = "#dcfce7"
FAIL_COLOUR = "#991b1b"
FAIL_BACKGROUND = "#fee2e2"
CHANGED_BACKGROUND = "#fef9c3"
SIDE_MEMORY_COLOUR = "#1d4ed8"
MAIN_MEMORY_COLOUR = "#374151"


def status_colours(status: str) -> tuple[QColor, QColor]:
    foreground, background = STATUS_COLOURS.get(status, ("#6b7280", "#ffffff"))
    return QColor(foreground), QColor(background)


def format_score(value: float | None, digits: int = 3) -> str:
    if value is None or value != value:  # None or NaN
        return "–"
    return f"{value:.{digits}g}"


def format_fraction(value: float | None) -> str:
    return "–" if value is None else f"{value:.0%}"


def format_duration(seconds: float | None) -> str:
    if seconds is None or seconds != seconds or seconds < 0:
        return "–"
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds} s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {seconds:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def format_parameter_count(n: int) -> str:
    for unit, size in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= size:
            return f"{n / size:.1f}{unit} parameters"
    return f"{n} parameters"


def format_bytes(n: float) -> str:
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{int(n)} bytes"


def shorten(text: str, limit: int) -> str:
    """One line of at most `limit` characters, cut with an ellipsis."""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"
