"""The usage page's server-drawn bar charts: scale, ticks and bar geometry."""

from __future__ import annotations

from gateway.console.charts import bars, nice_ceiling


def test_nice_ceiling_rounds_up_to_one_two_or_five() -> None:
    assert [nice_ceiling(v) for v in (0, 1, 3, 7, 11, 420)] == [1, 1, 5, 10, 20, 500]


def test_bars_scale_to_the_largest_value_with_whole_number_ticks() -> None:
    chart = bars("t", ["a", "b"], {"in": [10, 5], "out": [0, 2]})
    assert [label for _, label in chart.ticks] == ["0", "2", "4", "6", "8", "10"]
    tallest = max(chart.bars, key=lambda b: b.height)
    assert tallest.y + tallest.height == chart.baseline
    assert tallest.label == "a · in: 10"
    assert len(chart.bars) == 4
    assert [b.height for b in chart.bars if b.label.startswith("b · out")] == [
        round(tallest.height * 2 / 10, 2)
    ]


def test_bars_with_no_data_draw_flat_bars_not_a_division_by_zero() -> None:
    chart = bars("t", [], {"in": []})
    assert chart.bars == ()
    assert chart.labels == ()
