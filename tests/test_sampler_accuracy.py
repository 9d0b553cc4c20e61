"""Every built-in preset samples a known latent distribution correctly through the real SVD pipeline; every refused
scheduler does not.

The tiny pipeline's UNet is replaced by the exact denoiser of a Gaussian mixture (tests/accuracy_mixture.py), so the
only error left is the sampler's. The measure is the Wasserstein-1 distance (W1) between the sampled latents (32 768
elements) and the mixture. The tolerance follows the step count: W1 ≤ 2.5 / N for N UNet calls, i.e. first-order
convergence with a constant 40 % above what SVD's own sampler (Euler, Karras σ) measures, 1.8 / N at N = 10 and 25.
A preset within it is as accurate per UNet call as the sampler SVD ships; the refused schedulers miss it by 4× or more
(or crash), which is what gives the check its teeth. Numbers for docs/schedulers.md come from
benchmarks/sampler_accuracy.py, which uses the same bench.

The ladder (draft / quick / fine) is held to issue 25's bar on the 1-D, 2-D and 4-D tests of accuracy_mixture.py
(sliced Wasserstein, float64, median of 3 seeds), relative to euler at 25 calls; see the last section.
"""

from __future__ import annotations

import importlib.util
import json
import pathlib
import sys

import diffusers
import pytest
import torch

from renderer import scheduler_presets
from renderer.builtin_models import SVD_SCHEDULER_CONFIG

# diffusers' integer-timestep schedulers (the refused ones) warn about numpy 2's __array__ protocol on every step.
pytestmark = [pytest.mark.filterwarnings("ignore:__array:DeprecationWarning")]


def _load_bench_module():
    # Loaded by path so the helper works whether or not tests/ is a package.
    if "accuracy_mixture" in sys.modules:
        return sys.modules["accuracy_mixture"]
    path = pathlib.Path(__file__).with_name("accuracy_mixture.py")
    spec = importlib.util.spec_from_file_location("accuracy_mixture", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class body runs
    spec.loader.exec_module(module)
    return module


accuracy = _load_bench_module()


def tolerance(unet_calls: int) -> float:
    return 2.5 / unet_calls


@pytest.fixture(scope="module")
def bench():
    diffusers.utils.logging.set_verbosity_error()  # from_config chatter about keys other classes ignore
    return accuracy.SamplerBench()


def preset_error(bench, preset, seed: int = 0) -> float:
    scheduler, call_kwargs = scheduler_presets.build(preset, SVD_SCHEDULER_CONFIG)
    return bench.error(scheduler, call_kwargs, seed)


@pytest.mark.parametrize("name", list(scheduler_presets.PRESETS))
def test_builtin_preset_samples_the_target_and_converges(bench, name):
    steps = scheduler_presets.PRESETS[name].default_steps
    error = preset_error(bench, name)
    assert error <= tolerance(scheduler_presets.unet_calls(name)), f"{name}: W1 {error:.4f} at {steps} steps"
    doubled = preset_error(bench, {"scheduler": name, "num_inference_steps": 2 * steps})
    assert doubled < 0.7 * error, f"{name}: W1 {error:.4f} → {doubled:.4f} with twice the steps"


@pytest.mark.parametrize(
    "preset",
    [
        {"scheduler": "euler", "sigmas": "exponential", "num_inference_steps": 25},
        {"scheduler": "euler", "sigmas": "ays", "num_inference_steps": 15},
        {"scheduler": "dpmpp_2m_karras", "sigmas": "exponential", "num_inference_steps": 15},
        {"scheduler": "dpmpp_2m_ays", "sigmas": "karras", "num_inference_steps": 25},
        {"scheduler": "dpmpp_2m_ays", "sigmas": list(scheduler_presets.exponential_sigmas(12))},
        {"scheduler": "euler", "sigmas": [700.0, 60.0, 12.0, 4.0, 1.6, 0.8, 0.4, 0.2, 0.1, 0.05, 0.02, 0.0]},
    ],
    ids=["euler-exponential", "euler-ays15", "dpmpp_2m-exponential", "dpmpp_2m_ays-karras25",
         "dpmpp_2m_ays-list", "euler-list"],
)
def test_recipe_schedules_sample_the_target(bench, preset):
    error = preset_error(bench, preset)
    assert error <= tolerance(scheduler_presets.unet_calls(preset)), f"W1 {error:.4f}"


def test_dpmpp_2m_ays_at_10_calls_beats_euler_at_25(bench):
    fast = preset_error(bench, {"scheduler": "dpmpp_2m_ays", "num_inference_steps": 10})
    reference = preset_error(bench, {"scheduler": "euler", "num_inference_steps": 25})
    assert fast <= reference


def test_sde_preset_is_accurate_for_other_seeds(bench):
    errors = [preset_error(bench, "dpmpp_2m_sde_karras", seed) for seed in (1, 2)]
    assert max(errors) <= tolerance(25), errors


# Refused schedulers built the way popular advice does, and how each one goes wrong with diffusers 0.42: a crash
# (the exception type) or samples far from the target ("wrong"). If diffusers changes, re-check SVD_FACTS.md.
C = SVD_SCHEDULER_CONFIG
REFUSED_BUILDS = {
    "DDIM": ("wrong", lambda S: S.DDIMScheduler.from_config(C, rescale_betas_zero_snr=True,
                                                            timestep_spacing="trailing")),
    "Euler a": ("wrong", lambda S: S.EulerAncestralDiscreteScheduler.from_config(C)),
    "LCM": ("wrong", lambda S: S.LCMScheduler.from_config(C)),
    "TCD": ("wrong", lambda S: S.TCDScheduler.from_config(C)),
    "UniPC": (AssertionError, lambda S: S.UniPCMultistepScheduler.from_config(C)),
    "FlowMatch": (AttributeError, lambda S: S.FlowMatchEulerDiscreteScheduler.from_config(C)),
    "DPM++ 2M": (IndexError, lambda S: S.DPMSolverMultistepScheduler.from_config(C, use_karras_sigmas=True)),
    "dpmpp_2m": ("wrong", lambda S: S.DPMSolverMultistepScheduler.from_config(C, use_karras_sigmas=False)),
    "DPM++ 2M SDE": (IndexError, lambda S: S.DPMSolverMultistepScheduler.from_config(
        C, algorithm_type="sde-dpmsolver++", use_karras_sigmas=True, timestep_spacing="trailing")),
    "DPM++ 2S": (IndexError, lambda S: S.DPMSolverSinglestepScheduler.from_config(C)),
    "Heun": (IndexError, lambda S: S.HeunDiscreteScheduler.from_config(C)),
    "DPM2": ("wrong", lambda S: S.KDPM2DiscreteScheduler.from_config(C)),
    "DPM2 a": ("wrong", lambda S: S.KDPM2AncestralDiscreteScheduler.from_config(C)),
    "DDPM": ("wrong", lambda S: S.DDPMScheduler.from_config(C)),
    "PNDM": ("wrong", lambda S: S.PNDMScheduler.from_config(C)),
    "DEIS": (IndexError, lambda S: S.DEISMultistepScheduler.from_config(C)),
}


@pytest.mark.parametrize("name", list(REFUSED_BUILDS))
def test_refused_scheduler_fails_the_same_check(bench, name):
    assert scheduler_presets.refusal(name) is not None
    outcome, make = REFUSED_BUILDS[name]
    scheduler = make(diffusers.schedulers)
    if outcome == "wrong":
        error = bench.error(scheduler, {"num_inference_steps": 25})
        assert error > 4 * tolerance(25), f"{name}: W1 {error:.4f}"
    else:
        with pytest.raises(outcome):
            bench.error(scheduler, {"num_inference_steps": 25})


@pytest.mark.parametrize("name", ["LMS", "DPM++ SDE"])
def test_refused_schedulers_with_optional_dependencies_fail(bench, name):
    module, make = {
        "LMS": ("scipy", lambda S: S.LMSDiscreteScheduler.from_config(C)),
        "DPM++ SDE": ("torchsde", lambda S: S.DPMSolverSDEScheduler.from_config(C, use_karras_sigmas=True)),
    }[name]
    __import__(module)  # a test dependency (pyproject's `test` extra): a missing one must fail, not skip
    assert scheduler_presets.refusal(name) is not None
    try:
        error = bench.error(make(diffusers.schedulers), {"num_inference_steps": 25})
    except (IndexError, RuntimeError, ValueError):
        return
    assert error > 4 * tolerance(25), f"{name}: W1 {error:.4f}"


@pytest.mark.parametrize("cls", ["EDMEulerScheduler", "EDMDPMSolverMultistepScheduler"])
def test_edm_schedulers_need_sigma_data_one(bench, cls):
    # diffusers' default σ_data = 0.5 is the EDM paper's, not SVD's: the reason `build` always sets 1.0.
    scheduler = getattr(diffusers, cls).from_config(C)
    assert scheduler.config.sigma_data == 0.5
    error = bench.error(scheduler, {"num_inference_steps": 25})
    assert error > 4 * tolerance(25), f"W1 {error:.4f}"


def test_timestep_spacing_and_zero_snr_do_nothing_to_svd(bench):
    # Why recipes may not set them: Euler follows the same σ and timesteps with or without; only the initial noise
    # scale moves, from √(700² + 1) to 700 (trailing spacing), a relative 1e-6.
    plain = diffusers.EulerDiscreteScheduler.from_config(C)
    tweaked = diffusers.EulerDiscreteScheduler.from_config(C, timestep_spacing="trailing", rescale_betas_zero_snr=True)
    plain_latents = bench.latents(plain, {"num_inference_steps": 10})
    tweaked_latents = bench.latents(tweaked, {"num_inference_steps": 10})
    assert torch.equal(tweaked.sigmas, plain.sigmas) and torch.equal(tweaked.timesteps, plain.timesteps)
    assert torch.allclose(tweaked_latents, plain_latents, atol=1e-4)


# --- the ladder on the 1-D, 2-D and 4-D tests (sliced Wasserstein, float64, median of 3 seeds) ----------------------
#
# Errors relative to SVD's own sampler at its default budget (euler, 25 calls). The tolerances leave room for the
# seed median (measured spread ≈ ±3 %) and nothing more; the measured values are in renderer/preset_accuracy.json.


@pytest.fixture(scope="module")
def reference_errors():
    return {name: accuracy.preset_nd_error(accuracy.REFERENCE, m) for name, m in accuracy.MIXTURES.items()}


def relative_errors(reference_errors, preset, tests=tuple(accuracy.MIXTURES), seeds=(0, 1, 2)) -> dict:
    return {name: accuracy.preset_nd_error(preset, accuracy.MIXTURES[name], seeds) / reference_errors[name]
            for name in tests}


def test_quick_at_8_calls_is_at_most_euler_25s_error_on_every_test(reference_errors):
    assert scheduler_presets.unet_calls("quick") == 8
    relative = relative_errors(reference_errors, "quick")
    assert max(relative.values()) <= 0.65, relative  # measured 0.52 / 0.54 / 0.55


def test_draft_at_6_calls_is_at_most_euler_25s_error_on_every_test(reference_errors):
    # Issue 25's bar for the ≤ 6-call preset: at most euler-25's error (ratio 1.0) on the 1-D, 2-D and 4-D tests.
    # The bound is tighter than the bar and looser than the measurement by the same ~15 %: the seed median moves ±3 %,
    # and draft's 1-D ratio moves with the last σ before 0 (0.71–0.85 for offsets 0.4–0.75 instead of its ½), so a
    # bound at 0.75 would pin that partial cancellation rather than the sampler.
    assert scheduler_presets.unet_calls("draft") == 6
    relative = relative_errors(reference_errors, "draft")
    assert max(relative.values()) <= 0.85, relative  # measured 0.74 / 0.56 / 0.56


def test_fine_at_10_calls_is_under_half_euler_25s_error_on_the_multidimensional_tests(reference_errors):
    assert scheduler_presets.unet_calls("fine") == 10
    relative = relative_errors(reference_errors, "fine", tests=("2-D", "4-D"))
    assert max(relative.values()) <= 0.45, relative  # measured 0.36 / 0.35 (1-D: 0.27)


@pytest.mark.parametrize("name", ["draft", "quick"])  # fine is quick's method with another default
def test_ladder_methods_converge_over_the_steps_they_accept(reference_errors, name):
    low, high = scheduler_presets.PRESETS[name].step_range
    errors = [accuracy.preset_nd_error({"scheduler": name, "num_inference_steps": n}, accuracy.MIXTURE_2D, seeds=(0,))
              for n in (low, 10, 25, high)]
    assert all(b < 0.6 * a for a, b in zip(errors, errors[1:])), errors


def test_published_accuracy_is_what_the_benchmark_measures(reference_errors):
    # `svdrender presets` shows these numbers: they must not go stale when a preset changes.
    published = json.loads(scheduler_presets.PRESET_ACCURACY_FILE.read_text(encoding="utf-8"))
    assert list(published["presets"]) == list(scheduler_presets.LADDER)
    for name, entry in published["presets"].items():
        assert entry["calls"] == scheduler_presets.unet_calls(name)
        measured = relative_errors(reference_errors, name, seeds=(0,))
        for test, ratio in entry["relative_error"].items():
            assert measured[test] == pytest.approx(ratio, rel=0.1), (name, test)
