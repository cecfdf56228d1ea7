"""Progress bars for CancelPool jobs, drawn with rich by ``cancelpool.progress_display``.

Run it: ``python examples/progress_bars.py``. On a terminal the bars redraw in place
(rate and time left from each job's ``done``/``total``); on a pipe rich prints the
final state once. One job is cancelled halfway and keeps its partial result; the
display itself never cancels anything.
"""

from __future__ import annotations

import anyio

from cancelpool import CancelPool, JobCancelled, current_operation
from cancelpool.progress_display import ProgressDisplay


async def resize(images: int) -> int:
    """Resize ``images`` images, reporting each one and keeping the count done."""
    op = current_operation()
    assert op is not None
    for done in range(1, images + 1):
        await anyio.sleep(0.01)  # stands for one image
        op.context.partial_result = done
        await op.report_progress(f"image {done}/{images}", {"done": done, "total": images})
    return images


if __name__ == "__main__":
    with CancelPool(2) as pool, ProgressDisplay() as display:
        batches = [pool.submit(resize, n, name=f"batch-{n}") for n in (20, 40, 60)]
        stopped = pool.submit(resize, 1000, name="too-big")
        for handle in [*batches, stopped]:
            display.add(handle)
        display.wait(timeout=0.5)  # draw for a moment, then stop the big one
        stopped.cancel("too big for today")
        display.wait()
    print(f"resized {sum(h.result() for h in batches)} images in {len(batches)} batches")
    try:
        stopped.result()
    except JobCancelled as exc:
        print(f"too-big: cancelled ({exc.message}), kept {exc.partial_result} images")
