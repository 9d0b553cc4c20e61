"""Scheduler presets: names, refusals, validation messages, building real diffusers schedulers, seeded SDE sampling."""

from __future__ import annotations

import dataclasses
import inspect
import json
import math
import pathlib
import re
import subprocess
import sys

import numpy as np
import pytest

from renderer import scheduler_presets
from renderer.scheduler_presets import (
    PRESETS,
    REFUSED,
    REFUSED_OPTIONS,
    build,
    canonical_name,
    check_preset,
    presets_table,
    refusal,
    resolve,
    resolved_steps,
    seed_scheduler,
    unet_calls,
)
from renderer.builtin_models import SVD_SCHEDULER_CONFIG

# diffusers' Euler warns about numpy 2's __array__ protocol when it computes σ from its betas.
pytestmark = [pytest.mark.filterwarnings("ignore:__array:DeprecationWarning")]

# --- torch-free parts ---------------------------------------------------------------------------------------------


def test_importing_schedulers_does_not_import_torch_or_diffusers():
    code = ("import sys, renderer.scheduler_presets as s; s.check_preset({'scheduler': 'DDIM'}); s.presets_table(); "
            "s.resolve('dpmpp_2m_ays'); print(sorted(m for m in ('torch', 'diffusers', 'numpy') if m in sys.modules))")
    repo = pathlib.Path(__file__).resolve().parent.parent
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=repo)
    assert result.stdout.strip() == "[]"


@pytest.mark.parametrize(
    ("written", "canonical"),
    [
        ("euler", "euler"),
        ("Euler", "euler"),
        ("euler_karras", "euler"),
        ("Euler Karras", "euler"),
        ("EulerDiscreteScheduler", "euler"),
        ("DPM++ 2M SDE Karras", "dpmpp_2m_sde_karras"),
        ("dpmpp-2m-sde-karras", "dpmpp_2m_sde_karras"),
        ("DPM++ 2M Karras", "dpmpp_2m_karras"),
        ("EDMDPMSolverMultistepScheduler", "dpmpp_2m_karras"),
        ("EDMEulerScheduler", "edm_euler"),
        ("Align Your Steps", "ays"),
        ("AYS", "ays"),
        ("DPM++ 2M AYS", "dpmpp_2m_ays"),
        ("euler_exp", "euler_exponential"),
    ],
)
def test_canonical_name_recognises_names_users_know(written, canonical):
    assert canonical_name(written) == canonical


@pytest.mark.parametrize("name", ["DDIM", "Euler a", "LCM", "dpmpp_2m", "unknown", ""])
def test_canonical_name_is_none_for_anything_else(name):
    assert canonical_name(name) is None


@pytest.mark.parametrize(
    ("written", "refused", "suggestion"),
    [
        ("DDIM", "DDIM", "euler"),
        ("DDIMScheduler", "DDIM", "euler"),
        ("Euler a", "Euler a", "dpmpp_2m_sde_karras"),
        ("euler_ancestral", "Euler a", "dpmpp_2m_sde_karras"),
        ("EulerAncestralDiscreteScheduler", "Euler a", "dpmpp_2m_sde_karras"),
        ("lcm", "LCM", "dpmpp_2m_ays"),
        ("TCD", "TCD", "dpmpp_2m_ays"),
        ("UniPC", "UniPC", "dpmpp_2m_ays"),
        ("flow_match_euler", "FlowMatch", "euler"),
        ("DPM++ 2M", "DPM++ 2M", "dpmpp_2m_karras"),
        ("DPMSolverMultistepScheduler", "DPM++ 2M", "dpmpp_2m_karras"),
        ("dpmpp_2m_sde", "DPM++ 2M SDE", "dpmpp_2m_sde_karras"),
    ],
)
def test_refusal_gives_a_reason_and_a_builtin_suggestion(written, refused, suggestion):
    found = refusal(written)
    assert found is not None and found.name == refused and found.suggestion == suggestion
    assert found.reason and "\n" not in found.reason


def test_every_refusal_suggests_a_builtin_preset_and_no_name_is_both():
    for item in REFUSED.values():
        assert item.suggestion in PRESETS
        assert canonical_name(item.name) is None
    for preset in PRESETS.values():
        assert refusal(preset.name) is None and all(refusal(alias) is None for alias in preset.aliases)


def test_presets_are_frozen_data():
    with pytest.raises(dataclasses.FrozenInstanceError):
        PRESETS["euler"].default_steps = 5
    with pytest.raises(TypeError):
        PRESETS["euler"].scheduler_options["use_karras_sigmas"] = False


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ({"scheduler": "DDIM"},
         [(("scheduler",), "'DDIM' is wrong for SVD: DDIMScheduler gives SVD's UNet integer timesteps instead of "
                           "t = 0.25·ln σ (wrong videos, no error); zero-SNR rescaling and trailing spacing do not "
                           "change that; use 'euler' instead")]),
        ({"scheduler": "eulr"}, [(("scheduler",), "unknown scheduler 'eulr'; did you mean 'euler'?")]),
        ({"scheduler": "DPM++ 2M SDE Karas"},
         [(("scheduler",), "unknown scheduler 'DPM++ 2M SDE Karas'; did you mean 'dpmpp_2m_sde_karras'?")]),
        ({"sigmas": [700, 10, 20, 0]}, [(("sigmas", 2), "sigmas must be strictly decreasing")]),
        ({"sigmas": [800, 10, 0.001, 0]},
         [(("sigmas", 0), "σ 800 is outside SVD's range [0.002, 700] (the last σ may also be 0)"),
          (("sigmas", 2), "σ 0.001 is outside SVD's range [0.002, 700] (the last σ may also be 0)")]),
        ({"sigmas": [700, 0, 0]}, [(("sigmas", 1), "only the last σ may be 0")]),
        ({"sigmas": [700, "1", 0]}, [(("sigmas", 1), "sigmas must be numbers, got '1'")]),
        ({"sigmas": [700]}, [(("sigmas",), "sigmas needs at least 2 values: each step goes from one σ to the next")]),
        ({"sigmas": "karas"},
         [(("sigmas",), "unknown σ schedule 'karas' (karras, exponential, ays or ays_min); did you mean 'karras'?")]),
        ({"sigmas": [700, 1, 0], "num_inference_steps": 25},
         [(("sigmas",), "3 σ make 2 steps but num_inference_steps is 25; leave num_inference_steps out")]),
        ({"scheduler": "dpmpp_2m_karras", "sigmas": "ays"},
         [(("sigmas",), "'dpmpp_2m_karras' cannot follow sigmas: ays: EDMDPMSolverMultistepScheduler makes its own "
                        "karras or exponential schedule; use 'dpmpp_2m_ays' for that schedule")]),
        ({"timesteps": [999, 500, 1]},
         [(("timesteps",), "timesteps is refused: SVD's UNet is conditioned on t = 0.25·ln σ, not on integer "
                           "timesteps, and the SVD pipeline takes no `timesteps`; write the schedule as `sigmas: [...]`")]),
        ({"timestep_spacing": "trailing"},
         [(("timestep_spacing",), "timestep_spacing is refused: it does nothing to SVD's schedule (its σ come from "
                                  "sigma_min/sigma_max, not from spaced timesteps)")]),
        ({"rescale_betas_zero_snr": True},
         [(("rescale_betas_zero_snr",), "rescale_betas_zero_snr is refused: it does nothing to SVD's schedule "
                                        "(σ_max stays 700), and zero terminal SNR needs a model trained for it")]),
        ({"scheduler": "dpmpp_2m_karras", "scheduler_options": {"solver_ordr": 3}},
         [(("scheduler_options", "solver_ordr"),
           "unknown option 'solver_ordr' for EDMDPMSolverMultistepScheduler; did you mean 'solver_order'?")]),
        ({"scheduler": "dpmpp_2m_ays", "scheduler_options": {"rho": 3}},
         [(("scheduler_options", "rho"), "unknown option 'rho': DPMPP2MScheduler takes no scheduler_options")]),
        ({"scheduler": "euler", "scheduler_options": {"timestep_spacing": "trailing"}},
         [(("scheduler_options", "timestep_spacing"), "timestep_spacing is refused: it does nothing to SVD's "
                                                      "schedule (its σ come from sigma_min/sigma_max, not from "
                                                      "spaced timesteps)")]),
        ({"scheduler": "dpmpp_2m_karras", "scheduler_options": {"solver_order": 4}},
         [(("scheduler_options", "solver_order"), "solver_order must be one of 1, 2, 3, got 4")]),
        ({"scheduler": "edm_euler", "scheduler_options": {"sigma_min": 1000}},
         [(("scheduler_options", "sigma_min"), "sigma_min must be within [0.002, 700], got 1000")]),
        ({"scheduler_options": ["rho"]},
         [(("scheduler_options",), "scheduler_options must be a mapping of option: value")]),
    ],
)
def test_check_preset_messages(spec, expected):
    assert check_preset(spec) == expected


@pytest.mark.parametrize(
    "spec",
    [
        {},
        {"scheduler": "Euler"},
        {"scheduler": "ays", "num_inference_steps": 14},
        {"sigmas": [700, 54.5, 1.0, 0.1, 0.002]},
        {"sigmas": [700.0, 1, 0], "num_inference_steps": 2},
        {"sigmas": "exponential", "num_inference_steps": 30},
        {"scheduler": "dpmpp_2m_sde_karras", "sigmas": "karras", "scheduler_options": {"rho": 5, "solver_order": 3}},
        {"scheduler": "dpmpp_2m_ays", "sigmas": [700, 5, 0.5, 0.0]},
        {"scheduler": "euler", "motion_bucket_id": 127, "fps": 7},  # other preset keys are not this module's business
    ],
)
def test_check_preset_accepts_correct_presets(spec):
    assert check_preset(spec) == []


def test_refused_options_explain_every_refused_preset_key():
    for key in ("timesteps", "timestep_spacing", "rescale_betas_zero_snr"):
        assert REFUSED_OPTIONS[key] and "\n" not in REFUSED_OPTIONS[key]
    for cls in scheduler_presets.SCHEDULER_CLASSES.values():  # an option cannot be both allowed and refused
        assert not set(cls.options) & set(REFUSED_OPTIONS)
        assert set(cls.options) <= set(scheduler_presets.OPTION_RULES) and set(cls.options) <= set(cls.init_keys)


def test_ays_interpolation_keeps_nvidia_knots():
    ten = scheduler_presets.ays_sigmas(10)
    assert ten == scheduler_presets.AYS_SVD_SIGMAS[:-1] + (0.0,)
    twenty = scheduler_presets.ays_sigmas(20)
    assert twenty[::2] == ten  # every other σ of 20 steps is a knot of the 10-step list
    assert math.isclose(twenty[1], math.sqrt(700.0 * 54.5))  # halfway in ln σ
    for n in (1, 3, 7, 14, 25, 50):
        sigmas = scheduler_presets.ays_sigmas(n)
        assert len(sigmas) == n + 1 and sigmas[0] == 700.0 and sigmas[-1] == 0.0
        assert all(a > b for a, b in zip(sigmas, sigmas[1:]))


@pytest.mark.parametrize(
    ("preset", "steps"),
    [("euler", 25), ("ays", 10), ("dpmpp_2m_ays", 10), ({"scheduler": "ays", "num_inference_steps": 14}, 14),
     ({"sigmas": [700, 10, 1, 0]}, 3), ({"scheduler": "edm_euler", "sigmas": "exponential"}, 25)],
)
def test_resolved_steps_and_unet_calls(preset, steps):
    assert resolved_steps(preset) == steps == unet_calls(preset)


def test_resolved_steps_takes_an_explicit_count_unless_a_sigma_list_sets_it():
    assert resolved_steps("euler", 12) == 12 == unet_calls("dpmpp_2m_ays", 12)
    assert resolved_steps({"sigmas": [700, 10, 1, 0]}, 25) == 3


def test_presets_table_lists_presets_and_refusals():
    table = presets_table()
    for preset in PRESETS.values():
        line = next(line for line in table.splitlines() if line.strip().startswith(preset.name + " "))
        assert f"{preset.default_steps} calls" in line and preset.description in line
        for alias in preset.aliases:
            assert alias in table
    for item in REFUSED.values():
        assert f"{item.reason}; use '{item.suggestion}'" in table
    assert table.index("Refused") > table.index("dpmpp_2m_ays")


def test_presets_table_shows_the_ladders_measured_accuracy():
    published = json.loads(scheduler_presets.PRESET_ACCURACY_FILE.read_text(encoding="utf-8"))["presets"]
    lines = presets_table().splitlines()
    for name in scheduler_presets.LADDER:
        at = next(i for i, line in enumerate(lines) if line.strip().startswith(name + " "))
        ratios = ", ".join(f"{test} {ratio:.2f}" for test, ratio in published[name]["relative_error"].items())
        assert lines[at + 1].strip() == f"error relative to euler at 25 calls: {ratios}"
        assert lines[at + 2].strip() == "steps: 3 to 50"
    assert [line.strip().split()[0] for line in lines if "error relative to euler" in line] == ["error"] * 3


def test_ays_min_ends_at_sigma_min_and_keeps_nvidia_knots():
    assert scheduler_presets.ays_min_sigmas(10) == scheduler_presets.AYS_SVD_SIGMAS
    for n in (3, 6, 8, 13, 50):
        sigmas = scheduler_presets.ays_min_sigmas(n)
        assert len(sigmas) == n + 1 and sigmas[0] == 700.0 and sigmas[-1] == 0.002
        assert all(a > b for a, b in zip(sigmas, sigmas[1:]))
    assert scheduler_presets.ays_min_sigmas(20)[::2] == scheduler_presets.AYS_SVD_SIGMAS


@pytest.mark.parametrize("steps", [2, 51])
@pytest.mark.parametrize("name", ["draft", "quick", "fine"])
def test_ladder_presets_refuse_step_counts_outside_their_tested_range(name, steps):
    with pytest.raises(ValueError) as error:
        resolve({"scheduler": name, "num_inference_steps": steps})
    assert str(error.value) == (f"num_inference_steps: '{name}' takes 3 to 50 steps (the range its accuracy is "
                                f"tested over), got {steps}; 'dpmpp_2m_ays' and 'euler' take any count")
    assert resolved_steps({"scheduler": name, "num_inference_steps": 50}) == 50


def test_recipe_with_a_ladder_preset_out_of_range_names_the_line(write_recipe):
    from renderer.errors import RecipeError
    from renderer.recipe import load_recipe

    path = write_recipe("""
        version: 1
        model: builtin:tiny
        output: {dir: out}
        defaults: {num_inference_steps: 60}
        presets:
          mine: {scheduler: quick, num_inference_steps: 2}
        items:
          - {name: coffee, image: inputs/coffee.jpg, presets: [mine, draft, euler]}
    """)
    with pytest.raises(RecipeError) as error:
        load_recipe(path)
    assert str(error.value).splitlines() == [
        f"{path}:4:33: $.defaults.num_inference_steps: 'draft' takes 3 to 50 steps (the range its accuracy is "
        "tested over), got 60; 'dpmpp_2m_ays' and 'euler' take any count",
        f"{path}:6:49: $.presets.mine.num_inference_steps: 'quick' takes 3 to 50 steps (the range its accuracy is "
        "tested over), got 2; 'dpmpp_2m_ays' and 'euler' take any count",
    ]


# --- building real diffusers schedulers ---------------------------------------------------------------------------

import diffusers  # noqa: E402  (here, below the torch-free tests, which check what importing renderer loads)
import torch  # noqa: E402


def test_scheduler_class_table_matches_diffusers():
    from renderer import samplers

    for cls in scheduler_presets.SCHEDULER_CLASSES.values():
        module = samplers if cls.module == "renderer.samplers" else diffusers
        parameters = list(inspect.signature(getattr(module, cls.name).__init__).parameters)
        assert set(cls.init_keys) == set(parameters) - {"self"}, cls.name


def test_ipndm_weights_are_adams_bashforth_on_any_steps():
    from renderer.samplers.ipndm import adams_bashforth_weights

    # Equal steps: PNDM's classic weights, in units of the step (σ runs downwards, so h < 0).
    weights = adams_bashforth_weights([10.0, 11.0, 12.0], 10.0, 9.0)
    assert weights == pytest.approx([-23 / 12, 16 / 12, -5 / 12])
    # Unequal steps: exact for every quadratic slope, at SVD's σ scale.
    nodes, start, end = [54.5, 700.0, 900.0], 54.5, 15.886
    for coefficients in ([1.0, 0, 0], [0, 1.0, 0], [0.3, -0.2, 0.01]):
        slope = np.polynomial.Polynomial(coefficients)
        exact = slope.integ()(end) - slope.integ()(start)
        assert sum(w * slope(n) for w, n in zip(adams_bashforth_weights(nodes, start, end), nodes)) == pytest.approx(exact)


def test_ipndm_corrector_runs_only_on_lists_it_converges_on():
    from renderer.samplers import IPNDMScheduler
    from renderer.samplers.ipndm import CORRECTOR_MIN_STEPS

    def run(corrector: bool, steps: int) -> torch.Tensor:
        scheduler = IPNDMScheduler(corrector=corrector)
        scheduler.set_timesteps(sigmas=list(scheduler_presets.ays_min_sigmas(steps)))
        x = torch.linspace(-700.0, 700.0, 16, dtype=torch.float64)
        for t in scheduler.timesteps:  # a denoiser that always answers 0.3: v = (0.3 − c_skip·x)/c_out
            sigma = math.exp(4 * float(t))
            inner = scheduler.scale_model_input(x, t) * math.sqrt(sigma**2 + 1)
            v = (0.3 - inner / (sigma**2 + 1)) / (-sigma / math.sqrt(sigma**2 + 1))
            x = scheduler.step(v, t, x).prev_sample
        return x

    short = CORRECTOR_MIN_STEPS - 1
    assert torch.equal(run(True, short), run(False, short))
    assert not torch.equal(run(True, CORRECTOR_MIN_STEPS), run(False, CORRECTOR_MIN_STEPS))


def test_ays_list_equals_diffusers():
    from diffusers.schedulers import AysSchedules

    assert list(scheduler_presets.ays_sigmas(10)) == AysSchedules["StableDiffusionVideoSigmas"]


@pytest.mark.parametrize("name", list(PRESETS))
@pytest.mark.parametrize("steps", [None, 7])
def test_every_preset_builds_and_sets_its_timesteps(name, steps):
    spec = {"scheduler": name} if steps is None else {"scheduler": name, "num_inference_steps": steps}
    scheduler, call_kwargs = build(spec, SVD_SCHEDULER_CONFIG)
    resolved = resolve(spec, SVD_SCHEDULER_CONFIG)
    assert type(scheduler).__name__ == PRESETS[name].scheduler_class
    n = steps or PRESETS[name].default_steps
    if resolved.pass_sigmas:
        assert call_kwargs == {"sigmas": list(resolved.sigmas)}
    else:
        assert call_kwargs == {"num_inference_steps": n}
    scheduler.set_timesteps(**call_kwargs)  # what the pipeline's retrieve_timesteps does
    assert len(scheduler.timesteps) == n == resolved.unet_calls
    # SVD's conditioning: t = 0.25·ln σ, σ from 700 down to 0.002, ending at 0; and what plan/manifests record
    # (resolve's σ list) is what the scheduler follows.
    sigmas = scheduler.sigmas.to(torch.float64)
    assert torch.allclose(scheduler.timesteps.to(torch.float64), 0.25 * torch.log(sigmas[:-1]), atol=1e-5)
    assert torch.allclose(sigmas, torch.tensor(resolved.sigmas, dtype=torch.float64), rtol=1e-5)
    assert math.isclose(scheduler.init_noise_sigma, math.sqrt(700.0**2 + 1), rel_tol=1e-5)
    if "sigma_data" in scheduler.config:
        assert scheduler.config.sigma_data == 1.0
    assert scheduler.config.prediction_type == "v_prediction"


def test_build_honours_recipe_schedule_and_options():
    scheduler, kwargs = build({"scheduler": "dpmpp_2m_sde_karras", "sigmas": "exponential", "num_inference_steps": 12,
                               "scheduler_options": {"solver_order": 3, "sigma_min": 0.01}}, SVD_SCHEDULER_CONFIG)
    assert kwargs == {"num_inference_steps": 12}
    assert scheduler.config.sigma_schedule == "exponential" and scheduler.config.solver_order == 3
    assert scheduler.config.algorithm_type == "sde-dpmsolver++" and scheduler.config.sigma_min == 0.01
    scheduler.set_timesteps(**kwargs)
    assert math.isclose(float(scheduler.sigmas[-2]), 0.01, rel_tol=1e-5)

    sigmas = [700.0, 30.0, 2.0, 0.3, 0.0]
    scheduler, kwargs = build({"scheduler": "euler", "sigmas": sigmas}, SVD_SCHEDULER_CONFIG)
    assert kwargs == {"sigmas": sigmas}
    # The engine passes the resolved step count with every preset; a σ list sets its own.
    scheduler, kwargs = build({"scheduler": "dpmpp_2m_ays", "sigmas": sigmas, "num_inference_steps": 25},
                              SVD_SCHEDULER_CONFIG)
    assert kwargs == {"sigmas": sigmas}
    scheduler, kwargs = build({"sigmas": "exponential", "num_inference_steps": 9}, SVD_SCHEDULER_CONFIG)
    assert kwargs == {"num_inference_steps": 9} and scheduler.config.use_exponential_sigmas
    assert not scheduler.config.use_karras_sigmas


@pytest.mark.parametrize(
    ("preset", "message"),
    [
        ("DDIM", "scheduler: 'DDIM' is wrong for SVD: DDIMScheduler gives SVD's UNet integer timesteps"),
        ({"scheduler": "euler", "sigmas": [700, 800, 0]}, "sigmas[1]: σ 800 is outside SVD's range"),
        ({"scheduler": "euler", "timestep_spacing": "trailing"}, "timestep_spacing: timestep_spacing is refused"),
        ({"scheduler": "edm_euler", "scheduler_options": {"sigma_dat": 1}},
         "scheduler_options.sigma_dat: unknown option 'sigma_dat' for EDMEulerScheduler"),
    ],
)
def test_build_refuses_with_the_check_preset_message(preset, message):
    with pytest.raises(ValueError, match="^" + re.escape(message)):
        build(preset, SVD_SCHEDULER_CONFIG)


def test_build_rejects_a_bad_step_count():
    with pytest.raises(ValueError, match="^num_inference_steps: num_inference_steps must be a whole number ≥ 1, got 0"):
        build({"scheduler": "euler", "num_inference_steps": 0}, SVD_SCHEDULER_CONFIG)


def test_build_rejects_from_config_leftovers(monkeypatch):
    # If the option table says a class takes something the installed diffusers does not, diffusers would only warn
    # and drop it; build must fail instead.
    edm = scheduler_presets.SCHEDULER_CLASSES["EDMEulerScheduler"]
    monkeypatch.setitem(scheduler_presets.SCHEDULER_CLASSES, "EDMEulerScheduler",
                        dataclasses.replace(edm, options=(*edm.options, "s_churn")))
    monkeypatch.setitem(scheduler_presets.OPTION_RULES, "s_churn", scheduler_presets.OptionRule(minimum=0.0))
    with pytest.raises(ValueError, match="^EDMEulerScheduler does not take s_churn"):
        build({"scheduler": "edm_euler", "scheduler_options": {"s_churn": 1.0}}, SVD_SCHEDULER_CONFIG)


def test_build_needs_the_models_own_config():
    # e.g. the config of a scheduler an earlier job swapped in, instead of the one the model shipped
    edm_config = dict(build("edm_euler", SVD_SCHEDULER_CONFIG)[0].config)
    with pytest.raises(ValueError, match="^base_config is not an SVD scheduler config: timestep_type is not"):
        build("euler", edm_config)
    with pytest.raises(ValueError, match="^base_config is not an SVD scheduler config: it is a DDIMScheduler config"):
        build("euler", {**SVD_SCHEDULER_CONFIG, "_class_name": "DDIMScheduler"})
    with pytest.raises(ValueError, match="prediction_type is not 'v_prediction'"):
        build("euler", {**SVD_SCHEDULER_CONFIG, "prediction_type": "epsilon"})


def test_build_accepts_a_pipeline_scheduler_config():
    # What the engine passes: dict(pipe.scheduler.config), with diffusers' private keys.
    config = diffusers.EulerDiscreteScheduler.from_config(SVD_SCHEDULER_CONFIG).config
    scheduler, _ = build("dpmpp_2m_karras", dict(config))
    assert scheduler.config.sigma_max == 700.0 and scheduler.config.sigma_min == 0.002


# --- seeded stochastic sampling on the real tiny pipeline ---------------------------------------------------------


@pytest.fixture(scope="module")
def tiny():
    import PIL.Image

    from renderer.builtin_models import build_tiny_pipeline

    return build_tiny_pipeline(), PIL.Image.new("RGB", (64, 64), (200, 120, 40))


def _render(tiny, seeded: bool, seed: int = 1234):
    pipe, image = tiny
    pipe.scheduler, call_kwargs = build({"scheduler": "dpmpp_2m_sde_karras", "num_inference_steps": 3},
                                       SVD_SCHEDULER_CONFIG)
    generator = torch.Generator().manual_seed(seed)
    if seeded:
        seed_scheduler(pipe.scheduler, generator)
    # Latents are the frames before the (deterministic, and on CPU slow) VAE decode.
    return pipe(image, height=64, width=64, generator=generator, output_type="latent", **call_kwargs).frames


def test_seed_scheduler_makes_sde_frames_depend_on_the_seed_only(tiny):
    torch.manual_seed(0)
    first = _render(tiny, seeded=True)
    torch.rand(10_000)  # other jobs ran in between
    torch.manual_seed(99)
    again = _render(tiny, seeded=True)
    assert torch.equal(first, again)
    assert not torch.equal(first, _render(tiny, seeded=True, seed=4321))


def test_without_seed_scheduler_sde_frames_follow_the_global_rng(tiny):
    # The pipeline's own behaviour, which is why seed_scheduler exists (and why the test above has teeth).
    torch.manual_seed(0)
    first = _render(tiny, seeded=False)
    torch.rand(10_000)
    assert not torch.equal(first, _render(tiny, seeded=False))


def test_seed_scheduler_repoints_and_leaves_deterministic_schedulers_alone():
    scheduler, _ = build("dpmpp_2m_sde_karras", SVD_SCHEDULER_CONFIG)
    sample = torch.zeros(1, 2, 4, 2, 2)

    def two_steps(generator):
        seed_scheduler(scheduler, generator)
        scheduler.set_timesteps(num_inference_steps=3)
        out = sample
        for t in scheduler.timesteps[:2]:
            out = scheduler.step(torch.zeros_like(sample), t, out).prev_sample
        return out

    a = two_steps(torch.Generator().manual_seed(5))
    assert not torch.equal(a, two_steps(torch.Generator().manual_seed(6)))
    assert torch.equal(a, two_steps(torch.Generator().manual_seed(5)))

    deterministic, _ = build("dpmpp_2m_ays", SVD_SCHEDULER_CONFIG)
    seed_scheduler(deterministic, torch.Generator().manual_seed(5))
    assert "step" not in vars(deterministic)


# --- every preset through the real CLI ------------------------------------------------------------------------------

LADDER_RECIPE = """
version: 1
model: builtin:tiny
output: {dir: out}
defaults: {width: 64, height: 64, num_frames: 4, decode_chunk_size: 4, seeds: [7]}
presets:
  sde: {scheduler: dpmpp_2m_sde_karras, num_inference_steps: 4}
items:
  - {name: coffee, image: inputs/coffee.jpg, presets: [draft, quick, fine, sde]}
"""
# The ladder at its own step counts, and a stochastic preset whose noise must come from the seed. The other presets
# render through the CLI in test_cli.py and test_engine.py.
RENDERED = {"draft": 6, "quick": 8, "fine": 10, "sde": 4}


@pytest.fixture(scope="module")
def ladder_render(tmp_path_factory):
    """The ladder rendered once through the CLI (a subprocess, as a user runs it)."""
    import shutil

    from conftest import INPUTS, run_cli

    root = tmp_path_factory.mktemp("ladder")
    shutil.copytree(INPUTS, root / "inputs")
    (root / "recipe.yaml").write_text(LADDER_RECIPE, encoding="utf-8")
    first = run_cli(root / "recipe.yaml", "--quiet")
    assert first.returncode == 0, first.stderr
    return root


def _jobs(root: pathlib.Path, out: str) -> dict:
    manifest = json.loads((root / out / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["counts"] == {"ok": len(RENDERED)}
    return {job["preset"]: job for job in manifest["jobs"]}


def test_ladder_renders_through_the_cli_with_its_own_steps(ladder_render):
    jobs = _jobs(ladder_render, "out")
    assert sorted(jobs) == sorted(RENDERED)
    for name, job in jobs.items():
        assert (ladder_render / "out" / "coffee" / name / "seed-7.mp4").stat().st_size > 0
        assert job["frame_count"] == 4
        assert len(job["scheduler"]["sigmas"]) == RENDERED[name] + 1, name
    assert jobs["quick"]["scheduler"]["class"] == "IPNDMScheduler"
    assert jobs["quick"]["scheduler"]["sigmas"][-1] == 0.002  # it ends at σ_min, not with a jump to 0
    assert jobs["draft"]["scheduler"]["class"] == "DPMPP2MScheduler"


def test_ladder_and_sde_reproduce_their_frames_by_seed(ladder_render):
    from conftest import invoke_cli

    # Again in this process: the same frames in another process, from the seed alone.
    again = invoke_cli(ladder_render / "recipe.yaml", "--out", ladder_render / "again", "--quiet")
    assert again.returncode == 0, again.stderr
    first, second = _jobs(ladder_render, "out"), _jobs(ladder_render, "again")
    hashes = {name: job["frames_sha256"] for name, job in first.items()}
    assert hashes == {name: job["frames_sha256"] for name, job in second.items()}
    assert len(set(hashes.values())) == len(hashes)  # and each preset really samples differently
