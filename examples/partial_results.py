"""Keeping what a cancelled operation achieved: ``context.partial_result``."""

from __future__ import annotations

import anyio

from cancelpool import Cancelable, TimeoutCancelation, cancelable


async def translate_all(sentences: list[str]) -> list[str]:
    translated: list[str] = []
    async with Cancelable.with_timeout(0.05, name="translate") as op:
        op.context.partial_result = translated  # updated in place as work progresses
        for sentence in sentences:
            await anyio.sleep(0.02)  # stands for one slow model call
            translated.append(sentence.upper())
    return translated


@cancelable(timeout=0.05)
async def crawl(pages: int, cancelable: Cancelable) -> dict[str, int]:
    found: dict[str, int] = {}
    for page in range(pages):
        await anyio.sleep(0.02)  # stands for fetching a page
        found[f"page-{page}"] = page * 10
        cancelable.context.partial_result = dict(found)  # a snapshot per checkpoint
    return found


async def main() -> None:
    sentences = [f"sentence {i}" for i in range(10)]
    try:
        await translate_all(sentences)
    except TimeoutCancelation as exc:
        print(f"translate timed out; kept {len(exc.partial_result)} of {len(sentences)}:")
        print(f"  {exc.partial_result}")
    try:
        await crawl(100)
    except TimeoutCancelation as exc:
        print(f"crawl timed out; partial result: {exc.partial_result}")
        ctx = exc.context
        if ctx is not None:
            print(f"  status={ctx.status.value}, reason={ctx.cancel_reason}")


if __name__ == "__main__":
    anyio.run(main)
