"""torch at one intra-op thread around worker threads, and back after."""

from concurrent.futures import ThreadPoolExecutor

import pytest
import torch

from dicesearch.speed.worker_threads import one_intra_op_thread


def test_workers_run_at_one_thread_inside_and_the_count_comes_back_also_after_an_error():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        with one_intra_op_thread() as outside:
            assert outside == 2
            with ThreadPoolExecutor(max_workers=2) as pool:
                assert list(pool.map(lambda _: torch.get_num_threads(), range(2))) == [1, 1]
        assert torch.get_num_threads() == 2
        with pytest.raises(RuntimeError, match="a worker failed"), one_intra_op_thread():
            raise RuntimeError("a worker failed")
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
