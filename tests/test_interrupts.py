"""evstream's SIGINT handler (evstream.interrupts): a Ctrl-C is never lost, and never cuts a
held block in two. In-process, with real signals."""

from __future__ import annotations

import signal

import pytest
from waiting import wait_for

from evstream.interrupts import CTRL_C


class Finalized:
    """Ctrl-C arrives while its finalizer runs, as it can in pymongo's session finalizers."""

    ran = False

    def __del__(self) -> None:
        signal.raise_signal(signal.SIGINT)
        sum(range(1000))  # Python runs the handler at the next instruction: here, in __del__
        Finalized.ran = True


def test_ctrl_c_in_a_finalizer_is_delivered_after_it() -> None:
    # Python's own handler raises in __del__, where the exception is printed and dropped: the
    # wait below would then time out with an AssertionError instead.
    with CTRL_C, pytest.raises(KeyboardInterrupt):
        Finalized()
        wait_for(lambda: False, 10, "the Ctrl-C to arrive")
    assert Finalized.ran, "the finalizer was cut short"


def test_ctrl_c_in_a_held_block_waits_until_the_block_is_done() -> None:
    done = []
    with CTRL_C, pytest.raises(KeyboardInterrupt):
        with CTRL_C.held:
            signal.raise_signal(signal.SIGINT)
            done.append("printed")
            done.append("saved")
        done.append("after the block")
    assert done == ["printed", "saved"]


def test_the_handler_is_installed_once_and_python_s_comes_back() -> None:
    with CTRL_C:
        with CTRL_C:  # nested (the CLI, then watch inside it)
            assert signal.getsignal(signal.SIGINT) is not signal.default_int_handler
        assert signal.getsignal(signal.SIGINT) is not signal.default_int_handler
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
