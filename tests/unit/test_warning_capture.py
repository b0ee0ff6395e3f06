"""Warnings captured per thread (`pipelines.warning_capture`): each thread gets its own warnings, every time, and
the process's warning machinery is the same after thousands of captures in parallel threads as before. With
`warnings.catch_warnings(record=True)`, as metadata extraction and decoding used before, the first test fails
(threads see each other's warnings) and so does the second (warnings end up in a stale list)."""

import threading
import time
import warnings
from concurrent.futures import ThreadPoolExecutor

import pytest

from pipelines.decode import open_validated
from pipelines.limits import DecodeLimits
from pipelines.metadata import extract_metadata
from pipelines.warning_capture import captured_warnings
from tests.unit.test_edges_in_process import jpeg

pytestmark = pytest.mark.unit


def test_each_thread_gets_its_own_warnings_every_time() -> None:
    barrier = threading.Barrier(6)

    def capture(thread: int) -> list[list[str]]:
        barrier.wait()
        seen = []
        for item in range(300):
            with captured_warnings() as caught:
                warnings.warn(f"thread {thread} item {item % 3}", UserWarning, stacklevel=1)
                time.sleep(0)  # let the other threads in between the warning and the end of the block
            seen.append([str(w.message) for w in caught])
        return seen

    with ThreadPoolExecutor(6) as pool:
        results = list(pool.map(capture, range(6)))
    for thread, seen in enumerate(results):
        # the same text from the same line, again and again, is captured every time (not once per place)
        assert seen == [[f"thread {thread} item {item % 3}"] for item in range(300)]


def test_parallel_decodes_and_metadata_leave_the_warning_machinery_as_it_was() -> None:
    photos = [jpeg((10 * i % 255, 60, 30), (64 + i, 48)) for i in range(40)]
    with captured_warnings():  # installs the dispatcher once, before the snapshot
        pass
    show, impl, filters = warnings.showwarning, warnings._showwarnmsg_impl, list(warnings.filters)  # type: ignore[attr-defined]

    def work(data: bytes) -> None:
        extract_metadata(data, colors=False)
        open_validated(data, DecodeLimits())

    with ThreadPoolExecutor(6) as pool:
        for _ in range(5):
            list(pool.map(work, photos))
    assert warnings.showwarning is show
    assert warnings._showwarnmsg_impl is impl  # type: ignore[attr-defined]
    assert warnings.filters == filters
    with pytest.warns(UserWarning, match="still shown"):  # a warning outside any capture is not swallowed
        warnings.warn("still shown", UserWarning, stacklevel=1)


def test_opening_drops_only_the_decompression_bomb_warning(monkeypatch: pytest.MonkeyPatch) -> None:
    """open_validated ignores Pillow's DecompressionBombWarning (its own limits decide) and lets other warnings
    through, as it did with catch_warnings + simplefilter("ignore", DecompressionBombWarning)."""
    from PIL import Image

    original = Image.open

    def warning_open(*args: object, **kwargs: object) -> Image.Image:
        warnings.warn("bomb", Image.DecompressionBombWarning, stacklevel=1)
        warnings.warn("something else", UserWarning, stacklevel=1)
        return original(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(Image, "open", warning_open)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        open_validated(jpeg(), DecodeLimits())
    assert [(w.category, str(w.message)) for w in seen] == [(UserWarning, "something else")]
