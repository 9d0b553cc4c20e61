"""Scheduler classes svdrender adds for SVD: any σ list, continuous timesteps 0.25·ln σ. Only the engine imports them."""

from renderer.samplers.base import EDMSchedulerOutput, EDMSigmaScheduler
from renderer.samplers.dpmpp_2m import DPMPP2MScheduler, DPMPP2MSchedulerOutput
from renderer.samplers.ipndm import IPNDMScheduler

__all__ = ["DPMPP2MScheduler", "DPMPP2MSchedulerOutput", "EDMSchedulerOutput", "EDMSigmaScheduler", "IPNDMScheduler"]
