"""Named scheduler presets that are correct for Stable Video Diffusion, and a reasoned no for the ones that are not.

SVD is an EDM model (σ_data = 1, v-prediction) whose UNet is conditioned on t = 0.25·ln σ over σ ∈ [0.002, 700]. Most
schedulers people swap in hand it integer timesteps instead (no error, wrong videos) or crash at the last step; see
docs/schedulers.md. Everything here up to `build` is plain data and pure functions, so recipe validation and planning
stay torch-free; torch and diffusers are imported only inside the functions that build schedulers.
"""

from __future__ import annotations

import difflib
import inspect
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

# SVD's σ range (scheduler_config.json of img2vid and img2vid-xt); custom σ lists must stay inside it.
SVD_SIGMA_MIN = 0.002
SVD_SIGMA_MAX = 700.0

# A recipe preset without `scheduler:` samples with the model's own scheduler.
DEFAULT_PRESET = "euler"

SCHEDULE_NAMES = ("karras", "exponential", "ays", "ays_min")

# Align Your Steps (Sabour et al. 2024), NVIDIA's 10-step σ list for SVD. diffusers ships the same list with the final
# 0.002 replaced by 0.0 (AysSchedules["StableDiffusionVideoSigmas"]); `ays_sigmas` does the same.
AYS_SVD_SIGMAS = (700.00, 54.5, 15.886, 7.977, 4.248, 1.789, 0.981, 0.403, 0.173, 0.034, 0.002)

KARRAS_RHO = 7.0

# The ladder's measured accuracy, written by `python benchmarks/sampler_accuracy.py --write`; shown by `presets`.
PRESET_ACCURACY_FILE = Path(__file__).with_name("preset_accuracy.json")


# --- σ schedules: n steps → n + 1 σ values, from σ_max down to a final 0 -------------------------------------------


def karras_sigmas(n: int, sigma_min: float = SVD_SIGMA_MIN, sigma_max: float = SVD_SIGMA_MAX,
                  rho: float = KARRAS_RHO) -> tuple[float, ...]:
    """Karras et al. (2022) schedule: σ evenly spaced in σ^(1/ρ), then 0."""
    hi, lo = sigma_max ** (1 / rho), sigma_min ** (1 / rho)
    return _exact_ends(tuple((hi + r * (lo - hi)) ** rho for r in _ramp(n)), sigma_min, sigma_max)


def exponential_sigmas(n: int, sigma_min: float = SVD_SIGMA_MIN, sigma_max: float = SVD_SIGMA_MAX) -> tuple[float, ...]:
    """Exponential schedule: σ evenly spaced in ln σ, then 0."""
    hi, lo = math.log(sigma_max), math.log(sigma_min)
    return _exact_ends(tuple(math.exp(hi + r * (lo - hi)) for r in _ramp(n)), sigma_min, sigma_max)


def ays_sigmas(n: int) -> tuple[float, ...]:
    """Align Your Steps for SVD (Sabour et al. 2024); other step counts by the paper's log-linear interpolation."""
    # The paper interpolates ln σ over the normalised step index of the optimised list, then ends at 0 like diffusers.
    knots = [math.log(s) for s in AYS_SVD_SIGMAS]
    last = len(knots) - 1
    values = []
    for i in range(n):
        j, remainder = divmod(i * last, n)
        # Knots are kept exactly (so 10 steps give NVIDIA's list to the digit); in between, interpolate ln σ.
        values.append(AYS_SVD_SIGMAS[j] if remainder == 0 else
                      math.exp(knots[j] + remainder / n * (knots[j + 1] - knots[j])))
    return tuple(values) + (0.0,)


def ays_min_sigmas(n: int) -> tuple[float, ...]:
    """Align Your Steps for SVD interpolated to n steps that end at σ_min = 0.002 instead of jumping to 0.

    Every step is then a full multistep update (a step to 0 can only return the denoised sample), so n UNet calls
    integrate the whole range; the σ = 0.002 left in the latents is below anything the VAE resolves.
    """
    knots = [math.log(s) for s in AYS_SVD_SIGMAS]
    last = len(knots) - 1
    values = []
    for i in range(n + 1):
        j, remainder = divmod(i * last, n)
        values.append(AYS_SVD_SIGMAS[j] if remainder == 0 else
                      math.exp(knots[j] + remainder / n * (knots[j + 1] - knots[j])))
    return tuple(values)


def ays_draft_sigmas(n: int) -> tuple[float, ...]:
    """The `draft` preset's σ: Align Your Steps interpolated as for n + ½ steps, the first n kept, then 0.

    Plain `ays` spaces the n steps 1/n of the AYS list apart; here they are 1/(n + ½) apart, so the last step jumps to
    0 from a larger σ (0.22 instead of 0.10 at 6 steps) and every step before it is a little shorter. With
    DPM++ 2M at 6 calls this is what brings the 1-D test under euler-25's error (1.79× → 0.74×) while 2-D and 4-D
    improve too (benchmarks/sampler_accuracy.py; the offset ½ is chosen on those tests, which stay under 0.85× from
    about 0.4 to 0.75). As n grows the final σ still falls towards σ_min, so the method keeps converging.
    Not a recipe `sigmas:` name: the draft preset's own schedule.
    """
    knots = [math.log(s) for s in AYS_SVD_SIGMAS]
    last = len(knots) - 1
    values = []
    for i in range(n):
        position = 2 * i * last / (2 * n + 1)  # i·last/(n + ½), exactly
        j = min(int(position), last - 1)
        remainder = position - j
        values.append(AYS_SVD_SIGMAS[j] if remainder == 0 else
                      math.exp(knots[j] + remainder * (knots[j + 1] - knots[j])))
    return tuple(values) + (0.0,)


def _ramp(n: int) -> list[float]:
    return [0.0] if n == 1 else [i / (n - 1) for i in range(n)]


def _exact_ends(sigmas: tuple[float, ...], sigma_min: float, sigma_max: float) -> tuple[float, ...]:
    # Floating-point powers give 699.9999999999994 for 700; manifests should show the configured ends.
    ends = (sigma_max,) if len(sigmas) == 1 else (sigma_max, *sigmas[1:-1], sigma_min)
    return ends + (0.0,)


# --- what svdrender knows about each scheduler class (data) --------------------------------------------------------


@dataclass(frozen=True)
class SchedulerClass:
    """How to build one scheduler class correctly for SVD, and which of its arguments a recipe may set."""

    name: str
    module: str  # where the class lives; imported only by `build`
    init_keys: tuple[str, ...]  # its from_config arguments; tests check this against diffusers
    required: Mapping[str, Any]  # arguments SVD needs whatever the model config says
    options: tuple[str, ...]  # what `scheduler_options` may set
    takes_sigma_list: bool  # whether set_timesteps(sigmas=...) means σ values
    native_schedules: Mapping[str, Mapping[str, Any]]  # σ schedule name → arguments that make the class produce it
    sigma_list_alternative: str  # preset to suggest when a σ list is asked of a class that cannot take one


_EDM_BASE = ("sigma_min", "sigma_max", "sigma_data", "sigma_schedule", "num_train_timesteps", "prediction_type", "rho",
             "final_sigmas_type")

SCHEDULER_CLASSES: dict[str, SchedulerClass] = {
    c.name: c
    for c in (
        SchedulerClass(
            name="EulerDiscreteScheduler",
            module="diffusers",
            init_keys=("num_train_timesteps", "beta_start", "beta_end", "beta_schedule", "trained_betas",
                       "prediction_type", "interpolation_type", "use_karras_sigmas", "use_exponential_sigmas",
                       "use_beta_sigmas", "sigma_min", "sigma_max", "timestep_spacing", "timestep_type", "steps_offset",
                       "rescale_betas_zero_snr", "final_sigmas_type"),
            required=MappingProxyType({}),
            options=("sigma_min",),
            takes_sigma_list=True,
            native_schedules=MappingProxyType({
                "karras": MappingProxyType({"use_karras_sigmas": True, "use_exponential_sigmas": False}),
                "exponential": MappingProxyType({"use_karras_sigmas": False, "use_exponential_sigmas": True}),
            }),
            sigma_list_alternative="euler",
        ),
        SchedulerClass(
            name="EDMEulerScheduler",
            module="diffusers",
            init_keys=_EDM_BASE,
            # diffusers defaults to σ_data = 0.5 (the EDM paper's images); SVD was trained with σ_data = 1.
            required=MappingProxyType({"sigma_data": 1.0}),
            options=("sigma_min", "rho"),
            takes_sigma_list=False,  # its set_timesteps(sigmas=) takes a 0…1 ramp, not σ values
            native_schedules=MappingProxyType({
                "karras": MappingProxyType({"sigma_schedule": "karras"}),
                "exponential": MappingProxyType({"sigma_schedule": "exponential"}),
            }),
            sigma_list_alternative="euler",
        ),
        SchedulerClass(
            name="EDMDPMSolverMultistepScheduler",
            module="diffusers",
            init_keys=_EDM_BASE[:-1] + ("solver_order", "thresholding", "dynamic_thresholding_ratio",
                                        "sample_max_value", "algorithm_type", "solver_type", "lower_order_final",
                                        "euler_at_final", "final_sigmas_type"),
            required=MappingProxyType({"sigma_data": 1.0}),
            options=("sigma_min", "rho", "solver_order", "algorithm_type", "solver_type", "lower_order_final",
                     "euler_at_final"),
            takes_sigma_list=False,  # its set_timesteps takes no sigmas at all
            native_schedules=MappingProxyType({
                "karras": MappingProxyType({"sigma_schedule": "karras"}),
                "exponential": MappingProxyType({"sigma_schedule": "exponential"}),
            }),
            sigma_list_alternative="dpmpp_2m_ays",
        ),
        SchedulerClass(
            name="IPNDMScheduler",
            module="renderer.samplers",
            init_keys=("sigma_min", "sigma_max", "sigma_data", "prediction_type", "num_train_timesteps", "max_order",
                       "corrector"),
            required=MappingProxyType({"sigma_data": 1.0}),
            options=(),
            takes_sigma_list=True,
            native_schedules=MappingProxyType({}),
            sigma_list_alternative="quick",
        ),
        SchedulerClass(
            name="DPMPP2MScheduler",
            module="renderer.samplers",
            init_keys=("sigma_min", "sigma_max", "sigma_data", "prediction_type", "num_train_timesteps"),
            required=MappingProxyType({"sigma_data": 1.0}),
            options=(),
            takes_sigma_list=True,
            native_schedules=MappingProxyType({}),  # every schedule reaches it as an explicit σ list
            sigma_list_alternative="dpmpp_2m_ays",
        ),
    )
}


@dataclass(frozen=True)
class OptionRule:
    """The values one scheduler option accepts: a set of choices, or a number range."""

    choices: tuple[Any, ...] = ()
    minimum: float | None = None
    maximum: float | None = None
    exclusive_minimum: bool = False


OPTION_RULES: dict[str, OptionRule] = {
    "sigma_min": OptionRule(minimum=SVD_SIGMA_MIN, maximum=SVD_SIGMA_MAX, exclusive_minimum=False),
    "rho": OptionRule(minimum=0.0, exclusive_minimum=True),
    "solver_order": OptionRule(choices=(1, 2, 3)),
    "algorithm_type": OptionRule(choices=("dpmsolver++", "sde-dpmsolver++")),
    "solver_type": OptionRule(choices=("midpoint", "heun")),
    "lower_order_final": OptionRule(choices=(True, False)),
    "euler_at_final": OptionRule(choices=(True, False)),
}

# Options (and preset keys) that are real diffusers arguments but wrong or meaningless for SVD, with the reason.
_NO_EFFECT = "it does nothing to SVD's schedule (its σ come from sigma_min/sigma_max, not from spaced timesteps)"
_SCHEDULE = "pick the σ schedule with `sigmas:` (karras, exponential, ays or a σ list)"
_BETAS = "SVD's σ range is set by sigma_min/sigma_max; betas only matter to schedulers that are wrong for SVD"
_DDIM_ONLY = "it belongs to DDIM/PNDM, which hand SVD's UNet integer timesteps"
REFUSED_OPTIONS: dict[str, str] = {
    "timesteps": "SVD's UNet is conditioned on t = 0.25·ln σ, not on integer timesteps, and the SVD pipeline takes no "
                 "`timesteps`; write the schedule as `sigmas: [...]`",
    "timestep_spacing": _NO_EFFECT,
    "steps_offset": _NO_EFFECT,
    "rescale_betas_zero_snr": "it does nothing to SVD's schedule (σ_max stays 700), and zero terminal SNR needs a "
                              "model trained for it",
    "timestep_type": "SVD's UNet needs continuous timesteps t = 0.25·ln σ; the model config already says so",
    "prediction_type": "it must match the model (SVD predicts v); svdrender takes it from the model config",
    "sigma_data": "SVD was trained with σ_data = 1; svdrender sets it for the EDM schedulers",
    "sigma_max": "SVD samples from pure noise at σ_max = 700; to start elsewhere write an explicit `sigmas:` list",
    "use_karras_sigmas": f"{_SCHEDULE}; turning Karras σ off on Euler collapses σ_max from 700 to about 11.7",
    "use_exponential_sigmas": _SCHEDULE,
    "use_beta_sigmas": _SCHEDULE,
    "sigma_schedule": _SCHEDULE,
    "interpolation_type": f"{_SCHEDULE}; 'log_linear' collapses σ_max from 700 to about 11.7",
    "final_sigmas_type": "svdrender's schedules always end at σ = 0; end elsewhere with an explicit `sigmas:` list",
    "beta_start": _BETAS,
    "beta_end": _BETAS,
    "beta_schedule": _BETAS,
    "trained_betas": _BETAS,
    "num_train_timesteps": _BETAS,
    "thresholding": "dynamic thresholding is for pixel-space models; it clips SVD's latents",
    "dynamic_thresholding_ratio": "dynamic thresholding is for pixel-space models; it clips SVD's latents",
    "sample_max_value": "dynamic thresholding is for pixel-space models; it clips SVD's latents",
    "clip_sample": "clipping is for pixel-space models; it clips SVD's latents",
    "clip_sample_range": "clipping is for pixel-space models; it clips SVD's latents",
    "set_alpha_to_one": _DDIM_ONLY,
    "skip_prk_steps": _DDIM_ONLY,
}

# Preset keys written directly on a recipe preset that are refused outright.
_REFUSED_PRESET_KEYS = ("timesteps", "timestep_spacing", "rescale_betas_zero_snr")


# --- presets and refusals (data) ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class BuiltinPreset:
    """A named scheduler setup that is correct for SVD."""

    name: str
    description: str
    scheduler_class: str
    scheduler_options: Mapping[str, Any]
    sigmas: str | tuple[float, ...] | None  # None: the class's own schedule; a schedule name; or explicit σ values
    default_steps: int
    aliases: tuple[str, ...] = ()
    stochastic: bool = False
    # The step counts the accuracy test covers for this preset (inclusive); None: any. Outside it a multistep
    # method is untested, so svdrender refuses it rather than guess.
    step_range: tuple[int, int] | None = None


@dataclass(frozen=True)
class Refusal:
    """A scheduler name svdrender says no to: why (one line), and the built-in preset to use instead."""

    name: str
    reason: str
    suggestion: str
    aliases: tuple[str, ...] = ()


# The step counts the accuracy benchmark checks the ladder's methods over (they converge from 3 to 50 steps).
LADDER_STEP_RANGE = (3, 50)


def _options(**kwargs: Any) -> Mapping[str, Any]:
    return MappingProxyType(kwargs)


PRESETS: dict[str, BuiltinPreset] = {
    p.name: p
    for p in (
        BuiltinPreset(
            name="euler",
            description="Euler with Karras σ: the scheduler SVD ships (the reference)",
            scheduler_class="EulerDiscreteScheduler",
            scheduler_options=_options(use_karras_sigmas=True, use_exponential_sigmas=False),
            sigmas=None,
            default_steps=25,
            aliases=("Euler", "euler_karras", "Euler Karras", "k_euler", "EulerDiscreteScheduler", "EulerDiscrete"),
        ),
        BuiltinPreset(
            name="euler_exponential",
            description="Euler with exponential σ (evenly spaced in ln σ)",
            scheduler_class="EulerDiscreteScheduler",
            scheduler_options=_options(use_karras_sigmas=False, use_exponential_sigmas=True),
            sigmas=None,
            default_steps=25,
            aliases=("Euler Exponential", "euler_exp"),
        ),
        BuiltinPreset(
            name="edm_euler",
            description="EDM Euler with Karras σ and σ_data = 1",
            scheduler_class="EDMEulerScheduler",
            scheduler_options=_options(),
            sigmas=None,
            default_steps=25,
            aliases=("EDM Euler", "EDMEulerScheduler", "EDMEuler"),
        ),
        BuiltinPreset(
            name="dpmpp_2m_karras",
            description="DPM++ 2M with Karras σ (EDM DPM-Solver++, σ_data = 1)",
            scheduler_class="EDMDPMSolverMultistepScheduler",
            scheduler_options=_options(algorithm_type="dpmsolver++"),
            sigmas=None,
            default_steps=25,
            aliases=("DPM++ 2M Karras", "k_dpmpp_2m_karras", "EDMDPMSolverMultistepScheduler",
                     "EDMDPMSolverMultistep"),
        ),
        BuiltinPreset(
            name="dpmpp_2m_sde_karras",
            description="DPM++ 2M SDE with Karras σ (stochastic; EDM DPM-Solver++, σ_data = 1)",
            scheduler_class="EDMDPMSolverMultistepScheduler",
            scheduler_options=_options(algorithm_type="sde-dpmsolver++"),
            sigmas=None,
            default_steps=25,
            aliases=("DPM++ 2M SDE Karras", "k_dpmpp_2m_sde_karras"),
            stochastic=True,
        ),
        BuiltinPreset(
            name="ays",
            description="Euler on NVIDIA's Align Your Steps σ for SVD (other step counts interpolated)",
            scheduler_class="EulerDiscreteScheduler",
            scheduler_options=_options(),
            sigmas="ays",
            default_steps=10,
            aliases=("AYS", "Align Your Steps", "align_your_steps", "euler_ays"),
        ),
        BuiltinPreset(
            name="dpmpp_2m_ays",
            description="DPM++ 2M on Align Your Steps σ (svdrender's sampler)",
            scheduler_class="DPMPP2MScheduler",
            scheduler_options=_options(),
            sigmas="ays",
            default_steps=10,
            aliases=("DPM++ 2M AYS", "DPM++ 2M Align Your Steps", "DPMPP2MScheduler"),
        ),
        # The ladder by UNet-call budget: at each, the most accurate method and schedule on the 1-D, 2-D and 4-D tests
        # (benchmarks/sampler_accuracy.py; numbers in preset_accuracy.json). At 6 calls that is DPM++ 2M on AYS σ
        # spaced for n + ½ steps (`ays_draft_sigmas`); from 8 on, iPNDM of order 3 with its corrector on AYS σ ending
        # at σ_min.
        BuiltinPreset(
            name="draft",
            description="DPM++ 2M on AYS σ spaced for n + ½ steps, 6 calls: the fewest, for previews",
            scheduler_class="DPMPP2MScheduler",
            scheduler_options=_options(),
            sigmas="ays_draft",
            default_steps=6,
            aliases=("dpmpp_2m_ays_draft",),
            step_range=LADDER_STEP_RANGE,
        ),
        BuiltinPreset(
            name="quick",
            description="corrected iPNDM on AYS σ ending at σ_min: about half euler-25's error",
            scheduler_class="IPNDMScheduler",
            scheduler_options=_options(max_order=3, corrector=True),
            sigmas="ays_min",
            default_steps=8,
            aliases=("ipndm_quick", "ipndm_ays", "iPNDM AYS", "IPNDMScheduler"),
            step_range=LADDER_STEP_RANGE,
        ),
        BuiltinPreset(
            name="fine",
            description="corrected iPNDM on AYS σ ending at σ_min: about a third of euler-25's error",
            scheduler_class="IPNDMScheduler",
            scheduler_options=_options(max_order=3, corrector=True),
            sigmas="ays_min",
            default_steps=10,
            aliases=("ipndm_fine",),
            step_range=LADDER_STEP_RANGE,
        ),
    )
}

LADDER = ("draft", "quick", "fine")

_INTEGER_T = "gives SVD's UNet integer timesteps instead of t = 0.25·ln σ (wrong videos, no error)"
_LAST_STEP = "crashes at the last step with SVD's Karras config (IndexError)"
REFUSED: dict[str, Refusal] = {
    r.name: r
    for r in (
        Refusal("DDIM", f"DDIMScheduler {_INTEGER_T}; zero-SNR rescaling and trailing spacing do not change that",
                "euler", ("DDIMScheduler",)),
        Refusal("Euler a", f"EulerAncestralDiscreteScheduler {_INTEGER_T}", "dpmpp_2m_sde_karras",
                ("euler_ancestral", "euler_a", "k_euler_a", "EulerAncestralDiscreteScheduler")),
        Refusal("LCM", f"LCMScheduler {_INTEGER_T}; LCM also needs consistency-distilled weights", "dpmpp_2m_ays",
                ("LCMScheduler",)),
        Refusal("TCD", f"TCDScheduler {_INTEGER_T}; TCD also needs consistency-distilled weights", "dpmpp_2m_ays",
                ("TCDScheduler",)),
        Refusal("UniPC", "UniPCMultistepScheduler fails in SVD's denoising loop (AssertionError); it has no EDM σ mode",
                "dpmpp_2m_ays", ("uni_pc", "unipc_multistep", "UniPCMultistepScheduler")),
        Refusal("FlowMatch", "FlowMatchEulerDiscreteScheduler is for flow-matching models; the SVD pipeline crashes "
                "with it (no init_noise_sigma)", "euler",
                ("flow_match", "flow_match_euler", "FlowMatchEuler", "FlowMatchEulerDiscreteScheduler")),
        Refusal("DPM++ 2M", f"DPMSolverMultistepScheduler {_LAST_STEP}, and without Karras σ {_INTEGER_T}",
                "dpmpp_2m_karras", ("dpmpp_2m", "k_dpmpp_2m", "DPMSolverMultistepScheduler", "DPMSolverMultistep",
                                    "dpmsolver_multistep", "dpmsolver++")),
        Refusal("DPM++ 2M SDE", f"DPMSolverMultistepScheduler {_LAST_STEP}, and without Karras σ {_INTEGER_T}",
                "dpmpp_2m_sde_karras", ("dpmpp_2m_sde", "k_dpmpp_2m_sde", "sde-dpmsolver++")),
        Refusal("DPM++ SDE", f"DPMSolverSDEScheduler {_INTEGER_T}", "dpmpp_2m_sde_karras",
                ("dpmpp_sde", "dpmpp_sde_karras", "DPM++ SDE Karras", "DPMSolverSDEScheduler")),
        Refusal("DPM++ 2S", f"DPMSolverSinglestepScheduler {_LAST_STEP}", "dpmpp_2m_ays",
                ("dpmpp_2s", "DPMSolverSinglestepScheduler", "dpmsolver_singlestep")),
        Refusal("Heun", f"HeunDiscreteScheduler {_LAST_STEP}, and without Karras σ {_INTEGER_T}", "dpmpp_2m_ays",
                ("heun_karras", "k_heun", "HeunDiscreteScheduler")),
        Refusal("DPM2", "KDPM2DiscreteScheduler gives SVD's UNet integer timesteps and diverges to inf",
                "dpmpp_2m_karras", ("dpm_2", "dpm2_karras", "DPM2 Karras", "k_dpm_2", "kdpm2",
                                    "KDPM2DiscreteScheduler")),
        Refusal("DPM2 a", "KDPM2AncestralDiscreteScheduler gives SVD's UNet integer timesteps and diverges to inf",
                "dpmpp_2m_sde_karras", ("dpm_2_ancestral", "dpm2_a", "DPM2 a Karras", "k_dpm_2_a",
                                        "KDPM2AncestralDiscreteScheduler")),
        Refusal("LMS", f"LMSDiscreteScheduler {_INTEGER_T}", "dpmpp_2m_karras",
                ("lms_karras", "LMS Karras", "k_lms", "LMSDiscreteScheduler")),
        Refusal("DDPM", f"DDPMScheduler {_INTEGER_T}", "dpmpp_2m_sde_karras", ("DDPMScheduler",)),
        Refusal("PNDM", f"PNDMScheduler {_INTEGER_T}", "euler", ("plms", "PNDMScheduler")),
        Refusal("DEIS", f"DEISMultistepScheduler {_LAST_STEP}", "dpmpp_2m_ays",
                ("deis_multistep", "DEISMultistepScheduler")),
    )
}


def _key(name: str) -> str:
    # "DPM++ 2M SDE Karras", "dpmpp_2m_sde_karras" and "DPMPP-2M-SDE-Karras" all become "dpmpp2msdekarras".
    return re.sub(r"[^a-z0-9]", "", name.lower().replace("+", "p"))


_PRESET_KEYS: dict[str, str] = {}
for _p in PRESETS.values():
    for _n in (_p.name, *_p.aliases):
        _PRESET_KEYS[_key(_n)] = _p.name
_REFUSED_KEYS: dict[str, str] = {}
for _r in REFUSED.values():
    for _n in (_r.name, *_r.aliases):
        _REFUSED_KEYS[_key(_n)] = _r.name
assert not set(_PRESET_KEYS) & set(_REFUSED_KEYS), "a name cannot be both a preset and refused"
del _p, _r, _n


def canonical_name(name: str) -> str | None:
    """The built-in preset `name` refers to (any case, spacing or punctuation, or an alias), or None."""
    return _PRESET_KEYS.get(_key(name)) if isinstance(name, str) else None


def refusal(name: str) -> Refusal | None:
    """Why svdrender refuses the scheduler `name` and what to use instead, or None if it is not refused."""
    return REFUSED.get(_REFUSED_KEYS.get(_key(name), "")) if isinstance(name, str) else None


# --- validation (torch-free) --------------------------------------------------------------------------------------

SubPath = tuple  # a sub-path relative to the preset mapping, e.g. ("sigmas", 2)


def check_preset(spec: Mapping) -> list[tuple[SubPath, str]]:
    """Every problem with the scheduler keys of a recipe preset, as (sub-path, message) pairs; [] when it is fine."""
    problems: list[tuple[SubPath, str]] = []
    for key in _REFUSED_PRESET_KEYS:
        if key in spec:
            problems.append(((key,), f"{key} is refused: {REFUSED_OPTIONS[key]}"))

    name = spec.get("scheduler", DEFAULT_PRESET)
    preset = _check_scheduler_name(name, problems)
    steps = spec.get("num_inference_steps")
    steps = steps if isinstance(steps, int) and not isinstance(steps, bool) and steps >= 1 else None

    if "sigmas" in spec:
        _check_sigmas(spec["sigmas"], preset, steps, problems)
    if "scheduler_options" in spec:
        _check_options(spec["scheduler_options"], preset, problems)
    return problems


def _check_scheduler_name(name: Any, problems: list) -> BuiltinPreset | None:
    if not isinstance(name, str):
        problems.append((("scheduler",), "scheduler must be a preset name (see `svdrender presets`)"))
        return None
    canonical = canonical_name(name)
    if canonical is not None:
        return PRESETS[canonical]
    refused = refusal(name)
    if refused is not None:
        problems.append((("scheduler",), f"'{name}' is wrong for SVD: {refused.reason}; use '{refused.suggestion}' "
                                         "instead"))
        return None
    close = difflib.get_close_matches(_key(name), list(_PRESET_KEYS), n=1, cutoff=0.6)
    hint = f"did you mean '{_PRESET_KEYS[close[0]]}'?" if close else f"built-in presets: {', '.join(PRESETS)}"
    problems.append((("scheduler",), f"unknown scheduler '{name}'; {hint}"))
    return None


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _check_sigmas(sigmas: Any, preset: BuiltinPreset | None, steps: int | None, problems: list) -> None:
    cls = SCHEDULER_CLASSES[preset.scheduler_class] if preset else None
    if isinstance(sigmas, str):
        if sigmas not in SCHEDULE_NAMES:
            close = difflib.get_close_matches(sigmas, SCHEDULE_NAMES, n=1)
            hint = f"did you mean '{close[0]}'?" if close else "write a list of σ instead"
            problems.append((("sigmas",), f"unknown σ schedule '{sigmas}' ({', '.join(SCHEDULE_NAMES[:-1])} or {SCHEDULE_NAMES[-1]}); {hint}"))
        elif cls and sigmas not in cls.native_schedules and not cls.takes_sigma_list:
            problems.append((("sigmas",), _no_sigma_list(preset, cls, f"sigmas: {sigmas}")))
        return
    if not isinstance(sigmas, Sequence) or isinstance(sigmas, (str, bytes)):
        problems.append((("sigmas",), "sigmas must be a list of σ or one of " + ", ".join(f"'{n}'" for n in SCHEDULE_NAMES)))
        return
    if cls and not cls.takes_sigma_list:
        problems.append((("sigmas",), _no_sigma_list(preset, cls, "a σ list")))
        return
    if len(sigmas) < 2:
        problems.append((("sigmas",), "sigmas needs at least 2 values: each step goes from one σ to the next"))
        return
    previous = None
    for i, sigma in enumerate(sigmas):
        last = i == len(sigmas) - 1
        if not _is_number(sigma):
            problems.append((("sigmas", i), f"sigmas must be numbers, got {sigma!r}"))
            previous = None
            continue
        message = None
        if sigma == 0 and not last:
            message = "only the last σ may be 0"
        elif not (sigma == 0 and last) and not SVD_SIGMA_MIN <= sigma <= SVD_SIGMA_MAX:
            message = (f"σ {sigma:g} is outside SVD's range [{SVD_SIGMA_MIN:g}, {SVD_SIGMA_MAX:g}] "
                       "(the last σ may also be 0)")
        elif previous is not None and sigma >= previous:
            message = "sigmas must be strictly decreasing"
        if message:
            problems.append((("sigmas", i), message))
        # One mistake, one message: the value after a bad one is not also compared with it.
        previous = None if message else sigma
    if steps is not None and steps != len(sigmas) - 1:
        problems.append((("sigmas",), f"{len(sigmas)} σ make {len(sigmas) - 1} steps but num_inference_steps is "
                                      f"{steps}; leave num_inference_steps out"))


def _no_sigma_list(preset: BuiltinPreset, cls: SchedulerClass, what: str) -> str:
    return (f"'{preset.name}' cannot follow {what}: {cls.name} makes its own karras or exponential schedule; "
            f"use '{cls.sigma_list_alternative}' for that schedule")


def _check_options(options: Any, preset: BuiltinPreset | None, problems: list) -> None:
    if not isinstance(options, Mapping):
        problems.append((("scheduler_options",), "scheduler_options must be a mapping of option: value"))
        return
    cls = SCHEDULER_CLASSES[preset.scheduler_class] if preset else None
    for option, value in options.items():
        path = ("scheduler_options", option)
        if option in REFUSED_OPTIONS:
            problems.append((path, f"{option} is refused: {REFUSED_OPTIONS[option]}"))
        elif cls is None:
            continue  # the scheduler name is already reported; its options cannot be judged
        elif option not in cls.options:
            problems.append((path, _unknown_option(option, cls)))
        else:
            message = _check_option_value(option, value)
            if message:
                problems.append((path, message))


def _unknown_option(option: str, cls: SchedulerClass) -> str:
    if not cls.options:
        return f"unknown option '{option}': {cls.name} takes no scheduler_options"
    close = difflib.get_close_matches(str(option), cls.options, n=1)
    hint = f"did you mean '{close[0]}'?" if close else f"it takes: {', '.join(cls.options)}"
    return f"unknown option '{option}' for {cls.name}; {hint}"


def _check_option_value(option: str, value: Any) -> str | None:
    rule = OPTION_RULES[option]
    if rule.choices:
        ok = any(value == c and type(value) is type(c) for c in rule.choices)
        return None if ok else f"{option} must be one of {', '.join(map(repr, rule.choices))}, got {value!r}"
    if not _is_number(value):
        return f"{option} must be a number, got {value!r}"
    low_ok = rule.minimum is None or (value > rule.minimum if rule.exclusive_minimum else value >= rule.minimum)
    high_ok = rule.maximum is None or value <= rule.maximum
    if low_ok and high_ok:
        return None
    if rule.maximum is None:
        return f"{option} must be {'>' if rule.exclusive_minimum else '≥'} {rule.minimum:g}, got {value:g}"
    return f"{option} must be within [{rule.minimum:g}, {rule.maximum:g}], got {value:g}"


# --- resolution (torch-free) --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SchedulerChoice:
    """What one job asks of the scheduler: a built-in preset with the recipe's step count, σ list and options.

    This is what crosses from the recipe through the plan to the engine. `as_json` is its recorded form (sidecar
    `preset_spec`, cache key): the recipe's own mapping, so a cache key does not change with this class's layout.
    """

    preset: str  # canonical built-in preset name
    num_inference_steps: int
    sigmas: str | tuple[float, ...] | None = None  # a named schedule or the recipe's σ list
    options: tuple[tuple[str, Any], ...] = ()  # the recipe's scheduler_options, in recipe order

    def as_json(self) -> dict[str, Any]:
        spec: dict[str, Any] = {"scheduler": self.preset, "num_inference_steps": self.num_inference_steps}
        if self.sigmas is not None:
            spec["sigmas"] = list(self.sigmas) if isinstance(self.sigmas, tuple) else self.sigmas
        if self.options:
            spec["scheduler_options"] = dict(self.options)
        return spec

    def with_steps(self, num_inference_steps: int) -> "SchedulerChoice":
        return SchedulerChoice(self.preset, num_inference_steps, self.sigmas, self.options)

    def describe(self) -> str:
        """The preset as `svdrender plan` shows it: its name, and the σ schedule when the recipe chose one."""
        if self.sigmas is None:
            return self.preset
        return f"{self.preset} sigmas={self.sigmas if isinstance(self.sigmas, str) else 'custom'}"


@dataclass(frozen=True)
class ResolvedScheduler:
    """A preset resolved for one model: what `build` constructs and what a manifest should record."""

    preset: str  # canonical name of the built-in preset it starts from
    scheduler_class: str
    options: tuple[tuple[str, Any], ...]  # from_config overrides on top of the model config, sorted
    num_inference_steps: int
    sigmas: tuple[float, ...]  # the full σ schedule the sampler will follow (steps + 1 values)
    pass_sigmas: bool  # True: the pipeline gets `sigmas=`; False: `num_inference_steps=`
    unet_calls: int  # denoiser evaluations per video (each one batched over the CFG halves)
    stochastic: bool

    def call_kwargs(self) -> dict[str, Any]:
        if self.pass_sigmas:
            return {"sigmas": list(self.sigmas)}
        return {"num_inference_steps": self.num_inference_steps}


def resolve(preset: str | Mapping | SchedulerChoice, base_config: Mapping | None = None) -> ResolvedScheduler:
    """Resolve a preset name or recipe mapping against the model's σ range; ValueError for refused or invalid input.

    An explicit σ list sets the step count; a num_inference_steps next to it is ignored here, because callers pass
    the resolved setting (often a default) with every preset. `check_preset` reports a preset that writes both.
    """
    spec = _as_spec(preset)
    if isinstance(spec.get("sigmas"), (list, tuple)):
        spec = {k: v for k, v in spec.items() if k != "num_inference_steps"}
    problems = check_preset(spec)
    steps = spec.get("num_inference_steps")
    if steps is not None and (not isinstance(steps, int) or isinstance(steps, bool) or steps < 1):
        # The recipe schema rejects this first; callers that skip it still get a message, not a TypeError.
        problems.append((("num_inference_steps",), f"num_inference_steps must be a whole number ≥ 1, got {steps!r}"))
    if problems:
        raise ValueError("; ".join(f"{_render_path(path)}: {message}" for path, message in problems))
    builtin = PRESETS[canonical_name(spec.get("scheduler", DEFAULT_PRESET))]
    cls = SCHEDULER_CLASSES[builtin.scheduler_class]
    user_options = dict(spec.get("scheduler_options") or {})
    options = {**builtin.scheduler_options, **user_options}

    base = dict(base_config) if base_config is not None else {}
    sigma_min = float(options.get("sigma_min", base.get("sigma_min", SVD_SIGMA_MIN)))
    sigma_max = float(base.get("sigma_max", SVD_SIGMA_MAX))
    rho = float(options.get("rho", KARRAS_RHO))

    sigmas_spec = spec.get("sigmas", builtin.sigmas)
    if isinstance(sigmas_spec, (list, tuple)):
        schedule = None
        sigmas = tuple(float(s) for s in sigmas_spec)
        steps = len(sigmas) - 1
    else:
        steps = spec.get("num_inference_steps") or builtin.default_steps
        schedule = sigmas_spec or _class_schedule(cls, options, base)
        options.update(cls.native_schedules.get(schedule, {}))
        if schedule == "karras":
            sigmas = karras_sigmas(steps, sigma_min, sigma_max, rho)
        elif schedule == "exponential":
            sigmas = exponential_sigmas(steps, sigma_min, sigma_max)
        elif schedule == "ays_min":
            sigmas = ays_min_sigmas(steps)
        elif schedule == "ays_draft":
            sigmas = ays_draft_sigmas(steps)
        else:
            sigmas = ays_sigmas(steps)
    message = step_range_problem(builtin.name, steps)
    if message:
        raise ValueError(f"num_inference_steps: {message}")
    # A class makes its own karras/exponential schedule from a step count; everything else reaches it as σ values.
    pass_sigmas = schedule not in cls.native_schedules
    stochastic = str(options.get("algorithm_type", "")).startswith("sde-")
    return ResolvedScheduler(
        preset=builtin.name,
        scheduler_class=cls.name,
        options=tuple(sorted(options.items())),
        num_inference_steps=steps,
        sigmas=sigmas,
        pass_sigmas=pass_sigmas,
        unet_calls=steps,  # every built-in sampler is single-step: one denoiser call per step
        stochastic=stochastic,
    )


def step_range_problem(preset: str, steps: int) -> str | None:
    """Why built-in preset `preset` refuses `steps` steps (outside the range its accuracy is tested over), or None."""
    builtin = PRESETS.get(canonical_name(preset) or "")
    if builtin is None or builtin.step_range is None or not isinstance(steps, int):
        return None
    low, high = builtin.step_range
    if low <= steps <= high:
        return None
    return (f"'{builtin.name}' takes {low} to {high} steps (the range its accuracy is tested over), got {steps}; "
            "'dpmpp_2m_ays' and 'euler' take any count")


def _class_schedule(cls: SchedulerClass, options: Mapping, base: Mapping) -> str:
    # The schedule a class makes from num_inference_steps alone, given its arguments (Karras unless told otherwise).
    if cls.name == "EulerDiscreteScheduler":
        exponential = options.get("use_exponential_sigmas", base.get("use_exponential_sigmas"))
        return "exponential" if exponential else "karras"
    return options.get("sigma_schedule", "karras")


def resolved_steps(preset: str | Mapping | SchedulerChoice, num_inference_steps: int | None = None) -> int:
    """Denoising steps a preset takes: the σ list's length − 1, else num_inference_steps, else its default."""
    spec = _as_spec(preset)
    if num_inference_steps is not None:
        spec = {**spec, "num_inference_steps": num_inference_steps}
    return resolve(spec).num_inference_steps


def unet_calls(preset: str | Mapping | SchedulerChoice, num_inference_steps: int | None = None) -> int:
    """UNet evaluations per video (a CFG pair is one batched call), the unit of GPU time."""
    spec = _as_spec(preset)
    if num_inference_steps is not None:
        spec = {**spec, "num_inference_steps": num_inference_steps}
    return resolve(spec).unet_calls


def _as_spec(preset: str | Mapping | SchedulerChoice) -> Mapping:
    if isinstance(preset, SchedulerChoice):
        return preset.as_json()
    if isinstance(preset, str):
        return {"scheduler": preset}
    if isinstance(preset, Mapping):
        return preset
    raise TypeError(f"preset must be a name or a mapping, not {type(preset).__name__}")


def _render_path(path: SubPath) -> str:
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


# --- building (imports diffusers) ---------------------------------------------------------------------------------


def build(preset: str | Mapping | SchedulerChoice, base_config: Mapping) -> tuple[Any, dict[str, Any]]:
    """A ready scheduler for `preset` on the model whose scheduler config is `base_config`, and the pipeline kwargs."""
    base = {k: v for k, v in dict(base_config).items() if not k.startswith("_")}
    _check_base_config(base_config)
    resolved = resolve(preset, base)
    cls = SCHEDULER_CLASSES[resolved.scheduler_class]
    scheduler_type = _import_class(cls)
    # Only the model-config keys this class takes travel over; the preset's and the recipe's options go in as
    # overrides, and anything diffusers does not consume is an error rather than its silent warning.
    config = {k: v for k, v in base.items() if k in cls.init_keys}
    overrides = {**dict(resolved.options), **cls.required}
    scheduler, unused = scheduler_type.from_config(config, return_unused_kwargs=True, **overrides)
    leftovers = sorted(k for k in unused if not k.startswith("_"))
    if leftovers:
        raise ValueError(f"{cls.name} does not take {', '.join(leftovers)} (installed diffusers); "
                         "svdrender's option table is out of date")
    return scheduler, resolved.call_kwargs()


def _check_base_config(base_config: Mapping) -> None:
    # Every preset derives its σ range and parameterisation from the model's own config: it must be SVD-like
    # (the original config, not one from a scheduler swapped in by an earlier job).
    class_name = base_config.get("_class_name", "EulerDiscreteScheduler")
    problems = []
    if class_name != "EulerDiscreteScheduler":
        problems.append(f"it is a {class_name} config, not the model's own EulerDiscreteScheduler config")
    if base_config.get("prediction_type") != "v_prediction":
        problems.append("prediction_type is not 'v_prediction'")
    if base_config.get("timestep_type") != "continuous":
        problems.append("timestep_type is not 'continuous'")
    for key in ("sigma_min", "sigma_max"):
        if not _is_number(base_config.get(key)):
            problems.append(f"{key} is missing")
    if problems:
        raise ValueError("base_config is not an SVD scheduler config: " + "; ".join(problems))


def _import_class(cls: SchedulerClass) -> type:
    import importlib

    return getattr(importlib.import_module(cls.module), cls.name)


def seed_scheduler(scheduler: Any, generator: Any) -> None:
    """Make `scheduler.step()` draw its noise from `generator` (a torch.Generator, or one per batch element).

    The SVD pipeline calls `scheduler.step(noise_pred, t, latents)` without a generator, so SDE samplers would draw
    from torch's global RNG and a job's frames would depend on whatever ran before. Schedulers whose step takes no
    generator (deterministic ones) are left untouched. Calling it again re-points the scheduler at a new generator.
    """
    step = type(scheduler).step
    if "generator" not in inspect.signature(step).parameters:
        return
    import types

    scheduler._svdrender_generator = generator
    scheduler.step = types.MethodType(_seeded_step, scheduler)


def _seeded_step(self: Any, *args: Any, **kwargs: Any) -> Any:
    step = type(self).step
    bound = inspect.signature(step).bind(self, *args, **kwargs)
    if bound.arguments.get("generator") is None:
        bound.arguments["generator"] = self._svdrender_generator
    return step(*bound.args, **bound.kwargs)


# --- listing ------------------------------------------------------------------------------------------------------


def presets_table() -> str:
    """What `svdrender presets` prints: built-in presets, then refused names with why and what to use instead."""
    accuracy = _ladder_accuracy()
    width = max(len(name) for name in PRESETS)
    lines = ["Built-in scheduler presets (correct for SVD):", ""]
    for p in PRESETS.values():
        lines.append(f"  {p.name:<{width}}  {unet_calls(p.name):>3} calls  {p.description}")
        measured = accuracy.get(p.name)
        if measured:
            errors = ", ".join(f"{test} {ratio:.2f}" for test, ratio in measured.items())
            lines.append(f"  {'':<{width}}             error relative to euler at 25 calls: {errors}")
        if p.step_range:
            lines.append(f"  {'':<{width}}             steps: {p.step_range[0]} to {p.step_range[1]}")
        if p.aliases:
            lines.append(f"  {'':<{width}}             aliases: {', '.join(p.aliases)}")
    lines += ["", "  In a recipe, `sigmas:` takes karras, exponential, ays, ays_min or a σ list; `num_inference_steps:` a "
              "count.", "  Errors are measured on exact denoisers of 1-D, 2-D and 4-D Gaussian mixtures "
              "(docs/schedulers.md).", "", "Refused (wrong for SVD):", ""]
    width = max(len(r.name) for r in REFUSED.values())
    for r in REFUSED.values():
        lines.append(f"  {r.name:<{width}}  {r.reason}; use '{r.suggestion}'")
    return "\n".join(lines) + "\n"


def _ladder_accuracy() -> dict[str, dict[str, float]]:
    # Package data written by the benchmark; a missing file (a source tree mid-regeneration) shows no numbers.
    import json

    try:
        data = json.loads(PRESET_ACCURACY_FILE.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    return {name: dict(p["relative_error"]) for name, p in data["presets"].items()}
