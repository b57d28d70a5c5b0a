"""Partitions: balanced k-means over the offline descriptor, deterministic for a seed, named by its digest."""

from __future__ import annotations

import pytest

from jobs import clusters, partition
from tests.looks import looks as three_looks


def test_a_partition_finds_the_looks_and_is_balanced_and_the_same_for_a_seed() -> None:
    records, pngs, looks = three_looks(12)
    points = clusters.descriptors(pngs)
    made = clusters.make("sha256:" + "0" * 64, records, points, 3, seed=7)
    assert partition.sizes(made) == [12, 12, 12]
    found = [made["assignment"][r["image_sha256"]] for r in records]
    # Each look lands in one cluster of its own (the clusters are the looks, up to their numbering).
    of_look = [{c for c, look_of in zip(found, looks, strict=True) if look_of == look} for look in range(3)]
    assert [len(found) for found in of_look] == [1, 1, 1] and len(set.union(*of_look)) == 3
    again = clusters.make("sha256:" + "0" * 64, records, clusters.descriptors(pngs), 3, seed=7)
    assert again == made
    assert partition.read(partition.encode(made), "sha256:" + "0" * 64) == made


def test_uneven_counts_differ_by_one_and_another_seed_or_k_is_another_partition() -> None:
    records, pngs, _ = three_looks(7)  # 21 images
    points = clusters.descriptors(pngs)
    four = clusters.make("sha256:" + "1" * 64, records, points, 4, seed=0)
    assert sorted(partition.sizes(four)) == [5, 5, 5, 6]
    assert clusters.make("sha256:" + "1" * 64, records, points, 4, seed=1)["digest"] != four["digest"]
    assert clusters.make("sha256:" + "1" * 64, records, points, 3, seed=0)["digest"] != four["digest"]
    assert clusters.make("sha256:" + "2" * 64, records, points, 4, seed=0)["digest"] != four["digest"]
    with pytest.raises(ValueError, match="into 22 clusters"):
        clusters.make("sha256:" + "1" * 64, records, points, 22, seed=0)


def test_a_partition_file_that_does_not_match_its_digest_or_dataset_is_refused() -> None:
    records, pngs, _ = three_looks(4)
    made = clusters.make("sha256:" + "3" * 64, records, clusters.descriptors(pngs), 2, seed=0)
    moved = dict(made, assignment={**made["assignment"], records[0]["image_sha256"]:
                                   1 - made["assignment"][records[0]["image_sha256"]]})
    with pytest.raises(ValueError, match="does not match its digest"):
        partition.read(partition.encode(moved))
    with pytest.raises(ValueError, match="not sha256:4"):
        partition.read(partition.encode(made), "sha256:" + "4" * 64)
    with pytest.raises(ValueError, match="not a readable partition"):
        partition.read(b"{\"k\": 2}")
