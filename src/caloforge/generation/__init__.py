"""Generating showers with a model, without the command line (what ``caloforge generate`` runs).

In memory, e.g. in a notebook::

    import numpy as np
    from caloforge.generation import generate
    from caloforge.models import load_model
    from caloforge.models.pretrained import resolve

    model = load_model(resolve("ds2-electrons"))
    energies = np.full(1000, 5e4)                            # incident energies, MeV
    showers = generate(model, energies, seed=1)              # (1000, voxels) float32, MeV

Into a CaloChallenge file, atomically, with the throughput::

    from caloforge.generation import generate_to_file, make_sampler

    sampler = make_sampler(model, device="cpu", seed=1)   # onnx=True: with ONNX Runtime
    sampler.warm_up(energies)                             # optional: one-time costs out of the timing
    result = generate_to_file(model, energies, "gen.h5", sampler=sampler, batch_size=1000)
    print(result.showers_per_second, result.ms_per_shower, result.backend)
"""

from caloforge.generation.sampler import OnnxRuntimeSampler, Sampler, TorchSampler, make_sampler
from caloforge.generation.to_file import GenerationResult, generate, generate_to_file

__all__ = [
    "GenerationResult",
    "OnnxRuntimeSampler",
    "Sampler",
    "TorchSampler",
    "generate",
    "generate_to_file",
    "make_sampler",
]
