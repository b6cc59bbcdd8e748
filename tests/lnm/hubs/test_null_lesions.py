"""Null lesions: their size, place, reproducibility and independence of the batching."""

import numpy as np
import pytest

from shardmap.errors import InputError
from shardmap.lnm.hubs.null_lesions import MIN_INSIDE, MaskGrid, make_null_batch, shifted_lesion
from shardmap.lnm.hubs.null_plan import null_plan, nulls_per_lesion
from shardmap.lnm.lesions import LesionBatch, prepare_lesion_batch_files
from shardmap.lnm.nifti import load_mask


@pytest.fixture(scope="module")
def prepared(dataset, tmp_path_factory):
    folder = tmp_path_factory.mktemp("null-sources")
    batch_path = folder / "batch.npz"
    prepare_lesion_batch_files(dataset["mask"], dataset["lesions"], batch_path, folder / "batch.qc.tsv")
    return str(batch_path), LesionBatch.load(batch_path), load_mask(dataset["mask"])


def plan_of(batch, n):
    return null_plan([(lesion_id, None) for lesion_id in batch.lesion_ids], n)


def test_nulls_per_lesion_rounds_up_and_must_reach_ten():
    assert nulls_per_lesion(500, 12) == 42
    assert nulls_per_lesion(3, 12) == 1
    assert len(null_plan([("a", None), ("b", "g")], 19)) == 20
    with pytest.raises(InputError, match="gives 9 null lesion.*Set lnm.null_lesions.n to at least 20"):
        null_plan([("a", None), ("b", "g")], 18)


@pytest.mark.parametrize("method", ["shift", "sphere"])
def test_null_lesions_keep_their_source_size_and_lie_in_the_mask(prepared, method):
    batch_path, sources, mask = prepared
    plan = plan_of(sources, 40)
    nulls, rows = make_null_batch(plan, [batch_path], mask, method, seed=3)
    grid = MaskGrid(mask)
    for index, (null_id, source_id, _, _) in enumerate(plan):
        source = sources.positions_of(sources.lesion_ids.index(source_id))
        placed = nulls.positions_of(index)
        assert nulls.lesion_ids[index] == null_id
        assert len(np.unique(placed)) == len(placed)
        assert placed.min() >= 0 and placed.max() < mask.n_voxels  # mask positions: inside the mask
        if method == "sphere":
            assert len(placed) == len(source)
            # a ball: every voxel left out is at least as far from the centre as any taken
            centre = grid.world[(grid.ijk == [rows[index]["centre_i"], rows[index]["centre_j"],
                                              rows[index]["centre_k"]]).all(axis=1)][0]
            distance = ((grid.world - centre) ** 2).sum(axis=1)
            others = np.setdiff1d(np.arange(mask.n_voxels), placed)
            assert distance[placed].max() <= distance[others].min()
        else:
            assert MIN_INSIDE * len(source) <= len(placed) <= len(source)
            assert float(rows[index]["fraction_in_mask"]) == pytest.approx(len(placed) / len(source), abs=1e-4)


def test_a_shift_moves_the_shape_by_one_offset(prepared):
    batch_path, sources, mask = prepared
    index = sources.lesion_ids.index("sphere-rad")
    positions, weights = sources.positions_of(index), sources.weights_of(index)
    placed, _, inside, _ = shifted_lesion(positions, weights, MaskGrid(mask), np.random.default_rng(5))
    assert inside == 1.0 or inside >= MIN_INSIDE
    before, after = mask.ijk[positions], mask.ijk[placed]
    offsets = {tuple(o) for o in (after[:, None, :] - before[None, :, :]).reshape(-1, 3)}
    # one offset maps every placed voxel onto a source voxel
    common = [o for o in offsets if all(tuple(v - np.array(o)) in set(map(tuple, before)) for v in after)]
    assert common and common != [(0, 0, 0)]


def test_null_lesions_are_reproducible_different_and_independent_of_batching(prepared):
    batch_path, sources, mask = prepared
    plan = plan_of(sources, 40)
    whole, _ = make_null_batch(plan, [batch_path], mask, "shift", seed=7)
    again, _ = make_null_batch(plan, [batch_path], mask, "shift", seed=7)
    other_seed, _ = make_null_batch(plan, [batch_path], mask, "shift", seed=8)
    assert np.array_equal(whole.positions, again.positions)
    assert not np.array_equal(whole.positions, other_seed.positions)
    placed = {null_id: tuple(whole.positions_of(i)) for i, null_id in enumerate(whole.lesion_ids)}
    for start in range(0, len(plan), 5):  # other batches: the same lesions
        part, _ = make_null_batch(plan[start:start + 5], [batch_path], mask, "shift", seed=7)
        for i, null_id in enumerate(part.lesion_ids):
            assert tuple(part.positions_of(i)) == placed[null_id]
    for source_id in sources.lesion_ids:
        shapes = [placed[null_id] for null_id, source, _, _ in plan if source == source_id]
        assert len(set(shapes)) == len(shapes), source_id  # each index a different place


def test_a_lesion_that_fits_nowhere_else_is_named(prepared, monkeypatch):
    """Every try fails when no place can keep enough of the lesion inside (here: more than all of it)."""
    import shardmap.lnm.hubs.null_lesions as null_lesions

    monkeypatch.setattr(null_lesions, "MIN_INSIDE", 1.01)
    monkeypatch.setattr(null_lesions, "MAX_TRIES", 50)
    _, sources, mask = prepared
    with pytest.raises(InputError, match="lesion 'wide'.*method: sphere"):
        shifted_lesion(sources.positions_of(0), sources.weights_of(0), MaskGrid(mask), np.random.default_rng(0),
                       "lesion 'wide'")


def test_a_weighted_lesions_weights_move_with_its_voxels(prepared):
    """A probabilistic lesion shifted: each placed voxel keeps the weight of the source voxel
    it came from (one offset for all)."""
    _, sources, mask = prepared
    index = sources.lesion_ids.index("sphere-ras3")
    positions = sources.positions_of(index)
    weights = np.linspace(0.1, 1.0, len(positions))  # distinct, so each names its voxel
    placed, placed_weights, _, _ = shifted_lesion(positions, weights, MaskGrid(mask), np.random.default_rng(9))
    source_of = {w: mask.ijk[p] for p, w in zip(positions, weights)}
    offsets = {tuple(mask.ijk[p] - source_of[w]) for p, w in zip(placed, placed_weights)}
    assert len(offsets) == 1 and len(placed) >= MIN_INSIDE * len(positions)
