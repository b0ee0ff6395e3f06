"""`LocalHandle`: the in-process stand-in for a DeploymentHandle (model_location: ingress)."""

import asyncio

import pytest

from serving.deployments.in_process import LocalHandle


class Stage:
    def __init__(self) -> None:
        self.calls = 0

    async def double(self, value: int) -> int:
        self.calls += 1
        await asyncio.sleep(0)
        return 2 * value

    async def add(self, left: int, right: int = 0) -> int:
        return left + right

    def describe(self) -> dict[str, str]:
        return {"backend": "test"}

    async def fail(self) -> None:
        raise ValueError("bad image")


def test_remote_starts_the_call_and_returns_an_awaitable_that_several_consumers_share() -> None:
    async def main() -> None:
        stage = Stage()
        handle = LocalHandle(stage)
        doubled = handle.double.remote(21)
        # Passed on like a DeploymentResponse: resolved before the consumer runs, computed once.
        results = await asyncio.gather(handle.add.remote(doubled, 1), handle.add.remote(0, right=doubled), doubled)
        assert results == [43, 42, 42]
        assert stage.calls == 1

    asyncio.run(main())


def test_plain_methods_are_called_too() -> None:
    async def main() -> None:
        assert await LocalHandle(Stage()).describe.remote() == {"backend": "test"}

    asyncio.run(main())


def test_exceptions_reach_the_caller_unchanged() -> None:
    async def main() -> None:
        with pytest.raises(ValueError, match="bad image"):
            await LocalHandle(Stage()).fail.remote()

    asyncio.run(main())


def test_private_attributes_are_not_proxied() -> None:
    with pytest.raises(AttributeError):
        LocalHandle(Stage())._secret  # noqa: B018
