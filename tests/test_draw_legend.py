"""The legend of an annotated semantic mask: one label per class, stacked without overlapping."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from visionkit import Classifications, SemanticMask
from visionkit.draw import annotate, color_for


def _rows_of(img: np.ndarray, color: tuple[int, int, int], x: int) -> list[int]:
    """Rows where column ``x`` shows exactly ``color`` (a legend label's fill; masks are blended)."""
    return np.flatnonzero((img[:, x] == np.array(color, np.uint8)).all(axis=1)).tolist()


@pytest.mark.parametrize("size", [(240, 320), (960, 1280)])
def test_semantic_legend_labels_do_not_overlap(size: tuple[int, int]) -> None:
    h, w = size
    names = ("background", "road", "car", "person", "tree")
    label_map = np.zeros((h, w), np.int32)
    # classes only in the lower half: the legend's corner keeps the image's own (black) pixels
    for i in range(1, len(names)):
        label_map[h // 2 :, (i - 1) * w // 4 : i * w // 4] = i
    mask = SemanticMask(label_map=label_map, class_names=names, metadata=(h, w))
    img = np.asarray(annotate(np.zeros((h, w, 3), np.uint8), mask))

    spans = []
    for i, name in enumerate(names):
        rows = _rows_of(img[: h // 2], color_for(i), x=5)
        assert rows, f"no legend label for {name!r}"
        # a label partly painted over by the next one shows fewer rows than the others, or a gap
        assert rows == list(range(rows[0], rows[-1] + 1)), f"{name!r} label is cut: rows {rows}"
        spans.append((rows[0], rows[-1]))
    heights = {b - a for a, b in spans}
    assert len(heights) == 1, f"labels of one font differ in visible height (one covers another): {spans}"
    for (_, bottom), (top, _) in itertools.pairwise(spans):
        assert top > bottom, f"legend labels overlap: {spans}"


def test_classification_legend_labels_do_not_overlap() -> None:
    cls = Classifications(
        class_id=[3, 1, 0], class_name=("cat", "dog", "fox"), confidence=[0.5, 0.3, 0.2], metadata=(100, 200)
    )
    img = np.asarray(annotate(np.zeros((100, 200, 3), np.uint8), cls))
    spans = []
    for cid in (3, 1, 0):
        rows = _rows_of(img, color_for(cid), x=5)
        assert rows == list(range(rows[0], rows[-1] + 1)), rows
        spans.append((rows[0], rows[-1]))
    assert len({b - a for a, b in spans}) == 1, f"one label covers part of another: {spans}"
    for (_, bottom), (top, _) in itertools.pairwise(spans):
        assert top > bottom, spans


def test_a_legend_of_more_than_ten_classes_ends_with_a_count_of_the_rest() -> None:
    names = tuple(f"class{i}" for i in range(15))
    label_map = np.arange(15, dtype=np.int32).repeat(20).reshape(1, 300).repeat(400, axis=0)
    mask = SemanticMask(label_map=label_map, class_names=names, metadata=(400, 300))
    img = np.asarray(annotate(np.zeros((400, 300, 3), np.uint8), mask, mask_alpha=0.0))
    assert all(_rows_of(img, color_for(i), x=5) for i in range(10))
    assert not any(_rows_of(img, color_for(i), x=5) for i in range(10, 15))
    assert _rows_of(img, (96, 96, 96), x=5), "no '+5 more' row after the first ten classes"
    few = SemanticMask(label_map=label_map[:, :200], class_names=names, metadata=(400, 200))
    img = np.asarray(annotate(np.zeros((400, 200, 3), np.uint8), few, mask_alpha=0.0))
    assert not _rows_of(img, (96, 96, 96), x=5)
