"""``flowbiz simulate line``: a signed webhook from the command line reaches the gateway."""

from __future__ import annotations

import argparse

from connectors.line.cli import _simulate, add_simulator
from tests.connectors.line.conftest import ALICE, DEST, SECRET


async def test_simulated_webhook_is_accepted_and_answered_by_push(
    line_gateway, emulator, monkeypatch, capsys
):
    """The simulator signs like LINE; its made-up reply token is refused, so it is pushed."""
    monkeypatch.setenv("SIM_LINE_SECRET", SECRET)
    parser = argparse.ArgumentParser()
    add_simulator(parser.add_subparsers(dest="channel"))
    async with line_gateway() as gw:
        args = parser.parse_args(
            [
                "line",
                "--url",
                gw.url,
                "--destination",
                DEST,
                "--user",
                ALICE,
                "--secret-env",
                "SIM_LINE_SECRET",
                "pricing",
            ]
        )
        assert await _simulate(args) == 0
        [delivery] = await emulator.wait_for(1)
        assert (delivery.via, delivery.texts) == ("push", ["Pro costs 29 a month."])
        assert [c.status for c in emulator.calls_to("reply")] == [400]
    assert "-> 200" in capsys.readouterr().out
