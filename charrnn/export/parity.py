"""The check every export passes before it reaches --out: onnxruntime runs the written graph beside
charrnn's own sampler (`FastStepper`) and the two must agree.

Both start from a zero state and are fed the sampler's greedy choice for CHECK_STEPS steps. They
agree when no logit differs by more than the tolerance, LOGIT_TOLERANCE times the largest logit
(at least 1): float32 kernels of two runtimes differ in their last bits, a wrong graph by far
more. A greedy choice that differs counts only where the sampler's two best logits are further
apart than that tolerance; at a near tie either choice is right.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from ..model import RNNLanguageModel
from ..stepper import FastStepper

LOGIT_TOLERANCE = 1e-3  # relative to the largest |logit|; measured differences are near 1e-6


@dataclass(frozen=True)
class SamplerParity:
    steps: int
    max_logit_diff: float  # largest |onnxruntime logit - sampler logit|
    tolerance: float
    choices_differ: int  # greedy steps whose choice differs, near ties left out

    @property
    def ok(self) -> bool:
        return self.max_logit_diff <= self.tolerance and self.choices_differ == 0

    def __str__(self) -> str:
        return (
            f"over {self.steps} greedy steps: largest logit difference {self.max_logit_diff:.1e} "
            f"(tolerance {self.tolerance:.1e}), {self.choices_differ} different choices"
        )


@torch.inference_mode()
def compare_with_sampler(model: RNNLanguageModel, folder: Path, steps: int) -> SamplerParity:
    """Run the exported graph in `folder` and `FastStepper` side by side for `steps` greedy steps."""
    from .runtime import OnnxSampler

    sampler = OnnxSampler(folder)
    stepper = FastStepper(model.float().eval())
    hidden = stepper.init_state(1)
    state = sampler.zero_state()
    token = torch.zeros(1, dtype=torch.long)
    diffs, margins, differ, loudest = [], [], [], 1.0
    for _ in range(steps):
        logits, hidden = stepper.step(token, hidden)  # (1, V)
        onnx_array, state = sampler.step(token.numpy(), state)
        onnx_logits = torch.from_numpy(onnx_array)  # (1, V)
        diffs.append(float((onnx_logits - logits).abs().max()))
        top2 = logits[0].topk(min(2, logits.shape[-1])).values
        margins.append(float(top2[0] - top2[-1]))
        loudest = max(loudest, float(logits.abs().max()))
        token = logits.argmax(dim=-1)
        differ.append(int(onnx_logits.argmax(-1)[0]) != int(token))
    tolerance = LOGIT_TOLERANCE * loudest
    real = sum(1 for d, m in zip(differ, margins) if d and m > tolerance)
    return SamplerParity(steps, max(diffs, default=0.0), tolerance, real)
