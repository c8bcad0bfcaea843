"""A hyper-parameter search: fits side by side (joblib processes) or threads inside each fit?

One round = ``GridSearchCV(SKLearnClassifier(...), grid, cv=CV, refit=False).fit(x, y)``
over a 4-point grid (hidden (100,) or (256,) × learning rate 1e-3 or 3e-3),
on a Fashion-MNIST slice (12,000 images; 2,000 and one epoch under ``--quick``),
three ways on the same two cores (group "search-4pt"):

- ``n_jobs=1, 1 thread``: one fit after another, each on one thread;
- ``n_jobs=2, 1 thread per fit``: two loky workers, ``inner_max_num_threads=1``;
- ``n_jobs=1, 2 threads``: one fit after another, each on two threads (the reference).

The loky workers are started and have imported cdnn before the timing
(their start-up, about a second, is paid once per search session). FLOPs
count the training matrix products of every fit, as in
``test_bench_training.py``: ``6·Σ in·out − 2·in₀·out₀`` per training image
per epoch; the scoring (one forward pass over the held-out fold) is not counted.
"""

from __future__ import annotations

import pytest

SEED = 0
GRID = {"hidden": [(100,), (256,)], "learning_rate": [1e-3, 3e-3]}
FULL_IMAGES = 12_000
CV = 3
EPOCHS = {"full": 3, "quick": 1}
GROUP = "search-4pt"

#: contender: (n_jobs, threads per fit)
WAYS = {
    "n_jobs=1, 1 thread": (1, 1),
    "n_jobs=2, 1 thread per fit": (2, 1),
    "n_jobs=1, 2 threads": (1, 2),
}


def _search_flops(n: int, epochs: int) -> tuple[int, int]:
    """``(FLOPs, training images)`` of all fits of one search on ``n`` images."""
    flops = images = 0
    for hidden in GRID["hidden"]:
        sizes = [784, *hidden, 10]
        macs = sum(a * b for a, b in zip(sizes[:-1], sizes[1:]))
        per_image = 6 * macs - 2 * sizes[0] * sizes[1]
        fit_images = epochs * (n - n // CV) * CV * len(GRID["learning_rate"])
        flops += per_image * fit_images
        images += fit_images
    return flops, images


def _worker_ready() -> int:
    import cdnn
    import cdnn.wrappers  # noqa: F401  (scikit-learn too)

    return cdnn.get_num_threads()


@pytest.mark.parametrize("way", list(WAYS))
def test_grid_search(run, settings, fashion, way):
    joblib = pytest.importorskip("joblib", reason="scikit-learn (and joblib) are not installed")
    model_selection = pytest.importorskip("sklearn.model_selection", reason="scikit-learn is not installed")
    from cdnn.wrappers import SKLearnClassifier

    n_jobs, threads = WAYS[way]
    n = settings.epoch_images(FULL_IMAGES)
    epochs = EPOCHS["quick" if settings.quick else "full"]
    x, y = fashion[0][:n], fashion[1][:n]
    search = model_selection.GridSearchCV(
        SKLearnClassifier(epochs=epochs, random_state=SEED), GRID, cv=CV, n_jobs=n_jobs, refit=False
    )
    flops, images = _search_flops(n, epochs)
    with joblib.parallel_backend("loky", inner_max_num_threads=threads):
        if n_jobs > 1:  # start the workers (same backend settings: the timed search reuses them)
            ready = joblib.Parallel(n_jobs=n_jobs)(joblib.delayed(_worker_ready)() for _ in range(n_jobs))
            assert ready == [threads] * n_jobs
        run(
            lambda: search.fit(x, y),
            group=GROUP,
            contender=way,
            threads=threads,
            n_jobs=n_jobs,
            flops=flops,
            samples=images,
            unit="search",
            reference=(way == "n_jobs=1, 2 threads"),
            grid_points=4,
            cv=CV,
            epochs=epochs,
            images=n,
        )
    scores = search.cv_results_["mean_test_score"]
    assert scores.min() > 0.5, scores
