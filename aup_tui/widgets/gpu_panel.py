"""The GPU panel: one row per GPU — utilisation and memory bars, a sparkline, temperature, power and
our jobs on it — for the local GPUs (a `GPUSnapshot`) and, grouped by node, the GPUs of the SSH
nodes (`NodeStatus.gpus`).

It renders the state it is given (`panel.snapshot = snap`, `panel.nodes = statuses`) and never
samples anything itself. Columns are dropped, least useful first, when the panel is narrow; in a
one-line slot (the dashboard below 140 columns) it shows a one-line summary.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from aup_tui_backends.monitors.gpu import GPUSnapshot, GPUStatus
from aup_tui_backends.monitors.nodes import NodeStatus
from rich.text import Text
from textual.geometry import Size
from textual.reactive import reactive
from textual.widget import Widget

from .colors import on_theme_change, state_color, theme_colors

__all__ = ["GPUPanel", "bar", "sparkline", "short_gpu_name", "gpu_rows", "gpu_summary"]

GIB = 1 << 30
SPARKS = "▁▂▃▄▅▆▇█"
NOT_STARTED = "GPU monitor: not started yet"


def bar(fraction: float | None, width: int) -> tuple[str, str]:
    """(filled, empty) parts of a bar of ``width`` cells."""
    if width <= 0:
        return "", ""
    if fraction is None:
        return "", "·" * width
    filled = max(0, min(width, round(max(0.0, min(1.0, fraction)) * width)))
    if fraction > 0 and filled == 0:
        filled = 1  # a busy GPU never looks idle
    return "█" * filled, "░" * (width - filled)


def sparkline(values: Iterable[float], width: int) -> str:
    """The last ``width`` utilisation values (0–100) as block characters, right-aligned."""
    vals = list(values)[-width:] if width > 0 else []
    chars = [SPARKS[max(0, min(len(SPARKS) - 1, int(v / 100 * (len(SPARKS) - 1) + 0.5)))] for v in vals]
    return " " * (width - len(chars)) + "".join(chars)


def short_gpu_name(name: str) -> str:
    for prefix in ("NVIDIA ", "GeForce ", "Tesla "):
        if name.startswith(prefix):
            name = name[len(prefix) :]
    return name


def _gib(value: int | None) -> str:
    if value is None:
        return "?"
    g = value / GIB
    return f"{g:.1f}" if g < 100 else f"{g:.0f}"


def _mem_label(gpu: GPUStatus) -> str:
    total = "?" if gpu.memory_total is None else f"{gpu.memory_total / GIB:.0f}"
    return f"{_gib(gpu.memory_used)}/{total}G"


def _level(colors: Mapping[str, str], fraction: float | None) -> str:
    if fraction is None:
        return colors.get("status-queued", "grey50")
    if fraction >= 0.9:
        return colors.get("status-failed", "red")
    if fraction >= 0.6:
        return colors.get("status-waiting", "yellow")
    return colors.get("status-finished", "green")


def _jobs_text(gpu: GPUStatus) -> str:
    parts = []
    if gpu.jobs:
        parts.append("job " + ",".join(str(j) for j in gpu.jobs))
    others = sum(1 for p in gpu.processes if p.jid is None)
    if others:
        parts.append(f"+{others} proc")
    return " ".join(parts)


# -- columns: (key, width) chosen for the available width ---------------------------------------

#: display order
ORDER = ("idx", "name", "util", "mem", "spark", "temp", "power", "jobs")
#: the order columns are kept in when space is short (first = most important)
PRIORITY = ("idx", "util", "mem", "jobs", "temp", "spark", "name", "power")


def choose_columns(width: int, gpus: list[GPUStatus]) -> dict[str, int]:
    """Column → width that fits ``width`` cells (columns separated by one space)."""
    name_w = min(18, max([len(short_gpu_name(g.name)) for g in gpus] + [4]))
    jobs_w = max([len(_jobs_text(g)) for g in gpus] + [0])
    wanted = {
        "idx": 2,
        "name": name_w,
        "util": 13,
        "mem": 18,
        "spark": 12,
        "temp": 4,
        "power": 8,
        "jobs": jobs_w,
    }
    chosen: dict[str, int] = {}
    used = 0
    for key in PRIORITY:
        w = wanted[key]
        if w <= 0:
            continue
        need = w + (1 if chosen else 0)
        if used + need <= width:
            chosen[key] = w
            used += need
        elif key in ("util", "mem") and used + 1 + (7 if key == "util" else 10) <= width:
            # a shorter bar rather than none
            w = width - used - 1
            chosen[key] = w
            used += w + 1
    # room left over: longer sparkline and bars
    spare = width - used
    if "spark" in chosen and spare > 0:
        extra = min(spare, 12)
        chosen["spark"] += extra
        spare -= extra
    return {k: chosen[k] for k in ORDER if k in chosen}


def gpu_row(gpu: GPUStatus, cols: Mapping[str, int], colors: Mapping[str, str], width: int) -> Text:
    """One GPU as one line of ``cols``."""
    muted = colors.get("status-queued", "grey50")
    text = Text(no_wrap=True, overflow="ellipsis")

    def sep() -> None:
        if text.plain:
            text.append(" ")

    for key, w in cols.items():
        if gpu.lost and key not in ("idx", "name"):
            continue
        sep()
        if key == "idx":
            text.append(f"{gpu.index:>{w}}", style="bold")
        elif key == "name":
            text.append(f"{short_gpu_name(gpu.name)[:w]:<{w}}")
        elif key == "util":
            u = gpu.utilization
            bw = w - 5
            filled, empty = bar(None if u is None else u / 100, bw)
            color = _level(colors, None if u is None else u / 100)
            text.append(filled, style=color)
            text.append(empty, style=muted)
            text.append(f"{'?' if u is None else f'{u:.0f}':>4}%", style=color)
        elif key == "mem":
            frac = gpu.memory_fraction
            label = _mem_label(gpu)
            bw = max(2, w - 10)
            filled, empty = bar(frac, bw)
            color = _level(colors, frac)
            text.append(filled, style=color)
            text.append(empty, style=muted)
            text.append(f" {label:>{w - bw - 1}}")
        elif key == "spark":
            text.append(sparkline(gpu.history, w), style=colors.get("primary", "cyan"))
        elif key == "temp":
            t = gpu.temperature
            hot: str | None = (
                muted
                if t is None
                else colors.get("status-failed")
                if t >= 85
                else colors.get("status-waiting")
                if t >= 75
                else None
            )
            text.append(f"{'?' if t is None else f'{t:.0f}':>{w - 2}}°C", style=hot or "")
        elif key == "power":
            d, lim = gpu.power_draw, gpu.power_limit
            label = "?" if d is None else f"{d:.0f}/{lim:.0f}W" if lim else f"{d:.0f}W"
            text.append(f"{label:>{w}}", style="" if d is not None else muted)
        elif key == "jobs":
            text.append(f"{_jobs_text(gpu):<{w}}", style=colors.get("accent", "yellow"))
    if gpu.lost:
        sep()
        text.append("LOST", style=f"bold {colors.get('status-failed', 'red')}")
        if gpu.reason:
            text.append(f": {gpu.reason}", style=colors.get("status-failed", "red"))
        if gpu.jobs:
            text.append(f" ({_jobs_text(gpu)})", style=colors.get("accent", "yellow"))
    text.truncate(width, overflow="ellipsis")
    return text


def _remote_groups(nodes: Mapping[str, NodeStatus] | None) -> list[NodeStatus]:
    return [s for s in (nodes or {}).values() if s.gpus or s.gpu_error]


def gpu_rows(
    snapshot: GPUSnapshot | None,
    nodes: Mapping[str, NodeStatus] | None,
    colors: Mapping[str, str],
    width: int,
    *,
    local: bool = True,
) -> list[Text]:
    """The panel's lines (full mode): local GPUs, then each node's GPUs under its name."""
    muted = colors.get("status-queued", "grey50")
    remote = _remote_groups(nodes)
    lines: list[Text] = []
    all_gpus = list(snapshot.gpus if snapshot is not None and snapshot.available else ())
    for status in remote:
        all_gpus.extend(status.gpus)
    cols = choose_columns(width, all_gpus) if all_gpus else {}

    def header(label: str, detail: str = "", style: str = "bold") -> Text:
        text = Text(no_wrap=True, overflow="ellipsis")
        text.append(label, style=style)
        if detail:
            text.append(f" · {detail}", style=muted)
        text.truncate(width, overflow="ellipsis")
        return text

    if not local:
        pass
    elif snapshot is None:
        lines.append(header(NOT_STARTED, style=muted))
    elif not snapshot.available:
        lines.append(header(f"local: {snapshot.summary}" if remote else snapshot.summary, style=muted))
    else:
        detail = snapshot.summary + (
            f" · driver {snapshot.driver_version}" if snapshot.driver_version else ""
        )
        lines.append(header("local", detail) if remote else header(detail, style=muted))
        for gpu in snapshot.gpus:
            lines.append(gpu_row(gpu, cols, colors, width))
    for status in remote:
        node_color = state_color(colors, status.state)
        text = Text(no_wrap=True, overflow="ellipsis")
        text.append(status.display_name, style="bold")
        text.append(f" · {status.host} · ", style=muted)
        text.append(str(status.state), style=node_color)
        if status.gpu_error:
            text.append(f" · nvidia-smi: {status.gpu_error}", style=colors.get("status-failed", "red"))
        text.truncate(width, overflow="ellipsis")
        lines.append(text)
        for gpu in status.gpus:
            lines.append(gpu_row(gpu, cols, colors, width))
    return lines


def gpu_summary(snapshot: GPUSnapshot | None, nodes: Mapping[str, NodeStatus] | None, width: int) -> str:
    """One line for a one-line slot: per-GPU figures when they fit, else totals."""
    remote = [g for s in _remote_groups(nodes) for g in s.gpus]
    tail = f" +{len(remote)} remote" if remote else ""
    if snapshot is None:
        return NOT_STARTED + tail
    if not snapshot.available:
        return f"{snapshot.summary}{tail}"
    gpus = snapshot.gpus

    def seg(g: GPUStatus, detail: bool) -> str:
        if g.lost:
            return f"{g.index}:lost"
        u = "?" if g.utilization is None else f"{g.utilization:.0f}%"
        if not detail:
            return f"{g.index}:{u}"
        return f"{g.index}:{u} {_mem_label(g)}"  # e.g. 0:82% 31.3/40G

    for detail in (True, False):
        line = "GPU " + ("  " if detail else " ").join(seg(g, detail) for g in gpus) + tail
        if len(line) <= width:
            return line
    utils = [g.utilization for g in gpus if not g.lost and g.utilization is not None]
    lost = sum(1 for g in gpus if g.lost)
    line = f"{len(gpus)} GPUs"
    if utils:
        line += f" avg {sum(utils) / len(utils):.0f}%"
    if lost:
        line += f" · {lost} lost"
    return line + tail


class GPUPanel(Widget):
    """Local GPUs from a `GPUSnapshot` and remote ones from node statuses; renders what it is given."""

    DEFAULT_CSS = """
    GPUPanel {
        height: auto;
        max-height: 16;
    }
    """

    snapshot: reactive[GPUSnapshot | None] = reactive(None, layout=True)
    nodes: reactive[dict[str, NodeStatus] | None] = reactive(None, layout=True)

    def __init__(
        self,
        snapshot: GPUSnapshot | None = None,
        nodes: Mapping[str, NodeStatus] | None = None,
        *,
        local: bool = True,
        name: str | None = None,
        id: str | None = None,
        classes: str | None = None,
    ) -> None:
        super().__init__(name=name, id=id, classes=classes)
        self.local = local  # False: only the nodes' GPUs (the node detail screen)
        self.set_reactive(GPUPanel.snapshot, snapshot)
        self.set_reactive(GPUPanel.nodes, dict(nodes) if nodes is not None else None)

    @property
    def no_gpu(self) -> bool:
        """NVML said there is no GPU here and no node reports one: the panel is one line saying
        why (the `-no-gpu` class), not a box taking room from the plot and the nodes."""
        snap = self.snapshot
        return self.local and snap is not None and not snap.available and not _remote_groups(self.nodes)

    def watch_snapshot(self) -> None:
        self.set_class(self.no_gpu, "-no-gpu")

    def watch_nodes(self) -> None:
        self.set_class(self.no_gpu, "-no-gpu")

    def update_snapshot(self, snapshot: GPUSnapshot | None) -> None:
        self.snapshot = snapshot

    def update_nodes(self, nodes: Mapping[str, NodeStatus] | None) -> None:
        self.nodes = dict(nodes) if nodes is not None else None

    @property
    def one_line(self) -> bool:
        """Whether the panel sits in a one-line slot (a fixed height of 1)."""
        height = self.styles.height
        return height is not None and not height.is_auto and self.size.height <= 1

    def lines(self, width: int) -> list[Text]:
        colors = theme_colors(self.app) if self.is_attached else theme_colors(None)
        if self.one_line:
            text = Text(gpu_summary(self.snapshot, self.nodes, width), no_wrap=True, overflow="ellipsis")
            text.truncate(width, overflow="ellipsis")
            return [text]
        lines = gpu_rows(self.snapshot, self.nodes, colors, width, local=self.local)
        return lines or [Text("no GPUs reported", style=colors.get("status-queued", "grey50"))]

    def get_content_width(self, container: Size, viewport: Size) -> int:
        snap = self.snapshot
        if self.no_gpu and snap is not None:  # its one line, whatever width it had before
            return len(snap.summary)
        return super().get_content_width(container, viewport)

    def get_content_height(self, container, viewport, width: int) -> int:
        return max(1, len(self.lines(width)))

    def render(self) -> Text:
        width = self.content_size.width or 80
        return Text("\n").join(self.lines(width))

    def on_mount(self) -> None:
        self.set_class(self.no_gpu, "-no-gpu")
        on_theme_change(self, self.refresh)
