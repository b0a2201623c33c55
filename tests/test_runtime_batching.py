"""Chunking images for backends with a bounded batch range (TensorRT profiles, pt2 packages)."""

import numpy as np
import pytest

from lpn_edge.runtime.batching import run_in_batches


def test_chunks_stay_in_range_and_padding_is_dropped():
    seen = []

    def run(chunk):
        seen.append(len(chunk))
        return chunk.reshape(len(chunk), -1).sum(1, keepdims=True) + 1.0

    images = np.arange(11 * 2, dtype=np.float32).reshape(11, 2)
    out = run_in_batches(run, images, smallest=4, largest=5)
    assert seen == [5, 5, 4]  # the last row was padded up to the profile minimum
    np.testing.assert_array_equal(out[:, 0], images.sum(1) + 1.0)


@pytest.mark.parametrize("count", [1, 3])
def test_fewer_images_than_the_minimum(count):
    out = run_in_batches(lambda chunk: chunk * 2, np.ones((count, 3), np.float32), smallest=4, largest=8)
    assert out.shape == (count, 3) and (out == 2).all()
