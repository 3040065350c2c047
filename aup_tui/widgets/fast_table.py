"""A DataTable that takes many rows and many cell changes cheaply.

DataTable's `add_row` and `update_cell` are built for a few rows at a time; at 10,000 rows their
per-call bookkeeping dominates. These methods fill the same structures directly, for tables whose
columns have fixed widths and whose rows are one line high, and fall back to the public calls when
DataTable's internals change.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from rich.text import Text
from textual._two_way_dict import TwoWayDict
from textual.widgets import DataTable
from textual.widgets.data_table import ColumnKey, Row, RowKey

Cell = Any  # what DataTable takes as a cell (str, Text, any renderable)


class LazyCells(dict):  # type: ignore[type-arg]
    """A row's cells (column key → cell), made by `build(key)` when one is first read.

    Slotted, and holding `build` and `key` rather than a partial: 10,000 of them are made at
    once when a big experiment opens."""

    __slots__ = ("_build", "_key", "_keys")

    def __init__(self, build: Callable[[str], tuple[Cell, ...]], key: str, keys: list[ColumnKey]) -> None:
        self._build: Callable[[str], tuple[Cell, ...]] | None = build
        self._key = key
        self._keys = keys

    def __missing__(self, key: ColumnKey) -> Cell:
        build, self._build = self._build, None
        if build is None:
            raise KeyError(key)
        for column_key, value in zip(self._keys, build(self._key)):
            self.setdefault(column_key, value)  # a cell written since keeps its value
        return self[key]


_RENDER_CACHES = ("_row_render_cache", "_cell_render_cache", "_row_renderable_cache", "_line_cache")


class FastDataTable(DataTable):
    """A DataTable with `add_rows_at_once` and batched cell writes (`_set_cell`, `_cells_changed`)."""

    def add_rows_at_once(self, keys: list[str], build: Callable[[str], tuple[Cell, ...]]) -> None:
        """Add a row for each key whose cells `build(key)` makes when first read (drawn, sorted
        on, asked for): a table of 10,000 rows shows its first screen after building ~40.

        DataTable's add_row costs ~0.3 ms a row (a reactive set, an idle check, and later
        measuring every cell for column widths, which fixed-width columns never use); this fills
        the same structures once. Falls back to add_row if DataTable's internals change."""
        data, locations = getattr(self, "_data", None), getattr(self, "_row_locations", None)
        if data is None or locations is None or not isinstance(getattr(self, "rows", None), dict):
            for key in keys:
                self.add_row(*build(key), key=key)
            return
        column_keys = [column.key for column in self.ordered_columns]
        start = self.row_count
        row_keys = [RowKey(key) for key in keys]
        if start == 0 and isinstance(locations, TwoWayDict):  # an empty table: one dict, not 10,000 sets
            self._row_locations = TwoWayDict({row_key: i for i, row_key in enumerate(row_keys)})
        else:
            for i, row_key in enumerate(row_keys, start):
                locations[row_key] = i
        rows = self.rows
        for key, row_key in zip(keys, row_keys):
            data[row_key] = LazyCells(build, key, column_keys)
            rows[row_key] = Row(row_key, 1)
        index = start + len(keys)
        if keys:
            self._require_update_dimensions = True  # the virtual size; no cell measuring
            self._update_count += 1
            self.cursor_coordinate = self.cursor_coordinate
            if index == len(keys) and self.show_cursor:
                self._highlight_cursor()
            self.check_idle()

    def reorder(self, keys: list[str]) -> None:
        """Show the rows in the order of `keys` (every row's key once), as `sort` does, without
        reading any cell. Falls back to `sort` if DataTable's internals change."""
        locations = getattr(self, "_row_locations", None)
        if not isinstance(locations, TwoWayDict):
            cells = {key: self.get_row(key) for key in keys}
            self.clear()
            for key in keys:
                self.add_row(*cells[key], key=key)
            return
        self._row_locations = TwoWayDict({RowKey(key): i for i, key in enumerate(keys)})
        self._update_count += 1
        self.refresh()

    def replace_row_lazily(self, key: str, build: Callable[[str], tuple[Cell, ...]]) -> None:
        """A row's cells made again when next read (a row changed before it was ever read)."""
        data = getattr(self, "_data", None)
        if data is None or RowKey(key) not in data:
            for column_key, value in zip([c.key for c in self.ordered_columns], build(key)):
                self.update_cell(key, column_key, value)
            return
        data[RowKey(key)] = LazyCells(build, key, [c.key for c in self.ordered_columns])
        if self._stale is None:
            self._stale = {}
        self._stale[RowKey(key)] = None

    # DataTable.update_cell bumps the table's update counter, which makes the next redraw
    # rebuild its row-order and row-offset lists and re-render every visible cell: O(rows) per
    # batch. Cell updates here never change the order or the heights of rows (fixed widths, one
    # line a row), so we write the cell and evict only the changed cells and their rows' lines
    # from the render caches (which hold just rows drawn so far): a batch costs O(changed cells +
    # cache size) at 100 rows and at 10,000 alike, and a redraw renders only the changed cells
    # (a cell costs DataTable ~0.3 ms). Falls back to update_cell if DataTable's internals change.
    #: row → its changed columns (None: every cell), until the next `_cells_changed`
    _stale: dict[RowKey, set[ColumnKey] | None] | None = None

    def _set_cell(self, row_key: str, column_key: str, value: Text | str) -> None:
        data = getattr(self, "_data", None)
        if data is None or any(getattr(self, name, None) is None for name in _RENDER_CACHES):
            self.update_cell(row_key, column_key, value)
            return
        key, column = RowKey(row_key), ColumnKey(column_key)
        data[key][column] = value
        if self._stale is None:
            self._stale = {}
        columns = self._stale.setdefault(key, set())
        if columns is not None:
            columns.add(column)

    def _cells_changed(self) -> None:
        dirty = self._stale
        if not dirty:
            return
        self._stale = None
        try:
            # the row and cell caches' keys start with the row key (the cells': then the column)
            rows = self._row_render_cache
            for row_key in [k for k in rows.keys() if k[0] in dirty]:
                rows.discard(row_key)
            cells = self._cell_render_cache
            for cell_key in [k for k in cells.keys() if k[0] in dirty]:
                columns = dirty[cell_key[0]]
                if columns is None or cell_key[1] in columns:
                    cells.discard(cell_key)
            indices = {self._row_locations.get(k) for k in dirty}
            renderables = self._row_renderable_cache  # keys: (update count, row index)
            for index_key in [k for k in renderables.keys() if k[1] in indices]:
                renderables.discard(index_key)
            if self.fixed_rows or len(indices) > self.size.height:
                self._line_cache.clear()
            else:
                # lines are keyed by their y in the whole table: the header, then one line a row.
                # Only the changed rows' lines are redrawn: a tick of two running jobs' durations
                # then costs two lines, not the whole visible table, once a second
                header = self.header_height if self.show_header else 0
                ys = {header + i for i in indices if i is not None}
                lines = self._line_cache
                for line_key in [k for k in lines.keys() if k[0] in ys]:
                    lines.discard(line_key)
                for i in indices:
                    if i is not None:
                        self.refresh_row(i)
                return
        except Exception:  # DataTable changed under us: the safe, slower way
            self._update_count += 1
        self.refresh()
