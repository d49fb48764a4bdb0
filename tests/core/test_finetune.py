import numpy as np
import pytest

import napari_loopseg
from napari_loopseg.core.finetune import Pair, finetune_iter, score
from napari_loopseg.core.normalize import InputError
from napari_loopseg.core.registry import (
    ModelError,
    delete_model,
    export_model,
    import_model,
    load_model,
    model_paths,
    next_version_name,
    rename_model,
)
from napari_loopseg.core.review import reviewed_from_edits
from napari_loopseg.core.synthetic import make_nuclei
from napari_loopseg.core.train import TrainConfig

FAST = TrainConfig(steps=80, batch_size=4, crop=64, lr=3e-3, device="cpu", precision="fp32")


def _pairs(seeds, radius=(9, 14)):
    return [Pair(*make_nuclei((128, 128), seed=s, radius=radius)) for s in seeds]


def test_finetuning_improves_the_score_and_registers_a_child(tiny_model):
    """Larger nuclei than the tiny model saw: a short fine-tune must score better."""
    train, test = _pairs([20, 21, 22]), _pairs([30, 31])
    before = score(tiny_model.net, test, tiny_model.normalization, tiny_model.decode_params, "cpu")
    gen = finetune_iter(train, "tiny", FAST)
    progress = list(iter(lambda: next(gen, None), None))
    assert [p.step for p in progress] == list(range(1, 81))
    tuned = load_model("tiny-ft-1")
    after = score(tuned.net, test, tuned.normalization, tuned.decode_params, "cpu")
    assert after["ap50"] > before["ap50"] + 0.05, (before, after)
    assert tuned.parent == "tiny"
    training = tuned.card["training"]
    assert training["pairs"] == 3 and training["steps"] == 80 and training["device"] == "cpu"
    assert training["reviewed_pixels"] == 3 * 128 * 128


def test_stopping_early_registers_nothing(tiny_model):
    gen = finetune_iter(_pairs([1]), "tiny", FAST)
    next(gen)
    gen.close()
    assert "tiny-ft-1" not in model_paths()


def test_inputs_are_not_modified(tiny_model):
    pairs = _pairs([2])
    copies = [(p.image.copy(), p.labels.copy()) for p in pairs]
    napari_loopseg.finetune(
        [p.image for p in pairs],
        [p.labels for p in pairs],
        base="tiny",
        steps=3,
        batch_size=2,
        crop=32,
        device="cpu",
    )
    for p, (image, labels) in zip(pairs, copies, strict=True):
        assert np.array_equal(p.image, image) and np.array_equal(p.labels, labels)


def test_nothing_reviewed_is_an_error(tiny_model):
    image, labels = make_nuclei((64, 64), seed=0)
    with pytest.raises(InputError, match="nothing reviewed"):
        next(finetune_iter([Pair(image, labels, np.zeros(labels.shape, bool))], "tiny", FAST))
    with pytest.raises(InputError, match="differ in shape"):
        Pair(image, labels[:10])


def test_validation_pairs_report_scores(tiny_model):
    pairs = _pairs([3]) + [Pair(*make_nuclei((96, 96), seed=4), validation=True)]
    config = TrainConfig(steps=4, batch_size=2, crop=32, device="cpu", precision="fp32", validate_every=2)
    gen = finetune_iter(pairs, "tiny", config)
    scores = [p.validation for p in iter(lambda: next(gen, None), None) if p.validation]
    assert len(scores) == 2 and set(scores[0]) == {"ap50", "ap75", "map"}


def test_version_names_rename_delete_export_import(tiny_model, tmp_path):
    assert next_version_name("tiny") == "tiny-ft-1"
    napari_loopseg.finetune(
        [make_nuclei((64, 64), seed=5)[0]],
        [make_nuclei((64, 64), seed=5)[1]],
        base="tiny",
        steps=2,
        batch_size=2,
        crop=32,
        device="cpu",
    )
    assert next_version_name("tiny") == "tiny-ft-2" and next_version_name("tiny-ft-1") == "tiny-ft-2"
    napari_loopseg.finetune(
        [make_nuclei((64, 64), seed=6)[0]],
        [make_nuclei((64, 64), seed=6)[1]],
        base="tiny-ft-1",
        steps=2,
        batch_size=2,
        crop=32,
        device="cpu",
    )
    rename_model("tiny-ft-1", "mine")
    assert load_model("tiny-ft-2").parent == "mine"  # lineage follows the rename
    shared = export_model("mine", tmp_path / "mine.safetensors")
    delete_model("mine")
    assert "mine" not in model_paths()
    import_model(shared, name="from-colleague")
    assert load_model("from-colleague").card["name"] == "from-colleague"
    with pytest.raises(ModelError, match="bundled"):
        delete_model("nuclei")


def test_reviewed_region_is_edited_objects_plus_margin():
    labels = np.zeros((40, 40), int)
    labels[5:15, 5:15] = 1
    labels[25:35, 25:35] = 2
    touched = np.zeros(labels.shape, bool)
    touched[10, 10] = True  # one stroke inside object 1
    mask = reviewed_from_edits(labels, touched, margin=2)
    assert mask[5:15, 5:15].all() and mask[3, 10] and not mask[2, 10]
    assert not mask[25:35, 25:35].any()


def test_default_steps_follow_the_reviewed_area(tiny_model):
    from napari_loopseg.core.options import FINETUNE_DEFAULTS, MAX_STEPS, MIN_STEPS, auto_steps

    assert FINETUNE_DEFAULTS.steps is None
    steps = [auto_steps(n) for n in (0, 10_000, 1024**2, 3 * 1024**2, 100 * 1024**2)]
    assert steps == sorted(steps) and steps[0] == MIN_STEPS and steps[-1] == MAX_STEPS
    assert MIN_STEPS < auto_steps(3 * 1024**2) < MAX_STEPS
    # a default round resolves its step count and records it in the new version's card
    image, labels = make_nuclei((64, 64), seed=5)
    reviewed = np.zeros(labels.shape, bool)
    reviewed[:8, :8] = True
    gen = finetune_iter(
        [Pair(image, labels, reviewed)], "tiny", TrainConfig(steps=None, batch_size=1, crop=32)
    )
    first = next(gen)
    assert first.steps == MIN_STEPS
    gen.close()
