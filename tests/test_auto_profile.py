"""`auto` compiles only where compiling is expected to pay for itself: the cost model and the compile-cache
markers it reads. Pure Python: the numbers behind it are measured on an H200 (docs/runtime.md)."""

import json

import pytest

from renderer.speed import runtime
from renderer.speed.profiles import COMPILE_COLD_S, FAST_SAVES_PER_CALL_S, JobWork, Shape, choose_auto
from renderer.speed.settings import profile_settings

FULL = Shape(1024, 576, 25)


def jobs(n, shape=FULL, calls=25):
    return [JobWork(shape, calls)] * n


def test_a_nightly_batch_with_an_empty_cache_does_not_compile():
    choice = choose_auto(139.8, jobs(8))
    assert choice.profile == "balanced"
    assert choice.reason == ("not compiling: 8 jobs would save about 73 s against about 190 s of compiling (empty "
                             "compile cache, 1 shape)")


def test_the_same_batch_compiles_once_the_cache_is_warm():
    choice = choose_auto(139.8, jobs(8), warm=lambda shape: shape == FULL)
    assert choice == choose_auto(139.8, jobs(8), warm=lambda shape: True)
    assert choice.profile == "fast"
    assert "warm compile cache" in choice.reason


def test_a_long_batch_repays_a_cold_compile():
    enough = int(1.25 * COMPILE_COLD_S / (25 * FAST_SAVES_PER_CALL_S)) + 1
    assert choose_auto(139.8, jobs(enough)).profile == "fast"
    assert choose_auto(139.8, jobs(enough - 2)).profile == "balanced"


def test_fewer_calls_or_smaller_videos_save_less():
    assert choose_auto(139.8, jobs(8, calls=6), warm=lambda s: True).profile == "balanced"
    assert choose_auto(139.8, jobs(8, Shape(512, 288, 14)), warm=lambda s: True).profile == "balanced"


def test_every_shape_compiles_again():
    mixed = jobs(4) + jobs(4, Shape(576, 1024, 25))
    choice = choose_auto(139.8, mixed, warm=lambda shape: shape == FULL)
    assert "partly warm compile cache, 2 shapes" in choice.reason


def test_small_gpus_offload_and_unknown_batches_compile():
    assert choose_auto(15.6, jobs(100)).profile == "low"
    assert choose_auto(139.8).profile == "fast"


def test_a_compiled_job_marks_the_cache_warm_for_its_shape_gpu_and_torch(tmp_path, monkeypatch):
    monkeypatch.setenv("SVDRENDER_CACHE", str(tmp_path))
    fast = profile_settings("fast", "NVIDIA H200", 139.8)
    assert not runtime.is_warm(FULL, "NVIDIA H200")
    runtime.mark_warm(fast, FULL, "NVIDIA H200")
    assert runtime.is_warm(FULL, "NVIDIA H200")
    assert not runtime.is_warm(FULL, "NVIDIA H100 80GB HBM3")
    assert not runtime.is_warm(Shape(512, 288, 14), "NVIDIA H200")
    (marker,) = (tmp_path / "torch-compile" / "svdrender-warm").iterdir()
    assert json.loads(marker.read_text())["shape"] == [1024, 576, 25]
    # ... and `auto` on the same batch now compiles.
    assert profile_settings("auto", "NVIDIA H200", 139.8, jobs(8),
                            warm=lambda shape: runtime.is_warm(shape, "NVIDIA H200")).profile == "fast"
    monkeypatch.setattr(runtime.torch, "__version__", "9.9.9")
    assert not runtime.is_warm(FULL, "NVIDIA H200")


@pytest.mark.parametrize("profile", ["balanced", "off", "low"])
def test_only_compiled_jobs_mark_the_cache(tmp_path, monkeypatch, profile):
    monkeypatch.setenv("SVDRENDER_CACHE", str(tmp_path))
    runtime.mark_warm(profile_settings(profile, "NVIDIA H200", 139.8), FULL, "NVIDIA H200")
    assert not (tmp_path / "torch-compile" / "svdrender-warm").exists()
