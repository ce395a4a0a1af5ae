"""git and disk work release the GIL: threads and asyncio keep running."""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from fixsec_workspace import AsyncWorkspaceManager
from forge import make_repository


def big_repository(path):
    files = {f"pkg{i // 100}/mod{i}.py": f"x = {i}\n" * 200 for i in range(4000)}
    return make_repository(path, files)


def test_parallel_prepares_leave_other_threads_running(manager, tmp_path):
    repos = [big_repository(tmp_path / f"up{i}") for i in range(3)]
    gaps = []
    stop = threading.Event()

    def ticker():
        last = time.perf_counter()
        while not stop.is_set():
            time.sleep(0.002)
            now = time.perf_counter()
            gaps.append(now - last)
            last = now

    tick = threading.Thread(target=ticker)
    tick.start()
    started = time.perf_counter()
    with ThreadPoolExecutor(3) as pool:
        done = list(pool.map(lambda i: manager.prepare(f"acme/r{i}", str(repos[i])), range(3)))
    took = time.perf_counter() - started
    stop.set()
    tick.join()
    assert {w.name for w in done} == {manager.workspace_name(f"acme/r{i}") for i in range(3)}
    assert took > 0.2, f"the prepares were too quick ({took:.3f} s) to show anything"
    # Had a prepare held the GIL, the ticker would have stalled for its length.
    assert max(gaps) < took / 8, f"ticker stalled {max(gaps):.3f} s of {took:.3f} s"


def test_asyncio_to_thread_keeps_the_loop_running(manager, tmp_path):
    repo = big_repository(tmp_path / "up")

    async def main():
        ticks = 0

        async def tick():
            nonlocal ticks
            while True:
                await asyncio.sleep(0.001)
                ticks += 1

        ticker = asyncio.create_task(tick())
        # AsyncWorkspaceManager is asyncio.to_thread around the manager.
        ws = await AsyncWorkspaceManager(manager=manager).prepare("acme/async", str(repo))
        ticker.cancel()
        return ws, ticks

    ws, ticks = asyncio.run(main())
    assert ws.path.is_dir()
    assert ticks > 20, f"the event loop ticked only {ticks} times during the prepare"
