"""The demo's live view (rich) and its summary; plain lines when the console is not a terminal."""

from __future__ import annotations

import time
from types import TracebackType
from typing import TYPE_CHECKING, Any

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.markup import escape
from rich.panel import Panel
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from aether.cluster.state import ClusterState

if TYPE_CHECKING:
    from aether.demo.driver import Driver
    from aether.demo.processes import NodeProcess
    from aether.demo.runner import DemoConfig, DemoResult

__all__ = ["DemoView"]

_PLAIN_EVERY = 2.0


class DemoView:
    """Shows progress, events/s, members, leader and shards per node, and a timeline."""

    def __init__(self, console: Console, config: DemoConfig, cluster: str, *, live: bool | None = None) -> None:
        self.console = console
        self.config = config
        self.cluster = cluster
        self.live_mode = console.is_terminal if live is None else live
        self.driver: Driver | None = None
        self.state: ClusterState | None = None
        self.nodes: list[NodeProcess] = []
        self.timeline: list[tuple[float, str]] = []
        self.peak_rate = 0.0
        self._rate = 0.0
        self._load_started: float | None = None
        self._live: Live | None = None
        self._last_plain = 0.0

    # ---- lifecycle ---------------------------------------------------------------------------
    def __enter__(self) -> DemoView:
        if self.live_mode:
            self._live = Live(console=self.console, get_renderable=self._render, refresh_per_second=4,
                              transient=False)
            self._live.__enter__()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._live is not None:
            self._live.__exit__(exc_type, exc, tb)
            self._live = None

    # ---- updates -----------------------------------------------------------------------------
    def log(self, at: float, text: str) -> None:
        self.timeline.append((at, text))
        if self._live is None:
            self.console.print(f"[dim]+{at:5.1f}s[/] {escape(text)}", highlight=False, soft_wrap=True)

    def start_load(self, started: float) -> None:
        self._load_started = started

    def update(self, state: ClusterState, nodes: list[NodeProcess]) -> None:
        self.state = state
        self.nodes = nodes
        driver = self.driver
        if driver is not None:
            self._rate = driver.rate(1.0)
            if self._load_started is not None:
                self.peak_rate = max(self.peak_rate, self._rate)
        if self._live is None and self._load_started is not None:
            now = time.monotonic()
            if now - self._last_plain >= _PLAIN_EVERY and driver is not None:
                self._last_plain = now
                elapsed = now - self._load_started
                shards = ", ".join(f"{n} {c}" for n, c in sorted(state.shards_per_node.items()))
                self.console.print(
                    f"[dim]  {min(elapsed, self.config.duration):5.1f}/{self.config.duration:g}s[/] "
                    f"acked {driver.acked:,}  {self._rate:,.0f} events/s  re-sent {driver.retries}  "
                    f"leader {state.leader_id} (term {state.term})  shards: {shards}", highlight=False, soft_wrap=True)

    # ---- rendering ---------------------------------------------------------------------------
    def _render(self) -> RenderableType:
        config = self.config
        parts: list[RenderableType] = []
        elapsed = 0.0 if self._load_started is None else time.monotonic() - self._load_started
        bar = ProgressBar(total=config.duration, completed=min(elapsed, config.duration), width=40)
        head = Table.grid(padding=(0, 2))
        head.add_row(Text(f"load {min(elapsed, config.duration):4.1f}/{config.duration:g}s"), bar)
        parts.append(head)
        driver = self.driver
        if driver is not None:
            parts.append(Text.from_markup(
                f"commands acked [bold]{driver.acked:,}[/]   events/s [bold green]{self._rate:,.0f}[/] "
                f"(peak {self.peak_rate:,.0f})   re-sent {driver.retries}   in doubt {driver.in_doubt}   "
                f"rejected withdrawals {driver.rejected_withdrawals:,}"))
        state = self.state
        if state is not None:
            parts.append(Text.from_markup(
                f"cluster [bold]{state.cluster}[/]: leader [bold yellow]{state.leader_id or '—'}[/] "
                f"(term {state.term})   shard map v{state.map_version}   in handoff {state.handoffs}   "
                f"unassigned {state.unassigned}   shards per node {'-'.join(map(str, state.shard_spread()))} "
                + ("[green](balanced)[/]" if state.balanced else "[yellow](rebalancing)[/]")))
            parts.append(self._members_table(state))
        timeline = Table.grid(padding=(0, 1))
        for at, text in self.timeline[-10:]:
            timeline.add_row(Text(f"+{at:5.1f}s", style="dim"), Text(text))
        parts.append(Panel(timeline, title="timeline", title_align="left", border_style="dim"))
        return Panel(Group(*parts), title=f"Aether demo — {config.nodes} nodes, {config.accounts} accounts",
                     title_align="left")

    def _members_table(self, state: ClusterState) -> Table:
        table = Table(show_edge=False, pad_edge=False)
        for column in ("node", "process", "member", "shards", "requests"):
            table.add_column(column, justify="right" if column in ("shards", "requests") else "left")
        members = {m.id: m for m in state.members}
        for node in self.nodes:
            member = members.get(node.node_id)
            process = f"pid {node.pid}" if node.running else "[red]killed[/]" if node.killed else "stopped"
            role = "—"
            if member is not None:
                role = "[bold yellow]leader[/]" if member.id == state.leader_id else member.status
            shards = state.shards_per_node.get(node.node_id, 0)
            table.add_row(node.node_id, process, role, f"{shards:>3} " + "█" * (shards // 2),
                          f"{member.requests:,}" if member is not None else "")
        return table

    # ---- summary -----------------------------------------------------------------------------
    def summary(self, result: DemoResult, driver: Driver) -> None:
        report = result.report
        console = self.console
        table = Table(title="summary", title_justify="left", show_header=False)
        table.add_column("what", style="bold")
        table.add_column("value")
        rows: list[tuple[str, Any]] = [
            ("accounts", f"{len(driver.accounts):,}"),
            ("commands sent / acknowledged", f"{driver.sent:,} / {driver.acked:,}"),
            ("in doubt (never acknowledged)", f"{driver.in_doubt:,}"),
            ("commands re-sent by the demo after an error", f"{driver.retries:,}"),
            ("already stored, answered from history", f"{driver.duplicates:,} (sent again after a timeout or a "
             "failover, by the demo or by the cluster's router; stored once)" if driver.duplicates else "0"),
            ("rejected withdrawals (events)", f"{driver.rejected_withdrawals:,}"),
            ("events/s average / peak", f"{result.average_rate:,.0f} / {result.peak_rate:,.0f}"),
            ("slowest command", f"{driver.slowest:.2f}s"),
        ]
        if result.leader_change_seconds is not None:
            rows.append(("new leader after", f"{result.leader_change_seconds:.1f}s"))
        if result.failover_seconds is not None:
            rows.append(("failover (all shards served again)", f"{result.failover_seconds:.1f}s"))
        if result.moved_back_seconds is not None:
            rows.append(("shards back after restart", f"{result.moved_back_seconds:.1f}s"))
        if report is not None:
            rows += [
                ("events stored", f"{report.events:,}"),
                ("total balance", f"{report.total_balance:,}"),
                ("stream / namespace", f"{self.config.stream} / {result.namespace}"),
                ("elapsed", f"{result.elapsed:.1f}s"),
            ]
        for what, value in rows:
            table.add_row(what, str(value))
        console.print(table)
        if report is None:
            return
        if self.config.connect.url is not None:
            console.print(f"inspect: aether events show {driver.accounts[0]} --namespace {result.namespace} "
                          f"--stream {self.config.stream}; aether events stats --all", style="dim", highlight=False)
        if report.ok:
            console.print(f"[bold green]VERIFIED[/]: {report.accounts} accounts, {report.events:,} events: "
                          "gapless versions, balances equal the sum of their events, every acknowledged "
                          "command stored exactly once.")
        else:
            console.print(f"[bold red]VERIFICATION FAILED[/]: {report.problem_count} problems")
            for problem in report.problems[:20]:
                console.print(f"  - {problem}", highlight=False, markup=False)
