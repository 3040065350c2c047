"""The jobs table: resource names, a column per parameter, sorting both ways, follow mode."""

from __future__ import annotations

from scenes import CLOCK, dashboard_app, demo_state
from textual.widgets.data_table import ColumnKey

from aup_tui.app import AupApp
from aup_tui.widgets.job_table import JobTable, resource_label

SIZE = (100, 30)


def table(app) -> JobTable:
    return app.screen.query_one(JobTable)


def cell(t: JobTable, jid: int, column: str) -> str:
    value = t.get_cell(str(jid), column)
    return str(getattr(value, "plain", value)).strip()


def test_resource_label_names_the_node_the_card_and_the_attempt():
    assert resource_label("cpu:cpu0", 1) == "cpu0"
    assert resource_label("gpu:1", 1) == "gpu1"
    assert resource_label("node:127.0.0.1:2222", 2) == "127.0.0.1:2222 #2"
    assert resource_label("aws:i-0abc", 0) == "i-0abc"


async def test_resource_column_shows_node_names_gpu_cards_and_retries():
    state = demo_state(n_jobs=4, running=0, status="FINISHED")
    state.jobs[1].resource = "node:127.0.0.1:2222"
    state.jobs[2].resource = "node:127.0.0.1:2223"
    state.jobs[3].resource, state.jobs[3].attempts = "gpu:1", 2
    app = AupApp(state=state, clock=CLOCK, find=False)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        t = table(app)
        assert [cell(t, j, "resource") for j in (1, 2, 3)] == ["127.0.0.1:2222", "127.0.0.1:2223", "gpu1 #2"]
        # the column grew to the node names: none is cut
        assert t.columns[ColumnKey("resource")].width >= len("127.0.0.1:2222")


async def test_each_parameter_has_its_own_sortable_filterable_column():
    app = dashboard_app()
    async with app.run_test(size=SIZE) as pilot:
        t = table(app)
        state = app.screen.state
        assert t.params == ["x", "y"]
        assert cell(t, 3, "param:x") == f"{state.jobs[3].config['x']:.4g}"
        t.sort_by("param:x")
        await pilot.pause()
        xs = [state.jobs[j].config["x"] for j in t.shown_jids]
        assert xs == sorted(xs)
        await pilot.press("O")  # reversed
        xs = [state.jobs[j].config["x"] for j in t.shown_jids]
        assert xs == sorted(xs, reverse=True)
        t.set_filter("x>0.5")  # one column compared as a number
        await pilot.pause()
        assert t.shown_jids and all(state.jobs[j].config["x"] > 0.5 for j in t.shown_jids)
        assert len(t.shown_jids) == sum(1 for r in state.jobs.values() if r.config["x"] > 0.5)
        t.set_filter("status=failed")
        assert t.shown_jids == [11, 22]
        t.set_filter("cpu1 y<=0")  # words and a column at once
        assert all(state.jobs[j].config["y"] <= 0 and j % 2 == 0 for j in t.shown_jids)


async def test_sort_key_again_reverses_and_the_marker_stays_visible():
    app = dashboard_app()
    async with app.run_test(size=(60, 30)) as pilot:
        t = table(app)
        await pilot.press("o")  # status
        await pilot.press("o")  # resource
        assert (t.sort_column, t.sort_reverse) == ("resource", False)
        await pilot.press("O")
        assert (t.sort_column, t.sort_reverse) == ("resource", True)
        for key in t.sort_columns:
            t.sort_by(key, reverse=True)
            column = t.columns[ColumnKey(key)]
            label = column.label.plain
            assert label.endswith(" ▼") and len(label) <= column.width, (key, label, column.width)
        assert "sorted by y ▼" in str(t.border_subtitle)


async def test_follow_mode_keeps_running_jobs_in_view():
    app = AupApp(state=demo_state(n_jobs=200, n_samples=300, running=2), clock=CLOCK, find=False)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        t = table(app)

        def running_in_view() -> bool:
            top, height = int(t.scroll_y), t.scrollable_content_region.height - 1
            return all(top <= t.get_row_index(str(j)) < top + height for j in (199, 200))

        assert t.follow and running_in_view() and t.cursor_row == 0
        assert "following running jobs" in str(t.border_subtitle)
        await pilot.press("g")  # a person looks elsewhere: follow stops
        await pilot.pause()
        assert not t.follow and not running_in_view() and "F follows" in str(t.border_subtitle)
        await pilot.press("F")
        await pilot.pause()
        assert t.follow and running_in_view()
        t.sort_by("id", reverse=True)  # a new order: the running jobs are at the top now
        t.scroll_to(y=150, animate=False, immediate=True)
        t.update_jobs([199])
        await pilot.pause()
        assert running_in_view()


def test_filter_terms_compare_one_column_or_match_anywhere():
    from aup_tui.widgets.job_filter import matches, parse_filter

    terms = parse_filter("opt=Adam lr<0.01 cpu", {"opt", "lr"})
    row = {"opt": "adam", "lr": 0.001}
    assert matches(terms, row, "3 finished cpu0")
    assert not matches(terms, {**row, "lr": 0.1}, "3 finished cpu0")
    assert not matches(terms, row, "3 finished gpu0")  # the plain word
    assert not matches(parse_filter("lr>0", {"lr"}), {"lr": "n/a"}, "")  # text is not a number
    # a name that is no column is a plain word: `a=b` is looked for in the row's text
    assert matches(parse_filter("a=b", {"lr"}), {}, "x a=b")


async def test_rows_never_drawn_show_their_latest_values_when_read():
    from aup_tui_backends.events import JobFinished

    state = demo_state(n_jobs=500, n_samples=600, running=2)
    app = AupApp(state=state, clock=CLOCK, find=False)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        t = table(app)
        app.screen.apply_changes(state.apply([JobFinished(eid=3, jid=250, score=0.001)]))
        await pilot.pause()
        assert cell(t, 250, "score") == "0.001" and cell(t, 250, "status") == "finished"
        t.sort_by("score", reverse=False)
        await pilot.pause()
        assert t.shown_jids[0] == 250 and len(t.shown_jids) == 500
        t.set_filter("score<0.01")
        assert t.shown_jids == [250]
