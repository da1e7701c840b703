"""The shared accept queue's board: the receiver with the fewest connections takes the next."""

from __future__ import annotations

import os
import time
from types import SimpleNamespace

import pytest

from dicom_nodes.scp.accept import (
    DEFER_LOOK,
    MAX_DEFER,
    RETIRED_LOOK,
    AcceptBoard,
    AcceptTurn,
    listen,
)
from dicom_nodes.scp.transport import ReceiverServer


def test_a_busier_receiver_leaves_the_connection_to_a_less_busy_one() -> None:
    board = AcceptBoard(2)
    board.publish(0, 2)
    board.publish(1, 1)
    assert board.fewer_elsewhere(0) and not board.fewer_elsewhere(1)
    board.publish(1, 2)
    assert not board.fewer_elsewhere(0)  # equal: whoever is first takes it


def test_a_retired_or_unstarted_receiver_is_not_waited_for() -> None:
    board = AcceptBoard(3)
    board.publish(0, 5)
    assert not board.fewer_elsewhere(0)  # 1 and 2 never started
    board.publish(1, 0)
    assert board.fewer_elsewhere(0)
    board.retire(1)
    assert not board.fewer_elsewhere(0)


def test_the_counts_are_shared_with_forked_receivers() -> None:
    board = AcceptBoard(2)
    board.publish(0, 3)
    pid = os.fork()
    if pid == 0:
        board.publish(1, 1)
        os._exit(0)
    os.waitpid(pid, 0)
    assert board.fewer_elsewhere(0)


def test_a_connection_is_left_to_another_receiver_for_a_bounded_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    board = AcceptBoard(2)
    turn = AcceptTurn(board, 0)
    turn.publish(1)
    board.publish(1, 0)
    now = [100.0]
    monkeypatch.setattr(time, "monotonic", lambda: now[0])
    assert not turn.take_now()
    now[0] += MAX_DEFER / 8
    assert not turn.take_now()
    now[0] += MAX_DEFER / 8
    looks = 2
    while not turn.take_now():  # the other receiver never takes it: this one does
        now[0] += MAX_DEFER / 8
        looks += 1
    assert looks <= 9
    board.publish(1, 1)
    assert turn.take_now()  # no longer busier than the other


def test_listen_gives_a_non_blocking_listening_socket() -> None:
    sock = listen("127.0.0.1", 0)
    try:
        assert sock.getsockname()[1] > 0 and not sock.getblocking()
        with pytest.raises(BlockingIOError):
            sock.accept()
    finally:
        sock.close()


def test_a_stopping_receiver_takes_nothing() -> None:
    board = AcceptBoard(2)
    turn = AcceptTurn(board, 0)
    turn.publish(0)
    assert turn.take_now()
    turn.retire()
    board.publish(1, 7)
    assert not turn.take_now()


def test_a_retired_receiver_looks_at_the_queue_rarely(monkeypatch: pytest.MonkeyPatch) -> None:
    """A connection waits that a retired receiver will never take: it looks again after
    RETIRED_LOOK, not every millisecond (that spun a third of a CPU while it stopped)."""
    board = AcceptBoard(2)
    turn = AcceptTurn(board, 0)
    turn.publish(3)
    board.publish(1, 0)
    assert not turn.take_now() and turn.pause() == DEFER_LOOK  # deferring: look again soon
    turn.retire()
    slept: list[float] = []
    monkeypatch.setattr(time, "sleep", slept.append)
    server = SimpleNamespace(socket=object(), turn=turn)
    for _ in range(3):
        with pytest.raises(BlockingIOError):
            ReceiverServer.get_request(server)  # type: ignore[arg-type]
    assert slept == [RETIRED_LOOK] * 3
    assert RETIRED_LOOK >= 0.02
