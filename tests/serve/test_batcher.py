"""The Batcher on its own, with a fake compute function: no model, no HTTP.

Each payload is a list of strings; the fake compute answers each string with
its upper-case form, so any misrouted or reordered result shows.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import pytest

from bertonnx.serve.batcher import Batcher, Task
from bertonnx.serve.errors import Overloaded, TooLarge

T = TypeVar("T")
SENTENCES = Task("sentences", normalize=True)
WORDS = Task("contextual")


class FakeModel:
    """Records every call; can be held closed so that requests queue behind the running one."""

    def __init__(self) -> None:
        self.calls: list[tuple[Task, list[list[str]]]] = []
        self.open = threading.Event()
        self.open.set()
        self.running = threading.Event()  # a call has started

    def __call__(self, task: Task, payloads: list[list[str]]) -> Sequence[Any]:
        self.calls.append((task, payloads))
        self.running.set()
        assert self.open.wait(10), "the test never let the model go"
        texts = [text for payload in payloads for text in payload]
        if any(text == "bad input" for text in texts):
            raise ValueError("bad input in this group")
        if any(text == "crash" for text in texts):
            raise RuntimeError("the model failed")
        return [text.upper() for text in texts]


def run(scenario: Callable[[Batcher, FakeModel], Awaitable[T]], **budgets: Any) -> T:
    """Start a Batcher on a fresh loop, run the scenario, then close the Batcher."""
    model = FakeModel()
    options = {"max_batch_tokens": 100, "max_wait": 0.0, "max_queue_tokens": 1000, **budgets}

    async def main() -> T:
        batcher = Batcher(model, **options)
        await batcher.start()
        try:
            return await scenario(batcher, model)
        finally:
            model.open.set()
            await batcher.close()

    return asyncio.run(asyncio.wait_for(main(), 30))


async def until(condition: Callable[[], bool]) -> None:
    while not condition():
        await asyncio.sleep(0.001)


async def hold_model(batcher: Batcher, model: FakeModel) -> asyncio.Task[Sequence[Any]]:
    """Start one request and keep the model busy with it, so the next requests queue."""
    model.open.clear()
    model.running.clear()
    blocker = asyncio.create_task(batcher.submit(SENTENCES, ["blocker"], 1))
    await until(model.running.is_set)
    return blocker


def test_requests_waiting_together_merge_up_to_the_token_budget() -> None:
    async def scenario(batcher: Batcher, model: FakeModel) -> list[tuple[Task, list[list[str]]]]:
        blocker = await hold_model(batcher, model)
        sizes = [40, 30, 30, 20]  # the first three fill the budget of 100; the fourth waits for the next batch
        pending = [asyncio.create_task(batcher.submit(SENTENCES, [f"t{i}"], n)) for i, n in enumerate(sizes)]
        await until(lambda: batcher.queued_requests == 4)
        assert batcher.queued_tokens == 120
        model.open.set()
        await blocker
        assert [await task for task in pending] == [["T0"], ["T1"], ["T2"], ["T3"]]
        return model.calls

    assert [payloads for _, payloads in run(scenario)] == [[["blocker"]], [["t0"], ["t1"], ["t2"]], [["t3"]]]


def test_merged_calls_group_by_task_and_results_keep_their_order() -> None:
    model_calls: list[Any] = []

    async def scenario(batcher: Batcher, model: FakeModel) -> list[Sequence[Any]]:
        blocker = await hold_model(batcher, model)
        requests = [
            (SENTENCES, ["a", "b", "c"]),
            (WORDS, ["d"]),
            (SENTENCES, ["e"]),
            (WORDS, ["f", "g"]),
        ]
        pending = [asyncio.create_task(batcher.submit(task, texts, len(texts))) for task, texts in requests]
        await until(lambda: batcher.queued_requests == 4)
        model.open.set()
        await blocker
        answers = [await task for task in pending]
        model_calls.extend(model.calls)
        return answers

    assert run(scenario) == [["A", "B", "C"], ["D"], ["E"], ["F", "G"]]
    blocker_call, *merged = model_calls
    assert blocker_call == (SENTENCES, [["blocker"]])
    assert merged == [(SENTENCES, [["a", "b", "c"], ["e"]]), (WORDS, [["d"], ["f", "g"]])]


def test_a_request_bigger_than_the_batch_budget_runs_alone() -> None:
    async def scenario(batcher: Batcher, model: FakeModel) -> list[tuple[Task, list[list[str]]]]:
        blocker = await hold_model(batcher, model)
        big = asyncio.create_task(batcher.submit(SENTENCES, ["big"], 500))
        small = asyncio.create_task(batcher.submit(SENTENCES, ["small"], 1))
        await until(lambda: batcher.queued_requests == 2)
        model.open.set()
        await blocker
        assert (await big, await small) == (["BIG"], ["SMALL"])
        return model.calls

    assert [payloads for _, payloads in run(scenario)] == [[["blocker"]], [["big"]], [["small"]]]


def test_a_lone_request_never_waits() -> None:
    async def scenario(batcher: Batcher, model: FakeModel) -> float:
        started = time.perf_counter()
        assert await batcher.submit(SENTENCES, ["alone"], 1) == ["ALONE"]
        return time.perf_counter() - started

    assert run(scenario, max_wait=2.0) < 1.0


def test_a_batch_waits_at_most_max_wait_for_a_request_on_its_way() -> None:
    async def scenario(batcher: Batcher, model: FakeModel) -> float:
        with batcher.expecting():  # a request being tokenized that never arrives
            started = time.perf_counter()
            assert await batcher.submit(SENTENCES, ["first"], 1) == ["FIRST"]
            return time.perf_counter() - started

    waited = run(scenario, max_wait=0.3)
    assert 0.25 <= waited < 5.0


def test_a_request_on_its_way_joins_the_forming_batch() -> None:
    async def scenario(batcher: Batcher, model: FakeModel) -> list[tuple[Task, list[list[str]]]]:
        async def arrive() -> Sequence[Any]:
            with batcher.expecting():
                await asyncio.sleep(0.05)  # "tokenizing", well inside max_wait
            return await batcher.submit(SENTENCES, ["second"], 1)  # as the server does: no yield in between

        second = asyncio.create_task(arrive())
        await asyncio.sleep(0)  # it is on its way now
        first = asyncio.create_task(batcher.submit(SENTENCES, ["first"], 1))
        assert (await first, await second) == (["FIRST"], ["SECOND"])
        return model.calls

    assert run(scenario, max_wait=5.0) == [(SENTENCES, [["first"], ["second"]])]


def test_a_full_queue_is_overloaded_with_a_retry_after() -> None:
    async def scenario(batcher: Batcher, model: FakeModel) -> None:
        blocker = await hold_model(batcher, model)
        queued = asyncio.create_task(batcher.submit(SENTENCES, ["queued"], 8))
        await until(lambda: batcher.queued_requests == 1)
        with pytest.raises(Overloaded, match=r"queue is full \(8 of 10 tokens waiting\)") as refused:
            await batcher.submit(SENTENCES, ["refused"], 5)
        assert isinstance(refused.value.retry_after, int) and 1 <= refused.value.retry_after <= 60
        fits = asyncio.create_task(batcher.submit(SENTENCES, ["fits"], 2))  # room for 2 more: accepted
        await until(lambda: batcher.queued_requests == 2)
        model.open.set()
        assert (await blocker, await queued, await fits) == (["BLOCKER"], ["QUEUED"], ["FITS"])
        assert batcher.queued_tokens == 0

    run(scenario, max_queue_tokens=10)


def test_retry_after_follows_the_measured_model_speed() -> None:
    async def scenario(batcher: Batcher, model: FakeModel) -> int:
        slow = batcher.compute

        def one_second_per_100_tokens(task: Task, payloads: list[list[str]]) -> Sequence[Any]:
            time.sleep(0.2)  # 20 tokens in 0.2 s: 100 tokens a second
            return slow(task, payloads)

        batcher.compute = one_second_per_100_tokens
        await batcher.submit(SENTENCES, ["measured"], 20)
        blocker = await hold_model(batcher, model)
        queued = asyncio.create_task(batcher.submit(SENTENCES, ["queued"], 900))
        await until(lambda: batcher.queued_requests == 1)
        try:
            with pytest.raises(Overloaded) as refused:
                await batcher.submit(SENTENCES, ["refused"], 200)
        finally:
            model.open.set()
            await asyncio.gather(blocker, queued)
        return refused.value.retry_after

    # 900 tokens queued at no more than 100 a second: at least 9 s (more on a busy machine).
    assert 9 <= run(scenario, max_queue_tokens=1000) <= 60


def test_a_request_over_the_whole_queue_is_too_large() -> None:
    async def scenario(batcher: Batcher, model: FakeModel) -> None:
        with pytest.raises(TooLarge, match="the request has 11 tokens; this server queues at most 10"):
            await batcher.submit(SENTENCES, ["huge"], 11)
        assert model.calls == []

    run(scenario, max_queue_tokens=10)


def test_close_finishes_accepted_requests_then_refuses_new_ones() -> None:
    async def scenario(batcher: Batcher, model: FakeModel) -> None:
        blocker = await hold_model(batcher, model)
        queued = asyncio.create_task(batcher.submit(SENTENCES, ["queued"], 1))
        await until(lambda: batcher.queued_requests == 1)
        closing = asyncio.create_task(batcher.close())
        await asyncio.sleep(0.05)
        assert not closing.done()  # still draining
        with pytest.raises(Overloaded, match="shutting down") as refused:
            await batcher.submit(SENTENCES, ["late"], 1)
        assert refused.value.retry_after == 1
        model.open.set()
        await closing
        assert (await blocker, await queued) == (["BLOCKER"], ["QUEUED"])

    run(scenario)


def test_a_bad_request_fails_alone_and_its_batch_mates_succeed() -> None:
    async def scenario(batcher: Batcher, model: FakeModel) -> list[Any]:
        blocker = await hold_model(batcher, model)
        texts = [["good one"], ["bad input"], ["good two", "good three"]]
        pending = [asyncio.create_task(batcher.submit(SENTENCES, t, len(t))) for t in texts]
        await until(lambda: batcher.queued_requests == 3)
        model.open.set()
        await blocker
        return await asyncio.gather(*pending, return_exceptions=True)

    good, bad, more = run(scenario)
    assert good == ["GOOD ONE"] and more == ["GOOD TWO", "GOOD THREE"]
    assert isinstance(bad, ValueError) and str(bad) == "bad input in this group"


def test_a_model_failure_reaches_only_its_own_group_and_the_batcher_lives_on() -> None:
    async def scenario(batcher: Batcher, model: FakeModel) -> list[Any]:
        blocker = await hold_model(batcher, model)
        pending = [
            asyncio.create_task(batcher.submit(SENTENCES, ["crash"], 1)),
            asyncio.create_task(batcher.submit(SENTENCES, ["merged with it"], 1)),
            asyncio.create_task(batcher.submit(WORDS, ["other task"], 1)),
        ]
        await until(lambda: batcher.queued_requests == 3)
        model.open.set()
        await blocker
        answers = await asyncio.gather(*pending, return_exceptions=True)
        answers.append(await batcher.submit(SENTENCES, ["afterwards"], 1))
        return answers

    crashed, merged, other, afterwards = run(scenario)
    assert isinstance(crashed, RuntimeError) and isinstance(merged, RuntimeError)
    assert other == ["OTHER TASK"] and afterwards == ["AFTERWARDS"]


def test_a_cancelled_request_costs_no_model_time() -> None:
    async def scenario(batcher: Batcher, model: FakeModel) -> list[tuple[Task, list[list[str]]]]:
        blocker = await hold_model(batcher, model)
        gone = asyncio.create_task(batcher.submit(SENTENCES, ["gone"], 1))
        kept = asyncio.create_task(batcher.submit(SENTENCES, ["kept"], 1))
        await until(lambda: batcher.queued_requests == 2)
        gone.cancel()
        model.open.set()
        await blocker
        assert await kept == ["KEPT"]
        return model.calls

    assert [payloads for _, payloads in run(scenario)] == [[["blocker"]], [["kept"]]]


def test_observe_sees_each_batch() -> None:
    seen: list[tuple[int, int, int]] = []

    async def scenario(batcher: Batcher, model: FakeModel) -> None:
        blocker = await hold_model(batcher, model)
        pending = [asyncio.create_task(batcher.submit(SENTENCES, ["a", "b"], 7)) for _ in range(3)]
        await until(lambda: batcher.queued_requests == 3)
        model.open.set()
        await blocker
        await asyncio.gather(*pending)

    run(scenario, observe=lambda requests, texts, tokens, seconds: seen.append((requests, texts, tokens)))
    assert seen == [(1, 1, 1), (3, 6, 21)]


@pytest.mark.parametrize(
    "budgets,message",
    [
        ({"max_batch_tokens": 0}, "max_batch_tokens must be at least 1, got 0"),
        ({"max_queue_tokens": 0}, "max_queue_tokens must be at least 1, got 0"),
        ({"max_wait": -1.0}, "max_wait must be >= 0 seconds, got -1.0"),
    ],
)
def test_budgets_are_checked(budgets: dict[str, Any], message: str) -> None:
    options = {"max_batch_tokens": 1, "max_wait": 0.0, "max_queue_tokens": 1, **budgets}
    with pytest.raises(ValueError, match=message):
        Batcher(FakeModel(), **options)
