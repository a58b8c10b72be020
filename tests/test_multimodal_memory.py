"""The kept batch memory (smg.multimodal.memory): a block is handed out again only once no array
uses it, never to two live arrays, and no more than the limit stays mapped."""
import gc
import threading

import numpy as np

from smg.multimodal.memory import SMALLEST, BatchMemory

ROWS, COLUMNS = 1024, 2048  # 8 MiB of float32: above SMALLEST


def test_a_block_is_reused_only_after_its_last_array_dies():
    memory = BatchMemory()
    first = memory.empty(ROWS, COLUMNS)
    view = first[10:20]  # a view keeps the block as the array does
    address = first.ctypes.data
    del first
    gc.collect()
    second = memory.empty(ROWS, COLUMNS)
    assert second.ctypes.data != address and not np.shares_memory(second, view)
    view[:] = 1.0
    second[:] = 2.0
    assert (view == 1.0).all()
    del view
    gc.collect()
    assert memory.kept_bytes >= ROWS * COLUMNS * 4
    third = memory.empty(ROWS, COLUMNS)
    assert third.ctypes.data == address and memory.kept_bytes == 0
    assert third.shape == (ROWS, COLUMNS) and third.dtype == np.float32 and third.flags.c_contiguous


def test_shapes_small_arrays_and_a_block_too_large_to_waste():
    memory = BatchMemory()
    small = memory.empty(3, 5, 7)
    assert small.shape == (3, 5, 7) and small.nbytes < SMALLEST and memory.kept_bytes == 0
    big = memory.empty(4, ROWS, COLUMNS)
    big_address = big.ctypes.data
    del big
    gc.collect()
    assert memory.kept_bytes >= 4 * ROWS * COLUMNS * 4
    quarter = memory.empty(ROWS, COLUMNS)  # (a quarter of the kept block: a fresh one, not the big one)
    assert quarter.ctypes.data != big_address
    half = memory.empty(2, ROWS, COLUMNS)
    assert half.ctypes.data == big_address and half.shape == (2, ROWS, COLUMNS)


def test_no_more_than_the_limit_stays_mapped_and_the_oldest_freed_go_first():
    memory = BatchMemory(keep_bytes=3 * ROWS * COLUMNS * 4)
    arrays = [memory.empty(ROWS, COLUMNS) for _ in range(5)]
    del arrays
    gc.collect()
    assert 0 < memory.kept_bytes <= 3 * ROWS * COLUMNS * 4
    other = memory.empty(3, ROWS, COLUMNS)  # (a size none of the kept blocks fits)
    address = other.ctypes.data
    del other
    gc.collect()
    assert memory.kept_bytes == 3 * ROWS * COLUMNS * 4  # (it alone now: the older ones went)
    assert memory.empty(3, ROWS, COLUMNS).ctypes.data == address


def test_threads_never_share_a_live_block():
    memory = BatchMemory(keep_bytes=4 * ROWS * COLUMNS * 4)
    failures = []

    def work(mark: float):
        for _ in range(40):
            array = memory.empty(ROWS // 4, COLUMNS * (1 + int(mark) % 3))
            array[:] = mark
            threading.Event().wait(0.0005)  # (others allocate and free meanwhile)
            if not (array == mark).all():
                failures.append(mark)
            del array

    threads = [threading.Thread(target=work, args=(float(i),)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []
